"""The survey's evaluation metrics, written out so that each number can be checked by hand.

Exact match (GSM8K, Cobbe et al., arXiv 2110.14168). A solution ends with "#### <number>";
the prediction is right when its final number equals the reference's. Both are read by
``arithmetic.extract_answer`` and normalised ("1,234", "$1234" and "1234.0" are all 1234).

Multiple choice by log-likelihood (MMLU, Hendrycks et al., arXiv 2009.03300, as scored by
likelihood-based harnesses). Each option o_k is scored by the model as a continuation of
the question q, and the prediction is the best option:

    plain:        argmax_k  log p(o_k | q)             (a sum over o_k's tokens)
    normalised:   argmax_k  log p(o_k | q) / len(o_k)

The plain sum favours short options (every extra token adds a negative term); dividing by
the length removes that bias. ``option_logprobs`` gives both the sum and the token count;
lm-evaluation-harness's "acc_norm" divides by the option's length in bytes instead, so
``multiple_choice_accuracy`` takes whatever lengths it is given. Ties go to the first option.

AUROC by the rank statistic (Mann-Whitney U; Hanley & McNeil 1982). For P positives and N
negatives with scores s, the area under the ROC curve is the chance that a random positive
scores above a random negative, a tie counting one half:

    AUROC = (1 / (P N)) * sum_{i pos} sum_{j neg} ( [s_i > s_j] + 1/2 [s_i = s_j] )
          = (R_pos - P (P + 1) / 2) / (P N),     R_pos = sum of the positives' ranks,

where tied scores share the mean of their ranks (midranks). The second form is O(n log n).

CIDEr-D (Vedantam et al., arXiv 1411.5726), for the toy captions. Every caption becomes
the vector g^n of its n-gram counts weighted by tf-idf, the idf of an n-gram w_k being
log(|I| / df_k) with df_k the number of images whose references contain it (an n-gram in no
reference gets df = 1). For a candidate c and the m references s_j of its image:

    CIDEr-D_n = (10 / m) sum_j exp(-(l(c) - l(s_j))^2 / (2 sigma^2))
                * sum_k min(g^n_k(c), g^n_k(s_j)) g^n_k(s_j) / (||g^n(c)|| ||g^n(s_j)||)
    CIDEr-D   = (1/4) sum_{n=1..4} CIDEr-D_n,      sigma = 6, l = length in words.

The "-D" changes to CIDEr stop gaming: the Gaussian penalty on the length difference and the
clipped min(...) so that repeating a good n-gram earns nothing. A term with a zero norm
counts 0, so a caption shorter than 4 words can never reach 10 (it has no 4-grams). As in
the coco-caption code, the idf comes from the references of the evaluated set itself, the
term frequency is the raw count (so the min clips counts), and captions are lower-cased and
split on white space (a final period dropped).
"""

from __future__ import annotations

import math
from collections import Counter
from decimal import Decimal, InvalidOperation

import torch

from .data.arithmetic import extract_answer
from .finetune import sequence_logprobs


# ----------------------------------------------------------------------------- exact match
def normalize_answer(text: str | None) -> str | None:
    """The final answer of ``text`` ("#### n" convention), numbers in one canonical form."""
    answer = extract_answer(text)
    if answer is None:
        return None
    answer = answer.replace(",", "").replace("$", "").strip().rstrip(".")
    try:
        number = Decimal(answer)
    except InvalidOperation:
        return answer
    if not number.is_finite():
        return answer
    if number == number.to_integral_value():
        return str(int(number))
    return format(number.normalize(), "f")


def exact_match(predictions: list[str], references: list[str]) -> float:
    """Share of predictions whose normalised final answer equals the reference's."""
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("exact_match needs at least one reference")
    hits = 0
    for p, r in zip(predictions, references):
        want = normalize_answer(str(r))
        hits += want is not None and normalize_answer(p) == want
    return hits / len(references)


# ----------------------------------------------------------------------------- multiple choice
@torch.no_grad()
def option_logprobs(model, tokenizer, prompt: str, options: list[str]) -> list[tuple[float, int]]:
    """(log p(option | prompt), number of option tokens) for each option, in one batch.

    The prompt is encoded with BOS; each option is encoded on its own and appended, so put
    any separating space in the option (" Paris").
    """
    if not options:
        raise ValueError("option_logprobs needs at least one option")
    context = tokenizer.encode(prompt, bos=True)
    encoded = [tokenizer.encode(o) for o in options]
    if any(not ids for ids in encoded):
        raise ValueError("every option needs at least one token (got an empty option)")
    was_training = model.training
    model.eval()
    sums = sequence_logprobs(model, [context] * len(options), encoded, tokenizer.pad_id)
    model.train(was_training)
    return [(s, len(ids)) for s, ids in zip(sums.tolist(), encoded)]


def predict_option(logprobs: list[float], lengths: list[int] | None = None) -> int:
    """Index of the best option: argmax of log p, or of log p / length; ties: first one."""
    if not logprobs:
        raise ValueError("predict_option needs at least one option")
    scores = list(logprobs)
    if lengths is not None:
        if len(lengths) != len(scores) or any(n <= 0 for n in lengths):
            raise ValueError(f"lengths must be {len(scores)} positive numbers, got {lengths}")
        scores = [s / n for s, n in zip(scores, lengths)]
    return max(range(len(scores)), key=lambda k: (scores[k], -k))


