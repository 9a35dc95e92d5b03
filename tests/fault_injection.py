"""Runs tekapbench's command line with a kill -9 at an exact file write: right before the k-th commit of a
file (the os.replace or os.link that puts a fully written temporary file in its place, in
tekapbench/atomic.py and the trainer's keeping of the previous checkpoint). Every commit's target is
appended to $FAULT_LOG first, so a run without a kill lists the writes a suite makes.

    FAULT_KILL_AT=k FAULT_LOG=writes.txt python tests/fault_injection.py run suite.toml --results r
"""
from __future__ import annotations

import os
import signal
import sys
import types


def install(kill_at: int, log: str | None) -> None:
    from tekapbench import atomic
    from tekapbench.engine import trainer

    count = 0

    def committing(real):
        def commit(source, target, *args, **kwargs):
            nonlocal count
            count += 1
            if log:
                with open(log, "a") as fh:
                    fh.write(f"{count}\t{target}\n")
            if count == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # as kill -9: no finally, no atexit, nothing flushed
            return real(source, target, *args, **kwargs)
        return commit

    patched = types.SimpleNamespace(**{name: getattr(os, name) for name in dir(os) if not name.startswith("__")})
    patched.replace, patched.link = committing(os.replace), committing(os.link)
    atomic.os = trainer.os = patched


if __name__ == "__main__":
    install(int(os.environ.get("FAULT_KILL_AT", "0")), os.environ.get("FAULT_LOG"))
    from tekapbench.cli import main

    sys.exit(main(sys.argv[1:]))
