"""Paper-style tables from result records: layouts (what goes where) and formats (how it is written)."""
from tekapbench.tables.base import Cell, Stat, Table
from tekapbench.tables.formats import FORMATS
from tekapbench.tables.layouts import LAYOUTS

__all__ = ["Cell", "FORMATS", "LAYOUTS", "Stat", "Table"]
