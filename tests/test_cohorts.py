"""Cohorts (engine/cohort.py): students that share teachers, data, seed and epochs train together, one
teacher forward per batch, and end exactly as they would trained one by one."""
import json
import textwrap
from pathlib import Path

import pytest
import torch

from tekapbench.cli import main
from tekapbench.engine.cohort import cohort_key
from tekapbench.suite.plan import plan_suite

SUITE = """
[suite]
name = "cohort"
seeds = [0]
cpu_threads = 1

[data]
datasets = ["digits"]

[recipe]
epochs = {epochs}

[[pairs]]
teacher = "resnet20_tiny"
student = "resnet8_tiny"

[[methods]]
label = "KD"
method = "kd"

[[methods]]
label = "KD+TeKAP (L)"
baseline = "KD"
method = "kd"
tekap = {{ level = "logit" }}

[[methods]]
label = "CRD+TeKAP (F)"
method = "crd"
tekap = {{ level = "feature" }}

[[methods]]
label = "DKD"
method = "dkd"

[[methods]]
label = "FitNet"
method = "fitnet"

[[methods]]
label = "MLKD"
method = "mlkd"
"""

# what differs between two trainings of one run however they are scheduled: when and how long
TIMING = {"seconds"}
PROVENANCE_TIMING = {"started", "finished", "wall_seconds", "train_seconds", "cohort"}


def write_suite(tmp_path: Path, epochs: int = 2) -> Path:
    path = tmp_path / "cohort.toml"
    path.write_text(textwrap.dedent(SUITE).format(epochs=epochs))
    return path


def records(results: Path) -> dict[str, dict]:
    found = {}
    for path in results.glob("cohort/runs/*/attempt-*/record.json"):
        record = json.loads(path.read_text())
        found[record["run_id"]] = record
    return found


def comparable(record: dict) -> dict:
    """The record without its timings: the numbers a cohort must reproduce bit for bit."""
    teacher = record["teacher"] and {k: v for k, v in record["teacher"].items() if k != "weights"}  # its path
    return {**record, "teacher": teacher,
            "history": [{k: v for k, v in e.items() if k not in TIMING} for e in record["history"]],
            "provenance": {k: v for k, v in record["provenance"].items() if k not in PROVENANCE_TIMING}}


def weights(results: Path, run_id: str, name: str) -> dict:
    (path,) = results.glob(f"cohort/runs/{run_id}/attempt-*/{name}")
    return torch.load(path, weights_only=True)


