"""The PEFT chapters' claims, held on the shipped base and adapters (``tasks/bench.py``).

Figures come from the adapters' cards; ``test_cards_are_true`` re-measures a sample of
them from the files so that a card cannot drift from its adapter. Targets (issue 15):

* the base answers >= 85% of 1,000 unseen problems in its plain pretraining form and at
  least 60 points fewer in the Alpaca template (chapters 7 and 15);
* every method ends >= 50 points above the base in the Alpaca template;
* LoRA q,v r=8 reaches >= 95% of full fine-tuning's exact match (chapter 7);
* QLoRA is within 2 points of 16-bit LoRA at the same rank, targets and steps (chapter 12);
* Adapter V1's zero-init gates start as the base (KL 0) and random ones do not, and the
  mean loss over the first steps is lower with zero gates on each of 3 seeds (chapter 8);
* V2's ablations each remove one ingredient (chapter 9);
* on noisy labels the Excitor forgets less than LoRA q,v on each of 3 seeds, with
  non-overlapping 95% intervals (chapter 10).

Targets that do not hold on the shipped adapters are marked ``xfail(strict=True)`` with
the measured figures in the reason: the threshold itself is still what is asserted, the
failure is reported in every run, and the day it holds the test turns red (XPASS) so
that the chapters' prose, which says the target fails, is updated with it.
"""

import pytest
import torch

from minillama.files import read_json
from minillama.metrics import wilson_interval
from minillama.tasks import bench

pytestmark = pytest.mark.usefixtures("one_thread")      # conftest.py

MAIN = ["full", "lora-qv", "lora-all", "qlora", "adapter-v1", "adapter-v2", "excitor"]
BELOW_TARGET = {        # measured on the shipped cards (150 steps, lr from adapters/sweep.json)
    "adapter-v1": "V1 reaches 52.4% [48.0, 56.7], 47.0 points above the base's 5.4%",
    "excitor": "the Excitor reaches 33.4% [29.4, 37.6], 28.0 points above the base's 5.4%"}
FIRST_STEPS = 20            # "the first N steps" of chapter 8, fixed before looking


def card(name):
    return bench.shipped(name)


def test_base_has_the_skill_in_plain_form_and_not_in_the_template():
    stored = read_json(bench.ADAPTER_DIR / "base.json")
    assert stored["n"] >= 1000
    assert stored["plain_exact_match"] >= 0.85
    assert stored["alpaca_exact_match"] <= stored["plain_exact_match"] - 0.60
    again = bench.base_skill()
    assert again["plain_exact_match"] == stored["plain_exact_match"]
    assert again["alpaca_exact_match"] == stored["alpaca_exact_match"]


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=BELOW_TARGET[n]))
    if n in BELOW_TARGET else n for n in MAIN])
def test_every_method_learns_the_template(name):
    base = bench.card_figures(bench.base_figures())["test_exact_match"]
    assert card(name)["test_exact_match"] >= base + 0.50


def test_lora_qv_reaches_95_percent_of_full_fine_tuning():
    assert card("lora-qv")["test_exact_match"] >= 0.95 * card("full")["test_exact_match"]
    assert card("lora-qv")["trainable_share"] < 0.02


@pytest.mark.xfail(strict=True, reason="QLoRA 72.4% [68.3, 76.1] is 2.6 points below "
                   "LoRA q,v 75.0% [71.0, 78.6] (the intervals overlap)")
def test_qlora_is_within_two_points_of_lora():
    assert abs(card("qlora")["test_exact_match"] - card("lora-qv")["test_exact_match"]) <= 0.02


def test_zero_gates_start_as_the_base_and_random_gates_do_not():
    base, _, _ = __import__("minillama").reference.load_reference(bench.BASE)
    x = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46]])
    want = base(x)
    for name, same in (("adapter-v1", True), ("adapter-v1-random", False)):
        model, _ = bench.fresh(bench.METHODS[name])
        assert torch.equal(model(x), want) is same


@pytest.mark.xfail(strict=True, reason="mean loss over the first 20 steps, zero vs random "
                   "gates: seed 0 0.620 vs 0.598, seed 1 0.618 vs 0.622, seed 2 0.622 vs 0.598")
def test_zero_gates_learn_faster_at_first_on_every_seed():
    for seed in bench.SEEDS:
        zero = card(bench.adapter_name("adapter-v1", seed=seed))["train_loss"][:FIRST_STEPS]
        rand = card(bench.adapter_name("adapter-v1-random", seed=seed))["train_loss"][:FIRST_STEPS]
        assert sum(zero) / len(zero) < sum(rand) / len(rand), seed


def test_v2_ablations_each_freeze_one_ingredient_at_identity():
    full = card("adapter-v2")
    for name, ingredient in (("adapter-v2-no-bias-scale", "bias_scale"),
                             ("adapter-v2-no-norms", "norms"),
                             ("adapter-v2-no-prompts", "prompts")):
        ablation = card(name)
        assert ablation["frozen"] == [ingredient]
        assert 0 < ablation["trainable_parameters"] < full["trainable_parameters"]
        assert ablation["steps"] == full["steps"] and ablation["lr"] == full["lr"]


def _forgetting_interval(c):
    """95% interval of the drop in plain-form exact match (the base's score is fixed)."""
    n = c["test_records"]
    lo, hi = wilson_interval(round(c["plain_exact_match"] * n), n)
    base = c["plain_exact_match"] + c["forgetting"]
    return base - hi, base - lo


def test_excitor_forgets_less_than_lora_on_noisy_labels_on_every_seed():
    for seed in bench.SEEDS:
        excitor = card(bench.adapter_name("excitor", noisy=True, seed=seed))
        lora = card(bench.adapter_name("lora-qv", noisy=True, seed=seed))
        assert excitor["noise"] == lora["noise"] == bench.NOISE
        assert _forgetting_interval(excitor)[1] < _forgetting_interval(lora)[0], seed


@pytest.mark.parametrize("name", ["lora-qv", "adapter-v1", "excitor"])
def test_cards_are_true(name):
    model, tok, stored = bench.load_adapter(name)
    figures = bench.card_figures(bench.measure(model, tok))
    for key in ("test_exact_match", "ci95", "forgetting", "plain_exact_match"):
        assert figures[key] == stored[key], key
