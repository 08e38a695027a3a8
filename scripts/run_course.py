"""Run every chapter notebook headless, in order, and report one line per chapter.

    python scripts/run_course.py                    # all of notebooks/*.ipynb
    python scripts/run_course.py ch01 ch05          # only the chapters whose names start so
    MINILLAMA_PROFILE=cpu python scripts/run_course.py --timeout 300

Each notebook runs in a fresh kernel of *this* Python environment (so the venv's
torch and minillama), with the notebook's folder as working directory. The executed
copies, outputs included (also of a failed run, up to the failing cell), are written
to ``build/notebooks/``. Exit status 1 if any chapter failed or none was found.

``MINILLAMA_PROFILE`` passes through to the notebooks (``cpu`` or ``full``; unset, the
notebooks pick ``full`` on CUDA and ``cpu`` otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
# Figures go into the saved outputs as PNGs: a non-interactive backend, unlike MPLBACKEND=Agg
# (which is right for plain scripts but would leave the executed notebooks without plots).
KERNEL_MPLBACKEND = "module://matplotlib_inline.backend_inline"


class _ThisPython(KernelSpecManager):
    """Whatever kernel a notebook names, start ipykernel with the running interpreter."""

    def get_kernel_spec(self, kernel_name):
        return KernelSpec(
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                  "--IPKernelApp.log_level=ERROR"],   # hush the per-kernel start-up banner
            display_name=f"Python 3 ({sys.prefix})", language="python",
            env={"MPLBACKEND": KERNEL_MPLBACKEND})


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: float) -> None:
    """Run ``nb`` in place (outputs stored in it); raise on the first failing cell.

    ``timeout`` bounds the whole notebook, in seconds. Raises ``CellExecutionError``
    when a cell fails and ``TimeoutError`` when time runs out.
    """
    km = AsyncKernelManager(kernel_spec_manager=_ThisPython())
    client = NotebookClient(nb, km=km, timeout=None, allow_errors=False, record_timing=False,
                            resources={"metadata": {"path": str(cwd)}})

    async def run():
        task = asyncio.ensure_future(client.async_execute())
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)   # let it clean up
                raise TimeoutError(f"timed out after {timeout:g} s")
            task.result()                               # re-raise a failing cell
        finally:
            if km.has_kernel:                           # a cancelled run may leave it up
                await km.shutdown_kernel(now=True)

    asyncio.run(run())


def summarise(error: BaseException, nb: nbformat.NotebookNode | None = None,
              limit: int = 160) -> str:
    """One line naming what went wrong (the exception, not the whole traceback)."""
    if isinstance(error, CellExecutionError):
        text = f"{error.ename}: {error.evalue}"
        failed = [i for i, c in enumerate(nb.cells if nb else [], start=1)
                  if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
        if failed:
            text = f"cell {failed[0]}: {text}"
    else:
        text = str(error) or type(error).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def write_atomic(nb: nbformat.NotebookNode, path: Path) -> None:
    """Write a notebook via a temporary file + rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            nbformat.write(nb, f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def run_course(notebooks: list[Path], out_dir: Path, timeout: float) -> int:
    """Run the notebooks in order, print a line each and a summary; return the failures."""
    width = max(len(p.stem) for p in notebooks)
    failures, started = 0, time.perf_counter()
    for path in notebooks:
        print(f"{path.stem:<{width}} ... ", end="", flush=True)
        t0 = time.perf_counter()
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as e:                          # unreadable JSON, bad schema
            failures += 1
            print(f"FAILED (cannot read notebook: {summarise(e)})", flush=True)
            continue
        try:
            execute(nb, path.parent, timeout)
            status = "ok"
        except Exception as e:
            failures += 1
            status = f"FAILED ({summarise(e, nb)})"
        write_atomic(nb, out_dir / path.name)
        print(f"{status} {time.perf_counter() - t0:.1f} s", flush=True)
    total = time.perf_counter() - started
    ok = len(notebooks) - failures
    print(f"{len(notebooks)} notebooks: {ok} ok, {failures} failed in {total:.1f} s "
          f"(executed copies in {out_dir})")
    return failures


def select(folder: Path, prefixes: list[str]) -> list[Path]:
    notebooks = sorted(folder.glob("*.ipynb"))
    if prefixes:
        notebooks = [p for p in notebooks if any(p.stem.startswith(x) for x in prefixes)]
    return notebooks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*",
                        help="run only notebooks whose names start with these (e.g. ch01)")
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks",
                        help="folder of the notebooks (default: notebooks/)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "notebooks",
                        help="where the executed copies go (default: build/notebooks/)")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds allowed for each notebook (default: 1800)")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error(f"--timeout must be positive, got {args.timeout:g}")
    if not args.notebooks.is_dir():
        print(f"run_course: no folder {args.notebooks}", file=sys.stderr)
        return 1
    notebooks = select(args.notebooks, args.chapters)
    if not notebooks:
        wanted = f" matching {' '.join(args.chapters)}" if args.chapters else ""
        print(f"run_course: no notebooks{wanted} in {args.notebooks}", file=sys.stderr)
        return 1
    profile = os.environ.get("MINILLAMA_PROFILE")
    print(f"profile: {profile} (MINILLAMA_PROFILE)" if profile else
          "profile: chosen by each notebook (MINILLAMA_PROFILE unset)")
    return 1 if run_course(notebooks, args.out, args.timeout) else 0


if __name__ == "__main__":
    sys.exit(main())
