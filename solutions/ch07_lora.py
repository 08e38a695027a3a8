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
    # BEGIN SOLUTION
    return x @ W0.T + scale * ((x @ A.T) @ B.T)
    # END SOLUTION


def lora_merge(W0: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scale: float) -> torch.Tensor:
    """The single weight (d_out x d_in) that computes what ``lora_forward`` computes."""
    # BEGIN SOLUTION
    return W0 + scale * (B @ A)
    # END SOLUTION
