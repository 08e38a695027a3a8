"""Meta's original release format (LLaMA 1, Llama 2, Llama 3).

A directory with ``params.json`` (the architecture: dim, n_layers, n_heads, n_kv_heads,
vocab_size, multiple_of, ffn_dim_multiplier, norm_eps, rope_theta, use_scaled_rope) and
one ``consolidated.NN.pth`` per model-parallel rank, written by ``torch.save``. The
tensor names are the ones our model uses (``layers.N.attention.wq.weight``...), and
RoPE pairs are interleaved, so nothing is permuted.

A big model is cut into shards the way Meta's tensor parallelism splits the matrices:

* column-parallel layers (wq, wk, wv, w1, w3, output) keep a slice of the *output*
  rows, so their shards are concatenated on dim 0;
* row-parallel layers (wo, w2) keep a slice of the *input* columns: dim 1;
* the embedding is split on the model dimension (dim 1) in LLaMA 1/2 and on the
  vocabulary (dim 0) in Llama 3 (a 128K vocabulary); we tell the two apart from the
  shard shapes, and save with dim 0 when the vocabulary has >= 128000 entries;
* RMSNorm gains are tiny and replicated in every shard.

``params.json`` does not record the context length (Meta's code takes it as an
argument), so ``load`` takes ``max_seq_len``. ``vocab_size: -1`` (LLaMA 1) means "ask
the tokenizer": pass ``vocab_size=`` or it is read off the embedding. Meta's files
always contain ``output.weight``; a head identical to the embedding loads as tied.

``use_scaled_rope`` names Llama 3.1's RoPE scaling (factor 8) but not its factor, and
Llama 3.2 1B/3B use factor 32 (their HF config.json says so; Meta's reference code
hard-coded 8, meta-llama/llama-models issue 241). The 1B and 3B are the only Llama 3
models with a tied head, so a tied scaled model gets 32, unless params.json carries
``rope_scaling_factor`` (or ``rope_scaling``, our own key) or ``load`` is told
``rope_scaling_factor=``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import LlamaConfig, RopeScaling
from ..files import atomic_directory, read_json, write_json
from ..model import Llama
from .hf import hf_to_meta_permute, permute_qk
from .io import (
    CHECKPOINT_FILES,
    build_model,
    check_tensors,
    expected_shapes,
    model_state,
    placer,
    read_torch,
    write_torch,
)

META_SCALING = RopeScaling(8.0, 1.0, 4.0, 8192)   # what Meta's code means by use_scaled_rope
TIED_FACTOR = 32.0                                # Llama 3.2 1B/3B (tied heads)


def _split_dim(name: str, embedding_dim: int) -> int | None:
    """The dimension a tensor is sharded on (None: replicated)."""
    if name.endswith("norm.weight"):
        return None
    if name.endswith(("wo.weight", "w2.weight")):
        return 1
    return embedding_dim if name == "tok_embeddings.weight" else 0


def _ffn_params(cfg: LlamaConfig) -> tuple[int, float | None]:
    """(multiple_of, ffn_dim_multiplier) that make Meta's formula give ``cfg.ffn_dim``."""
    if cfg.hidden_dim is None:
        return cfg.multiple_of, cfg.ffn_dim_multiplier
    h, f = int(2 * 4 * cfg.dim / 3), cfg.ffn_dim
    # rounding h up to a multiple of f gives f when h <= f; otherwise shrink h to f first
    return (f, None) if h <= f else (f, (f + 0.5) / h)


def params_json(cfg: LlamaConfig) -> dict:
    multiple_of, mult = _ffn_params(cfg)
    params = {"dim": cfg.dim, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
              "n_kv_heads": cfg.n_kv_heads, "vocab_size": cfg.vocab_size,
              "multiple_of": multiple_of, "ffn_dim_multiplier": mult,
              "norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta,
              "use_scaled_rope": cfg.rope_scaling is not None}
    if cfg.rope_scaling is not None and cfg.rope_scaling != META_SCALING:
        params["rope_scaling"] = vars(cfg.rope_scaling)    # our addition; Meta's are fixed
    elif cfg.rope_scaling is not None and cfg.tie_embeddings:
        params["rope_scaling_factor"] = cfg.rope_scaling.factor   # not the tied default, 32
    return params


