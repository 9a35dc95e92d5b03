"""Table layouts: one file each, registered in LAYOUTS (what goes in which row and column)."""
from tekapbench.registry import import_submodules
from tekapbench.tables.base import LAYOUTS

import_submodules(__name__)

__all__ = ["LAYOUTS"]
