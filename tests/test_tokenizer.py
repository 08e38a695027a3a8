"""Tests for the byte-level BPE (minillama.tokenizer) and the llama2.c tokenizer.bin reader."""

import json
import os
import random
import struct
from collections import Counter

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minillama.tokenizer import SPLIT_PATTERN, ByteTokenizer, Tokenizer, merge_pair
from minillama.tokenizer_llama2c import Llama2cTokenizer

SENTENCES = [
    "The little dog ran to the park and played with a red ball.",
    "She said that the weather would be better in the morning.",
    "Once upon a time there was a girl who loved to read books.",
    "They walked along the river, talking about the stars and the moon.",
    "In 2023 the team trained 7 models on 1,024 GPUs for 21 days.",
    "He opened the door slowly; the room was dark and quiet.",
    "Café, naïve, jalapeño: words borrowed from other languages.",
    "日本語のテキストも少し混ぜておく。",
]


def english(n_sentences: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "\n".join(" ".join(rng.sample(SENTENCES, 3)) for _ in range(n_sentences))


@pytest.fixture(scope="module")
def corpus():
    return english(200)


@pytest.fixture(scope="module")
def tok(corpus):
    return Tokenizer.train(corpus, vocab_size=400)


def byte_id(tok, ch):
    return len(tok.special_tokens) + ord(ch)


# ---- training -------------------------------------------------------------------------

def test_layout_and_special_ids(tok):
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    assert tok.vocab_size == 400 == 3 + 256 + len(tok.merges)
    assert tok.id_to_bytes(3 + ord("A")) == b"A"
    assert tok.id_to_bytes(tok.bos_id) == b"<bos>"
    for k, (a, b) in enumerate(tok.merges):
        assert tok.id_to_bytes(259 + k) == tok.id_to_bytes(a) + tok.id_to_bytes(b)


def test_training_is_deterministic(corpus, tok):
    again = Tokenizer.train(corpus, vocab_size=400)
    assert again.merges == tok.merges
    assert Tokenizer.train(english(50, seed=1), 400).merges != tok.merges


def test_hand_checked_merges():
    # "aaabdaaabac": "aa" occurs 4 times (overlapping) -> Z; then "Za" and "ab" tie at 2 and
    # the smaller ids win, so "ab" -> Y; then "ZY" occurs twice -> X.  Text = "XdXac".
    t = Tokenizer.train("aaabdaaabac", vocab_size=256 + 3 + 3, pre_split=False)
    a, b, c, d = (byte_id(t, ch) for ch in "abcd")
    z, y, x = 259, 260, 261
    assert t.merges == [(a, a), (a, b), (z, y)]
    assert t.encode("aaabdaaabac") == [x, d, x, a, c]


def naive_bpe(chunks: list[str], n_merges: int, offset: int = 3):
    """Reference: recount every pair from scratch before each merge."""
    words = {ch: [offset + b for b in ch.encode()] for ch in set(chunks)}
    freq = Counter(chunks)
    merges = []
    for k in range(n_merges):
        counts = Counter()
        for ch, w in words.items():
            for p in zip(w, w[1:]):
                counts[p] += freq[ch]
        if not counts:
            break
        best = max(counts.items(), key=lambda kv: (kv[1], -kv[0][0], -kv[0][1]))[0]
        merges.append(best)
        words = {ch: merge_pair(w, best, offset + 256 + k) for ch, w in words.items()}
    return merges


def test_incremental_counts_match_naive_recount():
    text = english(40, seed=3)
    t = Tokenizer.train(text, vocab_size=3 + 256 + 60)
    assert len(t.merges) == 60
    assert t.merges == naive_bpe(SPLIT_PATTERN.findall(text), 60)


def test_merges_follow_frequency():
    # pair counts: "xy" 4, " x" 3, " z" 2, "zw" 2, " q" 1, "qr" 1
    t = Tokenizer.train("xy xy xy xy zw zw qr", vocab_size=259 + 2)
    x, y = byte_id(t, "x"), byte_id(t, "y")
    assert t.merges == [(x, y), (byte_id(t, " "), 259)]


def test_pre_split_keeps_merges_inside_words(tok):
    for i in range(259, tok.vocab_size):
        piece = tok.id_to_bytes(i)
        if piece.strip():                       # a token with visible characters ...
            assert b" " not in piece[1:]         # ... has at most one space, at the front


def test_stops_when_pairs_run_out():
    t = Tokenizer.train("abab", vocab_size=1000, pre_split=False)
    assert t.vocab_size < 1000 and t.encode("abab") == [t.vocab_size - 1]


def test_train_bad_input():
    with pytest.raises(ValueError, match="vocab_size 100"):
        Tokenizer.train("hello", vocab_size=100)
    with pytest.raises(TypeError, match="int"):
        Tokenizer.train(["ok", 3], vocab_size=300)
    with pytest.raises(ValueError, match="distinct"):
        Tokenizer.train("hello", 300, special_tokens=("<x>", "<x>"))


# ---- encoding and decoding ------------------------------------------------------------

FIXED = ["", " ", "a", "hello world", "  two  spaces  ", "line\nbreaks\r\n\n\ttabs",
         "emoji 😀👍🏽🇫🇷", "日本語のテキスト", "e\u0301 combining", "digits 1234567890",
         "snake_case_name", "<eos> <bos> <pad>", "\x00\x7f\u200b\ufeff", "ÿ" * 9]


@pytest.mark.parametrize("text", FIXED)
def test_round_trip_fixed(tok, text):
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text, allow_special=True)) == text
    assert ByteTokenizer().decode(ByteTokenizer().encode(text)) == text


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_round_trip_any_text(tok, text):
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode_bytes(ids) == text.encode("utf-8")
    assert "".join(SPLIT_PATTERN.findall(text)) == text


