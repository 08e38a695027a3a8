"""Llama 4: the MoE layer, iRoPE attention, exact counts, HF parity, and the KV cache.

The parity models exercise everything at once: 4 experts, MoE in every 2nd layer,
QK-norm, a NoPE layer, chunks of 8 tokens in a 20-token sequence, and temperature
tuning with floor_scale 4, so every switch changes the logits (checked by the controls).
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import minillama
from minillama import CONFIGS, Llama, LlamaConfig, RopeScaling, count_parameters
from minillama.attention import attention_temperature, causal_mask
from minillama.checkpoints import detect_format
from minillama.feedforward import FeedForward
from minillama.moe import MoE, dispatch, load_balancing_loss, route

transformers = pytest.importorskip("transformers")

SEQ, VOCAB = 20, 96
CASES = {  # name: (our changes to BASE, HF changes to HF_BASE)
    "all-switches": ({}, {}),
    "top2-tied-untuned": (dict(n_experts_per_tok=2, tie_embeddings=True,
                               attn_temperature_tuning=False),
                          dict(num_experts_per_tok=2, tie_word_embeddings=True,
                               attn_temperature_tuning=False)),
    "scout-like": (dict(interleave_moe_layer_step=1, rope_theta=500000.0,
                        rope_scaling=RopeScaling(4.0, 1.0, 1.0, 8)),
                   dict(interleave_moe_layer_step=1, rope_parameters={
                       "rope_type": "llama3", "rope_theta": 500000.0, "factor": 4.0,
                       "low_freq_factor": 1.0, "high_freq_factor": 1.0,
                       "original_max_position_embeddings": 8})),
    "maverick-like": (dict(use_qk_norm=False, nope_layer_interval=2),
                      dict(use_qk_norm=False, no_rope_layer_interval=2)),
}
BASE = dict(dim=64, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=VOCAB, hidden_dim=80,
            expert_dim=32, n_experts=4, interleave_moe_layer_step=2, nope_layer_interval=4,
            attention_chunk_size=8, use_qk_norm=True, attn_temperature_tuning=True,
            floor_scale=4.0, attn_scale=0.5, max_seq_len=64)
HF_BASE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=32, intermediate_size_mlp=80,
               num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
               num_local_experts=4, num_experts_per_tok=1, interleave_moe_layer_step=2,
               use_qk_norm=True, no_rope_layer_interval=4, attention_chunk_size=8,
               attn_temperature_tuning=True, floor_scale=4, attn_scale=0.5,
               max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False,
               rope_parameters={"rope_type": "default", "rope_theta": 10000.0})


def config(**kw) -> LlamaConfig:
    return LlamaConfig(**{**BASE, **kw})


@torch.no_grad()
def randomise(model, seed=0):
    """Random weights everywhere; sharp q/k so attention depends on position and masks."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g)
        sharp = any(s in name for s in ("wq", "wk", "q_proj", "k_proj"))
        p.copy_(1 + 0.2 * noise if "norm" in name else (0.3 if sharp else 0.1) * noise)
    return model.eval()


def tokens(seed=1, t=SEQ):
    return torch.randint(0, VOCAB, (2, t), generator=torch.Generator().manual_seed(seed))


def hf_load(path):
    return transformers.Llama4ForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager").eval()


@torch.no_grad()
def max_diff(ours, hf, x):
    return (ours(x) - hf(x).logits).abs().max().item()


# ----------------------------------------------------------------------------- configs
def test_published_counts_are_exact():
    assert count_parameters("llama4-scout") == 107_769_861_120
    assert count_parameters("llama4-scout", active=True) == 17_172_894_720
    assert count_parameters("llama4-maverick") == 400_711_848_960
    assert count_parameters("llama4-maverick", active=True) == 17_184_691_200


