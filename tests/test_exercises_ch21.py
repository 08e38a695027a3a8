"""Graders for chapter 21 (a real Llama 3 tokenizer's pieces: BPE by rank, the chat text).

    python -m pytest tests/test_exercises_ch21.py                    # the reference answers
    python -m pytest tests/test_exercises_ch21.py --impl=exercises   # your work

``bpe_by_rank`` is compared with the ``tiktoken`` library (the same ranks, one chunk at a
time) and with ``minillama.tokenizer_tiktoken.bpe_by_rank`` on chunks of 2,000 strings;
``llama3_prompt`` with the published Jinja chat template rendered by ``jinja2``.
"""

import random

import pytest
from test_chat import CHATS, LLAMA3_JINJA
from tokenizer_standins import make_tiktoken_file
from tokenizer_strings import parity_strings

from minillama import tokenizer_tiktoken

CH21 = "ch21_capstone"


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return make_tiktoken_file(tmp_path_factory.mktemp("ch21"))[1]


def chunks(n: int = 2000) -> list[bytes]:
    split = tokenizer_tiktoken._regex().compile(tokenizer_tiktoken.LLAMA3_PATTERN)
    return [c.encode() for s in parity_strings()[:n] for c in split.findall(s)]


def test_ch21_bpe_by_rank_matches_tiktoken(impl, ranks):
    tiktoken = pytest.importorskip("tiktoken")
    enc = tiktoken.Encoding("ch21", pat_str=r"[\s\S]+", mergeable_ranks=ranks,
                            special_tokens={})         # one chunk in, one chunk encoded
    pieces = chunks()
    merged = 0
    for piece in pieces:
        got = impl(CH21).bpe_by_rank(piece, ranks)
        assert got == enc.encode(piece.decode()), piece
        assert got == tokenizer_tiktoken.bpe_by_rank(piece, ranks)
        merged += len(got) < len(piece)
    assert merged > len(pieces) // 4           # the merges were really exercised


def test_ch21_llama3_prompt_matches_the_published_template(impl):
    jinja2 = pytest.importorskip("jinja2")
    template = jinja2.Environment().from_string(LLAMA3_JINJA)
    rng = random.Random(0)
    for messages in rng.sample(CHATS, 100):
        for gen in (True, False):
            want = template.render(messages=messages, bos_token="<|begin_of_text|>",
                                   add_generation_prompt=gen)
            assert impl(CH21).llama3_prompt(messages, add_generation_prompt=gen) == want
