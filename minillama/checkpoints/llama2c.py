"""llama2.c's legacy ``.bin``: one flat file of float32 numbers behind a 7-number header.

The header is seven little-endian int32:

    dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len

A negative ``vocab_size`` means the output head is stored separately (untied); a
positive one means it is the embedding. Then come float32 matrices in ``[out, in]``
order, each kind *grouped over all layers* (every layer's wq, then every layer's wk,
...):

    tok_embeddings (V, D)
    attention_norm (L, D)   wq (L, H*hd, D)   wk, wv (L, KV*hd, D)   wo (L, D, H*hd)
    ffn_norm (L, D)         w1 (L, F, D)      w2 (L, D, F)           w3 (L, F, D)
    norm (D,)
    freq_cis_real, freq_cis_imag (seq_len, hd/2)   -- a RoPE table; we recompute it
    output (V, D)                                  -- only when vocab_size < 0

Nothing else is recorded, so the format always means: interleaved RoPE pairs,
theta 10000, no RoPE scaling, RMSNorm eps 1e-5. The header alone fixes every size,
so a file shorter or longer than it promises is rejected.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import torch

from ..config import LlamaConfig
from ..files import atomic_file
from ..model import Llama
from .hf import hf_to_meta_permute, permute_qk
from .io import build_model, expected_shapes, model_state, placer

HEADER = struct.Struct("<7i")
PER_LAYER = ("attention_norm", "attention.wq", "attention.wk", "attention.wv", "attention.wo",
             "ffn_norm", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")
FIXED = {"rope_theta": 10000.0, "rope_scaling": None, "norm_eps": 1e-5}


def _layout(cfg: LlamaConfig) -> list[tuple[str, tuple]]:
    """(name, shape) of every array in the file, in file order."""
    shapes = expected_shapes(cfg)
    names = ["tok_embeddings.weight"]
    names += [f"layers.{i}.{part}.weight" for part in PER_LAYER for i in range(cfg.n_layers)]
    names += ["norm.weight"]
    layout = [(n, shapes[n]) for n in names]
    table = (cfg.max_seq_len, cfg.head_dim // 2)
    layout += [("freq_cis_real", table), ("freq_cis_imag", table)]
    if not cfg.tie_embeddings:
        layout.append(("output.weight", shapes["output.weight"]))
    return layout


def _write_floats(f, tensor: torch.Tensor):
    """The tensor writer: raw little-endian float32 (tests replace it to simulate a crash)."""
    f.write(tensor.detach().float().contiguous().numpy().astype("<f4").tobytes())


def save_llama2c(model: Llama, path) -> Path:
    cfg = model.cfg
    wrong = [f"{k}={getattr(cfg, k)!r}" for k, v in FIXED.items() if getattr(cfg, k) != v]
    if wrong:
        raise ValueError(f"the llama2.c format cannot record {', '.join(wrong)}; it always "
                         f"means rope_theta=10000, rope_scaling=None, norm_eps=1e-5")
    state = model_state(model)
    if cfg.rope_layout == "half":             # llama2.c pairs RoPE dims the interleaved way
        state = permute_qk(state, cfg, hf_to_meta_permute)
    freqs = model.rope_table()
    state["freq_cis_real"], state["freq_cis_imag"] = freqs.real, freqs.imag
    vocab = cfg.vocab_size if cfg.tie_embeddings else -cfg.vocab_size
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(HEADER.pack(cfg.dim, cfg.ffn_dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads,
                            vocab, cfg.max_seq_len))
        for name, _ in _layout(cfg):
            _write_floats(f, state[name])
    return Path(path)


def _n_floats(cfg: LlamaConfig) -> int:
    """How many float32 numbers follow the header (computed without building anything)."""
    d, f, hd = cfg.dim, cfg.ffn_dim, cfg.head_dim
    per_layer = 2 * d + 2 * d * cfg.n_heads * hd + 2 * d * cfg.n_kv_heads * hd + 3 * d * f
    heads = 1 if cfg.tie_embeddings else 2
    return heads * cfg.vocab_size * d + cfg.n_layers * per_layer + d + cfg.max_seq_len * hd


def read_header(path) -> LlamaConfig:
    """The config a llama2.c file's header describes (checked for sense, not for size)."""
    with open(path, "rb") as f:
        raw = f.read(HEADER.size)
    if len(raw) < HEADER.size:
        raise ValueError(f"llama2.c file is truncated: expected a {HEADER.size}-byte header, "
                         f"found {len(raw)} bytes")
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq = HEADER.unpack(raw)
    if dim == 0x616B3432:
        raise ValueError(f"{path} is a versioned llama2.c export (magic 'ak42'); "
                         f"only the legacy format (7-int header) is supported")
    try:
        return LlamaConfig(dim=dim, hidden_dim=hidden, n_layers=n_layers, n_heads=n_heads,
                           n_kv_heads=n_kv, vocab_size=abs(vocab), max_seq_len=seq,
                           tie_embeddings=vocab > 0, **FIXED)
    except ValueError as e:
        raise ValueError(f"{path} is not a llama2.c checkpoint: its header "
                         f"{HEADER.unpack(raw)} is not a valid model ({e})") from None


def load_llama2c(path, *, dtype=torch.float32, device=None) -> Llama:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    cfg = read_header(path)
    promised = 4 * _n_floats(cfg)
    found = path.stat().st_size - HEADER.size
    if found < promised:
        raise ValueError(f"llama2.c file is truncated: header promises {promised} bytes of "
                         f"weights, found {found}")
    if found > promised:
        raise ValueError(f"{path} has {found - promised} bytes more than its llama2.c header "
                         f"describes ({promised}); is it a legacy llama2.c file?")
    data = np.memmap(path, dtype="<f4", mode="r", offset=HEADER.size)   # read as used
    state, offset, place = {}, 0, placer(dtype, device)
    for name, shape in _layout(cfg):
        n = math.prod(shape)
        if not name.startswith("freq_cis"):
            t = torch.from_numpy(np.array(data[offset:offset + n]).reshape(shape))
            state[name] = place(name, t)
        offset += n
    return build_model(cfg, state, dtype, device)
