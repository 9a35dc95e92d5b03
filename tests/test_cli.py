"""The command line end to end on the embedded digits: run, skip, force, resume, table, bad input."""
import json
import textwrap

import pytest

from tekapbench.cli import main
from tekapbench.methods import METHODS
from tekapbench.engine import trainer as trainer_module

SUITE = """
[suite]
name = "cli"
seeds = [0]

[data]
datasets = ["digits"]

[recipe]
epochs = 1

[[pairs]]
teacher = "resnet8_tiny"
student = "resnet8_tiny"

[[methods]]
label = "Student"
method = "vanilla"

[[methods]]
label = "KD"
method = "kd"

[[methods]]
label = "KD+TeKAP (L)"
method = "kd"
tekap = { level = "logit" }
"""


@pytest.fixture
def suite(tmp_path):
    path = tmp_path / "cli.toml"
    path.write_text(textwrap.dedent(SUITE))
    return path


def records(results):
    return sorted(results.glob("cli/runs/*/attempt-*/record.json"))


def test_run_writes_records_and_prints_the_table(tmp_path, suite, capsys):
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    for row in ("Teacher", "Student", "KD", "KD+TeKAP (L)"):
        assert f"| {row} " in out
    found = records(results)
    assert len(found) == 3  # the vanilla student is the teacher run: trained once
    record = json.loads(found[0].read_text())
    assert set(record["provenance"]) >= {"tekapbench", "git_commit", "torch", "device", "wall_seconds"}
    assert record["spec"]["recipe"]["epochs"] == 1
    assert 0 <= record["metrics"]["test_acc_last"] <= 100

    # again: nothing to do; --force: new records beside the old ones, which stay untouched
    before = {p: p.read_text() for p in found}
    assert main(["run", str(suite), "--results", str(results), "--quiet"]) == 0
    assert records(results) == found
    assert main(["run", str(suite), "--results", str(results), "--quiet", "--force"]) == 0
    assert len(records(results)) == 6
    assert all(p.read_text() == text for p, text in before.items())

    for fmt, marker in (("latex", r"\toprule"), ("csv", "table,metric,row,column,mean,std,n"), ("markdown", "|:--")):
        assert main(["table", "--results", str(results), "--format", fmt]) == 0
        assert marker in capsys.readouterr().out


def test_an_interrupted_suite_picks_up_where_it_stopped(tmp_path, suite, monkeypatch, capsys):
    results = tmp_path / "results"
    real_begin = trainer_module.Trainer.begin_epoch
    started: list[str] = []

    def interrupt_the_second_run(self, epoch):  # trained alone or in a cohort, every run begins epochs
        if self.job.run_id not in started:
            started.append(self.job.run_id)
        if len(started) == 2:
            raise KeyboardInterrupt
        return real_begin(self, epoch)

    monkeypatch.setattr(trainer_module.Trainer, "begin_epoch", interrupt_the_second_run)
    assert main(["run", str(suite), "--results", str(results), "--quiet"]) == 130
    assert len(records(results)) == 1
    first = records(results)[0].read_text()
    monkeypatch.setattr(trainer_module.Trainer, "begin_epoch", real_begin)
    assert main(["run", str(suite), "--results", str(results), "--quiet"]) == 0
    assert len(records(results)) == 3
    assert records(results)[0].read_text() == first or first in [p.read_text() for p in records(results)]
    assert "interrupted" in capsys.readouterr().err


def test_dry_run_lists_runs_and_trains_nothing(tmp_path, suite, capsys):
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "3 runs, 3 to run on cpu, 0 evaluation(s) to compute" in out
    assert not results.exists()


def test_a_bad_suite_exits_2_naming_file_and_key_and_runs_nothing(tmp_path, suite, capsys):
    suite.write_text(suite.read_text().replace('method = "kd"\n', 'method = "kdd"\n', 1))
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert str(suite) in err and "methods[1].method" in err and f"allowed: {', '.join(METHODS.names())}" in err
    assert not results.exists()


