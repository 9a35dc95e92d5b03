"""Helpers shared by the dataset readers: clear errors for missing and damaged files.

Every reader turns "the files are not there" and "a file cannot be read" into one readable message that
names the file and says how to fix it; the CLI shows it without a traceback (exit code 2).
"""
from __future__ import annotations

import _compat_pickle
import codecs
import pickle
from pathlib import Path
from typing import Any

from tekapbench.errors import DataNotFoundError, UnsafeFileError


class CorruptDataError(DataNotFoundError):
    """A dataset file is present but cannot be read (truncated download, wrong format).

    A subclass of :class:`DataNotFoundError`, so callers and the CLI treat it the same way (exit code 2):
    either way the data needed is not usable where it should be.
    """


class UnsafeDataError(CorruptDataError, UnsafeFileError):
    """A dataset pickle asks for more than plain data (dicts, lists, strings, numbers, numpy arrays): refused
    without running what it asks for."""


def _numpy_classes() -> dict[tuple[str, str], Any]:
    """What a pickle of numpy arrays needs, under the names numpy 1, numpy 2 and Python 2 pickles use:
    functions that only build an array, a dtype, a scalar or a bytes object from plain values."""
    import numpy as np

    reconstruct = np.zeros(0).__reduce__()[0]  # builds an empty ndarray of a dtype; the data comes after
    scalar = np.float64(0).__reduce__()[0]  # a numpy scalar from its dtype and bytes
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how Python 3 pickles bytes (an array's raw data) at protocol 2
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[module, "_reconstruct"] = reconstruct
        allowed[module, "scalar"] = scalar
    return allowed


class _Refused(pickle.UnpicklingError):
    def __init__(self, asked: str):
        super().__init__(f"the pickle asks for {asked}")
        self.asked = asked


class _PlainDataUnpickler(pickle.Unpickler):
    """Builds plain data and numpy arrays only; any other class or function a pickle names (os.system,
    builtins.eval, ...) is refused before it can be called."""

    def __init__(self, file, **kwargs):
        super().__init__(file, **kwargs)
        self._allowed = _numpy_classes()

    def find_class(self, module: str, name: str) -> Any:
        found = self._allowed.get((module, name))
        if found is None:  # named as Python 3 knows it (a protocol-2 pickle says __builtin__ for builtins)
            raise _Refused(f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused(f"persistent id {pid!r}")


def missing_files(folder: Path, names: tuple[str, ...]) -> list[Path]:
    """The files of ``names`` that are not regular files under ``folder``, in the order given."""
    return [folder / name for name in names if not (folder / name).is_file()]


def load_pickle(path: Path, *, dataset: str, fix: str) -> dict[str, Any]:
    """Read a Python-2 era dataset pickle (``encoding='latin1'``) that must hold a dict.

    Only plain data is built (dicts, lists, strings, numbers, numpy arrays: all the official CIFAR files
    hold); a pickle that names any other class or function is refused with :class:`UnsafeDataError`,
    since unpickling it could run arbitrary code. Any other failure (truncated file, not a pickle, not a
    dict) becomes a :class:`CorruptDataError` naming the file and ``fix``, instead of a pickle traceback.
    """
    try:
        with path.open("rb") as f:
            obj = _PlainDataUnpickler(f, encoding="latin1").load()
    except _Refused as exc:
        raise UnsafeDataError(
            f"{dataset}: refused to read {path}: unpickling it could run arbitrary code (it asks for "
            f"{exc.asked}, which is not plain data; the official files hold only dicts, lists, strings and "
            f"numpy arrays). {fix}"
        ) from None
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
