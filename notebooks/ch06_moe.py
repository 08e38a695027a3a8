# %% [markdown]
# # Chapter 6 — Mixture of Experts, the Llama 4 way
#
# The survey's Table 1 (arXiv 2510.12178) ends with Llama 4 Scout and Maverick: the
# first LLaMAs that are *sparse*. Each has about 17B **active** parameters (what one
# token runs through) but 108B and 401B parameters in total, and Scout's context reaches
# 10M tokens. Two ideas make that work, and this chapter builds both from the library:
#
# | idea | file | papers |
# |---|---|---|
# | mixture of experts: router, routed experts, shared expert | `minillama/moe.py` | arXiv 1701.06538, 2006.16668 (GShard), 2101.03961 (Switch), 2401.06066 (shared expert) |
# | interleaved RoPE / NoPE layers, chunked attention, QK-norm, temperature tuning | `minillama/attention.py` | arXiv 2305.19466 (NoPE), 2501.19399 (temperature) |
# | the switches per layer, Scout and Maverick | `minillama/config.py` | Meta's Llama 4 model card (April 2025) |
#
# The library's Llama 4 reproduces transformers' `Llama4ForCausalLM` logits to 1e-5
# (`tests/test_llama4.py`). Here we look inside, then train a dense model and a mixture
# of experts with the same active parameters on the course's stories.
#
# **Profiles.** `MINILLAMA_PROFILE=cpu` (the default without a GPU) trains two tiny
# models for a few hundred steps so the chapter runs in under a minute (the last cell
# prints the wall time); `full` (the default on CUDA) trains bigger ones for longer.

# %%
import math
import time
from collections import Counter

import matplotlib.pyplot as plt
import torch

from minillama import (
    CONFIGS,
    Llama,
    LlamaConfig,
    count_parameters,
    course,
    kv_cache_bytes_per_token,
    profiles,
)
from minillama.attention import attention_temperature, causal_mask
from minillama.config import PUBLISHED_MOE
from minillama.moe import dispatch, load_balancing_loss, route
from minillama.tasks import stories_data
from minillama.train import TrainConfig, train

PROFILE, DEVICE = course.setup()
if PROFILE == "cpu":
    # The CPU profile's layers are tiny: splitting each operation over threads gains little
    # and, on a busy machine, costs a lot in waiting. One thread keeps the timings steady.
    torch.set_num_threads(1)
T0 = time.perf_counter()
print(f"profile={PROFILE} device={DEVICE} torch={torch.__version__}")

# %% [markdown]
# ## 1. Scout and Maverick in numbers
#
# Both share the attention stack (48 layers, width 5120, 40 query heads, 8 KV heads) and
# differ in the feed-forward layers: Scout puts 16 experts in every layer, Maverick 128
# experts in every second layer and a dense FFN (width 16384) in the others. Every expert
# and the shared expert have width 8192. `count_parameters(..., active=True)` counts what
# one token uses: the shared expert, k = 1 of the E routed experts, the router, and
# everything outside the FFNs. Both models are built on the `meta` device, so counting
# costs no memory.

# %%
print(f"{'model':16s} {'experts':>7s} {'MoE layers':>10s} {'NoPE layers':>11s} "
      f"{'total':>17s} {'active':>16s} {'active share':>12s}")
for name in PUBLISHED_MOE:
    c = CONFIGS[name]
    total, active = count_parameters(name), count_parameters(name, active=True)
    moe = sum(c.is_moe_layer(i) for i in range(c.n_layers))
    nope = sum(not c.uses_rope(i) for i in range(c.n_layers))
    print(f"{name:16s} {c.n_experts:7d} {moe:10d} {nope:11d} {total:17,d} {active:16,d} "
          f"{active / total:12.1%}")
totals = {n: count_parameters(n) for n in PUBLISHED_MOE}
actives = {n: count_parameters(n, active=True) for n in PUBLISHED_MOE}
print(f"Maverick / Scout: {totals['llama4-maverick'] / totals['llama4-scout']:.2f}x the "
      f"parameters, {actives['llama4-maverick'] / actives['llama4-scout']:.4f}x the active ones")
assert [round(totals[n] / 1e9) for n in PUBLISHED_MOE] == [108, 401]
assert [round(actives[n] / 1e9) for n in PUBLISHED_MOE] == [17, 17]
assert 3.5 < totals["llama4-maverick"] / totals["llama4-scout"] < 4
assert abs(actives["llama4-maverick"] / actives["llama4-scout"] - 1) < 0.001

