"""Models the full profile trains live, instead of loading a shipped reference.

The CPU profile loads the shipped references (``minillama/reference/``). The full profile
trains each recipe's full-profile twin (``recipes.py``: ``mod10`` -> ``mod10-full``, ...)
on first use and keeps it under ``profiles.full_dir()`` (``build/full/`` by default) as a
reference checkpoint with its card, so the next chapter that asks reuses it:

    model, tok, card = live.reference("mod10-mix", PROFILE, DEVICE)

A twin that continues from another (``mod10-mix-full`` from ``mod10-full``) has its parent
trained first. A cached checkpoint is reused only if its card records the same recipe
(``recipes.fingerprint``: model, schedule, task) and parent weights; anything else (an edited
recipe, a retrained parent, no card) trains it again. ``recipes.train_recipe`` writes the
folder whole or not at all, so a killed run leaves nothing half-written to reuse.
"""

from __future__ import annotations

from pathlib import Path

from .files import read_json
from .profiles import PROFILE_NAMES, SMOKE_TRAIN, full_dir, smoke
from .recipes import fingerprint, get_recipe, train_recipe
from .reference import REFERENCE_DIR, load_reference, verify


def recipe_name(name: str, profile: str) -> str:
    """The recipe whose model ``profile`` uses for the reference ``name``."""
    if profile not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {profile!r}: expected 'cpu' or 'full'")
    return name if profile == "cpu" else f"{name}-full"


def recipe(name: str, profile: str):
    """The recipe ``profile`` trains for reference ``name``: ``name`` itself (cpu, shipped)
    or its full twin, with ``profiles.SMOKE_TRAIN``'s schedule in a smoke run."""
    full = recipe_name(name, profile) != name
    return get_recipe(recipe_name(name, profile), **(SMOKE_TRAIN if full and smoke() else {}))


def directory(name: str, profile: str, *, cache=None, train: dict | None = None,
              device="cpu", n_problems: int | None = None) -> Path:
    """The checkpoint folder of reference ``name`` in ``profile``: shipped (cpu), or the
    full twin under ``cache`` (default ``profiles.full_dir()``), trained there first on
    ``device`` unless its card matches. ``train``: ``TrainConfig`` overrides for every recipe
    trained (a smoke run uses ``profiles.SMOKE_TRAIN``); ``n_problems``: problems the card
    is scored on (200; a smoke run 4)."""
    if recipe_name(name, profile) == name:                  # cpu: the shipped reference
        if not (REFERENCE_DIR / name).is_dir():
            raise ValueError(f"no shipped reference {name!r} for the cpu profile")
        return REFERENCE_DIR / name
    r = recipe(name, profile) if train is None else get_recipe(recipe_name(name, profile), **train)
    cache = Path(cache or full_dir())
    n_problems = n_problems if n_problems is not None else 4 if smoke() else 200
    start = None
    if r.init_from:                                         # the parent's twin, first
        start = directory(r.init_from.removesuffix("-full"), profile, cache=cache,
                          train=train, device=device, n_problems=n_problems)
    dest = cache / r.name
    if not _up_to_date(dest, r, start):
        print(f"training {r.name} ({r.train.steps} steps) into {dest}", flush=True)
        train_recipe(r, dest, device=device, n_problems=n_problems, start=start)
    return dest


def reference(name: str, profile: str, device="cpu", **options):
    """(model, tokenizer, card) of reference ``name`` in ``profile``: ``load_reference`` of
    ``directory(name, profile, device=device, **options)``, its files checked."""
    return load_reference(directory(name, profile, device=device, **options), device=device)


def _up_to_date(dest: Path, recipe, start: Path | None) -> bool:
    """Whether ``dest`` holds ``recipe`` as it is now (its fingerprint) and, for a
    continuation, was trained from the weights now in ``start``."""
    if not (dest / "card.json").is_file():
        return False
    card = read_json(dest / "card.json")
    parent = verify(start)["sha256"]["model.safetensors"] if start else None
    return (card.get("recipe_sha256"), card.get("init_sha256")) == (fingerprint(recipe), parent)
