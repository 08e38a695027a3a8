"""scripts/gpu_check.sh stays runnable between GPU leases; --device cuda fails clearly here.

The GPU run itself (``bash scripts/gpu_check.sh``) needs a CUDA machine; here the dry run
checks that every step's files exist, its scripts import and parse their arguments, and
that the plan names every step.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
STEPS = ["env", "pytest", "nf4", "bench_train", "bench_model", "ch05", "ch07", "ch12", "ch17"]


def test_dry_run_passes_and_lists_every_step():
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    plan = proc.stdout.split("checks:")[0]
    for step in STEPS:
        assert f" {step} " in plan, f"the plan does not list step {step}:\n{plan}"
    assert "--device cuda" in plan and "MINILLAMA_PROFILE=full" in plan
    assert "FAIL" not in proc.stdout and proc.stdout.rstrip().endswith("dry run: ok")


def pytest_with(device):
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "--device", device, "tests/test_model.py::test_unknown_model_name"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_a_clear_usage_error():
    proc = pytest_with("cuda")
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]   # usage error
    assert "--device=cuda: CUDA is not available here" in proc.stderr
    assert "passed" not in proc.stdout


def test_unknown_device_is_a_usage_error():
    proc = pytest_with("tpu")
    assert proc.returncode == 4 and "--device=tpu" in proc.stderr, proc.stderr[-2000:]


def test_steps_can_be_chosen_and_an_unknown_one_is_refused(tmp_path):
    """GPU_CHECK_STEPS runs only the steps it names (here env, which needs no GPU to run;
    without one it fails, as its summary line says); every other step is listed as not run."""
    script = str(ROOT / "scripts" / "gpu_check.sh")
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_STEPS": "env"}
    proc = subprocess.run(["bash", script, str(tmp_path / "out")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    rows = {line.split()[0]: line.split()[1:]
            for line in (tmp_path / "out" / "summary.txt").read_text().splitlines()[3:-1]}
    assert set(rows) == set(STEPS), rows
    assert all(rows[s][:2] == ["not", "run"] for s in STEPS if s != "env"), rows
    assert rows["env"][0] in ("ok", "FAIL") and proc.returncode == (rows["env"][0] == "FAIL")
    assert (tmp_path / "out" / "env.txt").is_file()
    env["GPU_CHECK_STEPS"] = "env ch99"
    proc = subprocess.run(["bash", script, str(tmp_path / "bad")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "GPU_CHECK_STEPS names no step 'ch99'" in proc.stderr
    assert not (tmp_path / "bad").exists()
