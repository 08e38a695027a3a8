"""Toy images with captions and questions, for the multimodal adapter chapters.

LLaMA-Adapter V2 (Gao et al., arXiv 2304.15010) feeds image features into a frozen LLaMA
and trains it on image-caption pairs and on instruction data (visual question answering).
We need the same kinds of data at a size a laptop can train on: one coloured shape on a
dark, slightly noisy background, drawn with numpy, and described by its four attributes:

    shape     circle, square, triangle, cross
    colour    red, green, blue, yellow, purple, orange, white
    position  left, right, top, bottom, center
    size      small, large

    caption   "a small red circle on the left"
    questions "What colour is the shape?" -> "red", "What shape is it?" -> "circle",
              "Where is the shape?" -> "left", "How big is the shape?" -> "small"

``toy_images(n, size=32, seed=0)`` returns ``(images, records)``: a float tensor
(n, 3, size, size) in [0, 1] and one dict per image with ``caption``, ``qa`` (a list of
(question, answer) pairs) and ``attributes``. Size: 4 x 7 x 5 x 2 = 280 attribute
combinations, with jittered positions and background noise, so every image is new; scale by
raising ``n`` (or ``size`` for finer pictures).
"""

from __future__ import annotations

import numpy as np
import torch

SHAPES = ["circle", "square", "triangle", "cross"]
COLOURS = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.8, 0.2), "blue": (0.15, 0.3, 0.95),
           "yellow": (0.95, 0.9, 0.1), "purple": (0.6, 0.15, 0.8), "orange": (1.0, 0.55, 0.0),
           "white": (1.0, 1.0, 1.0)}
POSITIONS = {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25),
             "bottom": (0.5, 0.75), "center": (0.5, 0.5)}  # (x, y) as fractions of the side
WHERE = {"left": "on the left", "right": "on the right", "top": "at the top",
         "bottom": "at the bottom", "center": "in the center"}
SIZES = {"small": 0.11, "large": 0.2}  # radius as a fraction of the side
BACKGROUND = 0.08  # dark grey, plus uniform noise of +-NOISE
NOISE = 0.04
QUESTIONS = [("What colour is the shape?", "colour"), ("What shape is it?", "shape"),
             ("Where is the shape?", "position"), ("How big is the shape?", "size")]


def shape_mask(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    """Boolean (size, size) mask of a shape centred at pixel (cx, cy) with radius r."""
    y, x = np.mgrid[0:size, 0:size] + 0.5  # pixel centres
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return (np.abs(dx) <= 0.8 * r) & (np.abs(dy) <= 0.8 * r)
    if shape == "cross":
        arm = r / 3
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    if shape == "triangle":  # apex up at cy - r, base at cy + r/2: its centroid is (cx, cy)
        half_width = (dy + r) / 1.5 * np.sqrt(3) / 2  # grows from 0 at the apex to 0.87 r
        return (dy >= -r) & (dy <= r / 2) & (np.abs(dx) <= half_width)
    raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")


def caption(attributes: dict) -> str:
    """The caption of one image, from its attributes."""
    a = attributes
    return f"a {a['size']} {a['colour']} {a['shape']} {WHERE[a['position']]}"


def toy_images(n: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, list[dict]]:
    """``n`` images (n, 3, size, size) in [0, 1] and their caption, questions and attributes."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an int >= 16 pixels, got {size!r}")
    rng = np.random.default_rng(seed)
    images = np.empty((n, 3, size, size), dtype=np.float32)
    records = []
    for i in range(n):
        attrs = {"shape": SHAPES[rng.integers(len(SHAPES))],
                 "colour": list(COLOURS)[rng.integers(len(COLOURS))],
                 "position": list(POSITIONS)[rng.integers(len(POSITIONS))],
                 "size": list(SIZES)[rng.integers(len(SIZES))]}
        fx, fy = POSITIONS[attrs["position"]]
        jitter = rng.uniform(-0.04, 0.04, size=2) * size
        cx, cy, r = fx * size + jitter[0], fy * size + jitter[1], SIZES[attrs["size"]] * size
        attrs.update(center=(float(cx), float(cy)), radius=float(r))
        image = BACKGROUND + rng.uniform(-NOISE, NOISE, size=(3, size, size))
        mask = shape_mask(attrs["shape"], cx, cy, r, size)
        image[:, mask] = np.array(COLOURS[attrs["colour"]])[:, None]
        images[i] = np.clip(image, 0.0, 1.0)
        records.append({"caption": caption(attrs), "attributes": attrs,
                        "qa": [(q, attrs[key]) for q, key in QUESTIONS]})
    return torch.from_numpy(images), records


def _exact(predictions: list[str], references: list[str]) -> float:
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("need at least one reference")
    norm = lambda s: " ".join((s or "").lower().strip().rstrip(".").split())
    return sum(norm(p) == norm(r) for p, r in zip(predictions, references)) / len(references)


def caption_accuracy(predictions: list[str], references: list[str]) -> float:
    """Exact-match rate of captions (case, outer spaces and a final period ignored)."""
    return _exact(predictions, references)


def vqa_accuracy(predictions: list[str], references: list[str]) -> float:
    """Exact-match rate of short answers ("red", "left", ...), same normalisation."""
    return _exact(predictions, references)
