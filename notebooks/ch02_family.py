# %% [markdown]
# # Chapter 2 — The LLaMA family
#
# The survey (arXiv 2510.12178, Table 1) lists the LLaMA models by size, context window
# and release. Here we rebuild that table from `minillama.CONFIGS`, with every parameter
# counted exactly: each model is *built* on PyTorch's `meta` device, which records
# shapes but allocates no memory, so even the 405B model costs nothing to count.
#
# The closed form the counts must agree with (one layer: attention, SwiGLU, two norms):
#
# $$N = L\,(2DH d_h + 2D\,KV\,d_h + 3DF + 2D) + V D\,(1 \text{ if tied else } 2) + D$$

# %%
import time

import matplotlib.pyplot as plt
import torch

from minillama import CONFIGS, count_parameters, course, kv_cache_bytes_per_token
from minillama.config import PUBLISHED

PROFILE = course.setup().profile
print(f"profile={PROFILE}")

# %% [markdown]
# Facts that are not in a config (training tokens, release month) come from the papers:
# LLaMA 1 (arXiv 2302.13971), Llama 2 (arXiv 2307.09288), Llama 3 "herd" (arXiv 2407.21783)
# and Meta's Llama 3.2 model card.

# %%
RELEASE = {"llama1": ("2023-02", "1.0T (7B, 13B) / 1.4T"), "llama2": ("2023-07", "2T"),
           "llama3": ("2024-04", "15T"), "llama3.1": ("2024-07", "15T"),
           "llama3.2": ("2024-09", "9T (pruned + distilled)")}

t0 = time.perf_counter()
rows = []
for name in PUBLISHED:
    c = CONFIGS[name]
    family = name.rsplit("-", 1)[0]
    rows.append(dict(name=name, params=count_parameters(name), D=c.dim, L=c.n_layers,
                     H=c.n_heads, KV=c.n_kv_heads, F=c.ffn_dim, V=c.vocab_size,
                     ctx=c.max_seq_len, tied=c.tie_embeddings,
                     kv=kv_cache_bytes_per_token(name), released=RELEASE[family][0],
                     tokens=RELEASE[family][1]))
print(f"counted {len(rows)} models in {time.perf_counter() - t0:.1f} s, no weights allocated\n")
print(f"{'model':14s} {'parameters':>17s} {'D':>6s} {'L':>4s} {'H':>4s} {'KV':>3s} {'F':>6s} "
      f"{'vocab':>7s} {'context':>8s} {'KV KiB/tok':>10s}  released  tokens")
for r in rows:
    print(f"{r['name']:14s} {r['params']:17,d} {r['D']:6d} {r['L']:4d} {r['H']:4d} {r['KV']:3d} "
          f"{r['F']:6d} {r['V']:7d} {r['ctx']:8d} {r['kv'] / 1024:10.0f}  {r['released']}   "
          f"{r['tokens']}")


# %% [markdown]
# The marketing names round: "7B" is 6.74B, "8B" is 8.03B and "405B" is 405.85B.
#
# Where do Llama 3 8B's extra 1.29B parameters over Llama 2 7B come from? Both stack 32
# layers of width 4096 with 32 query heads of 128 dimensions; three things differ, and
# each term of the closed form above gives its share, with its sign:
#
# * the **vocabulary**, 128,256 tokens instead of 32,000, in the embedding and in the
#   (untied) output head: $+\Delta V \cdot D \cdot 2$;
# * the **feed-forward width**, $F$ = 14,336 instead of 11,008 (chapter 1's multiplier
#   1.3 and rounding), in three matrices per layer: $+L \cdot 3 D\,\Delta F$;
# * **grouped-query attention**, 8 K/V heads instead of 32, so `wk` and `wv` shrink:
#   $L \cdot 2 D\,\Delta KV\, d_h$, negative.

# %%
l2, l3 = CONFIGS["llama2-7b"], CONFIGS["llama3-8b"]
assert (l2.dim, l2.n_layers, l2.n_heads, l2.head_dim) == (l3.dim, l3.n_layers, l3.n_heads,
                                                          l3.head_dim)
assert not l2.tie_embeddings and not l3.tie_embeddings
D, L, hd = l3.dim, l3.n_layers, l3.head_dim
changes = {"vocabulary (embedding + head)": (l3.vocab_size - l2.vocab_size) * D * 2,
           "feed-forward width": L * 3 * D * (l3.ffn_dim - l2.ffn_dim),
           "GQA (fewer K/V heads)": L * 2 * D * (l3.n_kv_heads - l2.n_kv_heads) * hd}
difference = count_parameters("llama3-8b") - count_parameters("llama2-7b")
for what, n in changes.items():
    print(f"{what:30s} {n:+15,d}  ({n / difference:+5.0%} of the difference)")
