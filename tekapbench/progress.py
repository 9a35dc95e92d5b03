"""Progress of a suite, its runs and their epochs.

On a terminal: a live line per run that counts epochs. Elsewhere (CI logs, files): one line per finished
run and nothing per epoch. ``quiet`` silences both.
"""
from __future__ import annotations

import sys
from typing import Any, TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.quiet = quiet
        self._prefix = ""

    def _write(self, text: str) -> None:
        if not self.quiet:
            self.stream.write(text)
            self.stream.flush()

    def note(self, text: str) -> None:
        self._write(f"note: {text}\n")

    def suite(self, name: str, total: int, todo: int, *, forced: bool = False) -> None:
        if forced:
            self._write(f"suite {name}: {total} runs, all run again (--force)\n")
        else:
            self._write(f"suite {name}: {total} runs, {total - todo} already done, {todo} to run\n")

    def run_started(self, index: int, total: int, label: str, epochs: int, resumed_epoch: int) -> None:
        self._prefix = f"[{index}/{total}] {label}"
        self._epochs = epochs
        resumed = f" (resuming after epoch {resumed_epoch})" if resumed_epoch else ""
        if self.live or resumed:
            self._write(f"{self._prefix}{resumed}\n")

    def epoch(self, entry: dict[str, Any]) -> None:
        if self.live:
            self._write(f"\r  epoch {entry['epoch']}/{self._epochs}  loss {entry['train_loss']:.4f}  "
                        f"test {entry['test_acc']:.2f}%  {entry['seconds']:.1f}s   ")

    def run_finished(self, metrics: dict[str, Any], seconds: float) -> None:
        line = (f"{self._prefix}: top-1 {metrics['test_acc_last']:.2f}% "
                f"(best {metrics['test_acc_best']:.2f}%) in {seconds:.0f}s")
        self._write(("\n" if self.live and self._epochs else "") + line + "\n")

    def evaluated(self, index: int, total: int, label: str, evaluation: str, seconds: float,
                  skipped: bool = False) -> None:
        done = "skipped (does not apply)" if skipped else f"in {seconds:.0f}s"
        self._write(f"[eval {index}/{total}] {label}: {evaluation} {done}\n")
