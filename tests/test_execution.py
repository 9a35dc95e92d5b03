"""Executing suites: claims, concurrent invocations, worker processes, failures and skips, kill and resume,
`tekapbench status`, and a real single-node Slurm cluster driven through submitit."""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from tekapbench.cli import main
from tekapbench.errors import ClaimLostError
from tekapbench.results.claims import current_claim, try_claim

from slurm_cluster import start_cluster, unavailable_reason

SUITE = """
[suite]
name = "exec"
seeds = [0]
cpu_threads = 1

[data]
datasets = ["digits"]

[recipe]
epochs = {epochs}

[teacher_recipe]
epochs = 2

[[pairs]]
teacher = "resnet8_tiny"
student = "resnet8_tiny"

[[methods]]
label = "KD"
method = "kd"

[[methods]]
label = "KD+TeKAP (L)"
method = "kd"
tekap = {{ level = "logit" }}
"""


def write_suite(folder: Path, epochs: int = 2) -> Path:
    path = folder / "exec.toml"
    path.write_text(textwrap.dedent(SUITE.format(epochs=epochs)))
    return path


def records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.glob("exec/runs/*/attempt-*/record.json"))]


def attempts(results: Path) -> dict[str, int]:
    return {p.name: len(list(p.glob("attempt-*"))) for p in (results / "exec" / "runs").iterdir()}


def comparable(record: dict) -> dict:
    """What an interrupted-and-resumed run must share with an uninterrupted one."""
    history = [{k: v for k, v in e.items() if k != "seconds"} for e in record["history"]]
    return {"metrics": record["metrics"], "history": history, "spec": record["spec"]}


def weights(results: Path, run_id: str) -> dict[str, torch.Tensor]:
    path = next((results / "exec" / "runs" / run_id).glob("attempt-*/model.pt"))
    return torch.load(path, weights_only=True)["model"]


def cli(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tekapbench", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})}, **kwargs)


# ---------------------------------------------------------------------------------------- claims

def test_a_live_claim_excludes_others_until_released(tmp_path):
    run_dir = tmp_path / "run"
    first = try_claim(run_dir, interval=60)
    assert first is not None and first.info.generation == 1
    assert try_claim(run_dir) is None  # this process is alive and its heartbeat fresh
    assert current_claim(run_dir).holder().startswith(socket.gethostname())
    first.release()
    assert not current_claim(run_dir).is_live()
    second = try_claim(run_dir, interval=60)
    assert second is not None and second.info.generation == 2
    second.release()


def _foreign_claim(run_dir: Path, *, host: str, pid: int, age: float, ttl: float = 60) -> None:
    folder = run_dir / "claims"
    folder.mkdir(parents=True)
    now = time.time()
    (folder / "00000001.json").write_text(json.dumps({
        "generation": 1, "host": host, "pid": pid, "job": None, "started": now - age, "heartbeat": now - age,
        "ttl": ttl}))


def test_a_claim_without_heartbeat_expires(tmp_path):
    _foreign_claim(tmp_path / "a", host="elsewhere", pid=1, age=10)
    assert try_claim(tmp_path / "a") is None  # fresh heartbeat on another host: live
    _foreign_claim(tmp_path / "b", host="elsewhere", pid=1, age=120)
    claim = try_claim(tmp_path / "b")
    assert claim is not None and claim.info.generation == 2  # stale: taken over
    claim.release()


def test_a_claim_of_a_dead_process_on_this_host_is_free_at_once(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _foreign_claim(tmp_path / "run", host=socket.gethostname(), pid=dead.pid, age=0)
    claim = try_claim(tmp_path / "run")
    assert claim is not None
    claim.release()


def test_a_holder_presumed_dead_learns_it_lost_the_claim(tmp_path):
    run_dir = tmp_path / "run"
    claim = try_claim(run_dir, interval=0.05, ttl=60)
    # another host decided the holder was dead and took generation 2
    (run_dir / "claims" / "00000002.json").write_text(json.dumps({
        "generation": 2, "host": "elsewhere", "pid": 1, "job": None, "started": time.time(),
        "heartbeat": time.time(), "ttl": 60}))
    assert claim.lost.wait(5)
    with pytest.raises(ClaimLostError, match="took over"):
        claim.check()
    claim.release()
    assert current_claim(run_dir).generation == 2  # the loser does not touch the new holder's claim


# ---------------------------------------------------------------------------------------- local execution

@pytest.mark.slow
def test_two_invocations_at_once_train_every_run_exactly_once(tmp_path):
    suite, results = write_suite(tmp_path), tmp_path / "results"
    env = {"TEKAPBENCH_CLAIM_INTERVAL": "1"}
    first = cli("run", str(suite), "--results", str(results), env=env)
    second = cli("run", str(suite), "--results", str(results), env=env)
    outs = [p.communicate(timeout=300)[0] for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outs
    assert set(attempts(results).values()) == {1}  # no run has a second attempt
    assert len(records(results)) == 3  # teacher, KD, KD+TeKAP
    holders = {c["pid"] for p in results.glob("exec/runs/*/claims/*.json") for c in [json.loads(p.read_text())]}
    assert holders <= {first.pid, second.pid}


@pytest.mark.slow
def test_local_worker_processes_share_the_runs(tmp_path, capsys):
    suite, results = write_suite(tmp_path), tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), "--workers", "2"]) == 0
    out, err = capsys.readouterr()
    assert "2 worker processes" in err and "[worker 1]" in err + "[worker 0]"
    assert "| KD+TeKAP (L)" in out  # the parent prints the table once the workers are done
    assert set(attempts(results).values()) == {1} and len(records(results)) == 3
    teacher = next(r for r in records(results) if r["cells"][0]["row"] == "Teacher")
    for student in (r for r in records(results) if r["cells"][0]["row"] != "Teacher"):
        assert student["provenance"]["started"] >= teacher["provenance"]["finished"]


