"""Trackers: TensorBoard event files read back with tensorboard's own reader (each epoch once, also across
a resume), the [tracking] section and --tracker, and wandb / mlflow when they are installed."""
import json
import time
from pathlib import Path

import pytest

from tekapbench.cli import main
from tekapbench.errors import UsageError
from tekapbench.trackers import TRACKERS, TrackerCallback, check_trackers, hparams_of
from tekapbench.trackers.base import metrics_of


def entry(epoch: int) -> dict:
    return {"epoch": epoch, "lr": 0.1 / epoch, "train_loss": 2.0 / epoch, "train_acc": 10.0 * epoch,
            "loss_terms": {"ce": 1.5 / epoch, "kd+tekap": 0.5 / epoch}, "test_acc": 9.0 * epoch,
            "test_top5": 50.0 + epoch, "test_nll": 3.0 / epoch, "seconds": 1.25}


class FakeTrainer:
    """A trainer starting at ``start_epoch``: its checkpoint holds the epochs before it."""

    def __init__(self, start_epoch):
        self.start_epoch = start_epoch
        self.history = [entry(epoch) for epoch in range(1, start_epoch)]


SETTINGS = {"label": "digits resnet8_tiny KD+TeKAP seed 0", "arch": "resnet8_tiny", "seed": 0,
            "recipe": {"epochs": 3, "lr": 0.05, "milestones": [1]},
            "method": {"ce_weight": 1.0, "terms": [{"method": "kd", "weight": 1.0, "params": {"T": 4.0},
                                                    "tekap": {"level": "logit", "alpha": 0.5}}]}}
INFO = {"run_id": "0123456789abcdef", "label": "digits resnet8_tiny KD+TeKAP seed 0", "suite": "tracked",
        "attempt": "attempt-1", "epochs": 3}


def test_hparams_are_flat_and_keep_tekap_settings():
    flat = hparams_of(SETTINGS)
    assert flat["method.terms.0.tekap.level"] == "logit" and flat["method.terms.0.tekap.alpha"] == 0.5
    assert flat["recipe.milestones"] == "[1]" and flat["seed"] == 0
    assert metrics_of(entry(1))["loss/kd+tekap"] == 0.5


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def test_tensorboard_events_hold_each_epoch_once_across_a_resume(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    tracker = TRACKERS.get("tensorboard")
    first = TrackerCallback([tracker(tmp_path)], INFO, hparams_of(SETTINGS))
    first.on_start(FakeTrainer(1))
    for epoch in (1, 2):  # the process is killed after epoch 3's checkpoint, before epoch 3 is logged
        first(entry(epoch))
    first.finish("failed")
    time.sleep(1.1)  # a new event file name (its time in seconds)
    resumed = TrackerCallback([tracker(tmp_path)], INFO, hparams_of(SETTINGS))
    resumed.on_start(FakeTrainer(4))  # resumes after epoch 3
    resumed(entry(4))
    resumed.finish()

    (folder,) = (tmp_path / "tensorboard").iterdir()
    assert folder.name == "digits_resnet8_tiny_KD+TeKAP_seed_0_0123456789abcdef"
    found = scalars(folder / "attempt-1")
    for tag, value in metrics_of(entry(1)).items():
        assert [step for step, _ in found[tag]] == [1, 2, 3, 4], tag
        assert found[tag] == [(e, pytest.approx(metrics_of(entry(e))[tag], rel=1e-6)) for e in (1, 2, 3, 4)]
    accumulator = EventAccumulator(str(folder / "attempt-1"))
    accumulator.Reload()
    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert start.hparams["method.terms.0.tekap.level"].string_value == "logit"


def test_a_chosen_tracker_that_is_not_installed_is_a_clear_error(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(UsageError, match="tracker 'wandb' needs the Python package 'wandb'.*pip install wandb"):
        check_trackers(["wandb"])
    suite = tmp_path / "t.toml"
    suite.write_text(SUITE.format(trackers='["wandb"]'))
    assert main(["run", str(suite), "--results", str(tmp_path / "results"), "--quiet"]) == 2
    assert not (tmp_path / "results").exists()  # nothing ran
    suite.write_text(SUITE.format(trackers='["tensorbored"]'))
    assert main(["run", str(suite), "--results", str(tmp_path / "results"), "--quiet"]) == 2
    assert main(["run", str(suite.with_name("x.toml")), "--tracker", "nope", "--dry-run"]) == 2


SUITE = """
[suite]
name = "tracked"
seeds = [0]
cpu_threads = 1

[data]
datasets = ["digits"]

[recipe]
epochs = 2

[tracking]
trackers = {trackers}

[[pairs]]
teacher = "resnet8_tiny"
student = "resnet8_tiny"

[[methods]]
label = "Student"
method = "vanilla"
"""


@pytest.mark.slow
def test_a_suite_run_writes_event_files_equal_to_its_history(tmp_path):
    pytest.importorskip("tensorboard")
    suite, results = tmp_path / "t.toml", tmp_path / "results"
    suite.write_text(SUITE.format(trackers='["tensorboard"]'))
    assert main(["run", str(suite), "--results", str(results), "--quiet"]) == 0
    (record_path,) = results.glob("tracked/runs/*/attempt-1/record.json")
    record = json.loads(record_path.read_text())
    (folder,) = (results / "tracked" / "tensorboard").glob(f"*_{record['run_id']}")
    found = scalars(folder / "attempt-1")
    for tag in ("accuracy/test", "loss/ce", "lr", "accuracy/train"):
        expected = [(e["epoch"], pytest.approx(metrics_of(e)[tag], rel=1e-6)) for e in record["history"]]
        assert found[tag] == expected, tag


def test_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracking = TrackerCallback([TRACKERS.get("wandb")(tmp_path)], INFO, hparams_of(SETTINGS))
    tracking.on_start(FakeTrainer(1))
    tracking(entry(1))
    tracking.finish()
    assert list((tmp_path / "wandb").rglob("*.wandb"))


def test_mlflow_local_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # a resume continues the same MLflow run; epoch 2, checkpointed but not logged when the process died,
    # is logged on resume, and epoch 1 is not logged twice
    for start, epochs in ((1, (1,)), (3, (3,))):
        tracking = TrackerCallback([TRACKERS.get("mlflow")(tmp_path)], INFO, hparams_of(SETTINGS))
        tracking.on_start(FakeTrainer(start))
        for epoch in epochs:
            tracking(entry(epoch))
        tracking.finish()
    client = tracking.trackers[0].client
    history = client.get_metric_history(tracking.trackers[0].run_id, "accuracy/test")
    assert sorted(m.step for m in history) == [1, 2, 3]
    # a term's name MLflow does not allow ("kd+tekap") arrives under the nearest allowed one
    assert [m.value for m in client.get_metric_history(tracking.trackers[0].run_id, "loss/kd_tekap")] == [0.5, 0.25, 0.5 / 3]
    assert client.get_run(tracking.trackers[0].run_id).data.params["method.terms.0.tekap.level"] == "logit"
