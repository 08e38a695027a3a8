"""Graders: every exercise function against its twin in the library, on random inputs.

    python -m pytest tests/test_exercises.py                          # the reference answers
    python -m pytest tests/test_exercises.py --impl=exercises -k ch01  # your chapter 1 work

``--impl`` (see ``conftest.py``) chooses the folder the chapter files come from; each
grader is named ``test_chNN_<function>`` so ``-k chNN`` grades one chapter. To grade a
new chapter, put its answers in ``solutions/chNN_<name>.py`` between
``# BEGIN SOLUTION`` / ``# END SOLUTION`` markers, run ``make exercises``, and add
``test_chNN_...`` functions below that load it with ``impl("chNN_<name>")``.
"""

import copy
import random
from collections import Counter

import pytest
import torch

from minillama import CONFIGS, Llama, LlamaConfig, count_parameters, kv_cache_bytes_per_token
from minillama.attention import causal_mask, repeat_kv
from minillama.config import PUBLISHED
from minillama.data import generate_stories, instruction_data
from minillama.generate import filter_top_p
from minillama.moe import MoE, dispatch, route
from minillama.norm import rms_norm
from minillama.rope import apply_rotary_emb, precompute_freqs_cis
from minillama.tokenizer import SPLIT_PATTERN, ByteTokenizer, Tokenizer, merge_pair
from minillama.train import TrainConfig, lr_at

CH01, CH02 = "ch01_anatomy", "ch02_family"
CH04, CH05 = "ch04_tokenisation", "ch05_pretraining"


def randn(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- chapter 1: one block

@pytest.mark.parametrize("shape, scale", [((3, 8), 1.0), ((2, 5, 16), 4.0),
                                          ((1, 2, 7, 64), 1.0), ((4, 32), 1e-3)])
@pytest.mark.parametrize("eps", [1e-5, 1e-6])
def test_ch01_rms_norm(impl, shape, scale, eps):
    # scale 1e-3 makes mean(x^2) ~ eps, so where eps goes in the formula matters
    x = randn(*shape, seed=len(shape), scale=scale)
    got = impl(CH01).rms_norm(x, eps)
    assert got.shape == x.shape and got.dtype == x.dtype
    torch.testing.assert_close(got, rms_norm(x, eps))


def test_ch01_rms_norm_keeps_bfloat16(impl):
    x = randn(2, 3, 32, seed=1).to(torch.bfloat16)
    got = impl(CH01).rms_norm(x, 1e-5)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, rms_norm(x, 1e-5))


@pytest.mark.parametrize("b, h, t, d, start, theta", [
    (1, 1, 1, 2, 0, 1e4),
    (2, 4, 7, 16, 0, 1e4),
    (1, 2, 5, 64, 11, 5e5),      # positions 11..15, Llama 3's theta
    (3, 1, 9, 8, 3, 10.0),       # a small theta turns fast: every pair visibly rotates
])
def test_ch01_apply_rotary_emb(impl, b, h, t, d, start, theta):
    x = randn(b, h, t, d, seed=d + t)
    freqs_cis = precompute_freqs_cis(d, start + t, theta)[start:]
    got = impl(CH01).apply_rotary_emb(x, freqs_cis)
    assert got.shape == x.shape and got.dtype == x.dtype
    torch.testing.assert_close(got, apply_rotary_emb(x, freqs_cis, "interleaved"))


def test_ch01_apply_rotary_emb_keeps_bfloat16(impl):
    x = randn(1, 2, 6, 16, seed=3).to(torch.bfloat16)
    freqs_cis = precompute_freqs_cis(16, 6)
    got = impl(CH01).apply_rotary_emb(x, freqs_cis)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, apply_rotary_emb(x, freqs_cis, "interleaved"))


@pytest.mark.parametrize("shape", [(1, 1, 1, 4), (2, 2, 5, 8), (1, 4, 3, 16)])
@pytest.mark.parametrize("n_rep", [1, 2, 3, 4])
def test_ch01_repeat_kv(impl, shape, n_rep):
    x = randn(*shape, seed=n_rep)
    got = impl(CH01).repeat_kv(x, n_rep)
    assert got.shape == (shape[0], shape[1] * n_rep, *shape[2:])
    assert torch.equal(got, repeat_kv(x, n_rep))


