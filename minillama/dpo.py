"""Direct Preference Optimization: learn from "this answer, not that one" without a reward model.

RLHF (InstructGPT, Ouyang et al., arXiv 2203.02155) fits a reward model r(x, y) to human
preferences and then maximises it with PPO under a KL penalty to a reference policy:

    max_pi  E[r(x, y)] - beta * KL(pi(.|x) || pi_ref(.|x))

DPO (Rafailov et al., arXiv 2305.18290) notices that this objective has a closed-form
optimum, pi*(y|x) ~ pi_ref(y|x) exp(r(x, y) / beta), so every policy defines an *implicit
reward* r(x, y) = beta log(pi(y|x) / pi_ref(y|x)) (up to a term in x alone, which cancels
below). Putting it into the Bradley-Terry model p(y_w > y_l) = sigma(r_w - r_l) and
maximising the likelihood of the preferred y_w over the rejected y_l gives a plain loss:

    L = -log sigma( beta * [ (log pi(y_w|x) - log pi_ref(y_w|x))
                           - (log pi(y_l|x) - log pi_ref(y_l|x)) ] )

log pi(y|x) is the *sum* of the response tokens' log-probabilities (``sequence_logprobs``,
in ``finetune.py`` beside the SFT batches it is built from).
Logged per step: the implicit rewards beta (pi_w - ref_w) and beta (pi_l - ref_l), their
difference (the reward margin) and the preference accuracy, the share of pairs whose
margin is > 0 (a tie counts as wrong, so step 1 of a run whose reference is the policy
itself reads 0).

The gradient, with m the bracket above, is -beta sigma(-beta m) (grad pi_w - grad pi_l):
the same push up on y_w and down on y_l, weighted by how wrong the model still is. At
pi = pi_ref the loss is log 2 and the weight beta / 2. DPO only cares about the *difference*,
so both log-probabilities may fall; ``nll_weight`` adds the mean per-token negative
log-likelihood of y_w (as in RPO, Pang et al., arXiv 2404.19733) to keep y_w likely:

    L_total = L + nll_weight * ( -log pi(y_w|x) / |y_w| )

The reference never changes, so ``dpo_train`` computes its log-probabilities once, before
the first step, for exactly the pairs the run will visit. The reference is ``reference`` if
given; otherwise, for a model with LoRA, the same model with the adapter switched off
(``minillama.peft.disabled``: the base model, no second copy in memory; note that a LoRA
already trained by SFT is switched off too); otherwise the model as it is when training
starts (again no copy: its values are taken before step 1).
Pairs are dicts with ``prompt``, ``chosen`` and ``rejected`` (``data/preferences.py``);
they are tokenised as SFT does: BOS + prompt, then response + EOS.
"""

from __future__ import annotations

import contextlib
import itertools

import torch
import torch.nn.functional as F

from .devices import autocast
from .finetune import sequence_logprobs
from .peft import can_disable, disabled
from .train import TrainConfig, epoch_batches, fit, make_optimizer, trainable


def pair_tokens(pair: dict, tokenizer) -> tuple[list[int], list[int], list[int]]:
    """(prompt, chosen, rejected) ids of one pair: BOS + prompt, each response + EOS."""
    for field in ("prompt", "chosen", "rejected"):
        if not isinstance(pair.get(field), str):
            raise ValueError(f"a preference pair needs a string field {field!r}; got "
                             f"{type(pair.get(field)).__name__}")
    prompt = tokenizer.encode(pair["prompt"], bos=True)
    return (prompt, tokenizer.encode(pair["chosen"]) + [tokenizer.eos_id],
            tokenizer.encode(pair["rejected"]) + [tokenizer.eos_id])


