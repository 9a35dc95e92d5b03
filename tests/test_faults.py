"""Faults: kill -9 at every kind of file write, a claim holder paused past the claim's timeout, damaged
claims, a pid given to another process, a parent of local workers killed, thread counts that changed.
What must hold: nothing finished is lost or changes once its record exists, nothing is trained twice, and
a resumed suite ends with the records of an uninterrupted one. (Corrupt records, bad values: their own
test files.)"""
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tekapbench.cli import main
from tekapbench.results.claims import ClaimInfo, current_claim, process_start, try_claim

HERE = Path(__file__).parent
FAST_CLAIMS = {"TEKAPBENCH_CLAIM_TTL": "2", "TEKAPBENCH_CLAIM_INTERVAL": "0.2"}
SUITE = """
[suite]
name = "faults"
seeds = [0]
cpu_threads = {threads}

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
"""


def write_suite(folder: Path, *, epochs: int = 2, threads: int = 1) -> Path:
    path = folder / "faults.toml"
    path.write_text(SUITE.format(epochs=epochs, threads=threads))
    return path


def tekapbench(*args, env: dict | None = None, wait: bool = True, **kwargs):
    command = [sys.executable, str(HERE / "fault_injection.py"), *map(str, args), "--tracker", "none"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **(env or {})}, **kwargs)
    if wait:
        process.out = process.communicate(timeout=600)[0]
    return process


def comparable(record: dict) -> dict:
    history = [{k: v for k, v in e.items() if k != "seconds"} for e in record["history"]]
    teacher = {k: v for k, v in (record["teacher"] or {}).items() if k != "weights"}  # its path: another folder
    return {"metrics": record["metrics"], "history": history, "spec": record["spec"], "teacher": teacher}


def records(results: Path) -> dict[str, dict]:
    return {p.parent.parent.name: json.loads(p.read_text()) for p in results.glob("faults/runs/*/attempt-*/record.json")}


