# %% [markdown]
# # Chapter 1 — Anatomy of a LLaMA block
#
# Every LLaMA, from LLaMA 1 (arXiv 2302.13971) to Llama 3 (arXiv 2407.21783), stacks the
# same decoder block:
#
# $$h = x + \mathrm{Attention}(\mathrm{RMSNorm}(x)), \qquad \mathrm{out} = h + \mathrm{FFN}(\mathrm{RMSNorm}(h))$$
#
# This chapter takes the block apart, one library file at a time:
#
# | part | file | paper |
# |---|---|---|
# | RMSNorm | `minillama/norm.py` | arXiv 1910.07467 |
# | rotary embeddings (+ Llama 3.1 scaling) | `minillama/rope.py` | arXiv 2104.09864 |
# | grouped-query attention, KV cache | `minillama/attention.py` | arXiv 2305.13245 |
# | SwiGLU | `minillama/feedforward.py` | arXiv 2002.05202 |
# | the block and the model | `minillama/model.py` | arXiv 2302.13971 |
#
# Open each file next to this notebook: the code *is* the textbook, the notebook runs it.
#
# **Profiles.** `MINILLAMA_PROFILE=cpu` (the default without a GPU) keeps every model tiny
# so the chapter runs in well under a minute; `full` (the default on CUDA) uses bigger sizes.

# %%
import math
import time

import matplotlib.pyplot as plt
import torch

import minillama
from minillama import CONFIGS, Llama, course
from minillama.attention import causal_mask, repeat_kv
from minillama.norm import RMSNorm
from minillama.rope import apply_rotary_emb, precompute_freqs_cis, rope_frequencies

PROFILE, DEVICE = course.setup()
print(f"profile={PROFILE} device={DEVICE} torch={torch.__version__}")

# %% [markdown]
# ## 1. RMSNorm
#
# LayerNorm subtracts the mean and divides by the standard deviation. RMSNorm keeps only
# the rescaling: $\mathrm{RMSNorm}(x) = x / \sqrt{\mathrm{mean}(x_i^2) + \epsilon} \cdot g$.
# It is cheaper and works as well. After it, every vector has root-mean-square 1
# (before the gain $g$), up to the $\epsilon$: exactly $1/\sqrt{1 + \epsilon/\mathrm{rms}(x)^2}$,
# a little below 1 for a small vector (the first row below):

# %%
x = torch.randn(3, 8) * torch.tensor([[0.1], [1.0], [10.0]])
norm = RMSNorm(8, eps=1e-5)
y = norm(x)
rms_before, rms_after = x.pow(2).mean(-1).sqrt(), y.pow(2).mean(-1).sqrt().detach()
print("rms before:", rms_before)
print("rms after: ", rms_after)
print("mean after (not forced to 0, unlike LayerNorm):", y.mean(-1).detach())
assert torch.allclose(rms_after, 1 / (1 + 1e-5 / rms_before**2).sqrt(), atol=1e-6)
assert (y.mean(-1).abs() > 0.01).any()          # the mean is left alone

# %% [markdown]
# ## 2. Rotary position embeddings
#
# RoPE rotates each pair of query/key dimensions by the angle $p \cdot f_i$ with
# $f_i = \theta^{-2i/d}$. The first pairs spin fast (they resolve neighbouring tokens),
# the last ones barely move (they carry long-range position). Llama 3 raised $\theta$
# from $10^4$ to $5\cdot10^5$, and Llama 3.1 additionally divides the slowest frequencies
# by 8 to stretch the context from 8K to 128K tokens.

# %%
hd = 128
f_l2 = rope_frequencies(hd, 1e4)
f_l3 = rope_frequencies(hd, 5e5)
f_l31 = rope_frequencies(hd, 5e5, CONFIGS["llama3.1-8b"].rope_scaling)
fig, ax = plt.subplots(1, 2, figsize=(11, 3.5))
ax[0].semilogy(f_l2, label="Llama 2 (theta=1e4)")
ax[0].semilogy(f_l3, label="Llama 3 (theta=5e5)")
ax[0].semilogy(f_l31, "--", label="Llama 3.1 (scaled)")
ax[0].set_xlabel("pair index i")
ax[0].set_ylabel("frequency f_i (rad / token)")
ax[0].legend()
wavelen = 2 * math.pi / f_l3
ax[1].semilogx(wavelen, f_l31 / f_l3, "o-", ms=3)
ax[1].axvline(8192 / 4, color="gray", ls=":")
ax[1].axvline(8192 / 1, color="gray", ls=":")
ax[1].set_xlabel("wavelength 2*pi/f_i (tokens)")
ax[1].set_ylabel("scaled / original frequency")
ax[1].set_title("llama3 scaling: keep / blend / divide by 8")
plt.tight_layout()
plt.show()
band = ((wavelen >= 8192 / 4) & (wavelen <= 8192)).sum().item()
print(f"pairs kept: {(wavelen < 8192 / 4).sum().item()}, blended: {band}, "
      f"slowed 8x: {(wavelen > 8192).sum().item()}")
