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
# so the chapter runs in seconds; `full` (the default on CUDA) uses bigger sizes.

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
# (before the gain $g$):

# %%
x = torch.randn(3, 8) * torch.tensor([[0.1], [1.0], [10.0]])
norm = RMSNorm(8, eps=1e-5)
y = norm(x)
print("rms before:", x.pow(2).mean(-1).sqrt())
print("rms after: ", y.pow(2).mean(-1).sqrt().detach())
print("mean after (not forced to 0, unlike LayerNorm):", y.mean(-1).detach())

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

# %% [markdown]
# The point of rotating both queries and keys: the score between a query at position
# $p$ and a key at position $s$ only depends on $p - s$. Check it numerically:

# %%
table = precompute_freqs_cis(hd, 4096, 1e4)
q, k = torch.randn(2, 1, 1, 1, hd).unbind(0)


def score(p, s):
    return (apply_rotary_emb(q, table[p:p + 1]) * apply_rotary_emb(k, table[s:s + 1])).sum().item()


for p, s in [(10, 3), (110, 103), (3010, 3003), (10, 4)]:
    print(f"score(query at {p:4d}, key at {s:4d}) = {score(p, s):+.5f}   (p - s = {p - s})")

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

# %% [markdown]
# Why bother: the KV cache stores one key and one value vector per layer, KV head and token.

# %%
for name in ["llama2-7b", "llama2-70b", "llama3-8b", "llama3.1-405b"]:
    c = CONFIGS[name]
    kib = minillama.kv_cache_bytes_per_token(name) / 1024
    print(f"{name:14s} heads={c.n_heads:3d} kv_heads={c.n_kv_heads:3d}  "
          f"KV cache {kib:7.0f} KiB/token (bf16)  -> {kib * 4096 / 2**20:6.2f} GiB for 4096 tokens")

# %% [markdown]
# ## 4. SwiGLU
#
# $\mathrm{FFN}(x) = W_2(\mathrm{SiLU}(W_1x)\odot W_3x)$. Three matrices instead of two,
# so the width shrinks to about $\tfrac{2}{3}\cdot 4D$, rounded up to `multiple_of`:

# %%
for name in ["llama1-7b", "llama2-70b", "llama3-8b", "llama3.2-1b"]:
    c = CONFIGS[name]
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
n_new = 100 if PROFILE == "cpu" else 480
timings = {}
for use_cache in (True, False):
    t0 = time.perf_counter()
    out = model.generate(prompt, n_new, use_cache=use_cache)
    timings[use_cache] = time.perf_counter() - t0
    print(f"use_cache={use_cache!s:5}: {n_new / timings[use_cache]:7.0f} tokens/s")
same_tokens = torch.equal(model.generate(prompt, 50), model.generate(prompt, 50, use_cache=False))
print("identical tokens:", same_tokens)
assert same_tokens

# %% [markdown]
# ## Exercises
#
# `exercises/ch01_anatomy.py` asks you to write `rms_norm`, `apply_rotary_emb`,
# `repeat_kv` and `causal_mask` yourself. Grade your file with the cell below
# (set `IMPL = "exercises"`); as shipped it grades the reference solutions.

# %%
IMPL = "solutions"
result = course.grade("ch01", impl=IMPL)
