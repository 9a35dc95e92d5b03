"""Experiment trackers: where each run's per-epoch numbers and settings go besides history.jsonl.

``tensorboard`` (the default) writes event files under results/<suite>/tensorboard/; ``wandb`` and ``mlflow``
are optional (``pip install wandb mlflow``) and imported only when chosen. A suite picks them in
``[tracking] trackers = [...]``, ``tekapbench run --tracker NAME`` overrides that.
"""
from tekapbench.trackers.base import TRACKERS, Tracker, TrackerCallback, check_trackers, hparams_of  # noqa: F401
from tekapbench.trackers import tensorboard, wandb, mlflow  # noqa: F401,E402  (each registers itself)