def test_compression(tok, corpus):
    assert tok.compression_ratio(corpus) > 2.0
    assert tok.compression_ratio([english(20, seed=7)]) > 1.5   # unseen text too
    assert len(tok.encode("the little dog")) < len("the little dog")
    assert ByteTokenizer().compression_ratio("plain ascii") == 1.0
    with pytest.raises(ValueError, match="non-empty"):
        tok.compression_ratio([""])


def test_specials(tok):
    text = "hi<eos>there"
    plain = tok.encode(text)
    assert tok.eos_id not in plain and tok.decode(plain) == text
    special = tok.encode(text, allow_special=True)
    assert special == tok.encode("hi") + [tok.eos_id] + tok.encode("there")
    assert tok.encode("hi", bos=True, eos=True) == [1] + tok.encode("hi") + [2]
    assert tok.decode([1] + tok.encode("hi") + [2]) == "<bos>hi<eos>"
    assert tok.decode([1] + tok.encode("hi") + [2], skip_special=True) == "hi"
    no_bos = Tokenizer(special_tokens=("<pad>",))
    assert no_bos.bos_id is None and no_bos.pad_id == 0
    with pytest.raises(ValueError, match="<bos>"):
        no_bos.encode("x", bos=True)


def test_decode_edge_cases(tok):
    euro = tok.encode("€")
    assert tok.decode(torch.tensor(euro)) == "€"
    cut = ByteTokenizer().encode("€")[:2]          # an incomplete 3-byte character
    assert ByteTokenizer().decode(cut) == "\ufffd"
    assert ByteTokenizer().decode_bytes(cut) == "€".encode()[:2]


def test_bad_input(tok):
    with pytest.raises(TypeError, match="str"):
        tok.encode(b"bytes")
    with pytest.raises(TypeError, match="str"):
        tok.encode(42)
    with pytest.raises(ValueError, match="400"):
        tok.decode([5, 400])
    with pytest.raises(ValueError, match="-1"):
        tok.decode([-1])
    with pytest.raises(TypeError):
        tok.id_to_bytes(1.5)


def test_byte_tokenizer():
    bt = ByteTokenizer()
    assert bt.vocab_size == 259 and (bt.pad_id, bt.bos_id, bt.eos_id) == (0, 1, 2)
    assert bt.encode("AB", bos=True, eos=True) == [1, 3 + 65, 3 + 66, 2]
    assert len(bt.encode("😀")) == 4


# ---- save / load ----------------------------------------------------------------------

def test_save_load(tok, tmp_path, corpus):
    path = tmp_path / "tok.json"
    tok.save(path)
    assert os.listdir(tmp_path) == ["tok.json"]            # no temp file left behind
    loaded = Tokenizer.load(path)
    assert loaded.merges == tok.merges and loaded.special_tokens == tok.special_tokens
    sample = corpus[:2000] + " unseen wörds 😀"
    assert loaded.encode(sample) == tok.encode(sample)


