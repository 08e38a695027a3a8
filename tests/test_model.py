"""The from-scratch LLaMA: configs, exact counts, attention paths, RoPE, KV cache, sampling."""

import math

import pytest
import torch

from minillama import CONFIGS, Llama, LlamaConfig, RopeScaling, count_parameters
from minillama.attention import attend_explicit, causal_mask, repeat_kv
from minillama.generate import filter_top_k, filter_top_p, sample_next
from minillama.model import kv_cache_bytes_per_token
from minillama.norm import RMSNorm
from minillama.rope import apply_rotary_emb, precompute_freqs_cis, rope_frequencies

# SPEC section 1: exact parameter counts of the published models.
PUBLISHED_COUNTS = {
    "llama1-7b": 6_738_415_616, "llama1-13b": 13_015_864_320,
    "llama1-33b": 32_528_943_616, "llama1-65b": 65_285_660_672,
    "llama2-7b": 6_738_415_616, "llama2-13b": 13_015_864_320,
    "llama2-70b": 68_976_648_192, "llama3-8b": 8_030_261_248,
    "llama3-70b": 70_553_706_496, "llama3.1-8b": 8_030_261_248,
    "llama3.1-70b": 70_553_706_496, "llama3.1-405b": 405_853_388_800,
    "llama3.2-1b": 1_235_814_400, "llama3.2-3b": 3_212_749_824,
}


def tiny(**kw):
    base = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, multiple_of=16,
                max_seq_len=64)
    base.update(kw)
    return LlamaConfig(**base)


def randomise(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


@pytest.mark.parametrize("name", list(PUBLISHED_COUNTS))
def test_published_parameter_counts_are_exact(name):
    assert count_parameters(name) == PUBLISHED_COUNTS[name]
    assert count_parameters(CONFIGS[name], active=True) == PUBLISHED_COUNTS[name]


def test_counts_match_the_closed_form():
    for name in PUBLISHED_COUNTS:
        c = CONFIGS[name]
        hd = c.head_dim
        per_layer = (2 * c.dim * c.n_heads * hd + 2 * c.dim * c.n_kv_heads * hd
                     + 3 * c.dim * c.ffn_dim + 2 * c.dim)
        closed = (c.n_layers * per_layer + c.vocab_size * c.dim * (1 if c.tie_embeddings else 2)
                  + c.dim)
        assert count_parameters(c) == closed


def test_kv_cache_bytes_per_token():
    # Llama 2 70B: 2 (k, v) * 80 layers * 8 KV heads * 128 dims * 2 bytes
    assert kv_cache_bytes_per_token("llama2-70b") == 2 * 80 * 8 * 128 * 2
    assert kv_cache_bytes_per_token("llama2-7b", bytes_per_value=4) == 2 * 32 * 32 * 128 * 4


@pytest.mark.parametrize("changes, field", [
    (dict(dim=30, n_heads=4), "dim"),
    (dict(n_heads=4, n_kv_heads=3), "n_heads"),
    (dict(dim=0), "dim"),
    (dict(n_layers=-1), "n_layers"),
    (dict(vocab_size=2.5), "vocab_size"),
    (dict(rope_layout="diagonal"), "rope_layout"),
    (dict(norm_eps=0.0), "norm_eps"),
    (dict(hidden_dim=-5), "hidden_dim"),
    (dict(dim=12, n_heads=4, n_kv_heads=4), "must be even"),
])
def test_bad_config_names_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        tiny(**changes)


def test_config_dict_round_trip_and_unknown_field():
    c = tiny(rope_scaling=RopeScaling(4.0, 1.0, 4.0, 16))
    assert LlamaConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="n_expertz"):
        LlamaConfig.from_dict({**c.to_dict(), "n_expertz": 3})


def test_rope_type_is_stated_by_rope_scaling_alone():
    with pytest.raises(TypeError, match="rope_type was removed: pass rope_scaling"):
        tiny(rope_type="llama3")
    with pytest.raises(ValueError, match="rope_type was removed"):
        LlamaConfig.from_dict({**tiny().to_dict(), "rope_type": "default"})
    c = tiny(rope_scaling=RopeScaling(4.0, 1.0, 4.0, 16), max_seq_len=64)
    model = Llama(c)
    assert torch.equal(model.freqs_cis, precompute_freqs_cis(
        c.head_dim, 64, c.rope_theta, c.rope_scaling))
    assert torch.equal(model.rope_table(), model.freqs_cis)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model 'llama9-1t'"):
        count_parameters("llama9-1t")


def test_sdpa_and_explicit_paths_agree(device):
    model = randomise(Llama(tiny()), 1).eval().to(device)
    x = torch.randint(0, 64, (2, 17)).to(device)
    fast = model(x)
    for layer in model.layers:
        layer.attention.use_sdpa = False
    slow = model(x)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)


