# %% [markdown]
# # Chapter 21 — Capstone: a downloaded Llama, end to end
#
# Everything the course built, on a checkpoint as it is published: load a Hugging Face
# snapshot (sharded safetensors, `config.json`, `generation_config.json`, the tokenizer
# file) into our from-scratch model, check its logits against transformers, chat with it
# through its template, fine-tune it with our QLoRA (NF4 base, chapter 12; bitsandbytes'
# 4-bit matmul on CUDA) on instructions from the course's generator, evaluate before and
# after, merge, and export to the HF and peft formats that transformers and peft load back.
#
# | step | library |
# |---|---|
# | `minillama.load`: format detection, memory check, per-shard conversion | `checkpoints/`, `checkpoints/memory.py` |
# | `load_tokenizer`, chat templates, end-of-turn ids | `tokenizer_files.py`, `chat.py` |
# | streaming generation | `generate.py` (`stream`) |
# | QLoRA, merge, peft export | `peft/`, `quant/` |
# | instruction data, response-only fine-tuning | `data/instructions.py`, `finetune.py` |
#
# **Your own checkpoint.** Point `MINILLAMA_CHECKPOINT` at a downloaded snapshot, e.g.
# `huggingface-cli download meta-llama/Llama-3.2-1B-Instruct --local-dir ~/models/l32`
# (the README lists others). Without it (CI, or no download) the same cells run on a
# small stand-in that this notebook writes in the same layout: transformers'
# `save_pretrained` with sharding, in bfloat16, a `generation_config.json`, and a Llama 3
# tokenizer file (tiktoken format) trained here on the instruction data. It is random, so
# its answers are noise until fine-tuned; the code path is the real one.

# %%
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

import minillama
from minillama import course
from minillama import peft as P
from minillama.chat import apply_chat_template, detect_template, end_of_turn_id, stop_ids
from minillama.chat_cli import TextStream
from minillama.checkpoints import NotEnoughMemory
from minillama.checkpoints.hf import eos_ids
from minillama.data.instructions import instruction_data
from minillama.finetune import finetune, greedy_score
from minillama.generate import stream
from minillama.tokenizer import Tokenizer
from minillama.tokenizer_files import load_tokenizer

PROFILE, DEVICE = course.setup()
T0 = time.perf_counter()
OUT = os.environ.get("MINILLAMA_CH21_OUT")    # where the exports go (unset: a temporary
WORK = Path(OUT).expanduser() if OUT else Path(tempfile.mkdtemp(prefix="ch21-"))  # folder)
CKPT = os.environ.get("MINILLAMA_CHECKPOINT")
print(f"profile {PROFILE}, device {DEVICE}, checkpoint: {CKPT or 'the stand-in'}")

# %% [markdown]
# ## 1. The checkpoint
#
# The stand-in is a Llama 3.2-shaped model (grouped-query attention, Llama 3.1's RoPE
# scaling, tied embeddings) with a Llama 3 vocabulary file: a byte-level BPE trained on the
# instruction texts, written as tiktoken lines `base64(token) rank`, with Meta's 256
# special tokens after the ranks. `save_pretrained(max_shard_size=...)` cuts the weights
# into several files and writes the index that maps each tensor to its file.

# %%
RECORDS = instruction_data(560, seed=21)
TRAIN, TEST = RECORDS[:480], RECORDS[480:]


def user_text(r: dict) -> str:
    """The instruction (and its input) as one user message."""
    return r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")


def write_standin(folder: Path) -> Path:
    import base64

    import transformers
    texts = [user_text(r) + " " + r["output"] for r in RECORDS]
    bpe = Tokenizer.train(texts, vocab_size=259 + 400)
    ranks = {bytes([b]): b for b in range(256)}
    for i in range(259, bpe.vocab_size):
        ranks.setdefault(bpe.id_to_bytes(i), len(ranks))
    (folder / "original").mkdir(parents=True)
    (folder / "original" / "tokenizer.model").write_bytes(b"".join(
        base64.b64encode(t) + b" %d\n" % r for t, r in sorted(ranks.items(), key=lambda x: x[1])))
    tok = load_tokenizer(folder)
    cfg = transformers.LlamaConfig(
        vocab_size=tok.vocab_size, hidden_size=96, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=True, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64})
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg)
    hf.generation_config = transformers.GenerationConfig(
        bos_token_id=tok.bos_id, eos_token_id=[tok.eos_id, tok.special_ids["<|eot_id|>"]])
    hf.to(torch.bfloat16).save_pretrained(folder, max_shard_size="100KB")
    return folder


if CKPT is None:
    CKPT = write_standin(WORK / "standin")
CKPT = Path(CKPT).expanduser()
print(sorted(p.name for p in CKPT.iterdir()))

