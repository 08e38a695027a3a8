"""The PEFT benchmark: one task, one budget, every method measured the same way.

The base model (the ``peft-base`` reference) has mastered seven task families in the
plain form of its pretraining text (``Find the biggest number.\\n4, 9, 1\\nAnswer:\\n9``)
and almost never answers them in the Alpaca template (``format_prompt``). Instruction
tuning then has one visible job, teaching the format: LIMA's "superficial alignment"
hypothesis (Zhou et al., arXiv 2305.11206). Methods are compared on how well they do
that job and on what they forget.

* **Training data**: ``N_TRAIN`` Alpaca records of the five ``TRAIN_FAMILIES``; the
  noisy variant gives ``NOISE`` of them a wrong or sloppy answer (``instruction_data``).
* **Test set**: ``N_TEST`` records of all seven families, none seen in pretraining or in
  the training data; two families (``HELDOUT_FAMILIES``) are never in the Alpaca
  training data, so they show whether the format transfers to skills not tuned on.
* **Budget**: ``STEPS`` steps of ``BATCH`` records, warmup ``WARMUP``, for every method;
  each method's learning rate was chosen by a recorded sweep on a validation set
  (``scripts/train_adapters.py sweep``, written to ``adapters/sweep.json``).
* **Figures**: exact match in the Alpaca template with its 95% Wilson interval, and
  forgetting: the drop in plain-form exact match on the same problems, from the base.

**Profiles.** The sizes above are the CPU profile's (``profiles.TABLE["bench"]``). A
chapter starts with ``base, tok, card = bench.base(PROFILE, DEVICE)``, which selects that
profile's benchmark for the process: in the full profile, the ``peft-base-full`` base
(12.5x the parameters), trained on first use and cached with its card under
``build/full/`` (``live.py``) so the later chapters reuse it, 1,000 test problems, and
learning rates swept on that base, each method's grid once (``SWEEP``, cached beside it).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from .. import live, peft
from ..checkpoints import load, save
from ..data import instruction_data
from ..files import atomic_directory, atomic_file, read_json, write_json
from ..finetune import finetune, greedy_score
from ..metrics import wilson_interval
from ..model import Llama
from ..peft.adapter_v1 import top_layers
from ..peft.adapter_v2 import BiasScaleLinear
from ..peft.lora import TARGETS
from ..profiles import FULL_DIR, full_dir, settings
from ..reference import hardware, load_reference, sha256_file, verify
from .text import MIXED_FAMILIES, SKILL_FAMILIES, task_prompt

BASE = "peft-base"
TRAIN_FAMILIES = ["max_list", "uppercase", "count_words", "refusal", "list_to_csv"]
HELDOUT_FAMILIES = ["min_list", "capitalize"]       # siblings of max_list and uppercase
NOISE = 0.3                                         # the noisy variant: 30% wrong answers
N_TRAIN, N_VAL, N_TEST, N_BASE = 2400, 300, 500, 1000      # the CPU profile's: see base()
STEPS, BATCH, WARMUP = 150, 16, 15
SEEDS = (0, 1, 2)                                   # where a claim needs several runs
ADAPTER_DIR = Path(__file__).resolve().parent.parent / "adapters"
PROFILE = "cpu"                  # the benchmark this process measures (set by base())
_LIVE: Path | None = None        # the full profile's trained base (None: the reference BASE)
_ID = BASE                       # the base's name (full: and its weights' sha256 prefix)
_CACHE: Path = FULL_DIR          # where the full profile keeps its base, problems and sweep
_DEVICE = "cpu"                  # where base() put the base: sweeps and base figures run there
assert sorted(TRAIN_FAMILIES + HELDOUT_FAMILIES) == sorted(SKILL_FAMILIES)


@dataclass(frozen=True)
class Method:
    """One contestant: a PEFT method and options (None: full fine-tuning) and its lr.

    ``gates="random"`` draws Adapter V1's gates from N(0, 1) before training;
    ``freeze`` keeps named V2 ingredients at their identity init (the ablation)."""

    name: str
    method: str | None
    options: dict = field(default_factory=dict)
    lr: float = 1e-3
    gates: str = "zero"
    freeze: tuple = ()
    about: str = ""


QV = ("wq", "wv")
METHODS: dict[str, Method] = {m.name: m for m in [
    Method("full", None, {}, 1e-4, about="full fine-tuning, every weight"),
    Method("lora-qv", "lora", dict(r=8, alpha=16, targets=QV), 3e-3,
           about="LoRA r=8 on wq, wv (the paper's choice)"),
    Method("lora-all", "lora", dict(r=8, alpha=16, targets=TARGETS), 3e-3,
           about="LoRA r=8 on all seven linears"),
    Method("qlora", "qlora", dict(r=8, alpha=16, dropout=0.0, targets=QV), 3e-3,
           about="LoRA r=8 on wq, wv over an NF4 base"),
    Method("adapter-v1", "adapter_v1", dict(layers=6), 1e-2,
           about="LLaMA-Adapter V1, prompts in all 6 blocks, zero-init gates"),
    Method("adapter-v1-random", "adapter_v1", dict(layers=6), 1e-2, gates="random",
           about="the same with gates drawn from N(0, 1)"),
    Method("adapter-v2", "adapter_v2", dict(layers=6), 1e-2,
           about="LLaMA-Adapter V2: bias/scale, unfrozen norms, prompts"),
    Method("adapter-v2-no-bias-scale", "adapter_v2", dict(layers=6), 1e-2,
           freeze=("bias_scale",), about="V2 without its bias/scale"),
    Method("adapter-v2-no-norms", "adapter_v2", dict(layers=6), 1e-2,
           freeze=("norms",), about="V2 with the norms frozen"),
    Method("adapter-v2-no-prompts", "adapter_v2", dict(layers=6), 1e-2,
           freeze=("prompts",), about="V2 without its prompts"),
    Method("excitor", "excitor", dict(layers=6), 1e-2,
           about="LLaMA-Excitor, prompts and excitor in all 6 blocks"),
]}


def method(name: str) -> Method:
    """The method of that name, with its swept learning rate where a sweep was recorded."""
    if name not in METHODS:
        raise ValueError(f"unknown benchmark method {name!r}; choose from {', '.join(METHODS)}")
    m = METHODS[name]
    lr = swept_lrs().get(name)
    if lr is None and PROFILE == "full" and PARENT.get(name, name) in SWEEP:
        lr = sweep(PARENT.get(name, name))[name]
    return m if lr is None else Method(**{**m.__dict__, "lr": lr})


def swept_lrs() -> dict:
    """The chosen rates: the shipped sweep (CPU profile), or in the full profile those swept
    so far on the full base; ``method`` sweeps a missing one first (``sweep``)."""
    return sweep_record().get("chosen", {})


def sweep_record() -> dict:
    """This profile's sweep file (rule, sizes, every rate's figures, chosen), or {}."""
    path = ADAPTER_DIR / "sweep.json" if PROFILE == "cpu" else _sweep_path()
    return json.loads(path.read_text()) if path.exists() else {}


# ----------------------------------------------------------------------------- data
def _key(r):
    return r["instruction"], r["input"]


@lru_cache(maxsize=1)
def _pretraining_problems() -> frozenset:
    """Every task problem of the base's pretraining text (``mixed`` and ``peft-base``)."""
    seen = instruction_data(60000, seed=101, families=MIXED_FAMILIES)      # mixed
    seen += instruction_data(120000, seed=101, families=SKILL_FAMILIES)    # peft-base
    return frozenset(map(_key, seen))


