"""Shipped reference checkpoints: a model, its tokenizer and a card that vouches for both.

A reference checkpoint is a directory in the native format (``model.safetensors`` +
``config.json``) plus ``tokenizer.json`` and ``card.json``. The card records how the
weights were made (recipe, steps, tokens seen, final losses/accuracy, hardware, wall
time) and the sha256 of every file; ``load_reference`` recomputes the hashes and refuses
a file that does not match, so a corrupted or tampered checkpoint never loads silently.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

import torch

from .checkpoints import load
from .files import atomic_file, read_json
from .tokenizer import Tokenizer

REFERENCE_DIR = Path(__file__).parent / "reference"
HASHED = ("model.safetensors", "config.json", "tokenizer.json")


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def write_card(directory, **facts) -> dict:
    """Hash the checkpoint's files and write ``card.json`` beside them (atomically)."""
    directory = Path(directory)
    card = dict(facts, sha256={f: sha256_file(directory / f) for f in HASHED})
    with atomic_file(directory / "card.json") as tmp:
        Path(tmp).write_text(json.dumps(card, indent=2) + "\n")
    return card


def verify(directory, required=HASHED) -> dict:
    """Return the card after checking every hashed file against it; the card must vouch
    for each file named in ``required``."""
    directory = Path(directory)
    card_path = directory / "card.json"
    if not card_path.exists():
        raise FileNotFoundError(f"{directory} has no card.json: not a reference checkpoint")
    card = read_json(card_path)
    hashes = card.get("sha256") if isinstance(card, dict) else None
    unvouched = [f for f in required if not isinstance(hashes, dict) or f not in hashes]
    if unvouched:
        raise ValueError(f"{card_path} gives no sha256 for {unvouched}: it cannot vouch for "
                         f"the checkpoint; rewrite it with write_card()")
    for name, expected in hashes.items():
        path = directory / name
        if not path.exists():
            raise FileNotFoundError(f"reference checkpoint {directory} is missing {name}")
        actual = sha256_file(path)
        if actual != expected:
            raise ValueError(f"{path} does not match its card: sha256 is {actual[:16]}..., "
                             f"card.json says {expected[:16]}... The file was modified or "
                             f"corrupted; restore it (e.g. git checkout) or retrain the recipe.")
    return card


def load_reference(name_or_path, device="cpu"):
    """(model, tokenizer, card) of a shipped reference (``"stories"``, ``"arithmetic"``)."""
    directory = Path(name_or_path)
    if not directory.is_dir():
        directory = REFERENCE_DIR / str(name_or_path)
        if not directory.is_dir():
            known = sorted(p.name for p in REFERENCE_DIR.glob("*") if p.is_dir())
            raise FileNotFoundError(f"no reference checkpoint {name_or_path!r}; shipped: {known}")
    card = verify(directory)
    model = load(directory, quiet=True).to(device)     # small, and vouched for by its card
    return model, Tokenizer.load(directory / "tokenizer.json"), card
