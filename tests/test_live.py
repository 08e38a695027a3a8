"""The full profile's live-trained models (``minillama/live.py``): the byte-level recipes'
twins are 10x+ the size on the same data and schedule, a twin continues from its parent's
twin, and a cached checkpoint is reused only while its card still matches."""

import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from minillama import live, profiles
from minillama.model import Llama
from minillama.recipes import RECIPES, get_recipe, initial_model
from minillama.reference import REFERENCE_DIR, load_reference

pytestmark = pytest.mark.usefixtures("one_thread")      # conftest.py

TWINS = ("mod10", "mod10-paths", "mod10-mix", "add5", "add5-lsb", "sort")
TINY = dict(steps=2, batch_size=2, warmup=1, log_every=1, eval_every=1, eval_batches=1,
            progress=False)
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def n_params(cfg) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in Llama(cfg).parameters())


@pytest.mark.parametrize("name", TWINS)
def test_a_twin_is_its_recipe_at_ten_times_the_size(name):
    cpu, full = RECIPES[name], RECIPES[live.recipe_name(name, "full")]
    assert n_params(full.model) >= 10 * n_params(cpu.model)
    assert full.task == cpu.task and full.train.lr < cpu.train.lr
    assert replace(full.train, lr=cpu.train.lr) == cpu.train       # the same schedule
    assert full.init_from == (cpu.init_from and cpu.init_from + "-full")


@pytest.mark.parametrize("chapter", ["ch16", "ch17", "ch18"])
def test_chapters_16_to_18_load_only_live_references_and_grow_them(chapter):
    """Each reference the notebook names to ``live.reference`` as a literal has a twin 10x+
    its size (those passed in a variable, ch17's add5 pair, are covered by the twin test
    above), and the notebook loads no shipped model directly."""
    source = next(NOTEBOOKS.glob(f"{chapter}_*.py")).read_text()
    names = set(re.findall(r'live\.reference\((?:"([\w-]+)"|\w+)', source)) - {""}
    assert names and "load_reference(" not in source, (chapter, names)
    for name in names:
        cpu, full = RECIPES[name].model, RECIPES[live.recipe_name(name, "full")].model
        assert n_params(full) >= 10 * n_params(cpu), name


def test_the_cpu_profile_is_the_shipped_reference():
    assert live.directory("mod10", "cpu") == REFERENCE_DIR / "mod10"
    with pytest.raises(ValueError, match="no shipped reference 'mod10-full'"):
        live.directory("mod10-full", "cpu")
    with pytest.raises(ValueError, match="unknown profile 'gpu'"):
        live.directory("mod10", "gpu")


def test_an_unshipped_parent_must_be_named():
    with pytest.raises(ValueError, match="continues from mod10-full, which is not shipped"):
        initial_model(get_recipe("mod10-mix-full"))


@pytest.fixture
def small_twins(monkeypatch):
    """The mod-10 twins at a tenth of their data and a small width: the mechanism, quickly."""
    for name in ("mod10-full", "mod10-mix-full"):
        r = RECIPES[name]
        monkeypatch.setitem(RECIPES, name, replace(
            r, model=r.model.replace(dim=64, n_layers=2, n_heads=2),
            task=replace(r.task, n_train=400, n_val=20)))


def test_a_twin_trains_its_parent_first_and_is_reused_while_its_card_matches(tmp_path,
                                                                           monkeypatch,
                                                                           small_twins):
    child = live.directory("mod10-mix", "full", cache=tmp_path, train=TINY, n_problems=0)
    parent = tmp_path / "mod10-full"
    assert child == tmp_path / "mod10-mix-full"
    _, _, card = load_reference(child)
    _, _, parent_card = load_reference(parent)
    assert (card["recipe"], card["steps"], card["examples_seen"], card["init_from"]) == \
        ("mod10-mix-full", 2, 4, "mod10-full")
    assert card["init_sha256"] == parent_card["sha256"]["model.safetensors"]
    log = (child / "metrics.jsonl").read_text().splitlines()
    assert len(log) == 2 and '"loss"' in log[0]

    def no_training(*a, **k):
        raise AssertionError("a matching checkpoint was trained again")
    monkeypatch.setattr(live, "train_recipe", no_training)
    assert live.directory("mod10-mix", "full", cache=tmp_path, train=TINY) == child
    monkeypatch.undo()

    # the parent retrained (3 steps): the child's card no longer matches its parent
    live.directory("mod10", "full", cache=tmp_path, train=dict(TINY, steps=3), n_problems=0)
    recipe = get_recipe("mod10-mix-full", **TINY)
    assert not live._up_to_date(child, recipe, parent)
    assert live._up_to_date(child, recipe, None) is False       # a continuation needs its parent
    # an edited recipe (its learning rate) no longer matches its checkpoint either
    root = get_recipe("mod10-full", **dict(TINY, steps=3))
    assert live._up_to_date(parent, root, None)
    assert not live._up_to_date(parent, get_recipe("mod10-full", **dict(TINY, steps=3, lr=1e-3)),
                                None)


def test_a_smoke_run_trains_two_steps_into_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(profiles, "FULL_DIR", tmp_path)
    monkeypatch.setenv(profiles.SMOKE_ENV, "1")
    assert live.recipe("sort", "full").train.steps == profiles.SMOKE_TRAIN["steps"] == 2
    assert live.recipe("sort", "cpu").train.steps == RECIPES["sort"].train.steps
    path = live.directory("sort", "full")
    assert path == tmp_path / "smoke" / "sort-full"
    model, tok, card = load_reference(path)
    assert card["tokens_seen"] == 2 * 2 * RECIPES["sort"].train.seq_len
    assert {"accuracy_sort", "accuracy_sort_len8"} <= set(card)
    assert n_params(model.cfg) >= 10 * n_params(RECIPES["sort"].model)
