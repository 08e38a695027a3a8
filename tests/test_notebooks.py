"""The notebook tools: py2nb (authoring) and run_course (headless runs of the chapters).

The notebooks themselves are tested by nbval in `make test`
(``pytest --nbval-lax --nbval-current-env notebooks``); here a few tiny notebooks made
on the spot check the tools. Tests that start a kernel take a few seconds each.
"""

import importlib.util
import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent


def load(name: str):
    sys.path.insert(0, str(ROOT / "scripts"))       # py2nb imports run_course
    try:
        spec = importlib.util.spec_from_file_location(f"_{name}_under_test",
                                                      ROOT / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return module


py2nb, run_course = load("py2nb"), load("run_course")

SCRIPT = '''\
"""Lines before the first marker form a code cell."""

# %% [markdown]
# # A chapter
#
# Some *text*.

# %% Setup: this title is dropped
import os
print(os.path.basename(os.getcwd()))

# %%


# %%
answer = 6 * 7
answer
'''


def test_script_becomes_cells_in_order():
    nb = py2nb.script_to_notebook(SCRIPT)
    kinds = [(c.cell_type, c.source) for c in nb.cells]
    assert kinds == [
        ("code", '"""Lines before the first marker form a code cell."""'),
        ("markdown", "# A chapter\n\nSome *text*."),
        ("code", "import os\nprint(os.path.basename(os.getcwd()))"),
        ("code", "answer = 6 * 7\nanswer"),                 # the empty cell is dropped
    ]
    assert [c.id for c in nb.cells] == ["cell-0", "cell-1", "cell-2", "cell-3"]
    assert nb.metadata.kernelspec.name == "python3" and nb.nbformat == 4
    nbformat.validate(nb)
    assert py2nb.script_to_notebook(SCRIPT) == nb             # same script, same notebook


@pytest.mark.parametrize("script, message", [
    ("# %% [markdown]\n# fine\nnot a comment\n", ":3: a markdown cell"),
    ("# %% [raw]\nx\n", "unknown cell type"),
    ("\n\n# %%\n\n", "no cells"),
])
def test_bad_scripts_are_refused(script, message):
    with pytest.raises(ValueError, match=message):
        py2nb.script_to_notebook(script, "chapter.py")


@pytest.mark.slow
def test_py2nb_execute_stores_outputs_run_in_the_output_folder(tmp_path, capsys):
    src, out = tmp_path / "chapter.py", tmp_path / "built" / "chapter.ipynb"
    src.write_text(SCRIPT)
    assert py2nb.main([str(src), str(out), "--execute"]) == 0
    cells = nbformat.read(out, as_version=4).cells
    assert cells[2].outputs[0]["text"] == "built\n"           # cwd = the output's folder
    assert cells[3].outputs[0]["data"]["text/plain"] == "42"

    bad = tmp_path / "bad.py"
    bad.write_text("# %%\nraise KeyError('no such chapter')\n")
    assert py2nb.main([str(bad), str(tmp_path / "bad.ipynb"), "--execute"]) == 1
    assert "KeyError" in capsys.readouterr().err
    assert not (tmp_path / "bad.ipynb").exists()


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


@pytest.mark.parametrize("chapter", sorted(p.name for p in (ROOT / "notebooks").glob("ch*.ipynb")))
def test_nb2py_round_trips_every_chapter(chapter):
    nb2py = load("nb2py")
    nb = nbformat.read(ROOT / "notebooks" / chapter, as_version=4)
    again = py2nb.script_to_notebook(nb2py.notebook_to_script(nb))
    assert [(c.cell_type, c.source) for c in again.cells] == \
        [(c.cell_type, c.source) for c in nb.cells]
