"""Checkpoints: load any supported format, save to any of them.

``load`` looks at what is on disk and picks the reader:

    a directory with config.json marked "format": "minillama"  -> native  (native.py)
    a directory with config.json for model_type "llama"         -> hf      (hf.py)
    ... for model_type "llama4_text" or "llama4" (Llama 4)      -> hf      (hf_llama4.py)
    a directory with params.json and consolidated.*.pth         -> meta    (meta.py)
    a single file with a 7-int32 header                         -> llama2c (llama2c.py)

Every loader returns a ``Llama`` in eval mode with float32 weights (``dtype=`` to
change it) on the CPU (``device=``) and interleaved RoPE pairs; every saver writes
atomically (``io.py``). Before reading a tensor, ``load`` prints the memory the weights
will take and refuses when the device has less free (``memory.py``); loaders convert
each tensor to the target dtype and device as they read it, shard by shard, so a
model stored in float32 and loaded in bfloat16 never exists whole in float32.
Saving as ``hf`` writes ``Llama4ForCausalLM`` for a model with Llama 4 features and
``LlamaForCausalLM`` otherwise; the Meta and llama2.c formats cannot hold Llama 4.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..files import read_json, recover
from .hf import hf_to_meta_permute, load_hf, meta_to_hf_permute, save_hf
from .hf_llama4 import MODEL_TYPES as LLAMA4_TYPES
from .hf_llama4 import is_llama4, load_hf_llama4, save_hf_llama4
from .llama2c import load_llama2c, save_llama2c
from .memory import NotEnoughMemory, check_fits
from .meta import load_meta, save_meta
from .native import MARKER, load_native, save_native


def _load_any_hf(path, **kwargs):
    llama4 = read_json(Path(path) / "config.json").get("model_type") in LLAMA4_TYPES
    return (load_hf_llama4 if llama4 else load_hf)(path, **kwargs)


def _save_any_hf(model, path, **kwargs):
    return (save_hf_llama4 if is_llama4(model.cfg) else save_hf)(model, path, **kwargs)


LOADERS = {"native": load_native, "hf": _load_any_hf, "meta": load_meta,
           "llama2c": load_llama2c}
SAVERS = {"native": save_native, "hf": _save_any_hf, "meta": save_meta, "llama2c": save_llama2c}
FORMATS = tuple(LOADERS)

EXPECTED = ("a native directory (config.json with \"format\": \"minillama\" + model.safetensors), "
            "a Hugging Face directory (config.json with model_type \"llama\" + model.safetensors, "
            "model.safetensors.index.json or pytorch_model.bin), a Meta directory (params.json + "
            "consolidated.*.pth) or a llama2.c .bin file")


def detect_format(path) -> str:
    """Which of ``FORMATS`` the checkpoint at ``path`` is in."""
    path = recover(path)            # a save killed mid-swap leaves the checkpoint aside
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; expected {EXPECTED}")
    if path.is_file():
        if path.suffix in (".json", ".safetensors", ".pth", ".pt"):
            raise ValueError(f"{path} is one file of a checkpoint; pass its directory "
                             f"(expected {EXPECTED})")
        return "llama2c"
    if (path / "config.json").is_file():
        cfg = read_json(path / "config.json")
        if cfg.get("format") == MARKER:
            return "native"
        if cfg.get("model_type") in ("llama", *LLAMA4_TYPES) or "LlamaForCausalLM" in cfg.get(
                "architectures", []):
            return "hf"
        if "model_type" in cfg:
            raise ValueError(f"{path}/config.json describes model_type {cfg['model_type']!r}; "
                             f"only 'llama' (LlamaForCausalLM) and 'llama4_text' / 'llama4' "
                             f"(Llama4ForCausalLM, text part) are supported")
    if (path / "params.json").is_file() and any(path.glob("consolidated.*.pth")):
        return "meta"
    found = sorted(p.name for p in path.iterdir())[:20]
    raise ValueError(f"unrecognised checkpoint directory {path} (contains {found}); "
                     f"expected {EXPECTED}")


def load(path, *, format: str | None = None, dtype: torch.dtype = torch.float32,
         device="cpu", max_bytes: int | None = None, quiet: bool = False, **kwargs):
    """Load a ``Llama`` from ``path`` onto ``device`` in ``dtype``; ``format`` is detected.

    First prints (to stderr, unless ``quiet``) parameters x bytes per value at ``dtype``
    and raises ``NotEnoughMemory`` when that exceeds the free memory of ``device``
    (capped by ``max_bytes`` or ``$MINILLAMA_MAX_BYTES``). Format-specific options: hf
    ``rope_layout``; meta ``vocab_size``, ``max_seq_len``, ``embedding_shard_dim``.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype (e.g. torch.bfloat16), "
                        f"got {dtype!r}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device}: no CUDA device is available")
    recover(path)
    format = format or detect_format(path)
    if format not in LOADERS:
        raise ValueError(f"unknown checkpoint format {format!r}; known: {', '.join(FORMATS)}")
    if not Path(path).exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    check_fits(path, format, dtype, device, max_bytes, quiet)
    return LOADERS[format](path, dtype=dtype, device=device, **kwargs)


def save(model, path, format: str = "native", **kwargs) -> Path:
    """Save ``model`` to ``path`` in ``format`` (meta: ``shards``, ``embedding_shard_dim``)."""
    if format not in SAVERS:
        raise ValueError(f"unknown checkpoint format {format!r}; known: {', '.join(FORMATS)}")
    if format in ("meta", "llama2c") and is_llama4(model.cfg):
        raise ValueError(f"the {format} format cannot hold Llama 4 features (experts, NoPE "
                         f"layers, chunked attention, QK-norm, temperature tuning); "
                         f"save as 'native' or 'hf'")
    return SAVERS[format](model, path, **kwargs)


__all__ = ["load", "save", "detect_format", "FORMATS", "meta_to_hf_permute",
           "hf_to_meta_permute", "NotEnoughMemory"]