ratio = f_l31 / f_l3
assert torch.allclose(ratio[wavelen < 8192 / 4], torch.tensor(1.0))       # fast pairs kept
assert torch.allclose(ratio[wavelen > 8192], torch.tensor(1 / 8))         # slowest divided by 8
assert ((ratio >= 1 / 8) & (ratio <= 1)).all()                             # the band blends

# %% [markdown]
# The point of rotating both queries and keys: the score between a query at position
# $p$ and a key at position $s$ only depends on $p - s$. Check it numerically (at
# position 3010 the float32 angles $p f_i$ are large, so the last digits move):

# %%
table = precompute_freqs_cis(hd, 4096, 1e4)
q, k = torch.randn(2, 1, 1, 1, hd).unbind(0)


def score(p, s):
    return (apply_rotary_emb(q, table[p:p + 1]) * apply_rotary_emb(k, table[s:s + 1])).sum().item()


for p, s in [(10, 3), (110, 103), (3010, 3003), (10, 4)]:
    print(f"score(query at {p:4d}, key at {s:4d}) = {score(p, s):+.5f}   (p - s = {p - s})")
assert abs(score(10, 3) - score(110, 103)) < 1e-4 and abs(score(10, 3) - score(3010, 3003)) < 1e-3
assert abs(score(10, 3) - score(10, 4)) > 0.1      # another distance, another score

# %% [markdown]
# The same rotation has two memory layouts: Meta pairs dimensions `(0,1), (2,3), ...`
# ("interleaved"), Hugging Face pairs `(i, i + d/2)` ("half"). They are the same maths on
# permuted dimensions, which is why HF checkpoints permute the rows of `wq` and `wk`
# (chapter 3).

# %%
x = torch.randn(1, 1, 6, 8)
t6 = precompute_freqs_cis(8, 6)
perm = torch.tensor([0, 2, 4, 6, 1, 3, 5, 7])
same = torch.allclose(apply_rotary_emb(x[..., perm], t6, "half"),
                      apply_rotary_emb(x, t6, "interleaved")[..., perm], atol=1e-6)
print("half layout on permuted dims == interleaved layout:", same)
assert same

# %% [markdown]
# ## 3. Grouped-query attention and the causal mask
#
# Each query head attends over keys at positions $\le$ its own (the causal mask below).
# With GQA, `n_heads / n_kv_heads` query heads share one key/value head: `repeat_kv`
# makes the copies.

# %%
print(causal_mask(5, 5).int())
print("decoding 2 new tokens after 3 cached ones:")
print(causal_mask(2, 5, start_pos=3).int())
kv = torch.arange(2.0).view(1, 2, 1, 1)          # two KV heads, holding 0 and 1
print("KV heads [0, 1] served to 8 query heads:", repeat_kv(kv, 4).flatten().tolist())
assert repeat_kv(kv, 4).flatten().tolist() == [0.0] * 4 + [1.0] * 4

# %% [markdown]
# Why bother: the KV cache stores one key and one value vector per layer, KV head and
# token, $2 \cdot L \cdot n_{kv} \cdot d_h$ numbers per token. Llama 3 8B has Llama 2 7B's
# layers and head width but 8 KV heads instead of 32, so a quarter of its cache:

# %%
kib = {}
for name in ["llama2-7b", "llama2-70b", "llama3-8b", "llama3.1-405b"]:
    c = CONFIGS[name]
    kib[name] = minillama.kv_cache_bytes_per_token(name) / 1024
    assert kib[name] * 1024 == 2 * c.n_layers * c.n_kv_heads * c.head_dim * 2     # bf16
    print(f"{name:14s} heads={c.n_heads:3d} kv_heads={c.n_kv_heads:3d}  "
          f"KV cache {kib[name]:7.0f} KiB/token (bf16)  "
          f"-> {kib[name] * 4096 / 2**20:6.2f} GiB for 4096 tokens")
