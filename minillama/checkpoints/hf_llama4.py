"""Hugging Face Llama 4 text models (``Llama4ForCausalLM``, ``model_type: llama4_text``).

The text half of Scout and Maverick as transformers stores it. Inside block N (prefix
``model.layers.N.``) the names differ from Llama 1-3 in the feed-forward part:

    feed_forward.w1/w3/w2 (dense layers)  -> feed_forward.gate_proj/up_proj/down_proj
    feed_forward.router (E, D)            -> feed_forward.router           (no bias)
    feed_forward.shared_expert.w1/w3/w2   -> feed_forward.shared_expert.gate/up/down_proj
    feed_forward.experts.w1, w3 (E, D, F) -> feed_forward.experts.gate_up_proj (E, D, 2F),
                                             the gate half first
    feed_forward.experts.w2 (E, F, D)     -> feed_forward.experts.down_proj (E, F, D)

and attention keeps Meta's interleaved RoPE pairs, so q and k are *not* permuted
(transformers' Llama 4 rotates complex pairs, not ``rotate_half``). A whole
``Llama4ForConditionalGeneration`` directory (``model_type: llama4``, the text settings
under ``text_config``) is read too: its text weights sit under ``language_model.``, and
the vision tower and projector are skipped.

transformers keeps the per-layer switches as lists; we keep the rules that generate
them, and a file whose lists follow no rule is refused:

    moe_layers     = [i for i in range(L) if (i + 1) % interleave_moe_layer_step == 0]
    no_rope_layers = [0 if (i + 1) % no_rope_layer_interval == 0 else 1 ...]  (1 = RoPE)

``attention_chunk_size`` (None = off) chunks the RoPE layers, ``use_qk_norm`` normalises
their q and k, ``attn_temperature_tuning`` with ``floor_scale``/``attn_scale`` scales the
queries of the NoPE layers (``attention.py``). ``router_aux_loss_coef`` exists in the
config but transformers 5.24's ``Llama4ForCausalLM`` never adds a balancing loss, so it
is neither read nor written; keys a file leaves out take transformers' defaults.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..config import LlamaConfig
from ..files import atomic_directory, read_json, write_json
from ..model import Llama
from .hf import (
    _read_weights,
    _rope_from_hf,
    config_to_hf,
    hf_to_meta_permute,
    meta_to_hf_permute,
    permute_qk,
)
from .io import (
    CHECKPOINT_FILES,
    build_model,
    check_tensors,
    expected_shapes,
    model_state,
    placer,
    write_safetensors,
)

MODEL_TYPES = ("llama4_text", "llama4")
# transformers' Llama4TextConfig defaults, for keys a config.json leaves out
DEFAULTS = dict(hidden_size=5120, intermediate_size=8192, intermediate_size_mlp=16384,
                num_hidden_layers=48, num_attention_heads=40, num_key_value_heads=8,
                vocab_size=202048, rms_norm_eps=1e-5, max_position_embeddings=131072,
                num_local_experts=16, num_experts_per_tok=1, interleave_moe_layer_step=1,
                use_qk_norm=True, no_rope_layer_interval=4, attention_chunk_size=8192,
                attn_temperature_tuning=True, floor_scale=8192, attn_scale=0.1,
                rope_theta=500000.0, tie_word_embeddings=False)

_TOP = {"tok_embeddings.weight": "model.embed_tokens.weight",
        "norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}
_BLOCK = {"attention.wq": "self_attn.q_proj", "attention.wk": "self_attn.k_proj",
          "attention.wv": "self_attn.v_proj", "attention.wo": "self_attn.o_proj",
          "attention_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
          "feed_forward.w1": "feed_forward.gate_proj", "feed_forward.w3": "feed_forward.up_proj",
          "feed_forward.w2": "feed_forward.down_proj", "feed_forward.router": "feed_forward.router",
          "feed_forward.shared_expert.w1": "feed_forward.shared_expert.gate_proj",
          "feed_forward.shared_expert.w3": "feed_forward.shared_expert.up_proj",
          "feed_forward.shared_expert.w2": "feed_forward.shared_expert.down_proj"}
_EXPERTS = re.compile(r"layers\.(\d+)\.feed_forward\.experts\.(w1|w2|w3)")
_HF_EXPERTS = re.compile(r"model\.layers\.(\d+)\.feed_forward\.experts\.(gate_up_proj|down_proj)")


def is_llama4(cfg: LlamaConfig) -> bool:
    """Does ``cfg`` use anything only the Llama 4 layout can hold?"""
    return bool(cfg.n_experts or cfg.nope_layer_interval or cfg.attention_chunk_size
                or cfg.use_qk_norm or cfg.attn_temperature_tuning)


# ----------------------------------------------------------------------------- tensors
def hf_name(name: str) -> str:
    """Our name -> transformers' name, for every tensor but the experts' batched weights."""
    if name in _TOP:
        return _TOP[name]
    m = re.fullmatch(r"layers\.(\d+)\.(.+)\.weight", name)
    return f"model.layers.{m[1]}.{_BLOCK[m[2]]}.weight"


def to_hf(state: dict) -> dict:
    """Our tensors -> transformers' (w1 and w3 of the experts fused into gate_up_proj)."""
    out = {}
    for name, w in state.items():
        m = _EXPERTS.fullmatch(name)
        if m is None:
            out[hf_name(name)] = w
        elif m[2] == "w1":
            w3 = state[f"layers.{m[1]}.feed_forward.experts.w3"]
            out[f"model.layers.{m[1]}.feed_forward.experts.gate_up_proj"] = torch.cat([w, w3], -1)
        elif m[2] == "w2":
            out[f"model.layers.{m[1]}.feed_forward.experts.down_proj"] = w
    return out


