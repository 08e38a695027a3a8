"""``python -m minillama train --parallel fsdp`` under torchrun, and how the backend and
device are chosen (``distributed.placement``) and model state is measured (``held_bytes``).

The CLI test launches 2 CPU processes twice (a few seconds of training in all): 4 steps
of ``tiny-stories`` stopped after step 2 with a sharded checkpoint, then ``--resume`` to
the end; one process in this process trains the same 4 steps as the reference.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minillama import Llama, LlamaConfig
from minillama.__main__ import _device, main
from minillama.distributed import Placement, held_bytes, measure_held, placement
from minillama.train import TrainConfig, make_optimizer

STEPS = ["--recipe", "tiny-stories", "--steps", "4", "--batch-size", "4", "--log-every", "1",
         "--device", "cpu"]
LOSS_TOL = 1e-5     # gradient halves summed in another order: ~1e-7 (see test_fsdp.py)


# ----------------------------------------------------------------------------- placement
@pytest.mark.parametrize("world, gpus, want", [
    (2, 0, ("gloo", "cpu")),
    (2, 1, ("gloo", "cpu")),        # one GPU cannot host 2 NCCL ranks
    (2, 2, ("nccl", "cuda")),
    (2, 8, ("nccl", "cuda")),
    (1, 1, ("nccl", "cuda")),       # one process: the GPU
    (1, 0, ("gloo", "cpu")),
])
def test_placement(world, gpus, want):
    assert placement(world, gpus) == Placement(*want)


def test_placement_defaults_to_this_machine():
    want = "cuda" if torch.cuda.device_count() >= 2 else "cpu"
    assert placement(2).device == want


@pytest.mark.parametrize("world, gpus", [(0, 1), (1.5, 1), (True, 1), (2, -1)])
def test_placement_refuses_bad_counts(world, gpus):
    with pytest.raises(ValueError, match="world|gpus"):
        placement(world, gpus)


def test_cli_device_follows_placement(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert _device("auto") == "cpu"                   # 2 processes, 1 GPU: gloo on the CPU
    with pytest.raises(ValueError, match="2 processes but 1 GPU"):
        _device("cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert _device("auto") == _device("cuda") == "cuda"


# ----------------------------------------------------------------------------- held bytes
def test_held_bytes_of_adamw_in_one_process():
    torch.manual_seed(0)
    model = Llama(LlamaConfig(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=64,
                              multiple_of=16, max_seq_len=16))
    opt = make_optimizer(model, TrainConfig())
    x = torch.randint(0, 64, (2, 8))
    with measure_held() as held:
        for _ in range(2):                            # the first step is the one recorded
            model(x, x)[1].backward()
            opt.step()
    n, tensors = sum(p.numel() for p in model.parameters()), len(list(model.parameters()))
    # fp32: 4 bytes a value; AdamW: two moments per value plus a 4-byte step per tensor.
    assert held == {"parameters": 4 * n, "gradients": 4 * n, "optimizer": 8 * n + 4 * tensors}
    assert held_bytes(opt) == held


# ----------------------------------------------------------------------------- the CLI
def run_main(capsys, *args):
    main([str(a) for a in args])
    return capsys.readouterr().out


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def fsdp_cli(tmp_path_factory, torchrun):
    out = tmp_path_factory.mktemp("fsdp_cli") / "run"
    stopped = torchrun("-m", "minillama", "train", *STEPS, "--parallel", "fsdp",
                       "--stop-after", 2, "--out", out)
    at_stop = {"files": sorted(p.name for p in (out / "ckpt").iterdir()),
               "steps": [r["step"] for r in metrics(out)], "model": (out / "model").exists(),
               "printed": json.loads(stopped.stdout)}
    torchrun("-m", "minillama", "train", *STEPS, "--parallel", "fsdp", "--resume", "--out", out)
    return out, at_stop


def test_a_torchrun_worker_ends_without_teardown_and_loses_no_output(capsys):
    """Under torchrun (WORLD_SIZE > 1) the CLI ends with ``os._exit`` (see
    ``__main__._end_torchrun_worker``): status 0 and everything it printed still arrives
    through a pipe, where Python buffers stdout."""
    env = dict(os.environ, WORLD_SIZE="2", PYTHONPATH=str(Path(__file__).parents[1]))
    env.pop("PYTHONUNBUFFERED", None)               # buffered, as a pipe usually is
    done = subprocess.run([sys.executable, "-m", "minillama", "count", "llama2-7b",
                           "llama3-8b"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == run_main(capsys, "count", "llama2-7b", "llama3-8b")


def test_fsdp_cli_stops_with_a_sharded_checkpoint(fsdp_cli):
    out, at_stop = fsdp_cli
    assert at_stop["files"] == [".metadata", "__0_0.distcp", "__1_0.distcp", "config.json"]
    assert at_stop["steps"] == [1, 2] and not at_stop["model"]
    printed = at_stop["printed"]
    assert printed["stopped_at_step"] == 2 and printed["checkpoint"] == str(out / "ckpt")
    assert len(printed["held_bytes"]) == 2


def test_fsdp_cli_resumes_and_matches_one_process(fsdp_cli, tmp_path, capsys, one_thread):
    out, _ = fsdp_cli
    card = json.loads((out / "model" / "card.json").read_text())
    assert card["resumed"] and card["processes"] == 2 and card["steps"] == 4
    assert [r["step"] for r in metrics(out)] == [1, 2, 3, 4]      # no step twice
    assert json.loads((out / "ckpt" / "config.json").read_text())["step"] == 4

    single = tmp_path / "single"
    run_main(capsys, "train", *STEPS, "--out", single)
    for a, b in zip(metrics(single), metrics(out), strict=True):
        assert abs(a["loss"] - b["loss"]) < LOSS_TOL, (a, b)
    one = json.loads((single / "model" / "card.json").read_text())
    assert one["processes"] == 1
    assert abs(one["val_loss"] - card["val_loss"]) < 1e-3
    # Each of the 2 processes held about half of everything one process holds.
    whole, halves = one["held_bytes"][0], card["held_bytes"]
    for kind in ("parameters", "gradients"):
        assert sum(h[kind] for h in halves) == whole[kind], kind
    for h in halves:
        for kind, value in h.items():
            assert 0.45 < value / whole[kind] < 0.55, (kind, halves, whole)
