"""The PEFT chapters' claims, held on the shipped base and adapters (``tasks/bench.py``).

Figures come from the adapters' cards; ``test_cards_are_true`` re-measures a sample of
them from the files so that a card cannot drift from its adapter. Targets (issue 15):

* the base answers >= 85% of 1,000 unseen problems in its plain pretraining form and at
  least 60 points fewer in the Alpaca template (chapters 7 and 15);
* every method ends >= 50 points above the base in the Alpaca template;
* LoRA q,v r=8 reaches >= 95% of full fine-tuning's exact match (chapter 7);
* QLoRA is within 2 points of 16-bit LoRA at the same rank, targets and steps (chapter 12);
* Adapter V1's zero-init gates start as the base (KL 0) and random ones do not, and the
  mean loss over the first steps is lower with zero gates on each of 3 seeds (chapter 8).
"""

import pytest
import torch

from minillama.files import read_json
from minillama.tasks import bench

pytestmark = pytest.mark.usefixtures("one_thread")      # conftest.py

MAIN = ["full", "lora-qv", "lora-all", "qlora", "adapter-v1", "adapter-v2", "excitor"]
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


@pytest.mark.parametrize("name", MAIN)
def test_every_method_learns_the_template(name):
    base = bench.card_figures(bench.base_figures())["test_exact_match"]
    assert card(name)["test_exact_match"] >= base + 0.50


def test_lora_qv_reaches_95_percent_of_full_fine_tuning():
    assert card("lora-qv")["test_exact_match"] >= 0.95 * card("full")["test_exact_match"]
    assert card("lora-qv")["trainable_share"] < 0.02


def test_qlora_is_within_two_points_of_lora():
    assert abs(card("qlora")["test_exact_match"] - card("lora-qv")["test_exact_match"]) <= 0.02


def test_zero_gates_start_as_the_base_and_random_gates_do_not():
    base, _, _ = __import__("minillama").reference.load_reference(bench.BASE)
    x = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46]])
    want = base(x)
    for name, same in (("adapter-v1", True), ("adapter-v1-random", False)):
        model, _ = bench.fresh(bench.METHODS[name])
        assert torch.equal(model(x), want) is same


def test_zero_gates_learn_faster_at_first_on_every_seed():
    for seed in bench.SEEDS:
        zero = card(bench.adapter_name("adapter-v1", seed=seed))["train_loss"][:FIRST_STEPS]
        rand = card(bench.adapter_name("adapter-v1-random", seed=seed))["train_loss"][:FIRST_STEPS]
        assert sum(zero) / len(zero) < sum(rand) / len(rand), seed


@pytest.mark.parametrize("name", ["lora-qv", "adapter-v1", "excitor"])
def test_cards_are_true(name):
    model, tok, stored = bench.load_adapter(name)
    figures = bench.card_figures(bench.measure(model, tok))
    for key in ("test_exact_match", "ci95", "forgetting", "plain_exact_match"):
        assert figures[key] == stored[key], key
