"""Shared test options.

``--impl`` picks whose exercise code the graders in ``test_exercises_chNN.py`` check:
``solutions`` (the default: the reference answers), ``exercises`` (the generated stubs,
or a student's work done in place) or any other folder holding files of the same names
(a student's copy of ``exercises/``). A relative folder is taken from the repository
root, then from the current directory.

To grade a new chapter, put its answers in ``solutions/chNN_<name>.py`` between
``# BEGIN SOLUTION`` / ``# END SOLUTION`` markers, run ``make exercises``, and write
``tests/test_exercises_chNN.py`` whose ``test_chNN_...`` functions load it with
``impl("chNN_<name>")``; ``minillama.course.grade("chNN")`` runs that file.

``--device`` (``cpu``, the default, or ``cuda``, ``cuda:1``, ...) is where the
device-agnostic tests of the core (model, HF parity, PEFT, NF4/QLoRA, training) put their
models and inputs, through the ``device`` fixture. Tests whose reference only exists on
the CPU say so and skip on another device. ``--device cuda`` on a machine without CUDA
stops at once with a clear message.
"""

import importlib.util
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMPL_DIR = pytest.StashKey[Path]()
DEVICE = pytest.StashKey[str]()


def pytest_addoption(parser):
    parser.addoption("--impl", default="solutions", metavar="DIR",
                     help="folder whose chapter files the exercise graders import: "
                          "solutions (default), exercises, or a path to your own copy")
    parser.addoption("--device", default="cpu", metavar="DEVICE",
                     help="torch device for the device-agnostic core tests: cpu (default), "
                          "cuda, cuda:N")


def _impl_dir(choice: str) -> Path:
    tried = list(dict.fromkeys([ROOT / choice, Path.cwd() / choice]))
    for candidate in tried:
        if candidate.is_dir():
            return candidate.resolve()
    raise pytest.UsageError(f"--impl={choice}: no such folder (tried "
                            f"{' and '.join(map(str, tried))})")


@pytest.fixture
def one_thread():
    """Run a test on one CPU thread, then restore the count: tiny models run fastest that
    way, and the machine's cores are shared with the other tests and notebooks."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _check_device(choice: str) -> str:
    import torch
    try:
        device = torch.device(choice)
    except (RuntimeError, ValueError) as e:
        raise pytest.UsageError(f"--device={choice}: not a torch device ({e})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise pytest.UsageError(
                f"--device={choice}: CUDA is not available here (torch {torch.__version__}, "
                f"built with CUDA {torch.version.cuda}; torch.cuda.is_available() is False)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise pytest.UsageError(f"--device={choice}: only {torch.cuda.device_count()} "
                                    f"CUDA device(s) here")
    elif device.type != "cpu":
        raise pytest.UsageError(f"--device={choice}: only cpu and cuda are supported")
    return str(device)


def pytest_configure(config):
    config.stash[IMPL_DIR] = _impl_dir(config.getoption("--impl"))   # bad --impl: stop now
    config.stash[DEVICE] = _check_device(config.getoption("--device"))  # and a bad --device


def pytest_report_header(config):
    return f"device: {config.stash[DEVICE]} (--device)"


@pytest.fixture(scope="session")
def device(request) -> str:
    """The ``--device`` of this run, e.g. ``"cpu"`` or ``"cuda"``."""
    return request.config.stash[DEVICE]



def load_module_from(path: Path, module_name: str):
    """Import the Python file ``path`` as a fresh module called ``module_name``."""
    if not path.is_file():
        raise FileNotFoundError(f"no exercise file {path}")
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module          # lets dataclasses & co. find the module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


@pytest.fixture(scope="session")
def impl(request):
    """A loader: ``impl("ch01_anatomy")`` is that chapter's module from the --impl folder."""
    folder = request.config.stash[IMPL_DIR]
    cache = {}

    def load(chapter: str):
        if chapter not in cache:
            name = re.sub(r"\W", "_", f"_impl_{folder.name}_{chapter}")
            cache[chapter] = load_module_from(folder / f"{chapter}.py", name)
        return cache[chapter]

    return load


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def torchrun():
    """A launcher: ``torchrun(script, out)`` runs ``script out`` on 2 CPU processes under
    ``torch.distributed.run`` (gloo, a free local port, one thread each, no inherited rank
    variables) and fails the test with the workers' stderr if they fail; it returns the
    finished process. Any arguments: ``torchrun("-m", "minillama", "train", ...)``."""
    def launch(*args, timeout: int = 180) -> subprocess.CompletedProcess:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(var, None)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={_free_port()}", *map(str, args)]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    return launch
