"""Speed gates: ratios of two benchmarks measured side by side in one pytest-benchmark run (its
``--benchmark-json`` file), never absolute times, so they hold on any machine of similar shape.

A gates file (TOML) lists the ratios::

    [[ratio]]
    name = "TeKAP step overhead"
    numerator = "test_distillation_step[kd_tekap]"   # a benchmark's name (or fullname)
    denominator = "test_distillation_step[kd]"
    max = 1.05                                       # and/or min
    stat = "min"                                     # min (default), median or mean seconds per round
    per_item = false                                 # true: divide each by extra_info["items"] first

A name may also point at seconds a benchmark measured itself and stored in its ``extra_info``:
``"test_steps@kd_seconds"``; and ``measured = "test_steps@ratio"`` gates a ratio the benchmark measured
itself, e.g. the median over rounds of two variants timed back to back in each round (the fairest side
by side on a shared machine: a slow moment slows both of a pair).
"""
from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from tabulate import tabulate

from tekapbench.errors import UsageError, validation_problems


class RatioGate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str
    numerator: str | None = None
    denominator: str | None = None
    measured: str | None = Field(None, description="a ratio a benchmark measured itself: 'name@key' of extra_info")
    min: float | None = Field(None, gt=0)
    max: float | None = Field(None, gt=0)
    stat: Literal["min", "median", "mean"] = "min"
    per_item: bool = False
    description: str = ""

    @model_validator(mode="after")
    def _has_a_bound(self) -> "RatioGate":
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if (self.measured is None) == (self.numerator is None or self.denominator is None):
            raise ValueError("give numerator and denominator, or measured (a ratio stored by a benchmark)")
        if self.measured is not None and "@" not in self.measured:
            raise ValueError("measured names a benchmark's extra_info entry: 'name@key'")
        return self

    @property
    def references(self) -> list[str]:
        return [self.measured] if self.measured else [self.numerator, self.denominator]

    def source(self) -> str:
        if self.measured:
            return self.measured
        return f"{self.numerator} / {self.denominator} ({self.stat}" + (", per item)" if self.per_item else ")")

    def bound(self) -> str:
        return " and ".join(([f">= {self.min:g}"] if self.min is not None else [])
                            + ([f"<= {self.max:g}"] if self.max is not None else []))


class GatesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    ratio: list[RatioGate] = Field(min_length=1)


def read_gates(path: Path) -> list[RatioGate]:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such speed-gates file") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{path}: unreadable speed-gates file ({exc})") from None
    try:
        return GatesFile.model_validate(data).ratio
    except ValidationError as exc:
        problems = validation_problems(exc)
        raise UsageError(f"{path}: {problems} (keys of each [[ratio]]: name, numerator, denominator, min, max, "
                         f"stat = min|median|mean, per_item, description)") from None


def read_benchmarks(path: Path) -> dict[str, dict]:
    """The benchmarks of a ``pytest --benchmark-json`` file, by name and by fullname."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        found = {}
        for bench in data["benchmarks"]:
            found[bench["name"]] = found[bench["fullname"]] = bench
    except FileNotFoundError:
        raise UsageError(f"{path}: no such benchmark file; write one with "
                         f"`pytest tests/benchmarks --benchmark-enable --benchmark-json {path}`") from None
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UsageError(f"{path}: not a pytest-benchmark JSON file ({type(exc).__name__}: {exc})") from None
    if not found:
        raise UsageError(f"{path}: holds no measured benchmark (were they run with --benchmark-enable?)")
    return found


@dataclass(frozen=True)
class RatioVerdict:
    gate: RatioGate
    value: float | None
    status: str  # ok, failed, missing
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status != "ok"


def _split(reference: str) -> tuple[str, str | None]:
    name, _, key = reference.partition("@")
    return name, key or None


def _stored(benchmarks: dict[str, dict], name: str, key: str) -> float:
    """A number a benchmark stored in its extra_info."""
    value = benchmarks[name].get("extra_info", {}).get(key)
    if not isinstance(value, (int, float)):
        raise KeyError(f"{name} has no number extra_info[{key!r}]")
    return value


def _seconds(benchmarks: dict[str, dict], reference: str, gate: RatioGate) -> float:
    name, key = _split(reference)
    bench = benchmarks[name]
    seconds = bench["stats"][gate.stat] if key is None else _stored(benchmarks, name, key)
    if gate.per_item:
        items = bench.get("extra_info", {}).get("items")
        if not items:
            raise KeyError(f"{bench['name']} has no extra_info['items'] to divide by (per_item = true)")
        seconds /= items
    return seconds


def check_ratios(gates: list[RatioGate], benchmarks: dict[str, dict]) -> list[RatioVerdict]:
    verdicts = []
    for gate in gates:
        absent = [n for n in gate.references if _split(n)[0] not in benchmarks]
        if absent:
            verdicts.append(RatioVerdict(gate, None, "missing", f"not measured: {', '.join(absent)}"))
            continue
        try:
            if gate.measured:
                value = _stored(benchmarks, *_split(gate.measured))
            else:
                value = _seconds(benchmarks, gate.numerator, gate) / _seconds(benchmarks, gate.denominator, gate)
        except (KeyError, ZeroDivisionError) as exc:
            verdicts.append(RatioVerdict(gate, None, "missing", str(exc).strip("'\"")))
            continue
        ok = math.isfinite(value) and (gate.min is None or value >= gate.min) and (gate.max is None or value <= gate.max)
        verdicts.append(RatioVerdict(gate, value, "ok" if ok else "failed"))
    return verdicts


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def render_ratios(verdicts: list[RatioVerdict]) -> str:
    rows = [[v.status.upper() if v.failed else v.status, v.gate.name, _number(v.value),
             v.gate.bound(), v.gate.source(), v.detail] for v in verdicts]
    failed = sum(v.failed for v in verdicts)
    return (tabulate(rows, headers=["status", "ratio", "measured", "required", "from (seconds or a measured ratio)", "note"],
                     tablefmt="simple", disable_numparse=True)
            + f"\n{len(verdicts)} speed ratio(s): {len(verdicts) - failed} ok, {failed} failed")
