"""The evaluation metrics against cases computed by hand (the arithmetic is in the comments)."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from minillama import Llama, LlamaConfig
from minillama.metrics import (
    auroc,
    cider_d,
    exact_match,
    multiple_choice_accuracy,
    normalize_answer,
    option_logprobs,
    predict_option,
)
from minillama.tokenizer import ByteTokenizer

TOK = ByteTokenizer()


# ----------------------------------------------------------------------------- exact match
def test_exact_match_reads_gsm8k_final_answers():
    predictions = ["3 apples and 4 more... #### 1,234", "#### 72.0", "The answer is 5", "#### 3"]
    references = ["#### 1234", "72", "#### 6", "#### 3"]
    # 1: "1,234" -> 1234 = 1234 right; 2: "72.0" -> 72 = 72 right;
    # 3: no "####", the whole text "The answer is 5" is not "6": wrong; 4: right.  3/4.
    assert exact_match(predictions, references) == 0.75
    assert normalize_answer("#### $1,000.50") == "1000.5"
    assert normalize_answer("#### -0.0") == "0"
    assert normalize_answer("Q: 2+2=\nA: 4") == "4"
    assert normalize_answer("") is None
    with pytest.raises(ValueError, match="2 predictions for 1"):
        exact_match(["1", "2"], ["1"])


# ----------------------------------------------------------------------------- multiple choice
def test_multiple_choice_with_and_without_length_normalisation():
    logprobs = [[-2.0, -3.0, -4.5], [-6.0, -5.0], [-1.0, -10.0]]
    lengths = [[1, 2, 3], [4, 2], [1, 1]]
    answers = [1, 0, 0]
    # plain argmax:      q1 -> 0 (-2.0),  q2 -> 1 (-5.0),  q3 -> 0: right only on q3 -> 1/3
    # per token:         q1 -> -2, -1.5, -1.5: a tie between 1 and 2, the first (1) wins;
    #                    q2 -> -1.5, -2.5 -> 0;  q3 -> 0.  All right -> 3/3
    assert [predict_option(lp) for lp in logprobs] == [0, 1, 0]
    assert [predict_option(lp, n) for lp, n in zip(logprobs, lengths)] == [1, 0, 0]
    assert multiple_choice_accuracy(logprobs, answers) == pytest.approx(1 / 3)
    assert multiple_choice_accuracy(logprobs, answers, lengths) == 1.0
    with pytest.raises(ValueError, match="lengths"):
        predict_option([-1.0, -2.0], [1, 0])


def test_option_logprobs_equal_a_direct_sum_of_token_log_probabilities():
    torch.manual_seed(0)
    model = Llama(LlamaConfig(dim=32, n_layers=2, n_heads=4, vocab_size=TOK.vocab_size,
                              multiple_of=16, max_seq_len=64)).eval()
    prompt, options = "Q: capital of France?\nA:", [" Paris", " Rome", " a very long answer"]
    got = option_logprobs(model, TOK, prompt, options)
    context = TOK.encode(prompt, bos=True)
    for (total, n), option in zip(got, options):
        ids = TOK.encode(option)
        full = torch.tensor([context + ids])
        with torch.no_grad():
            logp = F.log_softmax(model(full)[0].float(), dim=-1)
        # token ids[j] sits at position len(context) + j and is predicted one position earlier
        direct = sum(logp[len(context) + j - 1, t].item() for j, t in enumerate(ids))
        assert n == len(ids) and total == pytest.approx(direct, abs=1e-4)


# ----------------------------------------------------------------------------- AUROC
def test_auroc_by_hand_with_a_tie():
    scores = [0.9, 0.8, 0.8, 0.3, 0.1]
    labels = [1, 0, 1, 0, 1]
    # positives 0.9, 0.8, 0.1; negatives 0.8, 0.3.  The 6 (pos, neg) pairs:
    # 0.9>0.8: 1, 0.9>0.3: 1, 0.8=0.8: 1/2, 0.8>0.3: 1, 0.1<0.8: 0, 0.1<0.3: 0  -> 3.5 / 6
    # (ranks: 0.1 -> 1, 0.3 -> 2, 0.8 and 0.8 -> 3.5, 0.9 -> 5; R_pos = 5 + 3.5 + 1 = 9.5;
    #  (9.5 - 3*4/2) / (3*2) = 3.5 / 6)
    assert auroc(scores, labels) == pytest.approx(3.5 / 6)
    assert auroc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert auroc([1, 2, 3, 4], [1, 1, 0, 0]) == 0.0
    assert auroc([5, 5, 5, 5], [1, 0, 1, 0]) == 0.5           # every pair tied
    with pytest.raises(ValueError, match="positives and negatives"):
        auroc([0.1, 0.2], [1, 1])


def test_auroc_equals_the_pairwise_definition_on_random_data_with_ties():
    rng = random.Random(0)
    for _ in range(20):
        n = rng.randint(2, 30)
        scores = [rng.randint(0, 5) / 5 for _ in range(n)]     # few values: many ties
        labels = [rng.randint(0, 1) for _ in range(n)]
        labels[0], labels[1] = 0, 1
        pos = [s for s, y in zip(scores, labels) if y]
        neg = [s for s, y in zip(scores, labels) if not y]
        pairwise = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg))
        assert auroc(scores, labels) == pytest.approx(pairwise, abs=1e-12)


# ----------------------------------------------------------------------------- CIDEr-D
def test_cider_d_by_hand():
    references = [["a red circle"], ["a blue square"]]
    # |I| = 2 images, so idf(w) = log 2 - log df(w).  "a" is in both images: idf 0.  Every
    # other n-gram is in one image: idf L = log 2.  Unseen n-grams get df 1: idf L as well.
    # Image 2, candidate = its reference "a blue square": for n = 1, 2, 3 the two vectors are
    # equal, so sum min(g, g) g / ||g||^2 = 1; there are no 4-grams (norm 0 -> term 0); the
    # lengths are equal (penalty 1).  CIDEr-D = 10 * (1 + 1 + 1 + 0) / 4 = 7.5.
    # Image 1, candidate "a red red circle" (counts a:1 red:2 circle:1), reference
    # "a red circle":
    #   n=1: c = (a 0, red 2L, circle L), s = (a 0, red L, circle L)
    #        sum min(c, s) s = L*L + L*L = 2 L^2;  ||c|| = sqrt(5) L, ||s|| = sqrt(2) L
    #        -> 2 / sqrt(10)                        (the clipped min ignores the extra "red")
    #   n=2: c = (a red L, red red L, red circle L), s = (a red L, red circle L)
    #        -> 2 L^2 / (sqrt(3) L * sqrt(2) L) = 2 / sqrt(6)
    #   n=3: no shared trigram -> 0;  n=4: the reference has none -> 0
    #   length 4 vs 3: penalty exp(-1 / (2 * 36)) = exp(-1/72)
    #   CIDEr-D = 10 * exp(-1/72) * (2/sqrt(10) + 2/sqrt(6)) / 4 = 3.5724172...
    first = 10 * math.exp(-1 / 72) * (2 / math.sqrt(10) + 2 / math.sqrt(6)) / 4
    mean, per_image = cider_d(["a red red circle", "A blue square."], references)
    assert per_image == pytest.approx([first, 7.5], abs=1e-9)
    assert first == pytest.approx(3.5724172, abs=1e-6)
    assert mean == pytest.approx((first + 7.5) / 2, abs=1e-9)


def test_cider_d_averages_over_references_and_ignores_words_every_image_has():
    refs = [["a small red circle on the left"], ["a large blue square at the top"]]
    one, _ = cider_d(["a small red circle on the left", "a large blue square at the top"], refs)
    doubled, _ = cider_d(["a small red circle on the left", "a large blue square at the top"],
                         [r * 2 for r in refs])
    assert one == pytest.approx(doubled) and one == pytest.approx(10.0)   # 7 words: all n
    # "a" and "the" occur in both images: idf 0, so a candidate of only those scores 0
    assert cider_d(["a the", "the a"], refs)[1] == [0.0, 0.0]
    # a wrong but well-formed caption scores far below the right one
    assert cider_d(["a large blue square at the top", "a large blue square at the top"],
                   refs)[1][0] < 1.0
    with pytest.raises(ValueError, match="at least two images"):
        cider_d(["a red circle"], [["a red circle"]])


def test_cider_d_matches_pycocoevalcap_when_installed():
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.cider.cider import Cider  # CIDEr-D is what coco-caption's Cider computes
    refs = [["a small red circle on the left", "a red circle on the left"],
            ["a large blue square at the top"], ["a small white cross in the center"]]
    cands = ["a red circle on the left", "a large blue square on the left", "a white cross"]
    theirs, _ = Cider().compute_score({i: r for i, r in enumerate(refs)},
                                      {i: [c] for i, c in enumerate(cands)})
    assert cider_d(cands, refs)[0] == pytest.approx(theirs, rel=1e-6)
