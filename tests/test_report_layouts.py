"""Calibration, fidelity, corruption and robustness-summary tables and plots, built from known stored
evaluations; and the calibration evaluation's reliability bins, which must agree with its ECE."""
import json
import math

import pytest
import torch

from tekapbench.tables import FORMATS, LAYOUTS, Cell
from tekapbench.tables.base import Stat, Table

PAIR = "t → s"


class Results:
    """A ResultsView over hand-written stored evaluations: (run id, name) -> [(settings, results)]."""

    metric_label = "last-epoch top-1"

    def __init__(self, stored, accuracy=None):
        self.stored, self.values = stored, accuracy or {}

    def record(self, run_id):
        return None

    def accuracy(self, run_id):
        return self.values.get(run_id)

    def evaluations(self, run_id, name):
        return [{"evaluation": name, "version": 1, "settings": settings, "results": results}
                for settings, results in self.stored.get((run_id, name), [])]


def cells(*rows, seeds=(0,)):
    return [Cell("d", "t", "s", row, seed, f"{row}-{seed}") for row in rows for seed in seeds]


def mean(stat: Stat | None) -> float | None:
    return None if stat is None else stat.mean


# --- Table.mark_best --------------------------------------------------------------------------------------

def test_mark_best_takes_a_direction_per_column_and_keeps_its_default():
    def table():
        values = {("Teacher", "acc"): 99.0, ("A", "acc"): 80.0, ("B", "acc"): 82.0,
                  ("Teacher", "err"): 0.1, ("A", "err"): 3.0, ("B", "err"): 5.0}
        return Table("t", ["Teacher", "A", "B"], ["acc", "err"], {k: Stat(v, None, 1) for k, v in values.items()})

    assert table().mark_best().best == {("B", "acc"), ("B", "err")}
    assert table().mark_best(higher_is_better=False).best == {("A", "acc"), ("A", "err")}
    assert table().mark_best(lower_is_better={"err"}).best == {("B", "acc"), ("A", "err")}  # the teacher is not ranked


# --- calibration ------------------------------------------------------------------------------------------

def calibration_results(ece, nll, acc):
    return {"ece": ece, "nll": nll, "accuracy": acc}


def test_calibration_table_bolds_the_lowest_ece_and_nll_and_states_the_stored_bins():
    stored = {
        ("Teacher-0", "calibration"): [({"bins": 10}, calibration_results(1.0, 0.1, 99.0))],
        ("KD-0", "calibration"): [({"bins": 10}, calibration_results(5.0, 0.5, 80.0))],
        ("KD-1", "calibration"): [({"bins": 10}, calibration_results(7.0, 0.7, 82.0))],
        ("Mine-0", "calibration"): [({"bins": 10}, calibration_results(4.0, 0.9, 79.0)),
                                    ({"bins": 15}, calibration_results(0.0, 0.0, 0.0))],  # another setting
    }
    table = LAYOUTS.get("calibration")(cells("Teacher", "KD", "Mine") + cells("KD", seeds=(1,)), Results(stored))[0]
    assert table.rows == ["Teacher", "KD", "Mine"] and table.columns == ["ECE (%)", "NLL", "top-1 (%)"]
    assert mean(table.cells["KD", "ECE (%)"]) == pytest.approx(6.0) and table.cells["KD", "ECE (%)"].n == 2
    assert mean(table.cells["Mine", "ECE (%)"]) == 4.0  # the bins=15 result is not mixed in
    assert table.best == {("Mine", "ECE (%)"), ("KD", "NLL"), ("KD", "top-1 (%)")}
    assert any("ECE over 10 equal-width bins" in note for note in table.notes)
    assert any("bins=15 for 1 run(s): not shown" in note for note in table.notes)
    assert "**4.00 (n=1)**" in FORMATS.get("github")([table])  # bold, and its single seed said


# --- fidelity ---------------------------------------------------------------------------------------------

def test_fidelity_table_leaves_the_teacher_out_and_bolds_the_lowest_kl():
    stored = {(run, "fidelity"): [({"temperature": 4.0}, {"top1_agreement": agree, "kl_teacher_student": kl})]
              for run, agree, kl in (("Student-0", 80.0, 0.5), ("KD-0", 90.0, 0.2), ("Mine-0", 92.0, 0.3))}
    table = LAYOUTS.get("fidelity")(cells("Teacher", "Student", "KD", "Mine"), Results(stored))[0]
    assert table.rows == ["Student", "KD", "Mine"]
    assert table.best == {("Mine", "agreement (%)"), ("KD", "KL(T, S)")}
    assert any("temperature 4" in note for note in table.notes)
    assert not any("not available" in note for note in table.notes)  # the teacher is not a missing value


# --- corruptions ------------------------------------------------------------------------------------------

