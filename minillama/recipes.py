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

* ``peft-base`` — ``mixed`` continued on stories and the seven task families of
  ``SKILL_FAMILIES`` only, until it answers them in their plain form; never in the Alpaca
  template (the PEFT benchmark's base, ``tasks/bench.py``).

* ``stories-full``, ``peft-base-full`` — the full profile's sizes (``profiles.py``): the
  ``full`` config (32.0M parameters, 12.5x ``stories``) pretrained on 100,000 stories, and
  trained from scratch on ``peft-base``'s stories and the same 120,000 skill records
  (one recipe instead of ``stories`` -> ``mixed`` -> ``peft-base``). Chapters train them
  live (``live.py``); no weights are shipped.
* ``mod10-full``, ``mod10-paths-full``, ``mod10-mix-full``, ``add5-full``, ``add5-lsb-full``,
  ``sort-full`` — the full profile's twins of the byte-level recipes (chapters 16-18): the
  same data, schedule and seed on a model 12-13x the size (``BYTES_FULL``, ``SORT_FULL``),
  at a lower learning rate for the wider model; a twin continues from its parent's twin.
  Trained live too (``live.py``).

A recipe with ``init_from`` starts from that shipped reference's weights and tokenizer
instead of a random model (continued pretraining). A recipe's data is a task object
(``recipe.task``, from ``tasks/``): it builds the data, holds problems out and scores.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace

import torch

from .checkpoints import save
from .config import CONFIGS, LlamaConfig
from .files import atomic_directory
from .finetune import finetune
from .model import Llama
from .reference import REFERENCE_DIR, hardware, load_reference, verify, write_card
from .tasks import (
    ADDITION_FORMS,
    MIXED_FAMILIES,
    SKILL_FAMILIES,
    Addition,
    Arithmetic,
    Mixed,
    Mod10,
    Sort,
    Stories,
    Task,
    qa_prompt,
)
from .train import TrainConfig, train


@dataclass
class Recipe:
    name: str
    model: LlamaConfig
    train: TrainConfig
    task: Task                      # what it trains on and how it is scored (tasks/)
    init_from: str | None = None    # a shipped reference to continue from

    @property
    def data_size(self) -> dict:
        """The task's sizes and seed, e.g. ``stories_data(**recipe.data_size)``."""
        return asdict(self.task)

    def heldout(self, n: int, *args) -> list:
        """``n`` problems the task never trains on (see ``tasks/``)."""
        return self.task.heldout(n, *args)


# The model shapes: a few million parameters on 512 BPE tokens, and a smaller one on bytes.
STORIES_MODEL = LlamaConfig(dim=192, n_layers=6, n_heads=6, n_kv_heads=2, vocab_size=512,
                            multiple_of=64, max_seq_len=256, name="stories")
BYTES_MODEL = LlamaConfig(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=259,
                          multiple_of=32, max_seq_len=128, name="arithmetic")

FULL_MODEL = CONFIGS["full"]        # the full profile's size (profiles.py)
# The byte-level recipes' full-profile twins: 9.6M parameters (12x BYTES_MODEL's 0.80M) and
# 1.7M (13x the sort model's 0.13M).
BYTES_FULL = BYTES_MODEL.replace(dim=384, n_layers=6, n_heads=6, n_kv_heads=2)
SORT_FULL = LlamaConfig(dim=192, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=259,
                        multiple_of=32, max_seq_len=256, name="sort")

# mod10 and its two continuations share a schedule but for its length and warmup.
MOD10_TRAIN = TrainConfig(batch_size=16, lr=5e-4, log_every=10)

RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("stories", STORIES_MODEL,
           TrainConfig(steps=1200, batch_size=16, seq_len=256, lr=3e-3, warmup=60,
                       eval_every=250, ckpt_every=250),
           Stories(n_train=20000, n_val=500)),
    Recipe("arithmetic", BYTES_MODEL,
           TrainConfig(steps=2000, batch_size=32, seq_len=128, lr=3e-3, warmup=100,
                       eval_every=250, ckpt_every=250),
           Arithmetic(n_train=40000, n_val=500)),
    Recipe("mixed", STORIES_MODEL.replace(name="mixed"),
           TrainConfig(steps=400, batch_size=16, seq_len=256, lr=1e-3, warmup=20,
                       eval_every=100, ckpt_every=100),
           Mixed(tokenizer_from="stories", n_stories=8000, n_tasks=60000, n_val=500,
                 families=MIXED_FAMILIES),
           init_from="stories"),
    Recipe("peft-base", STORIES_MODEL.replace(name="peft-base"),
           TrainConfig(steps=2000, batch_size=16, seq_len=256, lr=1e-3, warmup=20,
                       eval_every=500, ckpt_every=500),
           Mixed(tokenizer_from="stories", n_stories=8000, n_tasks=120000, n_val=500,
                 families=SKILL_FAMILIES),
           init_from="mixed"),
    Recipe("stories-full", FULL_MODEL.replace(name="stories-full"),
           TrainConfig(steps=4000, batch_size=64, seq_len=256, lr=1.5e-3, warmup=200,
                       eval_every=500, eval_batches=16),
           Stories(n_train=100000, n_val=1000)),
    Recipe("peft-base-full", FULL_MODEL.replace(name="peft-base-full"),
           TrainConfig(steps=3000, batch_size=32, seq_len=256, lr=1e-3, warmup=100,
                       eval_every=500, eval_batches=16),
           Mixed(tokenizer_from="stories", n_stories=20000, n_tasks=120000, n_val=500,
                 families=SKILL_FAMILIES)),
    Recipe("tiny-stories",
           LlamaConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=512,
                       multiple_of=32, max_seq_len=128, name="tiny-stories"),
           TrainConfig(steps=150, batch_size=16, seq_len=128, lr=3e-3, warmup=20,
                       eval_every=50, eval_batches=4),
           Stories(n_train=2000, n_val=100)),
    Recipe("mod10", BYTES_MODEL.replace(name="mod10"), replace(MOD10_TRAIN, steps=1200, warmup=30),
           Mod10("mod10", n_train=40000, n_val=500)),
    Recipe("mod10-paths", BYTES_MODEL.replace(name="mod10-paths"),
           replace(MOD10_TRAIN, steps=1000, warmup=10),
           Mod10("mod10-paths", n_train=40000, n_val=500), init_from="mod10"),
    Recipe("mod10-mix", BYTES_MODEL.replace(name="mod10-mix"),
           replace(MOD10_TRAIN, steps=200, warmup=10),
           Mod10("mod10-mix", n_train=40000, n_val=500), init_from="mod10"),
    *(Recipe(name, BYTES_MODEL.replace(name=name),
             TrainConfig(steps=4000, batch_size=32, lr=3e-3, warmup=30, weight_decay=0.0,
                         log_every=50),
             Addition(name, n_train=40000, n_val=500, digits=5))
      for name in ADDITION_FORMS),
    Recipe("sort",
           LlamaConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=259,
                       multiple_of=32, max_seq_len=256, name="sort"),  # room for 32-digit lists
           TrainConfig(steps=1000, batch_size=32, seq_len=96, lr=3e-3, warmup=50,
                       eval_every=250, ckpt_every=250),
           Sort(n_train=60000, n_val=500, max_len=8)),
]}