assert kib["llama3-8b"] * 4 == kib["llama2-7b"]

# %% [markdown]
# ## 4. SwiGLU
#
# $\mathrm{FFN}(x) = W_2(\mathrm{SiLU}(W_1x)\odot W_3x)$. Three matrices instead of two,
# so the width shrinks to about $\tfrac{2}{3}\cdot 4D$; Llama 2 70B and Llama 3 scale that
# by `ffn_dim_multiplier`, and every model rounds it up to a multiple of `multiple_of`:

# %%
for name in ["llama1-7b", "llama2-70b", "llama3-8b", "llama3.2-1b"]:
    c = CONFIGS[name]
    width = int((c.ffn_dim_multiplier or 1) * int(8 * c.dim / 3))
    assert c.ffn_dim == c.multiple_of * math.ceil(width / c.multiple_of)
    print(f"{name:12s} D={c.dim:5d}  8D/3={int(8 * c.dim / 3):6d}  "
          f"multiplier={c.ffn_dim_multiplier}  multiple_of={c.multiple_of:5d}  -> F={c.ffn_dim}")

# %% [markdown]
# ## 5. The whole model, and what the KV cache buys
#
# Build a small model and generate with and without the cache. Greedy tokens must be
# identical; the cache only skips recomputing the past.

# %%
size = "small" if PROFILE == "cpu" else "base"
cfg = CONFIGS[size].replace(max_seq_len=512)
model = Llama(cfg).to(DEVICE).eval()
print(cfg)
print(f"{sum(p.numel() for p in model.parameters()):,} parameters")
prompt = torch.tensor([1, 2, 3], device=DEVICE)
same_tokens = torch.equal(model.generate(prompt, 50), model.generate(prompt, 50, use_cache=False))
print("identical tokens:", same_tokens)
assert same_tokens

# %% [markdown]
# What the cache saves depends on how long the sequence already is. Without it, the step
# that writes position $t$ runs the whole model over all $t + 1$ positions again
# (`generate(..., use_cache=False)` re-reads the sequence from the start); with it, the
# step runs one position through the model and reads the $t$ cached keys and values of
# each layer. Counting position-passes, $n$ generated tokens cost about $n^2/2$ without the
# cache and $n$ with it.
#
# We time one step at positions up to `max_seq_len`, with and without the cache, keeping
# the best of 15 tries (a busy machine only ever makes a try slower). The timings run
# on the CPU in both profiles, so they count arithmetic, not GPU kernel launches. The
# right panel is the price of the cache: its memory, per token and for a whole context.

# %%
@torch.inference_mode()
def step_ms(model, positions, repeats=15):
    """Best-of-``repeats`` milliseconds of the generation step that writes position t, for
    each t: (without the cache, with it). The tries go round all positions in turn, so a
    burst of load on a busy machine spoils one try of each, not every try of one."""
    seqs = {t: torch.randint(0, model.cfg.vocab_size, (1, t + 1)) for t in positions}
    caches = {t: model.make_cache(1, t + 1) for t in positions}
    for t in positions:
        model(seqs[t][:, :t], cache=caches[t])         # positions 0 .. t-1 already cached
    best = {(t, c): math.inf for t in positions for c in (False, True)}
    for round_ in range(repeats + 1):                  # round 0 only warms up
        for t in positions:
            for use_cache in (False, True):
                start = time.perf_counter()
                if use_cache:
                    model(seqs[t][:, t:], start_pos=t, cache=caches[t], last_only=True)
                else:
                    model(seqs[t], last_only=True)     # all t + 1 positions again
                if round_:
                    ms = 1e3 * (time.perf_counter() - start)
                    best[t, use_cache] = min(best[t, use_cache], ms)
    return [best[t, False] for t in positions], [best[t, True] for t in positions]


cpu_model = model.to("cpu")
positions = [1, *range(64, cfg.max_seq_len, 64), cfg.max_seq_len - 1]
ms_full, ms_cache = step_ms(cpu_model, positions)
print(f"{'position':>8s} {'no cache (ms)':>14s} {'cache (ms)':>11s} {'ratio':>6s}")
for t, a, b in zip(positions, ms_full, ms_cache):
    print(f"{t:8d} {a:14.2f} {b:11.2f} {a / b:6.1f}")


def area(ms):
    """Seconds for every step from the first to the last position (trapezoid rule)."""
    return sum((a + b) / 2 * (q - p) for p, q, a, b in zip(positions, positions[1:], ms, ms[1:])) / 1e3


