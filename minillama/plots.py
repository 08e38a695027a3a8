"""Figures the chapters share: loss curves from the trainer's metrics.

``train()`` appends one JSON record per logged step to ``metrics.jsonl`` (step, loss,
lr, tokens, and ``val_loss`` at evaluation steps). ``loss_curves`` draws any number of
such runs against tokens seen, training loss as lines and validation loss as markers.
"""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path) -> list[dict]:
    """The records of a ``metrics.jsonl`` file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def loss_curves(runs: dict, ax=None, x: str = "tokens", log_x: bool = True):
    """Plot ``{label: records or metrics.jsonl path}``; returns the matplotlib axes."""
    import matplotlib.pyplot as plt  # imported here: pyplot is slow to import

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    for label, records in runs.items():
        if isinstance(records, (str, Path)):
            records = read_metrics(records)
        line, = ax.plot([r[x] for r in records], [r["loss"] for r in records],
                        label=f"{label} (train)")
        val = [r for r in records if "val_loss" in r]
        if val:
            ax.plot([r[x] for r in val], [r["val_loss"] for r in val], "o",
                    color=line.get_color(), label=f"{label} (validation)")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("tokens seen" if x == "tokens" else x)
    ax.set_ylabel("loss (nats/token)")
    ax.legend(fontsize=8)
    return ax
