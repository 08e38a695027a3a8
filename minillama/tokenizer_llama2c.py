"""Reading llama2.c's ``tokenizer.bin``: the LLaMA SentencePiece vocabulary, flattened.

LLaMA 1 and 2 tokenize with a SentencePiece BPE model (Kudo & Richardson, arXiv
1808.06226) of 32,000 pieces. llama2.c exports such a model as a flat binary file:

    int32 max_token_length
    vocab_size times:  float32 score, int32 length, `length` bytes of the piece

with SentencePiece's word marker "▁" already replaced by a plain space. The number of
pieces is not in the file; it comes from the model's header. Ids 0, 1, 2 are <unk>,
<s> (BOS) and </s> (EOS), and ids 3..258 are the byte-fallback pieces "<0x00>".."<0xFF>"
(byte b is id b + 3), used for any character the vocabulary lacks.

Encoding, as llama2.c's ``encode`` does it (a greedy, score-driven merge):

1. for non-empty text, start with the piece " " (SentencePiece's dummy prefix, so that
   the first word looks like every other word: " Hello");
2. add one token per character, or its UTF-8 bytes as byte-fallback tokens if the
   character is not a piece;
3. repeatedly merge the adjacent pair whose concatenation is a piece with the highest
   score (the first such pair on ties), until no adjacent pair forms a piece.

Each round scans the whole sequence, so encoding costs O(n^2) in the text length: fine for
prompts. Decoding drops the leading space of the piece that follows BOS and turns
"<0xXX>" pieces back into their raw byte.
"""

from __future__ import annotations

import re
import struct

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
BYTE_OFFSET = 3                                         # byte b has id b + 3
_BYTE_PIECE = re.compile(rb"<0x([0-9A-Fa-f]{2})>")


def count_tokens(data: bytes) -> int | None:
    """How many (score, length, bytes) records fill ``data`` after its header exactly,
    or None if they do not (not a tokenizer.bin)."""
    pos, n = 4, 0
    while pos + 8 <= len(data):
        (length,) = struct.unpack_from("<i", data, pos + 4)
        if length < 0 or pos + 8 + length > len(data):
            return None
        pos, n = pos + 8 + length, n + 1
    return n if pos == len(data) and len(data) >= 4 else None


def read_tokenizer_bin(path, vocab_size: int | None = None) -> tuple[list[bytes], list[float], int]:
    """Pieces, scores and max_token_length from a llama2.c ``tokenizer.bin``.

    ``vocab_size`` (from the model's header) is checked against the file; None counts the
    records, which fill the file exactly.
    """
    if vocab_size is None:
        with open(path, "rb") as f:
            vocab_size = count_tokens(f.read())
        if not vocab_size:
            raise ValueError(f"{path} is not a llama2.c tokenizer.bin: its records do not "
                             "fill the file (truncated or another format?)")
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    with open(path, "rb") as f:                         # FileNotFoundError if missing
        data = f.read()
    if len(data) < 4:
        raise ValueError(f"{path} is truncated: no max_token_length header")
    (max_len,) = struct.unpack_from("<i", data, 0)
    pieces, scores, pos = [], [], 4
    for i in range(vocab_size):
        if pos + 8 > len(data):
            raise ValueError(f"{path} is truncated at token {i} of {vocab_size} "
                             f"(byte {pos}); is vocab_size right?")
        score, n = struct.unpack_from("<fi", data, pos)
        if n < 0 or pos + 8 + n > len(data):
            raise ValueError(f"{path}: token {i} claims {n} bytes but the file ends "
                             f"(truncated file?)")
        pieces.append(data[pos + 8:pos + 8 + n])
        scores.append(score)
        pos += 8 + n
    if pos != len(data):
        raise ValueError(f"{path} has {len(data) - pos} bytes after {vocab_size} tokens; "
                         "is vocab_size right?")
    return pieces, scores, max_len


class Llama2cTokenizer:
    """The SentencePiece vocabulary of a llama2.c ``tokenizer.bin``, with its encoder."""

    bos_id, eos_id, unk_id = BOS_ID, EOS_ID, UNK_ID

    def __init__(self, path, vocab_size: int | None = None):
        self.pieces, self.scores, self.max_token_length = read_tokenizer_bin(path, vocab_size)
        self.lookup: dict[bytes, int] = {}
        for i, piece in enumerate(self.pieces):
            self.lookup.setdefault(piece, i)            # duplicates: the first id wins

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    @property
    def special_ids(self) -> dict[str, int]:
        return {"<unk>": UNK_ID, "<s>": BOS_ID, "</s>": EOS_ID}

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        tokens = []
        if text:
            if b" " not in self.lookup:
                raise ValueError("this vocabulary has no ' ' piece for the dummy prefix")
            tokens.append(self.lookup[b" "])
        for ch in text:                                  # 1. characters, or their bytes
            raw = ch.encode("utf-8")
            if raw in self.lookup:
                tokens.append(self.lookup[raw])
            else:
                tokens.extend(b + BYTE_OFFSET for b in raw)
        while True:                                      # 2. best-scoring merge, repeatedly
            best_score, best_i, best_id = float("-inf"), -1, -1
            for i in range(len(tokens) - 1):
                merged = self.lookup.get(self.pieces[tokens[i]] + self.pieces[tokens[i + 1]])
                if merged is not None and self.scores[merged] > best_score:
                    best_score, best_i, best_id = self.scores[merged], i, merged
            if best_i < 0:
                break
            tokens[best_i:best_i + 2] = [best_id]
        return [BOS_ID] * bos + tokens + [EOS_ID] * eos

    def decode_piece(self, prev_id: int, token_id: int) -> bytes:
        """Bytes of ``token_id`` as llama2.c prints it after ``prev_id``."""
        if not 0 <= token_id < len(self.pieces):
            raise ValueError(f"token id {token_id} is out of range (vocabulary size "
                             f"{len(self.pieces)})")
        piece = self.pieces[token_id]
        if prev_id == BOS_ID and piece.startswith(b" "):
            piece = piece[1:]                            # the dummy prefix
        byte = _BYTE_PIECE.fullmatch(piece)
        return bytes([int(byte.group(1), 16)]) if byte else piece

    def decode(self, ids, skip_special: bool = False) -> str:
        """Text of ``ids``; ``skip_special`` leaves out <unk>, BOS and EOS."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        out, prev = [], -1
        for i in ids:
            piece = self.decode_piece(prev, i)
            if not (skip_special and i in (UNK_ID, BOS_ID, EOS_ID)):
                out.append(piece)
            prev = i
        return b"".join(out).decode("utf-8", errors="replace")
