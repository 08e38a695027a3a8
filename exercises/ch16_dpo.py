# GENERATED from solutions/ch16_dpo.py
# by scripts/make_exercises.py (`make exercises`). Maintainers: edit the solution,
# not this file; `make test` checks the two agree.
#
# Exercise: replace every `raise NotImplementedError("exercise: ...")` below with your
# own code (the docstring above it states the task), then grade your work:
#
#     python -m pytest tests/test_exercises_ch16.py --impl=exercises
#
# To keep this folder pristine, copy it (e.g. to my_exercises/) and grade that copy
# with --impl=my_exercises instead.
"""Chapter 16 exercise: the DPO loss.

Direct Preference Optimization (Rafailov et al., arXiv 2305.18290) scores a preference
pair (x, y_w, y_l) with the summed log-probabilities of the two responses under the model
being trained (pi) and under a frozen reference (ref). Each response gets an *implicit
reward*, beta times how much more likely the policy makes it than the reference did:

    r_w = beta * (log pi(y_w|x) - log ref(y_w|x))
    r_l = beta * (log pi(y_l|x) - log ref(y_l|x))

and the loss is the Bradley-Terry negative log-likelihood that y_w beats y_l:

    L = mean over pairs of  -log sigma(r_w - r_l)

Write it so that a very negative margin (r_w - r_l = -500, say) gives a finite loss and
gradient: ``log(sigmoid(m))`` underflows to log(0) there, ``torch.nn.functional.logsigmoid``
does not. The graders compare your function with ``minillama.dpo.dpo_loss``.
"""

import torch
import torch.nn.functional as F


def dpo_loss(pi_w: torch.Tensor, pi_l: torch.Tensor, ref_w: torch.Tensor,
             ref_l: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """The mean DPO loss over a batch of pairs (a 0-dim tensor, differentiable).

    pi_w, pi_l: (b,) summed log-probabilities of the chosen and rejected responses under
    the policy; ref_w, ref_l: (b,) the same under the reference; beta > 0.
    """
    raise NotImplementedError("exercise: dpo_loss")