def test_explicit_attention_is_the_equation():
    q, k, v = torch.randn(3, 1, 2, 5, 8).unbind(0)
    out = attend_explicit(q, k, v, causal_mask(5, 5))
    for i in range(5):  # query i only mixes values 0..i
        w = torch.softmax(q[..., i:i + 1, :] @ k[..., : i + 1, :].transpose(-1, -2)
                          / math.sqrt(8), -1)
        torch.testing.assert_close(out[..., i:i + 1, :], w @ v[..., : i + 1, :],
                                   atol=1e-6, rtol=0)


def test_repeat_kv_shares_each_head_with_its_group():
    x = torch.randn(2, 3, 5, 4)
    y = repeat_kv(x, 4)
    assert y.shape == (2, 12, 5, 4)
    for h in range(12):
        assert torch.equal(y[:, h], x[:, h // 4])


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])  # MHA, GQA, MQA
def test_gqa_equals_mha_with_duplicated_heads(n_kv_heads, device):
    """A GQA model is an MHA model whose k/v heads are copies within each group."""
    gqa = randomise(Llama(tiny(n_kv_heads=n_kv_heads)), 2).eval()
    mha = Llama(tiny(n_kv_heads=4)).eval()
    sd = gqa.state_dict()
    rep = 4 // n_kv_heads
    for key in list(sd):
        if key.endswith(("wk.weight", "wv.weight")):
            w = sd[key].view(n_kv_heads, -1, sd[key].shape[1])
            sd[key] = w.repeat_interleave(rep, dim=0).reshape(-1, w.shape[-1])
    mha.load_state_dict(sd)
    gqa, mha = gqa.to(device), mha.to(device)
    x = torch.randint(0, 64, (1, 12)).to(device)
    torch.testing.assert_close(gqa(x), mha(x), atol=1e-5, rtol=0)


def test_rope_scores_depend_only_on_relative_position():
    hd, table = 16, precompute_freqs_cis(16, 64)
    q, k = torch.randn(2, 1, 1, 1, hd).unbind(0)

    def score(p, s):
        return (apply_rotary_emb(q, table[p:p + 1]) * apply_rotary_emb(k, table[s:s + 1])).sum()

    for offset in (0, 7, 30):
        torch.testing.assert_close(score(10 + offset, 3 + offset), score(10, 3))
    assert not torch.allclose(score(10, 3), score(10, 4))
    # a rotation preserves length
    torch.testing.assert_close(apply_rotary_emb(q, table[5:6]).norm(), q.norm())


def test_rope_layouts_are_a_permutation_of_each_other():
    hd, table = 8, precompute_freqs_cis(8, 10)
    x = torch.randn(1, 2, 10, hd)
    perm = torch.tensor([0, 2, 4, 6, 1, 3, 5, 7])   # interleaved pair i -> (i, i + d/2)
    inter = apply_rotary_emb(x, table, "interleaved")
    half = apply_rotary_emb(x[..., perm], table, "half")
    torch.testing.assert_close(half, inter[..., perm])


def test_llama3_frequency_scaling_bands():
    s = RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                    original_max_seq_len=8192)
    f, g = rope_frequencies(128, 500000.0), rope_frequencies(128, 500000.0, s)
    wavelen = 2 * math.pi / f
    high = wavelen < 8192 / 4
    low = wavelen > 8192 / 1
    assert high.any() and low.any() and (~high & ~low).any()
    torch.testing.assert_close(g[high], f[high])
    torch.testing.assert_close(g[low], f[low] / 8)
    mid = ~high & ~low
    assert ((g[mid] < f[mid]) & (g[mid] > f[mid] / 8)).all()
    # Scout's degenerate band (low == high) must not divide by zero
    flat = rope_frequencies(128, 500000.0, RopeScaling(16.0, 1.0, 1.0, 8192))
    assert torch.isfinite(flat).all()


def test_apply_rotary_emb_rejects_mismatched_table():
    with pytest.raises(ValueError, match="freqs_cis"):
        apply_rotary_emb(torch.randn(1, 1, 5, 8), precompute_freqs_cis(8, 4))


def test_kv_cache_matches_full_recompute(device):
    model = randomise(Llama(tiny()), 3).eval().to(device)
    x = torch.randint(0, 64, (2, 20)).to(device)
    full = model(x)
    cache = model.make_cache(2)
    pieces, pos = [], 0
    for n in (7, 1, 1, 5, 6):   # prefill, two single steps, then chunks
        pieces.append(model(x[:, pos:pos + n], start_pos=pos, cache=cache))
        pos += n
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=0)