def assert_same_tensors(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_students_of_a_column_share_a_key_and_the_teacher_and_vanilla_runs_train_alone(tmp_path):
    plan = plan_suite(write_suite(tmp_path))
    keys = {run_id: cohort_key(spec) for run_id, spec in plan.runs.items()}
    students = [r for r, spec in plan.runs.items() if spec.teachers]
    assert len(students) == 6 and len({keys[r] for r in students}) == 1
    assert all(keys[r] is None for r, spec in plan.runs.items() if not spec.teachers)


@pytest.mark.slow
def test_a_cohort_gives_the_records_and_weights_of_runs_trained_one_by_one(tmp_path, caplog):
    suite = write_suite(tmp_path)
    alone, together = tmp_path / "alone", tmp_path / "together"
    assert main(["run", str(suite), "--results", str(alone), "--quiet", "--no-cohorts"]) == 0
    assert main(["run", str(suite), "--results", str(together), "--quiet"]) == 0

    one_by_one, cohort = records(alone), records(together)
    assert one_by_one.keys() == cohort.keys() and len(cohort) == 7  # same run ids: teacher and 6 students
    students = [r for r, record in cohort.items() if record["teacher"]]
    for run_id in students:
        assert sorted(cohort[run_id]["provenance"]["cohort"]) == sorted(students)
        assert "cohort" not in one_by_one[run_id]["provenance"]
        assert comparable(cohort[run_id]) == comparable(one_by_one[run_id]), cohort[run_id]["cells"]
        for name in ("model.pt", "checkpoint.pt"):  # weights, optimizer and objective states (CRD's memory)
            a, b = weights(alone, run_id, name), weights(together, run_id, name)
            for state in (a, b):
                state.pop("history", None)  # compared above, without its seconds
            assert_same_tensors(a, b, f"{run_id}/{name}")
    # each member's run.log has its own epoch lines, not the others'
    for run_id in students:
        (log,) = together.glob(f"cohort/runs/{run_id}/attempt-*/run.log")
        label = next(c["row"] for c in cohort[run_id]["cells"])
        lines = [line for line in log.read_text().splitlines() if " epoch " in line and "/2:" in line]
        assert len(lines) == 2 and all(f" {label} seed 0 epoch" in line for line in lines), (label, lines)


def test_the_same_weights_saved_twice_are_the_same_bytes(tmp_path):
    """A weights file's sha256 names the teacher a student learnt from: saving must not put the (random)
    temporary file name into the archive, as torch.save given a path would."""
    from tekapbench.atomic import save_torch
    from tekapbench.results.provenance import sha256_file

    state = {"model": torch.nn.Linear(3, 2).state_dict(), "epoch": 1}
    save_torch(tmp_path / "a" / "model.pt", state)
    save_torch(tmp_path / "b" / "weights.pt", state)
    assert sha256_file(tmp_path / "a" / "model.pt") == sha256_file(tmp_path / "b" / "weights.pt")
    assert_same_tensors(torch.load(tmp_path / "b" / "weights.pt", weights_only=True), state, "loaded")


@pytest.mark.parametrize("count, free, held, step, sizes", [
    (5, 100, 10, 10, [5]),          # 5 * 10 + 10 <= 90
    (5, 100, 20, 10, [3, 2]),       # 4 fit (80 <= 80): two cohorts, dealt evenly
    (6, 100, 40, 10, [2, 2, 2]),    # 2 fit
    (3, 100, 200, 10, [1, 1, 1]),   # not even one: each alone (as without cohorts)
    (4, 100, 0, 10, [4]),
])
def test_a_cohort_that_would_not_fit_the_device_is_split_evenly(count, free, held, step, sizes):
    from tekapbench.engine.cohort import split_to_fit

    assert split_to_fit(count, free, held, step) == sizes


DIVERGING = """
[suite]
name = "cohort"
seeds = [0]
cpu_threads = 1

[data]
datasets = ["digits"]

[recipe]
epochs = 2

[[pairs]]
teacher = "resnet8_tiny"
student = "resnet8_tiny"

[[methods]]
label = "KD"
method = "kd"

[[methods]]
label = "KD x1e38"
method = "kd"
weight = 1e38

[[methods]]
label = "KD+TeKAP (L)"
method = "kd"
tekap = { level = "logit" }
"""


@pytest.mark.slow
def test_a_member_that_diverges_stops_alone_and_the_others_finish(tmp_path, capsys):
    suite, results = tmp_path / "cohort.toml", tmp_path / "results"
    suite.write_text(DIVERGING)
    assert main(["run", str(suite), "--results", str(results), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "1 run(s) failed" in err and "KD x1e38" in err and "not finite" in err, err
    done = records(results)
    rows = {record["cells"][0]["row"] for record in done.values()}
    assert rows == {"Teacher", "KD", "KD+TeKAP (L)"}  # the diverging member has no record, the others do
    (failure,) = results.glob("cohort/runs/*/attempt-*/failure.json")
    assert "TrainingDivergedError" in json.loads(failure.read_text())["error"]
    # its run.log has its error; the others' do not
    logs = {p.parent.parent.name: p.read_text() for p in results.glob("cohort/runs/*/attempt-*/run.log")}
    failed = failure.parent.parent.name
    assert "not finite" in logs[failed]
    assert all("not finite" not in text for run, text in logs.items() if run != failed)


@pytest.mark.slow
def test_an_interrupted_cohort_resumes_each_member_from_its_own_checkpoint(tmp_path, monkeypatch):
    """Interrupted after the second member's epoch 1 (its checkpoint written, the third's not): on resume
    the first two go on from epoch 2 as one cohort, the third from scratch in its own; all three end with
    the records of runs trained one by one, each epoch once in their history files."""
    from tekapbench import progress as progress_module

    suite = tmp_path / "cohort.toml"
    suite.write_text(DIVERGING.replace('label = "KD x1e38"', 'label = "KD x2"').replace("weight = 1e38", "weight = 2.0"))
    alone, together = tmp_path / "alone", tmp_path / "together"
    assert main(["run", str(suite), "--results", str(alone), "--quiet", "--no-cohorts"]) == 0

    real = progress_module.MemberProgress.__call__

    def interrupted(self, entry):
        real(self, entry)
        if "KD x2" in self.label and entry["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(progress_module.MemberProgress, "__call__", interrupted)
    assert main(["run", str(suite), "--results", str(together), "--quiet"]) == 130
    monkeypatch.setattr(progress_module.MemberProgress, "__call__", real)
    assert main(["run", str(suite), "--results", str(together), "--quiet"]) == 0

    one_by_one, resumed = records(alone), records(together)
    assert one_by_one.keys() == resumed.keys()
    after = {}
    for run_id, record in resumed.items():
        same, reference = comparable(record), comparable(one_by_one[run_id])
        for r in (same, reference):
            r["provenance"].pop("resumed_after_epoch")  # checked below
        assert same == reference, record["cells"]
        after[record["cells"][0]["row"]] = record["provenance"]["resumed_after_epoch"]
        (history,) = together.glob(f"cohort/runs/{run_id}/attempt-*/history.jsonl")
        assert [json.loads(line)["epoch"] for line in history.read_text().splitlines()] == [1, 2]
    assert after == {"Teacher": 0, "KD": 1, "KD x2": 1, "KD+TeKAP (L)": 0}
    kd, kd2 = (next(r for r in resumed.values() if r["cells"][0]["row"] == row) for row in ("KD", "KD x2"))
    assert sorted(kd["provenance"]["cohort"]) == sorted([kd["run_id"], kd2["run_id"]])
