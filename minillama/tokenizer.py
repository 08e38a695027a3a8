"""Byte-level BPE: a tokenizer learned from the training text.

Byte Pair Encoding (Sennrich, Haddow & Birch, arXiv 1508.07909) starts from single
symbols and, again and again, merges the most frequent adjacent pair into a new symbol:

    (a, b) = argmax_(x, y) count(x y)        then every "a b" becomes "ab"

until the vocabulary has the wanted size. Working on the UTF-8 *bytes* of the text, as
GPT-2 does (Radford et al., 2019), means the 256 base symbols already spell every
possible string: there is no unknown token and decode(encode(s)) == s for any string s.
Vocabulary layout (ids):

    0 .. S-1          the S special tokens; by default <pad> = 0, <bos> = 1, <eos> = 2
    S .. S+255        the 256 single bytes (byte b has id S + b)
    S+256 ...         the learned merges, in the order they were learned

Specials come first so that pad = 0 and bos = 1 as in llama2.c, whose byte-fallback
tokens also sit at 3..258. A merge's id is its rank: encoding a chunk merges the present
pair with the lowest id, again and again, until no learned pair is left.

Pre-splitting: before counting, the text is cut into chunks by a small regex (a word with
its leading space, one digit as LLaMA's tokenizer does, a punctuation run, whitespace),
so merges never cross a word boundary and "dog." and "dog!" share the token "dog".
Training counts each distinct chunk once (a word-frequency table) and, after a merge,
re-counts only the pairs of the words that contained the merged pair.

Measured on the course's shared 2-core CPU: a 512-token vocabulary (253 merges) trains
on 1 MB of English (Python's docs) in 1-2 s; encoding it takes 0.3-0.8 s (2.0 bytes/token).
"""

from __future__ import annotations

import json
import operator
import re
from collections import Counter, defaultdict

from .files import atomic_file

DEFAULT_SPECIALS = ("<pad>", "<bos>", "<eos>")
FORMAT_VERSION = 1

# A word with an optional leading space | one digit | a punctuation run (underscores
# included) with an optional leading space | whitespace up to a single space that starts
# the next chunk | any other whitespace. Every character belongs to one of the classes,
# so the chunks always join back into the original text.
SPLIT_PATTERN = re.compile(r" ?[^\W\d_]+|\d| ?(?:[^\w\s]|_)+|\s+?(?= ?\S)|\s+")


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace each occurrence of ``pair`` in ``ids`` by ``new_id``, scanning left to right."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _pairs(ids):
    return zip(ids, ids[1:])                   # adjacent pairs, overlapping: "aaa" has two


def _as_texts(text_or_texts) -> list[str]:
    texts = [text_or_texts] if isinstance(text_or_texts, str) else list(text_or_texts)
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"expected str or an iterable of str, found {type(t).__name__}")
    return texts


