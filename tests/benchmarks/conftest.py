"""Side-by-side ratios of the benchmarks, printed at the end of the run (pytest-benchmark shows times)."""
from __future__ import annotations

import pytest

_RATIOS = pytest.StashKey[dict]()


@pytest.fixture
def report_ratio(request):
    """``report_ratio(name, value, target)`` files a ratio measured in this session for the summary."""
    ratios = request.config.stash.setdefault(_RATIOS, {})

    def report(name: str, value: float, target: str) -> None:
        ratios[name] = (value, target)

    return report


def pytest_terminal_summary(terminalreporter, config):
    ratios = config.stash.get(_RATIOS, {})
    if ratios:
        terminalreporter.section("benchmark ratios (measured side by side in this run)")
        for name, (value, target) in ratios.items():
            terminalreporter.write_line(f"{name}: {value:.3g}  (target {target})")
