"""What each training chapter trains in the ``cpu`` and the ``full`` profile, in one table.

``MINILLAMA_PROFILE`` (``course.profile()``) picks a column; a chapter reads its sizes with
``profiles.settings("ch05", PROFILE)`` instead of writing numbers of its own, so the two
profiles are written down in one place and ``tests/test_profiles.py`` runs the full
column's code path on the CPU at a step or two (``settings(..., steps=2)``), so that it
cannot rot between GPU leases.

The CPU column reproduces the committed notebooks exactly. The full column trains at least
10 times the CPU column's trainable-model parameters (the test checks it):

* ch05 pretrains the ``stories-full`` recipe: the ``full`` config (32.0M parameters) on
  100,000 generated stories;
* the PEFT chapters (``PEFT_CHAPTERS``, the benchmark of ``tasks/bench.py``) fine-tune a
  ``peft-base-full`` base (``full`` config, 12.5x the 2.56M ``peft-base``) that the first trains
  and caches under ``build/full/`` (``bench.base``), on 1,000 test problems, with every
  swept method's learning rate chosen on the full base (``bench.SWEEP``);
* ch06 trains its dense and MoE models at width 256 and 4 layers (about 20x).

Budget, estimated (no GPU has run this yet). Training FLOPs ~ 6 N T for N parameters and
T tokens (Kaplan et al., arXiv 2001.08361, attention scores left out), at 30% of an H200's
989 TFLOP/s dense bf16 peak, i.e. ~3.0e14 FLOP/s:

* ch05: 6 x 32.0M x (4,000 x 64 x 256 = 65.5M tokens) = 1.3e16 FLOP -> ~42 s;
* the PEFT base, once: 6 x 32.0M x (3,000 x 32 x 256 = 24.6M tokens) = 4.7e15 -> ~16 s;
* one PEFT run: 300 steps x 16 records x ~64 tokens = 0.31M tokens -> 6e13 FLOP, well
  under a second of arithmetic; such small steps are bound by launch overhead instead,
  ~15 ms a step -> ~5 s a run with scoring (one forward pass per batch of 32 problems).
  ch07, the heaviest, trains the base (above, ~1-2 minutes at a small model's real
  efficiency) and 26 runs (its 11 sweep runs, 3 methods, 12 ranks): ~4 minutes; ch08
  23 runs, ch14 13, the others fewer (each method's grid is swept once, by the first
  chapter asking for its rate, and cached);
* ch06: 2 models x 6 x ~2.5M x (1,500 x 32 x 256 = 12.3M tokens) = 3.7e14 -> ~1 s.

Each chapter <= 5 minutes, the course <= 45 minutes, with room for the 3-10x by which
small models fall short of 30% of peak (data generation and tokenising on the CPU, ~30 s
for 100,000 stories, is the larger fixed cost).

* ch16-ch18 train their own models (``live.reference``): 12-13x twins of the byte-level
  references (``mod10-full``, ``mod10-mix-full``, ``mod10-paths-full``, ``add5-full``,
  ``add5-lsb-full``: 9.6M parameters; ``sort-full``: 1.7M), the same data and schedules,
  cached under ``build/full/`` for the next chapter. ~6 x 9.6M x (1,200 x 16 x ~70 tokens)
  = 7.8e13 FLOP for ``mod10-full``: the arithmetic is nothing, the ~2,400 small steps of
  the mod-10 chain (launch-bound, ~15 ms each) ~40 s; ch17's two 4,000-step additions
  ~2 minutes and its section 7 (1,200 + 5,250 steps) ~1.5 minutes: ch17 is the tightest
  against the 5 minutes. ch18's value MLP grows from 128 to 1,024 hidden units (113,249 ->
  1,234,145 parameters with the CPU run's 2,629 numbers: 10.9x).
* ch19 trains nothing (it evaluates the shipped ``arithmetic`` and ``mixed`` references);
  its full column only enlarges the test sets.
"""

