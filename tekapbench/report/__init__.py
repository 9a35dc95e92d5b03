"""A suite's results as one self-contained HTML page (`tekapbench report`)."""
from tekapbench.report.html import build_report, write_report

__all__ = ["build_report", "write_report"]
