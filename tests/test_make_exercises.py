"""The exercise generator: stubs are real, markers are checked, ``--check`` sees drift.

The stub test finds the exercise functions on its own (``ast`` plus the marker comments),
so a generator that silently skipped a block would be caught here.
"""

import ast
import importlib.util
import inspect
import re
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


mx = load(ROOT / "scripts" / "make_exercises.py", "_make_exercises_under_test")


def marked_functions(path: Path) -> list[str]:
    """Qualified names of the module-level functions and methods holding a marked block."""
    source = path.read_text(encoding="utf-8")
    defs = []                                  # (qualname, first line, last line, nested)

    def visit(node, prefix, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                defs.append((prefix + child.name, child.lineno, child.end_lineno, in_function))
                visit(child, f"{prefix}{child.name}.", True)
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.", in_function)

    visit(ast.parse(source), "", False)
    found = []
    for lineno, line in enumerate(source.splitlines(), start=1):
        if re.fullmatch(r"\s*# BEGIN SOLUTION\s*", line):
            around = [d for d in defs if d[1] < lineno <= d[2]]
            assert around, f"{path.name}:{lineno}: marked block outside any function"
            qualname, _, _, nested = max(around, key=lambda d: d[1])
            assert not nested, f"{path.name}:{lineno}: {qualname} is a nested function"
            found.append(qualname)
    return found


EXERCISES = [(p.stem, q) for p in sorted(SOLUTIONS.glob("*.py")) if not p.name.startswith("_")
             for q in dict.fromkeys(marked_functions(p))]


def test_the_course_exercises_are_found_and_graded():
    found = {f"{chapter}.{q}" for chapter, q in EXERCISES}
    assert {"ch01_anatomy.rms_norm", "ch01_anatomy.apply_rotary_emb", "ch01_anatomy.repeat_kv",
            "ch01_anatomy.causal_mask", "ch02_family.ffn_dim", "ch02_family.llama_parameters",
            "ch02_family.kv_cache_bytes_per_token"} <= found
    # each chapter chNN_<name> has its graders in tests/test_exercises_chNN.py (what
    # minillama.course.grade runs), and every exercise is called there (``.<name>(``)
    tests = Path(__file__).parent
    graders = {c: tests / f"test_exercises_{c.split('_')[0]}.py" for c, _ in EXERCISES}
    missing = sorted({g.name for g in graders.values() if not g.is_file()})
    assert not missing, f"chapters with exercises but no grader file: {missing}"
    ungraded = sorted(f"{c}.{q}" for c, q in EXERCISES
                      if f".{q.rsplit('.', 1)[-1]}(" not in graders[c].read_text(encoding="utf-8"))
    assert not ungraded, f"exercises without a grader: {ungraded}"


@pytest.mark.parametrize("chapter, qualname", EXERCISES,
                         ids=[f"{c}.{q}" for c, q in EXERCISES])
def test_generated_stub_raises(tmp_path, chapter, qualname):
    """Generated fresh from solutions/ (so a student's edits to exercises/ don't matter)."""
    source = (SOLUTIONS / f"{chapter}.py").read_text(encoding="utf-8")
    path = tmp_path / f"{chapter}.py"
    path.write_text(mx.make_exercise(source, path.name), encoding="utf-8")
    obj = load(path, f"_stub_{chapter}")
    for part in qualname.split("."):
        obj = getattr(obj, part)
    params = inspect.signature(obj).parameters.values()
    args = [None for p in params if p.default is p.empty
            and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    kwargs = {p.name: None for p in params if p.default is p.empty and p.kind == p.KEYWORD_ONLY}
    name = qualname.rsplit(".", 1)[-1]
    with pytest.raises(NotImplementedError, match=f"^exercise: {name}$"):
        obj(*args, **kwargs)


SAMPLE = textwrap.dedent('''\
    """A sample chapter."""

    import math


    def area(r):
        """pi r^2"""
        # BEGIN SOLUTION
        return math.pi * r * r
        # END SOLUTION


    class Shape:
        def scaled(self, k):
            factor = k
            # BEGIN SOLUTION
            return factor * 2
            # END SOLUTION
    ''')


def test_stub_replaces_exactly_the_block_at_its_indentation():
    out = mx.make_exercise(SAMPLE, "ch99_sample.py")
    assert "pytest tests/test_exercises_ch99.py --impl=exercises" in out
    body = out[out.index('"""A sample chapter."""'):]
    assert body == SAMPLE.replace(
        '    # BEGIN SOLUTION\n    return math.pi * r * r\n    # END SOLUTION\n',
        '    raise NotImplementedError("exercise: area")\n').replace(
        '        # BEGIN SOLUTION\n        return factor * 2\n        # END SOLUTION\n',
        '        raise NotImplementedError("exercise: scaled")\n')


@pytest.mark.parametrize("source, message", [
    ("def f():\n    # BEGIN SOLUTION\n    return 1\n", "never closed"),
    ("def f():\n    return 1\n    # END SOLUTION\n", "without a BEGIN"),
    ("def f():\n    # BEGIN SOLUTION\n    # BEGIN SOLUTION\n    return 1\n"
     "    # END SOLUTION\n", "cannot nest"),
    ("# BEGIN SOLUTION\nx = 1\n# END SOLUTION\n", "inside a function"),
    ("def f():\n    # BEGIN SOLUTION\n    return 1\n# END SOLUTION\n", "indented differently"),
    ("def f():\n    # BEGIN SOLUTION\n    return 1\n\n\ndef g():\n    return 2\n"
     "    # END SOLUTION\n", "swallows the function"),
    ("def f():\n    return 1\n", "no '# BEGIN SOLUTION' block"),
])
def test_bad_markers_are_refused(source, message):
    with pytest.raises(ValueError, match=message):
        mx.make_exercise(source, "ch99_bad.py")


def test_check_names_stale_missing_and_extra_files(tmp_path, capsys):
    src, dst = tmp_path / "solutions", tmp_path / "exercises"
    src.mkdir()
    (src / "ch98_a.py").write_text(SAMPLE)
    (src / "ch99_b.py").write_text(SAMPLE)
    argv = ["--src", str(src), "--dst", str(dst)]
    assert mx.main(["--check", *argv]) == 1
    assert "ch98_a.py (missing)" in capsys.readouterr().err

    assert mx.main(argv) == 0
    assert mx.main(["--check", *argv]) == 0
    (dst / "ch98_a.py").write_text("# edited by hand\n")
    (dst / "ch97_orphan.py").write_text("")
    assert mx.main(["--check", *argv]) == 1
    err = capsys.readouterr().err
    assert "ch98_a.py (differs" in err and "ch97_orphan.py (no solutions/" in err
    assert "ch99_b.py" not in err

    assert mx.main(argv) == 0                      # rewrites the stale file, drops the orphan
    assert sorted(p.name for p in dst.iterdir()) == ["ch98_a.py", "ch99_b.py"]
    assert mx.main(["--check", *argv]) == 0

