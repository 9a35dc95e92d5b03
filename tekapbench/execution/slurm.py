"""An existing Slurm cluster, driven through submitit: one array task per run (per cohort: students that
train together, engine/cohort.py), in stages by dependency
(teachers, then the students that need them, each stage ``afterany`` the one before), at most
``array_parallelism`` tasks of a stage at once.

A task trains its run under a claim (so a concurrent local invocation never trains it too) and resumes
from the run's last epoch checkpoint. When Slurm warns of a time limit or preemption (USR2,
``signal_delay_s`` before), submitit requeues the task; a task killed outright is resumed by the next
``tekapbench run``. A student whose teacher failed is skipped with the reason. The folder of results must
be shared by the submitting host and the nodes.
"""
from __future__ import annotations

import pickle

import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tekapbench.atomic import write_json
from tekapbench.engine.cohort import cohort_key
from tekapbench.engine.runner import SuiteRunner, pick_device
from tekapbench.errors import TekapbenchError, UsageError
from tekapbench.execution.base import Request, register_executor
from tekapbench.plugins import loaded as loaded_plugins, reload_in_this_process
from tekapbench.progress import Progress
from tekapbench.results.status import STATES, suite_status
from tekapbench.results.store import ResultStore
from tekapbench.suite.plan import SuitePlan
from tekapbench.suite.schema import SlurmSection

SUBMISSIONS = "submissions"
POLL_SECONDS = 5.0


class SlurmRun:
    """The callable submitit pickles for each array task: works on one run of the plan, or on the runs of
    one cohort."""

    def __init__(self, plan: SuitePlan, results_root: str, device: str, threads: int | None,
                 force_before: str | None, plugins: list[tuple[str, str]] | None = None, cohorts: bool = True):
        self.plan, self.results_root, self.device = plan, results_root, device
        self.threads, self.force_before, self.cohorts = threads, force_before, cohorts
        self.plugins = loaded_plugins() if plugins is None else plugins

    def __getstate__(self) -> dict:
        # the plan may hold settings classes of plugins: the job loads the plugins before it reads the plan
        return {**self.__dict__, "plan": pickle.dumps(self.plan)}

    def __setstate__(self, state: dict) -> None:
        reload_in_this_process(state["plugins"])
        self.__dict__.update({**state, "plan": pickle.loads(state["plan"])})

    def __call__(self, run_ids: str | list[str]) -> str | list[str]:
        only = [run_ids] if isinstance(run_ids, str) else list(run_ids)
        runner = SuiteRunner(self.plan, results_root=self.results_root, device=pick_device(self.device),
                             progress=Progress(live=False), threads=self.threads, only=only,
                             force_before=self.force_before, cohorts=self.cohorts)
        runner.run()  # raises TekapbenchError when a run failed or was skipped: the task then fails
        return run_ids

    def checkpoint(self, run_ids: str | list[str]):
        """Called by submitit on USR2 (time limit or preemption ahead): requeue; the run resumes from its
        last epoch checkpoint, since every epoch is saved."""
        import submitit

        return submitit.helpers.DelayedSubmission(SlurmRun(self.plan, self.results_root, self.device, self.threads,
                                                           self.force_before, self.plugins, self.cohorts), run_ids)


def stages(runner: SuiteRunner, run_ids: list[str]) -> list[list[str]]:
    """The runs in dependency order: stage k holds the runs whose dependencies are in stages < k."""
    todo, placed, result = list(run_ids), set(), []
    while todo:
        stage = [r for r in todo if all(d in placed or d not in run_ids for d in runner.plan.dependencies(r))]
        if not stage:
            raise TekapbenchError(f"circular dependencies among runs {', '.join(todo)}")
        result.append(stage)
        placed.update(stage)
        todo = [r for r in todo if r not in placed]
    return result


def array_tasks(plan: SuitePlan, stage: list[str], cohorts: bool) -> list[str | list[str]]:
    """The array tasks of a stage: a run alone, or (``cohorts``) the list of runs that train as one cohort."""
    if not cohorts:
        return list(stage)
    groups: dict[object, list[str]] = {}
    for run_id in stage:
        key = cohort_key(plan.runs[run_id])
        groups.setdefault(run_id if key is None else key, []).append(run_id)
    return [group[0] if len(group) == 1 else group for group in groups.values()]


def slurm_options(request: Request) -> SlurmSection:
    return SlurmSection.model_validate(request.slurm)


def _executor(options: SlurmSection, folder: Path, name: str):
    try:
        import submitit
    except ImportError:  # pragma: no cover - a dependency of tekapbench
        raise UsageError("--executor slurm needs submitit: pip install submitit") from None
    if shutil.which("sbatch") is None:
        raise UsageError("--executor slurm: no `sbatch` on this machine's PATH; run on a host that submits to "
                         "your Slurm cluster")
    executor = submitit.SlurmExecutor(folder=folder / "%j", max_num_timeout=options.max_requeues)
    params: dict[str, Any] = {"job_name": f"tekapbench-{name}", "time": options.time_min,
                              "cpus_per_task": options.cpus_per_task, "array_parallelism": options.array_parallelism,
                              "signal_delay_s": options.signal_delay_s, "additional_parameters": dict(options.sbatch),
                              "setup": list(options.setup), "stderr_to_stdout": True}
    if options.partition:
        params["partition"] = options.partition
    if options.gpus_per_task:
        params["gpus_per_task"] = options.gpus_per_task
    if options.mem_gb:
        params["mem"] = f"{int(options.mem_gb * 1024)}M"
    executor.update_parameters(**params)
    return executor


