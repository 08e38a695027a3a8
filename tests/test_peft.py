"""PEFT methods: counts, zero-init, merging, saving, the KV cache, and parity with peft."""

import copy
import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import minillama
from minillama import CONFIGS, Llama, LlamaConfig
from minillama import peft as P
from minillama.checkpoints.hf import meta_to_hf_permute
from minillama.peft.adapter_v2 import BiasScaleLinear, joint_parameter_groups
from minillama.peft.lora import LoRALinear

SEQ = 12
SEVEN = ["wq", "wk", "wv", "wo", "w1", "w2", "w3"]
SMALL = {  # method: options for the 3-block test model (prompts in the top 2 blocks)
    "lora": dict(r=4, alpha=8, targets=SEVEN),
    "adapter_v1": dict(prompt_len=3, layers=2),
    "adapter_v2": dict(prompt_len=3, layers=2),
    "excitor": dict(prompt_len=5, layers=2, rank=4),
}


def config(**kw):
    return LlamaConfig(dim=64, n_layers=3, n_heads=4, n_kv_heads=2, vocab_size=128,
                       multiple_of=32, max_seq_len=64, **kw)


@torch.no_grad()
def randomise(model, seed=0):
    """Weights large enough that attention is sharp and adapters visibly matter."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g)
        if name.endswith(("norm.weight", ".scale")):
            p.copy_(1 + 0.2 * noise)
        elif any(s in name for s in ("wq", "wk", "q_proj", "k_proj")):
            p.copy_(0.2 * noise)
        else:
            p.copy_(0.1 * noise)
    return model.eval()


def base_model(seed=0, **kw):
    torch.manual_seed(seed)
    return randomise(Llama(config(**kw)), seed)


@torch.no_grad()
def train_a_little(model, seed=1, scale=0.3):
    """Every trainable tensor random (non-zero gates and B), as after some training."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.requires_grad:
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1 + 0.2 * noise if name.endswith(("norm.weight", ".scale")) else scale * noise)
    return model


def tokens(seed=1, batch=2, n=SEQ):
    return torch.randint(0, 128, (batch, n), generator=torch.Generator().manual_seed(seed))


def logits(model, x):
    with torch.no_grad():
        return model(x)


# ----------------------------------------------------------------------------- counts
@pytest.mark.parametrize("method, options, expected", [
    ("lora", {}, 4_194_304),
    ("lora", dict(targets=SEVEN), 19_988_480),
    ("lora", dict(r=64, targets=SEVEN), 159_907_840),
    ("adapter_v1", {}, 1_229_760),
    ("adapter_v2", {}, 3_994_560),
    ("excitor", {}, 7_619_520),
])
def test_llama1_7b_counts_on_the_meta_device(method, options, expected):
    with torch.device("meta"):
        model = P.apply(Llama(CONFIGS["llama1-7b"]), method, **options)
    assert P.trainable_parameters(model) == expected
    assert P.trainable_parameters(model) == sum(
        p.numel() for p in model.parameters() if p.requires_grad)


def test_adapter_v2_count_splits_as_the_spec_says():
    with torch.device("meta"):
        v2 = P.apply(Llama(CONFIGS["llama1-7b"]), "adapter_v2")
    prompts = sum(p.numel() for n, p in v2.named_parameters() if ".prompt." in n)
    assert prompts == 1_229_760 and P.trainable_parameters(v2) - prompts == 2_764_800


# ----------------------------------------------------------------------------- options
def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown PEFT method 'prefix'.*lora, adapter_v1, "
                                         "adapter_v2, excitor"):
        P.apply(base_model(), "prefix")


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"lora: unknown option\(s\) rank; valid: r, alpha, "
                                         r"dropout, targets, rslora"):
        P.apply(base_model(), "lora", rank=4)


