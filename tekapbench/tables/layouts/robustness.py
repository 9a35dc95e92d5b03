"""The TeKAP paper's adversarial-robustness table ("Effect on adversarial robustness"), with the protocol stated:
rows Teacher, Student and each method; columns clean accuracy and robust accuracy per (attack, eps); one table
per dataset, pair and test subset. Numbers measured on different subsets (size, selection, seed) are never put
in one cell: each subset gets its own table (and figure, plots/robustness.py). The notes are written from the
stored rows: each attack's settings as they ran, and the subset protocol. An attack that ran with different
settings on one subset (e.g. two PGD step counts) gets one set of columns per variant, numbered, each described."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from tekapbench.tables.base import LAYOUTS, Cell, ResultsView, Table, by_dataset_and_pair, grid_by_column, seed_note

# per-row numbers and bookkeeping: not a setting of the attack
MEASURED = {"attack", "eps_255", "robust_acc", "attack_success_rate", "num_examples", "subset", "seed", "torchattacks"}

# attack -> (the evaluation's settings) -> what its rows stored before norm, step_rule and version were
# recorded ran with: every attack was L-inf, PGD's step eps/4 unless pgd_step_size was set, AutoAttack
# the standard suite
LEGACY_SETTINGS = {
    "fgsm": lambda settings: {"norm": "Linf", "step_rule": "eps"},
    "pgd": lambda settings: {"norm": "Linf",
                             "step_rule": "eps/4" if settings.get("pgd_step_size") is None else "fixed"},
    "autoattack": lambda settings: {"norm": "Linf", "version": "standard"},
}

# subset protocol -> how the notes and titles say it
SUBSET_TEXT = {"random": "{n} test images drawn at random with seed {seed} (which also seeds the attacks)",
               "first": "the first {n} test images in order (RobustBench's protocol); attacks seeded with {seed}"}
SUBSET_LABEL = {"random": "{n} random test images, seed {seed}", "first": "first {n} test images, seed {seed}"}


@dataclass(frozen=True, order=True)
class Subset:
    """Which test images were attacked: evaluations on different subsets are never compared in one cell."""

    protocol: str
    size: int
    seed: int

    def describe(self) -> str:
        text = SUBSET_TEXT.get(self.protocol, "{n} test images, subset protocol {protocol!r}, seed {seed}")
        return text.format(n=self.size, seed=self.seed, protocol=self.protocol)

    def label(self) -> str:
        text = SUBSET_LABEL.get(self.protocol, "{protocol} {n} test images, seed {seed}")
        return text.format(n=self.size, seed=self.seed, protocol=self.protocol)


def subset_of(stored: dict) -> Subset:
    """The subset of a stored evaluation; one stored before the ``subset`` option drew it at random."""
    results, settings = stored["results"], stored.get("settings", {})
    return Subset(results.get("subset", settings.get("subset", "random")),
                  results.get("num_examples", settings.get("num_examples", -1)),
                  settings.get("seed", results.get("seed", -1)))


def attack_settings(row: dict, settings: dict) -> dict:
    """What the row's attack ran with, eps aside (rows stored before some settings were recorded get
    them from LEGACY_SETTINGS)."""
    found = {k: v for k, v in row.items() if k not in MEASURED}
    if found and row["attack"] in LEGACY_SETTINGS:
        found = {**LEGACY_SETTINGS[row["attack"]](settings), **found}
    if found.get("step_rule", "fixed") != "fixed":
        found.pop("step_size_255", None)  # follows eps: its values are in the variant's steps_255
    return found


@dataclass
class Variant:
    """One attack with one set of settings on one subset, and what it measured."""

    attack: str
    settings: dict
    steps_255: dict[float, float] = field(default_factory=dict)  # eps -> step size, when the step follows eps
    libraries: set[str] = field(default_factory=set)  # torchattacks versions


@dataclass
class SubsetResults:
    """One subset's numbers: clean and robust accuracy by run, robust ones by (attack, variant, eps)."""

    clean: dict[str, float] = field(default_factory=dict)
    robust: dict[str, dict[tuple[str, int, float], float]] = field(default_factory=dict)
    variants: dict[str, list[Variant]] = field(default_factory=dict)  # attack -> its variants, in order met

    def variant(self, row: dict, settings: dict) -> int:
        own = attack_settings(row, settings)
        variants = self.variants.setdefault(row["attack"], [])
        signature = json.dumps(own, sort_keys=True)
        index = next((i for i, v in enumerate(variants) if json.dumps(v.settings, sort_keys=True) == signature), None)
        if index is None:
            variants.append(Variant(row["attack"], own))
            index = len(variants) - 1
        if "step_size_255" in row and "step_size_255" not in own:
            variants[index].steps_255[row["eps_255"]] = row["step_size_255"]
        if "torchattacks" in row:
            variants[index].libraries.add(row["torchattacks"])
        return index

    def label(self, attack: str, index: int) -> str:
        """'PGD', or 'PGD (2)' when PGD ran with more than one set of settings on this subset."""
        return attack.upper() + (f" ({index + 1})" if len(self.variants[attack]) > 1 else "")

    def column(self, attack: str, index: int, eps: float) -> str:
        return f"{self.label(attack, index)} {eps:g}/255"

    def by_column(self) -> dict[str, dict[str, float]]:
        """run id -> column -> value, 'clean' included."""
        return {run_id: {"clean": self.clean[run_id],
                         **{self.column(*key): v for key, v in self.robust.get(run_id, {}).items()}}
                for run_id in self.clean}

    def columns(self) -> list[str]:
        keys = sorted({key for by_key in self.robust.values() for key in by_key},
                      key=lambda k: (k[0].upper(), k[1], k[2]))
        return ["clean"] + list(dict.fromkeys(self.column(*key) for key in keys))

    def notes(self) -> list[str]:
        return [f"{self.label(v.attack, i)}: {describe(v)}"
                for attack in sorted(self.variants, key=str.upper) for i, v in enumerate(self.variants[attack])]


