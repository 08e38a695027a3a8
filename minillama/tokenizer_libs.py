"""Tokenizers read through their own libraries: SentencePiece (Llama 1/2) and HF ``tokenizer.json``.

Both wrappers give the interface every minillama tokenizer has (``load_tokenizer``):
``encode(text, bos=False, eos=False, allow_special=False)``, ``decode(ids)``, ``bos_id``,
``eos_id``, ``special_ids`` ({name: id}) and ``vocab_size``. The libraries are imported
only when such a file is opened, with a "pip install ..." message if missing.

* **SentencePiece** (Kudo & Richardson, arXiv 1808.06226): LLaMA 1 and 2 ship a BPE
  ``tokenizer.model`` of 32,000 pieces (a protobuf). As in Meta's ``llama/tokenizer.py``,
  ``encode`` is the processor's ids with BOS/EOS added by hand; text such as "<s>" is
  never a special token (control pieces cannot be typed).
* **HF tokenizers**: a ``tokenizer.json`` holds the whole pipeline (normaliser,
  pre-tokeniser, model, post-processor, added tokens). We encode with
  ``add_special_tokens=False`` and add BOS/EOS ourselves, so ``bos=``/``eos=`` mean the same
  for every format; BOS/EOS names come from ``tokenizer_config.json`` beside the file
  when there is one, else from the usual names among its special tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

_BOS_NAMES = ("<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>", "<|bos|>")
_EOS_NAMES = ("<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>", "<|eos|>")


def _need(module: str, what: str):
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(f"reading {what} needs the '{module}' package: "
                          f"pip install {module}") from None


def _ids(ids, vocab_size: int) -> list[int]:
    """``ids`` as a list, each checked to be in ``range(vocab_size)``."""
    ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise ValueError(f"token id {bad[0]} is out of range (vocabulary size {vocab_size})")
    return ids


class SentencePieceTokenizer:
    """A SentencePiece ``tokenizer.model`` (LLaMA 1/2, TinyLlama, Mistral 7B v0.1)."""

    def __init__(self, path):
        spm = _need("sentencepiece", "a SentencePiece tokenizer.model (Llama 1/2)")
        self.path = str(path)
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} not found")
        try:
            self.sp = spm.SentencePieceProcessor(model_file=self.path)
        except (RuntimeError, OSError) as e:
            raise ValueError(f"{path} is not a valid SentencePiece model: {e}") from None
        n = self.sp.get_piece_size()
        self.special_ids = {self.sp.id_to_piece(i): i for i in range(n)
                            if self.sp.is_control(i) or self.sp.is_unknown(i)}
        none_if_negative = lambda i: i if i >= 0 else None
        self.bos_id = none_if_negative(self.sp.bos_id())
        self.eos_id = none_if_negative(self.sp.eos_id())
        self.unk_id = none_if_negative(self.sp.unk_id())
        self.pad_id = none_if_negative(self.sp.pad_id())

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str, bos: bool = False, eos: bool = False,
               allow_special: bool = False) -> list[int]:
        """Ids of ``text`` (``allow_special`` changes nothing: control pieces are never text)."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        if (bos and self.bos_id is None) or (eos and self.eos_id is None):
            raise ValueError(f"{self.path} defines no {'BOS' if bos else 'EOS'} piece")
        return [self.bos_id] * bos + self.sp.encode(text) + [self.eos_id] * eos

    def decode(self, ids, skip_special: bool = False) -> str:
        """Text of ``ids``; control pieces (BOS, EOS) decode to nothing either way."""
        ids = _ids(ids, self.vocab_size)
        return self.sp.decode(ids)

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer({self.path!r}, vocab_size={self.vocab_size})"


def _token_name(value):
    """A tokenizer_config.json token entry: a string or {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value


class HFTokenizer:
    """An HF ``tokenizer.json`` (any Llama snapshot on the Hub), through ``tokenizers``."""

    def __init__(self, path, bos: str | None = None, eos: str | None = None):
        tk = _need("tokenizers", "an HF tokenizer.json")
        self.path = str(path)
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} not found")
        try:
            self.tok = tk.Tokenizer.from_file(self.path)
        except Exception as e:                       # the library raises plain Exception
            raise ValueError(f"{path} is not a valid HF tokenizer.json: {e}") from None
        added = self.tok.get_added_tokens_decoder()
        self.special_ids = {t.content: i for i, t in sorted(added.items()) if t.special}
        config = Path(path).with_name("tokenizer_config.json")
        if config.is_file() and (bos is None or eos is None):
            cfg = json.loads(config.read_text())
            bos = bos or _token_name(cfg.get("bos_token"))
            eos = eos or _token_name(cfg.get("eos_token"))
        vocab = self.tok.get_vocab(with_added_tokens=True)
        pick = lambda name, guesses: (vocab.get(name) if name else
                                      next((vocab[g] for g in guesses if g in vocab), None))
        self.bos_id, self.eos_id = pick(bos, _BOS_NAMES), pick(eos, _EOS_NAMES)

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, bos: bool = False, eos: bool = False,
               allow_special: bool = False) -> list[int]:
        """Ids of ``text``; special-token text maps to its id only if ``allow_special``."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        if (bos and self.bos_id is None) or (eos and self.eos_id is None):
            raise ValueError(f"{self.path}: no {'BOS' if bos else 'EOS'} token known; "
                             "pass bos=/eos= names to HFTokenizer")
        self.tok.encode_special_tokens = not allow_special   # True: specials are plain text
        ids = self.tok.encode(text, add_special_tokens=False).ids
        return [self.bos_id] * bos + ids + [self.eos_id] * eos

    def decode(self, ids, skip_special: bool = False) -> str:
        ids = _ids(ids, self.vocab_size)
        return self.tok.decode(ids, skip_special_tokens=skip_special)

    def __repr__(self) -> str:
        return f"HFTokenizer({self.path!r}, vocab_size={self.vocab_size})"