class Tokenizer:
    """Byte-level BPE. Build one with ``Tokenizer.train`` or ``Tokenizer.load``."""

    def __init__(self, merges=(), special_tokens=DEFAULT_SPECIALS, pre_split: bool = True):
        specials = list(special_tokens)
        well_formed = all(isinstance(s, str) and s for s in specials)
        if not well_formed or len(set(specials)) < len(specials):
            raise ValueError(f"special tokens must be distinct non-empty strings, got {specials}")
        self.special_tokens, self.pre_split = specials, bool(pre_split)
        self._offset = len(specials)
        self._bytes = [s.encode("utf-8") for s in specials] + [bytes([b]) for b in range(256)]
        self.merges: list[tuple[int, int]] = []
        self._ranks: dict[tuple[int, int], int] = {}
        for k, (a, b) in enumerate(merges):
            new_id = len(self._bytes)
            if not (self._offset <= a < new_id and self._offset <= b < new_id):
                raise ValueError(f"merge {k} ({a}, {b}) uses an id that is a special token or "
                                 f"not yet defined (allowed: {self._offset}..{new_id - 1})")
            if (a, b) in self._ranks:
                raise ValueError(f"merge {k} repeats the pair ({a}, {b})")
            self._ranks[(a, b)] = new_id
            self.merges.append((a, b))
            self._bytes.append(self._bytes[a] + self._bytes[b])
        self._special_ids = {s: i for i, s in enumerate(specials)}
        longest_first = sorted(specials, key=len, reverse=True)
        self._special_re = re.compile("(" + "|".join(map(re.escape, longest_first)) + ")")
        self._cache: dict[str, tuple[int, ...]] = {}

    # ---- training ---------------------------------------------------------------------
    @staticmethod
    def train(text_or_texts, vocab_size: int, special_tokens=DEFAULT_SPECIALS,
              pre_split: bool = True) -> Tokenizer:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from the text(s).

        Stops early (smaller vocabulary) if the corpus runs out of pairs. With
        ``pre_split=False`` each text is one sequence: meant for tiny demo corpora.
        """
        texts = _as_texts(text_or_texts)
        base = Tokenizer((), special_tokens, pre_split)
        n_merges = vocab_size - base.vocab_size
        if n_merges < 0:
            raise ValueError(f"vocab_size {vocab_size} is below the {base.vocab_size} ids that "
                             "the 256 bytes and the special tokens already take")
        # 1. word-frequency table: every distinct chunk once, spelled in byte ids
        counts = Counter(chunk for t in texts for chunk in base._chunks(t))
        words = [[base._offset + b for b in chunk.encode("utf-8")] for chunk in counts]
        freqs = list(counts.values())
        # 2. how often each adjacent pair occurs, and in which words
        pair_counts: Counter = Counter()
        where = defaultdict(set)
        for w, word in enumerate(words):
            for p in _pairs(word):
                pair_counts[p] += freqs[w]
                where[p].add(w)
        # 3. merge the most frequent pair (ties: smallest ids) and update the counts locally
        merges = []
        while len(merges) < n_merges and pair_counts:
            pair = max(pair_counts, key=lambda p: (pair_counts[p], -p[0], -p[1]))
            new_id = base.vocab_size + len(merges)
            merges.append(pair)
            for w in where.pop(pair):
                for p in _pairs(words[w]):            # take the word's old pairs out ...
                    pair_counts[p] -= freqs[w]
                    if pair_counts[p] == 0:
                        del pair_counts[p]
                words[w] = merge_pair(words[w], pair, new_id)
                for p in _pairs(words[w]):            # ... and put its new pairs in
                    pair_counts[p] += freqs[w]
                    where[p].add(w)
        return Tokenizer(merges, special_tokens, pre_split)

    # ---- encoding and decoding --------------------------------------------------------
    def encode(self, text: str, bos: bool = False, eos: bool = False,
               allow_special: bool = False) -> list[int]:
        """Token ids of ``text``. Special-token text maps to its id only if ``allow_special``."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        ids = [self._special("<bos>")] if bos else []
        parts = self._special_re.split(text) if allow_special and self.special_tokens else [text]
        for i, part in enumerate(parts):
            if i % 2:                                  # odd parts are the matched specials
                ids.append(self._special_ids[part])
            else:
                for chunk in self._chunks(part):
                    ids.extend(self._encode_chunk(chunk))
        if eos:
            ids.append(self._special("<eos>"))
        return ids

    def _chunks(self, text: str) -> list[str]:
        if self.pre_split:
            return SPLIT_PATTERN.findall(text)
        return [text] if text else []

    def _encode_chunk(self, chunk: str) -> tuple[int, ...]:
        cached = self._cache.get(chunk)
        if cached is not None:
            return cached
        ids = [self._offset + b for b in chunk.encode("utf-8")]
        while len(ids) > 1:
            pair = min(_pairs(ids), key=lambda p: self._ranks.get(p, float("inf")))
            if pair not in self._ranks:
                break
            ids = merge_pair(ids, pair, self._ranks[pair])
        if len(self._cache) >= 100_000:            # keep memory bounded on huge corpora
            self._cache.clear()
        cached = self._cache[chunk] = tuple(ids)
        return cached

    def decode_bytes(self, ids, skip_special: bool = False) -> bytes:
        """The raw bytes of ``ids`` (a list, or a 1-D tensor/array); specials as their text."""
        ids = ids.tolist() if hasattr(ids, "tolist") else ids
        return b"".join(self.id_to_bytes(i) for i in ids
                        if not (skip_special and 0 <= i < self._offset))

    def decode(self, ids, skip_special: bool = False) -> str:
        """Text of ``ids``; invalid UTF-8 (e.g. a cut multi-byte character) becomes U+FFFD."""
        return self.decode_bytes(ids, skip_special).decode("utf-8", errors="replace")

    # ---- vocabulary -------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._bytes)

    def id_to_bytes(self, i: int) -> bytes:
        i = operator.index(i)
        if not 0 <= i < len(self._bytes):
            raise ValueError(f"token id {i} is out of range (vocabulary size {len(self._bytes)})")
        return self._bytes[i]

    def _special(self, name: str) -> int:
        if name not in self._special_ids:
            raise ValueError(f"this tokenizer has no {name} special token")
        return self._special_ids[name]

    special_ids = property(lambda self: dict(self._special_ids), doc="{name: id} of the specials")
    pad_id = property(lambda self: self._special_ids.get("<pad>"))
    bos_id = property(lambda self: self._special_ids.get("<bos>"))
    eos_id = property(lambda self: self._special_ids.get("<eos>"))

    def compression_ratio(self, text_or_texts) -> float:
        """UTF-8 bytes per token over the text(s): 1.0 for raw bytes, higher is better."""
        texts = _as_texts(text_or_texts)
        n_tokens = sum(len(self.encode(t)) for t in texts)
        if n_tokens == 0:
            raise ValueError("compression_ratio needs some non-empty text")
        return sum(len(t.encode("utf-8")) for t in texts) / n_tokens

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(vocab_size={self.vocab_size}, "
                f"merges={len(self.merges)}, special_tokens={self.special_tokens})")

    # ---- saving and loading -----------------------------------------------------------
    def save(self, path) -> None:
        """Write the tokenizer as JSON, atomically (temp file + os.replace)."""
        data = {"format": "minillama-bpe", "version": FORMAT_VERSION, "pre_split": self.pre_split,
                "special_tokens": self.special_tokens, "merges": [list(m) for m in self.merges]}
        with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)

    @staticmethod
    def load(path) -> Tokenizer:
        """Read a tokenizer written by ``save``; a damaged file raises ValueError."""
        with open(path, "rb") as f:                    # FileNotFoundError if missing
            raw = f.read()
        try:
            data = json.loads(raw.decode("utf-8"))
        except ValueError as e:                        # bad UTF-8 or bad JSON
            raise ValueError(f"{path} is not a valid tokenizer JSON file: {e}") from None
        if not isinstance(data, dict) or data.get("format") != "minillama-bpe":
            raise ValueError(f"{path} is not a minillama tokenizer file")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path} has unknown tokenizer version {data.get('version')!r} "
                             f"(this code reads version {FORMAT_VERSION})")
        merges, specials = data.get("merges"), data.get("special_tokens")
        is_pair = lambda m: isinstance(m, list) and len(m) == 2 and all(type(x) is int for x in m)
        if not isinstance(merges, list) or not all(map(is_pair, merges)):
            raise ValueError(f"{path}: 'merges' must be a list of [id, id] integer pairs")
        if not isinstance(specials, list):
            raise ValueError(f"{path}: 'special_tokens' must be a list of strings")
        try:
            return Tokenizer(merges, specials, bool(data.get("pre_split", True)))
        except ValueError as e:
            raise ValueError(f"{path}: inconsistent tokenizer: {e}") from None


class ByteTokenizer(Tokenizer):
    """No merges: one token per UTF-8 byte, plus the specials. Same interface as Tokenizer."""

    def __init__(self, special_tokens=DEFAULT_SPECIALS):
        super().__init__((), special_tokens, pre_split=True)
