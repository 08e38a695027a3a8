"""Hugging Face ``LlamaForCausalLM`` directories, and the q/k permutation between layouts.

A directory holding ``config.json`` (``"model_type": "llama"``) and the weights as one
``model.safetensors``, as shards listed in ``model.safetensors.index.json``, or as an
older ``pytorch_model.bin``. The tensors are Meta's under other names:

    tok_embeddings -> model.embed_tokens      attention.wq/wk/wv/wo -> self_attn.q/k/v/o_proj
    attention_norm -> input_layernorm         feed_forward.w1/w3/w2 -> mlp.gate/up/down_proj
    ffn_norm -> post_attention_layernorm      norm -> model.norm,  output -> lm_head

(prefixed ``model.layers.N.`` inside block N). ``lm_head.weight`` is absent when the
head is tied to the embedding. RoPE settings live in ``rope_theta`` + ``rope_scaling``
for transformers 4.x and in ``rope_parameters`` for transformers 5; we write both and
read either.

Why q and k are permuted. RoPE rotates pairs of dimensions inside each head. Meta's
code pairs neighbours (0,1), (2,3), ...; Hugging Face's ``rotate_half`` pairs dimension
i with i + d/2. Both are correct, but a given wq only works with the pairing it was
trained with. Reordering the rows of wq (and wk) inside each head -- the even rows
first, then the odd ones -- moves every Meta pair (2i, 2i+1) to the HF pair
(i, i + d/2). Queries and keys come out reordered the same way, so every dot product
q . k, hence every attention score, is unchanged; v and wo need no change. A model
built with ``rope_layout="half"`` already pairs the HF way and is written unpermuted.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from einops import rearrange

from ..config import LlamaConfig, RopeScaling
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
    read_torch,
    safetensors_header,
    write_safetensors,
)


def meta_to_hf_permute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows of wq (n_heads) or wk (n_kv_heads): interleaved pairs -> rotate-half pairs."""
    return rearrange(w, "(h d two) i -> (h two d) i", h=n_heads, two=2)


def hf_to_meta_permute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of ``meta_to_hf_permute``: rotate-half pairs -> interleaved pairs."""
    return rearrange(w, "(h two d) i -> (h d two) i", h=n_heads, two=2)


_TOP = {"tok_embeddings": "model.embed_tokens", "norm": "model.norm", "output": "lm_head"}
_BLOCK = {"attention.wq": "self_attn.q_proj", "attention.wk": "self_attn.k_proj",
          "attention.wv": "self_attn.v_proj", "attention.wo": "self_attn.o_proj",
          "feed_forward.w1": "mlp.gate_proj", "feed_forward.w3": "mlp.up_proj",
          "feed_forward.w2": "mlp.down_proj", "attention_norm": "input_layernorm",
          "ffn_norm": "post_attention_layernorm"}


def hf_name(name: str) -> str:
    """Our (Meta's) tensor name -> the transformers name."""
    m = re.fullmatch(r"layers\.(\d+)\.(.+)\.weight", name)
    if m:
        return f"model.layers.{m[1]}.{_BLOCK[m[2]]}.weight"
    return _TOP[name.removesuffix(".weight")] + ".weight"


def permute_qk(state: dict, cfg: LlamaConfig, fn) -> dict:
    """Apply ``fn`` (one of the two permutations) to every wq and wk in ``state``."""
    heads = {"wq": cfg.n_heads, "wk": cfg.n_kv_heads}
    out = {}
    for k, v in state.items():
        m = re.fullmatch(r"layers\.\d+\.attention\.(wq|wk)\.weight", k)
        out[k] = fn(v, heads[m[1]]).contiguous() if m else v
    return out


# ----------------------------------------------------------------------------- config
def config_to_hf(cfg: LlamaConfig, dtype: torch.dtype) -> dict:
    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    scaling = None
    if (s := cfg.rope_scaling) is not None:             # HF calls this rope_type "llama3"
        scaling = {"rope_type": "llama3", "factor": s.factor, "low_freq_factor": s.low_freq_factor,
                   "high_freq_factor": s.high_freq_factor,
                   "original_max_position_embeddings": s.original_max_seq_len}
        rope.update(scaling)
    dtype_name = str(dtype).removeprefix("torch.")
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": cfg.dim, "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size, "rms_norm_eps": cfg.norm_eps,
        "max_position_embeddings": cfg.max_seq_len, "tie_word_embeddings": cfg.tie_embeddings,
        "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
        "torch_dtype": dtype_name, "dtype": dtype_name,
        "rope_theta": cfg.rope_theta, "rope_scaling": scaling,     # transformers 4.x
        "rope_parameters": rope,                                   # transformers 5.x
    }