# %% [markdown]
# ## 2. Loading: the memory first, then shard by shard
#
# Before a tensor is read, `minillama.load` adds up the shapes in the safetensors headers
# and prints parameters x bytes per value at the requested dtype, next to what the device
# has free; a model that would not fit is refused with that arithmetic. Each tensor is then
# converted to the target dtype and device as it is read, shard by shard, so no second
# whole copy of the model is ever held (`tests/test_load_memory.py` measures the peak).

# %%
tok = load_tokenizer(CKPT)
model = minillama.load(CKPT, dtype=torch.float32, device=DEVICE)
n_params = sum(p.numel() for p in model.parameters())
print(f"{n_params:,} parameters; tokenizer {tok!r}; template {detect_template(tok)}; "
      f"eos ids {eos_ids(CKPT)}")
try:
    minillama.load(CKPT, max_bytes=n_params * 4 - 1)
    refused = False
except NotEnoughMemory as e:
    refused = True
    print("refused:", e)
assert refused

# %% [markdown]
# ## 3. Same logits as transformers
#
# The check of chapter 3, now on the snapshot as published: transformers reads the same
# files, and on the same prompt both models must agree to within float32 rounding (we
# allow 1e-4 times the largest logit).

# %%
import transformers  # noqa: E402

prompt = tok.encode("Write the word cat in capital letters.", bos=True)
ref = transformers.AutoModelForCausalLM.from_pretrained(CKPT, dtype=torch.float32).eval()
x = torch.tensor([prompt])
with torch.no_grad():
    ours_logits = model(x.to(DEVICE)).float().cpu()
    ref_logits = ref(x).logits
diff = (ours_logits - ref_logits).abs().max().item()
scale = ref_logits.abs().max().item()
print(f"max |logit difference| {diff:.2e} (largest logit {scale:.2f}) over {len(prompt)} tokens")
assert diff <= 1e-4 * max(1.0, scale)
del ref

# %% [markdown]
# ## 4. Chatting through the template
#
# A chat model answers in the layout it was tuned on. The Llama 3 template wraps each
# message in header tokens and ends it with `<|eot_id|>`; the assistant's open header is
# the generation prompt, and generation stops at the end-of-turn id. Tokens are printed as
# they are sampled (`generate.stream`); a piece is printed once the ids so far decode to
# whole text (`chat_cli.TextStream`: decoding one token at a time would drop
# SentencePiece's spaces and split multi-byte characters).

# %%
STOPS = sorted(set(stop_ids(tok)) | set(eos_ids(CKPT)))
EOT = end_of_turn_id(tok)


def chat(model, question: str, max_new_tokens: int = 24) -> tuple[str, bool]:
    ids = apply_chat_template(tok, [{"role": "user", "content": question}])
    out, shown = [], TextStream(tok, sys.stdout)   # prints each piece once it is whole text
    for t in stream(model, ids, max_new_tokens, stop_tokens=STOPS):
        out.append(t)
        if t not in STOPS:
            shown.add(t)
    print()
    return shown.text(), bool(out) and out[-1] in STOPS


ids = apply_chat_template(tok, [{"role": "user", "content": "hi"}])
print(tok.decode(ids))
assert ids[0] == tok.bos_id and ids[-1] != EOT        # ends on the open assistant header
answer, stopped = chat(model, user_text(TEST[0]))
print(f"stopped at end of turn: {stopped}")

# %% [markdown]
# ## 5. QLoRA on the course's instructions
#
# The fine-tuning data are the instruction generator's records (`data/instructions.py`),
# each asked as a user turn and answered in an assistant turn closed by `<|eot_id|>`; the
# loss is on the answer only (chapter 15). QLoRA freezes every linear of the blocks in NF4
# and trains rank-8 LoRA on all seven (chapter 12); on CUDA the 4-bit matmul goes through
# bitsandbytes. We score the held-out records before and after: the response loss and
# greedy exact match.

# %%
class ChatFormat:
    """What ``finetune``/``greedy_score`` call, in the chat template: a prompt becomes a
    user turn plus the assistant header; an answer ends with the end-of-turn id."""

    def __init__(self, tok):
        self.tok, self.eos_id, self.pad_id = tok, EOT, EOT

    def encode(self, text, bos=False):
        if bos:                      # the prompt
            return apply_chat_template(self.tok, [{"role": "user", "content": text}])
        return self.tok.encode(text.strip())

    def decode(self, ids, skip_special=False):
        return self.tok.decode(ids, skip_special=skip_special)


