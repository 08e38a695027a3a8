"""Pretraining text: the stories, and the stories mixed with the task families written plainly."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from ..data import instruction_data, story_splits
from ..finetune import greedy_score
from ..reference import load_reference
from ..tokenizer import Tokenizer
from .base import Task, encode_stream

# ----------------------------------------------------------------------------- stories

def stories_data(n_train: int = 20000, n_val: int = 500, vocab_size: int = 512, seed: int = 0):
    """(tokenizer, train tokens, val tokens): each story is <bos> text <eos>."""
    train, val = story_splits(n_train, n_val, seed=seed)
    tok = Tokenizer.train(train[:4000], vocab_size)
    return tok, encode_stream(tok, train), encode_stream(tok, val)


CORPUS_ENV = "MINILLAMA_CORPUS"
SEPARATOR = "<|endoftext|>"          # TinyStories' text files; else blank lines split documents


def corpus_documents(path, n: int) -> list[str]:
    """The first ``n`` documents of a user's UTF-8 text file (e.g. TinyStories, which the
    user downloads): split at ``<|endoftext|>`` if the file has it, else at blank lines."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{CORPUS_ENV}={str(path)!r}: no such file; give the path of "
                                f"a UTF-8 text file (e.g. TinyStoriesV2-GPT4-train.txt)")
    text = path.read_text(encoding="utf-8", errors="replace")
    parts = text.split(SEPARATOR) if SEPARATOR in text else re.split(r"\n\s*\n", text)
    docs = [d.strip() for d in parts if d.strip()][:n]
    if len(docs) < n:
        raise ValueError(f"{path}: {len(docs)} documents, {n} needed (documents are split "
                         f"at {SEPARATOR!r} or at blank lines)")
    return docs


def corpus_data(path, n_train: int, n_val: int, vocab_size: int = 512):
    """``stories_data`` from a user's text file instead of generated stories: the last
    ``n_val`` of its first ``n_train + n_val`` documents are the validation set."""
    docs = corpus_documents(path, n_train + n_val)
    train, val = docs[:n_train], docs[n_train:]
    tok = Tokenizer.train(train[:4000], vocab_size)
    return tok, encode_stream(tok, train), encode_stream(tok, val)


@dataclass(frozen=True)
class Stories(Task):
    n_train: int = 20000
    n_val: int = 500
    vocab_size: int = 512
    seed: int = 0

    def data(self):
        return stories_data(self.n_train, self.n_val, self.vocab_size, self.seed)


# ------------------------------------------------------------ stories mixed with task text

# The task families in the ``mixed`` pretraining text: ones a few-million-parameter model
# learns in minutes (look-ups, extremes, letter edits, word counts, refusals).
MIXED_FAMILIES = ["lookup_colour", "lookup_age", "max_list", "min_list", "uppercase",
                  "capitalize", "reverse_word", "count_words", "refusal", "list_to_csv"]

# The families the ``peft-base`` model masters in their plain form (>= 85% exact match on
# unseen problems), the skills the PEFT benchmark asks for in the Alpaca template. Left out
# of MIXED_FAMILIES: the two look-ups (retrieving a row of an in-context table: ~30% after
# 1,600 steps, a skill this size learns slowly) and reverse_word (its 36 words x 3 phrasings
# are all seen in pretraining, so no unseen problem exists to test on).
SKILL_FAMILIES = ["max_list", "min_list", "uppercase", "capitalize", "count_words",
                  "refusal", "list_to_csv"]


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
    return encode_stream(tok, docs), encode_stream(tok, val)


@dataclass(frozen=True)
class Mixed(Task):
    """``mixed_data`` in the tokens of the shipped reference ``tokenizer_from``; scored on
    unseen records in the plain form it was trained on and in the Alpaca form it was not."""

    tokenizer_from: str = "stories"
    n_stories: int = 20000
    n_tasks: int = 60000
    n_val: int = 500
    seed: int = 0
    families: list | None = None

    def data(self):
        _, tok, _ = load_reference(self.tokenizer_from)
        return (tok, *mixed_data(tok, self.n_stories, self.n_tasks, self.n_val, self.seed,
                                 self.families))

    def scores(self, model, tok, n: int) -> dict:
        device = next(model.parameters()).device            # score where the model is
        records = instruction_data(n, seed=self.seed + 303, families=self.families)
        plain = greedy_score(model, tok, records, device=device,
                             template=task_prompt)["exact_match"]
        alpaca = greedy_score(model, tok, records, device=device)["exact_match"]
        return {"task_accuracy_plain": round(plain, 4), "task_accuracy_alpaca": round(alpaca, 4)}