def test_published_layer_patterns():
    scout, maverick = CONFIGS["llama4-scout"], CONFIGS["llama4-maverick"]
    assert all(scout.is_moe_layer(i) for i in range(48))
    assert [i for i in range(48) if maverick.is_moe_layer(i)] == list(range(1, 48, 2))
    for c in (scout, maverick):
        assert [i for i in range(48) if not c.uses_rope(i)] == list(range(3, 48, 4))
        assert (c.attention_chunk_size, c.moe_dim, c.ffn_dim, c.head_dim) == (
            8192, 8192, 16384, 128)
    assert scout.use_qk_norm and not maverick.use_qk_norm
    assert scout.rope_scaling == RopeScaling(16.0, 1.0, 1.0, 8192)
    assert maverick.rope_scaling is None


def test_dense_configs_have_no_llama4_switches():
    for name in ("llama3-8b", "tiny"):
        c = CONFIGS[name]
        assert all(not c.is_moe_layer(i) and c.uses_rope(i) for i in range(c.n_layers))
        with torch.device("meta"):
            a = Llama(c).layers[0].attention
        assert (a.use_rope, a.chunk, a.qk_norm_eps, a.temperature) == (True, None, None, None)


@pytest.mark.parametrize("changes, field", [
    (dict(n_experts=-1), "n_experts"),
    (dict(n_experts=4, n_experts_per_tok=5), "n_experts_per_tok"),
    (dict(n_experts_per_tok=0), "n_experts_per_tok"),
    (dict(interleave_moe_layer_step=0), "interleave_moe_layer_step"),
    (dict(expert_dim=0), "expert_dim"),
    (dict(nope_layer_interval=-4), "nope_layer_interval"),
    (dict(attention_chunk_size=0), "attention_chunk_size"),
    (dict(attention_chunk_size=8.5), "attention_chunk_size"),
    (dict(use_qk_norm=1), "use_qk_norm"),
    (dict(attn_temperature_tuning="yes"), "attn_temperature_tuning"),
    (dict(floor_scale=0.0), "floor_scale"),
    (dict(attn_scale=-0.1), "attn_scale"),
    (dict(router_aux_coef=float("nan")), "router_aux_coef"),
])
def test_bad_llama4_config_names_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        config(**changes)


@pytest.mark.parametrize("old, new", [("nope_interval", "nope_layer_interval"),
                                      ("moe_interleave", "interleave_moe_layer_step"),
                                      ("attention_chunk", "attention_chunk_size"),
                                      ("qk_norm", "use_qk_norm")])
def test_old_field_names_point_to_meta_names(old, new):
    message = f"{old} was renamed {new} \\(Meta's name\\)"
    with pytest.raises(TypeError, match=message):
        LlamaConfig(**{old: 1})
    with pytest.raises(TypeError, match=message):
        config().replace(**{old: 1})
    d = config().to_dict()
    d[old] = d.pop(new)
    with pytest.raises(ValueError, match=message):
        LlamaConfig.from_dict(d)


# ----------------------------------------------------------------------------- router
def test_route_keeps_k_sigmoids_of_raw_logits():
    logits = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
    for k in (1, 2, 6):
        scores, index = route(logits, k)
        assert scores.shape == index.shape == (50, k)
        dense = torch.zeros_like(logits).scatter(1, index, scores)
        assert torch.equal((dense > 0).sum(-1), torch.full((50,), k))      # exactly k experts
        kth = logits.topk(k, dim=-1).values[:, -1:]
        assert torch.equal(dense > 0, logits >= kth)                        # the k largest
        torch.testing.assert_close(dense[dense > 0], torch.sigmoid(logits[logits >= kth]))
    with pytest.raises(ValueError, match="k=7"):
        route(logits, 7)


def naive_moe(layer: MoE, x):
    """Token by token, expert by expert: the equation of moe.py with Python loops."""
    rows = []
    e = layer.experts
    for token in x.reshape(-1, x.shape[-1]):
        logits = layer.router(token)
        out = layer.shared_expert(token)
        for i in logits.topk(layer.k).indices:
            h = torch.sigmoid(logits[i]) * token
            out = out + (torch.nn.functional.silu(h @ e.w1[i]) * (h @ e.w3[i])) @ e.w2[i]
        rows.append(out)
    return torch.stack(rows).view_as(x)


