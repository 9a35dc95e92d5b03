"""What an executor gets: the validated plan and how the command line asked to run it."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from tekapbench.registry import Registry
from tekapbench.suite.plan import SuitePlan


@dataclass(frozen=True)
class Request:
    suite_path: Path
    plan: SuitePlan
    results_root: Path
    device: str = "auto"  # as given on the command line
    force: bool = False
    threads: int | None = None
    quiet: bool = False
    workers: int | None = None  # local: worker processes (default: one per visible GPU, else one)
    detach: bool = False  # slurm: return once submitted
    slurm: dict[str, Any] = field(default_factory=dict)  # the suite's [slurm] merged with --slurm KEY=VALUE
    # --force means: train again what finished before this moment. Fixed once here, so that every worker
    # process or Slurm task of the invocation shares it (a parent passes its own to its workers).
    force_before: str | None = None
    cohorts: bool = True  # students sharing teachers, data, seed and epochs train together (engine/cohort.py)

    def __post_init__(self):
        if self.force and self.force_before is None:
            object.__setattr__(self, "force_before", datetime.now(timezone.utc).isoformat(timespec="seconds"))


Executor = Callable[[Request], None]
EXECUTORS: Registry[Executor] = Registry("executor")


def register_executor(name: str) -> Callable[[Executor], Executor]:
    """``@register_executor("local")`` on ``f(request)``, which returns when the suite is done (or, with
    ``detach``, submitted) and raises TekapbenchError for runs that failed."""
    return EXECUTORS.register(name)