@pytest.mark.parametrize("t, s, start_pos", [
    (1, 1, 0), (5, 5, 0), (2, 3, 0),   # a prompt
    (1, 8, 7),                          # one decoding step with 7 cached tokens
    (3, 10, 7), (4, 6, 2),              # a chunk appended to a cache
])
def test_ch01_causal_mask(impl, t, s, start_pos):
    got = impl(CH01).causal_mask(t, s, start_pos)
    assert got.dtype == torch.bool and got.shape == (t, s)
    assert torch.equal(got, causal_mask(t, s, start_pos))


# ---------------------------------------------------------------- chapter 2: the family

def _random_ffn_settings(n: int):
    rng = random.Random(2)
    for _ in range(n):
        yield (4 * rng.randint(1, 6000), rng.choice([1, 2, 32, 64, 100, 256, 1024, 4096]),
               rng.choice([None, 0.5, 1.0, 1.3, 1.5, round(rng.uniform(0.3, 3.0), 3)]))


def test_ch02_ffn_dim_published(impl):
    for cfg in CONFIGS.values():
        if cfg.hidden_dim is None:
            got = impl(CH02).ffn_dim(cfg.dim, cfg.multiple_of, cfg.ffn_dim_multiplier)
            assert got == cfg.ffn_dim, cfg.name


@pytest.mark.parametrize("dim, multiple_of, multiplier", list(_random_ffn_settings(40)))
def test_ch02_ffn_dim_random(impl, dim, multiple_of, multiplier):
    cfg = LlamaConfig(dim=dim, n_heads=2, multiple_of=multiple_of,
                      ffn_dim_multiplier=multiplier)
    assert impl(CH02).ffn_dim(dim, multiple_of, multiplier) == cfg.ffn_dim


@pytest.mark.parametrize("name", PUBLISHED + ["tiny", "small", "base"])
def test_ch02_llama_parameters(impl, name):
    assert impl(CH02).llama_parameters(CONFIGS[name]) == count_parameters(name)


@pytest.mark.parametrize("changes", [
    dict(dim=48, n_layers=3, n_heads=6, n_kv_heads=2, vocab_size=100),
    dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=7, tie_embeddings=True),
    dict(dim=64, n_layers=2, n_heads=4, vocab_size=50, hidden_dim=100),
    dict(dim=96, n_layers=2, n_heads=3, vocab_size=300, multiple_of=48,
         ffn_dim_multiplier=1.7),
])
def test_ch02_llama_parameters_unusual_shapes(impl, changes):
    cfg = LlamaConfig(**changes)
    assert impl(CH02).llama_parameters(cfg) == count_parameters(cfg)


@pytest.mark.parametrize("bytes_per_value", [1, 2, 4])
def test_ch02_kv_cache_bytes_per_token(impl, bytes_per_value):
    for name in PUBLISHED:
        cfg = CONFIGS[name]
        got = impl(CH02).kv_cache_bytes_per_token(cfg, bytes_per_value)
        assert got == kv_cache_bytes_per_token(cfg, bytes_per_value), name


# ---------------------------------------------------------------- chapter 4: tokenisation

BYTES = ByteTokenizer()            # spells a chunk in the library's byte ids (byte b -> 3 + b)
FIRST_MERGE_ID = BYTES.vocab_size


def word_table(texts, pre_split=True) -> Counter:
    """The library's training input: every distinct chunk (in byte ids) with its count."""
    chunks = (c for t in texts for c in (SPLIT_PATTERN.findall(t) if pre_split else [t]))
    return Counter(tuple(BYTES.encode(c)) for c in chunks)


def random_words(seed: int) -> list[str]:
    """Short words over a tiny alphabet, many repeated: lots of ties and overlapping pairs."""
    rng = random.Random(seed)
    return ["".join(rng.choice("aab") for _ in range(rng.randint(1, 5)))
            for _ in range(rng.randint(1, 12))]


