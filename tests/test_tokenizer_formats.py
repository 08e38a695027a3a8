"""load_tokenizer on every format, against the reference library on the same file.

No real vocabulary ships and nothing downloads, so each test builds a stand-in in the
real format from a small vocabulary trained here, then checks identical ids on
``len(STRINGS)`` (>= 2,000) strings and round-trip decoding:

* tiktoken (Llama 3): a BPE trained by ``minillama.tokenizer`` written as "base64 rank"
  lines -> our reader and BPE-by-rank encoder vs the ``tiktoken`` library;
* SentencePiece (LLaMA 1/2): a BPE trained by ``sentencepiece`` -> our wrapper vs the
  processor, and vs transformers' ``LlamaTokenizer`` (its own BPE) built from the model;
* the same SentencePiece model exported as llama2.c's ``tokenizer.bin`` -> our llama2.c
  encoder vs sentencepiece;
* HF ``tokenizer.json``: a byte-level BPE with Llama 3's pre-tokenizer trained by
  ``tokenizers`` -> our wrapper vs transformers' ``PreTrainedTokenizerFast``.
"""

import struct
import unicodedata

import pytest
from tokenizer_standins import (
    LLAMA3_TOKENS,
    make_hf_file,
    make_sentencepiece_file,
    make_tiktoken_file,
    transformers_llama2_tokenizer,
    write_tiktoken,
)
from tokenizer_strings import SPECIALS, parity_strings, training_text

from minillama import load_tokenizer
from minillama.tokenizer import Tokenizer
from minillama.tokenizer_files import detect_format
from minillama.tokenizer_tiktoken import LLAMA3_PATTERN, LLAMA3_SPECIALS, LLAMA31_SPECIALS

STRINGS = parity_strings(2000)


@pytest.fixture(scope="module")
def tiktoken_file(tmp_path_factory):
    return make_tiktoken_file(tmp_path_factory.mktemp("tiktoken"))


def test_tiktoken_matches_the_tiktoken_library(tiktoken_file):
    tiktoken = pytest.importorskip("tiktoken")
    path, ranks = tiktoken_file
    ours = load_tokenizer(path)
    assert detect_format(path) == "tiktoken" and len(ours.ranks) == len(ranks) > 700
    ref = tiktoken.Encoding("standin", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks,
                            special_tokens=ours.special_ids)
    assert ours.vocab_size == ref.n_vocab == len(ranks) + 256
    merged = total = 0
    for s in STRINGS:
        ids = ours.encode(s)
        assert ids == ref.encode(s, allowed_special=set(), disallowed_special=()), repr(s)
        assert ours.encode(s, allow_special=True) == ref.encode(s, allowed_special="all"), s
        assert ours.decode(ids) == ref.decode(ids) == s
        merged, total = merged + sum(i >= 256 for i in ids), total + len(ids)
    print(f"tiktoken parity: {len(STRINGS)} strings, {total} tokens, {merged} of them merges")
    assert merged > total / 4                   # the merges were really exercised
    both = ours.encode("hi", bos=True, eos=True)
    assert both[0] == ours.bos_id == len(ranks) and both[-1] == ours.eos_id == len(ranks) + 1


def test_tiktoken_places_llama3s_specials_after_128000_ranks(tmp_path):
    """The published layout: 128,000 ranks, then 256 specials (Llama 3 and 3.1/3.2 names)."""
    tiktoken = pytest.importorskip("tiktoken")
    tokens = [bytes([b]) for b in range(256)]
    tokens += [bytes([a, b]) for a in range(256) for b in range(256)]
    tokens += [bytes([a, b, c]) for a in range(256) for b in range(256) for c in range(97, 123)]
    ranks = {t: r for r, t in enumerate(tokens[:128_000])}
    write_tiktoken(ranks, tmp_path / "tokenizer.model")
    for names in (LLAMA31_SPECIALS, LLAMA3_SPECIALS):
        tok = load_tokenizer(tmp_path, special_tokens=names)
        ids = {n: tok.special_ids[n] for n in LLAMA3_TOKENS}
        assert list(ids.values()) == [128000, 128001, 128006, 128007, 128009]
        assert tok.bos_id == 128000 and tok.eos_id == 128001 and tok.vocab_size == 128_256
        assert len(tok.special_ids) == 256
    assert tok.special_ids["<|reserved_special_token_250|>"] == 128255          # Llama 3
    assert load_tokenizer(tmp_path).special_ids["<|eom_id|>"] == 128008        # 3.1/3.2
    ref = tiktoken.Encoding("layout", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks,
                            special_tokens=tok.special_ids)
    for s in STRINGS[:300]:
        assert tok.encode(s, allow_special=True) == ref.encode(s, allowed_special="all")


@pytest.fixture(scope="module")
def sp_file(tmp_path_factory):
    pytest.importorskip("sentencepiece")
    return make_sentencepiece_file(tmp_path_factory.mktemp("sp"))


