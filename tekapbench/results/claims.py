"""Claims: a run being worked on is claimed, so that two invocations of a suite, on one machine or on
hosts that share the results folder, never train the same run twice.

A claim is a file ``runs/<run_id>/claims/<generation>.json`` created atomically and exclusively (a hard
link, which also holds on NFS), naming the host, process and Slurm job that hold it. The holder rewrites
it every ``interval`` seconds (the heartbeat). The newest generation is the claim in force; it is free
when released, or stale when its heartbeat is older than ``ttl`` or its process is gone from this host
(the process is named by its pid and start time, so a pid the system gave to another process since is
not taken for the holder). A claim file that cannot be read (damaged by hand or by a disk) is live for
``ttl`` after it was last written: its holder, if alive, rewrites it at the next heartbeat.
Taking over a free or stale claim means creating the next generation, which only one contender can do.
A holder that finds a newer generation than its own, or whose own heartbeat is older than ``ttl`` (it was
paused, and may have been presumed dead), has lost the claim: it writes nothing more into the run
(:meth:`Claim.ensure_held`, called right before each of the run's files is replaced) and stops.
Old generations stay as the run's history of who worked on it.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tekapbench.atomic import create_json, write_json
from tekapbench.errors import ClaimLostError

FOLDER = "claims"
DEFAULT_INTERVAL = float(os.environ.get("TEKAPBENCH_CLAIM_INTERVAL", 30))
DEFAULT_TTL = float(os.environ.get("TEKAPBENCH_CLAIM_TTL", 180))


def slurm_job() -> str | None:
    """``<job>_<task>`` of the Slurm array task (or the job) running this process, if any."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{job}_{task}" if job and task else job


def process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux /proc), or None where unknown: with
    the pid, it names one process, whereas a pid alone is given again to a new process once freed."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the command name before ")" may hold spaces


def _alive(pid: int, started: int | None = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        pass
    now_started = process_start(pid)
    return started is None or now_started is None or now_started == started


@dataclass(frozen=True)
class ClaimInfo:
    generation: int
    host: str
    pid: int
    job: str | None
    started: float
    heartbeat: float
    ttl: float
    released: bool = False
    process_start: int | None = None  # of the holder's pid (process_start), where the system tells it
    damaged: bool = False  # the file could not be read: only its age is known

    @staticmethod
    def read(path: Path) -> "ClaimInfo | None":
        """The claim in ``path``; None when the file is gone. An unreadable file gives a damaged claim, live
        until ``DEFAULT_TTL`` after the file was last written: it may be a live holder's, which rewrites it at
        its next heartbeat, and two processes must never train one run."""
        try:
            text = path.read_bytes()
            written = path.stat().st_mtime
        except FileNotFoundError:
            return None
        except OSError:
            text, written = b"", time.time()
        try:
            d = json.loads(text)
            start = d.get("process_start")
            return ClaimInfo(int(d["generation"]), str(d["host"]), int(d["pid"]), d.get("job"), float(d["started"]),
                             float(d["heartbeat"]), float(d["ttl"]), bool(d.get("released", False)),
                             None if start is None else int(start))
        except (ValueError, KeyError, TypeError, AttributeError):
            generation = int(path.stem) if path.stem.isdigit() else 0
            return ClaimInfo(generation, "?", -1, None, written, written, DEFAULT_TTL, damaged=True)

    def is_live(self, now: float | None = None) -> bool:
        if self.released:
            return False
        if not self.damaged and self.host == socket.gethostname() and not _alive(self.pid, self.process_start):
            return False  # its process is gone: no need to wait for the heartbeat to age
        return (now or time.time()) - self.heartbeat <= self.ttl

    def holder(self) -> str:
        if self.damaged:
            return f"unknown (claim file {self.generation:08d}.json is damaged; free {self.ttl:g}s after it was written)"
        return f"{self.host} pid {self.pid}" + (f", slurm job {self.job}" if self.job else "")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _generations(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(p.stem) for p in folder.glob("*.json") if p.stem.isdigit())


def current_claim(run_dir: Path) -> ClaimInfo | None:
    """The claim in force on a run (live or not), or None when it was never claimed."""
    folder = Path(run_dir) / FOLDER
    generations = _generations(folder)
    return ClaimInfo.read(folder / f"{generations[-1]:08d}.json") if generations else None


class Claim:
    """A claim held by this process; a background thread keeps its heartbeat. Use as a context manager."""

    def __init__(self, folder: Path, info: ClaimInfo, interval: float):
        self.folder = folder
        self.info = info
        self.interval = interval
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"claim-{folder.parent.name}", daemon=True)
        self._thread.start()

    @property
    def path(self) -> Path:
        return self.folder / f"{self.info.generation:08d}.json"

    def _superseded(self) -> bool:
        generations = _generations(self.folder)
        return bool(generations) and generations[-1] > self.info.generation

    def _stale(self) -> bool:
        """This holder's last heartbeat is older than the ttl (the process was paused): another process may
        be taking the run over right now, so this one must not go on, even before a newer generation exists."""
        return time.time() - self.info.heartbeat > self.info.ttl

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            if self._superseded() or self._stale():
                self.lost.set()
                return
            self.info = ClaimInfo(**{**self.info.to_dict(), "heartbeat": time.time()})
            write_json(self.path, self.info.to_dict())

    def held(self) -> bool:
        """Still this process's: not taken over, not presumed dead. Asked of the files, not of the heartbeat
        thread, which a paused process runs no sooner than its main thread."""
        if not self.lost.is_set() and (self._superseded() or self._stale()):
            self.lost.set()
        return not self.lost.is_set()

    def ensure_held(self, *_) -> None:
        """Raises ClaimLostError when the claim is no longer this process's: called as an epoch callback and
        right before each of the run's files is written, so that a process that was presumed dead never
        writes into the run another process took over (or finished)."""
        if not self.held():
            raise ClaimLostError(f"run {self.folder.parent.name}: another process took over its claim, or may "
                                 f"(this one was presumed dead: no heartbeat for {self.info.ttl:g}s); it writes "
                                 f"nothing more into the run and stops here")

    check = ensure_held  # the epoch callback's name

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        if self.held():
            write_json(self.path, {**self.info.to_dict(), "released": True, "heartbeat": time.time()})

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def try_claim(run_dir: Path, *, interval: float = DEFAULT_INTERVAL, ttl: float = DEFAULT_TTL) -> Claim | None:
    """Claims the run for this process, or returns None when another live process holds it (or won the
    race for it just now)."""
    folder = Path(run_dir) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    generations = _generations(folder)
    if generations:
        latest = ClaimInfo.read(folder / f"{generations[-1]:08d}.json")
        if latest is not None and latest.is_live():
            return None
    generation = (generations[-1] if generations else 0) + 1
    now = time.time()
    info = ClaimInfo(generation, socket.gethostname(), os.getpid(), slurm_job(), now, now, ttl,
                     process_start=process_start(os.getpid()))
    try:
        create_json(folder / f"{generation:08d}.json", info.to_dict())
    except FileExistsError:
        return None
    return Claim(folder, info, interval)
