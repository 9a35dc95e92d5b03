"""MLflow: one MLflow run per attempt in the experiment named after the suite; the settings as params.
Optional: ``pip install mlflow``. Without ``MLFLOW_TRACKING_URI`` the store is the SQLite file
results/<suite>/mlflow.db (``mlflow ui --backend-store-uri sqlite:///results/<suite>/mlflow.db``): MLflow 3
refuses its old file store (./mlruns) unless told to, and SQLite serialises the writes of parallel workers.
"""
from __future__ import annotations

import os
import re
from typing import Any

from tekapbench.trackers.base import TRACKERS, Tracker

RUN_TAG = "tekapbench.attempt"


def mlflow_name(key: str) -> str:
    """MLflow allows letters, digits and ``_-. :/`` in names: the term ``kd+tekap`` becomes ``kd_tekap``."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", key)


@TRACKERS.register("mlflow")
class MlflowTracker(Tracker):
    """MLflow runs, experiment = suite (optional: pip install mlflow)"""

    package = "mlflow"
    install = "pip install mlflow"

    def start(self, run_info: dict[str, Any], hparams: dict[str, Any]) -> None:
        import mlflow

        self.client = mlflow.tracking.MlflowClient(
            tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(self.suite_dir / 'mlflow.db').resolve()}")
        experiment = self.client.get_experiment_by_name(run_info["suite"])
        experiment_id = (experiment.experiment_id if experiment else
                         self.client.create_experiment(run_info["suite"]))
        attempt = f"{run_info['run_id']}/{run_info['attempt']}"
        # a resumed attempt continues its MLflow run
        found = self.client.search_runs([experiment_id], filter_string=f"tags.`{RUN_TAG}` = '{attempt}'")
        if found:
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self.client.create_run(experiment_id, run_name=run_info["label"],
                                                 tags={RUN_TAG: attempt}).info.run_id
            for key, value in hparams.items():
                self.client.log_param(self.run_id, mlflow_name(key), str(value)[:6000])

    def catch_up(self, history: list[dict[str, Any]]) -> None:
        logged = {m.step for m in self.client.get_metric_history(self.run_id, "accuracy/test")}
        super().catch_up([entry for entry in history if entry["epoch"] not in logged])

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(mlflow_name(key), float(value), now, epoch)
                                                    for key, value in metrics.items()])

    def finish(self, status: str = "success") -> None:
        self.client.set_terminated(self.run_id, status="FINISHED" if status == "success" else "KILLED")