CORPORA = {
    "stories": generate_stories(40, seed=3),
    "instructions": [r["instruction"] + " " + r["input"] for r in instruction_data(60, seed=1)],
    "unicode": ["naïve café 😀😀 日本語 日本 ...", "  tabs\tand\nnewlines  ", "aaaa aaaa"],
}


@pytest.mark.parametrize("corpus", list(CORPORA))
def test_ch04_most_frequent_pair_is_the_first_merge(impl, corpus):
    texts = CORPORA[corpus]
    got = impl(CH04).most_frequent_pair(list(word_table(texts).items()))
    assert got == Tokenizer.train(texts, FIRST_MERGE_ID + 1).merges[0]


@pytest.mark.parametrize("seed", range(30))
def test_ch04_most_frequent_pair_ties_and_weights(impl, seed):
    # pre_split=False makes each text one word, so repeated texts are a word's count
    texts = random_words(seed)
    table = word_table(texts, pre_split=False)
    got = impl(CH04).most_frequent_pair([(list(w), c) for w, c in table.items()])
    expected = Tokenizer.train(texts, FIRST_MERGE_ID + 1, pre_split=False).merges
    assert got == (expected[0] if expected else None)


@pytest.mark.parametrize("table", [[], [((4,), 10)], [((), 3), ((5,), 1)]])
def test_ch04_most_frequent_pair_without_pairs(impl, table):
    assert impl(CH04).most_frequent_pair(table) is None


@pytest.mark.parametrize("seed", range(40))
def test_ch04_merge(impl, seed):
    rng = random.Random(seed)
    ids = [rng.choice([1, 2, 3]) for _ in range(rng.randint(0, 30))]
    pair = (rng.choice([1, 2, 3]), rng.choice([1, 2, 3]))       # (x, x) overlaps itself
    before = list(ids)
    got = impl(CH04).merge(ids, pair, 99)
    assert ids == before, "merge must not change its input"
    assert list(got) == merge_pair(before, pair, 99)


@pytest.mark.parametrize("corpus, n_merges", [("stories", 80), ("instructions", 60),
                                              ("unicode", 30)])
def test_ch04_your_bpe_learns_the_library_merges(impl, corpus, n_merges):
    texts = CORPORA[corpus]
    expected = Tokenizer.train(texts, FIRST_MERGE_ID + n_merges).merges
    words = [(list(w), c) for w, c in word_table(texts).items()]
    learned = []
    for new_id in range(FIRST_MERGE_ID, FIRST_MERGE_ID + len(expected)):
        pair = impl(CH04).most_frequent_pair(words)
        learned.append(pair)
        words = [(impl(CH04).merge(w, pair, new_id), c) for w, c in words]
    assert learned == expected


# ---------------------------------------------------------------- chapter 5: pre-training

@pytest.mark.parametrize("warmup, total, peak, min_ratio", [
    (10, 100, 3e-3, 0.1), (0, 50, 1.0, 0.0), (1, 1, 0.5, 0.1), (5, 5, 1e-3, 0.1),
    (30, 20, 2e-4, 0.5), (7, 1000, 6e-4, 0.1)])
def test_ch05_cosine_lr(impl, warmup, total, peak, min_ratio):
    cfg = TrainConfig(steps=total, warmup=warmup, lr=peak, min_lr_ratio=min_ratio)
    for step in range(total + warmup + 10):
        got = impl(CH05).cosine_lr(step, warmup, total, peak, min_ratio)
        assert got == pytest.approx(lr_at(step, cfg), rel=1e-12, abs=0), f"step {step}"


@pytest.mark.parametrize("shape", [(7,), (3, 50), (2, 4, 33)])
@pytest.mark.parametrize("p", [1e-9, 0.1, 0.5, 0.9, 0.999])
def test_ch05_top_p_filter(impl, shape, p):
    logits = randn(*shape, seed=len(shape), scale=3.0)           # unsorted rows
    got = impl(CH05).top_p_filter(logits, p)
    assert got.shape == logits.shape and got.dtype == logits.dtype
    assert torch.equal(got, filter_top_p(logits, p))