def train_records(noisy: bool = False) -> list[dict]:
    """The Alpaca training records (``NOISE`` of them wrong when ``noisy``)."""
    return instruction_data(N_TRAIN, seed=7, families=TRAIN_FAMILIES,
                            noise=NOISE if noisy else 0.0)


def _unseen(n: int, seed: int) -> list[dict]:
    # every pretraining problem of both bases: peft-base-full's 120,000 skill records are
    # peft-base's (the same seed), so one set serves both profiles
    seen = _pretraining_problems() | set(map(_key, train_records()))
    out, got = [], set()
    for r in instruction_data(4 * n, seed=seed, families=SKILL_FAMILIES):
        if _key(r) not in seen and _key(r) not in got:
            out.append(r)
            got.add(_key(r))
    if len(out) < n:
        raise RuntimeError(f"only {len(out)} unseen problems for {n}")
    return out[:n]


def make_problems() -> dict:
    """The test and validation problems, generated (about 10 s: it lists every problem
    of the pretraining text). ``adapters/problems.json`` stores the result."""
    test = _unseen(N_TEST, seed=8)
    taken = set(map(_key, test))
    val = [r for r in _unseen(N_VAL + N_TEST, seed=9) if _key(r) not in taken][:N_VAL]
    return {"test": test, "val": val, "base": _unseen(N_BASE, seed=10)}


