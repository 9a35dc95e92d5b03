"""Compares measured results with a baseline: one verdict per (group, metric), failing on a regression
beyond tolerance and on anything the baseline has that the results lack."""
from __future__ import annotations

from dataclasses import dataclass

from tabulate import tabulate

from tekapbench.regression.baseline import Baseline, ToleranceRule
from tekapbench.regression.measured import Group, Measured, Metric
from tekapbench.tables.base import Stat

FAILING = ("regressed", "missing")
ORDER = {"regressed": 0, "missing": 1, "improved": 2, "new": 3, "ok": 4}


@dataclass(frozen=True)
class Verdict:
    group: Group
    metric: str
    status: str  # regressed, missing, improved, new, ok
    baseline: Metric | None = None
    current: Metric | None = None
    change: float | None = None  # current - baseline, on the seeds both have
    allowed: float | None = None  # the drop that still passes
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status in FAILING


def judge(group: Group, name: str, base: Metric, current: Metric | None, rule: ToleranceRule) -> Verdict:
    if current is None or not current.values:
        return Verdict(group, name, "missing", base, current, detail="no value in the results")
    absent = sorted(set(base.values) - set(current.values))
    if absent:
        return Verdict(group, name, "missing", base, current,
                       detail=f"seed{'s' if len(absent) > 1 else ''} {', '.join(map(str, absent))} not in the results")
    seeds = sorted(base.values)
    base_values = [base.values[s] for s in seeds]
    base_stat = Stat.of(base_values)
    change = Stat.of(current.values[s] for s in seeds).mean - base_stat.mean
    allowed = rule.allowed_drop(base_stat.std)
    gain = change if base.higher_is_better else -change
    status = "regressed" if gain < -allowed - 1e-9 else "improved" if gain > allowed + 1e-9 else "ok"
    extra = sorted(set(current.values) - set(base.values))
    detail = f"seeds {', '.join(map(str, extra))} not in the baseline, not compared" if extra else ""
    return Verdict(group, name, status, base, current, change, allowed, detail)


def compare(baseline: Baseline, measured: Measured, *, suites: list[str] | None = None,
            extra_rules: list[ToleranceRule] = ()) -> list[Verdict]:
    """Every metric of every baseline group (of ``suites``, when given) against the results."""
    verdicts = []
    for group, metrics in baseline.groups.items():
        if suites is not None and group.suite not in suites:
            continue
        found = measured.groups.get(group, {})
        for name, base in metrics.items():
            verdicts.append(judge(group, name, base, found.get(name), baseline.rule_for(group, name, extra_rules)))
    for group, metrics in measured.groups.items():
        known = baseline.groups.get(group, {})
        verdicts += [Verdict(group, name, "new", current=m, detail="not in the baseline")
                     for name, m in metrics.items() if name not in known]
    return sorted(verdicts, key=lambda v: (ORDER[v.status], v.group, v.metric))


def environment_notes(baseline: Baseline, measured: Measured) -> list[str]:
    """Where the results were measured differently from the baseline (another CPU, thread count, torch):
    on a CPU the same code then need not give the same numbers."""
    notes = []
    for suite, now in measured.environment.items():
        before = baseline.environment.get(suite)
        if before is not None and sorted(before) != sorted(now):
            notes.append(f"{suite}: the baseline was measured on {'; '.join(before) or '?'}, these results on "
                         f"{'; '.join(now) or '?'}: differences may come from the environment, not the code")
    return notes


def _stat(metric: Metric | None) -> str:
    stat = Stat.of(metric.values.values()) if metric is not None else None
    if stat is None:
        return "—"
    return f"{stat.mean:.2f}" + (f" ± {stat.std:.2f}" if stat.std is not None else "") + f" (n={stat.n})"


def render(verdicts: list[Verdict], *, show_all: bool = False) -> str:
    """A table of the verdicts that need attention (all of them with ``show_all``) and a summary line."""
    shown = [v for v in verdicts if show_all or v.status != "ok"]
    lines = []
    if shown:
        rows = [[v.status.upper() if v.failed else v.status, str(v.group), v.metric, _stat(v.baseline),
                 _stat(v.current), "" if v.change is None else f"{v.change:+.2f}",
                 "" if v.allowed is None else f"{v.allowed:.2f}", v.detail] for v in shown]
        headers = ["status", "group (suite · dataset · pair · row)", "metric", "baseline", "current", "change",
                   "tolerated drop", "note"]
        lines.append(tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True))
    counts = {s: sum(v.status == s for v in verdicts) for s in ORDER}
    groups = len({v.group for v in verdicts})
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines.append(f"{len(verdicts)} metric(s) in {groups} group(s): {summary or 'nothing to compare'}")
    return "\n".join(lines)
