# %% [markdown]
# # Chapter 3 — Real checkpoints and parity
#
# A from-scratch model is only trustworthy once it reproduces someone else's numbers.
# This chapter loads a real pretrained checkpoint, converts it between the four formats
# LLaMA weights circulate in, and checks our logits against Hugging Face `transformers`.
#
# | format | on disk | reader/writer |
# |---|---|---|
# | llama2.c legacy `.bin` | 7 int32 header + float32 tensors grouped over layers | `minillama/checkpoints/llama2c.py` |
# | Meta | `params.json` + `consolidated.NN.pth` (one shard per GPU) | `minillama/checkpoints/meta.py` |
# | Hugging Face | `config.json` + `model.safetensors`, q/k rows permuted | `minillama/checkpoints/hf.py` |
# | native (ours) | `config.json` + `model.safetensors`, Meta names | `minillama/checkpoints/native.py` |
#
# `minillama.load(path)` detects the format; `minillama.save(model, path, format=...)` writes
# any of them, atomically (a crash mid-save never leaves a broken checkpoint behind).

# %%
import struct
import tempfile
from pathlib import Path

import torch

import minillama
from minillama import Llama, course
from minillama.checkpoints.hf import meta_to_hf_permute

PROFILE = course.setup().profile
work = Path(tempfile.mkdtemp(prefix="ch03-"))
print(f"profile={PROFILE}, scratch directory {work}")

# %% [markdown]
# ## 1. A real llama2.c checkpoint
#
# `stories260K.bin` is a 260K-parameter model that Andrej Karpathy trained with llama2.c
# on the TinyStories dataset (MIT licence); the course keeps a copy in `../shared/reference/`.
# If it is not there, the notebook writes a llama2.c file of its own so that everything
# below still runs. First, the header read by hand: seven little-endian int32.

# %%
REAL = Path("../../shared/reference/stories260K.bin")
if not REAL.exists():
    REAL = Path("../shared/reference/stories260K.bin")
if REAL.exists():
    path = REAL
    print("using the real checkpoint", path)
else:
    torch.manual_seed(0)
    cfg = minillama.LlamaConfig(dim=64, hidden_dim=172, n_layers=5, n_heads=8, n_kv_heads=4,
                                vocab_size=512, max_seq_len=512, tie_embeddings=True)
    path = minillama.save(Llama(cfg), work / "own.bin", format="llama2c")
    print("no shared/ folder: using a randomly initialised llama2.c file", path)

raw = path.read_bytes()
header = struct.unpack("<7i", raw[:28])
print(dict(zip(["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size",
                "seq_len"], header)))
print(f"file size {len(raw):,} bytes = 28-byte header + {(len(raw) - 28) // 4:,} float32")

# %%
model = minillama.load(path)
n_params = sum(p.numel() for p in model.parameters())
print(model.cfg)
print(f"{n_params:,} parameters (tied head: {model.output.weight is model.tok_embeddings.weight})")

# %% [markdown]
# Greedy decoding from the BOS token (id 1). We do not ship its SentencePiece vocabulary,
# so we look at token ids: what matters here is that decoding is deterministic and that
# the KV cache changes nothing.

# %%
bos = torch.tensor([1])
with_cache = model.generate(bos, 40)
without = model.generate(bos, 40, use_cache=False)
print(with_cache.tolist())
print("identical with and without the KV cache:", torch.equal(with_cache, without))
assert torch.equal(with_cache, without)
tokens = torch.cat([bos, with_cache])[None]
_, loss = model(tokens[:, :-1], tokens[:, 1:])
print(f"the model's loss on its own greedy text: {loss.item():.3f} nats/token "
      f"(uniform guessing over {model.cfg.vocab_size} tokens: {torch.log(torch.tensor(512.)):.3f})")

# %% [markdown]
# ## 2. Parity with transformers
#
# Export to the Hugging Face format, load it with `transformers.LlamaForCausalLM`, and
# compare logits on the same tokens. Both run in float32, which keeps about 7 significant
# digits (machine epsilon $1.2\cdot10^{-7}$). The two implementations do the same
# arithmetic in a different order (RoPE, for one, is a complex product on interleaved
# pairs in ours and `rotate_half` on permuted rows in theirs), so their rounding errors
# differ, and they add up through the 5 layers. As a yardstick the cell also runs our own
# model in float64: the distance of our float32 logits from those is float32's rounding
# error on this model.