@lru_cache(maxsize=1)
def _problems() -> dict:
    path = ADAPTER_DIR / "problems.json"
    if PROFILE == "full":        # generated once per size, kept beside the full base
        path = _CACHE / f"problems-{N_TEST}-{N_VAL}-{N_BASE}-{N_TRAIN}.json"
        if not path.exists():
            with atomic_file(path) as tmp:
                write_json(make_problems(), tmp)
    return read_json(path) if path.exists() else make_problems()


def test_records() -> list[dict]:
    """``N_TEST`` problems of all seven families, unseen in pretraining and training."""
    return [dict(r) for r in _problems()["test"]]


def base_records() -> list[dict]:
    """``N_BASE`` unseen problems on which the base's own skill is measured."""
    return [dict(r) for r in _problems()["base"]]


def val_records() -> list[dict]:
    """``N_VAL`` other unseen problems: the learning-rate sweep looks at these, not the test."""
    return [dict(r) for r in _problems()["val"]]


# ----------------------------------------------------------------------------- measure
def measure(model, tok, records=None, device="cpu") -> dict:
    """Exact match in the Alpaca template (with 95% interval and per family) and in the
    plain pretraining form, on ``records`` (default: the test set)."""
    records = test_records() if records is None else records
    alpaca = greedy_score(model, tok, records, device=device)
    plain = greedy_score(model, tok, records, device=device, template=task_prompt)
    n, hits = alpaca["n"], round(alpaca["exact_match"] * alpaca["n"])
    held = [alpaca["per_family"][f] for f in HELDOUT_FAMILIES if f in alpaca["per_family"]]
    return {"exact_match": alpaca["exact_match"], "n": n,
            "ci95": [round(x, 4) for x in wilson_interval(hits, n)],
            "plain_exact_match": plain["exact_match"], "loss": alpaca["loss"],
            "heldout_families_exact_match": sum(held) / len(held) if held else None,
            "per_family": alpaca["per_family"], "plain_per_family": plain["per_family"]}


@lru_cache(maxsize=1)
def base_figures() -> dict:
    """The base model on the test set (forgetting is measured from its plain-form score)."""
    model, tok, _ = load_base(_DEVICE)
    return measure(model, tok, device=_DEVICE)


def base_skill(device="cpu") -> dict:
    """The base on ``N_BASE`` unseen problems, plain form vs the Alpaca template."""
    model, tok, _ = load_base(device)
    fig = measure(model, tok, base_records(), device=device)
    plain_hits = round(fig["plain_exact_match"] * fig["n"])
    return {"n": fig["n"], "plain_exact_match": round(fig["plain_exact_match"], 4),
            "plain_ci95": [round(x, 4) for x in wilson_interval(plain_hits, fig["n"])],
            "alpaca_exact_match": round(fig["exact_match"], 4), "alpaca_ci95": fig["ci95"],
            "plain_per_family": {k: round(v, 4) for k, v in fig["plain_per_family"].items()}}