def from_hf(raw: dict, cfg: LlamaConfig) -> dict:
    """transformers' tensors -> ours, after checking every name and shape against ``cfg``."""
    shapes = expected_shapes(cfg)
    with torch.device("meta"):                           # shapes in transformers' layout
        hf_shapes = {k: tuple(v.shape) for k, v in
                     to_hf({k: torch.empty(s) for k, s in shapes.items()}).items()}
    check_tensors({k: v.shape for k, v in raw.items()}, hf_shapes)
    ours = {hf_name(k): k for k in shapes if not _EXPERTS.fullmatch(k)}
    state = {}
    for k in list(raw):                        # popped: each source freed once converted
        v = raw.pop(k)
        m = _HF_EXPERTS.fullmatch(k)
        if m is None:
            state[ours[k]] = v
        elif m[2] == "gate_up_proj":
            w1, w3 = v.chunk(2, dim=-1)
            state[f"layers.{m[1]}.feed_forward.experts.w1"] = w1.contiguous()
            state[f"layers.{m[1]}.feed_forward.experts.w3"] = w3.contiguous()
        else:
            state[f"layers.{m[1]}.feed_forward.experts.w2"] = v
    return state


# ----------------------------------------------------------------------------- config
def config_to_hf4(cfg: LlamaConfig, dtype: torch.dtype) -> dict:
    d = config_to_hf(cfg, dtype)                         # shapes, norms, RoPE: as Llama 1-3
    del d["mlp_bias"]
    L = cfg.n_layers
    d.update(
        architectures=["Llama4ForCausalLM"], model_type="llama4_text",
        intermediate_size=cfg.moe_dim, intermediate_size_mlp=cfg.ffn_dim,
        num_local_experts=cfg.n_experts, num_experts_per_tok=cfg.n_experts_per_tok,
        interleave_moe_layer_step=cfg.interleave_moe_layer_step,
        moe_layers=[i for i in range(L) if cfg.is_moe_layer(i)],
        no_rope_layers=[int(cfg.uses_rope(i)) for i in range(L)],
        attention_chunk_size=cfg.attention_chunk_size, use_qk_norm=cfg.use_qk_norm,
        attn_temperature_tuning=cfg.attn_temperature_tuning, attn_scale=cfg.attn_scale,
        floor_scale=int(cfg.floor_scale) if float(cfg.floor_scale).is_integer()
        else cfg.floor_scale)
    if cfg.nope_layer_interval:             # transformers divides by it: never write 0
        d["no_rope_layer_interval"] = cfg.nope_layer_interval
    return d


def _every(flags: list[bool], key: str) -> int:
    """The n with flags[i] == ((i + 1) % n == 0) for all i; 0 when no flag is set."""
    if not any(flags):
        return 0
    n = flags.index(True) + 1
    if flags != [(i + 1) % n == 0 for i in range(len(flags))]:
        raise ValueError(f"config.json: {key} marks layers {[i for i, f in enumerate(flags) if f]}"
                         f", not every n-th layer; this library supports only that pattern")
    return n