# %% [markdown]
# Maverick has almost four times Scout's parameters for the same compute per token: the
# 128 experts multiply what the model can *store*, not what each token *costs*.
#
# ## 2. The router
#
# A linear map `W_r` (D x E) scores every expert; Llama 4 keeps the top k = 1 raw logit
# and passes it through a **sigmoid**: no softmax over experts, no renormalisation. The
# other experts get score 0. `route` returns the kept scores and expert ids:

# %%
logits = torch.tensor([[2.0, -1.0, 0.5, 0.1],
                       [-0.3, -0.2, -2.0, -0.9],
                       [0.0, 4.0, 3.9, -1.0]])
scores, expert_index = route(logits, k=1)
print("expert per token:", expert_index.flatten().tolist())
print("score per token: ", [round(s, 3) for s in scores.flatten().tolist()])
print("softmax would give:", [round(p, 3) for p in
                              torch.softmax(logits, -1).max(-1).values.tolist()])
assert expert_index.flatten().tolist() == logits.argmax(-1).tolist()
assert torch.allclose(scores.flatten(), torch.sigmoid(logits.max(-1).values))
assert scores[1].item() < 0.5 < scores[2].item() and torch.softmax(logits[2], -1).max() < 0.55

# %% [markdown]
# The second token's best logit is negative, so its score is below 1/2: a sigmoid score
# says how much the router trusts its choice on an absolute scale, whatever the other
# experts' logits. The third token's two close logits would split a softmax almost in
# half; the sigmoid ignores the runner-up.
#
# The score multiplies the expert's **input**, not its output, and a shared expert sees
# every token:
#
# $$\mathrm{out}(x) = \mathrm{FFN}_{\text{shared}}(x) + \sum_{e\in \text{top-}k}\mathrm{FFN}_e(\sigma(l_e)\,x)$$
#
# ## 3. Dispatch: every expert's tokens in one batched matmul
#
# Looping over tokens in Python would be hopeless at 10^5 tokens per batch. `dispatch`
# instead gives each (token, expert) assignment a *slot* in its expert's queue (the count
# of earlier assignments to that expert, GShard's cumulative-sum trick), stacks the queues
# into one `(E, C, D)` tensor and runs all experts in three batched matmuls:

# %%
tokens = torch.randn(8, 6)
expert_index = torch.tensor([[1], [3], [1], [1], [0], [3], [1], [2]])
one_hot = torch.nn.functional.one_hot(expert_index.flatten(), 4)
slot = (one_hot.cumsum(0) * one_hot).sum(-1) - 1
print("expert:", expert_index.flatten().tolist())
print("slot:  ", slot.tolist(), f"-> queues of shape (E=4, C={int(one_hot.sum(0).max())}, D=6)")

w1, w3, w2 = torch.randn(4, 6, 10), torch.randn(4, 6, 10), torch.randn(4, 10, 6)
scores = torch.rand(8, 1)
fast = dispatch(tokens, scores, expert_index, w1, w2, w3)
slow = torch.stack([  # the same sum, one token at a time
    (torch.nn.functional.silu(s * x @ w1[e]) * (s * x @ w3[e])) @ w2[e]
    for x, s, e in zip(tokens, scores[:, 0], expert_index[:, 0])])
print("batched dispatch == token-by-token loop:", torch.allclose(fast, slow, atol=1e-5))
assert torch.allclose(fast, slow, atol=1e-5)

# %% [markdown]
# No token is dropped: C grows to the busiest expert's load (Switch Transformer instead
# fixes a capacity and drops the overflow). That makes balance matter for speed: one
# overloaded expert makes every queue long. Switch's auxiliary loss
# $E\sum_e f_e P_e$ ($f_e$ the share of tokens sent to expert $e$, $P_e$ its mean router
# probability) is 1 for a perfectly balanced router and E for a collapsed one:

# %%
balanced = torch.arange(64)[:, None] % 4
print("balanced :", load_balancing_loss(torch.zeros(64, 4), balanced).item())
collapsed_logits = torch.tensor([[9.0, 0.0, 0.0, 0.0]]).repeat(64, 1)
print("collapsed:", round(load_balancing_loss(collapsed_logits, torch.zeros(64, 1).long()).item(), 3))
assert load_balancing_loss(torch.zeros(64, 4), balanced).item() == 1.0
assert abs(load_balancing_loss(collapsed_logits, torch.zeros(64, 1).long()).item() - 4) < 0.01

