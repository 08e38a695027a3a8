"""What every chapter notebook starts and ends with: the profile, the device, the seed, and
the cell that grades the chapter's exercises.

    from minillama import course
    PROFILE, DEVICE = course.setup()           # reads MINILLAMA_PROFILE, seeds everything
    ...
    result = course.grade("ch01", impl="solutions")   # prints e.g. "32 passed in 5.53s"

``MINILLAMA_PROFILE`` is ``cpu`` (tiny models, a few minutes per chapter on a laptop) or
``full`` (the sizes the chapters are written for, on a GPU); what each chapter trains in
either is one row of ``minillama/profiles.py``. Unset or empty, it is ``full``
where CUDA is available and ``cpu`` otherwise; any other value is refused.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

PROFILES = ("cpu", "full")
ENV = "MINILLAMA_PROFILE"


class Setup(NamedTuple):
    profile: str
    device: str


def profile() -> str:
    """``cpu`` or ``full``, from ``MINILLAMA_PROFILE`` (unset or empty: full on CUDA, else cpu)."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return "full" if torch.cuda.is_available() else "cpu"
    if value not in PROFILES:
        raise ValueError(f"{ENV}={value!r}: expected 'cpu' or 'full' "
                         f"(or unset: full where CUDA is available, cpu otherwise)")
    return value


def device(profile_name: str | None = None) -> str:
    """``cuda`` for the full profile when CUDA is available, ``cpu`` otherwise."""
    name = profile() if profile_name is None else profile_name
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: expected 'cpu' or 'full'")
    return "cuda" if name == "full" and torch.cuda.is_available() else "cpu"


def seed_everything(seed: int = 0) -> None:
    """Seed Python's ``random``, numpy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)      # seeds CUDA too


def setup(seed: int | None = 0) -> Setup:
    """The profile and device for this run, after seeding everything with ``seed`` (None:
    leave the generators alone). ``PROFILE, DEVICE = course.setup()``."""
    name = profile()
    if seed is not None:
        seed_everything(seed)
    return Setup(name, device(name))


def chapter_id(chapter: int | str) -> str:
    """``1``, ``"1"``, ``"ch01"`` or ``"ch01_anatomy"`` -> ``"ch01"``."""
    text = str(chapter)
    m = re.fullmatch(r"(?:ch)?0*(\d{1,2})(?:_\w*)?", text)
    if m is None:
        raise ValueError(f"not a chapter: {chapter!r} (expected e.g. 1, 'ch01' or 'ch01_anatomy')")
    return f"ch{int(m[1]):02d}"


def find_root(test_file: str, root: str | Path | None = None) -> Path:
    """The repository root holding ``test_file``: ``root`` if given, else the parent of the
    current directory (a notebook runs in ``notebooks/``), the current directory, or the
    checkout this package was imported from."""
    if root is not None:
        candidates = [Path(root)]
    else:
        here = Path.cwd()
        candidates = list(dict.fromkeys([here.parent, here,
                                         Path(__file__).resolve().parent.parent]))
    for candidate in candidates:
        if (candidate / test_file).is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"{test_file} not found under {' or '.join(map(str, candidates))}; "
                            "run the notebook from the repository's notebooks/ folder")


def run_tests(test_file: str, *args: str, root: str | Path | None = None,
              echo: bool = True) -> subprocess.CompletedProcess:
    """Run ``pytest test_file args`` from the repository root in this Python, quietly and
    without the project's addopts; print pytest's summary line (``echo``) and return the
    finished process (its ``returncode`` is 0 when everything passed)."""
    cwd = find_root(test_file, root)
    result = subprocess.run([sys.executable, "-m", "pytest", test_file, "-q", "-o", "addopts=",
                             "--color=no", "-p", "no:cacheprovider", *args],
                            cwd=cwd, capture_output=True, text=True)
    if echo:
        lines = result.stdout.strip().splitlines()
        if lines:                  # pytest's summary, e.g. "3 failed, 29 passed in 5.53s"
            print(lines[-1])
        else:                      # pytest stopped before testing: its message says why
            print(result.stderr.strip() or f"pytest exited with status {result.returncode}")
    return result


def grade(chapter: int | str, impl: str = "solutions", *, root: str | Path | None = None,
          echo: bool = True) -> subprocess.CompletedProcess:
    """Run chapter ``chapter``'s graders (``tests/test_exercises_chNN.py``) on the answers in
    the folder ``impl`` (``solutions``, ``exercises`` or your own copy; see
    ``tests/conftest.py``), print pytest's summary line and return the finished process."""
    test_file = f"tests/test_exercises_{chapter_id(chapter)}.py"
    return run_tests(test_file, f"--impl={impl}", root=root, echo=echo)
