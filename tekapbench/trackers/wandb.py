"""Weights & Biases: one wandb run per attempt (project: the suite's name), its settings as the config.
Optional: ``pip install wandb``; offline with ``WANDB_MODE=offline`` (files under the attempt folder)."""
from __future__ import annotations

from typing import Any

from tekapbench.trackers.base import TRACKERS, Tracker


@TRACKERS.register("wandb")
class WandbTracker(Tracker):
    """Weights & Biases runs, project = suite (optional: pip install wandb)"""

    package = "wandb"
    install = "pip install wandb"

    def start(self, run_info: dict[str, Any], hparams: dict[str, Any]) -> None:
        import wandb

        folder = self.suite_dir / "wandb"
        folder.mkdir(parents=True, exist_ok=True)
        # the same id for the same attempt: a resumed run continues its wandb run; steps already logged are
        # not logged again (wandb keeps steps increasing)
        self.run = wandb.init(project=run_info["suite"], name=run_info["label"], dir=str(folder),
                              id=f"{run_info['run_id']}-{run_info['attempt']}", resume="allow",
                              config=hparams)

    def catch_up(self, history: list[dict[str, Any]]) -> None:
        # wandb drops steps below the run's current one (those a resumed online run already holds)
        super().catch_up([entry for entry in history if entry["epoch"] >= self.run.step])

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=epoch)

    def finish(self, status: str = "success") -> None:
        self.run.finish(exit_code=0 if status == "success" else 1)