def files_of(attempt: Path) -> dict[str, str]:
    """Every file of an attempt (leftover temporaries aside) with its sha256."""
    return {str(p.relative_to(attempt)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(attempt.rglob("*")) if p.is_file()}


def teacher_and_student(results: Path) -> tuple[str, str]:
    plan = json.loads((results / "faults" / "plan.json").read_text())
    teacher = next(r for r, spec in plan["runs"].items() if not spec.get("teachers"))
    return teacher, next(r for r in plan["runs"] if r != teacher)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The suite run without faults, with the list of the file commits it made, in order."""
    folder = tmp_path_factory.mktemp("reference")
    suite = write_suite(folder)
    log = folder / "writes.txt"
    done = tekapbench("run", suite, "--results", folder / "results", "--quiet", env={"FAULT_LOG": str(log)})
    assert done.returncode == 0, done.out
    writes = [Path(line.split("\t")[1]).relative_to(folder / "results") for line in log.read_text().splitlines()]
    return folder, suite, writes


def student_writes(reference) -> list[Path]:
    """The writes of the suite once its teacher is done, in order: plan.json, then every kind of file write
    a run makes (the teacher's are the same code)."""
    folder, _, writes = reference
    teacher, _ = teacher_and_student(folder / "results")
    return [w for w in writes if teacher not in str(w)]


@pytest.mark.slow
def test_every_kind_of_file_write_is_listed(reference):
    kinds = {w.name for w in student_writes(reference)}
    assert {"plan.json", "00000001.json", "history.jsonl", "checkpoint.pt", "checkpoint.prev.pt", "model.pt",
            "record.json"} <= kinds, kinds


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", range(1, 11))
def test_kill_9_at_a_file_write_resumes_to_the_records_of_an_uninterrupted_run(reference, tmp_path, kill_at):
    folder, suite, _ = reference
    teacher, student = teacher_and_student(folder / "results")
    writes = student_writes(reference)
    if kill_at > len(writes):
        pytest.skip(f"the run makes {len(writes)} writes")
    results = tmp_path / "results"
    # the teacher done already, so the student's writes are counted from 1 (plan.json first)
    shutil.copytree(folder / "results" / "faults" / "runs" / teacher, results / "faults" / "runs" / teacher)
    killed = tekapbench("run", suite, "--results", results, "--quiet", env={"FAULT_KILL_AT": str(kill_at)})
    assert killed.returncode == -signal.SIGKILL, (writes[kill_at - 1], killed.out)
    # the rerun resumes; a temporary file of plan.json is removed once older than the claims' timeout (another
    # invocation may be writing it): 2 s here, less than the time the rerun takes to start
    done = tekapbench("run", suite, "--results", results, "--quiet", env=FAST_CLAIMS)
    assert done.returncode == 0, (writes[kill_at - 1], done.out)
    expected = {r: comparable(v) for r, v in records(folder / "results").items()}
    assert {r: comparable(v) for r, v in records(results).items()} == expected, writes[kill_at - 1]
    run = results / "faults" / "runs" / student
    assert [p.name for p in run.glob("attempt-*")] == ["attempt-1"]  # trained once, in one attempt
    assert not list(results.rglob("*.tmp")), writes[kill_at - 1]  # what the killed write left is gone
    assert not list(results.rglob("failure.json"))
    assert torch.equal(*(torch.load(r / "faults/runs" / student / "attempt-1/model.pt", weights_only=True)
                         ["model"]["fc.weight"] for r in (folder / "results", results)))


@pytest.mark.slow
def test_a_claim_holder_paused_past_the_timeout_writes_nothing_into_the_run_it_lost(reference, tmp_path):
    """SIGSTOP mid-training for longer than the claim's ttl; another invocation takes the run over and
    finishes it; SIGCONT: the first process finds it lost the claim and changes none of the run's files."""
    folder, _, _ = reference
    suite = write_suite(tmp_path, epochs=6)
    teacher, _ = teacher_and_student(folder / "results")
    results = tmp_path / "results"
    shutil.copytree(folder / "results" / "faults" / "runs" / teacher, results / "faults" / "runs" / teacher)
    fast = FAST_CLAIMS
    first = tekapbench("run", suite, "--results", results, env=fast, wait=False)
    deadline = time.time() + 300
    while not [p for p in results.glob("faults/runs/*/attempt-*/checkpoint.pt") if teacher not in str(p)]:
        assert time.time() < deadline and first.poll() is None, "no student checkpoint"
        time.sleep(0.05)
    first.send_signal(signal.SIGSTOP)
    try:
        time.sleep(3)  # past the ttl: its claim is stale
        second = tekapbench("run", suite, "--results", results, "--quiet", env=fast)
        assert second.returncode == 0, second.out
        (attempt,) = [p.parent for p in results.glob("faults/runs/*/attempt-*/record.json")
                      if teacher not in str(p)]
        before = files_of(attempt)
    finally:
        first.send_signal(signal.SIGCONT)
    out = first.communicate(timeout=300)[0]
    assert files_of(attempt) == before, out  # model.pt, checkpoint.pt, record, history, run.log: untouched
    assert not (attempt / "failure.json").exists()
    assert "took over its claim" in out


# ---------------------------------------------------------------------------------------- claims

def test_a_damaged_live_claim_is_not_free_until_it_ages(tmp_path):
    for damage in (b"", b"{", b"\xff\xfe", b"[1]", b"{}"):
        run_dir = tmp_path / str(len(list(tmp_path.iterdir())))
        holder = try_claim(run_dir, interval=3600)
        holder.path.write_bytes(damage)  # damaged while its holder lives
        assert try_claim(run_dir) is None, damage
        claim = current_claim(run_dir)
        assert claim.is_live() and "damaged" in claim.holder()
        old = time.time() - 3600
        os.utime(holder.path, (old, old))  # written an hour ago: no holder alive would let it age so
        taken = try_claim(run_dir)
        assert taken is not None and taken.info.generation == 2, damage
        taken.release()
        holder.release()
        assert current_claim(run_dir).generation == 2  # the old holder, superseded, writes nothing


def test_a_claim_whose_pid_now_belongs_to_another_process_is_free_at_once(tmp_path):
    folder = tmp_path / "run" / "claims"
    folder.mkdir(parents=True)
    now = time.time()
    # this pid is alive, but started at another time than the process that wrote the claim
    (folder / "00000001.json").write_text(json.dumps({
        "generation": 1, "host": socket.gethostname(), "pid": os.getpid(), "job": None, "started": now,
        "heartbeat": now, "ttl": 600, "process_start": process_start(os.getpid()) - 1}))
    assert not ClaimInfo.read(folder / "00000001.json").is_live()
    claim = try_claim(tmp_path / "run")
    assert claim is not None
    claim.release()


def test_a_holder_whose_heartbeat_stopped_past_the_ttl_stops_before_anyone_takes_over(tmp_path):
    from tekapbench.errors import ClaimLostError

    claim = try_claim(tmp_path / "run", interval=3600, ttl=1)
    assert claim.held()
    claim.info = ClaimInfo(**{**claim.info.to_dict(), "heartbeat": time.time() - 2})  # as after a pause
    with pytest.raises(ClaimLostError, match="presumed dead"):
        claim.ensure_held()
    claim.release()


def test_a_failure_is_never_written_into_a_finished_attempt(tmp_path):
    from tekapbench.results.store import ResultStore

    store = ResultStore(tmp_path, "s")
    attempt = store.attempt_for("r", force=False)
    store.write_record(attempt, {"run_id": "r"})
    assert store.write_failure("r", {"error": "late"}) is None
    assert not (attempt / "failure.json").exists()


# ---------------------------------------------------------------------------------------- fingerprints

def test_the_weights_fingerprint_is_of_the_tensors_not_of_the_file(tmp_path):
    """torch.save given a path names the archive after the (temporary) file; a teacher trained again with
    the same tensors must keep its fingerprint, so its students' checkpoints stay usable."""
    from tekapbench.models.checkpoints import read_weights
    from tekapbench.results.provenance import sha256_file, tensors_sha256

    state = torch.nn.Linear(4, 3).state_dict()
    torch.save({"model": state}, tmp_path / "a.pt")
    torch.save({"model": {k: v.clone() for k, v in state.items()}}, tmp_path / "b.pt")
    assert sha256_file(tmp_path / "a.pt") != sha256_file(tmp_path / "b.pt")
    loaded = [read_weights(tmp_path / f"{n}.pt", "test").state_dict for n in "ab"]
    assert tensors_sha256(loaded[0]) == tensors_sha256(loaded[1]) == tensors_sha256(state)
    state["bias"] = state["bias"] + 1e-7
    assert tensors_sha256(state) != tensors_sha256(loaded[0])


def test_a_record_never_holds_a_non_finite_number():
    from tekapbench.engine.runner import non_finite

    assert non_finite({"metrics": {"a": 1.0}, "history": [{"x": 2}, {"test_nll": 1.5}]}) is None
    assert non_finite({"metrics": {"a": 1.0}, "history": [{"x": 2}, {"test_nll": float("nan")}]}) == "history.1.test_nll"
    assert non_finite({"metrics": {"top1": float("inf")}}) == "metrics.top1"


# ---------------------------------------------------------------------------------------- threads

@pytest.mark.slow
def test_a_cpu_record_trained_with_another_thread_count_is_trained_again_in_a_new_attempt(reference, tmp_path,
                                                                                         capsys):
    folder, _, _ = reference
    results = tmp_path / "results"
    shutil.copytree(folder / "results", results)
    suite = write_suite(tmp_path, threads=2)
    assert main(["run", str(suite), "--results", str(results), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 to run" in out and out.count("  to run  ") == 2, out  # both were trained with 1 thread
    assert main(["run", str(suite), "--results", str(results), "--dry-run", "--threads", "1"]) == 0
    assert "to run" not in capsys.readouterr().out.split("\n", 1)[1]


# ---------------------------------------------------------------------------------------- workers

@pytest.mark.slow
def test_local_workers_stop_when_their_parent_is_killed(reference, tmp_path):
    suite = write_suite(tmp_path, epochs=40)
    results = tmp_path / "results"
    parent = tekapbench("run", suite, "--results", results, "--workers", "2", "--threads", "1", wait=False)
    deadline = time.time() + 300
    while not list(results.glob("faults/runs/*/attempt-*/checkpoint.pt")):
        assert time.time() < deadline and parent.poll() is None, "no checkpoint"
        time.sleep(0.1)
    workers = {c.pid for d in results.glob("faults/runs/*") if (c := current_claim(d)) and c.is_live()}
    assert workers and parent.pid not in workers
    parent.send_signal(signal.SIGKILL)
    parent.communicate(timeout=60)
    deadline = time.time() + 120
    while any(_alive(pid) for pid in workers):
        assert time.time() < deadline, "a worker outlived its killed parent"
        time.sleep(0.2)
    for run_dir in results.glob("faults/runs/*"):
        claim = current_claim(run_dir)
        assert claim is None or not claim.is_live()  # released on the way out (SIGTERM)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its dead parent's reaper) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
