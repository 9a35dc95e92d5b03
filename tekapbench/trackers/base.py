"""The tracker interface, its registry, and the trainer callback that feeds the chosen trackers."""
from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from tekapbench.errors import UsageError
from tekapbench.registry import Registry


class Tracker(ABC):
    """One run's stream of numbers to one tracking tool. Made by ``Tracker(store_dir)`` (the suite's results
    folder), then ``start`` once (also when the run resumes: ``run_info['start_epoch'] > 1``), on a resume
    ``catch_up`` with the epochs the checkpoint holds, ``log_epoch`` after every finished epoch, ``finish``
    at the end (also when training stopped)."""

    package: str | None = None  # the module it imports: checked before anything trains
    install: str = ""  # how to get it

    def __init__(self, suite_dir: Path):
        self.suite_dir = Path(suite_dir)

    @abstractmethod
    def start(self, run_info: dict[str, Any], hparams: dict[str, Any]) -> None: ...

    @abstractmethod
    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...

    def catch_up(self, history: list[dict[str, Any]]) -> None:
        """On a resume, the epochs the checkpoint holds. A tracker is fed after each epoch's checkpoint is
        written, so a process killed in between kept epoch k without logging it: log what is missing, each
        epoch once. This default suits a tracker that starts afresh on every resume."""
        for entry in history:
            self.log_epoch(entry["epoch"], metrics_of(entry))

    def finish(self, status: str = "success") -> None:
        pass


TRACKERS: Registry[type[Tracker]] = Registry("tracker")


def check_trackers(names: list[str]) -> None:
    """Every name registered and its package importable; else one UsageError, before anything trains."""
    for name in names:
        tracker = TRACKERS.get(name)
        if tracker.package and importlib.util.find_spec(tracker.package) is None:
            raise UsageError(f"tracker {name!r} needs the Python package {tracker.package!r}, which is not installed: "
                             f"{tracker.install or f'pip install {tracker.package}'} (or choose other trackers: "
                             f"[tracking] trackers in the suite, or --tracker)")


def metrics_of(entry: dict[str, Any]) -> dict[str, float]:
    """An epoch's history entry as flat tracker metrics: each loss term, lr, accuracies, seconds."""
    metrics = {"loss/total": entry["train_loss"], "lr": entry["lr"], "accuracy/train": entry["train_acc"],
               "accuracy/test": entry["test_acc"], "accuracy/test_top5": entry["test_top5"],
               "test/nll": entry["test_nll"], "time/epoch_seconds": entry["seconds"]}
    metrics.update({f"loss/{name}": value for name, value in entry.get("loss_terms", {}).items()})
    return metrics


def hparams_of(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings (the run's spec: recipe, method, its terms and their TeKAP settings) as flat
    ``a.b.c`` keys with bool, int, float or str values (lists and None as text)."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(hparams_of(value, f"{name}."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                flat.update(hparams_of(item, f"{name}.{i}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


class TrackerCallback:
    """A trainer callback (engine/trainer.py) that starts the trackers once the resume point is known and
    gives them each epoch; ``finish`` is the runner's to call, however training ended."""

    def __init__(self, trackers: list[Tracker], run_info: dict[str, Any], hparams: dict[str, Any]):
        self.trackers, self.run_info, self.hparams = trackers, run_info, hparams
        self.started = False

    def on_start(self, trainer) -> None:
        info = {**self.run_info, "start_epoch": trainer.start_epoch}
        for tracker in self.trackers:
            tracker.start(info, self.hparams)
            if trainer.history:
                tracker.catch_up(trainer.history)
        self.started = True

    def __call__(self, entry: dict[str, Any]) -> None:
        metrics = metrics_of(entry)
        for tracker in self.trackers:
            tracker.log_epoch(entry["epoch"], metrics)

    def finish(self, status: str = "success") -> None:
        if self.started:
            for tracker in self.trackers:
                tracker.finish(status)