print(f"a whole generation, positions {positions[0]}..{positions[-1]} (area under each curve): "
      f"about {area(ms_full):.1f} s without the cache, {area(ms_cache):.1f} s with it")

memory = {f"{size}, this model (fp32)": (cfg, 4), "llama2-7b (bf16)": (CONFIGS["llama2-7b"], 2),
          "llama3-8b (bf16)": (CONFIGS["llama3-8b"], 2)}
fig, ax = plt.subplots(1, 2, figsize=(12, 3.8))
ax[0].plot(positions, ms_full, "o-", label="without cache: all t + 1 positions")
ax[0].plot(positions, ms_cache, "o-", label="with cache: one position")
ax[0].set_xlabel("position t of the new token")
ax[0].set_ylabel("time per generated token (ms)")
ax[0].set_title(f"one greedy step, {size} model on the CPU")
ax[0].set_ylim(bottom=0)
ax[0].legend()
for label, (c, nbytes) in memory.items():
    per_token = minillama.kv_cache_bytes_per_token(c, nbytes)
    tokens = torch.logspace(0, math.log10(c.max_seq_len), 50)
    ax[1].loglog(tokens, tokens * per_token, label=f"{label}: 2x{c.n_layers}x{c.n_kv_heads}x"
                 f"{c.head_dim}x{nbytes} B/token")
    print(f"{label:26s} 2 (k, v) x {c.n_layers:2d} layers x {c.n_kv_heads:2d} KV heads x "
          f"{c.head_dim:3d} dims x {nbytes} B = {per_token / 1024:5.0f} KiB per token, "
          f"{per_token * c.max_seq_len / 2**20:6.0f} MiB at {c.max_seq_len} tokens")
ax[1].set_xlabel("tokens in the cache")
ax[1].set_ylabel("KV cache (bytes)")
ax[1].set_title("KV cache memory, one sequence")
ax[1].legend(fontsize=8)
plt.tight_layout()
plt.show()

cache = cpu_model.make_cache(1, cfg.max_seq_len)       # what generate allocates
allocated = sum(b.numel() * b.element_size() for layer in cache for b in (layer.k, layer.v))
print(f"make_cache(1, {cfg.max_seq_len}) allocates {allocated:,} bytes")
assert allocated == cfg.max_seq_len * minillama.kv_cache_bytes_per_token(cfg, 4)
assert ms_full[-1] >= 5 * ms_full[0]          # without the cache the step grows with t
growth_full, growth_cache = ms_full[-1] / ms_full[0], ms_cache[-1] / ms_cache[0]
print(f"last position / first: {growth_full:.1f}x without the cache, {growth_cache:.1f}x with it")
assert growth_cache <= growth_full / 3        # with it, it grows far less
assert ms_full[-1] >= 3 * ms_cache[-1]        # and at the longest length the cache wins

# %% [markdown]
# The measurement agrees with the count. Without the cache the step grows steadily with
# the position, so the time of a whole generation (the area under the curve) grows
# faster than its length. With the cache the step costs about the same at every
# position: the projections and the feed-forward network see one position, and the
# attention over the cached keys is a small part of the work at this width. The cell
# asserts the trend, with margins for a busy machine: the uncached step at the last
# position takes at least 5 times as long as at the first; the cached step grows by at
# most a third of that factor (in the table it hardly moves); and at the last position
# the cache is at least 3 times faster (the table's last row has the ratio measured
# here). At the first positions there is little
# to save: both ways run the model over one or a few positions.
#
# The memory grows linearly with the tokens, at $2 \cdot L \cdot n_{kv} \cdot d_h$ numbers
# per token; the cell checks that `make_cache` allocates exactly that. For this tiny
# model it is nothing; for Llama 2 7B a full 4096-token context takes 2 GiB, and Llama 3
# 8B, with 8 KV heads instead of 32, needs a quarter of that per token (1 GiB at twice
# the context). Chapter 2 continues with the whole family.

# %% [markdown]
# ## Exercises
#
# `exercises/ch01_anatomy.py` asks you to write `rms_norm`, `apply_rotary_emb`,
# `repeat_kv` and `causal_mask` yourself. Grade your file with the cell below
# (set `IMPL = "exercises"`); as shipped it grades the reference solutions.

# %%
IMPL = "solutions"
result = course.grade("ch01", impl=IMPL)
