"""tekapbench: benchmark knowledge distillation and TeKAP (one teacher, several perspectives)."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tekapbench")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
