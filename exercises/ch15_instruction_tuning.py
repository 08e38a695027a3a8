# GENERATED from solutions/ch15_instruction_tuning.py
# by scripts/make_exercises.py (`make exercises`). Maintainers: edit the solution,
# not this file; `make test` checks the two agree.
#
# Exercise: replace every `raise NotImplementedError("exercise: ...")` below with your
# own code (the docstring above it states the task), then grade your work:
#
#     python -m pytest tests/test_exercises_ch15.py --impl=exercises
#
# To keep this folder pristine, copy it (e.g. to my_exercises/) and grade that copy
# with --impl=my_exercises instead.
"""Chapter 15 exercise: response masking for instruction tuning (SFT).

A record becomes one token sequence: the prompt (BOS first), then the response, then an
end-of-sequence token. Position t of the inputs predicts the token at t + 1, so

    ids     = prompt + response + [eos]
    inputs  = ids[:-1]
    targets = ids[1:], except that every target still inside the prompt is -100

The -100 targets are skipped by the cross-entropy, so only the response tokens and the
final EOS are trained on (Alpaca, Taori et al. 2023; InstructGPT, arXiv 2203.02155):

    L = -(1 / |R|) * sum over positions t whose target is not -100 of log p(target_t | x_<=t)

The graders compare ``mask_response`` with ``minillama.finetune.sft_tokens`` on real
records and ``response_loss`` with the model's own loss.
"""

import torch

IGNORE = -100


def mask_response(prompt_ids: list[int], response_ids: list[int],
                  eos_id: int) -> tuple[list[int], list[int]]:
    """(inputs, targets) of one record, two lists of ints of equal length.

    prompt_ids: the encoded prompt, BOS included; response_ids: the encoded response
    (possibly empty); eos_id: appended after the response. Targets under the prompt are
    -100; the others are the next tokens, ending with eos_id. Do not modify the arguments.
    """
    raise NotImplementedError("exercise: mask_response")


def response_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean negative log-probability of the targets that are not -100 (a 0-dim tensor).

    logits: (b, t, V); targets: (b, t) token ids or -100. Compute in float32 and keep it
    differentiable.
    """
    raise NotImplementedError("exercise: response_loss")
