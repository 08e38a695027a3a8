"""Adapters on disk: only the trained tensors, and a note of the base they belong to.

An adapter is useless without its base model, and silently wrong on another one, so a
saved adapter carries a fingerprint of its base and ``load`` refuses a mismatch:

    adapter.json          {"format": "minillama-adapter", "method", "options",
                           "base": {"config": shape and RoPE fields, "probe": a few
                           frozen weight values, "sha256": hash of both}}
    adapter.safetensors   the trainable tensors, under the model's parameter names

The probe (the first values of the first rows of the embedding and the head) tells
two bases of the same shape apart and survives a change of dtype (it is compared with
a tolerance). For QLoRA the base is the full-precision model *before* quantisation: the
embedding and head stay in full precision, so the fingerprint is the same before and
after, and NF4 is deterministic, so ``load`` re-quantises a fresh base (with the saved
``blocksize`` and ``double_quant`` options) to the very same 4-bit weights the adapter
was trained on. Both files are written into a temporary directory that replaces the
target in one step (``minillama/files.py``).

``format="peft"`` writes a LoRA (or QLoRA) adapter the way Hugging Face peft does
(``adapter_config.json`` + ``adapter_model.safetensors``, keys such as
``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``), for our base
exported with ``minillama.save(model, dir, format="hf")``. The HF export reorders the
rows of wq and wk inside each head (``checkpoints/hf.py``); the rows of a LoRA update
B A are B's rows, so B of wq/wk is reordered the same way and A is kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from ..checkpoints.hf import hf_name, meta_to_hf_permute
from ..checkpoints.hf_llama4 import is_llama4
from ..checkpoints.io import (
    CHECKPOINT_FILES,
    check_tensors,
    read_safetensors,
    write_safetensors,
)
from ..files import atomic_directory, read_json, recover, write_json
from ..model import Llama
from .lora import block_linears
from .spec import method_of

FORMAT = "minillama-adapter"
FILES = {"minillama": ("adapter.json", "adapter.safetensors"),
         "peft": ("adapter_config.json", "adapter_model.safetensors")}
CONFIG_FIELDS = ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "ffn_dim",
                 "norm_eps", "rope_theta", "rope_scaling", "rope_layout",
                 "tie_embeddings", "n_experts", "expert_dim", "interleave_moe_layer_step",
                 "nope_layer_interval", "attention_chunk_size", "use_qk_norm")
HF_PROJ = {"wq": "q_proj", "wk": "k_proj", "wv": "v_proj", "wo": "o_proj",
           "w1": "gate_proj", "w2": "down_proj", "w3": "up_proj"}      # checkpoints/hf.py


# ----------------------------------------------------------------------------- fingerprint
def fingerprint(model: Llama) -> dict:
    """What identifies the base: its config's shape/RoPE fields and a probe of frozen weights."""
    cfg = model.cfg
    config = {f: getattr(cfg, f) for f in CONFIG_FIELDS}
    if config["rope_scaling"] is not None:
        config["rope_scaling"] = dataclasses.asdict(config["rope_scaling"])
    config = json.loads(json.dumps(config))              # tuples -> lists, as read back
    rows = [model.tok_embeddings.weight[:2, :8], model.output.weight[:2, :8]]
    probe = [round(v, 6) for v in torch.cat(rows).detach().float().flatten().cpu().tolist()]
    digest = hashlib.sha256(json.dumps([config, probe], sort_keys=True).encode()).hexdigest()
    return {"config": config, "probe": probe, "sha256": digest}


def check_base(saved: dict, model: Llama, path):
    """Raise a ValueError naming how ``model`` differs from the base the adapter was made on."""
    ours = fingerprint(model)
    differ = [f"{k} (adapter {saved['config'].get(k)!r}, model {v!r})"
              for k, v in ours["config"].items() if saved["config"].get(k) != v]
    if differ:
        raise ValueError(f"{path} was made for a different base model: " + ", ".join(differ))
    a, b = torch.tensor(saved["probe"]), torch.tensor(ours["probe"])
    if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-2, atol=1e-4):
        gap = (a - b).abs().max().item() if a.shape == b.shape else float("nan")
        raise ValueError(f"{path} was made for a different base model: same config, but the "
                         f"weights differ (embedding/head probe, max difference {gap:.3g})")