def _full_twin(name: str, model: LlamaConfig, lr: float) -> Recipe:
    """``name``'s data, schedule and seed on ``model``, at ``lr``; continues from the twin of
    ``name``'s parent."""
    r = RECIPES[name]
    return Recipe(f"{name}-full", model.replace(name=f"{name}-full"), replace(r.train, lr=lr),
                  r.task, init_from=r.init_from and f"{r.init_from}-full")


# A model 3x wider learns at about a third of the rate (muP's 1/width rule for hidden
# matrices, Yang et al., arXiv 2203.03466, applied to the whole model as a first guess).
RECIPES.update({t.name: t for t in [
    _full_twin("mod10", BYTES_FULL, 2e-4), _full_twin("mod10-paths", BYTES_FULL, 2e-4),
    _full_twin("mod10-mix", BYTES_FULL, 2e-4), _full_twin("add5", BYTES_FULL, 1e-3),
    _full_twin("add5-lsb", BYTES_FULL, 1e-3), _full_twin("sort", SORT_FULL, 1e-3)]})


def get_recipe(name: str, **train_overrides) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    r = RECIPES[name]
    bad = sorted(set(train_overrides) - set(TrainConfig.__dataclass_fields__))
    if bad:
        raise ValueError(f"unknown training option(s) {bad}")
    return replace(r, train=replace(r.train, **train_overrides))