def multiple_choice_accuracy(logprobs: list[list[float]], answers: list[int],
                             lengths: list[list[int]] | None = None) -> float:
    """Share of questions whose best option (``predict_option``) is the right one.

    ``logprobs[i][k]`` is log p(option k | question i); with ``lengths`` (same layout) the
    scores are length-normalised.
    """
    if len(logprobs) != len(answers):
        raise ValueError(f"got {len(logprobs)} questions but {len(answers)} answers")
    if not answers:
        raise ValueError("multiple_choice_accuracy needs at least one question")
    if lengths is not None and len(lengths) != len(answers):
        raise ValueError(f"got lengths for {len(lengths)} questions, not {len(answers)}")
    right = sum(predict_option(lp, None if lengths is None else lengths[i]) == answers[i]
                for i, lp in enumerate(logprobs))
    return right / len(answers)


# ----------------------------------------------------------------------------- intervals
def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for a proportion hits/n (95% for z = 1.96).

    Wilson (1927); Newcombe (1998) recommends it over the normal approximation, which
    leaves [0, 1] and is too narrow near 0% and 100%. With p = hits / n:

        centre = (p + z^2 / 2n) / (1 + z^2 / n)
        half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2)
    """
    if not isinstance(n, int) or n < 1 or not 0 <= hits <= n:
        raise ValueError(f"wilson_interval needs 0 <= hits <= n and n >= 1, got {hits}/{n}")
    p, z2 = hits / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


# ----------------------------------------------------------------------------- AUROC
def auroc(scores, labels) -> float:
    """Area under the ROC curve by the Mann-Whitney rank statistic (ties count 1/2).

    ``labels`` are 1 (positive: e.g. the answer was right) or 0; a higher score should
    mean "more likely positive". Needs at least one positive and one negative.
    """
    scores, labels = [float(s) for s in scores], [int(y) for y in labels]
    if len(scores) != len(labels):
        raise ValueError(f"got {len(scores)} scores for {len(labels)} labels")
    if any(y not in (0, 1) for y in labels):
        raise ValueError("labels must be 0 or 1")
    pos = sum(labels)
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        raise ValueError(f"AUROC needs positives and negatives, got {pos} and {neg}")
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    start = 0
    while start < len(order):                      # one run of equal scores at a time
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        midrank = (start + end) / 2 + 1            # ranks start + 1 .. end + 1, averaged
        for k in range(start, end + 1):
            ranks[order[k]] = midrank
        start = end + 1
    rank_sum = sum(r for r, y in zip(ranks, labels) if y == 1)
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


# ----------------------------------------------------------------------------- CIDEr-D
def _words(caption: str) -> list[str]:
    return caption.lower().strip().rstrip(".").split()


def _ngrams(words: list[str], n_max: int = 4) -> Counter:
    return Counter(tuple(words[i:i + n]) for n in range(1, n_max + 1)
                   for i in range(len(words) - n + 1))


def _tfidf(counts: Counter, df: Counter, log_images: float, n_max: int):
    """Per n: {n-gram: count * idf} and its Euclidean norm."""
    vec = [{} for _ in range(n_max)]
    for gram, count in counts.items():
        vec[len(gram) - 1][gram] = count * (log_images - math.log(max(1, df[gram])))
    return vec, [math.sqrt(sum(v * v for v in vn.values())) for vn in vec]


def cider_d(candidates: list[str], references: list[list[str]], sigma: float = 6.0,
            n_max: int = 4) -> tuple[float, list[float]]:
    """CIDEr-D of one candidate caption per image against that image's references.

    Returns (the mean over images, the per-image scores). Needs at least two images: with
    one, every idf is log(1/1) = 0 and all scores are 0.
    """
    if len(candidates) != len(references):
        raise ValueError(f"got {len(candidates)} candidates for {len(references)} images")
    if len(references) < 2:
        raise ValueError("CIDEr-D's idf needs at least two images (with one, it is 0)")
    if any(not refs for refs in references):
        raise ValueError("every image needs at least one reference caption")
    refs = [[_words(s) for s in image] for image in references]
    ref_counts = [[_ngrams(w, n_max) for w in image] for image in refs]
    df = Counter(g for image in ref_counts for g in set().union(*image))
    log_images = math.log(len(references))
    per_image = []
    for cand, image_words, image_counts in zip(candidates, refs, ref_counts):
        c_words = _words(cand)
        c_vec, c_norm = _tfidf(_ngrams(c_words, n_max), df, log_images, n_max)
        total = 0.0
        for words, counts in zip(image_words, image_counts):
            r_vec, r_norm = _tfidf(counts, df, log_images, n_max)
            penalty = math.exp(-((len(c_words) - len(words)) ** 2) / (2 * sigma**2))
            for n in range(n_max):
                if c_norm[n] == 0 or r_norm[n] == 0:
                    continue
                dot = sum(min(v, r_vec[n].get(g, 0.0)) * r_vec[n].get(g, 0.0)
                          for g, v in c_vec[n].items())
                total += penalty * dot / (c_norm[n] * r_norm[n]) / n_max
        per_image.append(10.0 * total / len(image_words))
    return sum(per_image) / len(per_image), per_image
