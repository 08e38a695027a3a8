# %% [markdown]
# # Chapter 4 — Tokenisation
#
# A language model never sees text: it sees a sequence of integers, one per *token*, and
# its embedding table and output head have one row per possible token (chapter 2).
# Choosing the tokens is the first design decision of every LLaMA:
#
# | idea | where | paper |
# |---|---|---|
# | byte-pair encoding: merge the most frequent adjacent pair, again and again | `minillama/tokenizer.py` | Sennrich, Haddow & Birch, arXiv 1508.07909 |
# | run BPE on UTF-8 *bytes*, so every string has a spelling | `minillama/tokenizer.py` | GPT-2 (Radford et al., 2019) |
# | SentencePiece BPE with byte fallback, 32K pieces (LLaMA 1 and 2) | `minillama/tokenizer_llama2c.py` | arXiv 1808.06226, 2302.13971, 2307.09288 |
# | a 128K vocabulary built on tiktoken's BPE (Llama 3) | — | arXiv 2407.21783 |
#
# We train a byte-level BPE on the course's story corpus (`minillama.data`), look at what
# it learns, measure how well it compresses text it was and was not trained on, and read
# the llama2.c `tokenizer.bin` format that carries LLaMA's SentencePiece vocabulary.
#
# **Profiles.** `MINILLAMA_PROFILE=cpu` (the default without a GPU) trains on a small
# corpus and runs in well under a minute; `full` (the default on CUDA) uses more stories
# and a larger vocabulary. Tokenisation itself runs on the CPU in both.

# %%
import inspect
import os
import random
import struct
import tempfile
import time

import matplotlib.pyplot as plt
import torch

import minillama.tokenizer
from minillama import CONFIGS, count_parameters, course, profiles
from minillama.data import (
    expression_problems,
    format_example,
    format_prompt,
    instruction_data,
    story_splits,
)
from minillama.tokenizer import ByteTokenizer, Tokenizer
from minillama.tokenizer_llama2c import Llama2cTokenizer

PROFILE = course.setup().profile
SIZES = profiles.settings("ch04", PROFILE)      # this chapter's row of minillama/profiles.py
N_TRAIN, N_VAL, MAX_VOCAB = SIZES.n_train, SIZES.n_val, SIZES.max_vocab
T_START = time.perf_counter()
print(f"profile={PROFILE}: {N_TRAIN} training stories, vocabularies up to {MAX_VOCAB}")

# %% [markdown]
# ## 1. Why bytes
#
# A word-level vocabulary has no id for a word it never saw; a character-level one would
# need a row for every Unicode character, most of them never used. UTF-8 spells every
# character with one to four bytes, so **256 byte values spell any string**. A byte
# tokenizer (`ByteTokenizer`: no merges, just the bytes and the special tokens) has no
# unknown token, and `decode(encode(s)) == s` for every string, emoji and CJK included:

# %%
byte_tok = ByteTokenizer()
samples = ["Hello", "café", "日本語", "👋🏽 hi", "Ünïcödé ✓"]
for s in samples:
    ids = byte_tok.encode(s)
    assert byte_tok.decode(ids) == s
    per_char = [len(ch.encode("utf-8")) for ch in s]
    print(f"{s!r:13} {len(s):2d} characters -> {len(ids):2d} bytes {per_char} -> ids {ids}")
    assert len(ids) == sum(per_char)
print("vocabulary:", byte_tok)
assert [len(ch.encode("utf-8")) for ch in "日本語👋🏽"] == [3, 3, 3, 4, 4]

# %% [markdown]
# The price is length: the list after "bytes" gives each character's UTF-8 length, so
# every CJK character above costs three tokens, and the waving hand with a skin tone is
# two characters of four bytes each. Learning merges (next sections) buys the length back
# for the kind of text the tokenizer is trained on.
#
# Bytes also explain a detail of streaming generation: a token may end in the middle of a
# character. Decoding such a cut sequence gives the replacement character U+FFFD, so a
# chat interface must hold back the bytes of an incomplete character until the rest
# arrives:

# %%
ids = byte_tok.encode("日本")
for n in range(1, len(ids) + 1):
    print(f"first {n} tokens -> {byte_tok.decode(ids[:n])!r}")
assert "\ufffd" in byte_tok.decode(ids[:4]) and byte_tok.decode(ids) == "日本"

# %% [markdown]
# ## 2. Byte-pair encoding by hand
#
# BPE (arXiv 1508.07909) starts from the single symbols and repeats one step: count every
# adjacent pair, weighted by how often its word occurs, and merge the most frequent pair
#
# $$(a, b) = \arg\max_{(x, y)} \mathrm{count}(x\,y) \qquad\text{then every } a\,b \text{ becomes the new symbol } ab$$
#
# until the vocabulary has the wanted size. `Tokenizer.train` first cuts the text into
# chunks (a word with its leading space, one digit, a punctuation run, whitespace), so a
# merge never crosses a word boundary. Here is the paper's own toy corpus — "low" 5 times,
# "lower" 2, "newest" 6, "widest" 3 — with the merges in the order they are learned:

# %%
toy = " ".join(["low"] * 5 + ["lower"] * 2 + ["newest"] * 6 + ["widest"] * 3)
toy_tok = Tokenizer.train(toy, vocab_size=ByteTokenizer().vocab_size + 10)


def show(tok, i):
    """Token ``i`` as readable text (a space shown as '␣')."""
    return tok.id_to_bytes(i).decode("utf-8", errors="replace").replace(" ", "␣")


first_new = toy_tok.vocab_size - len(toy_tok.merges)
for k, (a, b) in enumerate(toy_tok.merges):
    print(f"merge {k + 1:2d}: {show(toy_tok, a):>6} + {show(toy_tok, b):<6} -> "
          f"id {first_new + k}  {show(toy_tok, first_new + k)!r}")
print("encode(' lowest') ->", [show(toy_tok, i) for i in toy_tok.encode(" lowest")])
assert [show(toy_tok, i) for i in toy_tok.encode(" lowest")] == ["␣low", "est"]

# %% [markdown]
# The unseen word "lowest" is spelled with pieces of the words that were seen. The ids
# follow the layout in `tokenizer.py`'s docstring: the special tokens first (`<pad>`,
# `<bos>`, `<eos>`), then the 256 bytes, then the merges in the order they were learned.
# A merge's id is also its rank: encoding applies the lowest-id merge present, again and
# again, exactly replaying training.
#
# ## 3. A tokenizer for the stories
#
# Now the real thing: the procedural children's stories of `minillama.data.stories`
# (train and validation stories come from disjoint random streams).

# %%
train_stories, val_stories = story_splits(N_TRAIN, N_VAL, seed=0)
t0 = time.perf_counter()
tok = Tokenizer.train(train_stories, vocab_size=MAX_VOCAB)
print(f"trained on {sum(len(s) for s in train_stories):,} characters in "
      f"{time.perf_counter() - t0:.2f} s: {tok}")
if tok.vocab_size < MAX_VOCAB:
    print(f"asked for {MAX_VOCAB} tokens, got {tok.vocab_size}: the corpus ran out of pairs "
          f"(every chunk of the training text is now a single token)")
first_new = tok.vocab_size - len(tok.merges)
print("first 24 merges:", " ".join(show(tok, first_new + k) for k in range(24)))
longest = sorted(range(tok.vocab_size), key=lambda i: -len(tok.id_to_bytes(i)))[:16]
print("longest tokens: ", " ".join(show(tok, i) for i in longest))
first_24 = [show(tok, first_new + k) for k in range(24)]
assert "␣the" in first_24 and "␣was" in first_24
assert all(show(tok, i).startswith("␣") and show(tok, i)[1:].isalpha() for i in longest)

# %% [markdown]
# The first merges glue a space to a frequent first letter and build the commonest words
# ("␣the", "␣was" among the first two dozen above); the longest tokens are whole words
# with their leading space. A sentence, with the token boundaries marked by `|`:

# %%
sentence = val_stories[0].split(". ")[0] + "."
ids = tok.encode(sentence)
print("|".join(show(tok, i) for i in ids))
print(f"{len(sentence.encode('utf-8'))} bytes -> {len(ids)} tokens")

# %% [markdown]
# ## 4. Compression against vocabulary size
#
# The *compression ratio* — UTF-8 bytes per token — says how much text one token carries
# (1.0 for raw bytes). It matters twice: every token costs a forward pass, and the
# context window holds a fixed number of tokens, so better compression means cheaper
# training and more text in context.
#
# BPE is greedy, so the first $k$ merges of a large vocabulary are exactly the merges of
# a $k$-merge training on the same text. One training therefore gives the whole curve:
# `Tokenizer(tok.merges[:k])` *is* the smaller tokenizer. A check:

# %%
small_vocab = 512
small = Tokenizer.train(train_stories, vocab_size=small_vocab)
n_small = len(small.merges)
print(f"train(vocab={small_vocab}).merges == big.merges[:{n_small}]:",
      small.merges == tok.merges[:n_small])
assert small.merges == tok.merges[:n_small]

# %% [markdown]
# We measure held-out stories (in domain) against text the tokenizer never saw: the
# Alpaca-style prompts of `minillama.data.instructions`, arithmetic worked in steps
# (`minillama.data.arithmetic`), and Python — the source of `minillama/tokenizer.py`.

# %%
rng = random.Random(0)
records = instruction_data(150, seed=1)
texts = {
    "stories (held out)": val_stories,
    "instructions": [format_prompt(r) + r["output"] for r in records],
    "arithmetic": [format_example(r, "cot") for r in expression_problems(300, seed=1)],
    "Python code": [inspect.getsource(minillama.tokenizer)],
}
for name, t in texts.items():
    print(f"{name:20s} {sum(len(x.encode('utf-8')) for x in t):8,} bytes, e.g. "
          f"{rng.choice(t)[:60]!r}")

base = first_new                                 # specials + bytes: the vocabulary with no merges
sizes = sorted({base, base + 1, *range(base, tok.vocab_size, 64), tok.vocab_size})
t0 = time.perf_counter()
ratios = {name: [] for name in texts}
for v in sizes:
    sub = Tokenizer(tok.merges[:v - base])
    for name, t in texts.items():
        ratios[name].append(sub.compression_ratio(t))
print(f"{len(sizes)} vocabulary sizes x {len(texts)} texts encoded in "
      f"{time.perf_counter() - t0:.1f} s")

fig, ax = plt.subplots(figsize=(7.5, 4))
for name, r in ratios.items():
    ax.plot(sizes, r, "o-", ms=3, label=name)