def test_ch05_top_p_filter_sorted_and_bfloat16(impl):
    ascending = torch.linspace(-4, 4, 20).repeat(2, 1)
    ascending[1] = ascending[1].flip(-1)                         # and a descending row
    for logits in (ascending, randn(4, 64, seed=5).to(torch.bfloat16)):
        got = impl(CH05).top_p_filter(logits, 0.7)
        assert got.dtype == logits.dtype
        assert torch.equal(got, filter_top_p(logits, 0.7))


@pytest.mark.parametrize("shape", [(9,), (4, 40)])
def test_ch05_top_p_filter_p_one_keeps_everything(impl, shape):
    logits = randn(*shape, seed=7)                               # no probability underflows
    got = impl(CH05).top_p_filter(logits, 1.0)
    assert torch.equal(got, logits)
    assert torch.equal(got, filter_top_p(logits, 1.0))


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.75, 0.95])
def test_ch05_top_p_filter_ties(impl, p):
    # values from a small set: tied tokens straddle the cut. Which of two equal logits is
    # kept is arbitrary, so compare how many are kept and which values, row by row.
    logits = torch.randint(0, 4, (6, 24), generator=torch.Generator().manual_seed(11)).float()
    logits[0] = 1.0                                              # a row of equal logits
    got, expected = impl(CH05).top_p_filter(logits, p), filter_top_p(logits, p)
    assert got.shape == logits.shape
    kept = torch.isfinite(got)
    assert torch.equal(got[kept], logits[kept]), "kept logits must be left unchanged"
    assert torch.equal(kept.sum(-1), torch.isfinite(expected).sum(-1))
    for g, e in zip(got, expected):
        assert torch.equal(g.sort().values, e.sort().values)


TINY = LlamaConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, max_seq_len=16)


def batches(n_micro: int, step: int, rows: int = 2, t: int = 12):
    g = torch.Generator().manual_seed(100 * step + n_micro)
    seq = torch.randint(0, TINY.vocab_size, (n_micro * rows, t + 1), generator=g)
    x, y = seq[:, :-1], seq[:, 1:]
    return [(x[i * rows:(i + 1) * rows], y[i * rows:(i + 1) * rows]) for i in range(n_micro)]


def make_optimizer(kind: str, model):
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    # Adam divides by sqrt(v) + eps: with the default eps a gradient of 1e-9 turns float
    # rounding (the two batchings differ by ~1e-9) into visible steps; eps=1e-4 does not
    return torch.optim.AdamW(model.parameters(), lr=1e-3, eps=1e-4, weight_decay=0.1)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("clip", [1e9, 0.05])                 # clipping off, and on
@pytest.mark.parametrize("n_micro", [1, 2, 4])
def test_ch05_accumulated_step(impl, optimizer, clip, n_micro):
    torch.manual_seed(0)
    ours = Llama(TINY)
    ref = copy.deepcopy(ours)
    start = copy.deepcopy(ours.state_dict())
    opt_ours, opt_ref = make_optimizer(optimizer, ours), make_optimizer(optimizer, ref)
    for step in range(2):                  # a second step sees stale grads if not cleared
        micro = batches(n_micro, step)
        loss = impl(CH05).accumulated_step(ours, opt_ours, micro, clip)
        # the reference: one step on the concatenated batch
        _, ref_loss = ref(torch.cat([x for x, _ in micro]), torch.cat([y for _, y in micro]))
        ref_loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), clip)
        assert (norm > clip) == (clip < 1), "test setup: clipping should be on only for 0.05"
        opt_ref.step()
        opt_ref.zero_grad(set_to_none=True)
        assert isinstance(loss, float)
        assert loss == pytest.approx(ref_loss.item(), abs=1e-5)
        assert all(p.grad is None or not p.grad.any() for p in ours.parameters()), \
            "gradients must be cleared after the step"
    moved = False
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), atol=1e-6, rtol=0, msg=name)
        moved |= not torch.equal(p.detach(), start[name])
    assert moved, "the weights did not change"


