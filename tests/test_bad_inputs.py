"""Every bad input ends in one clear error: the exception type and what it names.

Library calls raise ``ValueError`` / ``TypeError`` (``FileNotFoundError`` for a missing
path) naming the argument and what would be valid; a few inputs that are allowed but
almost surely a mistake give a warning. The command line prints one line on stderr and
exits with status 2, never a traceback.

Each row is (case id, the call, the exception or warning class, a fragment of its message).
"""

import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import minillama
from minillama import CONFIGS, Llama, LlamaConfig
from minillama import peft as P
from minillama.config import RopeScaling
from minillama.quant import nf4
from minillama.quant.linear4bit import Linear4bit
from minillama.reference import REFERENCE_DIR, load_reference
from minillama.tokenizer import Tokenizer
from minillama.train import TrainConfig, get_batch, train

ROOT = Path(__file__).resolve().parent.parent
SMALL = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, multiple_of=16,
             max_seq_len=32)


def model():
    torch.manual_seed(0)
    return Llama(LlamaConfig(**SMALL)).eval()


def ids(*shape, high=64):
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(0))


def forward(tokens, **kw):
    with torch.no_grad():
        return model()(tokens, **kw)


def generate(prompt, n=4, **kw):
    return model().generate(prompt, n, **kw)


def quick_train(data, **kw):
    cfg = TrainConfig(steps=1, batch_size=2, seq_len=8, warmup=0, progress=False, **kw)
    return train(model(), data, cfg)


# ----------------------------------------------------------------------------- files to load
@pytest.fixture
def files(tmp_path):
    """Damaged and misplaced checkpoints, made fresh for each case."""
    def make(kind: str) -> Path:
        d = tmp_path / kind
        if kind == "hf_random_bin":                     # pytorch_model.bin of random bytes
            minillama.save(model(), d, format="hf")
            (d / "model.safetensors").unlink()
            (d / "pytorch_model.bin").write_bytes(random.Random(0).randbytes(4096))
        elif kind == "hf_truncated":                    # safetensors cut short
            minillama.save(model(), d, format="hf")
            f = d / "model.safetensors"
            f.write_bytes(f.read_bytes()[:1000])
        elif kind == "bad_json":
            minillama.save(model(), d)
            (d / "config.json").write_text("{not json")
        elif kind == "gpt2":
            d.mkdir()
            (d / "config.json").write_text('{"model_type": "gpt2"}')
        elif kind == "unrecognised":
            d.mkdir()
            (d / "notes.txt").write_text("hello")
        elif kind == "missing_tensor":
            minillama.save(model(), d, format="hf")
            from safetensors.torch import load_file, save_file
            state = load_file(d / "model.safetensors")
            del state["model.norm.weight"]
            save_file(state, d / "model.safetensors")
        elif kind == "llama2c_truncated":
            d = tmp_path / "m.bin"
            minillama.save(model(), d, format="llama2c")
            d.write_bytes(d.read_bytes()[:500])
        elif kind == "a_file":
            d = tmp_path / "a_file"
            d.write_text("not a directory")
        elif kind == "json_file":
            d = tmp_path / "config.json"
            d.write_text("{}")
        elif kind == "run_with_bad_ckpt":
            d.mkdir()
            (d / "ckpt.pt").write_bytes(b"PK\x03\x04 truncated")
        elif kind == "empty":
            d.mkdir()
        elif kind == "no_tokenizer":
            minillama.save(model(), d)
        elif kind == "bad_tokenizer":
            d.mkdir()
            (d / "tokenizer.json").write_text('{"format": "other"}')
        return d
    return make


