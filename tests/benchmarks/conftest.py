"""Figures derived from the benchmarks (side-by-side ratios, images per second), printed at the end of the
run beside pytest-benchmark's timing tables."""
from __future__ import annotations

import pytest

_RATIOS = pytest.StashKey[dict]()


@pytest.fixture
def report_ratio(request):
    """``report_ratio(name, value, note)`` files a figure measured in this session for the summary."""
    ratios = request.config.stash.setdefault(_RATIOS, {})

    def report(name: str, value: float, note: str) -> None:
        ratios[name] = (value, note)

    return report


def pytest_terminal_summary(terminalreporter, config):
    ratios = config.stash.get(_RATIOS, {})
    if ratios:
        terminalreporter.section("benchmark figures (measured side by side in this run)")
        for name, (value, note) in ratios.items():
            shown = f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
            terminalreporter.write_line(f"{name}: {shown}  ({note})")
