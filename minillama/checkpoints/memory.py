"""Will the weights fit? The memory a checkpoint needs, known before a byte of it is read.

The weights of a model take

    bytes = (number of parameters) x (bytes per value at the dtype it is loaded in)

e.g. Llama 3.2 1B: 1,235,814,400 parameters x 2 bytes (bfloat16) = 2.30 GiB, twice that
in float32. The parameter count comes from the files' headers alone: a safetensors file
starts with a JSON table of every tensor's shape (``io.safetensors_header``), a
``torch.save`` archive is memory-mapped so its tensors' shapes are known without reading
their bytes, and llama2.c's 7-number header fixes every size.

``check_fits`` prints that figure and refuses (``NotEnoughMemory``) when it exceeds what
the target device has free: ``torch.cuda.mem_get_info`` on a GPU, ``MemAvailable`` from
``/proc/meminfo`` on the CPU (``os.sysconf`` elsewhere). The figure counts weights only;
activations and the KV cache (``kv_cache_bytes_per_token``) come on top. A cap can be set
with ``max_bytes=`` or the environment variable ``MINILLAMA_MAX_BYTES`` (bytes), which
tests use to check the refusal on a small model.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import torch

from ..files import read_json
from .hf import weight_shapes
from .io import expected_shapes, read_torch, safetensors_header
from .llama2c import read_header
from .meta import _split_dim

ENV_CAP = "MINILLAMA_MAX_BYTES"


class NotEnoughMemory(MemoryError, ValueError):
    """The weights would not fit on the target device (a ValueError, so CLIs report it)."""


def _hf_shapes(path: Path) -> dict[str, tuple]:
    cfg = read_json(path / "config.json")
    shapes = weight_shapes(path)
    if cfg.get("model_type") == "llama4":           # the text model only
        shapes = {k: s for k, s in shapes.items() if k.startswith("language_model.")}
        cfg = cfg.get("text_config") or {}
    if cfg.get("tie_word_embeddings"):
        shapes = {k: s for k, s in shapes.items() if not k.endswith("lm_head.weight")}
    return {k: s for k, s in shapes.items() if not k.endswith("rotary_emb.inv_freq")}


def _meta_shapes(path: Path) -> dict[str, tuple]:
    total = {}
    for f in sorted(path.glob("consolidated.*.pth")):
        for k, t in read_torch(f, transform=lambda n, t: t).items():
            if k == "rope.freqs":
                continue
            dim = _split_dim(k, 0)                  # None: replicated, counted once
            if k not in total or dim is None:
                total[k] = tuple(t.shape)
            else:                                   # shards add up along dim (the
                s = list(total[k])                  # embedding's may be 1: same count)
                s[dim] += t.shape[dim]
                total[k] = tuple(s)
    return total


def stored_shapes(path, format: str) -> dict[str, tuple]:
    """Every weight tensor's shape in the checkpoint at ``path``, from headers only."""
    path = Path(path)
    if format == "native":
        return {k: tuple(v["shape"]) for k, v in
                safetensors_header(path / "model.safetensors").items()}
    if format == "hf":
        return _hf_shapes(path)
    if format == "meta":
        return _meta_shapes(path)
    if format == "llama2c":
        return expected_shapes(read_header(path))
    raise ValueError(f"unknown checkpoint format {format!r}")


def parameter_count(path, format: str) -> int:
    return sum(math.prod(s) for s in stored_shapes(path, format).values())


def free_bytes(device) -> int:
    """Memory free on ``device`` now: CUDA's own count, or the RAM the OS can give."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def check_fits(path, format: str, dtype: torch.dtype, device="cpu", max_bytes: int | None = None,
               quiet: bool = False) -> int:
    """Print what the weights will take at ``dtype``; raise ``NotEnoughMemory`` if too much.

    Returns the number of bytes. ``max_bytes`` (or ``$MINILLAMA_MAX_BYTES``) caps the
    memory considered free.
    """
    n = parameter_count(path, format)
    need = n * dtype.itemsize
    free = free_bytes(device)
    cap = max_bytes if max_bytes is not None else os.environ.get(ENV_CAP)
    if cap is not None:
        free = min(free, int(cap))
    where = f"{torch.device(device)}"
    if not quiet:
        print(f"loading {Path(path).name}: {n:,} parameters x {dtype.itemsize} bytes "
              f"({str(dtype).removeprefix('torch.')}) = {gib(need)} on {where} "
              f"({gib(free)} free)", file=sys.stderr)
    if need > free:
        raise NotEnoughMemory(
            f"{path}: the weights need {gib(need)} ({n:,} parameters in "
            f"{str(dtype).removeprefix('torch.')}) but {where} has {gib(free)} free"
            f"{' (capped by max_bytes / $' + ENV_CAP + ')' if cap is not None else ''}; "
            f"load in a smaller dtype (dtype=torch.bfloat16), on another device, or free memory")
    return need
