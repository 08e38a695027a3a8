"""minillama's own format: the model exactly as this library sees it.

A directory with two files:

* ``config.json``: every field of ``LlamaConfig`` (``LlamaConfig.to_dict()``) plus the
  marker ``"format": "minillama"`` that tells this format apart from a Hugging Face
  ``config.json``;
* ``model.safetensors``: each tensor under its name in ``Llama.state_dict()``
  (Meta's names: ``layers.0.attention.wq.weight``...), in the model's own dtype and in
  the model's own RoPE pair layout, so nothing is converted on the way in or out. A tied
  output head is stored once, as ``tok_embeddings.weight``.

safetensors (rather than ``torch.save``) holds only raw tensors and a JSON header, so
loading it can never run code.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import LlamaConfig
from ..files import atomic_directory, read_json, write_json
from ..model import Llama
from .io import (
    CHECKPOINT_FILES,
    build_model,
    check_tensors,
    expected_shapes,
    model_state,
    placer,
    read_safetensors,
    safetensors_header,
    write_safetensors,
)

MARKER = "minillama"


def save_native(model: Llama, path) -> Path:
    state = model_state(model)
    with atomic_directory(path, CHECKPOINT_FILES) as tmp:
        write_json({"format": MARKER, **model.cfg.to_dict()}, tmp / "config.json")
        write_safetensors(state, tmp / "model.safetensors", metadata={"format": "pt"})
    return Path(path)


def load_native(path, *, dtype=torch.float32, device=None) -> Llama:
    path = Path(path)
    meta = read_json(path / "config.json")
    if meta.pop("format", None) != MARKER:
        raise ValueError(f"{path / 'config.json'} has no \"format\": \"minillama\" marker")
    cfg = LlamaConfig.from_dict(meta)
    shapes = {k: v["shape"] for k, v in safetensors_header(path / "model.safetensors").items()}
    check_tensors(shapes, expected_shapes(cfg))
    state = read_safetensors(path / "model.safetensors", placer(dtype, device))
    return build_model(cfg, state, dtype, device)