ax.set_xlabel("vocabulary size (3 specials + 256 bytes + merges)")
ax.set_ylabel("UTF-8 bytes per token")
ax.set_title("BPE trained on stories: compression in and out of domain")
ax.legend()
ax.grid(alpha=0.3)
plt.show()
print(f"{'vocabulary':>10}" + "".join(f"{name:>21}" for name in texts))
rows_shown = [0, len(sizes) // 4, len(sizes) // 2, len(sizes) - 1]
for i in rows_shown:
    print(f"{sizes[i]:10d}" + "".join(f"{ratios[name][i]:21.2f}" for name in texts))
final = {name: r[-1] for name, r in ratios.items()}
assert final["stories (held out)"] > 1.5 * max(v for k, v in final.items() if k != "stories (held out)")
assert max(ratios["arithmetic"]) < 1.01                      # digits never merge
gain = [(ratios["stories (held out)"][j] - ratios["stories (held out)"][i]) / (sizes[j] - sizes[i])
        for i, j in zip(rows_shown, rows_shown[1:])]
print("stories: bytes per token gained per merge, between the rows above:",
      [f"{g:.4f}" for g in gain])
assert gain[0] > gain[1] > gain[2]                           # each merge saves less

# %% [markdown]
# Read the plot and the table above together:
#
# * **In domain** the ratio climbs fastest, to about 4 bytes per token at the largest
#   vocabulary: the stories use a small vocabulary of words, and each merge turns a
#   frequent word or word piece into fewer tokens. Merges come in order of frequency, so
#   later ones save less (the last printed line: the gain per merge falls from one row
#   of the table to the next); once every word of the training text is a single token
#   the trainer has no pair left and stops early.
# * **Out of domain** the gains are much smaller: at the largest vocabulary the
#   instructions reach 1.60 bytes per token and Python code 1.35, against 3.99 for the
#   stories. The instruction prompts share common English words with the stories but
#   hold many the stories never use; Python's identifiers and punctuation runs were never
#   seen; and arithmetic stays at one byte per token: the pre-split gives every digit its
#   own chunk (as LLaMA's tokenizer does), so no merge can join digits, and the markers
#   around them ("Q:", "####") never occur in a story.
#
# A tokenizer is a model of its training text: text unlike it costs more tokens. This is
# why Llama 3 added tokens for non-English languages to its vocabulary (section 8).
#
# ## 5. Special tokens
#
# Three ids carry no text: `<pad>` fills the end of short sequences in a batch, `<bos>`
# starts every document, `<eos>` ends it (the model learns to emit it to stop). Chapter 5
# trains on `<bos> story <eos>` sequences.

# %%
print(f"pad_id={tok.pad_id}  bos_id={tok.bos_id}  eos_id={tok.eos_id}")
ids = tok.encode("The end.", bos=True, eos=True)
print("encode('The end.', bos=True, eos=True) ->", ids)
print("decode                    ->", repr(tok.decode(ids)))
print("decode(skip_special=True) ->", repr(tok.decode(ids, skip_special=True)))

# %% [markdown]
# The *text* "<eos>" inside user input is **not** the end-of-sequence token unless the
# caller asks for it with `allow_special=True`; otherwise a user could end a document, or
# fake a turn of a chat template, just by typing the marker:

# %%
user_text = "Say <eos> to stop."
print("as text:   ", tok.encode(user_text))
print("as special:", tok.encode(user_text, allow_special=True))
assert tok.eos_id not in tok.encode(user_text)

# %% [markdown]
# A batch of sequences of different lengths becomes one rectangle by padding with
# `pad_id`; the loss then ignores the padded positions (targets set to -100, as
# `minillama.Llama.forward` documents).

# %%
batch = [tok.encode(s, bos=True, eos=True) for s in ["Tom ran.", "Lily saw a red kite.", "Hi"]]
width = max(map(len, batch))
x = torch.full((len(batch), width), tok.pad_id)
for row, ids in enumerate(batch):
    x[row, :len(ids)] = torch.tensor(ids)
print(x)

# %% [markdown]
# ## 6. Round trip, save and load
#
# Because every merge is a concatenation of bytes, `decode(encode(s)) == s` holds for any
# string, including text far from the training data:

# %%
alphabet = "abc XYZ 0123 .,!?\n\t" + "éßø日本語한국어🙂👋🏽\u200b\x00"
rng = random.Random(4)
strings = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(500)]
strings += samples + val_stories[:20] + texts["Python code"]
assert all(tok.decode(tok.encode(s)) == s for s in strings)
print(f"{len(strings)} strings round-trip exactly")

# %% [markdown]
# `save` writes the special tokens and the merge list as JSON (atomically: a temporary
# file, then `os.replace`, so an interrupted save never leaves a broken file); `load`
# rebuilds the vocabulary from the merges and checks every one.

