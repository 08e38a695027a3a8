"""Tests for the synthetic datasets in minillama/data: determinism, correctness, splits."""

import math
import random
import re

import numpy as np
import pytest
import torch

from minillama.data import (
    FAMILIES,
    addition_problems,
    caption_accuracy,
    corpus_stats,
    exact_match,
    expression_problems,
    extract_answer,
    format_example,
    format_prompt,
    generate_stories,
    heldout_split,
    instruction_data,
    instructions,
    mod10_chain,
    preference_pairs,
    preferences,
    stories,
    story_splits,
    toy_images,
    vision,
    vqa_accuracy,
)

# ---------------------------------------------------------------------------- stories


def test_stories_deterministic_and_seed_dependent():
    assert generate_stories(20, seed=3) == generate_stories(20, seed=3)
    assert generate_stories(20, seed=3) != generate_stories(20, seed=4)
    assert generate_stories(5, seed=3) == generate_stories(20, seed=3)[:5]


def test_stories_have_the_promised_shape():
    texts = generate_stories(300, seed=1)
    lengths = [len(stories.words(t)) for t in texts]
    assert 55 <= min(lengths) and max(lengths) <= 210
    assert max(lengths) - min(lengths) > 60  # lengths really vary
    assert sum('"' in t for t in texts) > 250  # almost every story has dialogue
    assert sum("because" in t.lower() for t in texts) > 50  # causal language
    assert len(set(texts)) == len(texts)


def test_story_splits_are_disjoint():
    train, val = story_splits(400, 100, seed=0)
    assert len(train) == 400 and len(val) == 100
    assert not set(train) & set(val)
    assert len(set(val)) == 100
    assert train != generate_stories(400, seed=0)  # its own stream, not the default one
    assert story_splits(400, 100, seed=0) == (train, val)


def test_corpus_stats_on_a_hand_made_corpus():
    st = corpus_stats(["a a b b"])
    assert st["stories"] == 1 and st["words"] == 4 and st["characters"] == 7
    assert st["word_entropy_bits"] == pytest.approx(1.0)
    # characters: 'a' x2, 'b' x2, ' ' x3
    p = [2 / 7, 2 / 7, 3 / 7]
    assert st["char_entropy_bits"] == pytest.approx(-sum(x * math.log2(x) for x in p))
    st = corpus_stats(["aaaa", "ab cd. Ab cd! Hi."])
    assert st["stories"] == 2 and st["words"] == 6
    assert st["distinct_words"] == 4  # aaaa, ab, cd, hi: "Ab" is folded into "ab"
    assert corpus_stats(["x y z w"])["word_entropy_bits"] == pytest.approx(2.0)
    assert corpus_stats(["aaaa"])["char_entropy_bits"] == 0.0
    st = corpus_stats(['Tom ran. "Oh no!" said Lily. Tom ran.'])
    assert st["sentences"] == 3 and st["distinct_sentences"] == 2
    with pytest.raises(ValueError, match="list of stories"):
        corpus_stats("not a list")


def test_docstring_table_matches_the_measurement():
    st = corpus_stats(generate_stories(2000, seed=0))
    doc = stories.__doc__.replace(",", "")
    for key, label in [("stories", "stories"), ("words", "words"), ("characters", "characters"),
                       ("distinct_sentences", "distinct sentences"),
                       ("distinct_words", "distinct words")]:
        assert re.search(rf"{label}\s+(\d+)", doc).group(1) == str(st[key]), key
    assert f"{st['word_entropy_bits']:.2f} bits/word" in doc
    assert f"{st['char_entropy_bits']:.2f} bits/char" in doc
    assert st["distinct_sentences"] > 5000


def test_stories_bad_arguments():
    with pytest.raises(ValueError, match="n must be"):
        generate_stories(-1)
    with pytest.raises(ValueError, match="split sizes"):
        story_splits(10, -2)


# ---------------------------------------------------------------------------- arithmetic