def test_missing_cifar100_exits_2_before_anything_trains(tmp_path, suite, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    suite.write_text(suite.read_text().replace('datasets = ["digits"]', 'datasets = ["cifar100"]'))
    assert main(["run", str(suite), "--results", "results"]) == 2
    err = capsys.readouterr().err
    assert "cifar-100-python" in err and "download" in err
    assert not list((tmp_path / "results").glob("cli/runs/*"))


def test_table_without_results_or_with_unknown_format_exits_2(tmp_path, capsys):
    assert main(["table", "--results", str(tmp_path / "none")]) == 2
    assert "no results" in capsys.readouterr().err
    (tmp_path / "r" / "x").mkdir(parents=True)
    (tmp_path / "r" / "x" / "plan.json").write_text(json.dumps({"layout": "diverse", "cells": []}))
    assert main(["table", "--results", str(tmp_path / "r"), "--format", "docx"]) == 2
    assert "unknown table format 'docx'; allowed: csv, github, html, json, latex, markdown" in capsys.readouterr().err


def test_a_setting_an_architecture_cannot_run_stops_before_training(tmp_path, suite, capsys):
    suite.write_text(suite.read_text() + '\n[[methods]]\nmethod = "fitnet"\nparams = { hint_layer = 9 }\n')
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "hint_layer 9 out of range" in err and "resnet8_tiny → resnet8_tiny" in err
    assert not results.exists()


def test_list_shows_what_is_registered(capsys):
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    for name in ("vanilla", "kd", "crd", "fitnet", "dkd", "mlkd", "takd", "dgkd", "camkd"):
        assert f"  {name} " in out
    assert "[teachers: through the pair's assistants" in out and "[teachers: several teachers" in out
    assert main(["list", "datasets"]) == 0
    assert "cifar100" in capsys.readouterr().out
    assert main(["list", "executors"]) == 0
    out = capsys.readouterr().out
    assert "  local " in out and "  slurm " in out


def test_an_interrupted_forced_rerun_is_resumed_without_force(tmp_path, suite):
    from tekapbench.results.store import ResultStore

    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), "--quiet"]) == 0
    store = ResultStore(results, "cli")
    run_id = next(p.name for p in (results / "cli" / "runs").iterdir())
    unfinished = store.attempt_for(run_id, force=True)  # what an interrupted --force leaves behind
    assert not store.is_done(run_id)
    assert main(["run", str(suite), "--results", str(results), "--quiet"]) == 0
    assert (unfinished / "record.json").exists()


def test_results_path_that_is_a_file_exits_2(tmp_path, suite, capsys):
    not_a_folder = tmp_path / "results"
    not_a_folder.write_text("")
    assert main(["run", str(suite), "--results", str(not_a_folder), "--quiet"]) == 2
    assert str(not_a_folder) in capsys.readouterr().err


def test_records_are_readable_by_the_group_and_a_changed_suite_is_noted(tmp_path, suite, capsys):
    import os
    import stat

    results = tmp_path / "results"
    old = os.umask(0o022)
    try:
        assert main(["run", str(suite), "--results", str(results), "--quiet"]) == 0
    finally:
        os.umask(old)
    for path in records(results) + [results / "cli" / "plan.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    record = json.loads(records(results)[0].read_text())
    assert record["data"]["dataset"] == "digits" and len(record["data"]["sha256"]) == 64
    assert record["provenance"]["packages"]["torchvision"]
    suite.write_text(suite.read_text().split("[[methods]]\nlabel = \"KD\"")[0])
    assert main(["run", str(suite), "--results", str(results)]) == 0
    assert "no longer in its tables" in capsys.readouterr().err


def test_evaluations_added_later_are_computed_from_saved_weights_without_retraining(tmp_path, suite, capsys):
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), "--quiet"]) == 0
    before = {p: p.read_text() for p in records(results)}
    suite.write_text(suite.read_text() + '\n[[evaluations]]\nname = "calibration"\n'
                     '\n[[evaluations]]\nname = "adversarial"\neps = [2]\nnum_examples = 20\nattacks = ["fgsm"]\n')
    assert main(["run", str(suite), "--results", str(results), "--quiet"]) == 0
    assert {p: p.read_text() for p in records(results)} == before  # nothing retrained or rewritten
    stored = sorted(results.glob("cli/runs/*/attempt-1/evaluations/*.json"))
    assert len(stored) == 6  # 3 runs x 2 evaluations
    adversarial = json.loads(next(p for p in stored if p.name.startswith("adversarial")).read_text())
    assert adversarial["settings"]["eps"] == [2.0] and adversarial["settings"]["seed"] == 0
    assert adversarial["results"]["num_examples"] == 20
    assert main(["run", str(suite), "--results", str(results), "--quiet"]) == 0
    assert sorted(results.glob("cli/runs/*/attempt-1/evaluations/*.json")) == stored  # computed once