# %%
tmp = tempfile.TemporaryDirectory()
path = os.path.join(tmp.name, "tokenizer.json")
tok.save(path)
loaded = Tokenizer.load(path)
print(f"{path.split(os.sep)[-1]}: {os.path.getsize(path):,} bytes -> {loaded}")
assert loaded.merges == tok.merges
assert all(loaded.encode(s) == tok.encode(s) for s in val_stories[:50])
with open(path, "r+b") as f:                     # damage the file: cut it in half
    f.truncate(os.path.getsize(path) // 2)
try:
    Tokenizer.load(path)
except ValueError as e:
    print("a damaged file is refused:", str(e)[:110], "...")


# %% [markdown]
# ## 7. SentencePiece and llama2.c's `tokenizer.bin`
#
# LLaMA 1 and 2 share one tokenizer: a SentencePiece (arXiv 1808.06226) BPE model with a
# 32K-piece vocabulary. As the LLaMA paper describes it, numbers are split into single
# digits and characters missing from the vocabulary fall back to their UTF-8 bytes —
# byte-level safety without giving every byte's combinations a piece. Differences from our
# BPE, all visible in `minillama/tokenizer_llama2c.py`:
#
# * pieces carry a **score**, and encoding merges the adjacent pair whose concatenation is
#   the best-scoring piece (our BPE uses the merge rank instead);
# * a space is part of the following word ("▁Hello"), and a **dummy prefix** space is added
#   before the text so the first word looks like every other;
# * ids 0, 1, 2 are `<unk>`, `<s>`, `</s>`, then ids 3..258 the 256 byte pieces `<0x00>`..`<0xFF>`.
#
# llama2.c flattens the model into `tokenizer.bin`: an int32 `max_token_length`, then per
# piece a float32 score, an int32 length and the bytes. None ships with this course, so we
# write one ourselves — our story BPE in that format, with score = −rank so that earlier
# merges win — and read it back with `Llama2cTokenizer`:

# %%
def write_tokenizer_bin(path, pieces, scores):
    """A llama2.c tokenizer.bin: max_token_length, then (score, length, bytes) per piece."""
    blob = bytearray(struct.pack("<i", max(map(len, pieces))))
    for piece, score in zip(pieces, scores):
        blob += struct.pack("<fi", score, len(piece)) + piece
    with open(path, "wb") as f:
        f.write(blob)


pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [f"<0x{b:02X}>".encode() for b in range(256)]
pieces += [bytes([b]) for b in range(32, 127)]  # printable ASCII characters as pieces
scores = [0.0] * len(pieces)
for rank, i in enumerate(range(first_new, tok.vocab_size)):
    piece = tok.id_to_bytes(i)
    if piece not in pieces:                      # two merges may spell the same bytes
        pieces.append(piece)
        scores.append(-float(rank))
bin_path = os.path.join(tmp.name, "tokenizer.bin")
write_tokenizer_bin(bin_path, pieces, scores)
l2c = Llama2cTokenizer(bin_path, vocab_size=len(pieces))
print(f"tokenizer.bin: {os.path.getsize(bin_path):,} bytes, {l2c.vocab_size} pieces, "
      f"max_token_length={l2c.max_token_length}")

text = "Lily saw a kite 🪁."
ids = l2c.encode(text)
print("encode ->", ids)
print("pieces ->", [l2c.pieces[i] for i in ids])
print("decode ->", repr(l2c.decode(ids, skip_special=True)))
assert l2c.decode(ids, skip_special=True) == text

# %% [markdown]
# The `<s>` piece, the dummy-prefix space glued to "Lily", and the kite emoji spelled as
# four `<0x..>` byte pieces (no emoji piece exists) are all visible above. On story text
# the score-driven encoder should find the same pieces as our rank-driven one, given the
# dummy-prefix space:

# %%
n_check = 10
same = sum([tok.id_to_bytes(i) for i in tok.encode(" " + s)]
           == [l2c.pieces[i] for i in l2c.encode(s, bos=False)] for s in val_stories[:n_check])
print(f"identical pieces on {same} of {n_check} held-out stories")
assert same == n_check

# %% [markdown]
# ## 8. Vocabulary size in the LLaMA family
#
# LLaMA 1 and 2 use the 32K SentencePiece vocabulary above. Llama 3 (arXiv 2407.21783)
# moved to a 128K vocabulary: 100K tokens from OpenAI's tiktoken BPE plus 28K extra
# tokens for non-English languages; the paper reports that on a sample of English text
# this raises compression from 3.17 to 3.94 characters per token compared with Llama 2's
# tokenizer (the facts are printed below with their source). Llama 4's configuration
# enlarges the vocabulary again.
#
# The vocabulary is paid for in parameters: the embedding table and the output head are
# each $V \times D$ (chapter 2's count has the term $V D \cdot (1 \text{ if tied else } 2)$).
# The share it takes, from `minillama.CONFIGS`:

# %%
REPORTED = {"source": "arXiv 2407.21783 (Llama 3)", "Llama 3 vocabulary": "128K",
            "from tiktoken": "100K", "added for non-English": "28K",
            "English characters/token, Llama 2 tokenizer": 3.17,
            "English characters/token, Llama 3 tokenizer": 3.94}
print(REPORTED)
rows, totals, vocab = [], {}, {}
for name in ["llama2-7b", "llama3-8b", "llama3.2-1b", "llama4-scout", "small"]:
    c = CONFIGS[name]
    vocab_params = c.vocab_size * c.dim * (1 if c.tie_embeddings else 2)
    total = totals[name] = count_parameters(name)
    vocab[name] = vocab_params
    rows.append((name, c.vocab_size, vocab_params / total))
    print(f"{name:13s} V={c.vocab_size:7,d} D={c.dim:5d} tied={c.tie_embeddings!s:5}  "
          f"embedding + head = {vocab_params / 1e6:8.1f}M of {total / 1e9:7.3f}B "
          f"({100 * vocab_params / total:4.1f}%)")
fig, ax = plt.subplots(figsize=(7, 2.8))
ax.barh([r[0] for r in rows], [100 * r[2] for r in rows])
ax.set_xlabel("% of parameters in the embedding and output head")
ax.invert_yaxis()
plt.show()
added = totals["llama3-8b"] - totals["llama2-7b"]
added_vocab = vocab["llama3-8b"] - vocab["llama2-7b"]
print(f"Llama 3 8B has {added / 1e6:.0f}M more parameters than Llama 2 7B; the larger "
      f"vocabulary accounts for {added_vocab / 1e6:.0f}M of them "
      f"({100 * added_vocab / added:.0f}%)")
share = {name: share for name, _, share in rows}
assert share["llama3.2-1b"] > 0.2 and share["small"] > 0.1 and share["llama2-7b"] < 0.05
assert CONFIGS["llama4-scout"].vocab_size > CONFIGS["llama3-8b"].vocab_size

# %% [markdown]
# The last line above is the step from 32K to 128K tokens: 61% of the parameters Llama 3
# 8B adds over Llama 2 7B (a net figure: chapter 2 splits it into the vocabulary, the
# wider FFN and GQA's savings). For Llama 3.2 1B the share is a fifth (21%) even though
# the head is tied to the embedding (untied, the vocabulary would cost twice as much).
# Our course model (`small`, trained in chapter 5 with a 512-token BPE from
# `minillama.recipes`) has a tiny vocabulary, yet its share, 15%, is not negligible,
# because the model is tiny too.
#
# The trade-off: a larger vocabulary makes every text shorter (cheaper sequences, more
# text per context window) but costs embedding/head parameters and a wider softmax, and
# its rare tokens are seen less often in training.

# %%
print(f"notebook ran in {time.perf_counter() - T_START:.1f} s (profile={PROFILE})")
tmp.cleanup()

# %% [markdown]
# ## Exercises
#
# `exercises/ch04_tokenisation.py` asks for the two moves of BPE training:
# `most_frequent_pair(words_with_counts)` (one counting step, ties to the smallest pair)
# and `merge(ids, pair, new_id)`. The grader checks them against the library and then
# runs them together as a BPE trainer that must learn exactly `Tokenizer.train`'s merges.
# Grade your file with the cell below (set `IMPL = "exercises"`); as shipped it grades
# the reference solutions.

# %%
IMPL = "solutions"
result = course.grade("ch04", impl=IMPL)
