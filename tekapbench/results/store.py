"""On-disk layout of a suite's results::

    results/<suite>/plan.json                          the resolved plan (cells -> run ids), rewritten per run
    results/<suite>/runs/<run_id>/attempt-<k>/checkpoint.pt   training state after the last finished epoch
    results/<suite>/runs/<run_id>/attempt-<k>/model.pt        final weights ({'model': state_dict})
    results/<suite>/runs/<run_id>/attempt-<k>/record.json     the result record: present = run finished
    results/<suite>/runs/<run_id>/attempt-<k>/evaluations/<name>-<settings hash>.json   one per evaluation

An attempt without a record is unfinished and is resumed; ``--force`` opens a new attempt next to the
finished ones, so no finished result is ever replaced.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tekapbench.atomic import create_json, remove_leftovers, write_json
from tekapbench.errors import UsageError

_ATTEMPT = re.compile(r"attempt-(\d+)$")
RECORD = "record.json"
FAILURE = "failure.json"


class ResultStore:
    def __init__(self, root: Path | str, suite: str):
        self.root = Path(root)
        self.dir = self.root / suite

    def run_dir(self, run_id: str) -> Path:
        return self.dir / "runs" / run_id

    def attempts(self, run_id: str) -> list[Path]:
        run_dir = self.run_dir(run_id)
        if not run_dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := _ATTEMPT.match(p.name)) and p.is_dir()]
        return [p for _, p in sorted(found)]

    def finished_attempts(self, run_id: str) -> list[Path]:
        return [a for a in self.attempts(run_id) if (a / RECORD).exists()]

    def records(self, run_id: str) -> list[dict[str, Any]]:
        return [self.read_record(a / RECORD) for a in self.finished_attempts(run_id)]

    def latest_record(self, run_id: str) -> dict[str, Any] | None:
        records = self.records(run_id)
        return records[-1] if records else None

    def is_done(self, run_id: str) -> bool:
        """Finished, with no newer attempt left unfinished (e.g. a --force pass that was interrupted)."""
        attempts = self.attempts(run_id)
        return bool(attempts) and (attempts[-1] / RECORD).exists()

    def attempt_for(self, run_id: str, *, force: bool) -> Path:
        """The attempt folder to work in: an unfinished one is resumed; a new one is made when there is
        none, or when ``force`` asks to run a finished run again."""
        attempts = self.attempts(run_id)
        if attempts and not (attempts[-1] / RECORD).exists():
            return attempts[-1]
        if attempts and not force:
            raise ValueError(f"run {run_id} is finished; pass force=True to run it again")
        number = int(_ATTEMPT.match(attempts[-1].name).group(1)) + 1 if attempts else 1
        path = self.run_dir(run_id) / f"attempt-{number}"
        path.mkdir(parents=True)
        return path

    def remove_leftovers(self, run_ids: list[str], older_than: float, *, shared: bool = True) -> None:
        """Removes the temporary files that killed writes left (``.<name>.*.tmp``) in the runs' attempts and,
        with ``shared``, in the suite's folder and the runs' claims folders, which any process writes in: those
        older than ``older_than`` seconds (a claim's or plan.json's write takes far less). Under a run's
        claim no other process writes into its attempts: ``older_than`` 0, ``shared`` False."""
        folders = [self.dir] if shared else []
        for run_id in run_ids:
            folders += [self.run_dir(run_id) / "claims"] if shared else []
            folders += [folder for attempt in self.attempts(run_id) for folder in (attempt, attempt / "evaluations")]
        for folder in folders:
            remove_leftovers(folder, older_than=older_than)

    def write_record(self, attempt: Path, record: dict[str, Any], before_commit=None) -> Path:
        target = attempt / RECORD
        create_json(target, record, before_commit)
        return target

    def finished_at(self, run_id: str) -> str:
        """When the latest record was written (ISO 8601, UTC), '' for a record without the time."""
        record = self.latest_record(run_id)
        return (record or {}).get("provenance", {}).get("finished", "")

    def write_failure(self, run_id: str, failure: dict[str, Any]) -> Path | None:
        """Why the run's latest attempt stopped; replaced by a later failure, outranked by a record. Never
        written into a finished attempt (None then): a finished run's files do not change."""
        attempts = self.attempts(run_id)
        folder = attempts[-1] if attempts else self.run_dir(run_id)

        def unfinished() -> None:  # before writing, and again right before the file takes its place
            if (folder / RECORD).exists():
                raise FileExistsError(f"{folder / RECORD}")

        try:
            unfinished()
            write_json(folder / FAILURE, failure, before_commit=unfinished)
        except FileExistsError:
            return None
        return folder / FAILURE

    def failure(self, run_id: str) -> dict[str, Any] | None:
        """The failure of the run's latest attempt when that attempt has no record."""
        attempts = self.attempts(run_id)
        path = (attempts[-1] if attempts else self.run_dir(run_id)) / FAILURE
        if (attempts and (attempts[-1] / RECORD).exists()) or not path.exists():
            return None
        return self.read_record(path)

    def model_weights(self, run_id: str) -> Path:
        finished = self.finished_attempts(run_id)
        if not finished:
            raise UsageError(f"run {run_id} has no finished attempt under {self.run_dir(run_id)}")
        return finished[-1] / "model.pt"

    def read_plan(self) -> dict[str, Any] | None:
        path = self.dir / "plan.json"
        return self.read_record(path) if path.exists() else None

    def evaluation_path(self, run_id: str, key: str) -> Path:
        """Where an evaluation of the run's latest finished attempt is (or will be) stored."""
        finished = self.finished_attempts(run_id)
        if not finished:
            raise UsageError(f"run {run_id} has no finished attempt to evaluate")
        return finished[-1] / "evaluations" / f"{key}.json"

    def has_evaluation(self, run_id: str, key: str) -> bool:
        return self.is_done(run_id) and self.evaluation_path(run_id, key).exists()

    def write_evaluation(self, run_id: str, key: str, result: dict[str, Any]) -> Path:
        path = self.evaluation_path(run_id, key)
        create_json(path, result)
        return path

    def evaluations(self, run_id: str) -> dict[str, dict[str, Any]]:
        """The stored evaluations of the run's latest finished attempt, by key."""
        finished = self.finished_attempts(run_id)
        folder = finished[-1] / "evaluations" if finished else None
        if folder is None or not folder.is_dir():
            return {}
        return {p.stem: self.read_record(p) for p in sorted(folder.glob("*.json"))}

    def save_plan(self, plan_dict: dict[str, Any]) -> list[dict[str, Any]]:
        """Writes the plan when it changed; returns the cells of the previous plan that it no longer has
        (their runs stay on disk, but the suite's tables no longer show them)."""
        previous = self.read_plan()
        if previous == plan_dict:
            return []
        write_json(self.dir / "plan.json", plan_dict)
        kept = {json.dumps(c, sort_keys=True) for c in plan_dict["cells"]}
        return [c for c in (previous or {}).get("cells", []) if json.dumps(c, sort_keys=True) not in kept]

    @staticmethod
    def read_record(path: Path) -> dict[str, Any]:
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"{path}: unreadable result record ({exc})") from None
