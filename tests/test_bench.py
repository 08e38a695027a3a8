"""The PEFT benchmark's data, intervals and shipped adapter files (``tasks/bench.py``).

The thresholds the chapters claim on the shipped adapters are in
``test_peft_thresholds.py``; here: that the benchmark is what it says it is.
"""

import json
import shutil
import subprocess
import sys

import pytest
import torch

from minillama import peft
from minillama.data import instruction_data
from minillama.metrics import wilson_interval
from minillama.tasks import SKILL_FAMILIES, bench

pytestmark = pytest.mark.usefixtures("one_thread")      # conftest.py


@pytest.mark.parametrize("hits, n, low, high", [   # Newcombe (1998), Stat. Med. 17, Table I
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718)])
def test_wilson_interval_matches_newcombes_table(hits, n, low, high):
    got = wilson_interval(hits, n)
    assert got == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize("hits, n", [(-1, 5), (6, 5), (0, 0)])
def test_wilson_interval_refuses_impossible_counts(hits, n):
    with pytest.raises(ValueError, match="hits <= n"):
        wilson_interval(hits, n)


def test_shipped_problems_are_what_the_code_generates():
    stored = json.loads((bench.ADAPTER_DIR / "problems.json").read_text())
    assert stored == json.loads(json.dumps(bench.make_problems()))


def test_test_problems_are_unseen_distinct_and_cover_every_family():
    test, val, base = bench.test_records(), bench.val_records(), bench.base_records()
    assert (len(test), len(val), len(base)) == (bench.N_TEST, bench.N_VAL, bench.N_BASE)
    assert len(test) >= 500 and len(base) >= 1000                    # the sizes
    key = bench._key
    seen = bench._pretraining_problems() | set(map(key, bench.train_records()))
    for records in (test, val, base):
        keys = list(map(key, records))
        assert len(set(keys)) == len(keys) and not set(keys) & seen
    assert not set(map(key, test)) & set(map(key, val))
    assert {r["family"] for r in test} == set(SKILL_FAMILIES)
    assert {r["family"] for r in bench.train_records()} == set(bench.TRAIN_FAMILIES)


def test_pretraining_problems_are_the_recipes_data():
    """The exclusion list covers exactly what ``mixed`` and ``peft-base`` trained on."""
    from minillama.recipes import get_recipe
    for name in ("mixed", "peft-base"):
        task = get_recipe(name).task
        records = instruction_data(task.n_tasks, seed=task.seed + 101, families=task.families)
        assert set(map(bench._key, records)) <= bench._pretraining_problems()


def test_noisy_training_set_differs_from_the_clean_one_in_exactly_the_noisy_records():
    clean, noisy = bench.train_records(), bench.train_records(noisy=True)
    changed = [i for i, (c, n) in enumerate(zip(clean, noisy)) if c["output"] != n["output"]]
    assert len(changed) == sum(r["noisy"] for r in noisy) == round(bench.NOISE * bench.N_TRAIN)
    assert all(noisy[i]["clean_output"] == clean[i]["output"] for i in changed)


def test_every_shipped_adapter_has_a_card_with_the_required_figures():
    for name, noisy, seed in bench.SHIPPED:
        card = bench.shipped(bench.adapter_name(name, noisy, seed))
        for key in ("test_exact_match", "test_records", "ci95", "forgetting",
                    "trainable_parameters", "trainable_share", "wall_time_s", "steps"):
            assert key in card, (name, key)
        assert card["test_records"] == bench.N_TEST and card["steps"] == bench.STEPS
        low, high = card["ci95"]
        assert low <= card["test_exact_match"] <= high
        assert (card["data"] == "noisy") == noisy and card["seed"] == seed


def test_a_tampered_adapter_is_refused(tmp_path):
    shutil.copytree(bench.ADAPTER_DIR / "lora-qv", tmp_path / "a")
    path = tmp_path / "a" / "adapter.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its card"):
        bench.load_adapter(tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="no adapter"):
        bench.load_adapter("no-such-adapter")


def test_ablations_freeze_only_their_ingredient():
    counts = {}
    for name in ("adapter-v2", "adapter-v2-no-bias-scale", "adapter-v2-no-norms",
                 "adapter-v2-no-prompts"):
        model, _ = bench.fresh(bench.METHODS[name])
        counts[name] = peft.trainable_parameters(model)
    full = counts["adapter-v2"]
    dim, n_layers = 192, 6
    norms = (2 * n_layers + 1) * dim
    assert full - counts["adapter-v2-no-norms"] == norms
    assert full - counts["adapter-v2-no-prompts"] == n_layers * (10 * dim + 6)  # prompts + gates
    assert 0 < counts["adapter-v2-no-bias-scale"] < full


def test_eval_cli_remeasures_a_card(tmp_path):
    out = subprocess.run([sys.executable, "-m", "minillama", "eval",
                          str(bench.ADAPTER_DIR / "lora-qv")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    card = bench.shipped("lora-qv")
    assert result["card_agrees"] is True
    assert result["test_exact_match"] == card["test_exact_match"]
    bad = tmp_path / "lora-qv"
    shutil.copytree(bench.ADAPTER_DIR / "lora-qv", bad)
    card["test_exact_match"] = round(card["test_exact_match"] + 0.1, 4)
    card_path = bad / "card.json"
    card_path.write_text(json.dumps(card))
    out = subprocess.run([sys.executable, "-m", "minillama", "eval", str(bad)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "differ from card.json" in out.stderr
    assert "Traceback" not in out.stderr


def test_publish_then_load_gives_the_same_model(tmp_path):
    m = bench.METHODS["lora-qv"]
    model, tok, _, _ = bench.run(m, steps=2)
    card = bench.publish(model, tok, m, tmp_path / "x", {"name": "x"})
    loaded, _, again = bench.load_adapter(tmp_path / "x")
    x = torch.tensor([[1, 5, 9, 2]])
    torch.testing.assert_close(loaded(x), model(x))
    assert again == card and sorted(p.name for p in (tmp_path / "x").iterdir()) == [
        "adapter.json", "adapter.safetensors", "card.json"]
