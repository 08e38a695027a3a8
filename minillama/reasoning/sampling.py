"""Chain of thought, sampling, and self-consistency: spend tokens, then let the answers vote.

Chain-of-thought (Wei et al., arXiv 2201.11903): a model that writes intermediate steps
before its answer can compute what one forward pass cannot; a bounded-depth transformer
answering at once cannot track a long chain of operations, but one writing a step per
token group can (Feng et al., arXiv 2305.15408). ``greedy_cot`` decodes greedily and reads
the answer after the final "####".

Self-consistency (Wang et al., arXiv 2203.11171) samples N reasoning paths at temperature
T and takes the most frequent final answer, marginalising over the paths:

    a* = argmax_a  sum_{i=1..N} [ extract(y_i) = a ],     y_i ~ p(y | x, T)

The vote share, count(a*) / N, is a confidence score: it is 1 when every path agrees and
falls as they scatter (its AUROC against correctness is in ``metrics.auroc``). Samples with
no readable answer count in N but vote for nothing. Ties between answers with equal counts
go to the answer sampled first (the lowest sample index), so a result never depends on set
or dict order. Voting helps only if wrong paths disagree while right ones agree: with
several valid ways to reason it does; with one deterministic style the samples mostly
repeat the greedy path and the vote adds little.
"""

from __future__ import annotations

import torch

from ..data.arithmetic import extract_answer


def _stop_ids(tokenizer, stop_tokens):
    return [tokenizer.eos_id] if stop_tokens is None else list(stop_tokens)


@torch.no_grad()
def sample(model, tokenizer, prompts, n: int = 1, temperature: float = 1.0,
           max_new_tokens: int = 64, seed: int = 0, top_k: int | None = None,
           top_p: float | None = None, stop_tokens=None, batch_size: int = 512):
    """``n`` continuations of each prompt (BOS + prompt, cut at the first stop token).

    ``prompts`` is one string (returns a list of n strings) or a list of strings (returns
    one such list per prompt). Prompts of equal token length are decoded together, n rows
    each, at most ``batch_size`` rows per call, so no padding is ever needed. The same
    arguments always give the same samples (``seed`` feeds the sampler's own generator);
    ``temperature=0`` is greedy decoding. ``stop_tokens`` defaults to [EOS]. Generation
    stops at ``max_new_tokens`` or where the model's context (``max_seq_len``) is full.
    """
    single = isinstance(prompts, str)
    prompts = [prompts] if single else list(prompts)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    stop = _stop_ids(tokenizer, stop_tokens)
    encoded = [tokenizer.encode(p, bos=True) for p in prompts]
    longest = max((len(p) for p in encoded), default=0)
    if longest >= model.cfg.max_seq_len:
        raise ValueError(f"a prompt of {longest} tokens fills the model's max_seq_len="
                         f"{model.cfg.max_seq_len}: no room to answer")
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(encoded):
        by_length.setdefault(len(p), []).append(i)
    rows = [(i, j) for group in by_length.values() for i in group for j in range(n)]
    out = [[""] * n for _ in prompts]
    device = model.tok_embeddings.weight.device
    call, start = 0, 0
    while start < len(rows):                     # chunks of one prompt length
        length = len(encoded[rows[start][0]])
        end = start
        while end < len(rows) and end - start < batch_size \
                and len(encoded[rows[end][0]]) == length:
            end += 1
        chunk = rows[start:end]
        tokens = torch.tensor([encoded[i] for i, _ in chunk], device=device)
        room = min(max_new_tokens, model.cfg.max_seq_len - length)
        new = model.generate(tokens, room, temperature=temperature, top_k=top_k,
                             top_p=top_p, stop_tokens=stop, seed=seed * 100_003 + call)
        for (i, j), ids in zip(chunk, new.tolist()):
            cut = min((ids.index(s) for s in stop if s in ids), default=len(ids))
            out[i][j] = tokenizer.decode(ids[:cut], skip_special=True)
        call, start = call + 1, end
    return out[0] if single else out


def greedy_cot(model, tokenizer, prompts, max_new_tokens: int = 64, stop_tokens=None,
               extract=extract_answer):
    """Greedy decoding and its extracted answer: {"text", "answer"} per prompt."""
    single = isinstance(prompts, str)
    texts = sample(model, tokenizer, [prompts] if single else prompts, n=1, temperature=0.0,
                   max_new_tokens=max_new_tokens, stop_tokens=stop_tokens)
    out = [{"text": t[0], "answer": extract(t[0])} for t in texts]
    return out[0] if single else out


def majority_vote(answers: list) -> tuple[object, float]:
    """(most frequent answer, its share of all ``answers``); None entries never win.

    Ties go to the tied answer that occurs first in ``answers``. With no readable answer
    at all the result is (None, 0.0).
    """
    if not answers:
        raise ValueError("majority_vote needs at least one answer")
    counts: dict = {}
    for a in answers:
        if a is not None:
            counts[a] = counts.get(a, 0) + 1      # dicts keep first-seen order
    if not counts:
        return None, 0.0
    best = max(counts.values())
    winner = next(a for a, c in counts.items() if c == best)
    return winner, best / len(answers)


def self_consistency(model, tokenizer, prompts, n: int = 10, temperature: float = 1.0,
                     max_new_tokens: int = 64, seed: int = 0, extract=extract_answer,
                     **sampling):
    """Sample ``n`` paths per prompt at ``temperature`` and vote over their answers.

    Returns per prompt {"answer", "share", "answers", "samples"}; "share" is the vote
    share of the winner (the confidence). Extra keywords go to ``sample``.
    """
    single = isinstance(prompts, str)
    texts = sample(model, tokenizer, [prompts] if single else prompts, n=n,
                   temperature=temperature, max_new_tokens=max_new_tokens, seed=seed,
                   **sampling)
    out = []
    for samples in texts:
        answers = [extract(s) for s in samples]
        winner, share = majority_vote(answers)
        out.append({"answer": winner, "share": share, "answers": answers, "samples": samples})
    return out[0] if single else out
