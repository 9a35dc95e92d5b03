"""What a run leaves to watch while it trains, beside its checkpoint (the run's attempt folder):

    history.jsonl   one JSON line per finished epoch (the entry the record's history will hold: epoch, lr,
                    train_loss, train_acc, loss_terms, test_acc, test_top5, test_nll, seconds), flushed and
                    fsynced at the end of each epoch, so another host sharing the results folder reads it
    run.log         the run's log messages with their time (appended to when the run resumes)

On resume the history file is rewritten to the epochs the resumed checkpoint holds, so an epoch that
finished after the last checkpoint (none today: the checkpoint is written first) or a line half written
when the process died is never there twice or torn. Each is a trainer callback (TrainJob(callbacks=...)):
the one training loop calls ``on_start(trainer)`` before the first epoch, ``on_batch(epoch, step, steps)``
after each step when a callback has them, and the callback itself with each epoch's entry.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
from pathlib import Path
from typing import Any

from tekapbench.atomic import atomic_path

HISTORY = "history.jsonl"
RUN_LOG = "run.log"
LOGGER = "tekapbench"
# The run a message is about, while a cohort works on one of its members: that member's run.log takes it,
# the others' do not. None (a run trained alone, or the cohort's own messages): every open run.log.
current_run: contextvars.ContextVar[str | None] = contextvars.ContextVar("tekapbench_current_run", default=None)


@contextlib.contextmanager
def member_context(run_id: str):
    token = current_run.set(run_id)
    try:
        yield
    finally:
        current_run.reset(token)


def _line(entry: dict[str, Any]) -> str:
    return json.dumps(entry, allow_nan=True) + "\n"


class HistoryFile:
    """Appends each epoch's entry to ``<workdir>/history.jsonl``; fsynced at the end of every epoch."""

    def __init__(self, workdir: Path):
        self.path = Path(workdir) / HISTORY

    def on_start(self, trainer) -> None:
        """A fresh run starts an empty file; a resumed one keeps exactly the checkpoint's epochs."""
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(_line(e) for e in trainer.history))

    def __call__(self, entry: dict[str, Any]) -> None:
        with open(self.path, "a") as fh:
            fh.write(_line(entry))
            fh.flush()
            os.fsync(fh.fileno())


def read_history(folder: Path) -> list[dict[str, Any]]:
    """The epochs in ``<folder>/history.jsonl`` (none when it is absent); a torn last line (a writer killed
    mid-write, or a read racing the writer) is left out."""
    path = Path(folder) / HISTORY
    try:
        text = path.read_text()
    except OSError:
        return []
    entries = []
    for line in text.splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return entries


class RunLog:
    """The ``tekapbench`` logger's messages, while the run trains, also into ``<workdir>/run.log`` (those
    about run ``run_id`` or about no run in particular, when several runs train at once), as long as
    ``held()`` says this process still holds the run (a process presumed dead writes nothing into it)."""

    def __init__(self, workdir: Path, run_id: str | None = None, held=None):
        self.path = Path(workdir) / RUN_LOG
        self.run_id = run_id
        self.held = held
        self.handler: logging.Handler | None = None

    def _mine(self, record: logging.LogRecord) -> bool:
        about = current_run.get()
        return ((about is None or self.run_id is None or about == self.run_id)
                and (self.held is None or self.held()))

    def __enter__(self) -> "RunLog":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(self.path, mode="a", encoding="utf-8")
        self.handler.setLevel(logging.DEBUG)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.handler.addFilter(self._mine)
        logger = logging.getLogger(LOGGER)
        logger.addHandler(self.handler)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)  # the file gets INFO whatever the terminal shows
        return self

    def __exit__(self, *exc) -> None:
        if self.handler is not None:
            logging.getLogger(LOGGER).removeHandler(self.handler)
            self.handler.close()
            self.handler = None