# %%
from transformers import LlamaForCausalLM  # noqa: E402  (test-only reference)

hf_dir = minillama.save(model, work / "hf", format="hf")
print(sorted(p.name for p in hf_dir.iterdir()))
theirs = LlamaForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).eval()
x = torch.randint(0, model.cfg.vocab_size, (2, 64), generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    ours_logits = model(x)
    hf_logits = theirs(x).logits
    exact = minillama.load(path).double()(x)
diff = (ours_logits - hf_logits).abs().max().item()
own = (ours_logits.double() - exact).abs().max().item()
scale = ours_logits.abs().max().item()
print(f"max |ours - transformers|          = {diff:.2e}   (largest |logit| {scale:.1f}: "
      f"{diff / scale:.1e} of it)")
print(f"max |ours float32 - ours float64|  = {own:.2e}")
assert diff < 1e-4 and diff < 3 * own
back = minillama.load(hf_dir)
same = torch.equal(back(x), ours_logits)
print("HF -> ours round trip identical logits:", same)
assert same

# %% [markdown]
# The gap to transformers is a few parts per million of the largest logit, and of the
# same size as our own float32 error (the cell asserts: below $10^{-4}$, and less than
# three times our own error): rounding, not a difference between the models. A real
# mistake in the conversion shows up as errors of order one, as the next section shows.

# %% [markdown]
# ## 3. Why HF checkpoints permute wq and wk
#
# Meta's code rotates adjacent pairs `(0,1), (2,3), ...`; HF's `rotate_half` rotates
# `(i, i + d/2)` (chapter 1). The converter reorders the rows of wq and wk in each head
# so both layouts compute the same scores. Skip the permutation and the model breaks:

# %%
w = torch.arange(8.0)[:, None]      # one head of 8 rows, labelled 0..7
print("rows after meta_to_hf_permute:", meta_to_hf_permute(w, n_heads=1).flatten().tolist())

broken = minillama.load(hf_dir)
sd = minillama.load(hf_dir).state_dict()
for i in range(broken.cfg.n_layers):        # pretend we forgot to un-permute
    sd[f"layers.{i}.attention.wq.weight"] = meta_to_hf_permute(
        sd[f"layers.{i}.attention.wq.weight"], broken.cfg.n_heads)
    sd[f"layers.{i}.attention.wk.weight"] = meta_to_hf_permute(
        sd[f"layers.{i}.attention.wk.weight"], broken.cfg.n_kv_heads)
broken.load_state_dict(sd)
with torch.no_grad():
    broken_error = (broken(x) - hf_logits).abs().max().item()
print(f"max logit error without the permutation: {broken_error:.2f}")
assert broken_error > 1

# %% [markdown]
# ## 4. Meta's sharded format
#
# Meta's 13B and larger checkpoints come as one file per GPU of model parallelism: `wo`
# and `w2` are split along their input dimension, the other matrices along their output,
# norms are copied. Saving in two shards and loading merges them back exactly:

# %%
meta_dir = minillama.save(model, work / "meta", format="meta", shards=2)
print(sorted(p.name for p in meta_dir.iterdir()))
shard0 = torch.load(meta_dir / "consolidated.00.pth", weights_only=True)
for name in ["layers.0.attention.wq.weight", "layers.0.attention.wo.weight",
             "layers.0.attention_norm.weight"]:
    print(f"{name:32s} full {tuple(model.state_dict()[name].shape)} -> shard {tuple(shard0[name].shape)}")
merged = minillama.load(meta_dir)
same = torch.equal(merged(x), ours_logits)
print("merged shards give identical logits:", same)
assert same and shard0["layers.0.attention.wq.weight"].shape[0] * 2 == model.cfg.dim

# %% [markdown]
# ## 5. Broken files get clear errors
#
# A checkpoint cut short (an interrupted download, a full disk) is refused with a message
# that says what was expected, instead of loading garbage:

# %%
cut = work / "truncated.bin"
cut.write_bytes(raw[: len(raw) // 2])
try:
    minillama.load(cut)
    raise AssertionError("a truncated file was loaded")
except ValueError as e:
    print("ValueError:", e)

# %% [markdown]
# ## Exercises
#
# `exercises/ch03_checkpoints.py`: write the q/k permutation, its inverse, and the
# llama2.c header reader.

# %%
IMPL = "solutions"
result = course.grade("ch03", impl=IMPL)