def submit(request: Request) -> dict[str, Any]:
    """Submits every run that needs work; returns the submission record (also written under
    results/<suite>/submissions/)."""
    plan, options = request.plan, slurm_options(request)
    force_before = request.force_before
    runner = SuiteRunner(plan, results_root=request.results_root, device=pick_device("cpu"),
                         progress=Progress(quiet=True), force_before=force_before)
    todo = runner.pending()
    evaluations = runner.pending_evaluations(set(todo))
    work = [r for r in plan.runs if r in todo or r in evaluations]
    runner.check_data(todo, evaluations)  # a missing dataset stops here, before anything is queued
    runner.store.save_plan(plan.to_dict())
    folder = Path(options.folder) if options.folder else runner.store.dir / "slurm"
    executor = _executor(options, folder, plan.name)
    task = SlurmRun(plan, str(Path(request.results_root).resolve()), options.device, request.threads, force_before,
                    cohorts=request.cohorts)
    jobs: dict[str, str] = {}
    previous: str | None = None
    for stage in stages(runner, work):
        executor.update_parameters(dependency=f"afterany:{previous}" if previous else None)
        tasks = array_tasks(plan, stage, request.cohorts)
        submitted = executor.map_array(task, tasks)
        jobs.update({run_id: job.job_id for runs, job in zip(tasks, submitted, strict=True)
                     for run_id in ([runs] if isinstance(runs, str) else runs)})
        previous = ":".join(sorted({job.job_id.split("_")[0] for job in submitted}))
    record = {"executor": "slurm", "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "folder": str(folder), "jobs": jobs, "options": options.model_dump(), "force_before": force_before}
    if jobs:
        stamp = record["at"].replace(":", "").replace("+0000", "Z")
        write_json(runner.store.dir / SUBMISSIONS / f"{stamp}-{previous.split(':')[0]}.json", record)
    return record


def submitted_jobs(store: ResultStore) -> tuple[dict[str, str], dict[str, str]]:
    """The latest Slurm job of every run ever submitted for the suite, and its log folder by job."""
    jobs, folders = {}, {}
    for path in sorted((store.dir / SUBMISSIONS).glob("*.json")):
        record = store.read_record(path)
        jobs.update(record["jobs"])
        folders.update({job: record["folder"] for job in record["jobs"].values()})
    return jobs, folders


def queue_states(job_ids: list[str]) -> dict[str, str] | None:
    """Slurm's state of each queued or running array task (``123_4``: PENDING, RUNNING, ...); jobs that
    have left the queue are absent. None when the queue cannot be asked from here."""
    if not job_ids or shutil.which("squeue") is None:
        return None if job_ids else {}
    arrays = sorted({j.split("_")[0] for j in job_ids})
    try:
        out = subprocess.run(["squeue", "--array", "--noheader", "--format=%i %T", "--jobs", ",".join(arrays)],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        return None
    return dict(line.split()[:2] for line in out.stdout.splitlines() if len(line.split()) >= 2)


def queue_lookup(store: ResultStore):
    """``queued(run_id)`` for suite_status: where the run's latest Slurm job stands."""
    jobs, folders = submitted_jobs(store)
    states = queue_states(sorted(set(jobs.values())))

    def queued(run_id: str) -> tuple[str, str] | None:
        job = jobs.get(run_id)
        if job is None:
            return None
        if states is None:
            return "pending", f"submitted as slurm job {job} (the queue cannot be asked from here)"
        if job in states:
            return "pending", f"slurm job {job} {states[job]}"
        log = Path(folders[job]) / f"{job}_0_log.out"
        return "failed", f"slurm job {job} ended without a record (log: {log})"

    return queued


@register_executor("slurm")
def run_slurm(request: Request) -> None:
    """A Slurm cluster through submitit: one array task per run, teachers first (--slurm KEY=VALUE)."""
    record = submit(request)
    jobs = record["jobs"]
    say = (lambda text: None) if request.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    if not jobs:
        say(f"suite {request.plan.name}: nothing to submit, every run is done")
        return
    arrays = sorted({j.split("_")[0] for j in jobs.values()})
    say(f"suite {request.plan.name}: {len(jobs)} run(s) submitted to Slurm as job(s) {', '.join(arrays)} "
        f"(logs in {record['folder']})")
    if request.detach:
        say(f"detached; follow with `tekapbench status {request.suite_path} --results {request.results_root}`")
        return
    store = ResultStore(request.results_root, request.plan.name)
    plan = request.plan.to_dict()
    shown = None
    while True:
        statuses = [s for s in suite_status(plan, store, queue_lookup(store)) if s.run_id in jobs]
        counts = {state: sum(s.state == state for s in statuses) for state in STATES}
        summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        if summary != shown:
            say(f"slurm: {summary}")
            shown = summary
        if counts["running"] + counts["pending"] == 0:
            break
        time.sleep(POLL_SECONDS)
    bad = [s for s in statuses if s.state in ("failed", "skipped")]
    if bad:
        raise TekapbenchError(f"{len(bad)} run(s) did not finish on Slurm:\n"
                              + "\n".join(f"  {s.run_id} {s.state}: {s.detail}" for s in bad))