def test_sentencepiece_matches_the_processor_and_transformers(sp_file):
    spm = pytest.importorskip("sentencepiece")
    pytest.importorskip("transformers.tokenization_utils_sentencepiece",
                        reason="builds LlamaTokenizer from pieces: transformers >= 5")
    ours, sp = load_tokenizer(sp_file), spm.SentencePieceProcessor(model_file=str(sp_file))
    assert detect_format(sp_file) == "sentencepiece"
    assert (ours.bos_id, ours.eos_id, ours.vocab_size) == (1, 2, 700)
    assert ours.special_ids == {"<unk>": 0, "<s>": 1, "</s>": 2}
    hf = transformers_llama2_tokenizer(sp_file)
    metaspace = transformers_llama2_tokenizer(sp_file, hub_pipeline=False)
    differ = []
    for s in STRINGS:
        ids = ours.encode(s, bos=True, eos=True)
        assert ids == [1] + sp.encode(s) + [2], repr(s)
        assert ids == hf(s, split_special_tokens=True)["input_ids"] + [2], repr(s)
        if ids[:-1] != metaspace(s, split_special_tokens=True)["input_ids"]:
            differ.append(s)
        assert ours.decode(ids) == sp.decode(ids) == hf.decode(ids, skip_special_tokens=True)
        assert ours.decode(ids) == s
    assert ours.encode("") == [] and ours.encode("", bos=True) == [1]
    # transformers 5's default Llama pipeline differs exactly where the text starts with
    # a space (no dummy prefix then); the published tokenizer.json pipeline never does
    print(f"sentencepiece parity: {len(STRINGS)} strings; transformers' Metaspace "
          f"pipeline differs on {len(differ)}, all starting with a space")
    assert differ and all(s.startswith(" ") for s in differ)


def write_llama2c_bin(sp, path):
    """llama2.c's export (tokenizer.py): pieces with U+2581 as a space, and their scores."""
    pieces = [sp.id_to_piece(i).replace("\u2581", " ").encode("utf-8")
              for i in range(sp.get_piece_size())]
    pieces[1], pieces[2] = b"\n<s>\n", b"\n</s>\n"
    out = [struct.pack("<i", max(map(len, pieces)))]
    for i, p in enumerate(pieces):
        out.append(struct.pack("<fi", sp.get_score(i), len(p)) + p)
    path.write_bytes(b"".join(out))


def test_llama2c_bin_matches_sentencepiece(sp_file, tmp_path):
    spm = pytest.importorskip("sentencepiece")
    sp = spm.SentencePieceProcessor(model_file=str(sp_file))
    write_llama2c_bin(sp, tmp_path / "tokenizer.bin")
    ours = load_tokenizer(tmp_path)                  # a directory: finds tokenizer.bin
    assert detect_format(tmp_path / "tokenizer.bin") == "llama2c"
    assert ours.vocab_size == 700 and (ours.bos_id, ours.eos_id) == (1, 2)
    for s in STRINGS:
        ids = ours.encode(s, bos=True)
        assert ids == [1] + sp.encode(s), repr(s)
        assert ours.decode(ids, skip_special=True) == s


@pytest.fixture(scope="module")
def hf_file(tmp_path_factory):
    pytest.importorskip("tokenizers")
    return make_hf_file(tmp_path_factory.mktemp("hf"))


def test_hf_tokenizer_json_matches_transformers(hf_file):
    transformers = pytest.importorskip("transformers")
    ours = load_tokenizer(hf_file.parent)
    ref = transformers.PreTrainedTokenizerFast(tokenizer_file=str(hf_file),
                                               bos_token="<|begin_of_text|>",
                                               eos_token="<|end_of_text|>")
    assert detect_format(hf_file) == "hf" and ours.vocab_size == len(ref) == 900 + 5
    assert ours.bos_id == ref.bos_token_id and ours.eos_id == ref.eos_token_id
    assert ours.special_ids == {t: ref.convert_tokens_to_ids(t) for t in LLAMA3_TOKENS}
    for s in STRINGS:
        ids = ours.encode(s, bos=True, eos=True)
        plain = ref(s, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        assert ids == [ref.bos_token_id] + plain + [ref.eos_token_id], repr(s)
        assert ours.encode(s, allow_special=True) == ref(s, add_special_tokens=False)["input_ids"]
        assert ours.decode(ids, skip_special=True) == ref.decode(ids, skip_special_tokens=True)
        assert ours.decode(ids[1:-1]) == s
    text = "a<|eot_id|>b"
    assert ours.special_ids["<|eot_id|>"] in ours.encode(text, allow_special=True)
    assert ours.special_ids["<|eot_id|>"] not in ours.encode(text)


def test_our_own_bpe_and_detection_errors(tmp_path):
    bpe = Tokenizer.train(training_text(200), vocab_size=300)
    bpe.save(tmp_path / "tokenizer.json")
    ours = load_tokenizer(tmp_path)
    assert detect_format(tmp_path / "tokenizer.json") == "minillama"
    assert all(ours.encode(s) == bpe.encode(s) and ours.decode(bpe.encode(s)) == s
               for s in STRINGS[:200])
    bad = {"empty.model": b"", "junk.model": b"\xff\xfe not a tokenizer",
           "other.json": b'{"vocab": {}}', "broken.json": b'{"model": ',
           "cut.model": b"YQ== 0\nYg== 1\nthis line is not base64\n"}
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=name):
            load_tokenizer(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError, match="empty_dir holds no tokenizer"):
        load_tokenizer(tmp_path / "empty_dir")


def test_strings_cover_what_they_claim():
    """Of the 2,000: 1,069 non-ASCII, 150 with emoji, 101 with combining marks, 725 with
    digits, 841 with whitespace runs or newlines, 683 with special-token text."""
    has = lambda test: sum(any(test(c) for c in s) for s in STRINGS)
    counts = [has(lambda c: ord(c) > 127), has(lambda c: ord(c) > 0x1F000),
              has(lambda c: unicodedata.category(c) == "Mn"), has(str.isdigit),
              sum("  " in s or "\n" in s for s in STRINGS),
              sum(any(t in s for t in SPECIALS) for s in STRINGS)]
    print("strings with non-ASCII, emoji, combining marks, digits, runs/newlines, specials:",
          counts)
    assert len(STRINGS) == 2000 and "" in STRINGS
    assert counts == [1069, 150, 101, 725, 841, 683]