def _rope_from_hf(d: dict) -> dict:
    rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
    theta = rope.get("rope_theta", d.get("rope_theta", 10000.0))
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind == "default":
        return {"rope_theta": theta}
    if kind != "llama3":
        raise ValueError(f"config.json uses rope type {kind!r}; supported: default, llama3")
    missing = [k for k in ("factor", "low_freq_factor", "high_freq_factor") if k not in rope]
    if missing:
        raise ValueError(f"config.json: llama3 rope settings lack {missing}")
    orig = rope.get("original_max_position_embeddings", d.get("max_position_embeddings"))
    return {"rope_theta": theta, "rope_scaling": RopeScaling(
        rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"], orig)}


def config_from_hf(d: dict, tied: bool, rope_layout: str = "interleaved") -> LlamaConfig:
    required = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "vocab_size")
    if missing := [k for k in required if k not in d]:
        raise ValueError(f"config.json lacks {missing}")
    for key, ok in (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False)):
        if d.get(key, ok) != ok:
            raise ValueError(f"config.json: {key}={d[key]!r} is not supported (needs {ok!r})")
    heads = d["num_attention_heads"]
    if d.get("head_dim") not in (None, d["hidden_size"] // heads):
        raise ValueError(f"config.json: head_dim={d['head_dim']} differs from "
                         f"hidden_size / num_attention_heads, which this library assumes")
    return LlamaConfig(
        dim=d["hidden_size"], n_layers=d["num_hidden_layers"], n_heads=heads,
        n_kv_heads=d.get("num_key_value_heads") or heads, vocab_size=d["vocab_size"],
        hidden_dim=d["intermediate_size"], norm_eps=d.get("rms_norm_eps", 1e-6),
        max_seq_len=d.get("max_position_embeddings", d.get("max_sequence_length", 2048)),
        tie_embeddings=tied,
        rope_layout=rope_layout, **_rope_from_hf(d))


# ----------------------------------------------------------------------------- save / load
def save_hf(model: Llama, path) -> Path:
    cfg = model.cfg
    state = model_state(model)
    if cfg.rope_layout == "interleaved":          # "half" is already the HF layout
        state = permute_qk(state, cfg, meta_to_hf_permute)
    tensors = {hf_name(k): v for k, v in state.items()}
    with atomic_directory(path, CHECKPOINT_FILES) as tmp:
        write_json(config_to_hf(cfg, model.tok_embeddings.weight.dtype), tmp / "config.json")
        write_safetensors(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
    return Path(path)


def weight_files(path: Path) -> tuple[list[Path], object]:
    """The files holding the weights (one, or the shards an index lists) and their reader."""
    if (path / "model.safetensors").is_file():
        return [path / "model.safetensors"], read_safetensors
    for index, reader in (("model.safetensors.index.json", read_safetensors),
                          ("pytorch_model.bin.index.json", read_torch)):
        if (path / index).is_file():
            weight_map = read_json(path / index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ValueError(f"{path / index} has no weight_map of tensor -> file")
            return [path / f for f in sorted(set(weight_map.values()))], reader
    if (path / "pytorch_model.bin").is_file():
        return [path / "pytorch_model.bin"], read_torch
    raise FileNotFoundError(f"{path}: no weights found; expected model.safetensors, "
                            f"model.safetensors.index.json or pytorch_model.bin")


def weight_shapes(path: Path) -> dict[str, tuple]:
    """Every stored tensor's shape, from the safetensors headers (or a memory map)."""
    files, reader = weight_files(path)
    if reader is read_safetensors:
        return {k: tuple(v["shape"]) for f in files for k, v in safetensors_header(f).items()}
    return {k: tuple(v.shape) for f in files
            for k, v in read_torch(f, transform=lambda n, t: t).items()}


def _read_weights(path: Path, transform=None, keep=None) -> dict:
    """The weights named by ``keep`` (all), each passed through ``transform(name, tensor)``
    as it is read: shard after shard, tensor after tensor, so only results accumulate."""
    files, reader = weight_files(path)
    return {k: v for f in files for k, v in reader(f, transform, keep).items()}


def eos_ids(path) -> list[int]:
    """The end-of-sequence ids a snapshot's generation_config.json (else config.json)
    names: an int or, for chat models such as Llama 3 Instruct, a list."""
    path = Path(path)
    for name in ("generation_config.json", "config.json"):
        if (path / name).is_file():
            eos = read_json(path / name).get("eos_token_id")
            if eos is not None:
                return [eos] if isinstance(eos, int) else [int(e) for e in eos]
    return []


def load_hf(path, *, dtype=torch.float32, device=None, rope_layout: str = "interleaved") -> Llama:
    """Load a HF Llama; ``rope_layout="half"`` keeps HF's q/k rows as they are.

    Each tensor is converted to ``dtype`` on ``device`` (and its q/k rows reordered) as
    it is read, shard by shard, so the whole model never exists in the file's dtype.
    """
    path = Path(path)
    d = read_json(path / "config.json")
    stored = {k: v for k, v in weight_shapes(path).items()
              if not k.endswith("rotary_emb.inv_freq")}
    tied = bool(d.get("tie_word_embeddings", False)) or "lm_head.weight" not in stored
    if tied:
        stored.pop("lm_head.weight", None)
    cfg = config_from_hf(d, tied, rope_layout)
    shapes = expected_shapes(cfg)
    names = {hf_name(k): k for k in shapes}                  # HF name -> ours
    check_tensors(stored, {h: shapes[k] for h, k in names.items()})   # before reading
    place = placer(dtype, device)
    heads = {"q_proj": cfg.n_heads, "k_proj": cfg.n_kv_heads}

    def transform(name, t):
        t = place(name, t)
        m = re.fullmatch(r"model\.layers\.\d+\.self_attn\.(q_proj|k_proj)\.weight", name)
        if m and rope_layout == "interleaved":
            t = hf_to_meta_permute(t, heads[m[1]]).contiguous()
        return t

    raw = _read_weights(path, transform, keep=stored.__contains__)
    return build_model(cfg, {names[k]: v for k, v in raw.items()}, dtype, device)