def config_from_params(p: dict, vocab_size: int, max_seq_len: int, tied: bool,
                       rope_scaling_factor: float | None = None) -> LlamaConfig:
    missing = [k for k in ("dim", "n_layers", "n_heads") if k not in p]
    if missing:
        raise ValueError(f"params.json lacks {missing}")
    scaled = bool(p.get("use_scaled_rope", False))
    scaling = RopeScaling(**p["rope_scaling"]) if "rope_scaling" in p else META_SCALING
    factor = rope_scaling_factor or p.get("rope_scaling_factor") or (
        TIED_FACTOR if tied and "rope_scaling" not in p else None)
    if factor:
        scaling = RopeScaling(float(factor), scaling.low_freq_factor, scaling.high_freq_factor,
                              scaling.original_max_seq_len)
    return LlamaConfig(
        dim=p["dim"], n_layers=p["n_layers"], n_heads=p["n_heads"],
        n_kv_heads=p.get("n_kv_heads") or p["n_heads"], vocab_size=vocab_size,
        multiple_of=p.get("multiple_of", 256), ffn_dim_multiplier=p.get("ffn_dim_multiplier"),
        norm_eps=p.get("norm_eps", 1e-5), rope_theta=p.get("rope_theta", 10000.0),
        rope_scaling=scaling if scaled else None,
        max_seq_len=max_seq_len, tie_embeddings=tied)


# ----------------------------------------------------------------------------- save
def save_meta(model: Llama, path, shards: int = 1,
              embedding_shard_dim: int | None = None) -> Path:
    """Write ``params.json`` and ``shards`` files ``consolidated.00.pth``, ..."""
    cfg = model.cfg
    state = model_state(model)
    if cfg.tie_embeddings:                    # Meta's code always loads an output head
        state["output.weight"] = state["tok_embeddings.weight"]
    if cfg.rope_layout == "half":             # Meta's files pair RoPE dims the interleaved way
        state = permute_qk(state, cfg, hf_to_meta_permute)
    if embedding_shard_dim is None:
        embedding_shard_dim = 0 if cfg.vocab_size >= 128000 else 1
    parts = [{} for _ in range(shards)]
    for k, v in state.items():
        dim = _split_dim(k, embedding_shard_dim)
        if dim is not None and v.shape[dim] % shards:
            raise ValueError(f"cannot split {k} {tuple(v.shape)} into {shards} shards on dim {dim}")
        pieces = [v] * shards if dim is None else v.split(v.shape[dim] // shards, dim)
        for part, piece in zip(parts, pieces):
            part[k] = piece.clone()           # a view would save its whole parent tensor
    with atomic_directory(path, CHECKPOINT_FILES) as tmp:
        write_json(params_json(cfg), tmp / "params.json")
        for i, part in enumerate(parts):
            write_torch(part, tmp / f"consolidated.{i:02d}.pth")
    return Path(path)


# ----------------------------------------------------------------------------- load
def _merge(shards: list[dict], dim: int, embedding_shard_dim: int | None) -> dict:
    names = set(shards[0])
    odd = [i for i, s in enumerate(shards) if set(s) != names]
    if odd:
        raise ValueError(f"Meta shards {odd} hold different tensor names than shard 0")
    if len(shards) == 1:
        return dict(shards[0])
    if embedding_shard_dim is None:           # a vocab split leaves whole rows of width dim
        emb = shards[0].get("tok_embeddings.weight")
        embedding_shard_dim = 0 if emb is not None and emb.shape[1] == dim else 1
    return {k: shards[0][k] if (d := _split_dim(k, embedding_shard_dim)) is None
            else torch.cat([s.pop(k) for s in shards], dim=d) for k in sorted(names)}


def load_meta(path, *, dtype=torch.float32, device=None, vocab_size: int | None = None,
              max_seq_len: int = 4096, embedding_shard_dim: int | None = None,
              rope_scaling_factor: float | None = None) -> Llama:
    path = Path(path)
    p = read_json(path / "params.json")
    files = sorted(path.glob("consolidated.*.pth"), key=lambda f: int(f.name.split(".")[1]))
    if not files:
        raise FileNotFoundError(f"{path}: no consolidated.*.pth files beside params.json")
    # memory-mapped; each tensor converted to dtype/device as read (a model-parallel piece
    # at a time), so only the concatenated result ever fills memory
    shards = [read_torch(f, placer(dtype, device)) for f in files]
    for s in shards:
        s.pop("rope.freqs", None)             # LLaMA 1 stored its RoPE table; we recompute it
    state = _merge(shards, p.get("dim"), embedding_shard_dim)
    if vocab_size is None:
        vocab_size = p.get("vocab_size", -1)
    if vocab_size == -1 and "tok_embeddings.weight" in state:
        vocab_size = state["tok_embeddings.weight"].shape[0]
    if vocab_size == -1:
        raise ValueError("params.json says vocab_size -1 and there is no tok_embeddings.weight "
                         "to read it from; pass vocab_size=")
    emb, out = state.get("tok_embeddings.weight"), state.get("output.weight")
    tied = out is None or (emb is not None and emb.shape == out.shape and torch.equal(emb, out))
    if tied:
        state.pop("output.weight", None)
    cfg = config_from_params(p, vocab_size, max_seq_len, tied, rope_scaling_factor)
    check_tensors({k: v.shape for k, v in state.items()}, expected_shapes(cfg))
    return build_model(cfg, state, dtype, device)