@pytest.mark.slow
def test_a_failed_teacher_skips_its_students_and_status_says_why(tmp_path, capsys, monkeypatch):
    from tekapbench.engine import trainer as trainer_module

    suite, results = write_suite(tmp_path), tmp_path / "results"
    real_fit = trainer_module.Trainer.fit

    def failing_fit(self):
        if self.job.teacher is None:
            raise RuntimeError("planted teacher failure")
        return real_fit(self)

    monkeypatch.setattr(trainer_module.Trainer, "fit", failing_fit)
    assert main(["run", str(suite), "--results", str(results)]) == 1
    err = capsys.readouterr().err
    assert "1 run(s) failed" in err and "planted teacher failure" in err and "2 run(s) skipped" in err

    assert main(["status", str(suite), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[1] for line in out.splitlines()[2:-1]}
    assert lines == {"failed", "skipped"}
    assert "RuntimeError: planted teacher failure" in out and "1 failed, 2 skipped" in out

    monkeypatch.setattr(trainer_module.Trainer, "fit", real_fit)
    assert main(["run", str(suite), "--results", str(results), "--quiet"]) == 0  # retried: all done
    assert main(["status", "exec", "--results", str(results)]) == 0
    assert "3 runs: 3 done" in capsys.readouterr().out


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _student_checkpoint(results: Path):
    for record_dir in results.glob("exec/runs/*/attempt-*"):
        if (record_dir / "checkpoint.pt").exists() and not (record_dir / "record.json").exists():
            plan = json.loads((results / "exec" / "plan.json").read_text())
            if plan["runs"][record_dir.parent.name].get("teacher"):
                return record_dir.parent.name
    return None


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_mid_training_resumes_to_the_same_record(tmp_path, how):
    suite = write_suite(tmp_path, epochs=4)
    reference, results = tmp_path / "reference", tmp_path / "results"
    assert main(["run", str(suite), "--results", str(reference), "--quiet"]) == 0
    process = cli("run", str(suite), "--results", str(results))
    run_id = _wait_for(lambda: _student_checkpoint(results), 300, "a student's first checkpoint")
    process.send_signal(how)
    out = process.communicate(timeout=60)[0]
    if how == signal.SIGTERM:
        assert process.returncode == 143 and "interrupted" in out
        assert not current_claim(results / "exec" / "runs" / run_id).is_live()  # released on the way out
    assert not (results / "exec" / "runs" / run_id / "attempt-1" / "record.json").exists()
    # the claim of the killed process is free at once (its pid is gone), and the rerun resumes
    assert main(["run", str(suite), "--results", str(results), "--quiet"]) == 0
    resumed = {r["run_id"]: r for r in records(results)}
    assert resumed[run_id]["provenance"]["resumed_after_epoch"] >= 1
    expected = {r["run_id"]: r for r in records(reference)}
    assert {k: comparable(v) for k, v in resumed.items()} == {k: comparable(v) for k, v in expected.items()}
    for name, tensor in weights(reference, run_id).items():
        assert torch.equal(tensor, weights(results, run_id)[name]), name


# ---------------------------------------------------------------------------------------- Slurm

@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    yield cluster
    cluster.stop()
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous


def _release_requeued(slurm, job: str) -> None:
    """Slurm holds a requeued job back for a while (BeginTime); the test cluster lets it start at once."""
    def requeued():
        out = slurm.run("squeue", "--array", "--noheader", "--format=%i %T", "--jobs", job.split("_")[0])
        return any(line.split()[:2] == [job, "PENDING"] for line in out.splitlines())

    _wait_for(requeued, 120, f"job {job} to be requeued")
    slurm.run("scontrol", "update", f"JobId={job}", "StartTime=now")


SLURM_CPU = ["--executor", "slurm", "--slurm", "gpus_per_task=0", "--slurm", "cpus_per_task=1",
             "--slurm", "time_min=10"]


@pytest.mark.slow
def test_slurm_runs_a_suite_teachers_first_and_records_the_jobs(tmp_path, slurm, capsys):
    suite, results = write_suite(tmp_path), tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), *SLURM_CPU]) == 0, slurm.logs()
    out, err = capsys.readouterr()
    assert "submitted to Slurm" in err and "3 done" in err and "| KD+TeKAP (L)" in out
    found = records(results)
    assert len(found) == 3 and set(attempts(results).values()) == {1}
    assert all(r["provenance"]["slurm_job"] for r in found)
    teacher = next(r for r in found if r["cells"][0]["row"] == "Teacher")
    students = [r for r in found if r["cells"][0]["row"] != "Teacher"]
    assert all(s["provenance"]["started"] >= teacher["provenance"]["finished"] for s in students)
    assert len({s["provenance"]["slurm_job"].split("_")[0] for s in students}) == 1  # one array, after the teacher's
    submission = json.loads(next((results / "exec" / "submissions").glob("*.json")).read_text())
    assert set(submission["jobs"]) == {r["run_id"] for r in found}
    # nothing left to do: nothing is submitted
    assert main(["run", str(suite), "--results", str(results), *SLURM_CPU, "--quiet"]) == 0
    assert len(list((results / "exec" / "submissions").glob("*.json"))) == 1


