# GENERATED from solutions/ch09_adapter_v2.py
# by scripts/make_exercises.py (`make exercises`). Maintainers: edit the solution,
# not this file; `make test` checks the two agree.
#
# Exercise: replace every `raise NotImplementedError("exercise: ...")` below with your
# own code (the docstring above it states the task), then grade your work:
#
#     python -m pytest tests/test_exercises_ch09.py --impl=exercises
#
# To keep this folder pristine, copy it (e.g. to my_exercises/) and grade that copy
# with --impl=my_exercises instead.
"""Chapter 9 exercises: LLaMA-Adapter V2's bias and scale, and their merge.

LLaMA-Adapter V2 (Gao et al., arXiv 2304.15010) puts a trainable bias and scale on every
frozen linear layer W (d_out x d_in). The paper writes ``y = s * (W x + b)``; its official
code (and ``minillama.peft.adapter_v2``) scales the *input* instead, one s per input
feature and one b per output feature:

    y = W (x * s) + b                        (for a batch of rows x: (x * s) W^T + b)

With s = 1 and b = 0 at the start the layer is the frozen one. Both fold into the weight
exactly, so after training the layer becomes a plain linear layer with a bias:

    W' = W diag(s)      (column j of W times s_j),      b' = b

The graders compare your functions with ``minillama.peft.adapter_v2.BiasScaleLinear``
(its forward pass, its gradients and ``merged()``).
"""

import torch


def bias_scale_forward(x: torch.Tensor, W: torch.Tensor, scale: torch.Tensor,
                       bias: torch.Tensor) -> torch.Tensor:
    """The V2 layer's output for x (..., d_in): (x * scale) W^T + bias, shape (..., d_out).

    W: (d_out, d_in) frozen; scale: (d_in,); bias: (d_out,).
    """
    raise NotImplementedError("exercise: bias_scale_forward")


def bias_scale_merge(W: torch.Tensor, scale: torch.Tensor,
                     bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(W', b'): the weight (d_out, d_in) and bias (d_out,) of the one ``nn.Linear`` that
    computes what ``bias_scale_forward`` computes, ``x W'^T + b'``."""
    raise NotImplementedError("exercise: bias_scale_merge")