@pytest.mark.parametrize("method, options, message", [
    ("lora", dict(r=0), "r must be a positive integer"),
    ("lora", dict(targets=["wq", "wx"]), r"unknown target\(s\) \['wx'\]; valid: wq, wk"),
    ("lora", dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
    ("lora", dict(alpha=-1), "alpha must be a number > 0"),
    ("adapter_v1", dict(layers=30), "layers=30 but the model has 3 blocks"),
    ("adapter_v1", dict(layers=2, gate="sigmoid"), "unknown gate 'sigmoid'; valid: tanh, scalar"),
    ("adapter_v2", dict(layers=3, visual_dim=8), "overlap"),
    ("excitor", dict(layers=2, rank=1.5), "rank must be a positive integer"),
])
def test_bad_option_values_are_named(method, options, message):
    model = base_model()
    with pytest.raises(ValueError, match=message):
        P.apply(model, method, **options)
    assert getattr(model, "peft_config", None) is None       # nothing half-applied


def test_methods_do_not_stack():
    model = P.apply(base_model(), "lora")
    with pytest.raises(ValueError, match="already has lora applied"):
        P.apply(model, "adapter_v1", layers=1)


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("method", SMALL)
def test_only_the_method_trains(method, device):
    base = base_model()
    base_names = dict(base.named_parameters())
    model = P.apply(copy.deepcopy(base), method, **SMALL[method])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert P.trainable_parameters(model) == sum(
        p.numel() for p in model.parameters() if p.requires_grad) > 0
    added = {"lora": ("lora_A", "lora_B"), "adapter_v1": ("prompt.prompt", "prompt.gate"),
             "excitor": ("score_bias.",),
             "adapter_v2": ("prompt.prompt", "prompt.gate", ".scale", ".bias", "norm.weight")}
    assert all(any(s in n for s in added[method]) for n in trainable)
    opened = sorted(n for n in trainable if n in base_names)
    assert opened == ([] if method != "adapter_v2" else
                      sorted(n for n in base_names if "norm" in n))    # V2 opens the norms
    train_a_little(model).to(device)
    model(tokens().to(device), tokens(2).to(device))[1].backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, n


@pytest.mark.parametrize("method", ["adapter_v1", "adapter_v2", "excitor", "lora"])
def test_at_initialisation_the_model_is_the_base_model(method):
    base = base_model()
    model = P.apply(copy.deepcopy(base), method, **SMALL[method])
    for ours, theirs in zip(model.layers, base.layers):   # a score term takes the explicit path
        theirs.attention.use_sdpa = ours.attention.score_bias is None
    x = tokens()
    assert torch.equal(logits(model, x), logits(base, x))


def test_lora_dropout_touches_only_the_lora_input():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(16, 8, bias=False), r=4, alpha=8, dropout=0.9).train()
    x = torch.randn(5, 16)
    assert torch.equal(layer(x), layer.base(x))              # B = 0: dropout cannot show
    with torch.no_grad():
        layer.lora_B.normal_()
    low_rank = lambda: layer(x) - layer.base(x)
    assert not torch.allclose(low_rank(), low_rank())        # a new mask each call
    layer.eval()
    expected = layer.scale * x @ layer.lora_A.T @ layer.lora_B.T
    torch.testing.assert_close(low_rank(), expected, atol=1e-6, rtol=1e-5)


def test_rslora_scale():
    layer = LoRALinear(nn.Linear(4, 4), r=16, alpha=8, rslora=True)
    assert layer.scale == 8 / 4
    assert LoRALinear(nn.Linear(4, 4), r=16, alpha=8).scale == 8 / 16


# ----------------------------------------------------------------------------- merging
def test_lora_merge_equals_unmerged_and_unmerge_restores_the_weights(device):
    model = train_a_little(P.apply(base_model(), "lora", **SMALL["lora"]), scale=0.1).to(device)
    before = {n: p.clone() for n, p in model.named_parameters()}
    x = tokens().to(device)
    unmerged = logits(model, x)
    P.merge(model)
    P.merge(model)                                   # a second merge changes nothing
    assert all(m.merged for m in model.modules() if isinstance(m, LoRALinear))
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert changed and all(n.endswith("base.weight") for n in changed)
    torch.testing.assert_close(logits(model, x), unmerged, atol=1e-5, rtol=1e-5)
    P.unmerge(model)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p, before[n], atol=1e-6, rtol=0)
    torch.testing.assert_close(logits(model, x), unmerged, atol=1e-5, rtol=1e-5)


def test_can_disable_only_an_unmerged_lora():
    assert not P.can_disable(base_model())
    model = P.apply(base_model(), "lora", **SMALL["lora"])
    assert P.can_disable(model)
    assert not P.can_disable(P.merge(model))
    assert P.can_disable(P.unmerge(model))
    assert not P.can_disable(P.apply(base_model(), "adapter_v1", **SMALL["adapter_v1"]))