# ---------------------------------------------------------------- chapter 3: checkpoints

CH03 = "ch03_checkpoints"


@pytest.mark.parametrize("n_heads, head_dim, d_in", [(1, 2, 3), (4, 8, 32), (2, 16, 5)])
def test_ch03_hf_permutations(impl, n_heads, head_dim, d_in):
    from minillama.checkpoints.hf import hf_to_meta_permute, meta_to_hf_permute

    w = randn(n_heads * head_dim, d_in, seed=n_heads + head_dim)
    mod = impl(CH03)
    to_hf = mod.meta_to_hf_permute(w, n_heads)
    assert torch.equal(to_hf, meta_to_hf_permute(w, n_heads))
    assert torch.equal(mod.hf_to_meta_permute(to_hf, n_heads), w)
    assert torch.equal(mod.hf_to_meta_permute(w, n_heads), hf_to_meta_permute(w, n_heads))


@pytest.mark.parametrize("values", [(64, 172, 5, 8, 4, 512, 512), (288, 768, 6, 6, 6, -32000, 256)])
def test_ch03_read_llama2c_header(impl, values):
    import struct

    raw = struct.pack("<7i", *values) + b"\x00" * 12      # weights follow the header
    got = impl(CH03).read_llama2c_header(raw)
    names = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")
    expected = dict(zip(names, values), vocab_size=abs(values[5]), tied=values[5] > 0)
    assert got == expected
    with pytest.raises(ValueError):
        impl(CH03).read_llama2c_header(raw[:20])


# ---------------------------------------------------------------- chapter 6: mixture of experts

CH06 = "ch06_moe"


@pytest.mark.parametrize("n, n_experts", [(1, 1), (7, 4), (64, 16), (300, 128)])
def test_ch06_route_top1_sigmoid(impl, n, n_experts):
    logits = randn(n, n_experts, seed=n, scale=3.0)
    scores, expert_index = impl(CH06).route_top1_sigmoid(logits)
    ref_scores, ref_index = route(logits, 1)
    assert scores.shape == expert_index.shape == (n,)
    assert torch.equal(expert_index, ref_index[:, 0])
    torch.testing.assert_close(scores, ref_scores[:, 0])


def test_ch06_route_top1_sigmoid_keeps_bfloat16(impl):
    logits = randn(10, 8, seed=4).to(torch.bfloat16)
    scores, expert_index = impl(CH06).route_top1_sigmoid(logits)
    ref_scores, ref_index = route(logits, 1)
    assert scores.dtype == torch.bfloat16
    assert torch.equal(scores, ref_scores[:, 0]) and torch.equal(expert_index, ref_index[:, 0])


def _experts(n_experts, d, f, seed):
    return (randn(n_experts, d, f, seed=seed, scale=0.3), randn(n_experts, f, d, seed=seed + 1,
            scale=0.3), randn(n_experts, d, f, seed=seed + 2, scale=0.3))