def by_subset(run_ids: list[str], results: ResultsView) -> dict[Subset, SubsetResults]:
    """The adversarial evaluations of the runs, apart by subset; nothing of one subset overwrites another's."""
    found: dict[Subset, SubsetResults] = {}
    for run_id in dict.fromkeys(run_ids):
        for stored in results.evaluations(run_id, "adversarial"):
            mine = found.setdefault(subset_of(stored), SubsetResults())
            mine.clean[run_id] = stored["results"]["clean_acc"]
            for row in stored["results"]["results"]:
                index = mine.variant(row, stored.get("settings", {}))
                mine.robust.setdefault(run_id, {})[row["attack"], index, row["eps_255"]] = row["robust_acc"]
    return dict(sorted(found.items(), key=lambda item: (_subset_order(item[0]), item[0])))


def _subset_order(subset: Subset) -> int:
    """The default protocol's table first, then the others in SUBSET_TEXT's order."""
    order = list(SUBSET_TEXT)
    return order.index(subset.protocol) if subset.protocol in order else len(order)


def _number(x: float) -> str:
    return f"{round(x, 4):g}"


def _components(variant: Variant) -> str:
    """'APGD-CE, APGD-T, FAB-T, Square'."""
    return ", ".join(c.upper() if "-" in c else c.capitalize() for c in variant.settings.get("components", []))


def _step(variant: Variant) -> str:
    rule = variant.settings["step_rule"]
    if rule == "fixed":
        return f"step fixed at {_number(variant.settings['step_size_255'])}/255"
    at = ", ".join(f"{_number(step)}/255 at eps {_number(eps)}/255" for eps, step in sorted(variant.steps_255.items()))
    return f"step {rule}" + (f" ({at})" if at and rule != "eps" else "")


# stored setting -> its words in the notes (None: said with another), in this order; settings not
# listed are shown as key=value
SETTING_TEXT = {
    "version": lambda v, variant: f"{v} suite" + (f" ({_components(variant)})" if _components(variant) else ""),
    "components": lambda v, variant: None if "version" in variant.settings else f"components {_components(variant)}",
    "norm": lambda v, _: "L-inf" if v == "Linf" else v,
    "steps": lambda v, _: f"{v} step{'s' * (v != 1)}",
    "step_rule": lambda v, variant: _step(variant),
    "step_size_255": lambda v, variant: None if "step_rule" in variant.settings else f"step {_number(v)}/255",
    "random_start": lambda v, _: "random start" if v else "no random start",
    "square_queries": lambda v, _: f"Square {v} queries",
    "target_classes": lambda v, _: f"{v} target classes",
    "restarts": lambda v, _: f"{v} restart{'s' * (v != 1)}",
}


def describe(variant: Variant) -> str:
    """'L-inf, 10 steps, step eps/4 (0.5/255 at eps 2/255, ...), random start, 1 restart' from the stored rows."""
    settings = variant.settings
    ordered = [k for k in SETTING_TEXT if k in settings] + sorted(k for k in settings if k not in SETTING_TEXT)
    parts = [SETTING_TEXT[k](settings[k], variant) if k in SETTING_TEXT else f"{k}={settings[k]}" for k in ordered]
    if variant.libraries:
        parts.append("torchattacks " + ", ".join(sorted(variant.libraries)))
    return ", ".join(p for p in parts if p) or "settings not stored"


@LAYOUTS.register("robustness")
def robustness(cells: list[Cell], results: ResultsView) -> list[Table]:
    """Clean and robust top-1 accuracy (%) under each attack and eps of the adversarial evaluations."""
    tables = []
    for (dataset, pair), mine in by_dataset_and_pair(cells).items():
        rows = list(dict.fromkeys(c.row for c in mine))
        subsets = by_subset([c.run_id for c in mine], results) or {None: SubsetResults()}
        for subset, found in subsets.items():
            columns, by_column = found.columns(), found.by_column()
            values, missing = grid_by_column(mine, rows, columns,
                                             lambda c, column: by_column.get(c.run_id, {}).get(column))
            notes = seed_note("robust top-1 (%) on a fixed test subset: correct before and after the attack", missing)
            if subset is not None:
                notes.append(f"subset: {subset.describe()}")
            notes += found.notes()
            title = f"{dataset} {pair}: adversarial robustness"
            if len(subsets) > 1:
                title += f" · {subset.label()}"
            tables.append(Table(title=title, rows=rows, columns=columns, cells=values, metric="robust top-1",
                                notes=notes).mark_best())
    return tables
