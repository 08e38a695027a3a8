"""Training recipes: a model size, a training schedule and the data, under one name.

``python -m minillama train --recipe stories`` runs one of these from scratch. The
shipped reference checkpoints (``minillama/reference/``) were made by exactly these
recipes; their ``card.json`` records the recipe, steps, tokens, losses, hardware and time.

* ``stories``    — a few-million-parameter model on procedural children's stories,
  byte-level BPE with 512 tokens (``data/stories.py``, ``tokenizer.py``).
* ``arithmetic`` — a small model on 3-digit additions written in both answer formats:
  ``Q: 12+34=\\nA: 46`` (direct) and ``Q: 12+34=\\nS: 2+4+0=6 c0, ... #### 46`` (steps).
  The answer marker tells the model which format to use. Byte-level tokens.
* ``mixed`` — the ``stories`` model, pretraining continued on stories mixed with task
  text: the instruction families of ``data/instructions.py`` written plainly
  (``Find the biggest number in the list.\\n4, 9, 1\\nAnswer:\\n9``), never in the
  Alpaca template. Like LLaMA, the base model has met the skills in its pretraining
  text; instruction tuning only has to teach it the prompt format (the PEFT chapters).
* ``tiny-stories`` — the ``stories`` data at a size that trains in a minute on a CPU
  (the chapter's CPU profile and the tests).
* ``mod10``, ``mod10-paths``, ``mod10-mix`` — chains of 8 single-digit operations mod 10
  (``data/arithmetic.mod10_chain``), byte-level tokens, for chapters 16 and 17. The
  marker after the question says what to write: ``A:`` an answer, ``S:`` steps.
  ``mod10``: ``Q: 3 +4 *7 -2 ...=\\nA: 7`` (direct) or ``...=\\nS: 3 +4=7, 7 *7=9, ... #### 7``
  (one op per step); ``mod10-paths``: ``S:`` with one or two ops per step, unmarked which;
  ``mod10-mix``: ``A:`` with either the direct answer or the one-op steps, unmarked.
  These are trained by supervised fine-tuning (``finetune.finetune``: one example per
  row, the loss on the answer only), which learns the chains several times faster than
  next-token training on a stream of examples whose random questions dominate the loss.
* ``add5``, ``add5-lsb`` — 5-digit additions answered at once, ``Q: 74190+47504=\nA: 121694``,
  or with operands and answer written least significant digit first,
  ``Q: 09147+40574=\nA: 496121`` (the same problem). Same model, data and schedule; only the
  digit order differs (chapter 17: the format decides what a small model can learn).
  Supervised like ``mod10``.
* ``sort`` — lists of 1..8 random digits and their sorted order, byte-level tokens, for
  chapter 18's graph of thoughts: ``Q: sort [3, 1, 4]\\nA: [1, 3, 4]``. It sorts what it
  was trained on and fails on longer lists, which is what split -> sort -> merge fixes.

A recipe with ``init_from`` starts from that shipped reference's weights and tokenizer
instead of a random model (continued pretraining). How the supervised tasks (mod10*,
add5*, sort) are written, held out and scored is in ``tasks.py``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

import torch

from .config import LlamaConfig
from .data import addition_problems, extract_answer, instruction_data, story_splits
from .tasks import ADDITION_FORMS, MOD10_FORMS, addition_data, mod10_data, sort_data
from .tokenizer import ByteTokenizer, Tokenizer
from .train import TrainConfig


@dataclass
class Recipe:
    name: str
    model: LlamaConfig
    train: TrainConfig
    data: str                       # "stories", "arithmetic", "mixed", "sort" or a SUPERVISED key
    data_size: dict = field(default_factory=dict)
    init_from: str | None = None    # a shipped reference to continue from


def stories_data(n_train: int = 20000, n_val: int = 500, vocab_size: int = 512, seed: int = 0):
    """(tokenizer, train tokens, val tokens): each story is <bos> text <eos>."""
    train, val = story_splits(n_train, n_val, seed=seed)
    tok = Tokenizer.train(train[:4000], vocab_size)
    enc = lambda texts: torch.tensor([i for t in texts for i in tok.encode(t, bos=True, eos=True)])
    return tok, enc(train), enc(val)


# The task families in the ``mixed`` pretraining text: ones a few-million-parameter model
# learns in minutes (look-ups, extremes, letter edits, word counts, refusals).
MIXED_FAMILIES = ["lookup_colour", "lookup_age", "max_list", "min_list", "uppercase",
                  "capitalize", "reverse_word", "count_words", "refusal", "list_to_csv"]


def task_text(record: dict) -> str:
    """A task as plain text, the way pretraining text might show it (not the Alpaca form)."""
    given = f"\n{record['input']}" if record["input"] else ""
    return f"{record['instruction']}{given}\nAnswer:\n{record['output']}"


def task_prompt(record: dict) -> str:
    """``task_text`` up to the answer: the prompt of a task in its pretraining form."""
    return task_text({**record, "output": ""})


def mixed_data(tok, n_stories: int = 20000, n_tasks: int = 60000, n_val: int = 500,
               seed: int = 0, families=None):
    """(train tokens, val tokens): stories and plain task text, shuffled together.

    Validation holds out both kinds: unseen stories and task records of another seed.
    """
    stories, val_stories = story_splits(n_stories, n_val, seed=seed)
    tasks = [task_text(r) for r in instruction_data(n_tasks, seed=seed + 101, families=families)]
    val_tasks = [task_text(r) for r in instruction_data(n_val, seed=seed + 202,
                                                        families=families)]
    docs, val = stories + tasks, val_stories + val_tasks
    random.Random(seed).shuffle(docs)
    random.Random(seed + 1).shuffle(val)
    enc = lambda texts: torch.tensor([i for t in texts for i in tok.encode(t, bos=True, eos=True)])
    return enc(docs), enc(val)


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


_MOD10_MODEL = LlamaConfig(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=259,
                           multiple_of=32, max_seq_len=128, name="mod10")

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
    Recipe("mixed",
           LlamaConfig(dim=192, n_layers=6, n_heads=6, n_kv_heads=2, vocab_size=512,
                       multiple_of=64, max_seq_len=256, name="mixed"),
           TrainConfig(steps=400, batch_size=16, seq_len=256, lr=1e-3, warmup=20,
                       eval_every=100, ckpt_every=100),
           "mixed", dict(n_stories=8000, n_tasks=60000, n_val=500, families=MIXED_FAMILIES),
           init_from="stories"),
    Recipe("tiny-stories",
           LlamaConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=512,
                       multiple_of=32, max_seq_len=128, name="tiny-stories"),
           TrainConfig(steps=150, batch_size=16, seq_len=128, lr=3e-3, warmup=20,
                       eval_every=50, eval_batches=4),
           "stories", dict(n_train=2000, n_val=100)),
    Recipe("mod10", _MOD10_MODEL.replace(name="mod10"),
           TrainConfig(steps=1200, batch_size=16, lr=5e-4, warmup=30, log_every=10),
           "mod10", dict(n_train=40000, n_val=500)),
    Recipe("mod10-paths", _MOD10_MODEL.replace(name="mod10-paths"),
           TrainConfig(steps=1000, batch_size=16, lr=5e-4, warmup=10, log_every=10),
           "mod10-paths", dict(n_train=40000, n_val=500), init_from="mod10"),
    Recipe("mod10-mix", _MOD10_MODEL.replace(name="mod10-mix"),
           TrainConfig(steps=200, batch_size=16, lr=5e-4, warmup=10, log_every=10),
           "mod10-mix", dict(n_train=40000, n_val=500), init_from="mod10"),
    *(Recipe(name, _MOD10_MODEL.replace(name=name),
             TrainConfig(steps=4000, batch_size=32, lr=3e-3, warmup=30, weight_decay=0.0,
                         log_every=50),
             name, dict(n_train=40000, n_val=500, digits=5))
      for name in ADDITION_FORMS),
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
    if recipe.data in MOD10_FORMS:
        return mod10_data(recipe.data, **recipe.data_size)
    if recipe.data in ADDITION_FORMS:
        return addition_data(recipe.data, **recipe.data_size)
    if recipe.data == "sort":
        return sort_data(**recipe.data_size)
    if recipe.data == "mixed":
        from .reference import load_reference
        _, tok, _ = load_reference(recipe.init_from)
        return (tok, *mixed_data(tok, **recipe.data_size))
    return arithmetic_data(**recipe.data_size)


def initial_model(recipe: Recipe):
    """A random model, or (``init_from``) the reference's weights in fp32 under this recipe's
    config name, so that the saved model says which recipe made it."""
    from .model import Llama
    model = Llama(recipe.model)
    if recipe.init_from is not None:
        from .reference import load_reference
        start, _, _ = load_reference(recipe.init_from)
        if start.cfg.replace(name=recipe.model.name) != recipe.model:
            raise ValueError(f"recipe {recipe.name}: its model config differs from the "
                             f"{recipe.init_from} reference it continues from")
        model.load_state_dict(start.float().state_dict())
    return model


RECIPES["sort"] = Recipe(
    "sort",
    LlamaConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=259, multiple_of=32,
                max_seq_len=256, name="sort"),     # room for 32-digit lists, never trained on
    TrainConfig(steps=1000, batch_size=32, seq_len=96, lr=3e-3, warmup=50, eval_every=250,
                ckpt_every=250),
    "sort", dict(n_train=60000, n_val=500, max_len=8))
