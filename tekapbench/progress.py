"""Progress of a suite, its runs, their epochs and batches, through the ``tekapbench`` logger.

Every message goes to the logger ``tekapbench`` (so each run's run.log has them too, engine/watch.py);
what a terminal shows is set by ``configure_logging`` (``run --quiet``: warnings only, ``--verbose``:
debug too). On a terminal (stderr a tty) tqdm draws two bars: the suite's runs, and the current run's
batches with its time estimate; messages are written above them. Elsewhere (Slurm logs, CI, a file):
no bar and no carriage return, one log line per epoch (loss, accuracies, seconds, estimated time left).
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

LOGGER = "tekapbench"
log = logging.getLogger(LOGGER)
log.addHandler(logging.NullHandler())  # a library user sees nothing unless they configure logging
_bars_open = 0  # live bars drawn now (messages then go through tqdm.write, so the bars stay whole)


class _Console(logging.StreamHandler):
    """stderr as it is at each message (pytest and redirections swap sys.stderr); above the bars while
    they are drawn; without the per-epoch lines then, which the bars show."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        if not _bars_open:
            return super().emit(record)
        if getattr(record, "epoch_line", False):
            return
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - as logging does for its own handlers
            self.handleError(record)


def console_handler() -> logging.Handler | None:
    return next((h for h in log.handlers if isinstance(h, _Console)), None)