def corruption_results(clean, per_severity, source="generated"):
    per_corruption = {name: sum(by.values()) / len(by) for name, by in per_severity.items()}
    return {"source": source, "corruptions": list(per_severity), "clean_accuracy": clean,
            "mean_corruption_accuracy": sum(per_corruption.values()) / len(per_corruption),
            "per_corruption": per_corruption, "per_severity": per_severity}


def test_corruption_table_averages_the_corruptions_at_each_severity():
    settings = {"source": "generated", "corruptions": None, "severities": [1, 3], "seed": 7}
    stored = {
        ("Student-0", "corruptions"): [(settings, corruption_results(
            90.0, {"contrast": {"1": 80.0, "3": 40.0}, "shot_noise": {"1": 70.0, "3": 60.0}}))],
        ("KD-0", "corruptions"): [(settings, corruption_results(
            92.0, {"contrast": {"1": 85.0, "3": 50.0}, "shot_noise": {"1": 75.0, "3": 70.0}}))],
    }
    table = LAYOUTS.get("corruptions")(cells("Teacher", "Student", "KD"), Results(stored))[0]
    assert table.columns == ["clean", "mean corrupted", "severity 1", "severity 3"]
    assert mean(table.cells["Student", "severity 1"]) == pytest.approx((80 + 70) / 2)
    assert mean(table.cells["Student", "severity 3"]) == pytest.approx((40 + 60) / 2)
    assert mean(table.cells["KD", "mean corrupted"]) == pytest.approx((85 + 50 + 75 + 70) / 4)
    assert table.cells["Teacher", "clean"] is None  # not evaluated: –, and said so
    assert table.best == {("KD", column) for column in table.columns}
    assert "generated corruptions (seed 7): contrast, shot_noise" in table.notes
    assert any("1 value(s) not available yet" in note for note in table.notes)


def test_corruption_table_names_cifar100c_files_as_the_source():
    stored = {("KD-0", "corruptions"): [({"source": "files"}, corruption_results(
        70.0, {"fog": {str(s): 60.0 - s for s in range(1, 6)}}, source="files"))]}
    table = LAYOUTS.get("corruptions")(cells("KD"), Results(stored))[0]
    assert table.columns[2:] == [f"severity {s}" for s in range(1, 6)]
    assert "CIFAR-100-C files: fog" in table.notes


# --- robustness summary -----------------------------------------------------------------------------------

def adversarial(clean, rows, num_examples=200, seed=0):
    return ({"attacks": sorted({a for a, _, _ in rows}), "num_examples": num_examples, "seed": seed},
            {"num_examples": num_examples, "clean_acc": clean,
             "results": [{"attack": a, "eps_255": e, "robust_acc": r} for a, e, r in rows]})


def summary_results():
    pgd_fgsm = lambda pgd8, fgsm8: [("pgd", 2.0, 50.0), ("pgd", 8.0, pgd8), ("fgsm", 8.0, fgsm8), ("fgsm", 4.0, 60.0)]  # noqa: E731
    stored = {
        ("Teacher-0", "adversarial"): [adversarial(97.0, pgd_fgsm(40.0, 60.0))],
        ("KD-0", "adversarial"): [adversarial(90.0, pgd_fgsm(30.0, 45.0)),
                                  adversarial(90.0, pgd_fgsm(99.0, 99.0), num_examples=1000)],  # one run only
        ("Mine-0", "adversarial"): [adversarial(95.0, pgd_fgsm(35.0, 41.0))],
        ("Teacher-0", "calibration"): [({"bins": 15}, calibration_results(1.0, 0.1, 97.0))],
        ("KD-0", "calibration"): [({"bins": 15}, calibration_results(5.0, 0.3, 90.0))],
        ("Mine-0", "calibration"): [({"bins": 15}, calibration_results(3.0, 0.4, 95.0))],
        ("KD-0", "fidelity"): [({"temperature": 1.0}, {"top1_agreement": 91.0, "kl_teacher_student": 0.2})],
        ("Mine-0", "fidelity"): [({"temperature": 1.0}, {"top1_agreement": 96.0, "kl_teacher_student": 0.1})],
        ("KD-0", "corruptions"): [({"source": "generated", "seed": 0},
                                   corruption_results(90.0, {"contrast": {"1": 70.0, "5": 30.0}}))],
    }
    return Results(stored, accuracy={"Teacher-0": 97.5, "KD-0": 90.5, "Mine-0": 95.5})


