"""What every checkpoint format shares: safe writing, careful reading, one clear error.

Three rules hold for all formats in this package:

* **Writes are atomic, and survive a kill.** Files are first written into a temporary
  sibling of the target and flushed to disk (``fsync``); only a complete checkpoint is
  moved into place with ``os.replace`` (a rename, which the operating system does all
  at once). A directory cannot be renamed over a non-empty one, so replacing it takes
  two renames: the old one goes aside to ``.NAME.old``, the new one into place. A
  process killed between the two leaves the target missing but ``.NAME.old`` complete;
  every reader (``recover``) and the next save move it back first. Leftovers of a
  killed save (``.NAME.tmp-*``, ``.NAME.old``) are removed by the next save of ``NAME``
  (one writer per target at a time).
* **Reads check before they trust.** A file whose header promises more bytes than the
  file holds is reported as truncated, with both numbers.
* **A checkpoint that does not fit its config fails once, with everything listed:**
  every missing, unexpected and wrongly shaped tensor by name, in one ``ValueError``.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..config import LlamaConfig
from ..model import Llama

# Files that belong to a checkpoint; re-saving into a directory drops stale ones.
CHECKPOINT_FILES = ("config.json", "params.json", "model*.safetensors",
                    "model*.safetensors.index.json", "pytorch_model*.bin",
                    "pytorch_model*.bin.index.json", "consolidated.*.pth")


# ----------------------------------------------------------------------------- writing
def _usual_mode(base: int) -> int:
    """The permissions a plain open()/mkdir() would give (temp files start private)."""
    umask = os.umask(0)
    os.umask(umask)
    return base & ~umask


def crash_point(step: str):
    """Called at each step of a save; does nothing. Fault-injection tests replace it with
    one that kills the process at a chosen step (``tests/test_atomic_saves.py``)."""


def _fsync(path: Path):
    """Flush a file's bytes, or a directory's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _aside(path: Path) -> Path:
    return path.parent / f".{path.name}.old"


def _target(path) -> Path:
    """``path`` made absolute, refusing the working directory and its parents."""
    path = Path(path).absolute()
    cwd = Path.cwd()
    if path.resolve() in (cwd, *cwd.parents):
        raise ValueError(f"cannot save into {path}: it is the working directory or one of its "
                         f"parents, which a save replaces whole; name a subdirectory, "
                         f"e.g. out/")
    return path


def recover(path) -> Path:
    """Finish the swap of a directory save that was killed between its two renames.

    If ``path`` is missing and ``.NAME.old`` beside it holds the previous checkpoint,
    move it back. Loaders call this before they read.
    """
    path = Path(path)
    aside = _aside(path)
    if not path.exists() and (aside / "ckpt").is_dir():
        os.replace(aside / "ckpt", path)
        shutil.rmtree(aside, ignore_errors=True)
        _fsync(path.parent)
    return path


