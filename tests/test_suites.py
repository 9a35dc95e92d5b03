"""Every suite under suites/ is valid, and the CPU twins run end to end with all their evaluators."""
import json
import math
import os
from pathlib import Path

import pytest

from tekapbench.cli import main
from tekapbench.suite.plan import plan_suite

SUITES = sorted((Path(__file__).parent.parent / "suites").glob("*.toml"))


@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
def test_every_shipped_suite_is_valid(path):
    plan = plan_suite(path)
    assert plan.runs and plan.cells


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    """Runs a CPU twin once per test module and returns its results folder: a temporary one, or the fresh
    folder that TEKAPBENCH_TWIN_RESULTS names (.ci/run: its gate then finds these twins trained)."""
    done = {}
    shared = os.environ.get("TEKAPBENCH_TWIN_RESULTS")

    def run(suite: str) -> Path:
        if suite not in done:
            done[suite] = Path(shared) if shared else tmp_path_factory.mktemp(suite)
            assert main(["run", f"suites/{suite}.toml", "--results", str(done[suite]), "--quiet"]) == 0
        return done[suite]

    return run


def evaluations(results, suite):
    found = {}
    for path in results.glob(f"{suite}/runs/*/attempt-1/evaluations/*.json"):
        data = json.loads(path.read_text())
        found.setdefault(data["evaluation"], []).append(data)
    return found


@pytest.mark.slow
def test_robustness_twin_end_to_end(twin):
    found = evaluations(twin("robustness_cpu"), "robustness_cpu")
    assert {k: len(v) for k, v in found.items()} == {"adversarial": 4, "calibration": 4, "fidelity": 4,
                                                     "corruptions": 4}
    for result in found["adversarial"]:
        rows = {(r["attack"], r["eps_255"]): r["robust_acc"] for r in result["results"]["results"]}
        for eps in (1.0, 2.0, 4.0, 8.0):
            assert rows["pgd", eps] <= rows["fgsm", eps] <= result["results"]["clean_acc"]
    skipped = [f for f in found["fidelity"] if "skipped" in f["results"]]
    assert len(skipped) == 1  # the teacher itself; the vanilla student is compared with its column's teacher
    for result in found["corruptions"]:
        r = result["results"]
        assert set(r["per_corruption"]) == {"contrast", "gaussian_noise", "impulse_noise", "shot_noise"}
        assert r["mean_corruption_accuracy"] <= r["clean_accuracy"] + 1.0


@pytest.mark.slow
def test_imbalance_twin_end_to_end(twin):
    for result in evaluations(twin("imbalance_cpu"), "imbalance_cpu")["shot_groups"]:
        r = result["results"]
        assert r["train_counts"] == [139, 107, 83, 64, 49, 38, 29, 23, 17, 13]
        assert r["group_sizes"] == {"many": 2, "medium": 6, "few": 2}
        assert not math.isnan(r["few_shot"])


@pytest.mark.slow
def test_transfer_twin_end_to_end(twin):
    for result in evaluations(twin("transfer_cpu"), "transfer_cpu")["transfer"]:
        r = result["results"]
        assert r["dataset"] == "digits_5to9" and r["test_images"] == 179
        assert r["accuracy"] > 40  # features of unseen digits are far better than chance (20%)
        assert r["probe"]["solver"].startswith("L-BFGS")


@pytest.mark.slow
def test_takd_twin_trains_assistants_before_the_students_that_learn_from_them(twin):
    results = twin("takd_cpu")
    plan = json.loads((results / "takd_cpu" / "plan.json").read_text())
    records = {p.parent.parent.name: json.loads(p.read_text())
               for p in results.glob("takd_cpu/runs/*/attempt-*/record.json")}
    assert len(records) == len(plan["runs"]) == 8  # teacher, 2 assistants (TAKD's, DGKD's), 5 students
    rows = {c["row"]: c["run_id"] for c in plan["cells"]}
    dgkd = records[rows["DGKD"]]
    assert [t["arch"] for t in dgkd["teacher"]["teachers"]] == ["resnet20_tiny", "resnet14_tiny"]
    takd = records[rows["TAKD"]]
    assistant = records[takd["teacher"]["run_id"]]
    assert assistant["spec"]["arch"] == "resnet14_tiny" and assistant["cells"] == []
    assert assistant["teacher"]["run_id"] == rows["Teacher"]
    for record in records.values():
        for teacher in record["teacher"].get("teachers", [record["teacher"]]) if record["teacher"] else []:
            assert records[teacher["run_id"]]["provenance"]["finished"] <= record["provenance"]["started"]
    assert records[rows["TAKD+TeKAP (L)"]]["teacher"]["run_id"] == takd["teacher"]["run_id"]  # one assistant


@pytest.mark.slow
@pytest.mark.parametrize("suite,layout,column", [
    ("robustness_cpu", "robustness", "PGD 8/255"),
    ("imbalance_cpu", "imbalance", "resnet20_tiny → resnet8_tiny · few"),
    ("transfer_cpu", "transfer", "digits_0to4 → digits_5to9"),
    ("takd_cpu", "teacher_assistant", "resnet20_tiny → resnet8_tiny"),
    ("sota_cpu", "sota", "resnet20_tiny → resnet8_tiny · base"),
])
def test_each_twin_prints_its_papers_table(twin, capsys, suite, layout, column):
    results = twin(suite)
    capsys.readouterr()
    assert main(["table", "--results", str(results), "--suite", suite, "--format", "json"]) == 0
    tables = json.loads(capsys.readouterr().out)
    assert column in tables[0]["columns"]
    values = [c["mean"] for c in tables[0]["cells"] if c["column"] == column]
    rows = {c["row"] for c in tables[0]["cells"]}
    assert len(values) == len(rows) >= 4 and all(v is not None for v in values)


@pytest.mark.slow
@pytest.mark.parametrize("suite,kind,prefix", [
    ("robustness_cpu", "robustness", "robustness_digits_resnet20_tiny-to-resnet8_tiny"),
    ("imbalance_cpu", "long_tail", "long-tail_digits_lt_resnet20_tiny-to-resnet8_tiny"),
    ("transfer_cpu", "curves", "curves_digits_0to4_resnet20_tiny-to-resnet8_tiny"),
])
def test_plots_are_written_as_png_and_pdf(twin, tmp_path, suite, kind, prefix):
    out = tmp_path / "plots"
    assert main(["plot", "--results", str(twin(suite)), "--suite", suite, "--kind", kind, "--out", str(out)]) == 0
    png, pdf = out / f"{prefix}.png", out / f"{prefix}.pdf"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"


def test_plot_without_anything_to_plot_exits_2(tmp_path, capsys):
    assert main(["plot", "--results", str(tmp_path)]) == 2
    assert "no results" in capsys.readouterr().err
    assert main(["plot", "--results", str(tmp_path), "--kind", "pie"]) == 2
    assert "unknown plot 'pie'; allowed: corruptions, curves, long_tail, reliability, robustness" in capsys.readouterr().err