# %% [markdown]
# ## 4. iRoPE: chunked attention, NoPE layers and temperature
#
# Scout's 10M-token context comes from changing attention per layer. Three of every four
# layers use RoPE but attend only **inside chunks** of 8192 tokens (query i sees key j iff
# `i // chunk == j // chunk and j <= i`), with q and k RMS-normalised after the rotation
# (QK-norm, Scout only). Every fourth layer uses **no position encoding** (NoPE) and sees
# the whole causal past: it is the only path for information older than the current chunk.
# Drawn with a chunk of 4 tokens:

# %%
t = 12
fig, ax = plt.subplots(1, 3, figsize=(12, 3.6))
ax[0].imshow(causal_mask(t, t, chunk=4), cmap="Blues")
ax[0].set_title("RoPE layer: chunked causal (chunk 4)")
ax[1].imshow(causal_mask(t, t), cmap="Blues")
ax[1].set_title("NoPE layer: full causal")
ax[1].set_xlabel("key position j")
ax[0].set_ylabel("query position i")
for name, row in zip(PUBLISHED_MOE, (0, 1)):
    c = CONFIGS[name]
    kinds = torch.tensor([[c.uses_rope(i) + 2 * c.is_moe_layer(i) for i in range(c.n_layers)]])
    ax[2].imshow(kinds, extent=(-0.5, c.n_layers - 0.5, row + 0.1, row + 0.9), cmap="tab10",
                 vmin=0, vmax=9, aspect="auto")
ax[2].set_ylim(0, 2)
ax[2].set_yticks([0.5, 1.5], PUBLISHED_MOE)
ax[2].set_xlabel("layer")
ax[2].set_title("blue NoPE+dense, orange RoPE+dense,\ngreen NoPE+MoE, red RoPE+MoE", fontsize=9)
plt.tight_layout()
plt.show()
print("Scout NoPE layers:", [i for i in range(48) if not CONFIGS["llama4-scout"].uses_rope(i)])
print("Maverick MoE layers:", [i for i in range(48) if CONFIGS["llama4-maverick"].is_moe_layer(i)])
for name in PUBLISHED_MOE:
    assert [i for i in range(48) if not CONFIGS[name].uses_rope(i)] == list(range(3, 48, 4))
assert [i for i in range(48) if CONFIGS["llama4-maverick"].is_moe_layer(i)] == list(range(1, 48, 2))
assert all(CONFIGS["llama4-scout"].is_moe_layer(i) for i in range(48))

# %% [markdown]
# Without positions, a NoPE layer's softmax over millions of keys flattens out. Llama 4
# sharpens it by scaling the queries with the absolute position p (transformers calls
# it *attention temperature tuning*):
# $q \leftarrow q\,(1 + 0.1\,\log(\lfloor (p+1)/8192 \rfloor + 1))$.

# %%
positions = torch.logspace(0, 7, 200).long()
scale = attention_temperature(positions, CONFIGS["llama4-scout"].floor_scale,
                              CONFIGS["llama4-scout"].attn_scale)