# ----------------------------------------------------------------------------- library cases
CASES = [
    # config
    ("config dim=0", lambda f: LlamaConfig(dim=0), ValueError, "dim must be a positive integer"),
    ("config vocab_size=True", lambda f: LlamaConfig(vocab_size=True), ValueError,
     "vocab_size must be a positive integer"),
    ("config dim % heads", lambda f: LlamaConfig(dim=66, n_heads=4), ValueError,
     "divisible by n_heads"),
    ("config heads % kv", lambda f: LlamaConfig(n_heads=4, n_kv_heads=3), ValueError,
     "divisible by n_kv_heads"),
    ("config odd head_dim", lambda f: LlamaConfig(dim=12, n_heads=4), ValueError,
     "must be even for RoPE"),
    ("config norm_eps=0", lambda f: LlamaConfig(norm_eps=0.0), ValueError, "norm_eps"),
    ("config rope_theta=inf", lambda f: LlamaConfig(rope_theta=math.inf), ValueError,
     "rope_theta must be a finite number > 0"),
    ("config rope_theta<0", lambda f: LlamaConfig(rope_theta=-1.0), ValueError, "rope_theta"),
    ("config rope_type", lambda f: LlamaConfig(rope_type="llama3"), TypeError,
     "rope_type was removed: pass rope_scaling"),
    ("config old name", lambda f: LlamaConfig(nope_interval=4), TypeError,
     "nope_interval was renamed nope_layer_interval"),
    ("config rope_layout", lambda f: LlamaConfig(rope_layout="zigzag"), ValueError,
     "rope_layout must be one of"),
    ("config rope_scaling type", lambda f: LlamaConfig(rope_scaling="big"), TypeError,
     "rope_scaling must be a RopeScaling"),
    ("config rope_scaling key", lambda f: LlamaConfig(rope_scaling={"fctor": 2.0}), ValueError,
     "unknown field(s) ['fctor']"),
    ("rope factor=0", lambda f: RopeScaling(factor=0.0), ValueError,
     "RopeScaling.factor must be a finite number > 0"),
    ("rope factor<0", lambda f: RopeScaling(factor=-2.0), ValueError, "RopeScaling.factor"),
    ("rope factor=nan", lambda f: RopeScaling(factor=math.nan), ValueError, "RopeScaling.factor"),
    ("rope high<low", lambda f: RopeScaling(low_freq_factor=4.0, high_freq_factor=1.0),
     ValueError, "high_freq_factor (1.0) must be >= low_freq_factor (4.0)"),
    ("rope original len", lambda f: RopeScaling(original_max_seq_len=0), ValueError,
     "original_max_seq_len must be a positive integer"),
    ("config experts per token", lambda f: LlamaConfig(n_experts=2, n_experts_per_tok=3),
     ValueError, "cannot exceed n_experts"),
    ("config from_dict", lambda f: LlamaConfig.from_dict({"dimm": 3}), ValueError,
     "unknown LlamaConfig field(s): dimm"),
    ("CONFIGS unknown", lambda f: CONFIGS["llama9-1t"], KeyError, "known: llama1-7b"),
    ("count unknown", lambda f: minillama.count_parameters("llama9"), ValueError,
     "unknown model 'llama9'"),
    # forward
    ("forward 1-D", lambda f: forward(ids(8)), ValueError, "shape (batch, seq)"),
    ("forward floats", lambda f: forward(ids(1, 8).float()), TypeError, "integer ids"),
    ("forward id = vocab", lambda f: forward(torch.tensor([[1, 64]])), ValueError,
     "must lie in [0, vocab_size=64), found ids from 1 to 64"),
    ("forward id < 0", lambda f: forward(torch.tensor([[-1, 3]])), ValueError,
     "must lie in [0, vocab_size=64)"),
    ("forward too long", lambda f: forward(ids(1, 33)), ValueError,
     "exceeds max_seq_len=32"),
    ("cache batch", lambda f: forward(ids(2, 4), cache=model().make_cache(1, 8)), ValueError,
     "KV cache was made for batch 1"),
    ("cache overflow", lambda f: forward(ids(1, 9), cache=model().make_cache(1, 8)), ValueError,
     "KV cache holds 8 positions"),
    # generate
    ("generate temperature nan", lambda f: generate([1, 2], temperature=math.nan), ValueError,
     "temperature must be a finite number >= 0"),
    ("generate temperature<0", lambda f: generate([1, 2], temperature=-1.0), ValueError,
     "temperature must be"),
    ("generate top_k=0", lambda f: generate([1, 2], temperature=1.0, top_k=0), ValueError,
     "top_k must be >= 1"),
    ("generate top_p>1", lambda f: generate([1, 2], temperature=1.0, top_p=1.5), ValueError,
     "top_p must be in (0, 1]"),
    ("generate top_p nan", lambda f: generate([1, 2], temperature=1.0, top_p=math.nan),
     ValueError, "top_p must be in (0, 1]"),
    ("generate n<0", lambda f: generate([1, 2], n=-1), ValueError, "max_new_tokens must be >= 0"),
    ("generate text prompt", lambda f: generate("Once upon a time"), TypeError,
     "encode the prompt first"),
    ("generate float prompt", lambda f: generate([1.5, 2.0]), TypeError, "must be integers"),
    ("generate 3-D prompt", lambda f: generate(ids(1, 1, 4)), ValueError,
     "shape (t,) or (batch, t)"),
    ("generate ragged prompt", lambda f: generate([[1, 2], [3]]), TypeError,
     "must be token ids"),
    ("generate empty prompt", lambda f: generate([]), ValueError, "at least one prompt token"),
    ("generate id out of range", lambda f: generate([1, 99]), ValueError,
     "prompt token ids must lie in [0, vocab_size=64)"),
    ("generate past context", lambda f: generate([1, 2], n=31), ValueError,
     "exceeds max_seq_len=32"),
    # training
    ("train grad_clip<0", lambda f: TrainConfig(grad_clip=-1.0), ValueError,
     "grad_clip must be > 0"),
    ("train grad_clip nan", lambda f: TrainConfig(grad_clip=math.nan), ValueError, "grad_clip"),
    ("train steps=0", lambda f: TrainConfig(steps=0), ValueError,
     "steps must be a positive integer"),
    ("train lr=0", lambda f: TrainConfig(lr=0.0), ValueError, "lr must be a finite number > 0"),
    ("train lr=inf", lambda f: TrainConfig(lr=math.inf), ValueError, "lr must be a finite"),
    ("train min_lr_ratio", lambda f: TrainConfig(min_lr_ratio=2.0), ValueError,
     "min_lr_ratio must be in [0, 1]"),
    ("train warmup<0", lambda f: TrainConfig(warmup=-1), ValueError, "warmup and ckpt_every"),
    ("train data out of range", lambda f: quick_train(ids(200, high=100)), ValueError,
     "train_data must lie in [0, vocab_size=64)"),
    ("train data floats", lambda f: quick_train(ids(200).float()), TypeError,
     "train_data must be integers"),
    ("train data short", lambda f: get_batch(ids(5), 2, 8, 0, 0), ValueError,
     "at least seq_len+1=9 tokens"),
    ("train resume, none", lambda f: train(model(), ids(200), TrainConfig(
        steps=1, batch_size=2, seq_len=8, warmup=0), out_dir=str(f("empty")), resume=True),
     FileNotFoundError, "--resume: no checkpoint"),
    ("train resume, corrupt", lambda f: train(model(), ids(200), TrainConfig(
        steps=1, batch_size=2, seq_len=8, warmup=0), out_dir=str(f("run_with_bad_ckpt")),
        resume=True), ValueError, "ckpt.pt is truncated or corrupt"),
    # checkpoints
    ("load missing", lambda f: minillama.load(f("empty") / "nothing"), FileNotFoundError,
     "no checkpoint at"),
    ("load one file", lambda f: minillama.load(f("json_file")), ValueError,
     "is one file of a checkpoint"),
    ("load unrecognised", lambda f: minillama.load(f("unrecognised")), ValueError,
     "unrecognised checkpoint directory"),
    ("load format", lambda f: minillama.load(f("empty"), format="onnx"), ValueError,
     "unknown checkpoint format 'onnx'"),
    ("load gpt2", lambda f: minillama.load(f("gpt2")), ValueError, "model_type 'gpt2'"),
    ("load bad json", lambda f: minillama.load(f("bad_json")), ValueError,
     "is not valid JSON"),
    ("load random .bin", lambda f: minillama.load(f("hf_random_bin")), ValueError,
     "pytorch_model.bin is truncated or corrupt"),
    ("load truncated safetensors", lambda f: minillama.load(f("hf_truncated")), ValueError,
     "truncated"),
    ("load missing tensor", lambda f: minillama.load(f("missing_tensor")), ValueError,
     "missing: ['model.norm.weight']"),
    ("load truncated llama2c", lambda f: minillama.load(f("llama2c_truncated")), ValueError,
     "truncated"),
    ("save format", lambda f: minillama.save(model(), f("empty"), format="onnx"), ValueError,
     "unknown checkpoint format 'onnx'"),
    ("save to .", lambda f: minillama.save(model(), "."), ValueError,
     "it is the working directory"),
    ("save over a file", lambda f: minillama.save(model(), f("a_file")), FileExistsError,
     "exists and is not a directory"),
    # PEFT
    ("peft method", lambda f: P.apply(model(), "prefix"), ValueError,
     "unknown PEFT method 'prefix'"),
    ("peft option", lambda f: P.apply(model(), "lora", rank=4), ValueError,
     "unknown option(s) rank"),
    ("lora r=0", lambda f: P.apply(model(), "lora", r=0), ValueError,
     "r must be a positive integer"),
    ("lora target", lambda f: P.apply(model(), "lora", targets=("wz",)), ValueError,
     "unknown target(s) ['wz']"),
    ("lora dropout=1", lambda f: P.apply(model(), "lora", dropout=1.0), ValueError,
     "dropout must be in [0, 1)"),
    ("lora alpha<0", lambda f: P.apply(model(), "lora", alpha=-1), ValueError,
     "alpha must be a number > 0"),
    ("adapter layers", lambda f: P.apply(model(), "adapter_v1", layers=5), ValueError,
     "layers=5 but the model has 2 blocks"),
    ("adapter gate", lambda f: P.apply(model(), "adapter_v1", layers=1, gate="sigmoid"),
     ValueError, "unknown gate 'sigmoid'"),
    ("peft twice", lambda f: P.apply(P.apply(model(), "lora"), "lora"), ValueError,
     "methods do not stack"),
    ("peft not a Llama", lambda f: P.apply(nn.Linear(2, 2), "lora"), TypeError,
     "expects a minillama Llama"),
    ("qlora blocksize", lambda f: P.apply(model(), "qlora", blocksize=48), ValueError,
     "blocksize must be one of"),
    ("adapter load missing", lambda f: P.load(model(), f("empty")), FileNotFoundError,
     "not a saved adapter"),
    ("excitor without cache", lambda f: P.apply(model(), "excitor", layers=1, rank=2,
                                                 prompt_len=2)(ids(1, 1), start_pos=3),
     ValueError, "in the layer's KV cache"),
    # quantisation
    ("nf4 blocksize", lambda f: nf4.quantize(torch.randn(64), blocksize=48), ValueError,
     "blocksize=48"),
    ("Linear4bit 3-D", lambda f: Linear4bit(torch.randn(2, 4, 64)), ValueError,
     "needs a 2-D weight"),
    ("Linear4bit backend", lambda f: Linear4bit(torch.randn(4, 64), backend="cuda"),
     ValueError, "backend='cuda'; valid"),
    # shipped references and tokenizers
    ("reference unknown", lambda f: load_reference("gpt5"), FileNotFoundError,
     "no reference checkpoint 'gpt5'; shipped:"),
    ("reference without card", lambda f: minillama.reference.verify(f("empty")),
     FileNotFoundError, "has no card.json"),
    ("tokenizer file", lambda f: Tokenizer.load(f("bad_tokenizer") / "tokenizer.json"),
     ValueError, "is not a minillama tokenizer file"),
    ("tokenizer encode bytes", lambda f: load_reference("sort")[1].encode(b"12"), TypeError,
     "encode expects a str"),
    ("tokenizer decode id", lambda f: load_reference("sort")[1].decode([10 ** 6]), ValueError,
     "token id 1000000 is out of range"),
]

