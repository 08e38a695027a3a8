"""What every task shares: the stream encoding, the question prompt, the two base classes.

A task is trained either on next tokens of a stream (``Task``) or by supervised
fine-tuning, one question and answer per row with the loss on the answer (``Supervised``).
"""

from __future__ import annotations

import torch

from ..finetune import sft_loss
from ..train import evaluate


def encode_stream(tok, texts) -> torch.Tensor:
    """Texts as one token stream, each ``<bos> text <eos>``: what pretraining samples from."""
    return torch.tensor([i for t in texts for i in tok.encode(t, bos=True, eos=True)])


def qa_prompt(rec: dict, marker: str | None = None) -> str:
    """"Q: <question>\\n<marker>: ", what the model continues (marker: the record's own).

    The one prompt template of the supervised tasks, in training and in scoring."""
    return f"Q: {rec['question']}\n{marker or rec['marker']}: "


class Task:
    """A stream task: trained on next tokens, its loss measured on the val stream."""

    supervised = False

    def val_loss(self, model, tok, val, cfg) -> float:
        """Mean loss on the fixed validation windows of ``cfg`` (a ``TrainConfig``)."""
        return evaluate(model, val, cfg)

    def scores(self, model, tok, n: int) -> dict:
        """Figures on ``n`` held-out problems, scored on the model's device; plain text has
        none beyond its loss."""
        return {}


class Supervised(Task):
    """A task trained by ``finetune``: one ``qa_prompt`` record per row, loss on the answer."""

    supervised = True

    @torch.no_grad()
    def val_loss(self, model, tok, val, cfg) -> float:
        return sft_loss(model, tok, val, template=qa_prompt)


def heldout(task, n: int, *args) -> list:
    """``task.heldout(n, *args)``. A recipe passes the call on to its task, so the chapters
    write ``mod10_heldout(get_recipe("mod10"), 64)``."""
    return task.heldout(n, *args)


mod10_heldout = addition_heldout = sort_heldout = heldout_problems = heldout