def test_adapter_v2_merges_into_linears_with_bias():
    model = train_a_little(P.apply(base_model(), "adapter_v2", **SMALL["adapter_v2"]))
    x = tokens()
    unmerged = logits(model, x)
    P.merge(model)
    wq = model.layers[0].attention.wq
    assert type(wq) is nn.Linear and wq.bias is not None
    assert not any(isinstance(m, BiasScaleLinear) for m in model.modules())
    torch.testing.assert_close(logits(model, x), unmerged, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="adapter_v2 merges one way"):
        P.unmerge(model)


@pytest.mark.parametrize("method, why", [("adapter_v1", "second, gated softmax"),
                                         ("excitor", "softmax over the prompts")])
def test_unmergeable_methods_say_why(method, why):
    model = P.apply(base_model(), method, **SMALL[method])
    with pytest.raises(ValueError, match=f"{method} cannot be merged.*{why}"):
        P.merge(model)
    with pytest.raises(ValueError, match="no PEFT method applied"):
        P.merge(base_model())


# ----------------------------------------------------------------------------- KV cache
def with_visual(method, visual, device="cpu"):
    model = P.apply(base_model(), method, **SMALL[method], **(
        dict(visual_dim=6) if visual else {}))
    train_a_little(model).to(device)
    if visual:
        n = SMALL[method]["prompt_len"]
        P.set_visual(model, torch.randn(2, n, 6, generator=torch.Generator().manual_seed(3))
                     .to(device))
    return model


@pytest.mark.parametrize("method, visual", [(m, False) for m in SMALL] +
                         [("adapter_v2", True), ("excitor", True)])
