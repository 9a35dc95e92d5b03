"""Table layouts, each one file registered in LAYOUTS."""
from tekapbench.tables import diverse  # noqa: F401  (registration)
from tekapbench.tables.base import LAYOUTS

__all__ = ["LAYOUTS"]
