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
"""

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMPL_DIR = pytest.StashKey[Path]()


def pytest_addoption(parser):
    parser.addoption("--impl", default="solutions", metavar="DIR",
                     help="folder whose chapter files the exercise graders import: "
                          "solutions (default), exercises, or a path to your own copy")


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


def pytest_configure(config):
    config.stash[IMPL_DIR] = _impl_dir(config.getoption("--impl"))   # bad --impl: stop now


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
