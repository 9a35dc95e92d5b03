"""The baseline file a regression gate compares with (JSON, committed beside the project, one per CPU type
in results/baselines/cpu/): per group and metric the value of every seed, the environment that measured
them, and the tolerance rules, which ``--update`` keeps.

Tolerance rules are tried in order; the first whose ``metric`` (and ``group``, when given) glob
matches decides the drop that still passes: the larger of ``abs`` (in the metric's unit) and ``std``
times the baseline's sample std over seeds. A metric no rule matches tolerates the larger of its
evaluation's default (1 point for accuracies) and 2 baseline stds.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tekapbench import __version__
from tekapbench.atomic import write_json
from tekapbench.errors import UsageError, validation_problems
from tekapbench.regression.measured import Group, Measured, Metric
from tekapbench.results.provenance import cpu_name, git_commit

FORMAT = "tekapbench-baseline/1"
DEFAULT_STDS = 2.0


class ToleranceRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    metric: str = Field(description="glob over metric names, e.g. 'top1', 'adversarial:*'")
    group: str = Field("*", description="glob over 'suite · dataset · pair · row'")
    abs: float | None = Field(None, ge=0, description="tolerated drop in the metric's unit")
    std: float | None = Field(None, ge=0, description="tolerated drop in baseline seed stds")

    @model_validator(mode="after")
    def _says_something(self) -> "ToleranceRule":
        if self.abs is None and self.std is None:
            raise ValueError("give abs, std or both")
        return self

    def matches(self, group: Group, metric: str) -> bool:
        return fnmatchcase(metric, self.metric) and fnmatchcase(str(group), self.group)

    def allowed_drop(self, baseline_std: float | None) -> float:
        return max(self.abs or 0.0, (self.std or 0.0) * (baseline_std or 0.0))

    def describe(self) -> str:
        parts = ([f"{self.abs:g}"] if self.abs is not None else []) + (
            [f"{self.std:g} std"] if self.std is not None else [])
        return " or ".join(parts)


_CLI_RULE = re.compile(r"^(?P<metric>[^=]+)=(?P<values>.+)$")


def parse_cli_rule(text: str) -> ToleranceRule:
    """``--tolerance 'top1=0.5'``, ``'adversarial:*=2std'`` or ``'top1=0.5,2std'``."""
    match = _CLI_RULE.match(text.strip())
    values: dict[str, float] = {}
    try:
        for part in match.group("values").split(",") if match else ():
            part = part.strip()
            key, number = ("std", part[:-3]) if part.endswith("std") else ("abs", part)
            values[key] = float(number)
        if not match or not values:
            raise ValueError
        return ToleranceRule(metric=match.group("metric").strip(), **values)
    except (ValueError, ValidationError):
        raise UsageError(f"--tolerance {text!r}: expected METRIC=DROP, METRIC=Kstd or METRIC=DROP,Kstd with "
                         f"non-negative numbers (e.g. top1=0.5, 'adversarial:*=2std')") from None


def default_rule(metric: Metric) -> ToleranceRule:
    return ToleranceRule(metric="*", abs=metric.tolerance, std=DEFAULT_STDS)


@dataclass
class Baseline:
    groups: dict[Group, dict[str, Metric]]
    rules: list[ToleranceRule] = field(default_factory=list)
    environment: dict[str, list[str]] = field(default_factory=dict)
    made: dict[str, Any] = field(default_factory=dict)

    def rule_for(self, group: Group, metric: str, extra: list[ToleranceRule] = ()) -> ToleranceRule:
        for rule in [*extra, *self.rules]:
            if rule.matches(group, metric):
                return rule
        return default_rule(self.groups[group][metric])

    def suites(self) -> list[str]:
        return sorted({g.suite for g in self.groups})


def baseline_path(path: Path, *, writing: bool = False) -> Path:
    """``path`` itself, or for a folder of baselines the file of this machine's CPU type: CPU numbers repeat
    only on the same kind of CPU (its float kernels), so each kind has its own baseline."""
    if not path.is_dir():
        return path
    file = path / f"{re.sub(r'[^a-z0-9]+', '-', cpu_name().lower()).strip('-') or 'cpu'}.json"
    if not writing and not file.exists():
        known = ", ".join(sorted(p.name for p in path.glob("*.json"))) or "none"
        raise UsageError(f"{path}/ has no baseline for this CPU type ({cpu_name()}): expected {file.name} "
                         f"(present: {known}); record one on this machine with `tekapbench check --baseline {path} "
                         f"--update` after running the suites")
    return file


def read_baseline(path: Path) -> Baseline:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such baseline; make one from finished results with "
                         f"`tekapbench check --results RESULTS --baseline {path} --update`") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: unreadable baseline ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise UsageError(f"{path}: key 'format' is {found!r}; a tekapbench baseline has {FORMAT!r}")
    rules = []
    for i, raw in enumerate(data.get("tolerances", [])):
        try:
            rules.append(ToleranceRule.model_validate(raw))
        except ValidationError as exc:
            problems = validation_problems(exc, whole="rule")
            raise UsageError(f"{path}: tolerances[{i}]: {problems} (keys: metric, group, abs, std)") from None
    groups: dict[Group, dict[str, Metric]] = {}
    for i, raw in enumerate(data.get("groups", [])):
        try:
            group = Group(raw["suite"], raw["dataset"], raw["pair"], raw["row"])
            groups[group] = {name: Metric.from_dict(m) for name, m in raw["metrics"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UsageError(f"{path}: groups[{i}]: malformed ({type(exc).__name__}: {exc}); rewrite it with "
                             f"--update") from None
    return Baseline(groups, rules, data.get("environment", {}), data.get("made", {}))


def write_baseline(path: Path, measured: Measured, *, keep: Baseline | None, suites: list[str] | None) -> Baseline:
    """Writes the measured groups as the new baseline, atomically. With ``keep`` (the file's previous
    content) its tolerance rules stay, and so do its groups of suites other than ``suites``."""
    groups = {g: m for g, m in measured.groups.items() if m}
    environment = dict(measured.environment)
    if keep is not None and suites is not None:
        groups.update({g: m for g, m in keep.groups.items() if g.suite not in suites})
        environment = {**{s: e for s, e in keep.environment.items() if s not in suites}, **environment}
    baseline = Baseline(dict(sorted(groups.items())), keep.rules if keep else [], dict(sorted(environment.items())),
                        {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "tekapbench": __version__,
                         "git_commit": git_commit()})
    write_json(Path(path), {
        "format": FORMAT,
        "made": baseline.made,
        "environment": baseline.environment,
        "tolerances": [r.model_dump(exclude_none=True, exclude_defaults=False) for r in baseline.rules],
        "groups": [{**g.to_dict(), "metrics": {name: m.to_dict() for name, m in sorted(ms.items())}}
                   for g, ms in baseline.groups.items()],
    })
    return baseline
