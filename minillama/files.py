"""Saving files so that a crash never leaves half of one: atomic, kill-safe writes.

Checkpoints, adapters, tokenizers, training states and reference cards are all saved
through the two context managers here, and read back with ``recover`` first:

* **Writes are atomic, and survive a kill.** Files are first written into a temporary
  sibling of the target and flushed to disk (``fsync``); only a complete result is
  moved into place with ``os.replace`` (a rename, which the operating system does all
  at once). A directory cannot be renamed over a non-empty one, so replacing it takes
  two renames: the old one goes aside to ``.NAME.old``, the new one into place. A
  process killed between the two leaves the target missing but ``.NAME.old`` complete;
  every reader (``recover``) and the next save move it back first. Leftovers of a
  killed save (``.NAME.tmp-*``, ``.NAME.old``) are removed by the next save of ``NAME``
  (one writer per target at a time).
* **Each step of a save calls ``crash_point``**, which does nothing; the fault-injection
  test (``tests/test_atomic_saves.py``) replaces it to kill the process at that step.

This module knows nothing of models: it moves bytes and names safely.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path


# ----------------------------------------------------------------------------- the steps
def crash_point(step: str):
    """Called at each step of a save; does nothing. Fault-injection tests replace it with
    one that kills the process at a chosen step (``tests/test_atomic_saves.py``)."""


def _usual_mode(base: int) -> int:
    """The permissions a plain open()/mkdir() would give (temp files start private)."""
    umask = os.umask(0)
    os.umask(umask)
    return base & ~umask


def _fsync(path: Path):
    """Flush a file's bytes, or a directory's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _aside(path: Path) -> Path:
    return path.parent / f".{path.name}.old"


def _target(path) -> Path:
    """``path`` made absolute, refusing the working directory and its parents."""
    path = Path(path).absolute()
    cwd = Path.cwd()
    if path.resolve() in (cwd, *cwd.parents):
        raise ValueError(f"cannot save into {path}: it is the working directory or one of its "
                         f"parents, which a save replaces whole; name a subdirectory, "
                         f"e.g. out/")
    return path


def recover(path) -> Path:
    """Finish the swap of a directory save that was killed between its two renames.

    If ``path`` is missing and ``.NAME.old`` beside it holds the previous save, move it
    back. Loaders call this before they read.
    """
    path = Path(path)
    aside = _aside(path)
    if not path.exists() and (aside / "ckpt").is_dir():
        os.replace(aside / "ckpt", path)
        shutil.rmtree(aside, ignore_errors=True)
        _fsync(path.parent)
    return path


def _remove_leftovers(path: Path):
    """Delete what a killed save of ``path`` left behind (temporary copies, the aside)."""
    recover(path)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    shutil.rmtree(_aside(path), ignore_errors=True)


# ----------------------------------------------------------------------------- saving
@contextlib.contextmanager
def atomic_directory(path, replaces: tuple[str, ...] = ()):
    """Yield an empty temporary directory; on success it replaces ``path``.

    Other files already in ``path`` (a tokenizer, a README) are carried over, except
    those matching the glob patterns ``replaces`` (the files this kind of save writes),
    so no stale shard survives a re-save. At every instant ``path`` (or, between the two
    renames, ``.NAME.old``) holds a whole save.
    """
    path = _target(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        crash_point("written")
        if path.exists():
            for entry in path.iterdir():
                keep = not any(entry.match(p) for p in replaces)
                if keep and not (tmp / entry.name).exists():
                    copy = shutil.copytree if entry.is_dir() else shutil.copy2
                    copy(entry, tmp / entry.name)
        os.chmod(tmp, _usual_mode(0o777))
        for f in tmp.rglob("*"):
            if f.is_file():
                os.chmod(f, _usual_mode(0o666))
                _fsync(f)
        _fsync(tmp)
        crash_point("synced")
        if path.exists():
            aside = _aside(path)
            aside.mkdir()
            os.replace(path, aside / "ckpt")     # move the old save aside...
            _fsync(path.parent)
            crash_point("aside")
            os.replace(tmp, path)                # ...and the new one into place
            _fsync(path.parent)
            crash_point("swapped")
            shutil.rmtree(aside)
        else:
            os.replace(tmp, path)
            _fsync(path.parent)
        crash_point("done")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)   # no-op after a successful replace


@contextlib.contextmanager
def atomic_file(path):
    """Yield a temporary file path beside ``path``; on success it replaces ``path``."""
    path = _target(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; expected a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        crash_point("written")
        os.chmod(tmp, _usual_mode(0o666))
        _fsync(Path(tmp))
        crash_point("synced")
        os.replace(tmp, path)
        _fsync(path.parent)
        crash_point("done")
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ----------------------------------------------------------------------------- JSON
def write_json(obj, path):
    Path(path).write_text(json.dumps(obj, indent=2) + "\n")


def read_json(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