def dpo_loss(pi_w: torch.Tensor, pi_l: torch.Tensor, ref_w: torch.Tensor,
             ref_l: torch.Tensor, beta: float = 0.1, nll_weight: float = 0.0,
             chosen_lengths: torch.Tensor | None = None):
    """The DPO loss (mean over pairs) and its diagnostics, from summed log-probabilities.

    Returns ``(loss, stats)``; stats holds per-pair ``chosen_reward`` = beta (pi_w - ref_w),
    ``rejected_reward`` = beta (pi_l - ref_l), ``margin`` = their difference (all
    detached), ``accuracy`` = mean(margin > 0), and ``nll`` = mean(-pi_w / |y_w|) when
    ``nll_weight`` > 0 (which needs ``chosen_lengths``, the token counts of y_w).
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    shapes = {t.shape for t in (pi_w, pi_l, ref_w, ref_l)}
    if len(shapes) != 1:
        raise ValueError(f"pi_w, pi_l, ref_w, ref_l must have one shape, got {sorted(shapes)}")
    chosen = beta * (pi_w - ref_w)
    rejected = beta * (pi_l - ref_l)
    loss = -F.logsigmoid(chosen - rejected).mean()        # -log sigma(beta * m), stable
    margin = (chosen - rejected).detach()
    stats = {"chosen_reward": chosen.detach(), "rejected_reward": rejected.detach(),
             "margin": margin, "accuracy": (margin > 0).float().mean()}
    if nll_weight:
        if chosen_lengths is None:
            raise ValueError("nll_weight > 0 needs chosen_lengths (tokens of each y_w)")
        nll = (-pi_w / torch.as_tensor(chosen_lengths, dtype=pi_w.dtype,
                                       device=pi_w.device)).mean()
        loss = loss + nll_weight * nll
        stats["nll"] = nll.detach()
    return loss, stats


def _both(model, tokens, rows, pad_id):
    """log pi of chosen and of rejected for the pairs ``rows``, in one batch of 2b rows."""
    prompts = [tokens[i][0] for i in rows]
    out = sequence_logprobs(model, prompts + prompts,
                            [tokens[i][1] for i in rows] + [tokens[i][2] for i in rows], pad_id)
    return out[:len(rows)], out[len(rows):]


@torch.no_grad()
def reference_logprobs(model, tokenizer, pairs: list[dict], reference=None,
                       batch_size: int = 16) -> torch.Tensor:
    """(n, 2) reference log-probabilities [log ref(y_w|x), log ref(y_l|x)] of ``pairs``.

    ``reference`` if given; else ``model`` with its (unmerged) LoRA or QLoRA adapter
    disabled, if it has one; else ``model`` itself (call this before training changes it).
    """
    tokens = [pair_tokens(p, tokenizer) for p in pairs]
    scorer = reference if reference is not None else model
    off = disabled(model) if reference is None and can_disable(model) \
        else contextlib.nullcontext()
    was_training = scorer.training
    scorer.eval()
    out = []
    with off:
        for i in range(0, len(tokens), batch_size):
            w, lose = _both(scorer, tokens, range(i, min(i + batch_size, len(tokens))),
                            tokenizer.pad_id)
            out.append(torch.stack([w, lose], dim=1).cpu())
    scorer.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 2)


def dpo_train(model, tokenizer, pairs: list[dict], steps: int, lr: float, beta: float = 0.1,
              batch_size: int = 8, nll_weight: float = 0.0, reference=None, warmup: int = 0,
              weight_decay: float = 0.0, seed: int = 0, log_every: int = 1,
              precision: str = "auto") -> list[dict]:
    """Train ``model``'s trainable parameters with the DPO loss on ``pairs``.

    Batches walk through the pairs in a fresh seeded order each epoch; the loop is
    ``train.fit`` (schedule ``train.lr_at``: warm-up, cosine), DPO supplies the loss of a
    batch. Returns the log, every ``log_every`` steps:
    {"step", "loss", "margin", "accuracy", "chosen_reward", "rejected_reward", "lr", "time"}
    (batch means; plus "nll" when ``nll_weight`` > 0). The model is left in eval mode.
    ``precision`` is ``TrainConfig.precision`` ("auto": bf16 autocast on CUDA, fp32 on the
    CPU); the reference log-probabilities are computed in the same precision.
    """
    if not pairs:
        raise ValueError("dpo_train needs at least one preference pair")
    trainable(model)                                        # an error if nothing would learn
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup=warmup,
                      weight_decay=weight_decay, seed=seed, log_every=log_every, progress=False,
                      precision=precision)
    tokens = [pair_tokens(p, tokenizer) for p in pairs]
    schedule = list(itertools.islice(epoch_batches(len(pairs), batch_size, seed), steps))
    used = sorted({i for batch in schedule for i in batch})
    device = model.tok_embeddings.weight.device
    ref = torch.zeros(len(pairs), 2)
    with autocast(device, precision):                      # as the policy's, in fit
        ref[used] = reference_logprobs(model, tokenizer, [pairs[i] for i in used], reference,
                                       batch_size=max(batch_size, 16))
    ref = ref.to(device)

    def loss_fn(batch):
        pi_w, pi_l = _both(model, tokens, batch, tokenizer.pad_id)
        lengths = torch.tensor([len(tokens[i][1]) for i in batch], device=device)
        return dpo_loss(pi_w, pi_l, ref[batch, 0], ref[batch, 1], beta, nll_weight, lengths)

    return fit(model, make_optimizer(model, cfg), cfg, schedule, loss_fn)
