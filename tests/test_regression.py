"""The regression gate: `tekapbench check` against a baseline (accuracy and evaluation scores) and
against speed-ratio bounds (pytest-benchmark JSON). It must fail on a planted regression, pass on an
unchanged run, and report what is missing instead of ignoring it."""
import json
import shutil
import textwrap

import pytest
import torch

from tekapbench.cli import main
from tekapbench.errors import UsageError
from tekapbench.regression import (Baseline, Group, Measured, Metric, ToleranceRule, compare, parse_cli_rule,
                                   read_baseline, write_baseline)
from tekapbench.regression.gate import judge
from tekapbench.regression.speed import RatioGate, check_ratios

G = Group("s", "digits", "a → b", "KD")


def metric(*values, higher=True, tolerance=1.0):
    return Metric(higher, tolerance, dict(enumerate(values)))


# ---------------------------------------------------------------------------------------- verdicts

@pytest.mark.parametrize("current, status", [(80.0, "ok"), (79.2, "ok"), (78.9, "regressed"), (81.5, "improved")])
def test_absolute_tolerance_on_a_higher_is_better_metric(current, status):
    verdict = judge(G, "top1", metric(80.0), metric(current), ToleranceRule(metric="*", abs=1.0))
    assert verdict.status == status
    assert verdict.change == pytest.approx(current - 80.0)


def test_lower_is_better_metric_regresses_when_it_rises():
    rule = ToleranceRule(metric="*", abs=0.05)
    assert judge(G, "calibration:nll", metric(1.0, higher=False), metric(1.2, higher=False), rule).status == "regressed"
    assert judge(G, "calibration:nll", metric(1.0, higher=False), metric(0.8, higher=False), rule).status == "improved"


def test_std_tolerance_scales_with_the_baselines_seed_spread():
    base = metric(70.0, 74.0)  # mean 72, sample std 2.828
    rule = ToleranceRule(metric="*", std=2.0)  # tolerated drop 5.66
    assert judge(G, "top1", base, metric(67.0, 71.0), rule).status == "ok"  # mean 69: -3
    assert judge(G, "top1", base, metric(63.0, 69.0), rule).status == "regressed"  # mean 66: -6
    # the larger of abs and std decides
    assert judge(G, "top1", base, metric(63.0, 69.0), ToleranceRule(metric="*", abs=7.0, std=2.0)).status == "ok"


def test_missing_seed_and_missing_metric_fail_and_are_named():
    verdict = judge(G, "top1", metric(80.0, 81.0), Metric(True, 1.0, {0: 80.0}), ToleranceRule(metric="*", abs=1))
    assert (verdict.status, verdict.failed) == ("missing", True)
    assert "seed 1" in verdict.detail
    assert judge(G, "top1", metric(80.0), None, ToleranceRule(metric="*", abs=1)).status == "missing"


def test_compare_reports_missing_groups_and_new_metrics_and_uses_the_first_matching_rule():
    other = Group("s", "digits", "a → b", "Student")
    baseline = Baseline({G: {"top1": metric(80.0), "adversarial:pgd@8/255": metric(40.0)},
                         other: {"top1": metric(70.0)}},
                        rules=[ToleranceRule(metric="adversarial:*", abs=5.0)])
    measured = Measured({G: {"top1": metric(80.0), "adversarial:pgd@8/255": metric(36.0), "top5": metric(99.0)}})
    verdicts = {(v.group.row, v.metric): v for v in compare(baseline, measured)}
    assert verdicts[("KD", "adversarial:pgd@8/255")].status == "ok"  # -4 within the rule's 5
    assert verdicts[("Student", "top1")].status == "missing"
    assert verdicts[("KD", "top5")].status == "new" and not verdicts[("KD", "top5")].failed
    stricter = compare(baseline, measured, extra_rules=[parse_cli_rule("adversarial:*=2")])
    assert {(v.metric, v.status) for v in stricter if v.group == G} >= {("adversarial:pgd@8/255", "regressed")}