@pytest.mark.parametrize("digits", [1, 2, 3, 5, 8])
def test_addition_answers_and_cot_are_correct(digits):
    for reverse in (False, True):
        for rec in addition_problems(300, digits=digits, seed=digits, reverse=reverse):
            a, b = map(int, rec["question"].rstrip("=").split("+"))
            assert len(str(a)) == digits and len(str(b)) == digits
            answer = rec["answer"][::-1] if reverse else rec["answer"]
            assert int(answer) == a + b
            assert rec["cot"].endswith(f"#### {rec['answer']}")
            # recompute every column: "x+y+c=d cC"
            steps = rec["cot"].split(" #### ")[0].split(", ")
            carry, digits_out = 0, []
            for i, step in enumerate(steps):
                x, y, c, d, c_out = map(int, re.fullmatch(r"(\d)\+(\d)\+(\d)=(\d) c(\d)",
                                                          step).groups())
                assert x == a // 10**i % 10 and y == b // 10**i % 10 and c == carry
                assert d == (x + y + c) % 10 and c_out == (x + y + c) // 10
                carry = c_out
                digits_out.append(str(d))
            full = "".join(digits_out) + ("1" if carry else "")
            assert int(full[::-1]) == a + b


@pytest.mark.parametrize("n_ops", [1, 3, 5])
def test_expressions_evaluate_like_python(n_ops):
    for rec in expression_problems(400, n_ops=n_ops, seed=7):
        assert eval(rec["question"].rstrip("=")) == int(rec["answer"])  # noqa: S307
        steps = rec["cot"].split(" #### ")[0].split(", ")
        assert len(steps) == n_ops
        for step in steps:
            lhs, rhs = step.split("=")
            assert eval(lhs) == int(rhs) >= 0  # noqa: S307
        assert steps[-1].split("=")[1] == rec["answer"]
        assert rec["cot"].endswith(f"#### {rec['answer']}")
    assert any("(" in r["question"] for r in expression_problems(100, n_ops=3))


def test_mod10_chain_running_values_and_both_styles():
    ones = mod10_chain(300, k=7, seed=2, cot_style="one")
    twos = mod10_chain(300, k=7, seed=2, cot_style="two")
    for one, two in zip(ones, twos):
        assert one["question"] == two["question"] and one["answer"] == two["answer"]
        assert extract_answer(one["cot"]) == extract_answer(two["cot"]) == one["answer"]
        tokens = one["question"].rstrip("=").split()
        value = int(tokens[0])
        running = []
        for tok in tokens[1:]:
            op, d = tok[0], int(tok[1:])
            value = {"+": value + d, "-": value - d, "*": value * d}[op] % 10
            running.append(value)
        assert one["answer"] == str(value)
        steps = one["cot"].split(" #### ")[0].split(", ")
        assert [int(s.split("=")[1]) for s in steps] == running
        steps2 = two["cot"].split(" #### ")[0].split(", ")
        assert len(steps2) == 4  # ceil(7 / 2) steps, the last one with a single op
        assert [int(s.split("=")[1]) for s in steps2] == running[1::2] + [value]
    assert len({r["answer"] for r in ones}) == 10