def test_cache_overflow_and_bad_inputs_are_clear(device):
    model = Llama(tiny(max_seq_len=16)).eval().to(device)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 17, dtype=torch.long, device=device))
    with pytest.raises(ValueError, match="batch, seq"):
        model(torch.zeros(17, dtype=torch.long, device=device))
    cache = model.make_cache(1, 4)
    with pytest.raises(ValueError, match="KV cache holds 4"):
        model(torch.zeros(1, 5, dtype=torch.long, device=device), cache=cache)


def test_loss_is_cross_entropy_and_ignores_minus_100(device):
    model = randomise(Llama(tiny()), 4).to(device)
    x = torch.randint(0, 64, (2, 9)).to(device)
    y = torch.randint(0, 64, (2, 9)).to(device)
    logits, loss = model(x, y)
    manual = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), y.reshape(-1))
    torch.testing.assert_close(loss, manual)
    y2 = y.clone()
    y2[:, :4] = -100
    _, masked = model(x, y2)
    keep = torch.nn.functional.cross_entropy(logits[:, 4:].reshape(-1, 64), y[:, 4:].reshape(-1))
    torch.testing.assert_close(masked, keep)


def test_tied_head_shares_the_embedding():
    model = Llama(tiny(tie_embeddings=True))
    assert model.output.weight is model.tok_embeddings.weight
    assert count_parameters(tiny(tie_embeddings=True)) == count_parameters(tiny()) - 64 * 32


def test_greedy_generation_same_with_and_without_cache(device):
    model = randomise(Llama(tiny()), 5).to(device)
    prompt = torch.tensor([3, 1, 4, 1, 5], device=device)
    a = model.generate(prompt, 25)
    b = model.generate(prompt, 25, use_cache=False)
    assert a.dtype == torch.long and a.shape == (25,)
    assert torch.equal(a, b)
    assert model.training, "generate must restore the training flag"


def test_seeded_sampling_is_reproducible_and_cache_independent(device):
    model = randomise(Llama(tiny()), 6).to(device)
    prompt = torch.randint(0, 64, (3, 4)).to(device)
    kw = dict(temperature=1.0, top_k=20, top_p=0.9, seed=123)
    a = model.generate(prompt, 20, **kw)
    assert torch.equal(a, model.generate(prompt, 20, **kw))
    assert torch.equal(a, model.generate(prompt, 20, use_cache=False, **kw))
    assert not torch.equal(a, model.generate(prompt, 20, **{**kw, "seed": 124}))


def test_stop_tokens_end_generation_and_pad_finished_rows(device):
    model = randomise(Llama(tiny()), 7).to(device)
    prompt = torch.tensor([[1, 2], [3, 4]], device=device)
    free = model.generate(prompt, 12)
    stop = int(free[0, 2])
    out = model.generate(prompt, 12, stop_tokens=[stop])
    first = (out[0] == stop).nonzero()[0].item()
    assert first <= 2 and (out[0, first:] == stop).all()
    single = model.generate(prompt[0], 12, stop_tokens=[stop])
    assert single[-1] == stop and (single[:-1] != stop).all()


def test_top_k_and_top_p_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_top_k(logits, 2)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_top_p(logits, 0.75)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_top_p(logits, 0.8)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_top_p(logits, 0.81)).tolist() == [[False, False, False, True]]
    assert torch.isinf(filter_top_p(logits, 0.01)).tolist() == [[False, True, True, True]]
    shuffled = logits[:, [2, 0, 3, 1]]
    assert torch.isinf(filter_top_p(shuffled, 0.75)).tolist() == [[True, False, True, False]]
    g = torch.Generator().manual_seed(0)
    draws = [int(sample_next(logits, 1.0, top_k=1, generator=g)) for _ in range(20)]
    assert draws == [0] * 20


def test_generation_rejects_bad_arguments(device):
    model = Llama(tiny()).to(device)
    one = torch.tensor([1], device=device)
    with pytest.raises(ValueError, match="top_p"):
        model.generate(one, 3, temperature=1.0, top_p=1.5)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(one, 3, temperature=-1.0)
    with pytest.raises(ValueError, match="max_seq_len"):
        model.generate(one, 64)
    with pytest.raises(ValueError, match="prompt token"):
        model.generate(torch.tensor([], dtype=torch.long, device=device), 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_equals_the_formula_written_out(dtype, device):
    torch.manual_seed(0)
    x = (torch.randn(3, 5, 16) * 4).to(dtype).to(device)
    norm = RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(16) + 0.5)
    norm = norm.to(device)
    xf = x.float()                                  # Meta's order: stats in fp32, cast, gain
    expected = (xf / torch.sqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(dtype) * norm.weight
    torch.testing.assert_close(norm(x), expected, rtol=1e-6, atol=1e-6)
    assert norm(x).dtype == expected.dtype