def test_kv_cache_gives_the_same_logits_and_tokens(method, visual, device):
    model = with_visual(method, visual, device)
    x = tokens(n=10).to(device)
    full = logits(model, x)
    cache = model.make_cache(2, 10)
    with torch.no_grad():
        steps = [model(x[:, :6], start_pos=0, cache=cache)]
        steps += [model(x[:, i:i + 1], start_pos=i, cache=cache) for i in range(6, 10)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    prompt = x[:, :4]
    assert torch.equal(model.generate(prompt, 5, use_cache=True),
                       model.generate(prompt, 5, use_cache=False))


def test_excitor_refuses_a_continuation_without_its_start():
    model = with_visual("excitor", False)
    cache = model.make_cache(1, 10)
    with pytest.raises(ValueError, match="run the sequence from start_pos=0"):
        model(tokens(batch=1, n=1), start_pos=5, cache=cache)
    with pytest.raises(ValueError, match="in the layer's KV cache"):
        model(tokens(batch=1, n=1), start_pos=5)              # no cache at all


def test_excitor_cached_decode_survives_an_unrelated_forward():
    """The extra keys of a cached prefix live in that sequence's cache: a forward pass of
    another prompt in between (same batch size, longer) must not change the next logits."""
    model = with_visual("excitor", False)
    a = tokens(seed=4, batch=1, n=9)
    full = logits(model, a)[:, -1]
    cache = model.make_cache(1, 16)
    with torch.no_grad():
        model(a[:, :8], start_pos=0, cache=cache)               # prefill A (8 tokens)
        model(tokens(seed=5, batch=1, n=12))                    # unrelated, no cache
        step = model(a[:, 8:9], start_pos=8, cache=cache)[:, -1]
    torch.testing.assert_close(step, full, atol=1e-5, rtol=0)


def test_excitor_two_caches_decode_interleaved():
    """Two sequences, two caches, decoded one token each in turn: each equals its full pass."""
    model = with_visual("excitor", False)
    seqs = [tokens(seed=6, batch=1, n=10), tokens(seed=7, batch=1, n=10)]
    caches = [model.make_cache(1, 10), model.make_cache(1, 10)]
    out = [[], []]
    with torch.no_grad():
        for j in (0, 1):
            out[j].append(model(seqs[j][:, :4], start_pos=0, cache=caches[j]))
        for i in range(4, 10):
            for j in (0, 1):
                out[j].append(model(seqs[j][:, i:i + 1], start_pos=i, cache=caches[j]))
    for j in (0, 1):
        torch.testing.assert_close(torch.cat(out[j], dim=1), logits(model, seqs[j]),
                                   atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- visual
def test_adapter_v2_visual_features_and_disjoint_parameter_groups():
    model = with_visual("adapter_v2", True)
    groups = joint_parameter_groups(model)
    image, text = groups["image_text"], groups["text"]
    assert image and text and not {id(p) for p in image} & {id(p) for p in text}
    assert {id(p) for p in image + text} == {id(p) for p in model.parameters() if p.requires_grad}
    early = model.layers[0].attention.prompt
    assert {id(p) for p in image} == {id(p) for p in early.parameters()}
    assert model.layers[0].attention.prompt.proj.weight.requires_grad
    x = tokens()
    with_image = logits(model, x)
    P.set_visual(model, None)                              # a text-only batch
    assert not torch.allclose(with_image, logits(model, x))
    with pytest.raises(ValueError, match=r"shape \(batch, 3, 6\)"):
        P.set_visual(model, torch.zeros(2, 4, 6))


def test_excitor_visual_keys_change_the_output():
    model = with_visual("excitor", True)
    x = tokens()
    with_image = logits(model, x)
    P.set_visual(model, None)
    assert not torch.allclose(with_image, logits(model, x))
    with pytest.raises(ValueError, match=r"shape \(batch, n, 6\)"):
        P.set_visual(model, torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match="lora takes no visual features"):
        P.set_visual(P.apply(base_model(), "lora"), None)


# ----------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("method", SMALL)
def test_save_load_round_trip(method, tmp_path):
    base = base_model()
    model = train_a_little(P.apply(copy.deepcopy(base), method, **SMALL[method]))
    P.save(model, tmp_path / "adapter")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]      # no temp left over
    meta = json.loads((tmp_path / "adapter" / "adapter.json").read_text())
    assert meta["method"] == method and "sha256" in meta["base"]
    from safetensors.torch import load_file
    saved = load_file(tmp_path / "adapter" / "adapter.safetensors")
    assert set(saved) == {n for n, p in model.named_parameters() if p.requires_grad}
    loaded = P.load(copy.deepcopy(base), tmp_path / "adapter")
    x = tokens()
    assert torch.equal(logits(loaded, x), logits(model, x))
    assert P.trainable_parameters(loaded) == P.trainable_parameters(model)
    P.load(loaded, tmp_path / "adapter")                   # already applied: just loads


def test_load_refuses_another_base(tmp_path):
    model = train_a_little(P.apply(base_model(), "adapter_v1", **SMALL["adapter_v1"]))
    P.save(model, tmp_path / "a")
    with pytest.raises(ValueError, match=r"different base model: dim \(adapter 64, model 32\)"):
        P.load(Llama(LlamaConfig(dim=32, n_layers=3, n_heads=4, n_kv_heads=2, vocab_size=128,
                                 multiple_of=32, max_seq_len=64)), tmp_path / "a")
    other = base_model(seed=5)
    with pytest.raises(ValueError, match="same config, but the weights differ"):
        P.load(other, tmp_path / "a")
    assert getattr(other, "peft_config", None) is None               # left untouched
    bf16 = base_model().to(torch.bfloat16)
    P.load(bf16, tmp_path / "a")                                     # another dtype is fine
    with pytest.raises(ValueError, match="already has lora applied"):
        P.load(P.apply(base_model(), "lora"), tmp_path / "a")


def test_load_refuses_mismatched_shapes_and_missing_files(tmp_path):
    model = train_a_little(P.apply(base_model(), "lora", r=4))
    path = P.save(model, tmp_path / "a")
    save_file({"layers.0.attention.wq.lora_A": torch.zeros(2, 64)},
              str(path / "adapter.safetensors"))
    with pytest.raises(ValueError, match=r"does not fit the model: missing: .*; wrong shape: "
                                         r"layers.0.attention.wq.lora_A \(got \(2, 64\), "
                                         r"expected \(4, 64\)\)"):
        P.load(base_model(), path)
    with pytest.raises(FileNotFoundError, match="no adapter.json"):
        P.load(base_model(), tmp_path / "nowhere")
    with pytest.raises(ValueError, match="format='peft' holds LoRA adapters only"):
        P.save(P.apply(base_model(), "excitor", layers=1), tmp_path / "b", format="peft")
    with pytest.raises(ValueError, match="unknown adapter format 'gguf'; valid: minillama, peft"):
        P.save(model, tmp_path / "c", format="gguf")


# ----------------------------------------------------------------------------- peft parity
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
HF_PROJ = {"wq": "self_attn.q_proj", "wk": "self_attn.k_proj", "wv": "self_attn.v_proj",
           "wo": "self_attn.o_proj", "w1": "mlp.gate_proj", "w2": "mlp.down_proj",
           "w3": "mlp.up_proj"}


def hf_base(model, path):
    minillama.save(model, path, format="hf")
    return transformers.LlamaForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager").eval()


def max_diff(ours, theirs, x, device="cpu"):
    ours, theirs, x = ours.to(device), theirs.to(device), x.to(device)
    with torch.no_grad():
        return (ours(x) - theirs(x).logits).abs().max().item()


LORA_CASES = [dict(r=4, alpha=8, targets=["wq", "wv"]),
              dict(r=2, alpha=4, targets=SEVEN, rslora=True)]


@pytest.mark.parametrize("options", LORA_CASES)
def test_lora_matches_peft_lora(options, tmp_path, device):
    base = base_model()
    hf = hf_base(base, tmp_path / "hf")
    ours = train_a_little(P.apply(base, "lora", **options))
    cfg = peft.LoraConfig(r=options["r"], lora_alpha=options["alpha"],
                          use_rslora=options.get("rslora", False),
                          target_modules=[HF_PROJ[t].split(".")[1] for t in options["targets"]])
    theirs = peft.get_peft_model(hf, cfg).eval()
    heads = {"wq": 4, "wk": 2}
    with torch.no_grad():
        for i, layer in enumerate(ours.layers):
            for t in options["targets"]:
                part = layer.attention if t in ("wq", "wk", "wv", "wo") else layer.feed_forward
                m = getattr(part, t)
                hf_m = theirs.base_model.model.model.layers[i].get_submodule(HF_PROJ[t])
                B = meta_to_hf_permute(m.lora_B, heads[t]) if t in heads else m.lora_B
                hf_m.lora_A["default"].weight.copy_(m.lora_A)
                hf_m.lora_B["default"].weight.copy_(B)
    assert max_diff(ours, theirs, tokens(), device) <= 1e-5


@pytest.mark.parametrize("options", LORA_CASES)
def test_our_lora_export_loads_in_peft(options, tmp_path):
    base = base_model()
    hf = hf_base(base, tmp_path / "hf")
    ours = train_a_little(P.apply(base, "lora", **options))
    P.save(ours, tmp_path / "lora", format="peft", base_model_name_or_path=str(tmp_path / "hf"))
    cfg = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == options["r"]
    theirs = peft.PeftModel.from_pretrained(hf, tmp_path / "lora").eval()
    b = theirs.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight
    assert b.abs().sum() > 0                                     # the weights were loaded
    assert max_diff(ours, theirs, tokens()) <= 1e-5


def test_adapter_v1_scalar_gate_matches_peft_adaption_prompt(tmp_path):
    base = base_model()
    hf = hf_base(base, tmp_path / "hf")
    ours = train_a_little(P.apply(base, "adapter_v1", prompt_len=3, layers=2, gate="scalar"))
    theirs = peft.get_peft_model(hf, peft.AdaptionPromptConfig(
        adapter_len=3, adapter_layers=2, task_type="CAUSAL_LM")).eval()
    adapted = 0
    with torch.no_grad():
        for i, layer in enumerate(theirs.base_model.model.model.layers):
            attn = layer.self_attn
            if hasattr(attn, "adaption_prompt"):
                mine = ours.layers[i].attention.prompt
                attn.adaption_prompt.copy_(mine.prompt[None])
                attn.adaption_gate.copy_(mine.gate)
                adapted += 1
    assert adapted == 2 and ours.layers[0].attention.prompt is None    # the top 2 of 3
    x = tokens()
    assert max_diff(ours, theirs, x) <= 1e-5
    assert (logits(ours, x) - logits(base_model(), x)).abs().max() > 1e-2   # prompts matter