# ----------------------------------------------------------------------------- train
def fresh(m: Method, seed: int = 0, device="cpu"):
    """(model, tokenizer): the base with ``m`` applied, ready to train."""
    model, tok, _ = load_base(device)
    if m.method is None:
        return model.requires_grad_(True), tok
    torch.manual_seed(seed)                          # the prompts' and LoRA A's init
    peft.apply(model, m.method, **m.options)
    if m.gates == "random":
        g = torch.Generator().manual_seed(1000 + seed)
        with torch.no_grad():
            for i in top_layers(model, m.options["layers"]):
                gate = model.layers[i].attention.prompt.gate
                gate.copy_(torch.randn(gate.shape, generator=g))
    for ingredient in m.freeze:
        _parts(model, ingredient).requires_grad_(False)
    return model, tok


def _parts(model, ingredient: str) -> torch.nn.ModuleList:
    """V2's ingredients: its bias/scale wrappers, its norms, its prompt modules."""
    if ingredient == "bias_scale":
        mods = [mod for mod in model.modules() if isinstance(mod, BiasScaleLinear)]
        return torch.nn.ModuleList(torch.nn.ParameterList([mod.bias, mod.scale]) for mod in mods)
    if ingredient == "norms":
        return torch.nn.ModuleList([*(l.attention_norm for l in model.layers),
                                    *(l.ffn_norm for l in model.layers), model.norm])
    if ingredient == "prompts":
        return torch.nn.ModuleList(l.attention.prompt for l in model.layers
                                   if l.attention.prompt is not None)
    raise ValueError(f"unknown V2 ingredient {ingredient!r}: bias_scale, norms or prompts")


def run(m: Method, noisy: bool = False, seed: int = 0, steps: int | None = None, device="cpu",
        lr: float | None = None):
    """Train ``m`` on the benchmark (``STEPS`` steps unless ``steps``); (model, tokenizer,
    log, wall seconds).

    QLoRA trains with bitsandbytes' paged AdamW where the model is on CUDA, as the paper
    does, and with the same AdamW as every other method on the CPU (``devices.adamw_kind``).
    """
    steps = STEPS if steps is None else steps
    model, tok = fresh(m, seed, device)
    t0 = time.perf_counter()
    log = finetune(model, tok, train_records(noisy), steps=steps, lr=lr or m.lr,
                   batch_size=BATCH, warmup=WARMUP, seed=seed, device=device,
                   paged=m.method == "qlora")
    wall = time.perf_counter() - t0
    for ingredient in m.freeze:         # saved with the rest, still at their identity init
        _parts(model, ingredient).requires_grad_(True)
    return model, tok, log, wall


def trainable_share(model, m: Method) -> tuple[int, float]:
    """(values ``m`` trains, their share of the base model's parameters). An ablation's
    frozen ingredient is left out even after ``run`` has re-enabled it for saving."""
    with torch.device("meta"):
        base = sum(p.numel() for p in Llama(model.cfg).parameters())
    if m.method is None:
        return base, 1.0
    frozen = {id(p) for ingredient in m.freeze for p in _parts(model, ingredient).parameters()}
    n = sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in frozen)
    return n, n / base


# ----------------------------------------------------------------------------- ship
def _files(full: bool) -> tuple[str, ...]:
    """The files a shipped adapter's card vouches for: a whole model, or the adapter."""
    return ("model.safetensors", "config.json") if full else peft.io.FILES["minillama"]


def adapter_card(directory) -> dict:
    """The card of the shipped adapter at ``directory`` (or named so in ``adapters/``),
    after checking each of its files against the card's sha256."""
    directory = _adapter_dir(directory)
    path = directory / "card.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory} has no card.json: not a shipped adapter")
    card = read_json(path)
    if not isinstance(card, dict) or "method" not in card:
        raise ValueError(f"{path} is not an adapter card (no 'method')")
    return verify(directory, required=_files(card["method"] is None))


def shipped(name: str) -> dict:
    """The card of the shipped adapter ``name`` (e.g. "lora-qv", "excitor-noisy-s2"),
    its files checked against the card's sha256."""
    return adapter_card(ADAPTER_DIR / name)


