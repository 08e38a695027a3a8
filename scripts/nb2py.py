"""Turn a notebook back into the percent-format script ``py2nb.py`` reads (for editing).

    python scripts/nb2py.py notebooks/ch07_lora.ipynb /tmp/ch07_lora.py
    # edit /tmp/ch07_lora.py, then
    python scripts/py2nb.py /tmp/ch07_lora.py notebooks/ch07_lora.ipynb --execute

Outputs are dropped; ``py2nb.py`` of the script gives the same cells back.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat


def notebook_to_script(nb) -> str:
    parts = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            lines = [f"# {line}" if line.strip() else "#" for line in cell.source.splitlines()]
            parts.append("# %% [markdown]\n" + "\n".join(lines))
        elif cell.cell_type == "code":
            parts.append("# %%\n" + cell.source)
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("out", type=Path, help="the .py script to write")
    args = parser.parse_args(argv)
    try:
        nb = nbformat.read(args.notebook, as_version=4)
    except (OSError, ValueError) as e:
        print(f"nb2py: cannot read {args.notebook}: {e}", file=sys.stderr)
        return 1
    args.out.write_text(notebook_to_script(nb), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
