"""Turn a percent-format Python script into a Jupyter notebook (how chapters are authored).

The script is split into cells at lines starting with ``# %%``:

    # %% [markdown]
    # # Chapter 1: anatomy of a LLaMA block
    # Text for the reader, each line a comment.

    # %%
    import torch                       # a code cell: kept as it is

In a markdown cell every line must be a comment; the leading ``# `` (or a lone ``#``)
is removed. Text after ``# %%`` on a code cell's marker line is a title and is dropped.
Anything before the first marker becomes a code cell. Blank lines around a cell are
trimmed and empty cells dropped. Cell ids are numbered, so converting the same script
twice gives the same file.

    python scripts/py2nb.py src.py out.ipynb              # convert
    python scripts/py2nb.py src.py out.ipynb --execute    # convert, run, keep the outputs

``--execute`` runs the notebook in this Python environment with the output's folder
as working directory (see ``run_course.py``) and writes it only if every cell passes.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

MARKER = re.compile(r"^# %%(?P<rest>.*)$")
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def _trim(lines: list[str]) -> str:
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return "\n".join(lines)


def _markdown_text(lines: list[str], first_lineno: int, filename: str) -> str:
    text = []
    for lineno, line in enumerate(lines, start=first_lineno):
        if line.strip() == "" or line.rstrip() == "#":
            text.append("")
        elif line.startswith("# "):
            text.append(line[2:])
        else:
            raise ValueError(f"{filename}:{lineno}: a markdown cell may hold only '# ' "
                             f"comment lines, got {line!r}")
    return _trim(text)


def script_to_notebook(source: str, filename: str = "<script>") -> nbformat.NotebookNode:
    """The notebook for the percent-format ``source`` (``filename`` only names errors)."""
    cells, kind, body, start = [], "code", [], 1

    def close():
        if kind == "markdown":
            text = _markdown_text(body, start, filename)
            cell = new_markdown_cell(text) if text else None
        else:
            text = _trim(body)
            cell = new_code_cell(text) if text else None
        if cell is not None:
            cell["id"] = f"cell-{len(cells)}"
            cells.append(cell)

    for lineno, line in enumerate(source.splitlines(), start=1):
        m = MARKER.match(line)
        if m is None:
            body.append(line)
            continue
        close()
        rest = m["rest"].strip()
        if rest.startswith("[") and rest != "[markdown]":
            raise ValueError(f"{filename}:{lineno}: unknown cell type {rest!r}; "
                             f"use '# %%' or '# %% [markdown]'")
        kind, body, start = ("markdown" if rest == "[markdown]" else "code"), [], lineno + 1
    close()
    if not cells:
        raise ValueError(f"{filename}: no cells found (is it empty?)")
    nb = new_notebook(cells=cells, metadata={"kernelspec": dict(KERNELSPEC),
                                             "language_info": {"name": "python"}})
    nbformat.validate(nb)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="percent-format Python script")
    parser.add_argument("out", type=Path, help="the .ipynb to write")
    parser.add_argument("--execute", action="store_true",
                        help="run the notebook and store its outputs")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds allowed for --execute (default: 1800)")
    args = parser.parse_args(argv)
    if args.out.suffix != ".ipynb":
        parser.error(f"the output must end in .ipynb, got {args.out}")
    try:
        nb = script_to_notebook(args.src.read_text(encoding="utf-8"), str(args.src))
    except (OSError, ValueError) as e:
        print(f"py2nb: {e}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run_course import execute, summarise, write_atomic

    if args.execute:
        try:
            execute(nb, args.out.parent.resolve(), args.timeout)
        except Exception as e:
            print(f"py2nb: {args.src} failed to run: {summarise(e, nb)}; "
                  f"{args.out} not written", file=sys.stderr)
            return 1
    write_atomic(nb, args.out)
    print(f"wrote {args.out} ({len(nb.cells)} cells{', executed' if args.execute else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
