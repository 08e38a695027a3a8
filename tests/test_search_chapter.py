"""Chapter 18's shipped `sort` reference: it sorts what it learned, fails beyond, and GoT
sorting with it (split -> sort -> merge -> refine) beats asking for the long list at once."""

import pytest

from minillama.reasoning import sorting as S
from minillama.recipes import get_recipe
from minillama.reference import REFERENCE_DIR, load_reference
from minillama.tasks import (
    model_sort,
    sort_data,
    sort_heldout,
    sort_lists,
    sort_prompt,
    sort_text,
)

pytestmark = [pytest.mark.skipif(not (REFERENCE_DIR / "sort").is_dir(),
                                 reason="minillama/reference/sort has not been trained yet"),
              pytest.mark.usefixtures("one_thread")]      # conftest.py


@pytest.fixture(scope="module")
def sorter():
    model, tok, card = load_reference("sort")
    return model, tok, card


def test_sort_recipe_data_and_held_out_lists():
    recipe = get_recipe("sort")
    assert sort_text([3, 1, 4]) == "Q: sort [3, 1, 4]\nA: [1, 3, 4]"
    assert sort_text([3, 1, 4]).startswith(sort_prompt([3, 1, 4]))
    lists = sort_lists(500, 1, 8, seed=0)
    assert {len(xs) for xs in lists} == set(range(1, 9))
    assert all(0 <= x <= 9 for xs in lists for x in xs)
    tok, train, val = sort_data(n_train=50, n_val=5)
    assert tok.decode(train.tolist(), skip_special=True).startswith(sort_text(lists[0]))
    seen = {tuple(xs) for xs in sort_lists(recipe.data_size["n_train"], 1, 8, seed=0)}
    held = sort_heldout(recipe, 50, 6, 8)
    assert len(held) == 50 and all(tuple(xs) not in seen and 6 <= len(xs) <= 8 for xs in held)


def test_sort_reference_matches_its_recipe_and_card(sorter):
    model, _, card = sorter
    assert card["recipe"] == "sort" and card["stored_dtype"] == "bfloat16"
    assert model.cfg == get_recipe("sort").model
    # the card's own figures: short lists right, long ones not
    assert card["accuracy_sort"] >= 0.9
    assert card["errors_direct_len32"] >= 16


def test_sort_reference_sorts_short_unseen_lists(sorter):
    model, tok, _ = sorter
    lists = sort_heldout(get_recipe("sort"), 100, 1, 8)
    answers = [a[0] for a in model_sort(model, tok, lists)]
    exact = sum(a == sorted(xs) for xs, a in zip(lists, answers)) / len(lists)
    assert exact >= 0.85, exact
    errors = sum(S.error_count(xs, a) for xs, a in zip(lists, answers)) / len(lists)
    assert errors <= 0.3, errors


def test_got_sort_with_the_reference_beats_direct_sorting_on_long_lists(sorter):
    model, tok, _ = sorter
    lists = sort_lists(16, 24, 24, seed=124)
    direct = [a[0] for a in model_sort(model, tok, lists)]
    direct_errors = sum(S.error_count(xs, a) for xs, a in zip(lists, direct)) / len(lists)
    assert direct_errors >= 8, direct_errors         # it stops after about 8 digits

    def sort_fn(part):                                # one greedy answer for one part
        return model_sort(model, tok, [part])[0][0]

    got = [S.got_sort(xs, sort_fn, S.merge, parts=3) for xs in lists]
    got_errors = sum(r.score for r in got) / len(lists)
    assert got_errors <= 2.5 and got_errors <= direct_errors / 4, (got_errors, direct_errors)
    for xs, r in zip(lists, got):                     # the score is the GoT error count
        assert r.score == S.error_count(xs, r.state[1])

    def refine_fn(original, current):                 # redo with parts of 4 digits
        return S.got_sort(original, sort_fn, S.merge, parts=len(original) // 4).state[1]

    refined = [S.got_sort(xs, sort_fn, S.merge, parts=3, refine_fn=refine_fn) for xs in lists]
    refined_errors = sum(r.score for r in refined) / len(lists)
    assert refined_errors <= got_errors and refined_errors <= 1.0, refined_errors