def _adapter_dir(directory) -> Path:
    directory = Path(directory)
    if not directory.is_dir() and (ADAPTER_DIR / str(directory)).is_dir():
        return ADAPTER_DIR / str(directory)
    if not directory.is_dir():
        known = sorted(p.name for p in ADAPTER_DIR.glob("*") if p.is_dir())
        raise FileNotFoundError(f"no adapter {str(directory)!r}; shipped: {known}")
    return directory


def load_adapter(directory, device="cpu", check: bool = True):
    """(model, tokenizer, card) of a shipped adapter: the base with it loaded (full
    fine-tuning: the whole model), every file checked against the card's sha256."""
    directory = _adapter_dir(directory)
    card = adapter_card(directory) if check else {}
    full = (directory / "config.json").is_file()
    base, tok, _ = load_reference(BASE, device=device)
    model = load(directory).to(device) if full else peft.load(base, directory)
    return model.eval(), tok, card


def publish(model, tok, m: Method, dest, facts: dict, device="cpu") -> dict:
    """Write the trained ``model`` to ``dest`` with its card, measured from the files as
    written (so that ``python -m minillama eval dest`` finds the same figures). The
    directory appears whole or not at all (``atomic_directory``)."""
    with atomic_directory(dest, replaces=("*",)) as tmp:
        if m.method is None:
            save(model.to(torch.bfloat16), tmp / "w")
        else:
            peft.save(model, tmp / "w")
        for f in (tmp / "w").iterdir():
            f.rename(tmp / f.name)
        (tmp / "w").rmdir()
        loaded, _, _ = load_adapter(tmp, device=device, check=False)
        card = dict(facts, method=m.method, **card_figures(measure(loaded, tok, device=device)),
                    sha256={f: sha256_file(tmp / f) for f in _files(m.method is None)})
        write_json(card, tmp / "card.json")
    return card


def card_figures(fig: dict) -> dict:
    """The card's figures from ``measure``: test exact match, interval, forgetting."""
    base = base_figures()
    return {"test_exact_match": round(fig["exact_match"], 4), "test_records": fig["n"],
            "ci95": fig["ci95"], "plain_exact_match": round(fig["plain_exact_match"], 4),
            "forgetting": round(base["plain_exact_match"] - fig["plain_exact_match"], 4),
            "heldout_families_exact_match": round(fig["heldout_families_exact_match"], 4),
            "test_loss": round(fig["loss"], 4),
            "per_family": {k: round(v, 4) for k, v in fig["per_family"].items()}}


# ----------------------------------------------------------------------------- the set
# Learning rates tried for each swept method; the others take the rate of their parent
# (QLoRA that of LoRA q,v, for a like-for-like comparison; V1 random gates that of V1; the
# V2 ablations that of V2).
# A grid whose best rate lay on its edge was extended until the best was inside it.
SWEEP = {"full": (3e-5, 1e-4, 3e-4, 1e-3), "lora-qv": (1e-3, 3e-3, 1e-2, 3e-2),
         "lora-all": (1e-3, 3e-3, 1e-2), "adapter-v1": (3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0),
         "adapter-v2": (3e-3, 1e-2, 3e-2), "excitor": (3e-3, 1e-2, 3e-2, 1e-1, 3e-1)}
PARENT = {"qlora": "lora-qv", "adapter-v1-random": "adapter-v1",
          "adapter-v2-no-bias-scale": "adapter-v2", "adapter-v2-no-norms": "adapter-v2",
          "adapter-v2-no-prompts": "adapter-v2"}


def adapter_name(name: str, noisy: bool = False, seed: int = 0) -> str:
    return name + ("-noisy" if noisy else "") + (f"-s{seed}" if seed else "")