@pytest.mark.parametrize("text, abs_, std", [("top1=0.5", 0.5, None), ("adversarial:*=2std", None, 2.0),
                                             ("top1=0.5,3std", 0.5, 3.0)])
def test_cli_tolerance_rules(text, abs_, std):
    rule = parse_cli_rule(text)
    assert (rule.abs, rule.std) == (abs_, std)


@pytest.mark.parametrize("text", ["top1", "top1=", "top1=-1", "top1=abc", "=1"])
def test_bad_cli_tolerance_is_a_usage_error(text):
    with pytest.raises(UsageError, match="--tolerance"):
        parse_cli_rule(text)


# ---------------------------------------------------------------------------------------- the file

def test_baseline_round_trip_keeps_rules_and_other_suites(tmp_path):
    path = tmp_path / "baseline.json"
    other = Group("other", "digits", "a → b", "KD")
    write_baseline(path, Measured({G: {"top1": metric(80.0, 81.0)}, other: {"top1": metric(50.0)}},
                                  {"s": ["cpu x, 2 threads"]}), keep=None, suites=None)
    data = json.loads(path.read_text())
    data["tolerances"] = [{"metric": "top1", "abs": 0.25}]
    path.write_text(json.dumps(data))
    kept = read_baseline(path)
    assert kept.groups[G]["top1"].values == {0: 80.0, 1: 81.0} and kept.environment == {"s": ["cpu x, 2 threads"]}
    assert kept.made["tekapbench"]
    # --update of suite "s" only: its numbers are replaced; the rules and suite "other" stay
    write_baseline(path, Measured({G: {"top1": metric(82.0, 83.0)}}), keep=kept, suites=["s"])
    again = read_baseline(path)
    assert again.groups[G]["top1"].values == {0: 82.0, 1: 83.0}
    assert again.groups[other]["top1"].values == {0: 50.0}
    assert again.rules == [ToleranceRule(metric="top1", abs=0.25)]