def test_format_and_extract_answer():
    rec = addition_problems(1, seed=5)[0]
    assert format_example(rec) == f"Q: {rec['question']}\nA: {rec['answer']}"
    assert format_example(rec, "cot").startswith(f"Q: {rec['question']}\nA: ")
    assert extract_answer(format_example(rec)) == rec["answer"]
    assert extract_answer(format_example(rec, "cot")) == rec["answer"]
    assert extract_answer("1+2=3 #### 3 #### 41\nQ: next") == "41"
    assert extract_answer(" 579 \nblah") == "579"
    assert extract_answer("") is None and extract_answer("A: ") is None
    assert exact_match(["#### 5", "A: 7", "3"], ["5", "8", "3"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="style"):
        format_example(rec, "verbose")
    with pytest.raises(ValueError, match="missing"):
        format_example({"question": "1+1="})
    with pytest.raises(ValueError, match="predictions"):
        exact_match(["1"], ["1", "2"])


def test_arithmetic_bad_arguments_and_determinism():
    assert addition_problems(10, seed=1) == addition_problems(10, seed=1)
    assert addition_problems(10, seed=1) != addition_problems(10, seed=2)
    assert mod10_chain(10, seed=1) != mod10_chain(10, seed=2)
    with pytest.raises(ValueError, match="digits"):
        addition_problems(3, digits=0)
    with pytest.raises(ValueError, match="cot_style"):
        mod10_chain(3, cot_style="three")
    with pytest.raises(ValueError, match="n_ops"):
        expression_problems(3, n_ops=0)
    with pytest.raises(ValueError, match="k must"):
        mod10_chain(3, k=0)


# ---------------------------------------------------------------------------- instructions


def _ints(text):
    return [int(x) for x in re.findall(r"\d+", text)]


def _expected(rec):
    """An independent solution of each family, parsed from the instruction and input."""
    fam, ask, inp = rec["family"], rec["instruction"], rec["input"]
    quoted = re.findall(r"'(\w)'", ask)
    if fam == "refusal":
        if inp == "":
            return instructions.REFUSE_EMPTY
        if "number" in ask and not re.search(r"\d", inp):
            return instructions.REFUSE_NO_NUMBERS
        table = dict(line.split(": ") for line in inp.splitlines())
        assert re.search(r"the (\w+)\?", ask).group(1) not in table
        return instructions.REFUSE_NOT_FOUND
    solve = {
        "reverse_word": lambda: inp[::-1],
        "uppercase": lambda: "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in inp),
        "capitalize": lambda: " ".join(w[0].upper() + w[1:] for w in inp.split(" ")),
        "remove_vowels": lambda: "".join(c for c in inp if c not in "aeiou"),
        "replace_letter": lambda: "".join(quoted[1] if c == quoted[0] else c for c in inp),
        "count_letters": lambda: str(len(inp)),
        "count_words": lambda: str(len(inp.split())),
        "count_char": lambda: str(sum(c == quoted[0] for c in inp)),
        "sort_ascending": lambda: ", ".join(map(str, sorted(_ints(inp)))),
        "sort_descending": lambda: ", ".join(map(str, sorted(_ints(inp))[::-1])),
        "sort_words": lambda: ", ".join(sorted(inp.split(", "))),
        "add": lambda: str(sum(_ints(ask + " " + inp))),
        "subtract": lambda: str(max(_ints(ask + " " + inp)) - min(_ints(ask + " " + inp))),
        "multiply": lambda: str(math.prod(_ints(ask + " " + inp))),
        "max_list": lambda: str(max(_ints(inp))),
        "min_list": lambda: str(min(_ints(inp))),
        "list_to_csv": lambda: ", ".join(inp.split("\n")),
        "date_format": lambda: "/".join(inp.split("-")[::-1]),
        "snake_to_camel": lambda: re.sub(r"_(\w)", lambda m: m.group(1).upper(), inp),
        "lookup_colour": lambda: next(v for k, v in (l.split(": ") for l in inp.splitlines())
                                      if f"the {k}" in ask),
        "lookup_age": lambda: next(str(a) for n, a in ((l.split()[0], _ints(l)[0])
                                                       for l in inp.splitlines()) if n in ask),
    }
    return solve[fam]()


def test_every_family_is_correct_and_has_several_phrasings():
    assert len(FAMILIES) >= 20 and len(set(FAMILIES)) == len(FAMILIES)
    records = instruction_data(3000, seed=11)
    # a phrasing is an instruction with its letters, numbers, things and names blanked out
    slots = r"'\w'|\d+|\b(?:" + "|".join(instructions.THINGS + instructions.NAMES) + r")\b"
    by_family = {}
    for rec in records:
        assert set(rec) == {"instruction", "input", "output", "family", "noisy"}
        assert rec["output"] == _expected(rec), rec
        by_family.setdefault(rec["family"], set()).add(re.sub(slots, "_", rec["instruction"]))
    assert set(by_family) == set(FAMILIES)
    for fam, phrasings in by_family.items():
        assert len(phrasings) >= 3, (fam, phrasings)
    lengths = [len(r["output"]) for r in records]
    assert sum(x < 40 for x in lengths) / len(lengths) > 0.9


def test_instruction_determinism_and_family_filter():
    assert instruction_data(50, seed=1) == instruction_data(50, seed=1)
    assert instruction_data(50, seed=1) != instruction_data(50, seed=2)
    only = instruction_data(40, seed=0, families=["add", "refusal"])
    assert {r["family"] for r in only} == {"add", "refusal"}
    with pytest.raises(ValueError, match="unknown"):
        instruction_data(5, families=["add", "juggle"])
    with pytest.raises(ValueError, match="noise"):
        instruction_data(5, noise=1.5)


@pytest.mark.parametrize("noise", [0.0, 0.1, 0.37])
def test_noise_fraction_is_honoured_and_marked(noise):
    clean = instruction_data(1000, seed=4)
    noisy = instruction_data(1000, seed=4, noise=noise)
    flagged = [r for r in noisy if r["noisy"]]
    assert len(flagged) == round(noise * 1000)
    for c, r in zip(clean, noisy):
        if r["noisy"]:
            assert r["output"] != r["clean_output"] == c["output"]
        else:
            assert r == c
    assert instructions.score([r["output"] for r in clean], noisy)["exact_match"] == 1.0


def test_heldout_split_and_score():
    records = instruction_data(500, seed=6)
    train, held = heldout_split(records, ["add", "lookup_age"])
    assert len(train) + len(held) == len(records)
    assert {r["family"] for r in held} == {"add", "lookup_age"}
    assert not {r["family"] for r in train} & {"add", "lookup_age"}
    with pytest.raises(ValueError, match="unknown"):
        heldout_split(records, ["nope"])
    preds = [r["output"] if r["family"] != "add" else "wrong" for r in records]
    result = instructions.score(preds, records)
    assert result["per_family"]["add"] == 0.0 and result["per_family"]["multiply"] == 1.0
    n_add = sum(r["family"] == "add" for r in records)
    assert result["exact_match"] == pytest.approx(1 - n_add / len(records))
    with pytest.raises(ValueError, match="predictions"):
        instructions.score(["x"], records)


def test_format_prompt_with_and_without_input():
    with_input = format_prompt({"instruction": "Reverse the word.", "input": "cat"})
    assert "### Instruction:\nReverse the word.\n\n### Input:\ncat\n\n### Response:\n" in with_input
    without = format_prompt({"instruction": "Add 2 and 3.", "input": ""})
    assert "### Input" not in without and without.endswith("Add 2 and 3.\n\n### Response:\n")
    with pytest.raises(ValueError, match="instruction"):
        format_prompt({"input": "x"})


# ---------------------------------------------------------------------------- preferences


def test_preference_pairs():
    pairs = preference_pairs(800, seed=9)
    records = instruction_data(800, seed=9)
    assert pairs == preference_pairs(800, seed=9)
    for pair, rec in zip(pairs, records):
        assert pair["chosen"] != pair["rejected"]
        assert pair["chosen"] == rec["output"] == _expected(rec)
        assert pair["prompt"] == format_prompt(rec) and pair["family"] == rec["family"]
    assert {p["family"] for p in pairs} == set(FAMILIES)
    assert preferences.preference_pairs(5, seed=0, families=["add"])[0]["family"] == "add"


# ---------------------------------------------------------------------------- vision


def _shape_pixels(image):
    """Pixels that stand out from the dark background."""
    return (image - vision.BACKGROUND).abs().amax(0) > 0.3


def test_vision_pixels_match_the_attributes():
    size = 32
    images, records = toy_images(200, size=size, seed=3)
    assert images.shape == (200, 3, size, size) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    for image, rec in zip(images, records):
        a = rec["attributes"]
        mask = _shape_pixels(image)
        assert mask.sum() >= 5
        mean = image[:, mask].mean(1)
        assert torch.allclose(mean, torch.tensor(vision.COLOURS[a["colour"]]), atol=1e-5)
        ys, xs = torch.nonzero(mask, as_tuple=True)
        cx, cy = xs.float().mean().item() + 0.5, ys.float().mean().item() + 0.5
        third = size / 3
        expect_x = {"left": (0, third), "right": (2 * third, size)}.get(a["position"],
                                                                        (third, 2 * third))
        expect_y = {"top": (0, third), "bottom": (2 * third, size)}.get(a["position"],
                                                                        (third, 2 * third))
        assert expect_x[0] < cx < expect_x[1] and expect_y[0] < cy < expect_y[1], a
    small = [_shape_pixels(im).sum() for im, r in zip(images, records)
             if r["attributes"]["size"] == "small"]
    large = [_shape_pixels(im).sum() for im, r in zip(images, records)
             if r["attributes"]["size"] == "large"]
    assert max(small) < min(large)


def test_vision_shapes_are_recognisable():
    images, records = toy_images(120, size=64, seed=8)
    for image, rec in zip(images, records):
        if rec["attributes"]["size"] != "large":
            continue
        mask = _shape_pixels(image)
        ys, xs = torch.nonzero(mask, as_tuple=True)
        box = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        fill = box.float().mean().item()
        top, bottom = box[0].sum().item(), box[-1].sum().item()
        middle_row = box[box.shape[0] // 2].float().mean().item()
        shape = rec["attributes"]["shape"]
        if shape == "square":
            assert fill > 0.95
        elif shape == "circle":
            assert 0.7 < fill < 0.85 and not box[0, 0] and middle_row > 0.85
        elif shape == "triangle":
            assert bottom > 3 * top
        else:
            assert 0.45 < fill < 0.65 and not box[0, 0] and middle_row > 0.85


def test_vision_captions_questions_and_determinism():
    images, records = toy_images(50, seed=1)
    again, records_again = toy_images(50, seed=1)
    assert torch.equal(images, again) and records == records_again
    assert not torch.equal(images, toy_images(50, seed=2)[0])
    for rec in records:
        a = rec["attributes"]
        assert rec["caption"] == f"a {a['size']} {a['colour']} {a['shape']} " + vision.WHERE[
            a["position"]]
        answers = dict(rec["qa"])
        assert answers["What colour is the shape?"] == a["colour"]
        assert answers["Where is the shape?"] == a["position"]
        assert answers["What shape is it?"] == a["shape"]
    caps = [r["caption"] for r in records]
    assert caption_accuracy([c.upper() + "." for c in caps], caps) == 1.0
    assert caption_accuracy(caps[1:] + caps[:1], caps) < 1.0
    assert vqa_accuracy(["red", "left"], ["red", "right"]) == 0.5
    with pytest.raises(ValueError, match="size"):
        toy_images(2, size=8)
    with pytest.raises(ValueError, match="predictions"):
        vqa_accuracy(["a"], [])
    with pytest.raises(ValueError, match="unknown shape"):
        vision.shape_mask("hexagon", 5, 5, 3, 16)


def test_global_random_state_is_untouched():
    py_state, np_state = random.getstate(), np.random.get_state()[1].copy()
    torch_state = torch.random.get_rng_state()
    generate_stories(3)
    addition_problems(3)
    mod10_chain(3)
    instruction_data(10, noise=0.5)
    preference_pairs(3)
    toy_images(3)
    assert random.getstate() == py_state
    assert (np.random.get_state()[1] == np_state).all()
    assert torch.equal(torch.random.get_rng_state(), torch_state)


def test_little_endian_addition_writes_operands_and_answer_from_the_units_up():
    usual = addition_problems(200, digits=5, seed=3)
    little = addition_problems(200, digits=5, seed=3, little_endian=True)
    for u, e in zip(usual, little):
        assert (u["a"], u["b"]) == (e["a"], e["b"])              # the same problems
        x, y = e["question"].rstrip("=").split("+")
        assert (int(x[::-1]), int(y[::-1])) == (e["a"], e["b"])
        assert len(x) == len(y) == 5                             # "09147": zeros kept
        assert int(e["answer"][::-1]) == e["a"] + e["b"] and e["reverse"]
    assert little[0]["question"] != usual[0]["question"]