# ----------------------------------------------------------------------------- minillama
def trainable_state(model) -> dict[str, torch.Tensor]:
    return {k: p.detach().cpu() for k, p in model.named_parameters() if p.requires_grad}


def save_adapter(model, path, format: str = "minillama", base_model_name_or_path=None) -> Path:
    if format not in FILES:
        raise ValueError(f"unknown adapter format {format!r}; valid: {', '.join(FILES)}")
    config = method_of(model)
    if model.tok_embeddings.weight.device.type == "meta":
        raise ValueError("the model is on the meta device: it has shapes but no values to save")
    if format == "peft":
        if config["method"] not in ("lora", "qlora"):
            raise ValueError(f"format='peft' holds LoRA adapters only; save {config['method']} "
                             f"with format='minillama'")
        if config["merged"] and config["method"] == "qlora":
            raise ValueError("qlora was merged into the weights; save the adapter before "
                             "merging")
        tensors, meta = _peft_export(model, config["options"], base_model_name_or_path)
    else:
        if config["merged"] and config["method"] != "lora":
            raise ValueError(f"{config['method']} was merged into the weights; save the "
                             f"adapter before merging")
        tensors = trainable_state(model)
        meta = {"format": FORMAT, "method": config["method"], "options": config["options"],
                "base": fingerprint(model)}
    config_name, tensor_name = FILES[format]
    path = Path(path)
    replaces = (*FILES["minillama"], *FILES["peft"], *CHECKPOINT_FILES)  # either format's
    with atomic_directory(path, replaces) as tmp:
        write_json(meta, tmp / config_name)
        write_safetensors(tensors, tmp / tensor_name, metadata={"format": "pt"})
    return path


def read_adapter_config(model, path) -> tuple[Path, str, dict]:
    """(path, method, options) of the adapter saved at ``path``, after checking that it was
    made for the base ``model``."""
    path = recover(path)            # a save killed mid-swap leaves the adapter aside
    if not (path / FILES["minillama"][0]).is_file():
        if (path / FILES["peft"][0]).is_file():
            raise ValueError(f"{path} holds a peft-format adapter; load it with "
                             f"peft.PeftModel.from_pretrained on the HF export of the base")
        raise FileNotFoundError(f"{path}: no {FILES['minillama'][0]} (not a saved adapter)")
    meta = read_json(path / FILES["minillama"][0])
    if meta.get("format") != FORMAT or not {"method", "options", "base"} <= set(meta):
        raise ValueError(f"{path}/{FILES['minillama'][0]} is not a minillama adapter file")
    check_base(meta["base"], model, path)
    return path, meta["method"], meta["options"]


def read_adapter_tensors(path: Path, expected: dict[str, tuple]) -> dict[str, torch.Tensor]:
    """The adapter's tensors, checked against the shapes its method adds to the model."""
    tensors = read_safetensors(path / FILES["minillama"][1])
    check_tensors({k: tuple(v.shape) for k, v in tensors.items()}, expected,
                  what=f"{path} does not fit the model")
    return tensors


# ----------------------------------------------------------------------------- peft
def _peft_export(model, options: dict, base_model_name_or_path) -> tuple[dict, dict]:
    """LoRA tensors under peft's names (B of wq/wk reordered like the HF export)."""
    cfg = model.cfg
    if is_llama4(cfg):
        raise ValueError("format='peft' supports LLaMA 1-3 (LlamaForCausalLM) bases only")
    heads = {"wq": cfg.n_heads, "wk": cfg.n_kv_heads}
    tensors = {}
    for parent, name, full in block_linears(model, options["targets"]):
        module = getattr(parent, name)
        key = "base_model.model." + hf_name(full + ".weight").removesuffix(".weight")
        B = module.lora_B.detach().cpu()
        if name in heads and cfg.rope_layout == "interleaved":
            B = meta_to_hf_permute(B, heads[name])
        tensors[f"{key}.lora_A.weight"] = module.lora_A.detach().cpu()
        tensors[f"{key}.lora_B.weight"] = B.contiguous()
    hf_targets = [HF_PROJ[t] for t in options["targets"]]
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": options["r"],
              "lora_alpha": options["alpha"], "lora_dropout": options["dropout"],
              "target_modules": hf_targets, "use_rslora": options["rslora"], "bias": "none",
              "fan_in_fan_out": False, "init_lora_weights": True, "inference_mode": True,
              "modules_to_save": None, "base_model_name_or_path": base_model_name_or_path}
    return tensors, config
