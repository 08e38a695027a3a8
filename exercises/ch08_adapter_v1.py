# GENERATED from solutions/ch08_adapter_v1.py
# by scripts/make_exercises.py (`make exercises`). Maintainers: edit the solution,
# not this file; `make test` checks the two agree.
#
# Exercise: replace every `raise NotImplementedError("exercise: ...")` below with your
# own code (the docstring above it states the task), then grade your work:
#
#     python -m pytest tests/test_exercises_ch08.py --impl=exercises
#
# To keep this folder pristine, copy it (e.g. to my_exercises/) and grade that copy
# with --impl=my_exercises instead.
"""Chapter 8 exercise: LLaMA-Adapter's zero-initialised, gated prompt attention.

LLaMA-Adapter (Zhang et al., arXiv 2303.16199) gives a layer K learnable prompts. They
pass through the frozen wk and wv and become extra keys Kp and values Vp (no RoPE, and
no causal mask: every token sees every prompt). Each head attends to them with its own
softmax, and a gate, zero at the start, scales what comes back:

    out = softmax(Q K^T / sqrt(d) + M) V  +  gate * softmax(Q Kp^T / sqrt(d)) Vp

(``gate`` is tanh(g) per head in the official code, a plain scalar in peft). The first
term is ordinary attention; you write the second. The graders compare your function
with ``minillama.peft.adapter_v1.gated_prompt_attention`` and with the whole module.
"""

import math

import torch


def gated_prompt_attention(q: torch.Tensor, k_prompt: torch.Tensor, v_prompt: torch.Tensor,
                           gate: torch.Tensor) -> torch.Tensor:
    """gate * softmax(q k_prompt^T / sqrt(d)) v_prompt for every head.

    q: (b, h, t, d) queries; k_prompt, v_prompt: (b or 1, h, K, d) prompt keys and values
    (a batch of 1 is shared by all rows); gate: (h,) one factor per head, or (1,) for all
    heads. Take the softmax over the K prompts in float32 and return (b, h, t, d) in the
    dtype of q.
    """
    raise NotImplementedError("exercise: gated_prompt_attention")
