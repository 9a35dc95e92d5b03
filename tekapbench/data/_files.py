"""Helpers shared by the dataset readers: clear errors for missing and damaged files.

Every reader turns "the files are not there" and "a file cannot be read" into one readable message that
names the file and says how to fix it; the CLI shows it without a traceback (exit code 2).
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from tekapbench.errors import DataNotFoundError


class CorruptDataError(DataNotFoundError):
    """A dataset file is present but cannot be read (truncated download, wrong format).

    A subclass of :class:`DataNotFoundError`, so callers and the CLI treat it the same way (exit code 2):
    either way the data needed is not usable where it should be.
    """


def missing_files(folder: Path, names: tuple[str, ...]) -> list[Path]:
    """The files of ``names`` that are not regular files under ``folder``, in the order given."""
    return [folder / name for name in names if not (folder / name).is_file()]


def load_pickle(path: Path, *, dataset: str, fix: str) -> dict[str, Any]:
    """Read a Python-2 era dataset pickle (``encoding='latin1'``) that must hold a dict.

    Any failure (truncated file, not a pickle, not a dict) becomes a :class:`CorruptDataError` naming the
    file and ``fix``, instead of a pickle traceback.
    """
    try:
        with path.open("rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except Exception as exc:  # EOFError, UnpicklingError, ValueError, ... all mean the same to the user
        raise CorruptDataError(
            f"{dataset}: cannot read {path}: the file is corrupt or incomplete "
            f"({type(exc).__name__}: {exc}). {fix}"
        ) from exc
    if not isinstance(obj, dict):
        raise CorruptDataError(
            f"{dataset}: {path} does not hold the expected dict (found {type(obj).__name__}). {fix}"
        )
    return obj
