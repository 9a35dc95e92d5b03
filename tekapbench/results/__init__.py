"""Result records: one JSON per finished run, written atomically, never overwritten."""
from tekapbench.results.store import ResultStore

__all__ = ["ResultStore"]
