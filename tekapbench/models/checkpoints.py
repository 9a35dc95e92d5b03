"""The one place tekapbench reads ``.pt`` files: only plain tensor data is ever unpickled.

A ``torch.save`` file is a pickle, and a pickle may ask to call any function while it is read: a crafted
``checkpoint.pt`` dropped in a shared results folder, or a "teacher checkpoint" from the internet, would run
its code in the next ``tekapbench run``. So every file goes through ``torch.load(..., weights_only=True)``,
which builds nothing but tensors, numbers, strings, lists, tuples and dicts; a file that asks for anything
else is refused with :class:`~tekapbench.errors.UnsafeFileError` (exit code 2), never loaded with
``weights_only=False``.

- :func:`read_state_dict` / :func:`read_weights`: model weights in the formats the public code bases write
  (see :data:`ACCEPTED`), with the sha256 of exactly the bytes that were loaded;
- :func:`read_torch_file`: any plain-data ``torch.save`` file (the trainer's resume checkpoint);
- :func:`sha256_of`: a file's fingerprint, read in chunks.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tekapbench.results.provenance import sha256_file
from tekapbench.errors import UnsafeFileError, UsageError

StateDict = dict[str, torch.Tensor]

# where the public code bases keep the state dict inside a checkpoint dict, in the order tried
STATE_DICT_KEYS = ("model", "state_dict", "net")

ACCEPTED = (
    "Accepted: a state dict (parameter name -> tensor, as torchvision's weight files), or a dict holding one "
    "under 'model' (RepDistiller/CRD/DKD zoo checkpoints, tekapbench's model.pt), 'state_dict' or 'net' "
    "(mdistiller and others), with or without DataParallel's 'module.' prefix; other entries may be numbers, "
    "strings, tensors, lists or dicts. Save weights with torch.save(model.state_dict(), path) or "
    "torch.save({'model': model.state_dict()}, path), never torch.save(model, path)."
)

_CHUNK = 1 << 20
_GLOBAL = re.compile(r"GLOBAL (\S+)")


def sha256_of(path: Path | str) -> str:
    """sha256 of a file's bytes, read in chunks (the one fingerprint of provenance)."""
    return sha256_file(Path(path))


def _numpy_globals() -> list[tuple[Any, str]]:
    """numpy scalars and arrays (e.g. a ``best_acc`` saved as np.float64 next to the weights): plain data,
    under the module names numpy 1 and numpy 2 pickle them with."""
    import numpy as np

    scalar = np.float64(0).__reduce__()[0]  # numpy.(_)core.multiarray.scalar
    reconstruct = np.zeros(0).__reduce__()[0]  # numpy.(_)core.multiarray._reconstruct
    # a dtype is rebuilt by calling numpy.dtype, then set up by __setstate__ of its class (Float64DType, ...)
    dtype_classes = {type(np.dtype(code)) for code in np.typecodes["All"]}
    return [(np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype"),
            *((cls, f"numpy.dtypes.{cls.__name__}") for cls in dtype_classes),
            *((scalar, f"{m}.scalar") for m in ("numpy.core.multiarray", "numpy._core.multiarray")),
            *((reconstruct, f"{m}._reconstruct") for m in ("numpy.core.multiarray", "numpy._core.multiarray"))]


def read_torch_file(path: Path | str, what: str, *, map_location: Any = "cpu", accepted: str = ACCEPTED,
                    numpy: bool = False) -> tuple[Any, str]:
    """The content of a ``torch.save`` file of plain data, and the sha256 of the bytes it was read from.

    ``what`` starts every message (e.g. "teacher checkpoint of resnet56"); ``accepted`` ends the message
    of a refused file (what the caller reads, or how to get rid of the file); ``numpy``: numpy scalars and
    arrays are plain data too. The file is read once, so the fingerprint is of exactly what was loaded.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what}: {path} is a folder, not a checkpoint file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{what}: checkpoint {path} does not exist") from None
    except OSError as exc:
        raise UsageError(f"{what}: cannot read {path} ({exc.strerror or exc})") from None
    if not data:
        raise UsageError(f"{what}: {path} is empty")
    sha256 = hashlib.sha256(data).hexdigest()
    allowed = torch.serialization.safe_globals(_numpy_globals()) if numpy else contextlib.nullcontext()
    try:
        with allowed:
            content = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "weights only" not in text.lower() and "weightsunpickler" not in text.lower():
            raise UsageError(f"{what}: {path} is not a readable PyTorch checkpoint ({_first_line(exc)})") from None
        asked = _GLOBAL.search(text)
        name = asked.group(1).rstrip(".,") if asked else ""
        name = name if "." in name else f"builtins.{name}"  # torch's message drops the module of a builtin
        detail = (f"it asks for {name}, which is not tensor data" if asked else
                  "it is not plain tensor data: damaged, another format, or a pickle of arbitrary objects")
        # torch's own message advises weights_only=False: never, for a file nobody can vouch for
        raise UnsafeFileError(
            f"{what}: refused to load {path}: unpickling it could run arbitrary code ({detail}); tekapbench "
            f"only unpickles plain tensor data (torch.load with weights_only=True). {accepted}",
            asks_for=name if asked else None) from None
    except Exception as exc:  # a truncated zip, another format
        raise UsageError(f"{what}: {path} is not a readable PyTorch checkpoint ({_first_line(exc)})") from None
    return content, sha256


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_state_dict(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and bool(obj)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def state_dict_in(content: Any) -> StateDict | None:
    """The state dict in a checkpoint's content (see :data:`ACCEPTED`), DataParallel's ``module.`` prefix
    stripped; None when there is none."""
    state = content if _is_state_dict(content) else None
    if state is None and isinstance(content, Mapping):
        state = next((content[key] for key in STATE_DICT_KEYS if _is_state_dict(content.get(key))), None)
    if state is None:
        return None
    state = dict(state)
    while all(k.startswith("module.") for k in state):  # DataParallel / DistributedDataParallel, maybe nested
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


@dataclass(frozen=True)
class Weights:
    state_dict: StateDict
    sha256: str  # of the file's bytes, exactly those loaded
    path: Path


def read_weights(path: Path | str, what: str) -> Weights:
    """A model's weights from a checkpoint in any accepted format (:data:`ACCEPTED`), on the CPU."""
    path = Path(path)
    content, sha256 = read_torch_file(path, what, numpy=True)
    state = state_dict_in(content)
    if state is None:
        found = (f"a dict with keys {', '.join(map(repr, list(content)[:6]))}" if isinstance(content, Mapping)
                 else type(content).__name__)
        raise UsageError(f"{what}: {path} holds no state dict (found {found}). {ACCEPTED}")
    return Weights(state, sha256, path)


def read_state_dict(path: Path | str, what: str) -> StateDict:
    """The state dict of a checkpoint in any accepted format (:data:`ACCEPTED`), on the CPU."""
    return read_weights(path, what).state_dict
