"""Generate ``exercises/`` from ``solutions/`` by cutting out the marked solution blocks.

A solution file is plain Python. Inside an exercise function, the part a student must
write sits between two marker comments:

    def repeat_kv(x, n_rep):
        \"\"\"The task and its equation.\"\"\"
        # BEGIN SOLUTION
        ...
        # END SOLUTION

The exercise file is the same file with every marked block replaced by
``raise NotImplementedError("exercise: repeat_kv")`` at the block's indentation, and a
header saying where it came from and how to grade it. Everything else (imports,
docstrings, helper code) is kept as it is.

    python scripts/make_exercises.py            # (re)write exercises/
    python scripts/make_exercises.py --check    # exit 1 if exercises/ is stale
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION[ \t]*$")
END = re.compile(r"^(?P<indent>[ \t]*)# END SOLUTION[ \t]*$")

HEADER = """\
# GENERATED from solutions/{name}
# by scripts/make_exercises.py (`make exercises`). Maintainers: edit the solution,
# not this file; `make test` checks the two agree.
#
# Exercise: replace every `raise NotImplementedError("exercise: ...")` below with your
# own code (the docstring above it states the task), then grade your work:
#
#     python -m pytest tests/test_exercises_{chapter}.py --impl=exercises
#
# To keep this folder pristine, copy it (e.g. to my_exercises/) and grade that copy
# with --impl=my_exercises instead.
"""


@dataclass(frozen=True)
class Block:
    """One marked block: the function it sits in and its 1-based marker line numbers."""

    function: str
    begin: int
    end: int
    indent: str


def find_blocks(source: str, filename: str = "<solution>") -> list[Block]:
    """Every marked block in ``source``, checked to be well formed.

    Raises ``ValueError`` naming the file and line for an unmatched or nested marker and
    for a block that is not inside a function (the stub needs a function name).
    """
    tree = ast.parse(source, filename)
    functions = [n for n in ast.walk(tree)
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    blocks, open_at = [], None
    for lineno, line in enumerate(source.splitlines(), start=1):
        if m := BEGIN.match(line):
            if open_at is not None:
                raise ValueError(f"{filename}:{lineno}: BEGIN SOLUTION inside the block "
                                 f"opened at line {open_at[0]} (blocks cannot nest)")
            open_at = (lineno, m["indent"])
        elif m := END.match(line):
            if open_at is None:
                raise ValueError(f"{filename}:{lineno}: END SOLUTION without a BEGIN SOLUTION")
            begin, indent = open_at
            if m["indent"] != indent:
                raise ValueError(f"{filename}:{lineno}: END SOLUTION is indented differently "
                                 f"from its BEGIN SOLUTION at line {begin}")
            around = [f for f in functions if f.lineno < begin <= f.end_lineno]
            if not around:
                raise ValueError(f"{filename}:{begin}: a solution block must sit inside "
                                 f"a function body")
            innermost = max(around, key=lambda f: f.lineno)
            blocks.append(Block(innermost.name, begin, lineno, indent))
            open_at = None
    if open_at is not None:
        raise ValueError(f"{filename}:{open_at[0]}: BEGIN SOLUTION is never closed")
    return blocks


def make_exercise(source: str, name: str) -> str:
    """The exercise text for the solution file ``name`` whose text is ``source``."""
    blocks = find_blocks(source, f"solutions/{name}")
    if not blocks:
        raise ValueError(f"solutions/{name} has no '# BEGIN SOLUTION' block")
    lines = source.splitlines(keepends=True)
    for b in reversed(blocks):        # from the bottom up, so line numbers stay valid
        stub = f'{b.indent}raise NotImplementedError("exercise: {b.function}")\n'
        lines[b.begin - 1:b.end] = [stub]
    exercise = "".join(lines)
    _check_same_functions(source, exercise, name)
    chapter = name.split("_")[0]
    return HEADER.format(name=name, chapter=chapter) + exercise


def _function_names(source: str) -> list[str]:
    return sorted(n.name for n in ast.walk(ast.parse(source))
                  if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))


def _check_same_functions(solution: str, exercise: str, name: str) -> None:
    """A block that swallowed a def (or broke the syntax) must not pass unnoticed."""
    try:
        after = _function_names(exercise)
    except SyntaxError as e:
        raise ValueError(f"solutions/{name}: cutting the blocks leaves invalid Python "
                         f"(line {e.lineno}: {e.msg}); check the markers") from None
    lost = sorted(set(_function_names(solution)) - set(after))
    if lost:
        raise ValueError(f"solutions/{name}: a solution block swallows the function(s) "
                         f"{', '.join(lost)}; close the block before the next def")


def expected_exercises(src: Path) -> dict[str, str]:
    """File name -> exercise text for every ``*.py`` in ``src`` (private ``_*`` skipped)."""
    if not src.is_dir():
        raise FileNotFoundError(f"solutions folder not found: {src}")
    return {p.name: make_exercise(p.read_text(encoding="utf-8"), p.name)
            for p in sorted(src.glob("*.py")) if not p.name.startswith("_")}


def stale_files(src: Path, dst: Path) -> list[str]:
    """Names of the exercise files that are missing, out of date or have no solution."""
    expected = expected_exercises(src)
    present = {p.name for p in dst.glob("*.py")} if dst.is_dir() else set()
    problems = []
    for name, text in expected.items():
        if name not in present:
            problems.append(f"{name} (missing)")
        elif (dst / name).read_text(encoding="utf-8") != text:
            problems.append(f"{name} (differs from solutions/{name})")
    problems += [f"{name} (no solutions/{name})" for name in sorted(present - set(expected))]
    return problems


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_exercises(src: Path, dst: Path) -> list[str]:
    """Bring ``dst`` in line with ``src``; returns the names written or removed."""
    expected = expected_exercises(src)
    dst.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, text in expected.items():
        target = dst / name
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            _write_atomic(target, text)
            changed.append(name)
    for extra in sorted(p for p in dst.glob("*.py") if p.name not in expected):
        extra.unlink()
        changed.append(f"{extra.name} (removed)")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if exercises/ differs from solutions/")
    parser.add_argument("--src", type=Path, default=ROOT / "solutions")
    parser.add_argument("--dst", type=Path, default=ROOT / "exercises")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = stale_files(args.src, args.dst)
            if problems:
                print("exercises/ is stale; run `make exercises`:\n  "
                      + "\n  ".join(problems), file=sys.stderr)
                return 1
            print(f"exercises/ is up to date ({len(expected_exercises(args.src))} files)")
            return 0
        changed = write_exercises(args.src, args.dst)
        print("wrote " + ", ".join(changed) if changed else "exercises/ already up to date")
        return 0
    except (ValueError, FileNotFoundError, SyntaxError) as e:
        print(f"make_exercises: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
