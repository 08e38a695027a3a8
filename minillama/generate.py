"""Autoregressive sampling: greedy, temperature, top-k and top-p (nucleus), with a KV cache.

A language model gives p(x_{t+1} | x_{<=t}). Generation feeds its own samples back in:

* greedy (temperature 0): take argmax p;
* temperature T: sample from softmax(logits / T); T < 1 sharpens, T > 1 flattens;
* top-k: keep only the k most likely tokens (Fan et al., arXiv 1805.04833);
* top-p: keep the smallest set of most likely tokens whose mass reaches p
  (Holtzman et al., arXiv 1904.09751).

With the KV cache the prompt is processed once ("prefill") and every later step feeds a
single token; without it the whole sequence is recomputed each step. Both give exactly
the same tokens (a test checks it), the cache just skips the repeated work.

Decoding one token runs a few hundred small tensor operations for one vector, so the
bookkeeping around each operation costs as much as the arithmetic. ``generate`` runs
under ``torch.inference_mode()``, which skips autograd's bookkeeping entirely (no
version counters, no graph), a cheaper promise than ``no_grad``: its tensors can never
join a backward pass.
"""

from __future__ import annotations

import math

import torch

from .config import check_token_ids


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Set every logit below the k-th largest (per row) to -inf."""
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest prefix of the sorted distribution whose mass reaches p."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits.float(), dim=-1)
    mass_before = probs.cumsum(-1) - probs          # mass of the tokens ranked above
    drop_sorted = mass_before >= p                  # the top token is always kept
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None):
    """One next token per row of ``logits`` (b, V)."""
    if temperature == 0.0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None:
        logits = filter_top_k(logits, top_k)
    if top_p is not None:
        logits = filter_top_p(logits, top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _check(temperature, top_k, top_p, max_new_tokens):
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
            and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")


@torch.inference_mode()
def generate(model, tokens, max_new_tokens: int, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None,
             stop_tokens=(), seed: int | None = None, use_cache: bool = True):
    """Continue ``tokens`` ((t,) or (b, t)) and return only the new tokens.

    Generation ends after ``max_new_tokens`` or once every row has produced one of
    ``stop_tokens`` (the stop token is returned; a finished row is padded with it).
    ``seed`` makes sampling reproducible without touching the global RNG.
    """
    _check(temperature, top_k, top_p, max_new_tokens)
    if isinstance(tokens, str):
        raise TypeError("generate takes token ids, not text: encode the prompt first, "
                        "e.g. tok.encode(text, bos=True)")
    try:
        tokens = torch.as_tensor(tokens, device=model.tok_embeddings.weight.device)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"the prompt must be token ids (a list or tensor of integers), "
                        f"got {type(tokens).__name__}") from None
    if tokens.dim() not in (1, 2):
        raise ValueError(f"the prompt must have shape (t,) or (batch, t), "
                         f"got {tuple(tokens.shape)}")
    squeeze = tokens.dim() == 1
    if squeeze:
        tokens = tokens[None]
    if tokens.shape[1] == 0:
        raise ValueError("generate needs at least one prompt token (e.g. BOS)")
    check_token_ids(tokens, model.cfg.vocab_size, "prompt token ids")
    tokens = tokens.long()
    b, t0 = tokens.shape
    total = t0 + max_new_tokens
    if total > model.cfg.max_seq_len:
        raise ValueError(f"prompt ({t0}) + max_new_tokens ({max_new_tokens}) exceeds "
                         f"max_seq_len={model.cfg.max_seq_len}")
    generator = None
    if seed is not None:
        generator = torch.Generator(device=tokens.device).manual_seed(seed)
    stop = torch.tensor(list(stop_tokens), dtype=torch.long, device=tokens.device)
    done = torch.zeros(b, dtype=torch.bool, device=tokens.device)

    was_training = model.training
    model.eval()
    cache = model.make_cache(b, total) if use_cache else None
    seq, new, pos = tokens, [], 0
    for _ in range(max_new_tokens):
        inp = seq[:, pos:] if use_cache else seq
        logits = model(inp, start_pos=pos if use_cache else 0, cache=cache, last_only=True)
        if use_cache:
            pos = seq.shape[1]
        nxt = sample_next(logits[:, -1], temperature, top_k, top_p, generator)
        if len(stop):
            last = seq[:, -1] if new else None
            nxt = torch.where(done, last if last is not None else nxt, nxt)
            done = done | torch.isin(nxt, stop)
        new.append(nxt)
        seq = torch.cat([seq, nxt[:, None]], dim=1)
        if len(stop) and bool(done.all()):
            break
    model.train(was_training)
    out = torch.stack(new, dim=1) if new else tokens.new_zeros((b, 0))
    return out[0] if squeeze else out


@torch.inference_mode()
def stream(model, tokens, max_new_tokens: int, temperature: float = 0.0,
           top_k: int | None = None, top_p: float | None = None, stop_tokens=(),
           seed: int | None = None):
    """``generate`` for one sequence, *yielding* each new token id as soon as it is
    sampled, so a chat can print it at once; it ends after a stop token (yielded too)
    or ``max_new_tokens``. Same tokens as ``generate`` for the same arguments."""
    _check(temperature, top_k, top_p, max_new_tokens)
    tokens = torch.as_tensor(tokens, device=model.tok_embeddings.weight.device).long()
    if tokens.dim() != 1 or tokens.numel() == 0:
        raise ValueError(f"stream takes one non-empty prompt of shape (t,), "
                         f"got {tuple(tokens.shape)}")
    check_token_ids(tokens, model.cfg.vocab_size, "prompt token ids")
    total = tokens.numel() + max_new_tokens
    if total > model.cfg.max_seq_len:
        raise ValueError(f"prompt ({tokens.numel()}) + max_new_tokens ({max_new_tokens}) "
                         f"exceeds max_seq_len={model.cfg.max_seq_len}")
    generator = None if seed is None else torch.Generator(tokens.device).manual_seed(seed)
    stops = {int(s) for s in stop_tokens}
    was_training = model.training
    model.eval()
    cache, inp, pos = model.make_cache(1, total), tokens[None], 0
    try:
        for _ in range(max_new_tokens):
            logits = model(inp, start_pos=pos, cache=cache, last_only=True)
            pos += inp.shape[1]
            nxt = sample_next(logits[:, -1], temperature, top_k, top_p, generator)
            yield int(nxt)
            if int(nxt) in stops:
                return
            inp = nxt[:, None]
    finally:
        model.train(was_training)
