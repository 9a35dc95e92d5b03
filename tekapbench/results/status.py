"""Where each run of a suite stands, from the results folder alone (so it works from any host that shares
it): done (a record), running (a live claim), failed (the error of its latest attempt), skipped (a run
it needs failed or was skipped) or pending (with its place in a scheduler's queue, when one is known)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from tekapbench.engine.watch import read_history
from tekapbench.results.claims import current_claim
from tekapbench.results.store import ResultStore

STATES = ("done", "running", "pending", "failed", "skipped")


@dataclass(frozen=True)
class RunStatus:
    run_id: str
    state: str
    detail: str
    dataset: str
    arch: str
    seed: int | None
    rows: str


def suite_status(plan: dict[str, Any], store: ResultStore,
                 queued: Callable[[str], tuple[str, str] | None] = lambda run_id: None) -> list[RunStatus]:
    """One status per run, in the plan's order (teachers first). ``queued(run_id)`` gives, for a run
    that is neither done nor running, what a scheduler knows: ('pending', 'slurm job 123_4 PENDING'),
    ('failed', 'slurm job 123_4 ended without a record; log ...'), or None."""
    found: dict[str, RunStatus] = {}
    for run_id, spec in plan["runs"].items():
        rows = "/".join(dict.fromkeys(c["row"] for c in plan["cells"] if c["run_id"] == run_id))

        def status(state: str, detail: str = "") -> RunStatus:
            return RunStatus(run_id, state, detail, spec["dataset"], spec["arch"], spec.get("seed"), rows)

        claim = current_claim(store.run_dir(run_id))
        failure = store.failure(run_id)
        # "needs": the plan's dependency rule (suite/plan.py), written into plan.json
        blocked = [found[d] for d in plan.get("needs", {}).get(run_id, [])
                   if d in found and found[d].state in ("failed", "skipped")]
        if store.is_done(run_id):
            record = store.latest_record(run_id)
            found[run_id] = status("done", f"top-1 {record['metrics']['test_acc_last']:.2f}%"
                                   if record and record["metrics"].get("test_acc_last") is not None else "")
        elif claim is not None and claim.is_live():
            found[run_id] = status("running", "; ".join(x for x in (claim.holder(), progress(spec, store, run_id))
                                                        if x))
        elif (where := queued(run_id)) and where[0] == "pending":  # queued again after an earlier failure
            found[run_id] = status("pending", where[1])
        elif failure is not None:
            found[run_id] = status("failed", failure.get("error", "unknown error"))
        elif blocked:
            found[run_id] = status("skipped", f"needs run {blocked[0].run_id}, which {blocked[0].state}")
        else:
            partly = any((a / "checkpoint.pt").exists() for a in store.attempts(run_id))
            state, where = queued(run_id) or ("pending", "")
            resumes = f"resumes from its last checkpoint ({progress(spec, store, run_id, eta=False)})"
            detail = "; ".join(x for x in (where, resumes if partly else "") if x)
            found[run_id] = status(state, detail)
    return list(found.values())


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if seconds < 60:
        return f"{seconds:.0f}s"
    return f"{minutes}min" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}"


def progress(spec: dict[str, Any], store: ResultStore, run_id: str, *, eta: bool = True) -> str:
    """How far the run's latest attempt is, from its history.jsonl (files only: any host sharing the results
    folder reads it): 'epoch 12/240, test 41.20%, about 3h05 left' (the time from the mean epoch so far)."""
    attempts = store.attempts(run_id)
    history = read_history(attempts[-1]) if attempts else []
    total = (spec.get("recipe") or {}).get("epochs")
    if not total:
        return ""
    if not history:
        return f"epoch 0/{total}"
    last = history[-1]
    text = f"epoch {last['epoch']}/{total}, test {last['test_acc']:.2f}%"
    left = total - last["epoch"]
    if eta and left > 0:
        mean = sum(e["seconds"] for e in history) / len(history)
        text += f", about {_duration(left * mean)} left"
    return text