@pytest.mark.parametrize("content, message", [
    ('{"format": "something else"}', "key 'format'"),
    ('{"format": "tekapbench-baseline/1", "tolerances": [{"metric": "top1"}]}', "tolerances[0]"),
    ('{"format": "tekapbench-baseline/1", "tolerances": [{"metric": "top1", "abs": "1"}]}', "tolerances[0]"),
    ('{"format": "tekapbench-baseline/1", "groups": [{"suite": "s"}]}', "groups[0]"),
    ("not json", "unreadable baseline"),
])
def test_bad_baseline_file_exits_2_naming_the_file_and_key(tmp_path, capsys, content, message):
    path = tmp_path / "baseline.json"
    path.write_text(content)
    (tmp_path / "results").mkdir()
    assert main(["check", "--results", str(tmp_path / "results"), "--baseline", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err


def test_check_without_anything_to_check_exits_2(capsys):
    assert main(["check"]) == 2
    assert "--baseline" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- speed ratios

def _bench(name, seconds, items=None):
    return {"name": name, "fullname": f"tests/x.py::{name}",
            "stats": {"min": seconds, "median": seconds * 1.1, "mean": seconds * 1.2},
            "extra_info": {"items": items} if items else {}}


def test_speed_ratios_pass_fail_and_missing():
    benchmarks = {b["name"]: b for b in [_bench("kd", 0.100), _bench("tekap", 0.104), _bench("pil", 2.0, 1000),
                                         _bench("device", 0.1, 1000), _bench("pgd", 1.0, 100)]}
    gates = [RatioGate(name="overhead", numerator="tekap", denominator="kd", max=1.05),
             RatioGate(name="speed-up", numerator="pil", denominator="device", min=25.0),
             RatioGate(name="pgd", numerator="pgd", denominator="device", max=150.0, per_item=True),
             RatioGate(name="gone", numerator="nope", denominator="kd", max=2.0)]
    verdicts = {v.gate.name: v for v in check_ratios(gates, benchmarks)}
    assert verdicts["overhead"].status == "ok" and verdicts["overhead"].value == pytest.approx(1.04)
    assert verdicts["speed-up"].status == "failed" and verdicts["speed-up"].value == pytest.approx(20.0)
    assert verdicts["pgd"].value == pytest.approx((1.0 / 100) / (0.1 / 1000))  # 100: within 150
    assert verdicts["gone"].status == "missing" and "nope" in verdicts["gone"].detail


def test_check_benchmarks_from_the_command_line(tmp_path, capsys):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"benchmarks": [_bench("kd", 0.100), _bench("tekap", 0.120)]}))
    gates = tmp_path / "speed.toml"
    gates.write_text('[[ratio]]\nname = "TeKAP overhead"\nnumerator = "tekap"\ndenominator = "kd"\nmax = 1.05\n')
    assert main(["check", "--benchmarks", str(bench), "--ratios", str(gates)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "TeKAP overhead" in out and "1.2" in out
    gates.write_text('[[ratio]]\nname = "TeKAP overhead"\nnumerator = "tekap"\ndenominator = "kd"\nmax = 1.25\n')
    assert main(["check", "--benchmarks", str(bench), "--ratios", str(gates)]) == 0
    gates.write_text('[[ratio]]\nname = "x"\nnumerator = "tekap"\ndenominator = "kd"\n')
    assert main(["check", "--benchmarks", str(bench), "--ratios", str(gates)]) == 2
    assert "ratio.0" in capsys.readouterr().err


def test_the_shipped_speed_gates_name_benchmarks_that_exist():
    from pathlib import Path

    from tekapbench.regression.speed import read_gates

    root = Path(__file__).resolve().parents[1]
    source = "\n".join(p.read_text() for p in (root / "tests" / "benchmarks").glob("test_*.py"))
    for gate in read_gates(root / "results" / "baselines" / "speed.toml"):
        for name in gate.references:
            test, _, key = name.partition("@")
            assert f"def {test.split('[')[0]}(" in source, name
            if key:  # the benchmark stores that number
                assert f'"{key}"' in source or "_min_seconds" in key, name


# ---------------------------------------------------------------------------------------- end to end

SUITE = """
[suite]
name = "gate"
seeds = [0, 1]
cpu_threads = 2

[data]
datasets = ["digits"]

[recipe]
epochs = {epochs}

[teacher_recipe]
epochs = 3

[[pairs]]
teacher = "resnet8_tiny"
student = "resnet8_tiny"

[[methods]]
label = "KD"
method = "kd"

[[evaluations]]
name = "calibration"
"""


def _suite(tmp_path, epochs: int):
    path = tmp_path / f"gate-{epochs}.toml"
    path.write_text(textwrap.dedent(SUITE.format(epochs=epochs)))
    return str(path)


@pytest.mark.slow
def test_gate_passes_an_unchanged_run_and_fails_a_planted_regression(tmp_path, capsys):
    baseline = tmp_path / "baselines" / "cpu.json"
    first, second = tmp_path / "first", tmp_path / "second"
    threads = torch.get_num_threads()
    assert main(["run", _suite(tmp_path, 3), "--results", str(first), "--quiet"]) == 0
    assert torch.get_num_threads() == threads  # the suite's cpu_threads applied to its runs only
    assert {json.loads(p.read_text())["provenance"]["torch_threads"]
            for p in first.glob("gate/runs/*/attempt-*/record.json")} == {2}
    assert main(["check", "--results", str(first), "--baseline", str(baseline), "--update"]) == 0
    stored = read_baseline(baseline)
    kd = Group("gate", "digits", "resnet8_tiny → resnet8_tiny", "KD")
    assert set(stored.groups[kd]) >= {"top1", "top1_best", "top5", "calibration:ece", "calibration:nll"}
    assert set(stored.groups[kd]["top1"].values) == {0, 1}

    # the same suite trained again from scratch: the same numbers (CPU, fixed threads and seeds)
    assert main(["run", _suite(tmp_path, 3), "--results", str(second), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["check", "--results", str(second), "--baseline", str(baseline), "--all"]) == 0
    out = capsys.readouterr().out
    assert "regressed" not in out and "+0.00" in out

    # planted regression: the students get a third of the training; the teacher is unchanged
    planted = tmp_path / "planted"
    shutil.copytree(second, planted)
    assert main(["run", _suite(tmp_path, 1), "--results", str(planted), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["check", "--results", str(planted), "--baseline", str(baseline)]) == 1
    out, err = capsys.readouterr()
    regressed = [line for line in out.splitlines() if line.startswith("REGRESSED")]
    assert any("· KD" in line and " top1 " in line for line in regressed), out
    assert not any("· Teacher" in line for line in regressed), out
    assert "refresh the baseline with --update" in err

    # a stored result edited down by 5 points is caught under a 1-point rule (the default tolerance of
    # 2 seed stds would pass it: 3 epochs on the digits leave the teacher's seeds far apart)
    edited = tmp_path / "edited"
    shutil.copytree(second, edited)
    teacher_records = [p for p in edited.glob("gate/runs/*/attempt-*/record.json")
                       if json.loads(p.read_text())["cells"][0]["row"] == "Teacher"]
    for path in teacher_records:
        record = json.loads(path.read_text())
        record["metrics"]["test_acc_last"] -= 5.0
        path.write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["check", "--results", str(edited), "--baseline", str(baseline), "--tolerance", "top1=1"]) == 1
    regressed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("REGRESSED")]
    assert regressed and all("· Teacher" in line and " top1 " in line for line in regressed)

    # results of another suite only: every group of the baseline is reported missing
    capsys.readouterr()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["check", "--results", str(empty), "--baseline", str(baseline)]) == 1
    assert "MISSING" in capsys.readouterr().out


def test_run_with_a_bad_thread_count_exits_2(tmp_path, capsys):
    assert main(["run", _suite(tmp_path, 1), "--results", str(tmp_path / "r"), "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err


def test_a_folder_of_baselines_gives_the_file_of_this_machines_cpu_type(tmp_path, monkeypatch):
    """CPU numbers repeat only on one kind of CPU, so a folder keeps one baseline per kind."""
    from tekapbench.errors import UsageError
    from tekapbench.regression import baseline as baseline_module
    from tekapbench.regression import baseline_path

    folder = tmp_path / "cpu"
    folder.mkdir()
    (folder / "intel-r-xeon-r-processor.json").write_text("{}")
    monkeypatch.setattr(baseline_module, "cpu_name", lambda: "AMD EPYC")
    assert baseline_path(folder, writing=True) == folder / "amd-epyc.json"
    with pytest.raises(UsageError, match=r"no baseline for this CPU type \(AMD EPYC\): expected amd-epyc.json "
                                         r"\(present: intel-r-xeon-r-processor.json\)"):
        baseline_path(folder)
    monkeypatch.setattr(baseline_module, "cpu_name", lambda: "Intel(R) Xeon(R) Processor")
    assert baseline_path(folder) == folder / "intel-r-xeon-r-processor.json"
    assert baseline_path(tmp_path / "one.json") == tmp_path / "one.json"  # a file is used as given


def test_the_committed_baselines_name_the_cpu_type_they_were_measured_on(monkeypatch):
    from pathlib import Path

    from tekapbench.regression import baseline as baseline_module
    from tekapbench.regression import baseline_path

    folder = Path(__file__).parent.parent / "results" / "baselines" / "cpu"
    assert len(list(folder.glob("*.json"))) >= 2
    for file in folder.glob("*.json"):
        cpus = {env.split(",")[0] for envs in read_baseline(file).environment.values() for env in envs}
        assert len(cpus) == 1, (file.name, cpus)
        monkeypatch.setattr(baseline_module, "cpu_name", lambda: next(iter(cpus)))
        assert baseline_path(folder, writing=True) == file