def configure_logging(level: int = logging.INFO) -> None:
    """The terminal shows the ``tekapbench`` logger's messages from ``level`` up (one handler, replaced
    when called again). The logger itself passes INFO on whatever the terminal shows: run.log has it."""
    handler = console_handler()
    if handler is None:
        handler = _Console()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    handler.setLevel(level)
    log.setLevel(min(level, logging.INFO))
    log.propagate = False  # not twice when an application configured the root logger too


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """The runner's reporter; also a trainer callback (the epoch entries, and on a terminal the batches).

    ``quiet``: no bars (the messages still go to the logger, which the command line sets to warnings).
    ``live``: draw bars (default: when stderr is a terminal). A Progress that is not quiet, made where
    nothing configured logging (a Slurm task), shows INFO messages on stderr."""

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None, quiet: bool = False):
        self.stream = stream  # for the bars; None: sys.stderr
        self.quiet = quiet
        out = stream or sys.stderr
        self.live = not quiet and (bool(getattr(out, "isatty", lambda: False)()) if live is None else live)
        if not quiet and console_handler() is None:
            configure_logging()
        self._prefix = ""
        self._epochs = 0
        self._suite_bar = self._run_bar = None
        self._epoch_seconds: list[float] = []

    # -- bars ---------------------------------------------------------------------------------------
    def _bar(self, **kwargs):
        global _bars_open
        from tqdm import tqdm

        out = self.stream or sys.stderr
        try:
            width = os.get_terminal_size(out.fileno()).columns
        except (AttributeError, OSError, ValueError):
            width = 0
        _bars_open += 1
        # a terminal that does not tell its size (a pseudo-terminal of `script`, some CI consoles) says 0x0:
        # tqdm would then draw nothing
        return tqdm(file=out, mininterval=0.2, **({"dynamic_ncols": True} if width else {"ncols": 100, "nrows": 24}),
                    **kwargs)

    @staticmethod
    def _close(bar) -> None:
        global _bars_open
        if bar is not None:
            bar.close()
            _bars_open -= 1

    def close(self) -> None:
        self._close(self._run_bar)
        self._close(self._suite_bar)
        self._run_bar = self._suite_bar = None

    # -- messages -----------------------------------------------------------------------------------
    def note(self, text: str) -> None:
        log.info(f"note: {text}")

    def warning(self, text: str) -> None:
        log.warning(f"note: {text}")

    def suite(self, name: str, total: int, todo: int, *, forced: bool = False) -> None:
        if forced:
            log.info(f"suite {name}: {total} runs, all run again (--force)")
        else:
            log.info(f"suite {name}: {total} runs, {total - todo} already done, {todo} to run")
        if self.live and todo:
            self.close()
            self._suite_bar = self._bar(total=todo, desc=f"suite {name}", unit="run", position=0)

    def _start(self, prefix: str, epochs: int) -> None:
        self._close(self._run_bar)
        self._run_bar = None
        self._prefix, self._epochs, self._epoch_seconds = prefix, epochs, []

    def run_started(self, index: int, total: int, label: str, epochs: int, resumed_epoch: int) -> None:
        self._start(f"[{index}/{total}] {label}", epochs)
        resumed = f" (resuming after epoch {resumed_epoch})" if resumed_epoch else ""
        log.info(f"{self._prefix}{resumed}")

    def cohort_started(self, indices: list[int], total: int, labels: list[str], epochs: int,
                       resumed_epoch: int) -> None:
        """Runs trained as one cohort (engine/cohort.py): one bar for all, one epoch line per member."""
        first, last = min(indices), max(indices)
        self._start(f"[{first}-{last}/{total}] cohort of {len(labels)}" if last > first
                    else f"[{first}/{total}] cohort of 1", epochs)
        resumed = f", resuming after epoch {resumed_epoch}" if resumed_epoch else ""
        log.info(f"{self._prefix} (one teacher forward per batch for all{resumed}): " + "; ".join(labels))

    def member(self, label: str) -> "MemberProgress":
        """The epoch callback of one member of a cohort: its epoch lines under its own label."""
        return MemberProgress(self, label)

    # trainer callback hooks (engine/trainer.py)
    def on_start(self, trainer) -> None:
        if not self.live:
            return
        steps = len(trainer.train_loader)
        first = trainer.start_epoch
        self._run_bar = self._bar(total=(self._epochs - first + 1) * steps, unit="batch", leave=False,
                                  position=1 if self._suite_bar is not None else 0,
                                  desc=f"{self._prefix} epoch {first}/{self._epochs}")

    def on_batch(self, epoch: int, step: int, steps: int) -> None:
        if self._run_bar is not None:
            if step == 1:
                self._run_bar.set_description(f"{self._prefix} epoch {epoch}/{self._epochs}", refresh=False)
            self._run_bar.update(1)

    def __call__(self, entry: dict[str, Any]) -> None:
        self.epoch(entry)

    def epoch(self, entry: dict[str, Any], label: str | None = None) -> None:
        prefix = label or self._prefix
        self._epoch_seconds.append(entry["seconds"])
        left = (self._epochs - entry["epoch"]) * sum(self._epoch_seconds) / len(self._epoch_seconds)
        if self._run_bar is not None:
            self._run_bar.set_postfix(loss=f"{entry['train_loss']:.4f}", test=f"{entry['test_acc']:.2f}%")
        log.info(f"{prefix} epoch {entry['epoch']}/{self._epochs}: loss {entry['train_loss']:.4f}, "
                 f"train {entry['train_acc']:.2f}%, test {entry['test_acc']:.2f}%, {entry['seconds']:.1f}s"
                 + (f", about {_duration(left)} left" if entry["epoch"] < self._epochs else ""),
                 extra={"epoch_line": True})

    def run_finished(self, metrics: dict[str, Any], seconds: float, label: str | None = None) -> None:
        self._close(self._run_bar)
        self._run_bar = None
        log.info(f"{label or self._prefix}: top-1 {metrics['test_acc_last']:.2f}% "
                 f"(best {metrics['test_acc_best']:.2f}%) in {seconds:.0f}s")
        if self._suite_bar is not None:
            self._suite_bar.update(1)
            if self._suite_bar.n >= self._suite_bar.total:
                self.close()

    def evaluated(self, index: int, total: int, label: str, evaluation: str, seconds: float,
                  skipped: bool = False) -> None:
        done = "skipped (does not apply)" if skipped else f"in {seconds:.0f}s"
        log.info(f"[eval {index}/{total}] {label}: {evaluation} {done}")


class MemberProgress:
    """A cohort member's epoch callback: its lines go through the cohort's Progress under its label."""

    def __init__(self, progress: Progress, label: str):
        self.progress, self.label = progress, label

    def __call__(self, entry: dict[str, Any]) -> None:
        self.progress.epoch(entry, label=self.label)