from __future__ import annotations

import os
from pathlib import Path

PROFILE_NAMES = ("cpu", "full")
SMOKE_ENV = "MINILLAMA_SMOKE"    # "1": the full column's "smoke" sizes (see settings())
# Where the full profile keeps the models it trains live (live.py), their problems and sweeps.
FULL_DIR = Path(os.environ.get("MINILLAMA_FULL_DIR")
                or Path(__file__).resolve().parent.parent / "build" / "full")
# A live recipe's TrainConfig in a smoke run: two steps of two examples.
SMOKE_TRAIN = dict(steps=2, batch_size=2, warmup=1, eval_every=1, eval_batches=1)

# chapter -> profile -> settings. Model sizes are named: a recipe (recipes.RECIPES) or the
# benchmark's base, whose parameters the test counts.
TABLE: dict[str, dict[str, dict]] = {
    "ch04": {   # tokenisers only: training stories and the largest vocabulary
        "cpu": dict(n_train=1000, n_val=200, max_vocab=1024),
        "full": dict(n_train=20000, n_val=1000, max_vocab=4096),
        "smoke": dict(n_train=1000, n_val=200),
    },
    "ch05": {   # pretraining
        "cpu": dict(recipe="tiny-stories", steps=300, batch_size=16, eval_every=50,
                    eval_batches=4, log_every=10, n_train=2000, n_val=200, n_samples=4),
        "full": dict(recipe="stories-full", steps=4000, batch_size=64, eval_every=500,
                     eval_batches=16, log_every=50, n_train=100000, n_val=1000,
                     n_samples=16),
        "smoke": dict(steps=2, batch_size=2, eval_batches=1, log_every=1, n_train=300,
                      n_val=50),
    },
    "ch06": {   # dense vs MoE at equal FLOPs per token
        "cpu": dict(dim=64, n_layers=2, hidden_dim=128, n_experts=4, seq_len=64,
                    steps=240, batch_size=16, lr=3e-3, warmup=20, eval_every=30,
                    eval_batches=4, log_every=10, n_train=1500, n_val=100),
        "full": dict(dim=256, n_layers=4, hidden_dim=512, n_experts=8, seq_len=256,
                     steps=1500, batch_size=32, lr=2e-3, warmup=100, eval_every=100,
                     eval_batches=16, log_every=20, n_train=20000, n_val=500),
        "smoke": dict(steps=2, batch_size=2, warmup=1, eval_every=1, eval_batches=1,
                      log_every=1, n_train=100, n_val=50),
    },
    "bench": {  # ch07-ch15: the PEFT benchmark (tasks/bench.py)
        "cpu": dict(base="peft-base", n_train=2400, n_val=300, n_test=500, n_base=1000,
                    steps=150, batch=16, warmup=15, base_problems=0),
        "full": dict(base="peft-base-full", n_train=4800, n_val=500, n_test=1000,
                     n_base=1000, steps=300, batch=16, warmup=30, base_problems=200),
        "smoke": dict(n_train=64, n_val=8, n_test=32, n_base=16, steps=2, batch=4, warmup=1,
                      base_problems=4),
    },
    "ch07": {   # the forward-pass timing of LoRA merged and unmerged: batch size -> repeats
        "cpu": dict(timing_repeats={1: 60, 4: 20, 16: 10}),
        "full": dict(timing_repeats={1: 100, 16: 100, 256: 100}),
        "smoke": dict(timing_repeats={1: 1, 64: 1}),     # 64 > 32 probes: repeated
    },
    "ch09": {   # V2's visual prompts on the benchmark's base
        "cpu": dict(n_train=300, n_test=100, steps=150),
        "full": dict(n_train=4000, n_test=400, steps=1500),
        "smoke": dict(n_train=32, n_test=16, steps=22),    # > TEXT_FIRST: image-text steps too
    },
    "ch10": {   # the Excitor's visual prompts on the benchmark's base
        "cpu": dict(n_img=300, img_steps=60, img_batch=8),
        "full": dict(n_img=4000, img_steps=1500, img_batch=16),
        "smoke": dict(n_img=32, img_steps=2, img_batch=4),
    },
    # Chapters 16-18 train the byte-level twins live in the full profile (live.py).
    "ch16": {   # DPO on mod-10 chains (lr: 1/3 for the 3x wider twins, as in recipes.py)
        "cpu": dict(n_pairs=256, n_test=100, n_samples=4, steps=32, batch=8, lr=2e-4),
        "full": dict(n_pairs=4096, n_test=1000, n_samples=8, steps=200, batch=32, lr=7e-5),
        "smoke": dict(n_pairs=16, n_test=8, n_samples=2, steps=2, batch=4),
    },
    "ch17": {   # chain of thought, self-consistency; curve: section 7's training lengths
        "cpu": dict(n_test=200, n_max=20, curve=()),
        "full": dict(n_test=2000, n_max=40, curve=(250, 1000, 4000)),
        "smoke": dict(n_test=8, n_max=10, curve=(2,)),
    },
    "ch18": {   # search: rollouts, the value MLP's steps and width, lists, beam breadths
        "cpu": dict(n_rollouts=30, value_steps=2000, value_width=128, n_lists=40,
                    breadths=(1, 5)),
        "full": dict(n_rollouts=100, value_steps=6000, value_width=1024, n_lists=200,
                     breadths=(1, 2, 3, 5)),
        "smoke": dict(n_rollouts=4, value_steps=2, n_lists=4),
    },
    "ch19": {   # evaluation: additions, multiple-choice questions, images
        "cpu": dict(n_problems=200, n_questions=72, n_images=60),
        "full": dict(n_problems=460, n_questions=1200, n_images=1000),
    },
}
# The chapters that fine-tune on the benchmark's base (ch11 and ch13 train nothing).
PEFT_CHAPTERS = ("ch07", "ch08", "ch09", "ch10", "ch12", "ch14", "ch15")


