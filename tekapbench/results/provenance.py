"""Where and with what a result was produced."""
from __future__ import annotations

import hashlib
import platform
import socket
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import tekapbench


@lru_cache(maxsize=None)
def git_commit() -> str | None:
    """The commit of the tekapbench source tree (with '-dirty' for local changes), when it is a checkout."""
    here = Path(tekapbench.__file__).resolve().parent
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=40"], cwd=here,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def sha256_file(path: Path) -> str:
    """Fingerprint of an input file (a teacher checkpoint), stored with what was made from it."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tensors_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """Fingerprint of a model's weights themselves: every tensor's name, dtype, shape and bytes, in name
    order. Unlike a file's sha256 it does not depend on how the file was written (torch's archive layout,
    its serialization id): the same weights trained again give the same fingerprint."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


PACKAGES = ("torch", "torchvision", "torchattacks", "numpy", "scikit-learn", "pandas", "pydantic")


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def provenance(device: torch.device) -> dict[str, Any]:
    return {
        "tekapbench": tekapbench.__version__,
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "packages": package_versions(),
        "python": platform.python_version(),
        "device": str(device),
        "device_name": device_name(device),
        "torch_threads": torch.get_num_threads(),
        "host": socket.gethostname(),
    }