def write_json(path, **changes):
    data = {"format": "minillama-bpe", "version": 1, "pre_split": True,
            "special_tokens": ["<pad>", "<bos>", "<eos>"], "merges": [[100, 101]]}
    data.update(changes)
    path.write_text(json.dumps(data))
    return path


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        Tokenizer.load(tmp_path / "missing.json")
    Tokenizer.load(write_json(tmp_path / "ok.json"))           # the baseline is valid
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "merges": [[1')
    with pytest.raises(ValueError, match="not a valid tokenizer JSON"):
        Tokenizer.load(bad)
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="not a valid tokenizer JSON"):
        Tokenizer.load(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a minillama tokenizer"):
        Tokenizer.load(bad)
    cases = [({"version": 99}, "version 99"),
             ({"merges": [[100, 9999]]}, "merge 0"),            # id not yet defined
             ({"merges": [[1, 100]]}, "special token"),         # merges a special
             ({"merges": [[100, 101], [100, 101]]}, "repeats"),
             ({"merges": [[100, "x"]]}, "merges"),
             ({"merges": [[100]]}, "merges"),
             ({"special_tokens": "<pad>"}, "special_tokens"),
             ({"special_tokens": ["<a>", "<a>"]}, "distinct")]
    for changes, message in cases:
        with pytest.raises(ValueError, match=message):
            Tokenizer.load(write_json(bad, **changes))


# ---- llama2.c tokenizer.bin -----------------------------------------------------------

BASE = ["<unk>", "\n<s>\n", "\n</s>\n"] + [f"<0x{b:02X}>" for b in range(256)]
EXTRA = {" ": -100.0, "a": -100.0, "b": -100.0, "c": -100.0, "h": -100.0, "e": -100.0,
         "l": -100.0, "o": -100.0, "ll": -1.0, "he": -2.0, " he": -3.0, "llo": -4.0,
         " hello": -5.0, "ab": -10.0, "bc": -10.0}


def write_bin(path, extra=EXTRA) -> int:
    pieces = [(p, 0.0) for p in BASE] + list(extra.items())
    blob = struct.pack("<i", max(len(p.encode()) for p, _ in pieces))
    for piece, score in pieces:
        raw = piece.encode()
        blob += struct.pack("<fi", score, len(raw)) + raw
    path.write_bytes(blob)
    return len(pieces)


@pytest.fixture
def l2c(tmp_path):
    path = tmp_path / "tokenizer.bin"
    return Llama2cTokenizer(path, write_bin(path))


def test_llama2c_reads_file(l2c):
    assert l2c.vocab_size == 259 + len(EXTRA) and l2c.max_token_length == 6
    assert l2c.pieces[3 + 0x41] == b"<0x41>" and l2c.pieces[259] == b" "
    assert l2c.scores[259 + list(EXTRA).index("ll")] == -1.0


def test_llama2c_encode_hand_checked(l2c):
    # " h e l l o" -> "ll" (-1) -> "he" (-2) -> " he" (-3) -> "llo" (-4) -> " hello" (-5)
    hello = l2c.lookup[b" hello"]
    assert l2c.encode("hello") == [1, hello]
    assert l2c.encode("hello", bos=False, eos=True) == [hello, 2]
    assert l2c.encode("") == [1]
    assert l2c.decode([1, hello]) == "\n<s>\nhello"            # space dropped after BOS
    assert l2c.decode([1, hello], skip_special=True) == "hello"
    assert l2c.decode([hello]) == " hello"
    # "é" and "\n" are not pieces: byte fallback, id = byte + 3
    assert l2c.encode("é\n", bos=False) == [l2c.lookup[b" "], 0xC3 + 3, 0xA9 + 3, 0x0A + 3]


@pytest.mark.parametrize("ab, bc, expected", [(-1.0, -2.0, ["ab", "c"]),
                                              (-2.0, -1.0, ["a", "bc"]),
                                              (-1.0, -1.0, ["ab", "c"])])   # tie: leftmost
def test_llama2c_merge_order_follows_scores(tmp_path, ab, bc, expected):
    path = tmp_path / "t.bin"
    t = Llama2cTokenizer(path, write_bin(path, {**EXTRA, "ab": ab, "bc": bc}))
    ids = t.encode("abc", bos=False)
    assert [t.pieces[i].decode() for i in ids] == [" "] + expected


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.text(alphabet=st.sampled_from("abcehlo \n") | st.characters(codec="utf-8"),
               max_size=30))
def test_llama2c_round_trip(tmp_path_factory, text):
    path = tmp_path_factory.getbasetemp() / "rt.bin"
    if not path.exists():
        write_bin(path)
    t = Llama2cTokenizer(path, 259 + len(EXTRA))
    assert t.decode(t.encode(text), skip_special=True) == text


def test_llama2c_errors(tmp_path, l2c):
    path = tmp_path / "tokenizer.bin"
    n = write_bin(path)
    blob = path.read_bytes()
    with pytest.raises(FileNotFoundError):
        Llama2cTokenizer(tmp_path / "nope.bin", n)
    for cut in (2, 100, len(blob) - 3):
        (tmp_path / "cut.bin").write_bytes(blob[:cut])
        with pytest.raises(ValueError, match="truncated"):
            Llama2cTokenizer(tmp_path / "cut.bin", n)
    with pytest.raises(ValueError, match="truncated"):
        Llama2cTokenizer(path, n + 1)
    with pytest.raises(ValueError, match="bytes after"):
        Llama2cTokenizer(path, n - 1)
    with pytest.raises(ValueError, match="positive"):
        Llama2cTokenizer(path, 0)
    with pytest.raises(TypeError, match="str"):
        l2c.encode(None)
    with pytest.raises(ValueError, match=str(n)):
        l2c.decode([1, n])


def test_lone_surrogates_are_refused_with_a_value_error(tmp_path):
    """A lone surrogate is not encodable Unicode: both tokenizers say so (UnicodeEncodeError
    is a ValueError naming the character and its position)."""
    path = tmp_path / "tok.bin"
    write_bin(path)
    tokenizers = [ByteTokenizer(), Llama2cTokenizer(path, 259 + len(EXTRA))]
    for t in tokenizers:
        with pytest.raises(ValueError, match="surrogates not allowed"):
            t.encode("ok \ud800")