@pytest.mark.slow
def test_slurm_preemption_requeues_and_kill_resumes_to_the_same_record(tmp_path, slurm, capsys):
    suite = write_suite(tmp_path, epochs=8)
    reference, results = tmp_path / "reference", tmp_path / "results"
    assert main(["run", str(suite), "--results", str(reference), "--quiet"]) == 0
    assert main(["run", str(suite), "--results", str(results), *SLURM_CPU, "--detach"]) == 0
    assert "detached" in capsys.readouterr().err
    assert main(["status", str(suite), "--results", str(results)]) == 0
    assert "slurm job" in capsys.readouterr().out

    jobs = json.loads(next((results / "exec" / "submissions").glob("*.json")).read_text())["jobs"]
    # preemption: Slurm's USR2 warning makes submitit requeue the task, which resumes from its checkpoint
    preempted = _wait_for(lambda: _student_checkpoint(results), 300, "a student's checkpoint under Slurm")
    slurm.run("scancel", "--signal=USR2", jobs[preempted])
    _release_requeued(slurm, jobs[preempted])
    # a hard kill of the other student's task: it ends without a record
    other = next(r for r in jobs if r != preempted and json.loads((results / "exec" / "plan.json").read_text())
                 ["runs"][r].get("teacher"))
    _wait_for(lambda: (results / "exec" / "runs" / other / "attempt-1" / "checkpoint.pt").exists(), 300,
              "the other student's checkpoint")
    slurm.run("scancel", "--signal=KILL", "--full", jobs[other])

    def settled():
        assert main(["status", str(suite), "--results", str(results)]) == 0
        out = capsys.readouterr().out
        return out if "running" not in out and "pending" not in out else None

    out = _wait_for(settled, 300, "the Slurm jobs to end")
    assert "ended without a record" in out, out + slurm.logs()
    # running the suite again submits only the killed run, which resumes from its last checkpoint
    assert main(["run", str(suite), "--results", str(results), *SLURM_CPU, "--quiet"]) == 0, slurm.logs()
    resumed = {r["run_id"]: r for r in records(results)}
    assert resumed[other]["provenance"]["resumed_after_epoch"] >= 1
    assert resumed[preempted]["provenance"]["resumed_after_epoch"] >= 1
    expected = {r["run_id"]: r for r in records(reference)}
    assert {k: comparable(v) for k, v in resumed.items()} == {k: comparable(v) for k, v in expected.items()}
    for run_id in (preempted, other):
        for name, tensor in weights(reference, run_id).items():
            assert torch.equal(tensor, weights(results, run_id)[name]), name


@pytest.mark.slow
def test_slurm_failed_teacher_skips_its_students(tmp_path, slurm, capsys):
    suite = write_suite(tmp_path)
    suite.write_text(suite.read_text().replace("[teacher_recipe]\nepochs = 2", "[teacher_recipe]\nepochs = 2\nlr = 1e8"))
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), *SLURM_CPU]) == 1, slurm.logs()
    err = capsys.readouterr().err
    assert "3 run(s) did not finish on Slurm" in err and "TrainingDivergedError" in err, err
    assert main(["status", str(suite), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "1 failed, 2 skipped" in out and out.count("which failed") == 2, out
    assert records(results) == []