@pytest.mark.parametrize("n_experts, k", [(4, 1), (5, 2), (3, 3)])
def test_moe_matches_the_equation_and_gradients(n_experts, k):
    torch.manual_seed(n_experts)
    layer = MoE(16, 24, n_experts, k, count_tokens=True)
    randomise(layer).train()
    x = torch.randn(2, 7, 16, requires_grad=True)
    out = layer(x)
    ref = naive_moe(layer, x)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    assert int(layer.tokens_per_expert.sum()) == 14 * k          # every token went to k experts
    assert MoE(16, 24, n_experts, k)(x).shape == x.shape and not MoE(16, 24, 4).count_tokens
    grads = torch.autograd.grad(out.square().sum(), [x, *layer.parameters()])
    refs = torch.autograd.grad(ref.square().sum(), [x, *layer.parameters()])
    for g, r in zip(grads, refs):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)
    assert layer.router.weight.grad is None and grads[1].abs().sum() > 0   # router learns


def test_dispatch_queues_uneven_loads():
    torch.manual_seed(3)
    w1, w3, w2 = torch.randn(4, 8, 6), torch.randn(4, 8, 6), torch.randn(4, 6, 8)
    x = torch.randn(9, 8)
    index = torch.tensor([[2], [2], [2], [0], [2], [2], [0], [2], [2]])    # expert 1, 3 idle
    scores = torch.rand(9, 1)
    got = dispatch(x, scores, index, w1, w2, w3)
    for n in range(9):
        e, h = index[n, 0], scores[n, 0] * x[n]
        expected = (torch.nn.functional.silu(h @ w1[e]) * (h @ w3[e])) @ w2[e]
        torch.testing.assert_close(got[n], expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="must agree"):
        dispatch(x, scores[:5], index, w1, w2, w3)


def test_shared_expert_alone_is_a_dense_swiglu():
    torch.manual_seed(0)
    layer = randomise(MoE(16, 24, 4, 1, count_tokens=True))
    dense = FeedForward(16, 24)
    dense.load_state_dict(layer.shared_expert.state_dict())
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        layer.experts.w2.zero_()                      # routed experts add nothing
        torch.testing.assert_close(layer(x), dense(x), atol=0, rtol=0)
        # router zeroed: every token goes to one expert with score sigmoid(0) = 1/2
        layer.router.weight.zero_()
        randomise(layer.experts, seed=5)
        out = layer(x)
        chosen = int(layer.tokens_per_expert.argmax())
        assert int(layer.tokens_per_expert[chosen]) == 10
        expert = FeedForward(16, 24)
        e = layer.experts
        expert.w1.weight.copy_(e.w1[chosen].T), expert.w3.weight.copy_(e.w3[chosen].T)
        expert.w2.weight.copy_(e.w2[chosen].T)
        torch.testing.assert_close(out, dense(x) + expert(x / 2), atol=1e-6, rtol=1e-5)


def test_load_balancing_loss():
    uniform_logits = torch.zeros(8, 4)
    balanced = torch.arange(8)[:, None] % 4
    assert load_balancing_loss(uniform_logits, balanced).item() == pytest.approx(1.0)
    confident = torch.full((8, 4), -20.0)
    confident[:, 0] = 20.0
    collapsed = torch.zeros(8, 1, dtype=torch.long)
    assert load_balancing_loss(confident, collapsed).item() == pytest.approx(4.0, rel=1e-6)


def test_aux_loss_joins_the_training_loss_only():
    model = randomise(Llama(config(router_aux_coef=0.25)))
    x, y = tokens(), tokens(seed=2)
    _, eval_loss = model(x, y)
    model.train()
    _, train_loss = model(x, y)
    aux = sum(layer.feed_forward.aux_loss for layer in model.layers if layer.is_moe)
    assert aux.item() >= 2 * 0.99                     # two MoE layers, each >= ~1
    assert train_loss.item() == pytest.approx(eval_loss.item() + 0.25 * aux.item(), rel=1e-5)


