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
from safetensors.torch import load_file, save_file

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
