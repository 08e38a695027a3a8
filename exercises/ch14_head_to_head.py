# GENERATED from solutions/ch14_head_to_head.py
# by scripts/make_exercises.py (`make exercises`). Maintainers: edit the solution,
# not this file; `make test` checks the two agree.
#
# Exercise: replace every `raise NotImplementedError("exercise: ...")` below with your
# own code (the docstring above it states the task), then grade your work:
#
#     python -m pytest tests/test_exercises_ch14.py --impl=exercises
#
# To keep this folder pristine, copy it (e.g. to my_exercises/) and grade that copy
# with --impl=my_exercises instead.
"""Chapter 14 exercise: what a PEFT training step holds, and when two scores differ.

1. **Training state.** With AdamW every trainable value costs its gradient and two
   moments (``exp_avg``, ``exp_avg_sq``) on top of the weights the model holds anyway:

       bytes = sum over all parameters and buffers of numel * element_size
             + sum over trainable parameters of 3 * numel * element_size

   (gradient + two moments, each in the parameter's dtype). Frozen weights cost only
   themselves. This is the part of chapter 14's memory column that PEFT shrinks; the
   saved activations come on top. The grader checks your count against the tensors a
   real AdamW step creates, for full fine-tuning and for PEFT methods.

2. **Telling two exact-match scores apart.** The Wilson score interval (Wilson 1927) for
   ``hits`` out of ``n`` at z = 1.96 (95%), with p = hits / n:

       centre = (p + z^2 / 2n) / (1 + z^2 / n)
       half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2)

   clipped to [0, 1]. Chapter 14 calls two methods apart when their intervals do not
   overlap.
"""

import math

import torch


def training_state_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers, plus gradient and two AdamW moments
    for every parameter with ``requires_grad`` (shared tensors counted once)."""
    raise NotImplementedError("exercise: training_state_bytes")


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (low, high) of hits / n."""
    raise NotImplementedError("exercise: wilson")


def apart(hits_a: int, n_a: int, hits_b: int, n_b: int) -> bool:
    """True when the 95% Wilson intervals of the two scores do not overlap."""
    raise NotImplementedError("exercise: apart")
