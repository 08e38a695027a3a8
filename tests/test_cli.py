"""``python -m minillama``: help, counts, one-line errors, and train -> generate -> eval.

Each ``python -m minillama`` process pays for importing torch (seconds on a busy
machine), so the matrix of help texts and bad arguments calls ``main(argv)`` in this
process; real subprocesses cover the program's help, ``count``, one error end to end
and the whole train -> generate -> eval path.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minillama import Llama, LlamaConfig, save
from minillama.__main__ import main
from minillama.reference import write_card
from minillama.tokenizer import ByteTokenizer

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "minillama", *map(str, args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def run_main(capsys, *args) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``main(args)`` in this process."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def toy_checkpoint(tmp_path):
    """A native checkpoint with a byte tokenizer (and no card)."""
    torch.manual_seed(0)
    model = Llama(LlamaConfig(dim=32, n_layers=1, n_heads=2, vocab_size=259, multiple_of=16,
                              max_seq_len=64, name="toy"))
    save(model, tmp_path / "toy")
    ByteTokenizer().save(tmp_path / "toy" / "tokenizer.json")
    return tmp_path / "toy"


# ----------------------------------------------------------------------------- help
def test_program_help_subprocess():
    proc = cli("--help")
    assert proc.returncode == 0, proc.stderr
    for verb in ("train", "generate", "count", "eval"):
        assert verb in proc.stdout


@pytest.mark.parametrize("verb, options", [
    ("train", ["--recipe", "--out", "--steps", "--batch-size", "--lr", "--resume", "--device",
               "--precision", "--compile"]),
    ("generate", ["checkpoint", "--prompt", "--max-new-tokens", "--temperature", "--top-k",
                  "--top-p", "--seed", "--samples"]),
    ("count", ["models"]),
    ("eval", ["checkpoint", "--recipe", "-n"]),
])
def test_verb_help(capsys, verb, options):
    code, out, err = run_main(capsys, verb, "--help")
    assert code == 0 and err == ""
    assert out.startswith(f"usage: python -m minillama {verb}")
    for option in options:
        assert option in out, option


# ----------------------------------------------------------------------------- count
def test_count_subprocess():
    proc = cli("count", "llama2-7b")
    assert proc.returncode == 0, proc.stderr
    assert "6,738,415,616" in proc.stdout


# ----------------------------------------------------------------------------- errors
def assert_one_line_error(code, err, verb, *words):
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"minillama {verb}: error: ")
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_unknown_recipe_subprocess():
    proc = cli("train", "--recipe", "no-such-recipe")
    assert_one_line_error(proc.returncode, proc.stderr, "train", "no-such-recipe",
                          "tiny-stories")


@pytest.mark.parametrize("args, words", [
    (["train", "--recipe", "tiny-stories", "--steps", "-1"], ["steps", "-1"]),
    (["train", "--recipe", "tiny-stories", "--batch-size", "0"], ["--batch-size", "0"]),
    (["train", "--recipe", "mod10", "--compile"], ["--compile", "mod10", "supervised"]),
    (["count", "llama2-7b", "gpt-9"], ["unknown model", "gpt-9"]),
    (["generate", "/no/such/checkpoint"], ["no checkpoint at /no/such/checkpoint"]),
    (["eval", "/no/such/checkpoint"], ["no checkpoint at /no/such/checkpoint"]),
])
def test_bad_arguments_one_line(capsys, args, words):
    code, out, err = run_main(capsys, *args)
    assert_one_line_error(code, err, args[0], *words)
    assert out == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(capsys):
    code, _, err = run_main(capsys, "train", "--recipe", "tiny-stories", "--device", "cuda")
    assert_one_line_error(code, err, "train", "no CUDA device")


@pytest.mark.parametrize("cuda, profile, expected", [
    (False, "", "cpu"), (False, "full", "cpu"), (True, "", "cuda"), (True, "full", "cuda"),
    (True, "cpu", "cpu")])
def test_device_auto_is_the_notebooks_choice(monkeypatch, cuda, profile, expected):
    """``--device auto`` (the default) picks what ``course.setup()`` gives the notebooks."""
    from minillama import course
    from minillama.__main__ import _device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setenv("MINILLAMA_PROFILE", profile)
    assert _device("auto") == course.setup(seed=None).device == expected


@pytest.mark.parametrize("flags, precision, compiled", [
    ([], "auto", False), (["--precision", "bf16", "--compile"], "bf16", True),
    (["--precision", "fp32"], "fp32", False)])
def test_train_passes_precision_and_compile(capsys, monkeypatch, tmp_path, flags, precision,
                                            compiled):
    import minillama.__main__ as cli_module
    seen = {}

    def stop(model, data, cfg, **kw):
        seen.update(cfg=cfg, device=kw["device"])
        raise ValueError("stopped by the test")

    monkeypatch.setattr(cli_module, "train", stop)
    code, _, err = run_main(capsys, "train", "--recipe", "tiny-stories", "--device", "cpu",
                            "--out", tmp_path / "run", *flags)
    assert_one_line_error(code, err, "train", "stopped by the test")
    assert (seen["cfg"].precision, seen["cfg"].compile) == (precision, compiled)
    assert seen["device"] == "cpu"


@pytest.mark.parametrize("args", [
    ["train"],                                          # --recipe is required
    ["train", "--recipe", "tiny-stories", "--steps", "three"],
    ["train", "--recipe", "tiny-stories", "--precision", "fp16"],
    ["frobnicate"],
    [],
])
def test_usage_errors(capsys, args):
    """Usage errors too are one line, in the same form, pointing at --help."""
    code, out, err = run_main(capsys, *args)
    assert code == 2 and out == "" and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minillama"), err
    assert "error:" in lines[0] and lines[0].endswith("(see --help)")


def test_generate_bad_checkpoints(capsys, toy_checkpoint):
    code, _, err = run_main(capsys, "generate", toy_checkpoint, "--max-new-tokens", "-5")
    assert_one_line_error(code, err, "generate", "max_new_tokens")
    (toy_checkpoint / "tokenizer.json").unlink()
    code, _, err = run_main(capsys, "generate", toy_checkpoint)
    assert_one_line_error(code, err, "generate", "no tokenizer.json")


def test_generate_refuses_a_checkpoint_that_fails_its_card(capsys, toy_checkpoint):
    write_card(toy_checkpoint, recipe="toy")
    code, out, _ = run_main(capsys, "generate", toy_checkpoint, "--prompt", "Hi",
                            "--max-new-tokens", "3", "--seed", "0")
    assert code == 0 and out.startswith("Hi")
    weights = toy_checkpoint / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x10
    weights.write_bytes(bytes(data))
    code, _, err = run_main(capsys, "generate", toy_checkpoint, "--prompt", "Hi")
    assert_one_line_error(code, err, "generate", "does not match its card")


# ----------------------------------------------------------------------------- end to end
def test_train_generate_eval(tmp_path):
    out = tmp_path / "run"
    proc = cli("train", "--recipe", "tiny-stories", "--steps", 3, "--batch-size", 4,
               "--out", out, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    model_dir = out / "model"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "card.json"):
        assert (model_dir / name).is_file(), name
    card = json.loads((model_dir / "card.json").read_text())
    printed = json.loads(proc.stdout)
    assert printed == {k: v for k, v in card.items() if k != "sha256"}
    assert card["recipe"] == "tiny-stories" and card["steps"] == 3
    assert card["device"] == "cpu" and card["precision"] == "fp32"      # auto on the CPU
    assert card["tokens_seen"] == 3 * 4 * 128
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 3 and torch.load(out / "ckpt.pt", weights_only=True)["step"] == 3

    gen = cli("generate", model_dir, "--prompt", "Once", "--max-new-tokens", 5, "--seed", 0)
    assert gen.returncode == 0, gen.stderr[-3000:]
    text = gen.stdout.rstrip("\n")
    assert text.startswith("Once") and len(text) > len("Once")

    ev = cli("eval", model_dir)
    assert ev.returncode == 0, ev.stderr[-3000:]
    result = json.loads(ev.stdout)
    assert result["recipe"] == "tiny-stories"
    assert math.isfinite(result["val_loss"]) and 0 < result["val_loss"] < 2 * math.log(512)

    # publish: bf16 copy beside the run, re-measured, hashed, and loadable as a reference
    dest = tmp_path / "published"
    pub = cli("publish", out, "--dest", dest)
    assert pub.returncode == 0, pub.stderr[-3000:]
    from minillama.reference import load_reference
    model, tok, pcard = load_reference(dest)
    assert pcard["stored_dtype"] == "bfloat16" and pcard["recipe"] == "tiny-stories"
    assert pcard["val_loss_before_rounding"] == card["val_loss"]
    assert abs(pcard["val_loss"] - card["val_loss"]) < 0.05      # bf16 rounding is small
    from safetensors import safe_open
    with safe_open(dest / "model.safetensors", "pt") as f:
        assert all(f.get_tensor(k).dtype == torch.bfloat16 for k in f.keys())
    assert (dest / "metrics.jsonl").read_text() == (out / "metrics.jsonl").read_text()
