"""Training recipes: a model size, a training schedule and the data, under one name.

``python -m minillama train --recipe stories`` runs one of these from scratch. The
shipped reference checkpoints (``minillama/reference/``) were made by exactly these
recipes; their ``card.json`` records the recipe, steps, tokens, losses, hardware and time.

* ``stories``    — a few-million-parameter model on procedural children's stories,
  byte-level BPE with 512 tokens (``data/stories.py``, ``tokenizer.py``).
* ``arithmetic`` — a small model on 3-digit additions written in both answer formats:
  ``Q: 12+34=\\nA: 46`` (direct) and ``Q: 12+34=\\nS: 2+4+0=6 c0, ... #### 46`` (steps).
  The answer marker tells the model which format to use. Byte-level tokens.
* ``tiny-stories`` — the ``stories`` data at a size that trains in a minute on a CPU
  (the chapter's CPU profile and the tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .config import LlamaConfig
from .data import addition_problems, extract_answer, story_splits
from .tokenizer import ByteTokenizer, Tokenizer
from .train import TrainConfig


@dataclass
class Recipe:
    name: str
    model: LlamaConfig
    train: TrainConfig
    data: str                       # "stories" or "arithmetic"
    data_size: dict = field(default_factory=dict)


def stories_data(n_train: int = 20000, n_val: int = 500, vocab_size: int = 512, seed: int = 0):
    """(tokenizer, train tokens, val tokens): each story is <bos> text <eos>."""
    train, val = story_splits(n_train, n_val, seed=seed)
    tok = Tokenizer.train(train[:4000], vocab_size)
    enc = lambda texts: torch.tensor([i for t in texts for i in tok.encode(t, bos=True, eos=True)])
    return tok, enc(train), enc(val)


def arithmetic_text(rec: dict, style: str) -> str:
    """One training example in the requested answer format (see the module docstring)."""
    if style == "direct":
        return f"Q: {rec['question']}\nA: {rec['answer']}\n"
    if style == "steps":
        return f"Q: {rec['question']}\nS: {rec['cot']}\n"
    raise ValueError(f"style must be 'direct' or 'steps', got {style!r}")


def arithmetic_data(n_train: int = 40000, n_val: int = 500, digits: int = 3, seed: int = 0):
    """(tokenizer, train tokens, val tokens) of additions in both formats, val unseen."""
    tok = ByteTokenizer()
    problems = addition_problems(n_train + n_val, digits=digits, seed=seed)
    enc = lambda recs: torch.tensor([i for k, r in enumerate(recs) for i in tok.encode(
        arithmetic_text(r, ("direct", "steps")[k % 2]), bos=True, eos=True)])
    return tok, enc(problems[:n_train]), enc(problems[n_train:])


@torch.no_grad()
def arithmetic_accuracy(model, tok, problems: list[dict], style: str, device="cpu") -> float:
    """Exact-match accuracy of greedy answers to unseen problems, in one format."""
    correct = 0
    marker = {"direct": "A: ", "steps": "S: "}[style]
    for rec in problems:
        prompt = tok.encode(f"Q: {rec['question']}\n{marker}", bos=True)
        out = model.generate(torch.tensor(prompt, device=device), 48 if style == "steps" else 8,
                             stop_tokens=[tok.eos_id, tok.encode("\n")[0]])
        text = marker + tok.decode(out.tolist(), skip_special=True).strip()
        answer = extract_answer(text) if style == "steps" else text[len(marker):].strip()
        correct += answer == rec["answer"]
    return correct / len(problems)


def heldout_problems(recipe: Recipe, n: int) -> list[dict]:
    """``n`` addition problems from the recipe's validation range that never occur in training."""
    size = recipe.data_size
    problems = addition_problems(size["n_train"] + size["n_val"], seed=size.get("seed", 0))
    seen = {r["question"] for r in problems[:size["n_train"]]}
    unseen = [r for r in problems[size["n_train"]:] if r["question"] not in seen]
    if len(unseen) < n:
        raise ValueError(f"only {len(unseen)} held-out problems; asked for {n}")
    return unseen[:n]


RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("stories",
           LlamaConfig(dim=192, n_layers=6, n_heads=6, n_kv_heads=2, vocab_size=512,
                       multiple_of=64, max_seq_len=256, name="stories"),
           TrainConfig(steps=1200, batch_size=16, seq_len=256, lr=3e-3, warmup=60,
                       eval_every=250, ckpt_every=250),
           "stories", dict(n_train=20000, n_val=500)),
    Recipe("arithmetic",
           LlamaConfig(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=259,
                       multiple_of=32, max_seq_len=128, name="arithmetic"),
           TrainConfig(steps=2000, batch_size=32, seq_len=128, lr=3e-3, warmup=100,
                       eval_every=250, ckpt_every=250),
           "arithmetic", dict(n_train=40000, n_val=500)),
    Recipe("tiny-stories",
           LlamaConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=512,
                       multiple_of=32, max_seq_len=128, name="tiny-stories"),
           TrainConfig(steps=150, batch_size=16, seq_len=128, lr=3e-3, warmup=20,
                       eval_every=50, eval_batches=4),
           "stories", dict(n_train=2000, n_val=100)),
]}


def get_recipe(name: str, **train_overrides) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    r = RECIPES[name]
    bad = sorted(set(train_overrides) - set(TrainConfig.__dataclass_fields__))
    if bad:
        raise ValueError(f"unknown training option(s) {bad}")
    return replace(r, train=replace(r.train, **train_overrides))


def build_data(recipe: Recipe):
    """(tokenizer, train tokens, val tokens) for a recipe."""
    if recipe.data == "stories":
        return stories_data(**recipe.data_size)
    return arithmetic_data(**recipe.data_size)