fmt = ChatFormat(tok)
STEPS = 60 if PROFILE == "cpu" else 300
before = greedy_score(model, fmt, TEST, device=DEVICE, template=user_text)
qlora = P.apply(copy.deepcopy(model), "qlora", r=8, alpha=16.0, dropout=0.0)
print(f"trainable {P.trainable_parameters(qlora):,} of {n_params:,}")
t = time.perf_counter()
log = finetune(qlora, fmt, TRAIN, steps=STEPS, lr=3e-3, batch_size=16, warmup=5,
               device=DEVICE, log_every=10, template=user_text)
after = greedy_score(qlora, fmt, TEST, device=DEVICE, template=user_text)
print(f"{STEPS} steps in {time.perf_counter() - t:.1f} s")
for name, s in (("before", before), ("after", after)):
    print(f"{name:6s} held-out response loss {s['loss']:.3f}, exact match {s['exact_match']:.1%}")
assert after["loss"] < before["loss"]

# %% [markdown]
# The held-out loss falls: the adapters learned something of the answers' format and
# vocabulary. A random stand-in has little more to offer in a minute of training; a real
# instruction-tuned checkpoint starts this cell from a model that already answers.
#
# ## 6. Merge, and export for transformers and peft
#
# QLoRA's update cannot go back into 4-bit weights, so `merge` writes full-precision
# linears holding dequant(W0) + s B A. Two exports:
#
# * the merged model as an HF snapshot (`minillama.save(..., format="hf")`), which
#   transformers loads on its own;
# * the adapter alone in peft's format, on the base it was trained on: the dequantised NF4
#   weights, exported as an HF snapshot too; peft puts the adapter on it.
#
# Both must give our QLoRA model's logits.

# %%
import peft  # noqa: E402

qlora.eval()
with torch.no_grad():
    q_logits = qlora(x.to(DEVICE)).float().cpu()
merged = P.merge(copy.deepcopy(qlora)).cpu()
minillama.save(merged, WORK / "merged-hf", format="hf")
base = copy.deepcopy(qlora)
for m in base.modules():
    if hasattr(m, "lora_B"):
        m.lora_B.data.zero_()                  # LoRA off: merge leaves dequant(W0)
base = P.merge(base).cpu()
minillama.save(base, WORK / "base-nf4-hf", format="hf")
P.save(qlora, WORK / "adapter-peft", format="peft",
       base_model_name_or_path=str(WORK / "base-nf4-hf"))

hf_merged = transformers.AutoModelForCausalLM.from_pretrained(WORK / "merged-hf",
                                                              dtype=torch.float32).eval()
hf_base = transformers.AutoModelForCausalLM.from_pretrained(WORK / "base-nf4-hf",
                                                            dtype=torch.float32)
with_adapter = peft.PeftModel.from_pretrained(hf_base, WORK / "adapter-peft").eval()
with torch.no_grad():
    d_merged = (hf_merged(x).logits - q_logits).abs().max().item()
    d_peft = (with_adapter(x).logits - q_logits).abs().max().item()
print(f"transformers on the merged export: max |dlogit| {d_merged:.2e}")
print(f"peft adapter on the NF4 base:      max |dlogit| {d_peft:.2e}")
assert d_merged <= 1e-4 * max(1.0, scale) and d_peft <= 1e-4 * max(1.0, scale)

# %% [markdown]
# Both exports reproduce the fine-tuned model. What was checked, and against what:
# loading against transformers' own reading of the snapshot (section 3), the memory
# refusal (section 2), and the merged and adapter exports against transformers and peft
# (this section). The tokenizer readers and chat templates have their own parity tests
# (`tests/test_tokenizer_formats.py`, `tests/test_chat.py`), and the snapshot layouts of
# Llama 1 to 3.2 and Llama 4 theirs (`tests/test_snapshots.py`).
#
# The exports are written to `MINILLAMA_CH21_OUT` when it is set (keep them: a real
# checkpoint's merged copy is as large as the model); otherwise to a temporary folder that
# the next cell removes with the stand-in.

# %%
import shutil  # noqa: E402

if OUT is None:
    shutil.rmtree(WORK)
    print(f"removed {WORK} (stand-in and exports of this run)")
else:
    print(f"exports kept in {WORK}: merged-hf/, base-nf4-hf/, adapter-peft/")
elapsed = time.perf_counter() - T0
print(f"chapter ran in {elapsed:.0f} s")

# %% [markdown]
# ## Exercises
#
# `exercises/ch21_capstone.py`: the two pieces of Llama 3's tokenizer that fit in a few
# lines. `bpe_by_rank` encodes one pre-tokenized chunk by merging the lowest-ranked
# adjacent pair until none is left (graded against the `tiktoken` library on the same
# ranks); `llama3_prompt` writes the Llama 3 chat text of a list of messages (graded
# against the published Jinja chat template). Grade your work with the cell below (set
# `IMPL = "exercises"`); as shipped it grades the reference solutions.

# %%
IMPL = "solutions"
result = course.grade("ch21", impl=IMPL)
