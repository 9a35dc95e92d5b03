"""TensorBoard event files: results/<suite>/tensorboard/<run label>_<run id>/<attempt>/, so that
``tensorboard --logdir results/<suite>`` shows a suite's runs side by side. Scalars per epoch (each loss
term, lr, accuracies, seconds) and the run's settings in the HPARAMS tab. A resumed run purges every step
written before and writes the checkpoint's epochs again: each epoch is there once, also one the killed
process had kept in its checkpoint but not yet logged."""
from __future__ import annotations

import re
from typing import Any

from tekapbench.trackers.base import TRACKERS, Tracker, metrics_of

FOLDER = "tensorboard"


def run_folder_name(label: str, run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", label).strip("_") + f"_{run_id}"


@TRACKERS.register("tensorboard")
class TensorBoardTracker(Tracker):
    """TensorBoard event files under results/<suite>/tensorboard/ (default)"""

    package = "tensorboard"
    install = "pip install tensorboard"

    def start(self, run_info: dict[str, Any], hparams: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        self.log_dir = (self.suite_dir / FOLDER / run_folder_name(run_info["label"], run_info["run_id"])
                        / run_info["attempt"])
        resumed = run_info.get("start_epoch", 1) > 1
        # purge_step 1: TensorBoard's reader drops the events of steps >= 1 of the earlier event files
        self.writer = SummaryWriter(str(self.log_dir), purge_step=1 if resumed else None)
        example = {"epoch": 0, "lr": 0.0, "train_loss": 0.0, "train_acc": 0.0, "test_acc": 0.0, "test_top5": 0.0,
                   "test_nll": 0.0, "seconds": 0.0}
        experiment, session_start, self._session_end = hparams_summary(
            hparams, {name: 0.0 for name in metrics_of(example)})
        for summary in (experiment, session_start):
            self.writer.file_writer.add_summary(summary)

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, epoch)
        self.writer.flush()  # readable while the run trains

    def finish(self, status: str = "success") -> None:
        if status == "success":
            self.writer.file_writer.add_summary(self._session_end)
        self.writer.close()
