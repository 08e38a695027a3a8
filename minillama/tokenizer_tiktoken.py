"""Llama 3's tokenizer: a tiktoken-format BPE file, read and applied by our own code.

Llama 3, 3.1 and 3.2 ship ``tokenizer.model`` as a *tiktoken* BPE file: one line per
token, ``base64(token bytes) rank``, 128,000 lines. The rank is the token's id, and it is
also the order in which the merges were learned. Encoding a chunk of text (Sennrich et al.,
arXiv 1508.07909; GPT-2's byte-level variant, Radford et al. 2019):

1. if the chunk's bytes are a token, that is the answer (tiktoken checks this first);
2. otherwise start from its single bytes and, again and again, merge the adjacent pair
   whose concatenation has the **lowest rank**, the leftmost on ties:

       i* = argmin_i rank(p_i + p_{i+1})       p_i* , p_i*+1  ->  p_i* + p_i*+1

   until no adjacent pair is a token. Lower rank = learned earlier = more frequent, so
   this replays training's merges in their order. No merge table is stored: a pair can
   merge iff its concatenation is a token.

Before that, text is cut into chunks by Llama 3's pre-tokenizer regex (the GPT-4 /
``cl100k`` pattern; Meta's ``llama3/tokenizer.py``): English contractions, a word with at
most one leading non-letter, numbers of 1-3 digits, a punctuation run with its newlines,
newline runs, and whitespace. It needs ``\\p{L}``/``\\p{N}``, so the ``regex`` module.

Special tokens are not in the file. Meta's code places 256 of them right after the
ranks, so with 128,000 ranks (published layout: Meta's ``meta-llama/llama3`` repository,
``llama3/tokenizer.py``, and ``meta-llama/llama-models``, ``models/llama3/tokenizer.py``
for 3.1/3.2; the Llama 3 model card describes the chat format):

    128000 <|begin_of_text|>  128001 <|end_of_text|>  128006 <|start_header_id|>
    128007 <|end_header_id|>  128009 <|eot_id|> (end of turn)
    3.1/3.2 also name 128004 <|finetune_right_pad_id|>, 128005 <|step_id|>,
    128008 <|eom_id|> (end of message, tool calls), 128010 <|python_tag|>, 128011 <|image|>;
    every other id up to 128255 is <|reserved_special_token_N|>.

As in Meta's ``encode``, special-token text inside ordinary text is encoded as plain text
unless ``allow_special=True``, so a user cannot forge an end of turn.
"""

from __future__ import annotations

import base64
import binascii
import operator

# Llama 3's pre-tokenizer (the cl100k pattern), exactly as Meta's tokenizer.py writes it.
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
NUM_RESERVED = 256

_NAMED_3 = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
            "<|reserved_special_token_1|>", "<|reserved_special_token_2|>",
            "<|reserved_special_token_3|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|reserved_special_token_4|>", "<|eot_id|>"]
# Llama 3 (meta-llama/llama3): the named ten, then reserved 5 .. 250
LLAMA3_SPECIALS = _NAMED_3 + [f"<|reserved_special_token_{i}|>"
                              for i in range(5, NUM_RESERVED - 5)]
_NAMED_31 = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
             "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
             "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>",
             "<|python_tag|>", "<|image|>"]
# Llama 3.1 / 3.2 (meta-llama/llama-models): the named twelve, then reserved 2 .. 245
LLAMA31_SPECIALS = _NAMED_31 + [f"<|reserved_special_token_{2 + i}|>"
                                for i in range(NUM_RESERVED - len(_NAMED_31))]


def _regex():
    try:
        import regex
    except ImportError:
        raise ImportError("reading a tiktoken-format tokenizer (Llama 3) needs the 'regex' "
                          "module for its \\p{L} pre-tokenizer: pip install regex") from None
    return regex


