"""Watching a run while it trains: history.jsonl and run.log beside the checkpoint (each epoch once, also
across a resume), progress bars on a terminal and one line per epoch elsewhere."""
import json
import os
import pty
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tekapbench import progress as progress_module
from tekapbench.cli import main
from tekapbench.engine.watch import read_history

ROOT = Path(__file__).resolve().parents[1]

SUITE = """
[suite]
name = "watch"
seeds = [0]
cpu_threads = 1

[data]
datasets = ["digits"]

[recipe]
epochs = {epochs}

[[pairs]]
teacher = "resnet8_tiny"
student = "resnet8_tiny"

[[methods]]
label = "Student"
method = "vanilla"
"""


def write_suite(tmp_path: Path, epochs: int) -> Path:
    path = tmp_path / "watch.toml"
    path.write_text(textwrap.dedent(SUITE).format(epochs=epochs))
    return path


def attempt_of(results: Path) -> Path:
    (attempt,) = results.glob("watch/runs/*/attempt-*")
    return attempt


@pytest.mark.slow
def test_a_resumed_run_has_each_epoch_once_in_its_history_file(tmp_path, monkeypatch, capsys):
    suite, results = write_suite(tmp_path, epochs=3), tmp_path / "results"
    real_epoch = progress_module.Progress.epoch

    def killed_after_epoch_2(self, entry):
        real_epoch(self, entry)
        if entry["epoch"] == 2:
            raise KeyboardInterrupt  # after the checkpoint and the history line of epoch 2

    monkeypatch.setattr(progress_module.Progress, "epoch", killed_after_epoch_2)
    assert main(["run", str(suite), "--results", str(results), "--quiet"]) == 130
    attempt = attempt_of(results)
    assert [e["epoch"] for e in read_history(attempt)] == [1, 2]
    # a writer that died mid-line, and an epoch the checkpoint does not hold: both go on resume
    with open(attempt / "history.jsonl", "a") as fh:
        fh.write(json.dumps({**read_history(attempt)[-1], "epoch": 3}) + '\n{"epoch": 4, "lr"')
    monkeypatch.setattr(progress_module.Progress, "epoch", real_epoch)
    assert main(["run", str(suite), "--results", str(results), "--quiet"]) == 0

    record = json.loads((attempt / "record.json").read_text())
    lines = (attempt / "history.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == record["history"]
    assert [e["epoch"] for e in record["history"]] == [1, 2, 3]
    assert record["provenance"]["resumed_after_epoch"] == 2
    log = (attempt / "run.log").read_text()
    for epoch in (1, 2, 3):
        assert log.count(f"epoch {epoch}/3:") == 1, log
    assert "interrupted" in log and "resuming after epoch 2" in log


def _tekapbench(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-m", "tekapbench", "run", *args], cwd=ROOT, env=env, **kwargs)


@pytest.mark.slow
def test_output_to_a_file_has_one_line_per_epoch_and_no_bars(tmp_path):
    suite = write_suite(tmp_path, epochs=2)
    with open(tmp_path / "err.txt", "w") as err:
        process = _tekapbench([str(suite), "--results", str(tmp_path / "results")], stdout=subprocess.DEVNULL,
                              stderr=err)
        assert process.wait(timeout=300) == 0
    text = (tmp_path / "err.txt").read_text()
    assert "\r" not in text and "█" not in text, text
    lines = text.splitlines()
    assert sum("epoch 1/2:" in line for line in lines) == 1 and sum("epoch 2/2:" in line for line in lines) == 1
    assert any("top-1" in line for line in lines)


@pytest.mark.slow
def test_a_terminal_gets_progress_bars(tmp_path):
    suite = write_suite(tmp_path, epochs=1)
    leader, follower = pty.openpty()
    process = _tekapbench([str(suite), "--results", str(tmp_path / "results")], stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks: list[bytes] = []

    def drain():  # a full pseudo-terminal would block the writer
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the writer closed its end
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    assert process.wait(timeout=300) == 0
    reader.join(timeout=10)
    os.close(leader)
    text = b"".join(chunks).decode(errors="replace")
    assert "batch/s" in text or "batch]" in text, text  # the run's bar, in batches, with its rate
    assert "suite watch" in text and "run/s" in text or "run]" in text  # the suite's bar
    assert "epoch 1/1" in text and "\r" in text
    assert "top-1" in text  # messages still come, above the bars


@pytest.mark.slow
def test_status_and_curves_show_a_run_while_it_trains(tmp_path, monkeypatch, capsys):
    suite, results = write_suite(tmp_path, epochs=3), tmp_path / "results"
    real_epoch = progress_module.Progress.epoch
    seen = {}

    def look_after_epoch_1(self, entry):
        real_epoch(self, entry)
        capsys.readouterr()
        assert main(["status", str(suite), "--results", str(results)]) == 0
        seen["status"] = capsys.readouterr().out
        assert main(["plot", "--results", str(results), "--kind", "curves", "--out", str(tmp_path / "plots")]) == 0
        seen["test_acc"] = entry["test_acc"]
        raise KeyboardInterrupt

    monkeypatch.setattr(progress_module.Progress, "epoch", look_after_epoch_1)
    assert main(["run", str(suite), "--results", str(results), "--quiet"]) == 130
    running = next(line for line in seen["status"].splitlines() if " running " in line)
    assert f"epoch 1/3, test {seen['test_acc']:.2f}%, about " in running and " left" in running
    assert list((tmp_path / "plots").glob("curves_*.png"))  # drawn from history.jsonl: no record yet

    assert main(["status", str(suite), "--results", str(results)]) == 0
    pending = next(line for line in capsys.readouterr().out.splitlines() if " pending " in line)
    assert "resumes from its last checkpoint (epoch 1/3" in pending


@pytest.mark.slow
def test_a_run_killed_in_another_process_shows_its_epochs_and_resumes_each_epoch_once(tmp_path, capsys):
    """The suite trains in another process: `status` here shows its epoch k/N; SIGKILL (no handler runs, a
    line or a checkpoint may be half-written), then a resume: history, log and event files hold each
    epoch exactly once, equal to the record."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    epochs = 16  # about 1.5 s each on 2 cores; `status` and the kill take a few
    suite, results = write_suite(tmp_path, epochs=epochs), tmp_path / "results"
    process = _tekapbench([str(suite), "--results", str(results), "--quiet"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not [h for h in results.glob("watch/runs/*/attempt-*/history.jsonl") if read_history(h.parent)]:
            assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first epoch"
            time.sleep(0.02)
        capsys.readouterr()
        assert main(["status", str(suite), "--results", str(results)]) == 0
        running = next(line for line in capsys.readouterr().out.splitlines() if " running " in line)
        assert re.search(rf"epoch [1-9]/{epochs}, test \d+\.\d\d%, about .* left", running), running
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    attempt = attempt_of(results)
    assert not (attempt / "record.json").exists(), "the run finished before it was killed: make it longer"
    killed_after = len(read_history(attempt))
    assert main(["run", str(suite), "--results", str(results), "--quiet"]) == 0

    record = json.loads((attempt / "record.json").read_text())
    assert [e["epoch"] for e in record["history"]] == list(range(1, epochs + 1))
    assert record["provenance"]["resumed_after_epoch"] in (killed_after, killed_after + 1)
    assert [json.loads(line) for line in (attempt / "history.jsonl").read_text().splitlines()] == record["history"]
    log = (attempt / "run.log").read_text()
    for epoch in range(1, epochs + 1):
        assert log.count(f"epoch {epoch}/{epochs}:") == 1, log
    (events,) = results.glob(f"watch/tensorboard/*_{record['run_id']}/{attempt.name}")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    assert [(e.step, pytest.approx(e.value, abs=1e-4)) for e in accumulator.Scalars("accuracy/test")] == \
        [(e["epoch"], e["test_acc"]) for e in record["history"]]
