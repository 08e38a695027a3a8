"""The chapter notebooks' paired scripts, and run_course (headless runs of the chapters).

Every ``notebooks/chNN_<name>.ipynb`` is paired (jupytext, ``notebooks/jupytext.toml``)
with the percent-format script ``notebooks/chNN_<name>.py`` that people edit and review;
the .ipynb keeps the executed outputs. The check below fails when a script is not
exactly what jupytext writes from its notebook.

The notebooks themselves are tested by nbval in `make test`
(``pytest --nbval-lax --nbval-current-env notebooks``); here a few tiny notebooks made
on the spot check run_course. Tests that start a kernel take a few seconds each.
"""

import difflib
import importlib.util
import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"_{name}_under_test",
                                                  ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_course = load("run_course")


def write_notebook(path: Path, *sources: str) -> None:
    nbformat.write(new_notebook(cells=[new_code_cell(s) for s in sources]), path)


@pytest.mark.slow
def test_run_course_reports_each_chapter_and_fails_on_any_failure(tmp_path, capsys,
                                                                  monkeypatch):
    books, out = tmp_path / "notebooks", tmp_path / "build"
    books.mkdir()
    monkeypatch.setenv("MINILLAMA_PROFILE", "cpu")
    write_notebook(books / "ch01_ok.ipynb",
                   "import os, sys\nprint(os.environ['MINILLAMA_PROFILE'], sys.executable)")
    write_notebook(books / "ch02_broken.ipynb", "x = 1", "1 / 0", "print('not reached')")
    (books / "ch03_not_json.ipynb").write_text("{oops")
    code = run_course.main(["--notebooks", str(books), "--out", str(out), "--timeout", "120"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert lines[0] == "profile: cpu (MINILLAMA_PROFILE)"
    assert lines[1].startswith("ch01_ok") and " ... ok " in lines[1] and lines[1].endswith(" s")
    assert "FAILED (cell 2: ZeroDivisionError: division by zero)" in lines[2]
    assert "FAILED (cannot read notebook" in lines[3]
    assert lines[4].startswith("3 notebooks: 1 ok, 2 failed in ")

    ok = nbformat.read(out / "ch01_ok.ipynb", as_version=4)
    assert ok.cells[0].outputs[0]["text"] == f"cpu {sys.executable}\n"   # this environment
    broken = json.loads((out / "ch02_broken.ipynb").read_text())
    assert broken["cells"][1]["outputs"][0]["ename"] == "ZeroDivisionError"
    assert broken["cells"][2]["outputs"] == []

    assert run_course.main(["ch01", "--notebooks", str(books), "--out", str(out)]) == 0
    assert run_course.main(["ch09", "--notebooks", str(books), "--out", str(out)]) == 1
    assert "no notebooks matching ch09" in capsys.readouterr().err


@pytest.mark.slow
def test_run_course_stops_a_notebook_that_runs_too_long(tmp_path, capsys):
    write_notebook(tmp_path / "ch01_sleepy.ipynb", "import time\ntime.sleep(600)")
    code = run_course.main(["--notebooks", str(tmp_path), "--out", str(tmp_path / "out"),
                            "--timeout", "4"])
    assert code == 1
    assert "FAILED (timed out after 4 s)" in capsys.readouterr().out


NOTEBOOKS = ROOT / "notebooks"
CHAPTERS = sorted(NOTEBOOKS.glob("ch*.ipynb"))


def test_every_chapter_has_its_script_and_every_script_its_notebook():
    assert CHAPTERS, "no notebooks/ch*.ipynb"
    scripts = {p.stem for p in NOTEBOOKS.glob("ch*.py")}
    books = {p.stem for p in CHAPTERS}
    assert not books - scripts, (
        f"chapters without their paired script: {sorted(books - scripts)}; create it with "
        "`jupytext --sync notebooks/<chapter>.ipynb`")
    assert not scripts - books, (
        f"scripts without a notebook: {sorted(scripts - books)}; create it with "
        "`jupytext --sync notebooks/<chapter>.py`, then execute it")


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_script_is_in_sync_with_its_notebook(notebook):
    try:                    # a dev dependency: without it the check must fail, not skip
        import jupytext
        from jupytext.config import load_jupytext_config
    except ImportError:
        pytest.fail("jupytext is not installed: pip install -e '.[dev]'", pytrace=False)

    config = load_jupytext_config(str(notebook))
    assert config is not None and "py:percent" in str(config.formats), \
        "notebooks/jupytext.toml should pair the chapters as ipynb,py:percent"
    script = notebook.with_suffix(".py")
    if not script.is_file():
        pytest.fail(f"{script.relative_to(ROOT)} is missing: run "
                    f"`jupytext --sync notebooks/{notebook.name}`")
    want = jupytext.writes(jupytext.read(notebook), fmt="py:percent", config=config)
    got = script.read_text(encoding="utf-8")
    if got != want:
        diff = "".join(list(difflib.unified_diff(
            want.splitlines(keepends=True), got.splitlines(keepends=True),
            f"from {notebook.name}", script.name))[:40])
        pytest.fail(f"notebooks/{script.name} and notebooks/{notebook.name} differ. Run\n"
                    f"    jupytext --sync notebooks/{notebook.name}\n"
                    "which rewrites the older of the two from the newer (after editing the "
                    ".py, the .ipynb keeps its outputs; re-execute it, then commit both).\n"
                    + diff, pytrace=False)