# (method, noisy, seed) of every shipped adapter: each method once on clean data; the V1
# gates and the noisy-label LoRA/Excitor comparison over three seeds.
SHIPPED = ([(name, False, 0) for name in METHODS]
           + [(name, False, s) for name in ("adapter-v1", "adapter-v1-random") for s in SEEDS[1:]]
           + [(name, True, s) for name in ("lora-qv", "excitor") for s in SEEDS])


# ----------------------------------------------------------------------------- profiles
def base(profile: str = "cpu", device="cpu", *, cache=None, base_train: dict | None = None,
         **sizes):
    """(model, tokenizer, card) of the benchmark's base in ``profile``, after selecting that
    profile's benchmark (sizes, test set, base, learning rates) for this process.

    ``cpu``: the shipped ``peft-base`` reference. ``full``: ``peft-base-full``, trained
    live under ``cache`` (default ``profiles.full_dir()``) on first use (``live.py``).
    ``sizes`` override ``profiles.TABLE["bench"][profile]`` and ``base_train`` the base
    recipe's ``TrainConfig`` (the tests run the full path on a CPU with a few steps)."""
    s = settings("bench", profile, **sizes)
    global PROFILE, _LIVE, _ID, _CACHE, _DEVICE
    global N_TRAIN, N_VAL, N_TEST, N_BASE, STEPS, BATCH, WARMUP
    N_TRAIN, N_VAL, N_TEST, N_BASE = s.n_train, s.n_val, s.n_test, s.n_base
    STEPS, BATCH, WARMUP = s.steps, s.batch, s.warmup
    PROFILE, _LIVE, _ID, _CACHE, _DEVICE = profile, None, BASE, Path(cache or full_dir()), device
    for cached in (_problems, base_figures):
        cached.cache_clear()
    if profile == "cpu":
        return load_reference(BASE, device=device)
    _LIVE = live.directory(BASE, profile, cache=_CACHE, train=base_train, device=device,
                           n_problems=s.base_problems)
    model, tok, card = load_reference(_LIVE, device=device)
    _ID = f"{card['recipe']}-{card['sha256']['model.safetensors'][:12]}"   # sweeps: per weights
    return model, tok, card


def load_base(device="cpu"):
    """(model, tokenizer, card): a fresh copy of the base ``base()`` selected, files checked."""
    return load_reference(_LIVE or BASE, device=device)


def _sweep_path() -> Path:
    return _CACHE / f"sweep-{_ID}-{STEPS}x{BATCH}-{N_VAL}.json"


def sweep(name: str, device=None) -> dict:
    """Train method ``name`` at each rate of ``SWEEP[name]`` for the step budget and choose
    the best exact match on the validation problems (the lower loss breaks a tie); the
    rates chosen so far, its children's (``PARENT``) included. Results are merged into
    this profile's sweep file (``_sweep_path``) atomically, so each grid runs once."""
    if name not in SWEEP:
        raise ValueError(f"no sweep grid for {name!r}; swept: {', '.join(SWEEP)}")
    device = device or _DEVICE
    rows = []
    for lr in SWEEP[name]:
        model, tok, log, wall = run(METHODS[name], lr=lr, device=device)
        fig = measure(model, tok, val_records(), device=device)
        rows.append({"lr": lr, "val_exact_match": round(fig["exact_match"], 4),
                     "val_loss": round(fig["loss"], 4),
                     "final_train_loss": round(log[-1]["loss"], 4), "wall_time_s": round(wall, 1)})
        print(f"sweep {name} {rows[-1]}", flush=True)
    path = _sweep_path()
    results = {**(read_json(path)["results"] if path.exists() else {}), name: rows}
    chosen = {n: max(r, key=lambda x: (x["val_exact_match"], -x["val_loss"]))["lr"]
              for n, r in results.items()}
    chosen.update({c: chosen[p] for c, p in PARENT.items() if p in chosen})
    with atomic_file(path) as tmp:
        write_json({"steps": STEPS, "batch": BATCH, "val_records": N_VAL,
                    "base": _ID, "hardware": hardware(),
                    "rule": "best validation exact match (Alpaca template), then lower loss",
                    "results": results, "chosen": chosen}, tmp)
    return chosen
