"""Instruction fine-tuning (SFT): learn to write the response, not to repeat the prompt.

A record {instruction, input, output} becomes one token sequence, the prompt rendered
by ``format_prompt`` followed by the response and an end-of-sequence token:

    x = [BOS] prompt tokens  |  response tokens [EOS]
                  P positions |  R positions

Only the R response positions are trained on (Alpaca, Taori et al. 2023; InstructGPT,
Ouyang et al., arXiv 2203.02155):

    L = -(1 / |R|) * sum_{t in R} log p(x_t | x_<t)

The prompt positions get the target -100, which ``Llama.forward`` leaves out of the
cross-entropy. The EOS target teaches the model to stop. Sequences of a batch are
padded on the right: with causal attention no real token ever looks at the padding,
and padded targets are -100 as well.

``finetune`` trains whatever parameters are left trainable (all of them, or only those a
PEFT method from ``minillama.peft`` added) with the loop (``fit``), schedule and AdamW of
``minillama/train.py``; ``generate_answers`` decodes greedily after each prompt.

The same padded batches score a whole response: log p(y|x) = sum_t log p(y_t | x, y_<t),
summed over the response tokens only (``sequence_logprobs``), which DPO and the
multiple-choice metrics use.

Exact match without generating: greedy decoding writes the reference response
r_1 .. r_R and then EOS exactly when, at every response position,

    argmax_v p(v | prompt, r_<t) = r_t

and one teacher-forced forward pass checks that for a whole batch at once
(``greedy_score``). It agrees with ``score(generate_answers(...))`` except when the
model writes the right text split into different tokens, which counts as wrong here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .data.instructions import format_prompt
from .devices import to_device
from .train import TrainConfig, epoch_batches, fit, make_optimizer, trainable

IGNORE = -100


def sft_tokens(record: dict, tokenizer, template=format_prompt) -> tuple[list[int], list[int]]:
    """(inputs, targets) of one record: targets are the next tokens, -100 under the prompt.

    ``template`` renders a record's prompt (default: the Alpaca-style ``format_prompt``).
    """
    prompt = tokenizer.encode(template(record), bos=True)
    response = tokenizer.encode(record["output"]) + [tokenizer.eos_id]
    ids = prompt + response
    labels = [IGNORE] * len(prompt) + response
    return ids[:-1], labels[1:]          # position t predicts token t + 1


def sft_batch(examples: list[tuple[list[int], list[int]]], pad_id: int):
    """Right-pad a list of ``sft_tokens`` outputs into (inputs, targets) of shape (b, t)."""
    if not examples:
        raise ValueError("sft_batch needs at least one example")
    t = max(len(x) for x, _ in examples)
    inputs = torch.full((len(examples), t), pad_id, dtype=torch.long)
    targets = torch.full((len(examples), t), IGNORE, dtype=torch.long)
    for row, (x, y) in enumerate(examples):
        inputs[row, :len(x)] = torch.tensor(x)
        targets[row, :len(y)] = torch.tensor(y)
    return inputs, targets


def sequence_logprobs(model, prompts_ids: list[list[int]], responses_ids: list[list[int]],
                      pad_id: int = 0) -> torch.Tensor:
    """log pi(y|x) = sum_t log p(y_t | x, y_<t) for each (prompt, response) pair; shape (b,).

    The pairs are right-padded into one batch; the prompt and the padding get target -100,
    which ``F.cross_entropy`` scores as 0, so summing over positions adds up exactly the
    response tokens. Differentiable: wrap in ``torch.no_grad()`` for a reference model.
    """
    if len(prompts_ids) != len(responses_ids):
        raise ValueError(f"got {len(prompts_ids)} prompts for {len(responses_ids)} responses")
    if not prompts_ids:
        raise ValueError("sequence_logprobs needs at least one (prompt, response) pair")
    examples = []
    for prompt, response in zip(prompts_ids, responses_ids):
        if not prompt or not response:
            raise ValueError("every prompt and every response needs at least one token")
        ids = list(prompt) + list(response)
        examples.append((ids[:-1], [IGNORE] * (len(prompt) - 1) + list(response)))
    longest = max(len(x) for x, _ in examples)
    if longest > model.cfg.max_seq_len:
        raise ValueError(f"a prompt + response is {longest + 1} tokens but the model's "
                         f"max_seq_len is {model.cfg.max_seq_len}")
    x, y = to_device(model.tok_embeddings.weight.device, *sft_batch(examples, pad_id))
    logits = model(x).float()                                            # (b, t, V)
    nll = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=IGNORE, reduction="none")
    return -nll.sum(dim=1)                                               # (b,)


def _check_lengths(examples, max_seq_len: int):
    longest = max(len(x) for x, _ in examples)
    if longest > max_seq_len:
        raise ValueError(f"a record is {longest} tokens long but the model's max_seq_len is "
                         f"{max_seq_len}; choose shorter records or a longer-context model")


def finetune(model, tokenizer, records: list[dict], steps: int, lr: float, batch_size: int = 16,
             warmup: int = 10, weight_decay: float = 0.0, seed: int = 0, device="cpu",
             log_every: int = 1, template=format_prompt, optimizer=None,
             precision: str = "auto", paged: bool = False) -> list[dict]:
    """Train ``model``'s trainable parameters on ``records`` with the response-only loss.

    Batches walk through the records in a fresh random order each epoch (fixed by
    ``seed``). Returns the log: {"step", "loss", "lr", "time"} every ``log_every`` steps.
    The model is left in eval mode. The loop is ``train.fit``; only the batch and its
    loss are SFT's own.

    ``optimizer``: None for AdamW as ``train.make_optimizer`` builds it, or a callable
    taking the list of trainable parameters and returning a torch optimiser (for example
    ``bitsandbytes.optim.PagedAdamW``); its weight decay is then its own, while the
    learning rate of every group still follows the warmup/cosine schedule.
    ``paged=True`` (QLoRA) makes that default AdamW bitsandbytes' paged one when the model
    is on CUDA (``devices.adamw_kind``). ``precision`` is ``TrainConfig.precision``: "auto"
    trains under bf16 autocast on CUDA and in fp32 on the CPU.
    """
    if not records:
        raise ValueError("finetune needs at least one record")
    trainable(model)                                        # an error if nothing would learn
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup=warmup,
                      weight_decay=weight_decay, seed=seed, log_every=log_every, progress=False,
                      precision=precision)
    examples = [sft_tokens(r, tokenizer, template) for r in records]
    _check_lengths(examples, model.cfg.max_seq_len)
    model.to(device)
    if optimizer is None:
        optimizer = make_optimizer(model, cfg, paged=paged)
    else:
        optimizer = optimizer(trainable(model))
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must return a torch optimiser, got "
                            f"{type(optimizer).__name__}")

    def loss_fn(batch):
        x, y = to_device(device, *sft_batch([examples[i] for i in batch], tokenizer.pad_id))
        _, loss = model(x, y)
        return loss, {}

    return fit(model, optimizer, cfg, epoch_batches(len(examples), batch_size, seed), loss_fn)


@torch.no_grad()
def sft_loss(model, tokenizer, records: list[dict], batch_size: int = 32, device="cpu",
             template=format_prompt) -> float:
    """Mean response-only loss per response token over ``records`` (no training)."""
    if not records:
        raise ValueError("sft_loss needs at least one record")
    examples = [sft_tokens(r, tokenizer, template) for r in records]
    _check_lengths(examples, model.cfg.max_seq_len)
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        x, y = to_device(device, *sft_batch(examples[i:i + batch_size], tokenizer.pad_id))
        _, loss = model(x, y)
        n = int((y != IGNORE).sum())
        total, count = total + loss.item() * n, count + n
    return total / count


@torch.no_grad()
def greedy_score(model, tokenizer, records: list[dict], batch_size: int = 32,
                 device="cpu", template=format_prompt) -> dict:
    """Greedy exact match by one forward pass per batch: ``score``'s dict (exact_match, n,
    per_family), plus the response loss of that same pass (``"loss"``, as ``sft_loss``)."""
    if not records:
        raise ValueError("greedy_score needs at least one record")
    clean = [{**r, "output": r.get("clean_output", r["output"])} for r in records]
    examples = [sft_tokens(r, tokenizer, template) for r in clean]
    _check_lengths(examples, model.cfg.max_seq_len)
    model.eval()
    hits: dict[str, list[bool]] = {}
    total, count = 0.0, 0
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))  # little padding
    examples, clean = [examples[i] for i in order], [clean[i] for i in order]
    for i in range(0, len(examples), batch_size):
        x, y = sft_batch(examples[i:i + batch_size], tokenizer.pad_id)
        logits = model(*to_device(device, x)).float().cpu()
        right = ((logits.argmax(-1) == y) | (y == IGNORE)).all(dim=1)   # every response token
        for record, ok in zip(clean[i:i + batch_size], right.tolist()):
            hits.setdefault(record["family"], []).append(ok)
        total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE,
                                 reduction="sum").item()
        count += int((y != IGNORE).sum())
    every = [h for family in hits.values() for h in family]
    return {"exact_match": sum(every) / len(every), "n": len(every),
            "per_family": {f: sum(h) / len(h) for f, h in sorted(hits.items())},
            "loss": total / count}


@torch.no_grad()
def generate_answers(model, tokenizer, records: list[dict], max_new_tokens: int = 32,
                     device="cpu", template=format_prompt) -> list[str]:
    """Greedy answers after the prompt ``template`` renders, one string per record (EOS not
    included).

    Prompts of the same length are decoded together as one batch, so no padding (and no
    attention mask) is needed.
    """
    prompts = [tokenizer.encode(template(r), bos=True) for r in records]
    longest = max((len(p) for p in prompts), default=0)
    if longest >= model.cfg.max_seq_len:
        raise ValueError(f"a prompt of {longest} tokens fills the model's max_seq_len="
                         f"{model.cfg.max_seq_len}: no room to answer")
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(len(p), []).append(i)
    answers = [""] * len(records)
    for length, rows in by_length.items():
        tokens = torch.tensor([prompts[i] for i in rows], device=device)
        room = min(max_new_tokens, model.cfg.max_seq_len - length)
        out = model.generate(tokens, room, stop_tokens=[tokenizer.eos_id])
        for i, ids in zip(rows, out.tolist()):
            if tokenizer.eos_id in ids:
                ids = ids[:ids.index(tokenizer.eos_id)]
            answers[i] = tokenizer.decode(ids, skip_special=True)
    return answers