def test_robustness_summary_puts_every_evaluation_of_a_method_in_one_row():
    table = LAYOUTS.get("robustness_summary")(cells("Teacher", "KD", "Mine"), summary_results())[0]
    assert table.columns == ["clean", "PGD 8/255", "FGSM 8/255", "corruptions", "ECE (%)", "NLL", "agreement (%)"]
    assert mean(table.cells["KD", "clean"]) == 90.5  # the run's chosen test accuracy
    assert mean(table.cells["KD", "PGD 8/255"]) == 30.0  # the 1000-image subset of KD alone is left out
    assert mean(table.cells["Mine", "FGSM 8/255"]) == 41.0
    assert mean(table.cells["KD", "corruptions"]) == 50.0 and table.cells["Mine", "corruptions"] is None
    assert table.cells["Teacher", "agreement (%)"] is None and mean(table.cells["Mine", "agreement (%)"]) == 96.0
    assert table.best == {("Mine", "clean"), ("Mine", "PGD 8/255"), ("KD", "FGSM 8/255"),  # not the teacher's
                          ("Mine", "ECE (%)"), ("KD", "NLL"), ("Mine", "agreement (%)")}  # one corruption value
    notes = "\n".join(table.notes)
    assert "subset of 200 images (a random draw, seed 0)" in notes
    assert "num_examples=1000" in notes and "not shown" in notes
    assert "2 value(s) not available yet" in notes  # corruptions of Teacher and Mine; not the teacher's agreement


def test_robustness_summary_reads_every_attack_stored_on_the_shared_subset():
    # the GPU robustness suite stores FGSM/PGD and AutoAttack as two evaluations of one subset
    stored = {(f"{row}-0", "adversarial"): [adversarial(90.0, [("pgd", 8.0, pgd)]),
                                           adversarial(90.0, [("autoattack", 8.0, aa)])]
              for row, pgd, aa in (("KD", 30.0, 25.0), ("Mine", 35.0, 28.0))}
    table = LAYOUTS.get("robustness_summary")(cells("KD", "Mine"), Results(stored))[0]
    assert mean(table.cells["KD", "PGD 8/255"]) == 30.0 and mean(table.cells["Mine", "AUTOATTACK 8/255"]) == 28.0
    assert "not shown" not in "\n".join(table.notes)


def test_robustness_summary_without_evaluations_is_all_dashes_but_clean():
    table = LAYOUTS.get("robustness_summary")(cells("KD"), Results({}, accuracy={"KD-0": 80.0}))[0]
    assert table.columns == ["clean", "corruptions", "ECE (%)", "NLL", "agreement (%)"]
    assert mean(table.cells["KD", "clean"]) == 80.0
    assert all(table.cells["KD", column] is None for column in table.columns[1:])
    assert "–" in FORMATS.get("github")([table])


def test_robustness_summary_ignores_adversarial_rows_it_cannot_read():
    stored = {("KD-0", "adversarial"): [({"seed": 0}, {"clean_acc": 90.0, "results": [
        {"attack": "pgd", "eps_255": 8.0, "robust_acc": 20.0}, {"attack": "pgd", "note": "no numbers"}]})]}
    table = LAYOUTS.get("robustness_summary")(cells("KD"), Results(stored))[0]
    assert mean(table.cells["KD", "PGD 8/255"]) == 20.0


# --- plots ------------------------------------------------------------------------------------------------

def with_bins(ece, nll, acc, confidence, accuracy, count):
    return {**calibration_results(ece, nll, acc), "bin_confidence": confidence, "bin_accuracy": accuracy,
            "bin_count": count}


def test_reliability_plot_has_a_panel_per_method_with_bins_and_skips_older_records():
    from tekapbench.plots import PLOTS

    stored = {
        ("Teacher-0", "calibration"): [({"bins": 3}, calibration_results(1.0, 0.1, 99.0))],  # stored before the bins
        ("KD-0", "calibration"): [({"bins": 3}, with_bins(5.0, 0.5, 80.0, [None, 50.0, 90.0], [None, 40.0, 95.0],
                                                          [0, 4, 6]))],
        ("KD-1", "calibration"): [({"bins": 3}, with_bins(5.0, 0.5, 80.0, [20.0, 60.0, 80.0], [0.0, 50.0, 100.0],
                                                          [1, 2, 3]))],
        ("Mine-0", "calibration"): [({"bins": 3}, with_bins(1.0, 0.2, 90.0, [None, None, 95.0], [None, None, 96.0],
                                                            [0, 0, 10]))],
    }
    figures = PLOTS.get("reliability")(cells("Teacher", "KD", "Mine") + cells("KD", seeds=(1,)), Results(stored))
    assert list(figures) == ["reliability_d_t-to-s"]
    axes = figures["reliability_d_t-to-s"].axes
    assert [ax.get_title().split("\n")[0] for ax in axes] == ["KD", "Mine"]
    kd_line = axes[0].get_lines()[1]  # after the diagonal: the two seeds pooled, count-weighted
    assert list(kd_line.get_xdata()) == pytest.approx([20.0, (50 * 4 + 60 * 2) / 6, (90 * 6 + 80 * 3) / 9])
    assert list(kd_line.get_ydata()) == pytest.approx([0.0, (40 * 4 + 50 * 2) / 6, (95 * 6 + 100 * 3) / 9])
    assert len(axes[1].get_lines()[1].get_xdata()) == 1  # empty bins are not drawn
    only_old = {key: value for key, value in stored.items() if key[0] == "Teacher-0"}
    assert PLOTS.get("reliability")(cells("Teacher"), Results(only_old)) == {}


