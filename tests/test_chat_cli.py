"""``python -m minillama generate DIR --chat``: a tiny HF snapshot with a Llama 3 tokenizer.

The snapshot is transformers' ``save_pretrained`` (sharded) plus a tiktoken-format
``original/tokenizer.model`` trained in the test. Its head is rigged so the answer is
checkable: every logit is 0 except ``<|eot_id|>`` (h . v) and "A" (-h . v), so each
reply is "AAA..." until the first position where h . v > 0, where the turn ends. The CLI's
replies must equal the library's (template -> greedy ``generate`` with the stop ids).
"""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tokenizer_standins import make_tiktoken_file

import minillama
from minillama.chat import apply_chat_template, stop_ids
from minillama.chat_cli import reply
from minillama.generate import stream
from minillama.tokenizer_files import load_tokenizer

transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[1]
TURNS = ["hello there", "and again?"]
MAX_NEW = 30


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chat") / "snap"
    (folder / "original").mkdir(parents=True)
    make_tiktoken_file(folder / "original", n_merges=150)
    tok = load_tokenizer(folder)
    torch.manual_seed(3)
    cfg = transformers.LlamaConfig(vocab_size=tok.vocab_size, hidden_size=64,
                                   intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=256, tie_word_embeddings=False)
    hf = transformers.LlamaForCausalLM(cfg)
    eot, (a,) = tok.special_ids["<|eot_id|>"], tok.encode("A")
    with torch.no_grad():
        v = torch.randn(64)
        hf.lm_head.weight.zero_()
        hf.lm_head.weight[eot], hf.lm_head.weight[a] = v, -v
    hf.generation_config = transformers.GenerationConfig(
        bos_token_id=tok.bos_id, eos_token_id=[tok.eos_id, eot])
    hf.save_pretrained(folder, max_shard_size="60KB")
    assert (folder / "model.safetensors.index.json").is_file()
    return folder


def expected_replies(folder, turns):
    model, tok = minillama.load(folder, quiet=True), load_tokenizer(folder)
    stops = stop_ids(tok)
    messages, replies, ended = [], [], []
    for turn in turns:
        messages.append({"role": "user", "content": turn})
        out = model.generate(torch.tensor(apply_chat_template(tok, messages)), MAX_NEW,
                             stop_tokens=stops).tolist()
        ended.append(out[-1] in stops)
        text = tok.decode([t for t in out if t not in stops], skip_special=True)
        replies.append(text)
        messages.append({"role": "assistant", "content": text})
    return replies, ended


def cli(folder, *args, stdin=""):
    return subprocess.run([sys.executable, "-m", "minillama", "generate", str(folder),
                           "--temperature", "0", "--max-new-tokens", str(MAX_NEW), *args],
                          input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_chat_replies_match_the_library_and_stop_at_end_of_turn(snapshot):
    replies, ended = expected_replies(snapshot, TURNS)
    print(replies, ended)
    assert any(ended) and any(replies), (replies, ended)   # the rig does end turns
    run = cli(snapshot, "--chat", stdin="\n".join(TURNS) + "\n\n")
    assert run.returncode == 0, run.stderr
    assert run.stdout == "".join(r + "\n" for r in replies)
    assert "llama3 template" in run.stderr and "parameters x 4 bytes" in run.stderr
    one = cli(snapshot, "--chat", "--prompt", TURNS[0])          # one-shot
    assert one.returncode == 0 and one.stdout == replies[0] + "\n", one.stderr


def test_replies_stream_token_by_token(snapshot):
    model, tok = minillama.load(snapshot, quiet=True), load_tokenizer(snapshot)
    ids = apply_chat_template(tok, [{"role": "user", "content": TURNS[0]}])
    stops = stop_ids(tok)
    streamed = list(stream(model, ids, MAX_NEW, stop_tokens=stops))
    assert streamed == model.generate(torch.tensor(ids), MAX_NEW, stop_tokens=stops).tolist()

    class Recorder:
        def __init__(self):
            self.writes = []

        def write(self, s):
            self.writes.append(s)

        def flush(self):
            self.writes.append("<flush>")

    out = Recorder()
    args = SimpleNamespace(max_new_tokens=MAX_NEW, temperature=0.0, top_k=None, top_p=None,
                           seed=None)
    text = reply(model, tok, ids, stops, args, out)
    pieces = [w for w in out.writes if w not in ("<flush>", "\n")]
    assert "".join(pieces) == text
    assert len(pieces) == len([t for t in streamed if t not in stops])   # one per token
    assert out.writes[1::2][:len(pieces)] == ["<flush>"] * len(pieces)   # each shown at once
