"""Which stored evaluations a table or plot reads: those of the one setting most of its runs share, so a
column never mixes numbers measured differently (ECE over 15 and over 10 bins, two attack subsets, ...)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from tekapbench.tables.base import Cell, ResultsView


def describe(settings: dict) -> str:
    """'bins=10, seed=0': settings as a note shows them."""
    return ", ".join(f"{key}={value}" for key, value in sorted(settings.items()))


@dataclass
class SharedEvaluations:
    """One evaluation's stored results per run, all measured with ``settings``."""

    name: str
    results: dict[str, dict] = field(default_factory=dict)  # run id -> the evaluation's stored results
    settings: dict | None = None
    set_aside: dict[str, int] = field(default_factory=dict)  # other settings found (described) -> runs holding them

    def value(self, run_id: str, key: str) -> float | None:
        return self.results.get(run_id, {}).get(key)

    def notes(self) -> list[str]:
        """What was left out, so that a reader knows another setting exists."""
        return [f"{self.name} also stored with {other} for {n} run(s): not shown"
                for other, n in sorted(self.set_aside.items())]


def shared_evaluations(cells: list[Cell], results: ResultsView, name: str) -> SharedEvaluations:
    """The stored ``name`` evaluations of the cells' runs under the (version, settings) most runs have."""
    found: dict[str, dict[str, dict]] = {}  # (version, settings) as JSON -> run id -> stored evaluation
    for run_id in dict.fromkeys(c.run_id for c in cells):
        for stored in results.evaluations(run_id, name):
            key = json.dumps([stored.get("version", 1), stored.get("settings") or {}], sort_keys=True)
            found.setdefault(key, {})[run_id] = stored
    if not found:
        return SharedEvaluations(name)
    chosen = max(found, key=lambda k: (len(found[k]), json.loads(k)[0], k))  # most runs, then newest version
    version = json.loads(chosen)[0]
    set_aside = {describe(settings) + ("" if v == version else f" (version {v})"): len(found[k])
                 for k in found if k != chosen for v, settings in [json.loads(k)]}
    return SharedEvaluations(name, {run_id: stored["results"] for run_id, stored in found[chosen].items()},
                             json.loads(chosen)[1], set_aside)