def test_corruption_plot_draws_accuracy_against_severity_one_line_per_method():
    from tekapbench.plots import PLOTS

    settings = {"source": "generated", "seed": 0}
    stored = {(run, "corruptions"): [(settings, corruption_results(clean, {"contrast": {"1": s1, "3": s3},
                                                                           "shot_noise": {"1": s1, "3": s3 - 10}}))]
              for run, clean, s1, s3 in (("Student-0", 90.0, 80.0, 50.0), ("KD-0", 92.0, 84.0, 60.0),
                                         ("KD-1", 94.0, 86.0, 70.0))}
    figures = PLOTS.get("corruptions")(cells("Teacher", "Student", "KD") + cells("KD", seeds=(1,)), Results(stored))
    (figure,) = figures.values()
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    assert set(lines) == {"Student", "KD"}  # the teacher has no corruptions evaluation: no line
    assert list(lines["KD"].get_xdata()) == [0, 1, 3]
    assert list(lines["KD"].get_ydata()) == pytest.approx([93.0, 85.0, (60 + 50 + 70 + 60) / 4])
    assert PLOTS.get("corruptions")(cells("Teacher"), Results({})) == {}


# --- the calibration evaluation's bins --------------------------------------------------------------------

class FixedLogits(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        from tekapbench.models.base import ModelOutput

        out, self.logits = self.logits[:x.shape[0]], self.logits[x.shape[0]:]
        return ModelOutput(logits=out, features=(), preact_features=(), embedding=out)


def run_calibration(logits, labels, **settings):
    from tekapbench.data import DataOptions
    from tekapbench.data.base import ImageSplits
    from tekapbench.evaluations import EVALUATIONS, EvalContext

    images = torch.zeros(len(labels), 3, 4, 4, dtype=torch.uint8)
    data = ImageSplits("toy", images, labels, images, labels, logits.shape[1], (0.5,) * 3, (0.5,) * 3)
    ctx = EvalContext(model=FixedLogits(logits), data=data, device=torch.device("cpu"),
                      data_options=DataOptions(root="unused"), batch_size=64)
    entry = EVALUATIONS.get("calibration")
    return json.loads(json.dumps(entry.evaluate(ctx, entry.params(**settings))))  # as stored


def test_calibration_bins_count_every_test_example_and_give_back_the_ece():
    from tekapbench.evaluations.calibration import expected_calibration_error

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 10, generator=generator) * 2
    labels = torch.randint(0, 10, (300,), generator=generator)
    result = run_calibration(logits, labels, bins=12)
    assert len(result["bin_count"]) == len(result["bin_confidence"]) == len(result["bin_accuracy"]) == 12
    assert sum(result["bin_count"]) == 300
    recomputed = sum(n * abs(a - c) for c, a, n in zip(result["bin_confidence"], result["bin_accuracy"],
                                                     result["bin_count"]) if n) / 300
    assert recomputed == pytest.approx(result["ece"], abs=1e-9)
    assert result["ece"] == pytest.approx(expected_calibration_error(logits, labels, 12), abs=1e-9)
    hits = sum(a * n / 100 for a, n in zip(result["bin_accuracy"], result["bin_count"]) if n)
    assert 100 * hits / 300 == pytest.approx(result["accuracy"])  # the bins hold every prediction once
    for confidence, n, b in zip(result["bin_confidence"], result["bin_count"], range(12)):
        assert (confidence is None) == (n == 0)
        if n:
            assert 100 * b / 12 < confidence <= 100 * (b + 1) / 12  # bins are (lo, hi]


def test_calibration_bins_by_hand():
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right); two bins: (0, .5], (.5, 1]: all in the second
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4]])
    result = run_calibration(probs.log(), torch.tensor([0, 1, 0]), bins=2)
    assert result["bin_count"] == [0, 3] and result["bin_confidence"][0] is None
    assert result["bin_confidence"][1] == pytest.approx(80.0) and result["bin_accuracy"][1] == pytest.approx(200 / 3)
    assert result["ece"] == pytest.approx(100 * (0.8 - 2 / 3), rel=1e-6)
    assert not math.isnan(result["nll"])
