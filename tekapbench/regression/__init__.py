"""Regression gates for CI: results against a committed baseline, benchmark ratios against bounds."""
from tekapbench.regression.baseline import (Baseline, ToleranceRule, baseline_path, parse_cli_rule, read_baseline,
                                            write_baseline)
from tekapbench.regression.gate import Verdict, compare, environment_notes, render
from tekapbench.regression.measured import Group, Measured, Metric, measure
from tekapbench.regression.speed import check_ratios, read_benchmarks, read_gates, render_ratios

__all__ = ["Baseline", "Group", "Measured", "Metric", "ToleranceRule", "Verdict", "baseline_path", "check_ratios",
           "compare",
           "environment_notes", "measure", "parse_cli_rule", "read_baseline", "read_benchmarks", "read_gates",
           "render", "render_ratios", "write_baseline"]