def config_from_hf4(d: dict, tied: bool) -> LlamaConfig:
    if d.get("model_type") == "llama4":
        if not isinstance(d.get("text_config"), dict):
            raise ValueError("config.json: a 'llama4' model needs a text_config")
        d = d["text_config"]
    d = {**DEFAULTS, **{k: v for k, v in d.items() if v is not None or k == "attention_chunk_size"}}
    for key, ok in (("hidden_act", "silu"), ("attention_bias", False)):
        if d.get(key, ok) != ok:
            raise ValueError(f"config.json: {key}={d[key]!r} is not supported (needs {ok!r})")
    L, heads = d["num_hidden_layers"], d["num_attention_heads"]
    if d.get("head_dim") not in (None, d["hidden_size"] // heads):
        raise ValueError(f"config.json: head_dim={d['head_dim']} differs from "
                         f"hidden_size / num_attention_heads, which this library assumes")
    step = d["interleave_moe_layer_step"]
    moe_layers = d.get("moe_layers")
    if moe_layers is None:
        moe_layers = list(range(step - 1, L, step))
    moe = _every([i in moe_layers for i in range(L)], "moe_layers")
    rope_flags = d.get("no_rope_layers") or [
        int((i + 1) % d["no_rope_layer_interval"] != 0) for i in range(L)]
    if len(rope_flags) < L:
        raise ValueError(f"config.json: no_rope_layers has {len(rope_flags)} entries for {L} "
                         f"layers")
    return LlamaConfig(
        dim=d["hidden_size"], n_layers=L, n_heads=heads, n_kv_heads=d["num_key_value_heads"],
        vocab_size=d["vocab_size"], hidden_dim=d["intermediate_size_mlp"],
        expert_dim=d["intermediate_size"], norm_eps=d["rms_norm_eps"],
        max_seq_len=d["max_position_embeddings"], tie_embeddings=tied,
        n_experts=d["num_local_experts"] if moe else 0, interleave_moe_layer_step=moe or 1,
        n_experts_per_tok=d["num_experts_per_tok"],
        nope_layer_interval=_every([not f for f in rope_flags[:L]], "no_rope_layers"),
        attention_chunk_size=d["attention_chunk_size"], use_qk_norm=bool(d["use_qk_norm"]),
        attn_temperature_tuning=bool(d["attn_temperature_tuning"]),
        floor_scale=float(d["floor_scale"]), attn_scale=float(d["attn_scale"]),
        **_rope_from_hf(d))


# ----------------------------------------------------------------------------- save / load
def save_hf_llama4(model: Llama, path) -> Path:
    cfg = model.cfg
    state = model_state(model)
    if cfg.rope_layout == "half":                 # Llama 4 files pair dimensions Meta's way
        state = permute_qk(state, cfg, hf_to_meta_permute)
    with atomic_directory(path, CHECKPOINT_FILES) as tmp:
        write_json(config_to_hf4(cfg, model.tok_embeddings.weight.dtype), tmp / "config.json")
        write_safetensors(to_hf(state), tmp / "model.safetensors", metadata={"format": "pt"})
    return Path(path)


def load_hf_llama4(path, *, dtype=torch.float32, device=None,
                   rope_layout: str = "interleaved") -> Llama:
    """Load the text model of a HF Llama 4 directory (``rope_layout="half"`` permutes q, k)."""
    path = Path(path)
    d = read_json(path / "config.json")
    place = placer(dtype, device)             # each tensor converted as it is read
    multimodal = d.get("model_type") == "llama4"  # vision tower and projector: not read
    raw = _read_weights(path, place, keep=lambda name: not multimodal
                        or name.startswith("language_model."))
    if d.get("model_type") == "llama4":           # keep the language model, drop vision
        raw = {k.removeprefix("language_model."): v for k, v in raw.items()
               if k.startswith("language_model.")}
    text = d.get("text_config", d) if d.get("model_type") == "llama4" else d
    tied = bool((text or {}).get("tie_word_embeddings", False)) or "lm_head.weight" not in raw
    if tied:
        raw.pop("lm_head.weight", None)
    cfg = config_from_hf4(d, tied).replace(rope_layout=rope_layout)
    state = from_hf(raw, cfg)
    if rope_layout == "half":
        state = permute_qk(state, cfg, meta_to_hf_permute)
    return build_model(cfg, state, dtype, device)
