"""Atomic file writes: a temporary file in the same folder, fsync, then rename over the target.

A reader never sees a half-written checkpoint or record, whatever kills the process. A temporary file that
a killed process leaves (``.<name>.<random>.tmp``) is removed by :func:`remove_leftovers` when its folder is
next worked in. ``before_commit`` is called right before the file takes its place: a writer that may no
longer write there (its claim on the run was taken over) raises, and the target stays as it was.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

Commit = Callable[[], None] | None


def _umask_mode() -> int:
    """The mode a plain open() would give a new file (mkstemp's 0600 would hide results from a lab group)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(target: Path, before_commit: Commit = None) -> Iterator[Path]:
    """Yields a temporary path to write; on success it replaces ``target``, on failure it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, _umask_mode())
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        if before_commit is not None:
            before_commit()
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_json(target: Path, data: Any, before_commit: Commit = None) -> None:
    with atomic_path(target, before_commit) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, allow_nan=True) + "\n")


def create_json(target: Path, data: Any, before_commit: Commit = None) -> None:
    """Like write_json, but fails with FileExistsError rather than replace a file: finished results
    are never overwritten."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.chmod(tmp, _umask_mode())
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(data, indent=2, allow_nan=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if before_commit is not None:
            before_commit()
        os.link(tmp, target)  # atomic, and refuses an existing target
    finally:
        os.unlink(tmp)


def save_torch(target: Path, obj: Any, before_commit: Commit = None) -> None:
    import torch  # here, not at the top: reading results (tables, status, check) needs no torch

    with atomic_path(target, before_commit) as tmp:
        # through an open file, not the path: torch.save names the archive's root folder after the file,
        # and the temporary name would make the same weights differ in their bytes (and sha256) every time
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)


def remove_leftovers(folder: Path, *, older_than: float = 0.0) -> list[Path]:
    """Removes the temporary files of writes that never finished (their process was killed) directly in
    ``folder``; only those last modified ``older_than`` seconds ago or earlier, where another live process
    may be writing there. Returns what was removed."""
    import time

    removed = []
    now = time.time()
    for path in Path(folder).glob(".*.tmp"):
        try:
            if now - path.stat().st_mtime >= older_than:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # its writer just finished, or another process removed it
            pass
    return removed