def test_bad_evaluation_settings_name_the_key(tmp_path, suite, capsys):
    suite.write_text(suite.read_text() + '\n[[evaluations]]\nname = "adversarial"\nepss = [2]\n'
                     '\n[[evaluations]]\nname = "robustness"\n')
    assert main(["run", str(suite), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "evaluations[0]: epss: unknown key; allowed: attacks, eps" in err
    assert "evaluations[1].name: unknown evaluation 'robustness'; allowed: adversarial" in err


@pytest.mark.parametrize("where", ["command line", "suite"])
def test_a_huge_thread_count_is_one_clear_error_not_a_traceback(tmp_path, suite, capsys, where):
    huge = 99_999_999_999  # overflows torch's C int; a million threads crash the process
    results = tmp_path / "results"
    if where == "suite":
        suite.write_text(suite.read_text().replace("[suite]\n", f"[suite]\ncpu_threads = {huge}\n", 1))
        assert main(["run", str(suite), "--results", str(results)]) == 2
        assert "suite.cpu_threads: Input should be less than or equal to 1024" in capsys.readouterr().err
    else:
        assert main(["run", str(suite), "--results", str(results), "--threads", str(huge)]) == 2
        assert f"--threads {huge}: give a number from 1 to 1024" in capsys.readouterr().err
    assert not results.exists()


def test_every_command_has_a_description_and_examples():
    import argparse

    from tekapbench.cli import build_parser

    parser = build_parser()
    assert "examples:" in parser.format_help()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) >= {"run", "status", "table", "plot", "check", "list"}
    for name, command in commands.items():
        text = command.format_help()
        assert command.description and command.description.strip() in text, name
        assert "examples:" in text and f"tekapbench {name} " in text.split("examples:")[1], name


def test_check_takes_the_results_folder_as_results_option_only(tmp_path, capsys):
    assert main(["check", str(tmp_path), "--baseline", str(tmp_path / "b.json")]) == 2
    assert f"give the results folder as --results {tmp_path}" in capsys.readouterr().err
    assert main(["check", "--results", str(tmp_path), "--baseline", str(tmp_path / "b.json")]) == 2
    assert "no such baseline" in capsys.readouterr().err  # --results is taken; the baseline is what is missing


def test_table_reads_results_without_importing_torch(tmp_path):
    """`tekapbench table` only reads JSON: importing torch would triple its start-up time."""
    import subprocess
    import sys

    results = tmp_path / "results"
    cells = []
    for seed in (0, 1):
        for row, accuracy in (("Teacher", 90.0), ("Student", 80.0), ("KD", 85.0)):
            run_id = f"{row.lower()}{seed}"
            cells.append({"dataset": "digits", "teacher": "t", "student": "s", "row": row, "seed": seed,
                          "run_id": run_id})
            attempt = results / "fake" / "runs" / run_id / "attempt-1"
            attempt.mkdir(parents=True)
            metrics = {"test_acc_last": accuracy + seed, "test_acc_best": accuracy + seed + 0.5}
            (attempt / "record.json").write_text(json.dumps({"metrics": metrics}))
    (results / "fake" / "plan.json").write_text(json.dumps({"suite": "fake", "layout": "diverse", "cells": cells}))
    code = ("import sys; from tekapbench.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)")
    for extra in ([], ["--format", "latex"], ["--metric", "best", "--delta", "Student"]):
        done = subprocess.run([sys.executable, "-c", code, "table", "--results", str(results), *extra],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        mean_of_kd = "86.00" if "best" in extra else "85.50"  # seeds 0 and 1: 85 and 86 last, +0.5 best
        assert "KD" in done.stdout and mean_of_kd in done.stdout, done.stdout
