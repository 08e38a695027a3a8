"""``load_tokenizer(path)``: any LLaMA tokenizer file, its format detected from its content.

| file                           | models                       | read by                          |
|--------------------------------|------------------------------|----------------------------------|
| ``tokenizer.model``, tiktoken  | Llama 3 / 3.1 / 3.2 (Meta)   | ours: ``tokenizer_tiktoken.py``  |
| ``tokenizer.model``, protobuf  | LLaMA 1 / 2 (SentencePiece)  | ``sentencepiece``                |
| ``tokenizer.json``, HF         | any HF snapshot              | ``tokenizers``                   |
| ``tokenizer.bin``              | llama2.c                     | ours: ``tokenizer_llama2c.py``   |
| ``tokenizer.json``, minillama  | the course's models          | ours: ``tokenizer.py``           |

Two formats share the name ``tokenizer.model`` and two share ``tokenizer.json``, so the
name is only a hint: the bytes decide. A tiktoken file is text lines "base64 rank"; a
SentencePiece model is a protobuf whose first field (1, ``pieces``) is a message whose
own first field (1, ``piece``) is a string, so it starts ``0x0A len 0x0A``; a llama2.c
file is an int32 then (float32 score, int32 length, bytes) records that fill it exactly.

Every returned tokenizer has ``encode(text, bos=False, eos=False)`` (``Llama2cTokenizer``:
``bos=True`` by default, as in llama2.c, so pass it explicitly), ``decode(ids)``,
``bos_id``, ``eos_id``, ``special_ids`` ({name: id}) and ``vocab_size``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .tokenizer import Tokenizer
from .tokenizer_libs import HFTokenizer, SentencePieceTokenizer
from .tokenizer_llama2c import Llama2cTokenizer, count_tokens
from .tokenizer_tiktoken import TiktokenTokenizer

FORMATS = ("tiktoken", "sentencepiece", "hf", "llama2c", "minillama")
# looked for in a directory, in this order (an HF snapshot of Llama 3 has both the first
# and, under original/, Meta's tiktoken file; they agree)
DIRECTORY_NAMES = ("tokenizer.json", "tokenizer.model", "original/tokenizer.model",
                   "tokenizer.bin")
_TIKTOKEN_LINE = re.compile(rb"[A-Za-z0-9+/]+={0,2}[ \t]+\d+")


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos
    return -1, pos


def detect_format(path) -> str:
    """One of FORMATS for the file at ``path``; ValueError naming the file if none fits."""
    with open(path, "rb") as f:                          # FileNotFoundError if missing
        data = f.read()
    head = data.lstrip()
    if head.startswith(b"{"):
        try:
            obj = json.loads(data.decode("utf-8"))
        except ValueError as e:
            raise ValueError(f"{path} starts like JSON but does not parse: {e}") from None
        if isinstance(obj, dict) and obj.get("format") == "minillama-bpe":
            return "minillama"
        if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
            return "hf"
        raise ValueError(f"{path} is JSON but neither an HF tokenizer.json (no 'model') nor "
                         "a minillama tokenizer (no 'format': 'minillama-bpe')")
    first_line = data.split(b"\n", 1)[0].strip()
    if _TIKTOKEN_LINE.fullmatch(first_line):
        return "tiktoken"
    if len(data) > 2 and data[0] == 0x0A:
        length, pos = _varint(data, 1)
        if 0 < length <= len(data) - pos and data[pos] == 0x0A:
            return "sentencepiece"
    if count_tokens(data):
        return "llama2c"
    raise ValueError(f"{path}: unknown tokenizer format (first bytes {data[:16]!r}); "
                     f"load_tokenizer reads {', '.join(FORMATS)} files. Truncated or "
                     "corrupt download?")


def load_tokenizer(path, **options):
    """The tokenizer in ``path`` (a file, or a directory holding one of DIRECTORY_NAMES).

    ``options`` go to the format's class, e.g. ``special_tokens=LLAMA3_SPECIALS`` for a
    Llama 3.0 tiktoken file (default: the 3.1/3.2 names; the ids that matter agree),
    ``bos=``/``eos=`` names for an HF file without a tokenizer_config.json.
    """
    path = Path(path)
    if path.is_dir():
        for name in DIRECTORY_NAMES:
            if (path / name).is_file():
                return load_tokenizer(path / name, **options)
        raise FileNotFoundError(f"{path} holds no tokenizer file (looked for "
                                f"{', '.join(DIRECTORY_NAMES)})")
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    kind = detect_format(path)
    if kind == "tiktoken":
        return TiktokenTokenizer(path, **options)
    if kind == "sentencepiece":
        return SentencePieceTokenizer(path, **options)
    if kind == "hf":
        return HFTokenizer(path, **options)
    if kind == "llama2c":
        return Llama2cTokenizer(path, **options)
    return Tokenizer.load(path, **options)
