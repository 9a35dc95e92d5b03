"""This machine: the runs in order in this process, or one worker process per visible GPU (each pinned
with CUDA_VISIBLE_DEVICES). Workers are plain invocations of the same suite: claims share the runs out,
teachers come first because a student waits for the run it needs, and --force is one moment for all."""
from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading

import torch

from tekapbench.data.stream import SHARE_ENV
from tekapbench.engine.runner import SuiteRunner, pick_device
from tekapbench.errors import TekapbenchError, UsageError
from tekapbench.execution.base import Request, register_executor
from tekapbench.plugins import loaded as loaded_plugins
from tekapbench.progress import Progress
from tekapbench.results.status import suite_status
from tekapbench.results.store import ResultStore


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (or as indices)."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:count] if listed else [str(i) for i in range(count)]


def worker_slots(request: Request) -> list[dict[str, str]]:
    """The environment of each worker process: one per GPU when the device is CUDA without an index, or
    ``--workers N`` (GPUs dealt out in turn, CPU workers sharing the cores)."""
    device = pick_device(request.device)
    gpus = visible_gpus() if device.type == "cuda" and device.index is None else []
    count = request.workers or max(len(gpus), 1)
    if count == 1:
        return []
    shared = {SHARE_ENV: str(count)}  # the workers share this host's cores among their image decoders
    if gpus:
        return [{"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)], **shared} for i in range(count)]
    return [{"CUDA_VISIBLE_DEVICES": "", **shared} for _ in range(count)]


def _die_with_parent(parent: int) -> None:
    """In a worker, before it runs: SIGTERM when the parent dies, even by SIGKILL, which the parent cannot
    pass on (Linux's PR_SET_PDEATHSIG); the worker then stops as on Ctrl-C, releasing its claims. Elsewhere
    a worker whose parent was killed goes on to the end of its runs."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the line above: no signal would come
            os.kill(os.getpid(), signal.SIGTERM)


def _relay(process: subprocess.Popen, prefix: str) -> None:
    for line in process.stdout:
        sys.stderr.write(f"{prefix}{line}")
        sys.stderr.flush()


@register_executor("local")
def run_local(request: Request) -> None:
    """This machine: the runs in order, or one worker process per visible GPU (--workers N)."""
    slots = worker_slots(request)
    if not slots:
        device = pick_device(request.device)
        SuiteRunner(request.plan, results_root=request.results_root, device=device, force=request.force,
                    progress=Progress(quiet=request.quiet), threads=request.threads,
                    force_before=request.force_before, cohorts=request.cohorts).run()
        return
    cores = os.cpu_count() or 1
    threads = request.threads or request.plan.cpu_threads or max(cores // len(slots), 1)
    command = [sys.executable, "-m", "tekapbench", "run", str(request.suite_path), "--worker",
               "--results", str(request.results_root), "--threads", str(threads),
               "--device", "cuda" if slots[0]["CUDA_VISIBLE_DEVICES"] else "cpu"]
    if request.force_before:
        command += ["--force-before", request.force_before]
    if not request.cohorts:
        command += ["--no-cohorts"]
    if request.plan.trackers is not None:  # the suite's, or those of --tracker: the workers feed the same
        command += [arg for name in request.plan.trackers or ["none"] for arg in ("--tracker", name)]
    for spec, _ in loaded_plugins():  # the workers load what this process loaded (a suite's own load again)
        command += ["--plugin", spec]
    if not request.quiet:
        where = ", ".join(f"GPU {s['CUDA_VISIBLE_DEVICES']}" for s in slots) if slots[0]["CUDA_VISIBLE_DEVICES"] \
            else f"CPU, {threads} thread(s) each"
        print(f"suite {request.plan.name}: {len(slots)} worker processes ({where})", file=sys.stderr)
    processes, relays = [], []
    try:
        for i, slot in enumerate(slots):
            process = subprocess.Popen(command, env={**os.environ, **slot}, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True, bufsize=1,
                                       preexec_fn=functools.partial(_die_with_parent, os.getpid()))
            processes.append(process)
            if request.quiet:
                threading.Thread(target=process.stdout.read, daemon=True).start()
            else:
                relay = threading.Thread(target=_relay, args=(process, f"[worker {i}] "), daemon=True)
                relay.start()
                relays.append(relay)
        codes = [p.wait() for p in processes]
    except BaseException:
        for p in processes:  # Ctrl-C or SIGTERM: the workers stop too, releasing their claims
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in processes:
            p.wait()
        raise
    for relay in relays:
        relay.join()
    if any(code == 2 for code in codes):
        raise UsageError("a worker stopped on bad input (see its lines above)")
    unfinished = [s for s in suite_status(request.plan.to_dict(), ResultStore(request.results_root, request.plan.name))
                  if s.state != "done"]
    if unfinished or any(codes):
        lines = [f"  {s.run_id} {s.state}: {s.detail}" for s in unfinished]
        raise TekapbenchError(f"{len(unfinished)} run(s) not done after the workers stopped (exit codes "
                              f"{', '.join(map(str, codes))}):\n" + "\n".join(lines))
