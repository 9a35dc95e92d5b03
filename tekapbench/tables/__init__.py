"""Paper-style tables from result records: layouts (what goes where) and formats (how it is written)."""
from tekapbench.tables.base import CellRef, Stat, Table
from tekapbench.tables.formats import FORMATS
from tekapbench.tables.layouts import LAYOUTS

__all__ = ["CellRef", "FORMATS", "LAYOUTS", "Stat", "Table"]