class Settings(dict):
    """A chapter's settings: a dict whose keys also read as attributes (``s.steps``)."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"no setting {key!r}; known: {', '.join(self)}") from None


def settings(chapter: str, profile: str, **overrides) -> Settings:
    """``TABLE[chapter][profile]``, with ``overrides`` (e.g. ``steps=2`` in the tests)
    replacing known keys; an unknown chapter, profile or key is a ValueError naming it.

    With ``MINILLAMA_SMOKE=1`` the full column takes the row's ``smoke`` sizes (the full
    models, a step or two, a few records): a smoke run of a full-profile notebook on a
    CPU, ``PYTHONOPTIMIZE=1`` leaving out the asserts that such a run cannot meet,
    checks that every full-profile cell runs."""
    if chapter in PEFT_CHAPTERS and chapter not in TABLE:   # ch07, ch09, ch10 have their own
        chapter = "bench"
    if chapter not in TABLE:
        raise ValueError(f"no profile settings for {chapter!r}; known: {', '.join(TABLE)}")
    if profile not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {profile!r}: expected 'cpu' or 'full'")
    out = Settings(TABLE[chapter][profile])
    if profile == "full" and smoke():
        out.update(TABLE[chapter].get("smoke", {}))
    bad = sorted(set(overrides) - set(out))
    if bad:
        raise ValueError(f"{chapter}: unknown setting(s) {bad}; known: {', '.join(out)}")
    out.update(overrides)
    return out


def smoke() -> bool:
    """Whether ``MINILLAMA_SMOKE=1`` asks for the full column's smoke sizes."""
    return os.environ.get(SMOKE_ENV, "").strip() == "1"


def full_dir() -> Path:
    """``FULL_DIR``, or its ``smoke/`` folder in a smoke run (never mixed up)."""
    return FULL_DIR / "smoke" if smoke() else FULL_DIR
