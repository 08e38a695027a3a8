"""Reference checkpoints: the card's hashes vouch for every file; nothing else loads."""

import json
import os

import pytest
import torch

from minillama import Llama, LlamaConfig, reference, save
from minillama.recipes import get_recipe
from minillama.reference import HASHED, REFERENCE_DIR, load_reference, verify, write_card
from minillama.tokenizer import ByteTokenizer

SHIPPED = ("stories", "arithmetic", "mixed", "peft-base", "sort", "mod10", "mod10-paths",
           "mod10-mix", "add5", "add5-lsb")
PROMPTS = {"arithmetic": "Q: 1+2=\n", "mod10": "Q: 1 +2 *3=\nA: ",
           "mod10-paths": "Q: 1 +2 *3=\nS: ", "mod10-mix": "Q: 1 +2 *3=\nA: ",
           "add5": "Q: 12345+67890=\nA: ", "add5-lsb": "Q: 54321+09876=\nA: "}


def make_reference(directory, **facts):
    """A tiny native checkpoint + byte tokenizer + card in ``directory``; returns the model."""
    torch.manual_seed(0)
    model = Llama(LlamaConfig(dim=32, n_layers=1, n_heads=2, vocab_size=259, multiple_of=16,
                              max_seq_len=32, name="toy"))
    save(model, directory)
    ByteTokenizer().save(directory / "tokenizer.json")
    write_card(directory, **{"recipe": "toy", "steps": 3, **facts})
    return model


@pytest.fixture
def ref_dir(tmp_path):
    directory = tmp_path / "toy"
    make_reference(directory)
    return directory


def flip_byte(path, offset=-1):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_write_card_then_load(tmp_path):
    directory = tmp_path / "toy"
    model = make_reference(directory, val_loss=5.5)
    card = json.loads((directory / "card.json").read_text())
    assert card["recipe"] == "toy" and card["val_loss"] == 5.5
    assert sorted(card["sha256"]) == sorted(HASHED)
    assert all(len(h) == 64 for h in card["sha256"].values())
    assert not [f for f in os.listdir(directory) if f.startswith(".")]   # no temp files

    loaded, tok, card2 = load_reference(directory)
    assert card2 == card
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    text = "Once upon a time"
    assert tok.encode(text) == ByteTokenizer().encode(text)
    assert tok.decode(tok.encode(text, bos=True), skip_special=True) == text


@pytest.mark.parametrize("name", HASHED)
def test_one_flipped_byte_is_refused(ref_dir, name):
    flip_byte(ref_dir / name, offset=-2)
    with pytest.raises(ValueError, match=f"{name} does not match its card"):
        load_reference(ref_dir)


def test_missing_card(ref_dir):
    (ref_dir / "card.json").unlink()
    with pytest.raises(FileNotFoundError, match="no card.json"):
        load_reference(ref_dir)


def test_missing_file(ref_dir):
    (ref_dir / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="missing tokenizer.json"):
        verify(ref_dir)


@pytest.mark.parametrize("damage", ["drop_hash", "no_hashes", "bad_json"])
def test_card_that_vouches_for_nothing_is_refused(ref_dir, damage):
    card_path = ref_dir / "card.json"
    card = json.loads(card_path.read_text())
    if damage == "drop_hash":
        del card["sha256"]["model.safetensors"]
    elif damage == "no_hashes":
        del card["sha256"]
    card_path.write_text("{not json" if damage == "bad_json" else json.dumps(card))
    match = "not valid JSON" if damage == "bad_json" else "no sha256 for.*model.safetensors"
    with pytest.raises(ValueError, match=match):
        load_reference(ref_dir)


def test_reference_by_name_and_unknown_name(tmp_path, monkeypatch):
    shelf = tmp_path / "reference"
    make_reference(shelf / "alpha")
    (shelf / "beta").mkdir()
    monkeypatch.setattr(reference, "REFERENCE_DIR", shelf)
    monkeypatch.chdir(tmp_path)                         # no ./alpha to shadow the name
    model, _, card = load_reference("alpha")
    assert card["recipe"] == "toy" and model.cfg.name == "toy"
    with pytest.raises(FileNotFoundError, match=r"'gamma'; shipped: \['alpha', 'beta'\]"):
        load_reference("gamma")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_reference_verifies_and_loads(name):
    if not (REFERENCE_DIR / name).is_dir():
        pytest.skip(f"minillama/reference/{name} has not been trained yet")
    model, tok, card = load_reference(name)
    assert card["recipe"] == name
    for fact in ("steps", "val_loss", "hardware", "wall_time_s"):
        assert fact in card, fact
    # pretraining recipes count tokens; supervised ones (mod10*) count examples
    assert ("tokens_seen" in card) != ("examples_seen" in card), sorted(card)
    assert card["steps"] == get_recipe(name).train.steps
    assert tok.vocab_size <= model.cfg.vocab_size
    prompt = torch.tensor(tok.encode(PROMPTS.get(name, "Once"), bos=True))
    out = model.generate(prompt, 4)
    assert out.shape == (4,) and int(out.max()) < model.cfg.vocab_size


def test_mixed_recipe_continues_from_stories_and_knows_the_tasks():
    """The ``mixed`` base starts from the stories weights, and its card shows the point of
    it: the tasks in their pretraining form are learned, the Alpaca form is not."""
    from minillama.recipes import get_recipe, initial_model
    from minillama.tasks import task_prompt, task_text

    recipe = get_recipe("mixed")
    start, _, _ = load_reference("stories")
    model = initial_model(recipe)
    assert model.cfg.name == "mixed"
    for (name, a), b in zip(start.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a.float(), b), name
    record = {"instruction": "Find the biggest number.", "input": "3, 9", "output": "9"}
    assert task_text(record) == "Find the biggest number.\n3, 9\nAnswer:\n9"
    assert task_text(record).startswith(task_prompt(record))
    if (REFERENCE_DIR / "mixed").is_dir():
        card = load_reference("mixed")[2]
        assert card["init_from"] == "stories"
        assert card["task_accuracy_plain"] >= card["task_accuracy_alpaca"] + 0.15


def test_recipe_that_continues_from_a_different_shape_is_refused():
    from dataclasses import replace

    from minillama.recipes import get_recipe, initial_model

    recipe = get_recipe("mixed")
    wrong = replace(recipe, model=recipe.model.replace(n_layers=2))
    with pytest.raises(ValueError, match="differs from the stories reference"):
        initial_model(wrong)
