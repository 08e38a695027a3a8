"""Saves that survive ``kill -9``: fault injection at every step of a save.

For each format (and for a PEFT adapter) a helper process saves an "old" checkpoint,
then forks a child that saves a "new" one over it and is killed with SIGKILL at one
step of the save: inside the tensor writer (half a file written), after the files are
written, after they are flushed, after the old directory went aside, after the new one
went in, and at the end. Whatever the step, the target must then load as exactly the
old or exactly the new checkpoint: never missing, never mixed. A kill before the new
checkpoint is complete must leave the old one; and the next save removes every
leftover of the killed one (temporary copies, the set-aside directory).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import minillama
from minillama import LlamaConfig
from minillama import peft as P

STEPS = ["writing", "written", "synced", "aside", "swapped", "done"]
KINDS = ["native", "hf", "meta", "llama2c", "adapter"]

HELPER = textwrap.dedent("""
    import importlib, json, os, signal, sys
    import torch
    torch.set_num_threads(1)                 # no thread pool for the forked children
    sys.path.insert(0, sys.argv[3])
    from test_atomic_saves import WRITERS, build, save
    from minillama import files

    kind, root = sys.argv[1], sys.argv[2]
    endings = {}
    for step in json.loads(sys.argv[4]):
        path = os.path.join(root, step, "ckpt.bin" if kind == "llama2c" else "ckpt")
        save(kind, build(kind, seed=1), path)                     # the old checkpoint
        new = build(kind, seed=2)
        pid = os.fork()
        if pid == 0:                                              # the child: save, die
            die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
            if step == "writing":                     # half of one file, then the kill
                module, name = WRITERS[kind]
                def partial(*args, **kwargs):
                    for a in args:                    # a path, or llama2c's open file
                        if hasattr(a, "write"):
                            a.write(b"partial")
                            a.flush()
                        elif isinstance(a, (str, os.PathLike)):
                            with open(a, "wb") as f:
                                f.write(b"partial")
                    die()
                setattr(importlib.import_module(module), name, partial)
            else:
                files.crash_point = lambda s, step=step: s == step and die()
            save(kind, new, path)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        endings[step] = ("killed" if os.WIFSIGNALED(status) and
                         os.WTERMSIG(status) == signal.SIGKILL else os.WEXITSTATUS(status))
    print(json.dumps(endings))
""")

WRITERS = {"native": ("minillama.checkpoints.native", "write_safetensors"),
           "hf": ("minillama.checkpoints.hf", "write_safetensors"),
           "meta": ("minillama.checkpoints.meta", "write_torch"),
           "llama2c": ("minillama.checkpoints.llama2c", "_write_floats"),
           "adapter": ("minillama.peft.io", "write_safetensors")}


def base(seed=0):
    model = minillama.Llama(LlamaConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2,
                                        vocab_size=64, multiple_of=16, max_seq_len=32))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


def build(kind, seed):
    """The model a save writes: a random base, or LoRA on the fixed base with random B."""
    if kind != "adapter":
        return base(seed)
    model = P.apply(base(0), "lora", r=2)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model


def save(kind, model, path):
    if kind == "adapter":
        P.save(model, path)
    else:
        minillama.save(model, path, format=kind)


def load(kind, path):
    return P.load(base(0), path) if kind == "adapter" else minillama.load(path)


@torch.no_grad()
def logits(model):
    return model(torch.arange(12).reshape(2, 6))


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_a_kill_at_any_step_leaves_the_old_or_the_new_checkpoint(kind, tmp_path):
    run = subprocess.run([sys.executable, "-c", HELPER, kind, str(tmp_path),
                          os.path.dirname(__file__), json.dumps(STEPS)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    endings = json.loads(run.stdout.strip().splitlines()[-1])
    old, new = logits(build(kind, 1)), logits(build(kind, 2))
    file_steps = ["writing", "written", "synced", "done"]     # a single file has no aside
    for step in STEPS:
        reached = kind != "llama2c" or step in file_steps
        assert endings[step] == ("killed" if reached else 0), (step, endings[step])
        parent = tmp_path / step
        path = parent / ("ckpt.bin" if kind == "llama2c" else "ckpt")
        got = logits(load(kind, path))                  # never missing, never mixed
        expect_new = step in ("swapped", "done") or not reached
        torch.testing.assert_close(got, new if expect_new else old, rtol=0, atol=0,
                                   msg=f"{kind}, killed at {step!r}")
        save(kind, build(kind, 3), path)                # the next save cleans up
        assert sorted(os.listdir(parent)) == [path.name], (step, os.listdir(parent))
        torch.testing.assert_close(logits(load(kind, path)), logits(build(kind, 3)),
                                   rtol=0, atol=0)


def test_a_kill_between_the_renames_is_recovered_by_the_reader(tmp_path):
    """The one instant the target is missing: the reader moves the old checkpoint back."""
    path = tmp_path / "ckpt"
    minillama.save(base(1), path)
    aside = tmp_path / ".ckpt.old"
    aside.mkdir()
    os.replace(path, aside / "ckpt")                    # what a kill after "aside" leaves
    assert not path.exists()
    torch.testing.assert_close(logits(minillama.load(path)), logits(base(1)), rtol=0, atol=0)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