def fingerprint(recipe: Recipe) -> str:
    """The sha256 (first 16 hex digits) of everything ``recipe`` fixes: model, schedule,
    task and parent. A card that records it says which recipe, exactly, made the weights."""
    text = json.dumps([type(recipe.task).__name__, asdict(recipe)], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_data(recipe: Recipe):
    """(tokenizer, train, val) for a recipe: token streams, or records if supervised."""
    return recipe.task.data()


def initial_model(recipe: Recipe, start=None) -> Llama:
    """A random model, or (``init_from``) the reference's weights in fp32 under this recipe's
    config name, so that the saved model says which recipe made it. ``start``: the
    directory of the ``init_from`` checkpoint when it is not shipped (a live-trained twin)."""
    model = Llama(recipe.model)
    if recipe.init_from is not None:
        if start is None and not (REFERENCE_DIR / recipe.init_from).is_dir():
            raise ValueError(f"recipe {recipe.name} continues from {recipe.init_from}, which is "
                             f"not shipped: pass start=, the directory it was trained into "
                             f"(live.reference({recipe.name.removesuffix('-full')!r}, 'full') "
                             f"trains both)")
        start, _, _ = load_reference(start or recipe.init_from)
        if start.cfg.replace(name=recipe.model.name) != recipe.model:
            raise ValueError(f"recipe {recipe.name}: its model config differs from the "
                             f"{recipe.init_from} reference it continues from")
        model.load_state_dict(start.float().state_dict())
    return model


def fit_supervised(model, tok, records, recipe: Recipe, device="cpu") -> list[dict]:
    """``finetune`` (one ``qa_prompt`` record per row, the loss on the answer) with the
    recipe's schedule; returns the log."""
    cfg = recipe.train
    return finetune(model, tok, records, cfg.steps, cfg.lr, batch_size=cfg.batch_size,
                    warmup=cfg.warmup, weight_decay=cfg.weight_decay, seed=cfg.seed,
                    device=device, log_every=cfg.log_every, template=qa_prompt,
                    precision=cfg.precision)


def train_recipe(recipe: Recipe, dest, device="cpu", n_problems: int = 200, start=None) -> dict:
    """Train ``recipe`` from its initial model (``start``: see ``initial_model``) and write it
    to ``dest`` as a reference checkpoint (model, tokenizer, card with the sha256 of each
    file), which ``load_reference(dest)`` loads. ``dest`` appears whole or not at all. The
    card records the recipe, steps, tokens (or examples) seen, validation loss, the task's
    scores on ``n_problems`` unseen problems (0: none), hardware and wall time. A stream
    recipe trains with ``train.train``, a supervised one with ``fit_supervised``. Returns
    the card."""
    torch.manual_seed(recipe.train.seed)
    tok, train_data, val_data = build_data(recipe)
    model = initial_model(recipe, start)
    cfg = recipe.train
    t0 = time.perf_counter()
    if recipe.task.supervised:
        log = fit_supervised(model, tok, train_data, recipe, device)
        seen = {"examples_seen": cfg.steps * cfg.batch_size}
        val_loss = recipe.task.val_loss(model, tok, val_data, cfg)
    else:
        log = train(model, train_data, cfg, val_data=val_data, device=device)
        seen = {"tokens_seen": cfg.steps * cfg.batch_size * cfg.grad_accum * cfg.seq_len}
        val_loss = log[-1]["val_loss"]
    wall = time.perf_counter() - t0
    model.eval()
    scores = recipe.task.scores(model, tok, n_problems) if n_problems else {}
    parent = {"init_from": recipe.init_from,
              "init_sha256": verify(start or REFERENCE_DIR / recipe.init_from)["sha256"][
                  "model.safetensors"]} if recipe.init_from else {}
    with atomic_directory(dest, replaces=("*",)) as tmp:
        save(model.float().cpu(), tmp / "w")
        for f in (tmp / "w").iterdir():
            f.rename(tmp / f.name)
        (tmp / "w").rmdir()
        tok.save(tmp / "tokenizer.json")
        (tmp / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
        card = write_card(tmp, recipe=recipe.name, recipe_sha256=fingerprint(recipe),
                          steps=cfg.steps, batch_size=cfg.batch_size,
                          **seen, parameters=sum(p.numel() for p in model.parameters()),
                          val_loss=round(val_loss, 4), **scores, **parent,
                          device=str(device), hardware=hardware(), wall_time_s=round(wall, 1),
                          torch=torch.__version__)
    model.to(device)
    return card
