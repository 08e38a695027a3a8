"""Chapter 4 exercises: the two moves of byte-pair encoding, written by hand.

BPE training (Sennrich, Haddow & Birch, arXiv 1508.07909) repeats two steps until the
vocabulary is full: find the most frequent adjacent pair of symbols, then merge it
everywhere into a new symbol. ``minillama.tokenizer.Tokenizer.train`` does both; the
grader ``tests/test_exercises_ch04.py`` checks your functions against it, and checks that
the two together learn exactly the library's merges on the same text.

Symbols are token ids (ints). A "word" is one pre-split chunk of text spelled in ids,
e.g. the bytes of " dog" shifted by the number of special tokens.
"""


def most_frequent_pair(words_with_counts) -> tuple[int, int] | None:
    """The adjacent pair that occurs most often, each word weighted by its count.

    ``words_with_counts`` is an iterable of ``(word, count)`` pairs, a word being a
    sequence of ids (for example ``Counter(words).items()``). A word holding the pair
    k times adds ``k * count``; overlapping pairs count separately, so the word
    (7, 7, 7) holds (7, 7) twice. Ties go to the smallest pair, comparing the first id,
    then the second, as the library does. Return ``None`` if no word has two ids.

    Example: [((1, 2, 3), 1), ((2, 3), 4)] -> (2, 3), which occurs 1 + 4 = 5 times.
    """
    # BEGIN SOLUTION
    counts: dict[tuple[int, int], int] = {}
    for word, count in words_with_counts:
        for pair in zip(word, word[1:]):
            counts[pair] = counts.get(pair, 0) + count
    if not counts:
        return None
    return max(counts, key=lambda p: (counts[p], -p[0], -p[1]))
    # END SOLUTION


def merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """A new list: ``ids`` with every occurrence of ``pair`` replaced by ``new_id``.

    Scan left to right and never reuse an id that was just merged, so the occurrences
    do not overlap: merging (7, 7) in [7, 7, 7] gives [new_id, 7]. Leave ``ids``
    itself unchanged.

    Example: merge([1, 2, 3, 1, 2], (1, 2), 9) -> [9, 3, 9].
    """
    # BEGIN SOLUTION
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out
    # END SOLUTION