def _remove_leftovers(path: Path):
    """Delete what a killed save of ``path`` left behind (temporary copies, the aside)."""
    recover(path)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    shutil.rmtree(_aside(path), ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(path):
    """Yield an empty temporary directory; on success it replaces ``path``.

    Other files already in ``path`` (a tokenizer, a README) are carried over; old
    checkpoint files are not, so no stale shard survives a re-save. At every instant
    ``path`` (or, between the two renames, ``.NAME.old``) holds a whole checkpoint.
    """
    path = _target(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        crash_point("written")
        if path.exists():
            for entry in path.iterdir():
                keep = not any(entry.match(p) for p in CHECKPOINT_FILES)
                if keep and not (tmp / entry.name).exists():
                    copy = shutil.copytree if entry.is_dir() else shutil.copy2
                    copy(entry, tmp / entry.name)
        os.chmod(tmp, _usual_mode(0o777))
        for f in tmp.rglob("*"):
            if f.is_file():
                os.chmod(f, _usual_mode(0o666))
                _fsync(f)
        _fsync(tmp)
        crash_point("synced")
        if path.exists():
            aside = _aside(path)
            aside.mkdir()
            os.replace(path, aside / "ckpt")     # move the old checkpoint aside...
            _fsync(path.parent)
            crash_point("aside")
            os.replace(tmp, path)                # ...and the new one into place
            _fsync(path.parent)
            crash_point("swapped")
            shutil.rmtree(aside)
        else:
            os.replace(tmp, path)
            _fsync(path.parent)
        crash_point("done")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)   # no-op after a successful replace


@contextlib.contextmanager
def atomic_file(path):
    """Yield a temporary file path beside ``path``; on success it replaces ``path``."""
    path = _target(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; expected a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        crash_point("written")
        os.chmod(tmp, _usual_mode(0o666))
        _fsync(Path(tmp))
        crash_point("synced")
        os.replace(tmp, path)
        _fsync(path.parent)
        crash_point("done")
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_safetensors(tensors: dict, path, metadata: dict | None = None):
    """The tensor writer for safetensors files (tests replace it to simulate a crash)."""
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    save_file(tensors, str(path), metadata=metadata)


def write_torch(obj, path):
    """The tensor writer for ``torch.save`` files (tests replace it to simulate a crash)."""
    torch.save(obj, path)


def write_json(obj, path):
    Path(path).write_text(json.dumps(obj, indent=2) + "\n")


# ----------------------------------------------------------------------------- reading
def read_json(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def read_safetensors(path) -> dict[str, torch.Tensor]:
    """Load a safetensors file after checking that it holds every byte its header promises.

    Layout: 8 bytes (little-endian header length n), n bytes of JSON giving each
    tensor's dtype, shape and byte range, then the raw tensor bytes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    size = path.stat().st_size
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little") if size >= 8 else None
        if n is None or 8 + n > size:
            raise ValueError(f"{path} is truncated or not safetensors: header promises "
                             f"{'8' if n is None else 8 + n} bytes of header, found {size}")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError(f"{path} is not a safetensors file (bad JSON header)") from None
    data = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"),
               default=0)
    if 8 + n + data > size:
        raise ValueError(f"{path} is truncated: header promises {data} bytes of tensor data, "
                         f"found {size - 8 - n}")
    return load_file(str(path))


def read_torch(path) -> dict[str, torch.Tensor]:
    """``torch.load`` with ``weights_only=True`` (no arbitrary code), errors made clear."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:          # noqa: BLE001 -- damaged bytes raise many kinds
        # (UnpicklingError, RuntimeError, EOFError, IndexError, ...). torch's own message
        # suggests weights_only=False, which would run any code the file holds: we name
        # the problem instead.
        raise ValueError(f"{path} is truncated or corrupt: not a complete torch.save archive "
                         f"({type(e).__name__})") from None


# ----------------------------------------------------------------------------- checking
def expected_shapes(cfg: LlamaConfig) -> dict[str, tuple]:
    """Every tensor a checkpoint for ``cfg`` must hold (our names); tied heads omit output."""
    with torch.device("meta"):
        model = Llama(cfg)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if cfg.tie_embeddings:
        del shapes["output.weight"]
    return shapes


def check_tensors(found: dict[str, tuple], expected: dict[str, tuple], hint: str = ""):
    """Raise one ValueError naming every missing, unexpected and mis-shaped tensor."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = [f"{k} (got {tuple(found[k])}, expected {tuple(expected[k])})"
             for k in sorted(set(found) & set(expected)) if tuple(found[k]) != expected[k]]
    problems = [f"{label}: {items}" for label, items in
                (("missing", missing), ("unexpected", unexpected)) if items]
    if wrong:
        problems.append("wrong shape: " + ", ".join(wrong))
    if problems:
        raise ValueError("checkpoint does not fit the config: " + "; ".join(problems) + hint)


def model_state(model: Llama) -> dict[str, torch.Tensor]:
    """The model's tensors under our names (a tied head stored once), checked."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if model.cfg.tie_embeddings:
        state.pop("output.weight", None)
    check_tensors({k: v.shape for k, v in state.items()}, expected_shapes(model.cfg),
                  hint=" (merge or remove PEFT adapters before saving a base checkpoint)")
    return state


def build_model(cfg: LlamaConfig, state: dict, dtype=torch.float32) -> Llama:
    """A ``Llama`` in eval mode holding ``state`` (our names, already checked).

    The model is built on the ``meta`` device, so no time or memory goes into a random
    initialisation that would be overwritten; the loaded tensors are then adopted as
    they are (``assign=True``) and the RoPE table is computed for real.
    """
    with torch.device("meta"):
        model = Llama(cfg)
    state = {k: v.to(dtype) for k, v in state.items()}
    if cfg.tie_embeddings:
        state["output.weight"] = state["tok_embeddings.weight"]
    model.load_state_dict(state, assign=True)
    if cfg.tie_embeddings:
        model.output.weight = model.tok_embeddings.weight
    model.freqs_cis = model.rope_table()
    return model.eval()
