"""What every checkpoint format shares: safe writing, careful reading, one clear error.

Three rules hold for all formats in this package:

* **Writes are atomic, and survive a kill.** Every saver writes into the temporary
  directory (or file) of ``minillama.files.atomic_directory`` (``atomic_file``), which
  replaces the target only once the whole checkpoint is on disk; a save killed at any
  step leaves the old checkpoint or the new one, never a mix (see ``files.py``). The
  files a checkpoint consists of are ``CHECKPOINT_FILES``: a re-save drops stale ones.
* **Reads check before they trust.** A file whose header promises more bytes than the
  file holds is reported as truncated, with both numbers.
* **A checkpoint that does not fit its config fails once, with everything listed:**
  every missing, unexpected and wrongly shaped tensor by name, in one ``ValueError``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..config import LlamaConfig
from ..model import Llama

# Files that belong to a checkpoint; re-saving into a directory drops stale ones.
CHECKPOINT_FILES = ("config.json", "params.json", "model*.safetensors",
                    "model*.safetensors.index.json", "pytorch_model*.bin",
                    "pytorch_model*.bin.index.json", "consolidated.*.pth")


# ----------------------------------------------------------------------------- writing
def write_safetensors(tensors: dict, path, metadata: dict | None = None):
    """The tensor writer for safetensors files (tests replace it to simulate a crash)."""
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    save_file(tensors, str(path), metadata=metadata)


def write_torch(obj, path):
    """The tensor writer for ``torch.save`` files (tests replace it to simulate a crash)."""
    torch.save(obj, path)


# ----------------------------------------------------------------------------- reading
def safetensors_header(path) -> dict[str, dict]:
    """A safetensors file's header (name -> dtype, shape, data_offsets), checked against
    the file's size, without reading any tensor.

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
    header.pop("__metadata__", None)
    data = max((v["data_offsets"][1] for v in header.values()), default=0)
    if 8 + n + data > size:
        raise ValueError(f"{path} is truncated: header promises {data} bytes of tensor data, "
                         f"found {size - 8 - n}")
    return header


def read_safetensors(path, transform=None, keep=None) -> dict[str, torch.Tensor]:
    """Load a safetensors file after checking that it holds every byte its header promises.

    Tensors are read one at a time (``safe_open``) and passed through
    ``transform(name, tensor)`` as they arrive, so a conversion to another dtype or
    device never holds more than one source tensor beside its result. Names for which
    ``keep(name)`` is false are not read at all.
    """
    safetensors_header(path)
    out = {}
    with safe_open(str(path), framework="pt") as f:
        for name in f.keys():
            if keep is not None and not keep(name):
                continue
            t = f.get_tensor(name)
            out[name] = transform(name, t) if transform else t
    return out


def read_torch(path, transform=None, keep=None) -> dict[str, torch.Tensor]:
    """``torch.load`` with ``weights_only=True`` (no arbitrary code), errors made clear.

    With a ``transform`` the file is memory-mapped where its format allows, so each
    tensor is read from disk when ``transform(name, tensor)`` converts it, not all at once.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True,
                               mmap=transform is not None)
        except RuntimeError as e:           # the legacy (pre-zip) format cannot be mapped
            if "mmap" not in str(e):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:          # noqa: BLE001 -- damaged bytes raise many kinds
        # (UnpicklingError, RuntimeError, EOFError, IndexError, ...). torch's own message
        # suggests weights_only=False, which would run any code the file holds: we name
        # the problem instead.
        raise ValueError(f"{path} is truncated or corrupt: not a complete torch.save archive "
                         f"({type(e).__name__})") from None
    if not isinstance(state, dict) or (transform is None and keep is None):
        return state
    transform = transform or (lambda name, t: t)
    return {k: transform(k, state.pop(k)) for k in list(state) if keep is None or keep(k)}


def placer(dtype: torch.dtype | None = None, device=None):
    """``transform(name, tensor)`` moving floating tensors to ``dtype`` on ``device``.

    The smaller side of the conversion crosses to the device: a bf16 file loaded as
    float32 on a GPU is copied in bf16 and widened there; a float32 file loaded as bf16
    is narrowed first. Integer tensors keep their dtype.
    """
    def place(name, t: torch.Tensor) -> torch.Tensor:
        to = dtype if dtype is not None and t.is_floating_point() else t.dtype
        if to.itemsize >= t.dtype.itemsize:
            return t.to(device or t.device).to(to)
        return t.to(to).to(device or t.device)
    return place


# ----------------------------------------------------------------------------- checking
def expected_shapes(cfg: LlamaConfig) -> dict[str, tuple]:
    """Every tensor a checkpoint for ``cfg`` must hold (our names); tied heads omit output."""
    with torch.device("meta"):
        model = Llama(cfg)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if cfg.tie_embeddings:
        del shapes["output.weight"]
    return shapes


def check_tensors(found: dict[str, tuple], expected: dict[str, tuple], hint: str = "",
                  what: str = "checkpoint does not fit the config"):
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
        raise ValueError(f"{what}: " + "; ".join(problems) + hint)


def model_state(model: Llama) -> dict[str, torch.Tensor]:
    """The model's tensors under our names (a tied head stored once), checked."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if model.cfg.tie_embeddings:
        state.pop("output.weight", None)
    check_tensors({k: v.shape for k, v in state.items()}, expected_shapes(model.cfg),
                  hint=" (merge or remove PEFT adapters before saving a base checkpoint)")
    return state


def build_model(cfg: LlamaConfig, state: dict, dtype=torch.float32, device=None) -> Llama:
    """A ``Llama`` in eval mode holding ``state`` (our names, already checked).

    The model is built on the ``meta`` device, so no time or memory goes into a random
    initialisation that would be overwritten; the loaded tensors are then adopted as
    they are (``assign=True``) and the RoPE table is computed for real. Tensors already
    in ``dtype`` on ``device`` (the loaders convert them as they read, ``placer``) are
    adopted without a copy.
    """
    with torch.device("meta"):
        model = Llama(cfg)
    place = placer(dtype, device)
    state = {k: place(k, state.pop(k)) for k in list(state)}
    if cfg.tie_embeddings:
        state["output.weight"] = state["tok_embeddings.weight"]
    model.load_state_dict(state, assign=True)
    if cfg.tie_embeddings:
        model.output.weight = model.tok_embeddings.weight
    model.freqs_cis = model.rope_table().to(device or "cpu")
    return model.eval()