def read_tiktoken_file(path) -> dict[bytes, int]:
    """``{token bytes: rank}`` from a tiktoken BPE file; a malformed line raises ValueError."""
    with open(path, "rb") as f:                          # FileNotFoundError if missing
        lines = f.read().splitlines()
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError
            token, rank = base64.b64decode(parts[0], validate=True), int(parts[1])
        except (ValueError, binascii.Error):
            raise ValueError(f"{path}, line {lineno}: expected 'base64-token rank', got "
                             f"{line[:60]!r}: not a tiktoken BPE file") from None
        if token in ranks:
            raise ValueError(f"{path}, line {lineno}: token {token!r} appears twice")
        ranks[token] = rank
    if not ranks:
        raise ValueError(f"{path} holds no tokens: not a tiktoken BPE file")
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{path}: the ranks are not 0 .. {len(ranks) - 1}, each once")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} single bytes (e.g. {missing[0]}), "
                         "so some text could not be encoded")
    return ranks


def bpe_by_rank(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    """Token ids of one pre-tokenized chunk: merge the lowest-ranked pair until none is left."""
    if piece in ranks:
        return [ranks[piece]]
    parts = [piece[i:i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        best, best_i = None, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and (best is None or r < best):   # strict <: leftmost on ties
                best, best_i = r, i
        if best is None:
            break
        parts[best_i:best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return [ranks[p] for p in parts]


class TiktokenTokenizer:
    """A tiktoken-format BPE (Llama 3's ``tokenizer.model``) with its special tokens.

    ``special_tokens``: names placed at ids ``len(ranks), len(ranks)+1, ...`` (default:
    Llama 3.1/3.2's 256) or a ``{name: id}`` dict. ``bos``/``eos`` name the BOS and EOS.
    """

    def __init__(self, path, special_tokens=LLAMA31_SPECIALS, pattern: str = LLAMA3_PATTERN,
                 bos: str = "<|begin_of_text|>", eos: str = "<|end_of_text|>"):
        self.path, self.pattern = str(path), pattern
        self.ranks = read_tiktoken_file(path)
        if isinstance(special_tokens, dict):
            self.special_ids = dict(special_tokens)
        else:
            self.special_ids = {s: len(self.ranks) + i for i, s in enumerate(special_tokens)}
        clash = set(self.special_ids.values()) & set(range(len(self.ranks)))
        if clash or len(set(self.special_ids.values())) < len(self.special_ids):
            raise ValueError(f"special token ids must be distinct and above the "
                             f"{len(self.ranks)} ranks of {path}")
        self.bos_id, self.eos_id = self.special_ids.get(bos), self.special_ids.get(eos)
        self._bytes = {r: t for t, r in self.ranks.items()}
        self._bytes.update({i: s.encode("utf-8") for s, i in self.special_ids.items()})
        regex = _regex()
        self._split = regex.compile(pattern)
        names = sorted(self.special_ids, key=len, reverse=True)
        self._special_re = regex.compile("(" + "|".join(map(regex.escape, names)) + ")")
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        """Ranks plus specials (Llama 3: 128,000 + 256 = 128,256, the embedding's rows)."""
        return max(self._bytes) + 1

    def encode(self, text: str, bos: bool = False, eos: bool = False,
               allow_special: bool = False) -> list[int]:
        """Token ids; special-token text maps to its id only if ``allow_special``."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        ids = [self.bos_id] if bos else []
        parts = self._special_re.split(text) if allow_special and self.special_ids else [text]
        for i, part in enumerate(parts):
            if i % 2:                                      # odd parts: matched specials
                ids.append(self.special_ids[part])
                continue
            for chunk in self._split.findall(part):
                cached = self._cache.get(chunk)
                if cached is None:
                    cached = bpe_by_rank(chunk.encode("utf-8"), self.ranks)
                    if len(self._cache) < 100_000:
                        self._cache[chunk] = cached
                ids.extend(cached)
        if eos:
            ids.append(self.eos_id)
        return ids

    def id_to_bytes(self, i: int) -> bytes:
        i = operator.index(i)
        if i not in self._bytes:
            raise ValueError(f"token id {i} is not in this vocabulary (size {self.vocab_size})")
        return self._bytes[i]

    def decode(self, ids, skip_special: bool = False) -> str:
        """Text of ``ids``; a cut multi-byte character becomes U+FFFD."""
        ids = ids.tolist() if hasattr(ids, "tolist") else ids
        specials = set(self.special_ids.values()) if skip_special else ()
        raw = b"".join(self.id_to_bytes(i) for i in ids if i not in specials)
        return raw.decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return (f"TiktokenTokenizer({self.path!r}, ranks={len(self.ranks)}, "
                f"specials={len(self.special_ids)})")