print(f"{'sum of the three':30s} {sum(changes.values()):+15,d}")
print(f"{'llama3-8b minus llama2-7b':30s} {difference:+15,d}")
assert sum(changes.values()) == difference
assert changes["GQA (fewer K/V heads)"] < 0 < changes["vocabulary (embedding + head)"] \
    < changes["feed-forward width"]
assert [round(count_parameters(n) / 1e9, 2) for n in ("llama2-7b", "llama3-8b", "llama3.1-405b")] \
    == [6.74, 8.03, 405.85]

# %% [markdown]
# The wider feed-forward network alone adds slightly more than the whole difference; the
# vocabulary adds 0.79B; GQA takes 0.81B back. The larger vocabulary accounts for 61% of
# the net difference, but the FFN is the largest addition, and the net difference is
# small only because GQA's saving nearly cancels the vocabulary's cost.
#
# Where do the parameters live? Embeddings + head, attention, and the feed-forward
# network, per model:

# %%
def breakdown(c):
    hd = c.head_dim
    attn = c.n_layers * (2 * c.dim * c.n_heads * hd + 2 * c.dim * c.n_kv_heads * hd)
    ffn = c.n_layers * 3 * c.dim * c.ffn_dim
    emb = c.vocab_size * c.dim * (1 if c.tie_embeddings else 2)
    norms = c.n_layers * 2 * c.dim + c.dim
    return emb, attn, ffn, norms


names = [r["name"] for r in rows]
parts = [breakdown(CONFIGS[n]) for n in names]
for n, p in zip(names, parts):
    assert sum(p) == count_parameters(n), n          # the closed form equals the meta count
fractions = torch.tensor(parts, dtype=torch.float64)
fractions = fractions / fractions.sum(1, keepdim=True)
fig, ax = plt.subplots(1, 2, figsize=(13, 4))
bottom = torch.zeros(len(names), dtype=torch.float64)
for j, label in enumerate(["embeddings + head", "attention", "feed-forward", "norms"]):
    ax[0].bar(names, fractions[:, j], bottom=bottom, label=label)
    bottom += fractions[:, j]
ax[0].set_ylabel("share of parameters")
ax[0].tick_params(axis="x", rotation=70)
ax[0].legend(fontsize=8)
ax[1].scatter([r["params"] / 1e9 for r in rows], [r["kv"] / 1024 for r in rows])
for r in rows:
    ax[1].annotate(r["name"], (r["params"] / 1e9, r["kv"] / 1024), fontsize=7)
ax[1].set_xscale("log")
ax[1].set_xlabel("parameters (billions)")
ax[1].set_ylabel("KV cache per token (KiB, bf16)")
ax[1].set_title("GQA (8 KV heads) flattens KV memory")
plt.tight_layout()
plt.show()
for n, p in zip(names, parts):
    if n in ("llama3.2-1b", "llama3.2-3b", "llama2-7b", "llama3.1-405b"):
        print(f"{n:14s} embeddings+head {p[0] / sum(p):5.1%}  attention {p[1] / sum(p):5.1%}  "
              f"ffn {p[2] / sum(p):5.1%}")
share = {n: p[0] / sum(p) for n, p in zip(names, parts)}
kv = {r["name"]: r["kv"] for r in rows}
assert 0.18 < share["llama3.2-1b"] < 0.25 and 0.1 < share["llama3.2-3b"] < share["llama3.2-1b"]
assert share["llama3.1-405b"] < 0.02
assert kv["llama2-70b"] < kv["llama2-7b"]

# %% [markdown]
# Two things the chart shows. The small Llama 3.2 models spend a large share of their
# parameters on the 128K-entry vocabulary even though their head is tied to the
# embedding: a fifth for the 1B model, an eighth for the 3B; the 405B model spends 1%
# there. And GQA decouples KV-cache size from model size: Llama 2 70B stores *less* per
# token than Llama 2 7B (320 KiB against 512 KiB in the table above).
#
# ## Memory for a context window
#
# At the full 128K context of Llama 3.1, a single sequence's KV cache is below. For the
# 8B model it outweighs the weights themselves:

# %%
for name in ["llama3.1-8b", "llama3.1-70b", "llama3.1-405b"]:
    c = CONFIGS[name]
    gib = kv_cache_bytes_per_token(name) * c.max_seq_len / 2**30
    weights = count_parameters(name) * 2 / 2**30
    print(f"{name:14s} KV cache at {c.max_seq_len:,} tokens: {gib:6.1f} GiB   "
          f"(bf16 weights: {weights:6.1f} GiB)")
    if name == "llama3.1-8b":
        assert gib > weights

# %% [markdown]
# ## Exercises
#
# `exercises/ch02_family.py`: write `ffn_dim`, the closed-form `llama_parameters(cfg)`
# and `kv_cache_bytes_per_token`; the grader checks them on all 14 published models.

# %%
IMPL = "solutions"
result = course.grade("ch02", impl=IMPL)
