# GENERATED from solutions/ch07_lora.py
# by scripts/make_exercises.py (`make exercises`). Maintainers: edit the solution,
# not this file; `make test` checks the two agree.
#
# Exercise: replace every `raise NotImplementedError("exercise: ...")` below with your
# own code (the docstring above it states the task), then grade your work:
#
#     python -m pytest tests/test_exercises_ch07.py --impl=exercises
#
# To keep this folder pristine, copy it (e.g. to my_exercises/) and grade that copy
# with --impl=my_exercises instead.
"""Chapter 7 exercises: the LoRA linear layer and its merge.

LoRA (Hu et al., arXiv 2106.09685) freezes a weight W0 (d_out x d_in) and trains a
low-rank change to it, A (r x d_in) and B (d_out x r), scaled by s = alpha / r
(alpha / sqrt(r) for rsLoRA):

    h = W0 x + s * B A x                 (for a batch of rows x: x W0^T + s (x A^T) B^T)

Because the change is linear in x it can be folded into the weight once training is
done, W = W0 + s B A, and the merged layer costs nothing extra. The graders compare
your functions with ``minillama.peft.lora`` (``LoRALinear``, ``lora_merge``).
"""

import torch


def lora_forward(x: torch.Tensor, W0: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                 scale: float) -> torch.Tensor:
    """The LoRA layer's output for inputs x (..., d_in): x W0^T + scale * (x A^T) B^T.

    Do not form the d_out x d_in product B A: go through the rank-r bottleneck
    (x A^T has only r columns), which is what makes LoRA cheap while training.
    """
    raise NotImplementedError("exercise: lora_forward")


def lora_merge(W0: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scale: float) -> torch.Tensor:
    """The single weight (d_out x d_in) that computes what ``lora_forward`` computes."""
    raise NotImplementedError("exercise: lora_merge")
