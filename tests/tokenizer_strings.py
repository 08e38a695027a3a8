"""Test strings for tokenizer parity, and the stand-in vocabularies' training text.

Every string mixes pieces that tokenizers treat specially: contractions (for Llama 3's
``(?i:'s|...)``), digit runs (split into 1-3 digits by Llama 3, single digits by LLaMA 2),
whitespace runs and newlines of several kinds, scripts other than Latin, emoji with
modifiers and zero-width joiners, combining marks, numerals outside 0-9 (``\\p{N}``),
and the text of special tokens, which must stay text unless asked for.
"""

import random

WORDS = ["the", "little", "dog", "ran", "to", "park", "and", "played", "with", "a", "red",
         "ball", "She", "said", "weather", "THE", "Once", "upon", "time", "there", "was",
         "hello", "World", "tokenizer", "pre", "token", "izer", "naïve", "café", "jalapeño"]
UNICODE = ["日本語のテキスト", "中文分词测试", "한국어", "مرحبا بالعالم", "नमस्ते", "Привет мир",
           "Ελληνικά", "😀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "✨", "e\u0301", "a\u0308\u0304", "\u200b",
           "\ufeff", "½", "Ⅻ", "²", "١٢٣", "ſ", "ß", "İ", "K", "\U0001f9ea", "\x00", "\x7f"]
CONTRACTIONS = ["'s", "'S", "'ll", "'VE", "'re", "'d", "'M", "'t", "’s", "'ſ", "'", "''"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\u00a0", "\u3000", "\u2028",
          "\n \n", "\t\t ", "        "]
SPECIALS = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
            "<s>", "</s>", "<unk>", "[INST]", "[/INST]", "<<SYS>>", "<|endoftext|>", "<|"]
PUNCT = [".", ",", "!?", "...", "—", "``", "#", "{}", "()", ":", "-", "_", "\"", "@@", "$"]


def _digits(rng):
    return "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 12)))


def random_string(rng: random.Random) -> str:
    pools = [WORDS] * 4 + [UNICODE, CONTRACTIONS, SPACES, SPACES, SPECIALS, PUNCT]
    out = []
    for _ in range(rng.randint(0, 10)):
        pool = rng.choice(pools + [None])
        out.append(_digits(rng) if pool is None else rng.choice(pool))
        out.append(rng.choice(["", " ", " ", ""]))
    return "".join(out)


def parity_strings(n: int = 2000, seed: int = 0) -> list[str]:
    """``n`` strings: the empty string, each pool entry alone, then random mixtures."""
    rng = random.Random(seed)
    fixed = ["", " ", "\n", "  \n\n  ", "1234567890123", "Hello, world!", "don't STOP"]
    fixed += UNICODE + CONTRACTIONS + SPACES + SPECIALS
    return fixed + [random_string(rng) for _ in range(n - len(fixed))]


def training_text(n: int = 3000, seed: int = 1) -> list[str]:
    """Text for training the small stand-in vocabularies (English-like, plus the pools)."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 12))]
        lines.append(" ".join(words) + rng.choice([".", ",", "!", ""]) + " " + random_string(rng))
    return lines
