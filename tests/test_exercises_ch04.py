"""Graders for chapter 4 (tokenisation: pair counting, merging and BPE training).

    python -m pytest tests/test_exercises_ch04.py                    # the reference answers
    python -m pytest tests/test_exercises_ch04.py --impl=exercises   # your work

Each grader checks a function of ``<impl>/ch04_tokenisation.py`` against its twin in the
library, on random inputs (``--impl``: see ``conftest.py``).
"""

import random
from collections import Counter

import pytest

from minillama.data import generate_stories, instruction_data
from minillama.tokenizer import SPLIT_PATTERN, ByteTokenizer, Tokenizer, merge_pair

CH04 = "ch04_tokenisation"


BYTES = ByteTokenizer()            # spells a chunk in the library's byte ids (byte b -> 3 + b)
FIRST_MERGE_ID = BYTES.vocab_size


def word_table(texts, pre_split=True) -> Counter:
    """The library's training input: every distinct chunk (in byte ids) with its count."""
    chunks = (c for t in texts for c in (SPLIT_PATTERN.findall(t) if pre_split else [t]))
    return Counter(tuple(BYTES.encode(c)) for c in chunks)


def random_words(seed: int) -> list[str]:
    """Short words over a tiny alphabet, many repeated: lots of ties and overlapping pairs."""
    rng = random.Random(seed)
    return ["".join(rng.choice("aab") for _ in range(rng.randint(1, 5)))
            for _ in range(rng.randint(1, 12))]


CORPORA = {
    "stories": generate_stories(40, seed=3),
    "instructions": [r["instruction"] + " " + r["input"] for r in instruction_data(60, seed=1)],
    "unicode": ["naïve café 😀😀 日本語 日本 ...", "  tabs\tand\nnewlines  ", "aaaa aaaa"],
}


@pytest.mark.parametrize("corpus", list(CORPORA))
def test_ch04_most_frequent_pair_is_the_first_merge(impl, corpus):
    texts = CORPORA[corpus]
    got = impl(CH04).most_frequent_pair(list(word_table(texts).items()))
    assert got == Tokenizer.train(texts, FIRST_MERGE_ID + 1).merges[0]


@pytest.mark.parametrize("seed", range(30))
def test_ch04_most_frequent_pair_ties_and_weights(impl, seed):
    # pre_split=False makes each text one word, so repeated texts are a word's count
    texts = random_words(seed)
    table = word_table(texts, pre_split=False)
    got = impl(CH04).most_frequent_pair([(list(w), c) for w, c in table.items()])
    expected = Tokenizer.train(texts, FIRST_MERGE_ID + 1, pre_split=False).merges
    assert got == (expected[0] if expected else None)


@pytest.mark.parametrize("table", [[], [((4,), 10)], [((), 3), ((5,), 1)]])
def test_ch04_most_frequent_pair_without_pairs(impl, table):
    assert impl(CH04).most_frequent_pair(table) is None


@pytest.mark.parametrize("seed", range(40))
def test_ch04_merge(impl, seed):
    rng = random.Random(seed)
    ids = [rng.choice([1, 2, 3]) for _ in range(rng.randint(0, 30))]
    pair = (rng.choice([1, 2, 3]), rng.choice([1, 2, 3]))       # (x, x) overlaps itself
    before = list(ids)
    got = impl(CH04).merge(ids, pair, 99)
    assert ids == before, "merge must not change its input"
    assert list(got) == merge_pair(before, pair, 99)


@pytest.mark.parametrize("corpus, n_merges", [("stories", 80), ("instructions", 60),
                                              ("unicode", 30)])
def test_ch04_your_bpe_learns_the_library_merges(impl, corpus, n_merges):
    texts = CORPORA[corpus]
    expected = Tokenizer.train(texts, FIRST_MERGE_ID + n_merges).merges
    words = [(list(w), c) for w, c in word_table(texts).items()]
    learned = []
    for new_id in range(FIRST_MERGE_ID, FIRST_MERGE_ID + len(expected)):
        pair = impl(CH04).most_frequent_pair(words)
        learned.append(pair)
        words = [(impl(CH04).merge(w, pair, new_id), c) for w, c in words]
    assert learned == expected
