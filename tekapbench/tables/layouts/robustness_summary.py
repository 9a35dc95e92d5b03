"""The robustness suite in one table: one row per method (Teacher and Student as references), columns
clean top-1, robust top-1 at the strongest stored budget of each attack, mean corruption top-1, ECE, NLL
and agreement with the teacher; one table per dataset and pair. A run without an evaluation shows –.

Each evaluation is read under the one setting the table's runs share (tables/shared_settings.py), so a
column never mixes, e.g., ECE over two bin counts; the adversarial evaluations are read on the one test
subset most runs were attacked on, all attacks of that subset together; the notes say which it was."""
from __future__ import annotations

from tekapbench.tables.base import LAYOUTS, Cell, ResultsView, Stat, Table, by_dataset_and_pair, seed_note
from tekapbench.tables.layouts.calibration import bins_note
from tekapbench.tables.layouts.corruptions import source_note
from tekapbench.tables.shared_settings import SharedEvaluations, shared_evaluations

CLEAN, CORRUPTED, ECE, NLL, AGREEMENT = "clean", "corruptions", "ECE (%)", "NLL", "agreement (%)"
LOWER_IS_BETTER = {ECE, NLL}
TEACHER = "Teacher"
PROTOCOL_TEXT = {"random": "a random draw", "first": "the first in test-set order"}


def attack_rows(stored: dict) -> list[dict]:
    """The (attack, eps, robust accuracy) rows of a stored adversarial result; anything else is ignored."""
    rows = stored.get("results")
    if not isinstance(rows, list):
        return []
    return [r for r in rows if isinstance(r, dict) and {"attack", "eps_255", "robust_acc"} <= r.keys()]


SUBSET_KEYS = ("num_examples", "seed", "subset")


def adversarial_on_one_subset(cells: list[Cell], results: ResultsView) -> SharedEvaluations:
    """Every adversarial evaluation of the runs on the test subset most of them were attacked on, merged
    per run (e.g. FGSM/PGD and AutoAttack stored as two evaluations of one subset); other subsets are set
    aside and named in the notes."""
    by_subset: dict[tuple, dict[str, dict]] = {}  # subset -> run id -> merged results
    for run_id in dict.fromkeys(c.run_id for c in cells):
        for stored in results.evaluations(run_id, "adversarial"):
            settings = {"subset": "random", **(stored.get("settings") or {})}  # stored before 'subset' existed
            subset = tuple(settings.get(key) for key in SUBSET_KEYS)
            merged = by_subset.setdefault(subset, {}).setdefault(run_id, {**stored["results"], "results": []})
            merged["results"] = merged["results"] + attack_rows(stored["results"])
    if not by_subset:
        return SharedEvaluations("adversarial")
    chosen = max(by_subset, key=lambda k: (len(by_subset[k]), str(k)))
    set_aside = {", ".join(f"{k}={v}" for k, v in zip(SUBSET_KEYS, subset)): len(runs)
                 for subset, runs in by_subset.items() if subset != chosen}
    return SharedEvaluations("adversarial", by_subset[chosen], dict(zip(SUBSET_KEYS, chosen)), set_aside)


def strongest_budgets(adversarial: SharedEvaluations) -> dict[str, float]:
    """attack -> the largest eps (x 1/255) stored for it."""
    budgets: dict[str, float] = {}
    for stored in adversarial.results.values():
        for row in attack_rows(stored):
            budgets[row["attack"]] = max(budgets.get(row["attack"], row["eps_255"]), row["eps_255"])
    return budgets


def robust_accuracy(stored: dict | None, attack: str, eps_255: float) -> float | None:
    return next((r["robust_acc"] for r in attack_rows(stored or {})
                 if r["attack"] == attack and r["eps_255"] == eps_255), None)


def subset_note(adversarial: SharedEvaluations, columns: list[str]) -> list[str]:
    """Which test subset the robust columns come from, from the stored settings and results (a result
    stored before the ``subset`` option existed was a random draw)."""
    if not columns:
        return []
    settings = adversarial.settings or {}
    stored = list(adversarial.results.values())
    sizes = sorted({r.get("num_examples", settings.get("num_examples")) for r in stored} - {None})
    protocols = sorted({PROTOCOL_TEXT.get(p, p)
                        for r in stored for p in [r.get("subset", settings.get("subset", "random"))]})
    return [f"{', '.join(columns)}: robust top-1 (%) at the strongest stored eps, on a fixed test subset of "
            f"{'/'.join(map(str, sizes)) or '?'} images ({'/'.join(protocols)}, seed {settings.get('seed', '?')}); "
            f"correct before and after the attack"]


@LAYOUTS.register("robustness_summary")
def robustness_summary(cells: list[Cell], results: ResultsView) -> list[Table]:
    """Clean, adversarial, corruption, calibration and fidelity numbers of each method side by side."""
    tables = []
    for (dataset, pair), mine in by_dataset_and_pair(cells).items():
        rows = list(dict.fromkeys(c.row for c in mine))
        adversarial = adversarial_on_one_subset(mine, results)
        corrupted = shared_evaluations(mine, results, "corruptions")
        calibrated = shared_evaluations(mine, results, "calibration")
        fidelity = shared_evaluations([c for c in mine if c.row != TEACHER], results, "fidelity")
        budgets = strongest_budgets(adversarial)
        robust = {f"{attack.upper()} {eps:g}/255": (attack, eps) for attack, eps in budgets.items()}
        value_of = {
            CLEAN: lambda c: results.accuracy(c.run_id),
            **{column: lambda c, a=attack, e=eps: robust_accuracy(adversarial.results.get(c.run_id), a, e)
               for column, (attack, eps) in robust.items()},
            CORRUPTED: lambda c: corrupted.value(c.run_id, "mean_corruption_accuracy"),
            ECE: lambda c: calibrated.value(c.run_id, "ece"),
            NLL: lambda c: calibrated.value(c.run_id, "nll"),
            AGREEMENT: lambda c: None if c.row == TEACHER else fidelity.value(c.run_id, "top1_agreement"),
        }
        columns = list(value_of)
        values, missing = {}, 0
        for column, value in value_of.items():
            gaps = 0
            for row in rows:
                runs = [c for c in mine if c.row == row]
                by_run = {c.run_id: value(c) for c in runs}
                found = list(by_run.values())
                values[row, column] = Stat.of(found, by_seed={c.seed: by_run[c.run_id] for c in runs})
                if not (column == AGREEMENT and row == TEACHER):  # the teacher has no teacher to follow
                    gaps += sum(v is None for v in found)
            missing = max(missing, gaps)
        notes = seed_note(f"clean: {results.metric_label} (%)", missing)
        notes += subset_note(adversarial, list(robust))
        notes += [f"corruptions: mean top-1 (%) over corruptions and severities; {n}" for n in source_note(corrupted)]
        notes += bins_note(calibrated.settings)
        notes += ["agreement: top-1 agreement with the pair's teacher (%); – for the teacher itself"]
        notes += adversarial.notes() + corrupted.notes() + calibrated.notes() + fidelity.notes()
        tables.append(Table(title=f"{dataset} {pair}: robustness summary", rows=rows, columns=columns, cells=values,
                            metric="robustness summary", notes=notes).mark_best(lower_is_better=LOWER_IS_BETTER))
    return tables