plt.figure(figsize=(6, 3))
plt.semilogx(positions, scale)
plt.xlabel("position p")
plt.ylabel("query scale")
plt.title("NoPE-layer temperature tuning (floor 8192, scale 0.1)")
plt.tight_layout()
plt.show()
for p in (8191, 100_000, 1_000_000, 10_000_000):
    got = attention_temperature(torch.tensor([p]), 8192, 0.1).item()
    print(f"position {p:>10,d}: queries scaled by {got:.3f}")
    assert abs(got - (1 + 0.1 * math.log((p + 1) // 8192 + 1))) < 1e-5     # the formula above

# %% [markdown]
# ### KV-cache memory
#
# Every layer stores a key and a value per KV head and token, so a token costs
# `2 * L * KV * head_dim * 2` bytes in bf16 (`kv_cache_bytes_per_token`). The library's
# `KVCache` keeps every position. A chunked layer, though, never looks further back than
# its own chunk, so a cache could keep at most 8192 positions for the 36 RoPE layers and
# the whole context only for the 12 NoPE layers:

# %%
print(f"{'model':16s} {'KV/token':>9s} {'full cache @ 1M':>16s} {'@ 10M':>10s} "
      f"{'chunk-aware @ 10M':>18s}")
for name in PUBLISHED_MOE + ["llama3.1-405b"]:
    c = CONFIGS[name]
    per_token = kv_cache_bytes_per_token(name)
    nope = sum(not c.uses_rope(i) for i in range(c.n_layers))
    window = min(10**7, c.attention_chunk_size or 10**7)  # positions a RoPE layer must keep
    kept = per_token // c.n_layers * (nope * 10**7 + (c.n_layers - nope) * window)
    print(f"{name:16s} {per_token / 1024:6.0f} KiB {per_token * 10**6 / 2**30:12.0f} GiB "
          f"{per_token * 10**7 / 2**30:6.0f} GiB {kept / 2**30:14.0f} GiB")

# %% [markdown]
# ## 5. Dense vs MoE with the same active parameters
#
# Two models on the course's stories (`minillama.recipes.stories_data`), identical except
# for the feed-forward layers. The dense one has one SwiGLU of width F; the MoE one has a
# shared expert of width F/2 plus E routed experts of width F/2, top-1, so a token runs
# through the same width F and both cost the same FLOPs per token, up to the router's
# $D \times E$ weights (under 1% more for the MoE model, printed below). The MoE model holds
# more parameters in total. A small load-balancing term (`router_aux_coef`) keeps the
# experts busy.

# %%
ROW = profiles.settings("ch06", PROFILE)            # this chapter's row of minillama/profiles.py
D, L, F_DENSE, E, SEQ = ROW.dim, ROW.n_layers, ROW.hidden_dim, ROW.n_experts, ROW.seq_len
tc = TrainConfig(steps=ROW.steps, batch_size=ROW.batch_size, seq_len=SEQ, lr=ROW.lr,
                 warmup=ROW.warmup, eval_every=ROW.eval_every, eval_batches=ROW.eval_batches,
                 log_every=ROW.log_every, progress=False)
data_size = dict(n_train=ROW.n_train, n_val=ROW.n_val)
tok, train_tokens, val_tokens = stories_data(**data_size)
common = dict(dim=D, n_layers=L, n_heads=4, n_kv_heads=2, vocab_size=tok.vocab_size,
              max_seq_len=SEQ)
dense_cfg = LlamaConfig(hidden_dim=F_DENSE, name="dense", **common)
moe_cfg = LlamaConfig(hidden_dim=F_DENSE, n_experts=E, expert_dim=F_DENSE // 2,
                      router_aux_coef=0.01, name="moe", **common)
print(f"{len(train_tokens):,} training tokens, {len(val_tokens):,} validation tokens")
flops = {}
for c in (dense_cfg, moe_cfg):
    active, total = count_parameters(c, active=True), count_parameters(c)
    # C = 6 N per token (forward + backward), N = active parameters doing matmuls (the
    # embedding lookup does none). Attention scores cost the same in both and are left out.
    flops[c.name] = 6 * (active - c.vocab_size * c.dim)
    print(f"{c.name:5s}: {total:8,d} parameters, {active:8,d} active, "
          f"{flops[c.name]:,} training FLOPs per token")
assert 0 < flops["moe"] / flops["dense"] - 1 < 0.01
assert count_parameters(moe_cfg) > count_parameters(dense_cfg)


# %% [markdown]
# Training with the library's loop (`minillama.train.train`). A forward hook on each MoE
# layer records, at every training step, how many tokens each expert received
# (`MoE.tokens_per_expert`).

# %%
def run(cfg):
    torch.manual_seed(0)
    model = Llama(cfg)
    loads = []
    for layer in model.layers:
        if layer.is_moe:
            layer.feed_forward.count_tokens = True       # keep tokens_per_expert
            layer.feed_forward.register_forward_hook(
                lambda m, i, o: loads.append(m.tokens_per_expert.cpu()) if m.training else None)
    t0 = time.perf_counter()
    log = train(model, train_tokens, tc, val_data=val_tokens, device=DEVICE)
    return model, log, loads, time.perf_counter() - t0


results = {c.name: run(c) for c in (dense_cfg, moe_cfg)}
print(f"{'model':5s} {'final val loss':>14s} {'train time':>10s}")
for name, (_, log, _, seconds) in results.items():
    print(f"{name:5s} {log[-1]['val_loss']:14.3f} {seconds:9.1f}s")

fig, ax = plt.subplots(1, 2, figsize=(12, 3.8))
for name, (_, log, _, _) in results.items():
    evals = [r for r in log if "val_loss" in r]
    ax[0].plot([r["tokens"] * flops[name] for r in evals], [r["val_loss"] for r in evals],
               "o-", label=name)
ax[0].set_xlabel("training FLOPs (6 N_active per token)")
ax[0].set_ylabel("validation loss")
ax[0].set_title("loss per training FLOP")
ax[0].legend()
loads = torch.stack(results["moe"][2][0::L])          # first MoE layer, one row per step
share = loads.float() / loads.sum(1, keepdim=True)
window = max(1, len(share) // 24)                     # average over windows of steps
smooth = share[: len(share) // window * window].view(-1, window, E).mean(1)
im = ax[1].imshow(smooth.T, aspect="auto", cmap="viridis", interpolation="nearest",
                  extent=(0, len(smooth) * window, E - 0.5, -0.5))
ax[1].set_yticks(range(E))
ax[1].set_xlabel("training step")
ax[1].set_ylabel("expert (layer 0)")
ax[1].set_title(f"share of tokens per expert (mean over {window} steps)")
fig.colorbar(im, ax=ax[1])
plt.tight_layout()
plt.show()
first, last = share[: len(share) // 5].mean(0), share[-len(share) // 5:].mean(0)
print("layer 0 expert shares, first fifth of training:", [round(s, 2) for s in first.tolist()])
print("layer 0 expert shares, last fifth of training: ", [round(s, 2) for s in last.tolist()])
gap = results["dense"][1][-1]["val_loss"] - results["moe"][1][-1]["val_loss"]
print(f"final validation loss, dense minus MoE: {gap:+.3f}")
assert 1 / (2 * E) < last.min() and last.max() < 2 / E       # within a factor 2 of 1/E
if PROFILE == "cpu":
    assert 0 < gap < 0.1        # the CPU profile's figures, quoted below

# %% [markdown]
# The table and the left plot give the comparison at equal compute; with the FLOPs per
# token equal, the curves differ only through what the extra (inactive) expert
# parameters add. In the CPU profile the MoE model ends slightly lower (0.995 against
# 1.020 for the dense one): one short run with one seed, so a hint rather than a
# measurement of what the extra parameters buy; the full profile trains for 1500 steps.
# On the right, the auxiliary loss keeps the router balanced: in the last fifth of
# training every expert of layer 0 takes between 21% and 30% of the tokens, within a
# factor of two of 1/E = 25% (the cell asserts that bound); none collapses.
#
# ## 6. What did the router learn?
#
# Route the validation text through the trained MoE model and count, for each expert of
# the first layer, which tokens it received:

# %%
model = results["moe"][0].eval()
routed = {}


def record(layer_id):
    def hook(module, inputs, output):
        x = inputs[0].flatten(0, 1)
        routed[layer_id] = route(module.router(x), module.k)[1][:, 0].cpu()
    return hook


hooks = [layer.feed_forward.register_forward_hook(record(i))
         for i, layer in enumerate(model.layers) if layer.is_moe]
text = val_tokens[: 32 * SEQ].view(-1, SEQ).to(DEVICE)
with torch.no_grad():
    model(text)
for h in hooks:
    h.remove()
ids = text.flatten().cpu()
for e in range(E):
    picked = ids[routed[0] == e]
    common_tokens = Counter(picked.tolist()).most_common(8)
    shown = ", ".join(f"{tok.decode([t])!r}x{n}" for t, n in common_tokens)
    print(f"expert {e}: {len(picked) / len(ids):5.1%} of tokens | {shown}")

# %% [markdown]
# Each line shows an expert's share of the text and its most frequent tokens. Nothing
# tells the router what an expert is for: it learns the split from the loss alone. In
# large models experts were found to specialise on shallow token groups (punctuation,
# proper nouns, numbers...) rather than on topics (ST-MoE, Zoph et al., arXiv 2202.08906);
# compare with the lists above, which come from a far smaller and shorter run.

# %% [markdown]
# ## Exercises
#
# `exercises/ch06_moe.py` asks for the top-1 sigmoid router (`route_top1_sigmoid`) and
# the expert dispatch (`dispatch_top1`, without a Python loop over tokens). The graders
# compare them with `minillama.moe.route` and `minillama.moe.dispatch`, and rebuild a MoE
# layer from your two functions. Set `IMPL = "exercises"` to grade your work.

# %%
IMPL = "solutions"
result = course.grade("ch06", impl=IMPL)
print(f"notebook wall time so far: {time.perf_counter() - T0:.0f} s")