@pytest.mark.parametrize("n, n_experts, d, f, load", [
    (1, 1, 4, 6, "random"), (12, 4, 8, 16, "random"), (50, 8, 16, 12, "random"),
    (9, 4, 8, 8, "skewed"),            # experts 1 and 3 get no token, expert 2 almost all
])
def test_ch06_dispatch_top1(impl, n, n_experts, d, f, load):
    w1, w2, w3 = _experts(n_experts, d, f, seed=n)
    x, scores = randn(n, d, seed=n + 10), torch.rand(n, generator=torch.Generator().manual_seed(n))
    if load == "skewed":
        expert_index = torch.tensor([2, 2, 0, 2, 2, 2, 0, 2, 2])
    else:
        expert_index = torch.randint(0, n_experts, (n,), generator=torch.Generator().manual_seed(n))
    got = impl(CH06).dispatch_top1(x, scores, expert_index, w1, w2, w3)
    assert got.shape == x.shape
    expected = dispatch(x, scores[:, None], expert_index[:, None], w1, w2, w3)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_ch06_dispatch_top1_gradients(impl):
    w = [t.requires_grad_() for t in _experts(4, 8, 12, seed=3)]
    x, scores = randn(20, 8, seed=5).requires_grad_(), torch.rand(20).requires_grad_()
    expert_index = torch.randint(0, 4, (20,), generator=torch.Generator().manual_seed(6))
    inputs = [x, scores, *w]
    got = impl(CH06).dispatch_top1(x, scores, expert_index, *w)
    grads = torch.autograd.grad(got.square().sum(), inputs)
    expected = dispatch(x, scores[:, None], expert_index[:, None], *w)
    for g, e in zip(grads, torch.autograd.grad(expected.square().sum(), inputs)):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def test_ch06_your_router_and_dispatch_make_the_moe_layer(impl):
    torch.manual_seed(0)
    layer = MoE(16, 24, n_experts=6, k=1)
    x = randn(3, 10, 16, seed=9)
    tokens = x.reshape(-1, 16)
    with torch.no_grad():
        scores, expert_index = impl(CH06).route_top1_sigmoid(layer.router(tokens))
        e = layer.experts
        routed = impl(CH06).dispatch_top1(tokens, scores, expert_index, e.w1, e.w2, e.w3)
        got = layer.shared_expert(tokens) + routed
        torch.testing.assert_close(got.view_as(x), layer(x), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- chapter 7: LoRA

CH07 = "ch07_lora"


def _lora_layer(d_in, d_out, r, seed, alpha=16.0, rslora=False):
    from minillama.peft.lora import LoRALinear

    torch.manual_seed(seed)
    layer = LoRALinear(torch.nn.Linear(d_in, d_out, bias=False), r, alpha, rslora=rslora)
    with torch.no_grad():
        layer.lora_B.copy_(randn(d_out, r, seed=seed + 1, scale=0.5))   # trained: B != 0
    return layer


@pytest.mark.parametrize("shape, d_out, r, rslora", [((3, 8), 8, 1, False),
                                                     ((2, 5, 16), 24, 4, False),
                                                     ((1, 7, 32), 12, 8, True)])
def test_ch07_lora_forward(impl, shape, d_out, r, rslora):
    layer = _lora_layer(shape[-1], d_out, r, seed=r, rslora=rslora)
    x = randn(*shape, seed=r + 2)
    with torch.no_grad():
        got = impl(CH07).lora_forward(x, layer.base.weight, layer.lora_A, layer.lora_B,
                                      layer.scale)
        assert got.shape == (*shape[:-1], d_out)
        torch.testing.assert_close(got, layer(x), atol=1e-5, rtol=1e-5)


def test_ch07_lora_forward_gradients(impl):
    layer = _lora_layer(16, 8, 4, seed=5)
    x = randn(6, 16, seed=6)
    params = [layer.lora_A, layer.lora_B]
    got = impl(CH07).lora_forward(x, layer.base.weight, *params, layer.scale)
    grads = torch.autograd.grad(got.square().sum(), params)
    expected = torch.autograd.grad(layer(x).square().sum(), params)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("d_in, d_out, r", [(8, 8, 2), (16, 24, 4), (32, 12, 8)])
def test_ch07_lora_merge(impl, d_in, d_out, r):
    from minillama.peft.lora import lora_merge

    layer = _lora_layer(d_in, d_out, r, seed=d_in)
    W0, A, B = layer.base.weight.detach(), layer.lora_A.detach(), layer.lora_B.detach()
    merged = impl(CH07).lora_merge(W0, A, B, layer.scale)
    assert merged.shape == W0.shape
    torch.testing.assert_close(merged, lora_merge(W0, A, B, layer.scale))
    x = randn(5, d_in, seed=r)
    with torch.no_grad():
        torch.testing.assert_close(x @ merged.T, layer(x), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- chapter 8: LLaMA-Adapter

CH08 = "ch08_adapter_v1"


@pytest.mark.parametrize("b, h, t, K, d, shared, per_head", [
    (1, 1, 1, 1, 4, False, True), (2, 4, 7, 3, 8, True, True),
    (3, 2, 5, 10, 16, False, False), (2, 8, 1, 4, 8, True, False)])
def test_ch08_gated_prompt_attention(impl, b, h, t, K, d, shared, per_head):
    from minillama.peft.adapter_v1 import gated_prompt_attention

    q = randn(b, h, t, d, seed=t)
    k, v = (randn(1 if shared else b, h, K, d, seed=s) for s in (K, K + 1))
    gate = randn(h if per_head else 1, seed=d)
    got = impl(CH08).gated_prompt_attention(q, k, v, gate)
    assert got.shape == q.shape
    torch.testing.assert_close(got, gated_prompt_attention(q, k, v, gate), atol=1e-6, rtol=1e-5)
    zero = impl(CH08).gated_prompt_attention(q, k, v, torch.zeros_like(gate))
    assert torch.equal(zero, torch.zeros_like(q))          # zero-init: nothing comes back


def test_ch08_gated_prompt_attention_keeps_bfloat16(impl):
    from minillama.peft.adapter_v1 import gated_prompt_attention

    q, k, v = (randn(2, 4, 3, 8, seed=s).to(torch.bfloat16) for s in (1, 2, 3))
    gate = randn(4, seed=4).to(torch.bfloat16)
    got = impl(CH08).gated_prompt_attention(q, k, v, gate)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, gated_prompt_attention(q, k, v, gate))


def test_ch08_your_prompt_attention_makes_the_adapter_layer(impl):
    from einops import rearrange

    from minillama.attention import Attention, repeat_kv
    from minillama.peft.adapter_v1 import PromptAttention

    torch.manual_seed(0)
    cfg = LlamaConfig(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, max_seq_len=16)
    attn, module = Attention(cfg), PromptAttention(32, 4, prompt_len=5)
    with torch.no_grad():
        module.gate.copy_(randn(4, seed=1))
    x, q = randn(2, 6, 32, seed=2), randn(2, 4, 6, 8, seed=3)
    with torch.no_grad():
        k, v = (rearrange(w(module.prompt[None]), "b k (h d) -> b h k d", h=2)
                for w in (attn.wk, attn.wv))
        got = impl(CH08).gated_prompt_attention(q, repeat_kv(k, 2), repeat_kv(v, 2),
                                                torch.tanh(module.gate))
        torch.testing.assert_close(got, module(attn, x, q), atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- chapter 10: LLaMA-Excitor

CH10 = "ch10_excitor"


@pytest.mark.parametrize("b, M, D, K, r", [(1, 1, 8, 1, 1), (2, 7, 16, 5, 4), (3, 4, 64, 30, 16)])
def test_ch10_reconstructed_keys(impl, b, M, D, K, r):
    from minillama.peft.excitor import reconstructed_keys

    t, P = randn(b, M, D, seed=M), randn(K, D, seed=K)
    W_down, W_up = randn(r, D, seed=r, scale=0.5), randn(D, r, seed=r + 1, scale=0.5)
    got = impl(CH10).reconstructed_keys(t, P, W_down, W_up)
    assert got.shape == (b, M, D)
    torch.testing.assert_close(got, reconstructed_keys(t, P, W_down, W_up), atol=1e-5,
                               rtol=1e-5)
    if K == 1:                                # one prompt: every token gets exactly P
        torch.testing.assert_close(got, P.expand(b, M, D))


def test_ch10_your_keys_make_the_excitor_layer(impl):
    from minillama.peft.excitor import Excitor

    torch.manual_seed(0)
    module = Excitor(32, 4, prompt_len=6, rank=4)
    x = randn(2, 5, 32, seed=1)
    with torch.no_grad():
        got = impl(CH10).reconstructed_keys(x, module.prompt, module.down, module.up)
        torch.testing.assert_close(got, module.extra_keys(x), atol=1e-5, rtol=1e-5)