WARNINGS = [
    ("warmup > steps", lambda: TrainConfig(steps=10, warmup=50), UserWarning,
     "never reaches lr"),
    ("lora r > full rank", lambda: P.apply(model(), "lora", r=40), UserWarning,
     "r=40 exceeds the smallest targeted layer's full rank min(in, out) = 16"),
]


@pytest.mark.parametrize("call, error, fragment", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_library_error(call, error, fragment, files, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error) as info:
        call(files)
    message = info.value.args[0] if isinstance(info.value, KeyError) else str(info.value)
    assert fragment in message
    assert "weights_only" not in message        # never torch's advice to load unsafely


@pytest.mark.parametrize("call, warning, fragment", [c[1:] for c in WARNINGS],
                         ids=[c[0] for c in WARNINGS])
def test_library_warning(call, warning, fragment):
    with pytest.warns(warning, match=None) as record:
        call()
    assert any(fragment in str(w.message) for w in record), [str(w.message) for w in record]


def test_linear4bit_refuses_bitsandbytes_on_cpu_for_rows_of_partial_blocks():
    pytest.importorskip("bitsandbytes")
    layer = Linear4bit(torch.randn(8, 96), blocksize=64, backend="bitsandbytes")
    with pytest.raises(ValueError, match=r"in_features \(96\) to be a multiple of blocksize"):
        layer(torch.randn(2, 96))
    ok = Linear4bit(torch.randn(8, 128), blocksize=64, backend="bitsandbytes")
    assert ok(torch.randn(2, 128)).shape == (2, 8)       # rows of whole blocks: allowed


def test_save_into_the_working_directory_leaves_nothing_behind(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(ValueError, match="working directory"):
        minillama.save(model(), ".")
    with pytest.raises(ValueError, match="working directory"):
        minillama.save(model(), "..")
    assert os.listdir(tmp_path) == ["work"] and os.listdir(work) == []


# ----------------------------------------------------------------------------- the CLI
SORT = str(REFERENCE_DIR / "sort")
STORIES = str(REFERENCE_DIR / "stories")
CLI = [
    ("eval wrong recipe", ["eval", SORT, "--recipe", "stories", "-n", "2"],
     "pass the recipe the checkpoint was trained with"),
    ("eval -n 0", ["eval", SORT, "-n", "0"], "argument -n: must be >= 1"),
    ("generate nan", ["generate", STORIES, "--temperature", "nan"],
     "temperature must be a finite number"),
    ("generate random .bin", ["generate", "{hf_random_bin}"], "truncated or corrupt"),
    ("generate samples 0", ["generate", STORIES, "--samples", "0"],
     "argument --samples: must be >= 1"),
    ("generate samples -1", ["generate", STORIES, "--samples", "-1"],
     "argument --samples: must be >= 1"),
    ("generate top-p", ["generate", STORIES, "--top-p", "2"], "top_p must be in (0, 1]"),
    ("generate missing", ["generate", "{empty}/nope"], "no checkpoint at"),
    ("generate no tokenizer", ["generate", "{no_tokenizer}"], "has no tokenizer.json"),
    ("train out is a file", ["train", "--recipe", "tiny-stories", "--out", "{a_file}"],
     "is an existing file"),
    ("train recipe", ["train", "--recipe", "gpt5"], "invalid choice: 'gpt5'"),
    ("train steps 0", ["train", "--recipe", "tiny-stories", "--steps", "0"],
     "argument --steps: must be >= 1"),
    ("train steps text", ["train", "--recipe", "tiny-stories", "--steps", "ten"],
     "expected a whole number >= 1, got 'ten'"),
    ("count unknown", ["count", "llama9"], "unknown model(s) ['llama9']"),
    ("publish no run", ["publish", "{empty}"], "has no card.json"),
]


@pytest.mark.parametrize("argv, fragment", [c[1:] for c in CLI], ids=[c[0] for c in CLI])
def test_cli_error(argv, fragment, files, capsys):
    from minillama.__main__ import main
    argv = [a.format(**{k: files(k) for k in ("hf_random_bin", "empty", "no_tokenizer",
                                              "a_file")}) if "{" in a else a for a in argv]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


@pytest.mark.slow
def test_cli_errors_are_one_line_in_a_real_process(files):
    """The four inputs that used to end in a traceback, run as a user would run them."""
    for argv in (["eval", SORT, "--recipe", "stories", "-n", "2"], ["eval", SORT, "-n", "0"],
                 ["generate", STORIES, "--temperature", "nan"],
                 ["generate", str(files("hf_random_bin"))]):
        run = subprocess.run([sys.executable, "-m", "minillama", *argv], capture_output=True,
                             text=True, cwd=ROOT, timeout=300)
        assert run.returncode == 2, (argv, run.stderr)
        lines = run.stderr.strip().splitlines()
        assert "Traceback" not in run.stderr and "error:" in lines[-1], (argv, run.stderr)
        assert "weights_only" not in run.stderr