# ----------------------------------------------------------------------------- attention
@pytest.mark.parametrize("t, s, start, chunk", [(20, 20, 0, 8), (1, 17, 16, 8), (3, 12, 9, 4),
                                                (5, 5, 0, 1), (6, 6, 0, 100)])
def test_chunked_mask_is_the_definition(t, s, start, chunk):
    got = causal_mask(t, s, start, chunk=chunk)
    for i in range(t):
        for j in range(s):
            p = start + i
            assert bool(got[i, j]) == (p // chunk == j // chunk and j <= p)


def test_attention_temperature_formula():
    positions = torch.arange(0, 40)
    got = attention_temperature(positions, 8.0, 0.1)
    expected = [1 + 0.1 * torch.log(torch.tensor((p + 1) // 8 + 1.0)).item() for p in range(40)]
    torch.testing.assert_close(got, torch.tensor(expected))
    assert got[6].item() == 1.0 and got[7].item() > 1.0


def test_sdpa_and_explicit_paths_agree():
    model = randomise(Llama(config()))
    x = tokens()
    with torch.no_grad():
        fast = model(x)
        for layer in model.layers:
            layer.attention.use_sdpa = False
        torch.testing.assert_close(model(x), fast, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("switch", ["attention_chunk_size", "attn_temperature_tuning",
                                    "use_qk_norm", "nope_layer_interval", "n_experts"])
def test_every_switch_changes_the_logits(switch):
    """Controls for the parity tests: no switch is a no-op at these sizes."""
    model = randomise(Llama(config()))
    off = {"attention_chunk_size": None, "attn_temperature_tuning": False, "use_qk_norm": False,
           "nope_layer_interval": 0, "n_experts": 0}[switch]
    other = Llama(model.cfg.replace(**{switch: off}))
    state = {k: v for k, v in model.state_dict().items() if k in other.state_dict()}
    other.load_state_dict(state, strict=switch != "n_experts")
    with torch.no_grad():
        assert (other.eval()(tokens()) - model(tokens())).abs().max() > 1e-3


# ----------------------------------------------------------------------------- HF parity
@pytest.mark.parametrize("case", CASES)
def test_our_export_matches_transformers(case, tmp_path):
    model = randomise(Llama(config(**CASES[case][0])))
    minillama.save(model, tmp_path, format="hf")
    assert detect_format(tmp_path) == "hf"
    hf = hf_load(tmp_path)
    assert hf.config.moe_layers == [i for i in range(4) if model.cfg.is_moe_layer(i)]
    assert max_diff(model, hf, tokens()) <= 1e-5


@pytest.mark.parametrize("case", CASES)
def test_transformers_model_loads_into_ours(case, tmp_path):
    hf_cfg = transformers.Llama4TextConfig(**{**HF_BASE, **CASES[case][1]})
    hf = randomise(transformers.Llama4ForCausalLM(hf_cfg))
    hf.save_pretrained(tmp_path)
    model = minillama.load(tmp_path)
    expected = config(**CASES[case][0])
    for field in ("n_experts", "n_experts_per_tok", "interleave_moe_layer_step", "expert_dim",
                  "hidden_dim", "nope_layer_interval", "attention_chunk_size", "use_qk_norm",
                  "attn_temperature_tuning", "floor_scale", "attn_scale", "tie_embeddings",
                  "rope_scaling"):
        assert getattr(model.cfg, field) == getattr(expected, field), field
    assert max_diff(model, hf, tokens()) <= 1e-5


def test_llama4_multimodal_directory_loads_its_text_model(tmp_path):
    vision = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                  vision_output_dim=32, image_size=28, patch_size=14, projector_input_dim=32,
                  projector_output_dim=32)
    full = transformers.Llama4ForConditionalGeneration(
        transformers.Llama4Config(text_config=HF_BASE, vision_config=vision))
    randomise(full).save_pretrained(tmp_path)
    model = minillama.load(tmp_path)
    assert model.cfg.n_experts == 4 and model.cfg.nope_layer_interval == 4
    assert max_diff(model, full.language_model, tokens()) <= 1e-5


def test_hf_tensor_layout(tmp_path):
    model = randomise(Llama(config()))
    minillama.save(model, tmp_path, format="hf")
    raw = load_file(tmp_path / "model.safetensors")
    e = model.layers[1].feed_forward.experts
    assert torch.equal(raw["model.layers.1.feed_forward.experts.gate_up_proj"],
                       torch.cat([e.w1, e.w3], -1))                     # gate first
    assert torch.equal(raw["model.layers.1.feed_forward.router.weight"],
                       model.layers[1].feed_forward.router.weight)
    assert torch.equal(raw["model.layers.0.self_attn.q_proj.weight"],
                       model.layers[0].attention.wq.weight)             # not permuted
    assert "model.layers.0.feed_forward.gate_proj.weight" in raw        # dense layer


def test_hf_irregular_layer_lists_are_refused(tmp_path):
    minillama.save(randomise(Llama(config())), tmp_path, format="hf")
    good = json.loads((tmp_path / "config.json").read_text())
    for change, message in [({"moe_layers": [1, 2]}, "moe_layers marks layers \\[1, 2\\]"),
                            ({"no_rope_layers": [1, 0, 0, 1]}, "no_rope_layers marks"),
                            ({"no_rope_layers": [1, 1]}, "2 entries for 4 layers"),
                            ({"hidden_act": "gelu"}, "hidden_act='gelu'")]:
        (tmp_path / "config.json").write_text(json.dumps({**good, **change}))
        with pytest.raises(ValueError, match=message):
            minillama.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(good))
    raw = load_file(tmp_path / "model.safetensors")
    raw["model.layers.1.feed_forward.experts.down_proj"] = torch.zeros(4, 30, 64)
    save_file(raw, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="experts.down_proj \\(got \\(4, 30, 64\\), expected "
                                         "\\(4, 32, 64\\)\\)"):
        minillama.load(tmp_path)


def test_native_round_trip_and_unsupported_formats(tmp_path):
    model = randomise(Llama(config()))
    back = minillama.load(minillama.save(model, tmp_path / "native"))
    assert back.cfg == model.cfg
    with torch.no_grad():
        assert torch.equal(back(tokens()), model(tokens()))
    for fmt in ("meta", "llama2c"):
        with pytest.raises(ValueError, match=f"the {fmt} format cannot hold Llama 4"):
            minillama.save(model, tmp_path / fmt, format=fmt)


# ----------------------------------------------------------------------------- KV cache
def test_kv_cache_decode_equals_full_recompute_across_chunks():
    model = randomise(Llama(config(max_seq_len=32)))
    x = tokens(t=30)                                      # 30 tokens: chunks 0-7, 8-15, ...
    with torch.no_grad():
        full = model(x)
        cache = model.make_cache(2, 30)
        pieces = [model(x[:, :5], cache=cache)]           # prefill
        pieces.append(model(x[:, 5:11], start_pos=5, cache=cache))   # a block over a boundary
        for pos in range(11, 30):                          # then one token at a time
            pieces.append(model(x[:, pos:pos + 1], start_pos=pos, cache=cache))
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-5)
    prompt = x[0, :3]                                     # 3 + 20 tokens: three chunks
    assert torch.equal(model.generate(prompt, 20), model.generate(prompt, 20, use_cache=False))


def test_half_rope_layout_is_written_in_meta_pairs(tmp_path):
    model = randomise(Llama(config(rope_layout="half")))
    minillama.save(model, tmp_path, format="hf")
    assert max_diff(model, hf_load(tmp_path), tokens()) <= 1e-5
    same = minillama.load(tmp_path, rope_layout="half")
    assert same.cfg.rope_layout == "half"
    for k, v in model.state_dict().items():
        assert torch.equal(same.state_dict()[k], v), k
