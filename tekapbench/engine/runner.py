"""Executes a suite plan in order on one device: skips finished runs, resumes unfinished ones."""
from __future__ import annotations

import contextlib
import hashlib
import math
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from tekapbench.data.base import DATASETS, DataOptions, Splits, load_dataset
from tekapbench.engine.recipe import Recipe, resolve_recipe
from tekapbench.errors import (ClaimLostError, DataNotFoundError, Interrupted, TekapbenchError, TrainingDivergedError,
                               UsageError)
from tekapbench.evaluations import EVALUATIONS, EvalContext, Skip
from tekapbench.results.claims import DEFAULT_TTL, Claim, current_claim, slurm_job, try_claim
from tekapbench.engine.trainer import Precision, Trainer, TrainJob, evaluate
from tekapbench.engine.cohort import Cohort, RandomState, cohort_key, device_budget
from tekapbench.engine.watch import HistoryFile, RunLog, member_context
from tekapbench.trackers import TRACKERS, TrackerCallback, check_trackers, hparams_of
from tekapbench.models.base import create_model, load_weights
from tekapbench.progress import Progress, log
from tekapbench.results.provenance import provenance, sha256_file, tensors_sha256
from tekapbench.results.store import RECORD, ResultStore
from tekapbench.suite.plan import EvaluationSpec, RunSpec, SuitePlan

RECORD_FORMAT = 1


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: the first GPU when there is one, else the CPU; otherwise a device that must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {name!r}: only cpu and cuda devices are supported")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"--device {name!r}: no CUDA device is visible here; use --device cpu")
        if (device.index or 0) >= count:
            raise UsageError(f"--device {name!r}: only {count} CUDA device(s) visible (cuda:0..cuda:{count - 1})")
    return device


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class PreparedRun:
    """A run about to train (or a given checkpoint about to be scored), with what its record needs."""

    run_id: str
    spec: RunSpec
    attempt: Path
    label: str
    started_at: str
    started: float
    trainer: Trainer | None
    tracking: TrackerCallback | None
    teacher_info: dict[str, Any] | None
    resumed_epoch: int
    random_state: RandomState | None = None
    loaded: dict[str, Any] = field(default_factory=dict)
    cohort: list[str] = field(default_factory=list)
    guard: Callable[[], None] = lambda: None  # before each write into the attempt (write_guard)


def write_guard(claim: Claim | None, attempt: Path) -> Callable[[], None]:
    """What must hold before a file of the run's attempt is written: this process still holds the run's
    claim, and the attempt is not finished (a process paused past the claim's timeout, then resumed, would
    otherwise write into a run another process took over and finished)."""
    def guard(*_) -> None:  # also an epoch callback (called with the epoch's entry)
        if claim is not None:
            claim.ensure_held()
        if (attempt / RECORD).exists():
            raise ClaimLostError(f"{attempt} was finished by another process (its record exists): this one "
                                 f"writes nothing more into it")
    return guard


def non_finite(value: Any, where: str = "") -> str | None:
    """The key path of the first NaN or infinite number in ``value`` (nested dicts and lists), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "value"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return next((found for key, item in items
                 if (found := non_finite(item, f"{where}.{key}" if where else str(key))) is not None), None)


@dataclass
class Outcome:
    trained: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # run id -> error
    skipped: dict[str, str] = field(default_factory=dict)  # run id -> reason
    failed_evaluations: list[str] = field(default_factory=list)


class SuiteRunner:
    def __init__(self, plan: SuitePlan, *, results_root: Path | str, device: torch.device,
                 force: bool = False, progress: Progress | None = None, threads: int | None = None,
                 poll_seconds: float = 5.0, only: list[str] | None = None, force_before: str | None = None,
                 cohorts: bool = True):
        self.plan = plan
        # students that share teachers, data, seed and epochs train together (engine/cohort.py)
        self.cohorts = cohorts
        self.poll = poll_seconds  # how often to look again for runs other processes hold
        self._train_total = self._eval_total = self._eval_index = 0
        self.threads = threads or plan.cpu_threads  # CPU only: on a GPU the thread count changes no number
        self.store = ResultStore(results_root, plan.name)
        self.device = device
        self.force = force
        # --force trains again the runs finished before this moment: workers of one invocation share it,
        # so a run one of them has just trained again is not trained a third time by another
        self.force_before = force_before or (_now() if force else None)
        self.only = None if only is None else set(only)  # a Slurm task works on its own run only
        self.progress = progress or Progress(quiet=True)
        self._datasets: dict[str, Splits] = {}
        self._tracker_noted = False
        self._data_info: dict[str, dict[str, Any]] = {}

    def pending(self) -> list[str]:
        return [run_id for run_id in self.plan.runs
                if (self.only is None or run_id in self.only) and self.needs_training(run_id)]

    def needs_training(self, run_id: str) -> bool:
        if not self.store.is_done(run_id):
            return True
        if self.trained_with_other_threads(run_id) is not None:
            return True
        return self.force_before is not None and self.store.finished_at(run_id) <= self.force_before

    def trained_with_other_threads(self, run_id: str) -> int | None:
        """The CPU thread count a finished run was trained with, when this invocation pins another on a CPU:
        CPU numbers depend on it, so the run is trained again with this count, in a new attempt (the
        record stays). None when the counts agree, are not pinned, or either side is a GPU."""
        if self.device.type != "cpu" or self.threads is None or self.plan.runs[run_id].kind != "train":
            return None
        provenance = (self.store.latest_record(run_id) or {}).get("provenance") or {}
        used = provenance.get("torch_threads")
        return used if provenance.get("device") == "cpu" and used not in (None, self.threads) else None

    def dataset(self, name: str) -> Splits:
        if name not in self._datasets:
            data = self._datasets[name] = load_dataset(name, self._data_options())
            self._data_info[name] = {
                "dataset": name, "train_images": int(data.train_labels.numel()),
                "test_images": int(data.test_labels.numel()),
                "sha256": data.fingerprint(),
                **({"notes": list(data.notes)} if data.notes else {}),
            }
            for note in data.notes:
                self.progress.note(note)
        return self._datasets[name]

    def pending_evaluations(self, trained: set[str] = frozenset()) -> dict[str, list[EvaluationSpec]]:
        """Evaluations without a stored result, by run (runs about to be trained have none yet)."""
        missing = {}
        for run_id in self.plan.runs:
            if self.only is not None and run_id not in self.only:
                continue
            todo = self.missing_evaluations(run_id, trained=run_id in trained)
            if todo:
                missing[run_id] = todo
        return missing

    def missing_evaluations(self, run_id: str, *, trained: bool) -> list[EvaluationSpec]:
        """The run's evaluations without a stored result (all of them for a run just trained)."""
        specs = list({e.key: e for e in self.plan.evaluations}.values())
        return [e for e in specs if trained or not self.store.has_evaluation(run_id, e.key)]

    def run(self) -> list[str]:
        """Trains every pending run, then computes every missing evaluation; returns the trained ids."""
        if self.device.type == "cuda" and self.device.index is not None:
            torch.cuda.set_device(self.device)  # else helper threads (pinning) would open a context on GPU 0
        if self.device.type != "cpu" or self.threads is None:
            return self._run()
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return self._run()
        finally:
            torch.set_num_threads(before)

    def check_data(self, todo: list[str], evaluations: dict[str, list[EvaluationSpec]]) -> None:
        """Loads every dataset the work needs: a missing one stops the suite before anything trains."""
        needed = [self.plan.runs[r].dataset for r in [*todo, *evaluations]]
        needed += [name for specs in evaluations.values() for e in specs
                   for name in EVALUATIONS.get(e.name).params.model_validate(e.settings).required_datasets()]
        for name in dict.fromkeys(needed):
            self.dataset(name)

    def trackers(self) -> list[str]:
        """The trackers each run feeds: the suite's (or --tracker's), each checked to be installed; by
        default tensorboard, when it is installed (else a note)."""
        if self.plan.trackers is not None:
            check_trackers(self.plan.trackers)
            return list(self.plan.trackers)
        try:
            check_trackers(["tensorboard"])
        except UsageError:
            if not self._tracker_noted:
                self._tracker_noted = True
                self.progress.note("tensorboard is not installed: no TensorBoard event files (pip install "
                                   "tensorboard; [tracking] trackers = [] in the suite silences this)")
            return []
        return ["tensorboard"]

    def _run(self) -> list[str]:
        todo = self.pending()
        for run_id in todo:
            used = self.store.is_done(run_id) and self.trained_with_other_threads(run_id)
            if used:
                self.progress.note(f"{self._label(run_id)} was trained with {used} CPU threads, this suite runs "
                                   f"with {self.threads}: trained again with {self.threads} (a new attempt; "
                                   f"the record of {used} stays)")
        self.store.remove_leftovers(list(self.plan.runs), older_than=DEFAULT_TTL)
        evaluations = self.pending_evaluations(set(todo))
        if todo:
            self.trackers()  # a chosen tracker that is not installed stops the suite before anything trains
        self.check_data(todo, evaluations)
        dropped = self.store.save_plan(self.plan.to_dict())
        if dropped:
            rows = ", ".join(sorted({c["row"] for c in dropped}))
            self.progress.note(f"{self.store.dir}: the suite changed; {len(dropped)} table cell(s) it had before "
                               f"({rows}) are no longer in its tables (their records stay under runs/)")
        self.progress.suite(self.plan.name, len(self.plan.runs), len(todo), forced=self.force)
        self._train_total, self._eval_total, self._eval_index = len(todo), len(evaluations), 0
        try:
            outcome = self.work([r for r in self.plan.runs if r in todo or r in evaluations], train=set(todo))
        finally:
            self.progress.close()
        problems = []
        if outcome.failed:
            problems.append(f"{len(outcome.failed)} run(s) failed: " + "; ".join(
                f"{self._label(r)}: {e}" for r, e in outcome.failed.items()))
        if outcome.skipped:
            problems.append(f"{len(outcome.skipped)} run(s) skipped: " + "; ".join(
                f"{self._label(r)}: {e}" for r, e in outcome.skipped.items()))
        if outcome.failed_evaluations:
            problems.append(f"{len(outcome.failed_evaluations)} evaluation(s) failed (see the notes above): "
                            + "; ".join(outcome.failed_evaluations))
        if problems:
            raise TekapbenchError("\n".join(problems) + "\nthe others are stored; running the suite again retries "
                                  "what failed (`tekapbench status` lists every run)")
        return outcome.trained

    def work(self, run_ids: list[str], *, train: set[str]) -> "Outcome":
        """Trains (``train``) and evaluates each run once its dependencies are done, each under a claim:
        a run another process holds is waited for, not done twice; a run whose dependency failed is
        skipped with the reason. Returns when every run is done, failed or skipped."""
        outcome = Outcome()
        remaining = list(run_ids)
        index = 0
        announced = False  # the note about waiting for other processes, once per wait

        def skip(run_id: str, reason: str) -> None:
            outcome.skipped[run_id] = reason
            self.progress.note(f"skipping {self._label(run_id)}: {reason}")

        while remaining:
            still, progressed = [], False
            handled: set[str] = set()  # worked on this pass as members of a cohort
            for run_id in remaining:
                dependencies = self.plan.dependencies(run_id)
                blocked = next((d for d in dependencies if d in outcome.failed or d in outcome.skipped), None)
                if blocked is not None:
                    reason = outcome.failed.get(blocked) or outcome.skipped.get(blocked)
                    skip(run_id, f"its teacher {self._label(blocked)} did not finish ({reason})")
                    continue
                missing = [d for d in dependencies if not self.store.is_done(d)]
                # a dependency that is neither ours to run nor held by a live process will not get done
                # while we wait (it failed earlier, or belongs to another Slurm task that ended)
                orphan = next((d for d in missing if d not in remaining and not self._held_elsewhere(d)), None)
                if orphan is not None:
                    failure = self.store.failure(orphan)
                    skip(run_id, f"its teacher {self._label(orphan)} is not finished"
                         + (f" ({failure['error']})" if failure else ""))
                    continue
                if missing:
                    still.append(run_id)
                    continue
                if run_id in handled:
                    continue
                partners = self._cohort_partners(run_id, remaining, train, outcome) if self.cohorts else []
                if partners:
                    results = self._work_cohort([run_id, *partners], index=index + 1, outcome=outcome)
                    handled.update(results)
                    still += [r for r, result in results.items() if result == "busy"]
                    progressed |= any(result != "busy" for result in results.values())
                    index += sum(result == "trained" for result in results.values())
                    continue
                result = self._work_one(run_id, train=run_id in train, index=index + 1, outcome=outcome)
                if result == "busy":
                    still.append(run_id)
                else:
                    progressed = True
                    index += result == "trained"
            if still and not progressed:
                if not announced:
                    announced = True
                    holders = {r: c.holder() for r in still if (c := current_claim(self.store.run_dir(r)))
                               and c.is_live()}
                    self.progress.note(f"waiting for {len(still)} run(s) that other processes hold or need: "
                                       + "; ".join(f"{self._label(r)} ({h})" for r, h in holders.items()))
                time.sleep(self.poll)
            elif progressed:
                announced = False
            remaining = still
        return outcome

    def _cohort_partners(self, run_id: str, remaining: list[str], train: set[str], outcome: Outcome) -> list[str]:
        """The runs that would train in one cohort with ``run_id``: to be trained here, their teachers done,
        the same cohort key. Empty when it would train alone."""
        key = cohort_key(self.plan.runs[run_id])
        if key is None or run_id not in train or not self.needs_training(run_id):
            return []
        return [r for r in remaining if r != run_id and r in train and r not in outcome.trained
                and cohort_key(self.plan.runs[r]) == key and self.needs_training(r)
                and all(self.store.is_done(d) for d in self.plan.dependencies(r))]

    def _work_cohort(self, run_ids: list[str], *, index: int, outcome: Outcome) -> dict[str, str]:
        """``_work_one`` for runs trained as one cohort: each under its own claim (one another process holds
        is left to it: "busy"), then each one's evaluations."""
        results: dict[str, str] = {}
        with contextlib.ExitStack() as stack:
            claims: dict[str, Claim] = {}
            for run_id in run_ids:
                claim = try_claim(self.store.run_dir(run_id))
                if claim is None:
                    results[run_id] = "busy"
                    continue
                stack.enter_context(claim)
                claims[run_id] = claim
            for run_id in claims:
                self._tidy(run_id)
            # checked again under the claims: another process may have finished one a moment ago
            members = [r for r in claims if self.needs_training(r)]
            if len(members) <= 1:  # nothing left to share
                for run_id, claim in claims.items():
                    results[run_id] = self._work_one_claimed(run_id, claim, train=run_id in members, index=index,
                                                             outcome=outcome)
                return results
            indices = {r: index + i for i, r in enumerate(members)}
            trained = self.execute_cohort(members, indices, self._train_total, claims)
            for run_id, result in trained.items():
                if isinstance(result, ClaimLostError):
                    self.progress.note(str(result))
                    results[run_id] = "busy"
                elif isinstance(result, Exception):
                    self._failed(run_id, result, claims[run_id], outcome)
                    results[run_id] = "failed"
                else:
                    outcome.trained.append(run_id)
                    results[run_id] = "trained"
            for run_id in claims:
                if results.get(run_id) in ("trained", None):
                    specs = self.missing_evaluations(run_id, trained=results.get(run_id) == "trained")
                    if specs:
                        self._eval_index += 1
                        outcome.failed_evaluations += self.evaluate(run_id, specs, self._eval_index, self._eval_total)
                    results.setdefault(run_id, "evaluated")
        return results

    def _failed(self, run_id: str, exc: BaseException, claim: Claim, outcome: Outcome, trace: str | None = None) -> None:
        error = f"{type(exc).__name__}: {exc}"
        outcome.failed[run_id] = error
        if not claim.held():  # another process works on the run now: its files are that one's
            self.progress.warning(f"{self._label(run_id)} stopped ({error}) after another process took it over; "
                                  f"nothing was written into the run")
            return
        self.store.write_failure(run_id, {"error": error, "traceback": trace or "".join(
            traceback.format_exception(exc, limit=-8)), "at": _now(), **claim.info.to_dict()})
        self.progress.warning(f"{self._label(run_id)} failed: {error}")

    def _held_elsewhere(self, run_id: str) -> bool:
        claim = current_claim(self.store.run_dir(run_id))
        return claim is not None and claim.is_live()

    def _work_one(self, run_id: str, *, train: bool, index: int, outcome: "Outcome") -> str:
        claim = try_claim(self.store.run_dir(run_id))
        if claim is None:
            return "busy"
        with claim:
            return self._work_one_claimed(run_id, claim, train=train, index=index, outcome=outcome)

    def _tidy(self, run_id: str) -> None:
        """Removes what killed writes left in the run's attempts: under its claim, no other process writes there."""
        self.store.remove_leftovers([run_id], older_than=0, shared=False)

    def _work_one_claimed(self, run_id: str, claim: Claim, *, train: bool, index: int, outcome: "Outcome") -> str:
        self._tidy(run_id)
        # checked again under the claim: another process may have finished it a moment ago
        must_train = train and run_id not in outcome.trained and self.needs_training(run_id)
        if must_train:
            try:
                self.execute(run_id, index, self._train_total, claim=claim)
            except ClaimLostError as exc:
                self.progress.note(str(exc))
                return "busy"
            except Exception as exc:  # noqa: BLE001 - one failing run must not cost the others
                self._failed(run_id, exc, claim, outcome, traceback.format_exc(limit=-8))
                return "failed"
            outcome.trained.append(run_id)
        specs = self.missing_evaluations(run_id, trained=must_train)
        if specs:
            self._eval_index += 1
            outcome.failed_evaluations += self.evaluate(run_id, specs, self._eval_index, self._eval_total)
        return "trained" if must_train else "evaluated"

    def _weights(self, run_id: str) -> Path:
        spec = self.plan.runs[run_id]
        return Path(spec.checkpoint) if spec.kind == "pretrained" else self.store.model_weights(run_id)

    def _load(self, run_id: str, num_classes: int) -> torch.nn.Module:
        return self._load_with_sha256(run_id, num_classes)[0]

    def _load_with_sha256(self, run_id: str, num_classes: int) -> tuple[torch.nn.Module, str]:
        """The run's model from its weights file, and the sha256 of exactly the bytes loaded."""
        spec = self.plan.runs[run_id]
        model = create_model(spec.arch, num_classes)
        sha256 = load_weights(self._weights(run_id), model, what=f"{spec.arch} of run {run_id}")
        self._check_unchanged(spec, sha256)
        return model.to(self.device).eval(), sha256

    @staticmethod
    def _check_unchanged(spec: RunSpec, sha256: str) -> None:
        """A given checkpoint must still be the file the plan hashed into the run id."""
        if spec.kind == "pretrained" and spec.checkpoint_sha256 and sha256 != spec.checkpoint_sha256:
            raise UsageError(f"teacher checkpoint {spec.checkpoint} changed since the suite was planned (sha256 "
                             f"{sha256}, planned {spec.checkpoint_sha256}); run the suite again to plan it anew")

    def evaluate(self, run_id: str, specs: list[EvaluationSpec], index: int = 1, total: int = 1) -> list[str]:
        """Scores a finished run from its saved weights; each result is stored with its settings.
        Returns the evaluations that failed (after a note each): the others still run."""
        spec = self.plan.runs[run_id]
        data = self.dataset(spec.dataset)
        teacher_id = self.plan.teacher_of(run_id)
        ctx = EvalContext(model=self._load(run_id, data.num_classes), data=data, device=self.device,
                          data_options=self._data_options(),
                          load_teacher=(lambda: self._load(teacher_id, data.num_classes)) if teacher_id else None,
                          datasets=self.dataset, test_view=self._test_recipe(run_id).loader_settings(False))
        label = self._label(run_id)
        weights = self._weights(run_id)
        failed = []
        for evaluation in specs:
            entry = EVALUATIONS.get(evaluation.name)
            started = time.perf_counter()
            try:
                results = entry.evaluate(ctx, entry.params.model_validate(evaluation.settings))
            except Skip as reason:
                results = {"skipped": str(reason)}
            except DataNotFoundError as exc:  # e.g. CIFAR-100-C absent: the other evaluations still run
                self.progress.warning(f"{evaluation.name} of {label} not computed: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - one failing evaluation must not cost the others
                self.progress.warning(f"{evaluation.name} of {label} failed: {type(exc).__name__}: {exc}")
                failed.append(f"{evaluation.name} of {label}")
                continue
            seconds = time.perf_counter() - started
            self.store.write_evaluation(run_id, evaluation.key, {
                "format": RECORD_FORMAT, "run_id": run_id, "evaluation": evaluation.name,
                "version": entry.version, "settings": evaluation.settings, "results": results,
                "teacher": {"run_id": teacher_id, "sha256": sha256_file(self._weights(teacher_id))}
                if teacher_id and ctx.load_teacher and "teacher_model" in ctx._cache else None,
                "provenance": {**provenance(self.device), "finished": _now(), "wall_seconds": seconds,
                               "weights": str(weights), "weights_sha256": sha256_file(weights)},
            })
            self.progress.evaluated(index, total, label, evaluation.name, seconds, skipped="skipped" in results)
        return failed

    def _data_options(self) -> DataOptions:
        return DataOptions(root=Path(self.plan.data_root), download=self.plan.download, workers=self.plan.data_workers)

    def _label(self, run_id: str) -> str:
        spec = self.plan.runs[run_id]
        return f"{spec.dataset} {spec.arch} {self._role(run_id)}" + (f" seed {spec.seed}" if spec.seed is not None else "")

    def _teacher_models(self, spec: RunSpec, num_classes: int) -> tuple[list[torch.nn.Module], list[dict[str, Any]]]:
        models, infos = [], []
        for teacher_id in spec.teachers:
            weights = self._weights(teacher_id)
            model, sha256 = self._load_with_sha256(teacher_id, num_classes)
            models.append(model)
            infos.append({"run_id": teacher_id, "arch": self.plan.runs[teacher_id].arch, "weights": str(weights),
                          "sha256": sha256, "tensors_sha256": tensors_sha256(model.state_dict())})
        return models, infos

    def execute(self, run_id: str, index: int = 1, total: int = 1, claim: Claim | None = None) -> dict[str, Any]:
        attempt = self.store.attempt_for(run_id, force=True)  # called only for a run that needs training
        # the run's messages also into its run.log (appended to on resume), while this process holds the run
        with RunLog(attempt, run_id, held=claim.held if claim else None):
            log.debug(f"run {run_id}: {attempt}")
            try:
                if self.plan.runs[run_id].kind == "pretrained":
                    return self._score_given(run_id, attempt, index, total, claim)
                run = self._prepare(run_id, attempt, claim, [self.progress])
                self.progress.run_started(index, total, run.label, run.spec.recipe.epochs, run.resumed_epoch)
                status = "failed"
                try:
                    metrics = run.trainer.fit()
                    status = "success"
                finally:
                    run.tracking.finish(status)  # event files flushed and closed however training ended
                return self._write_record(run, metrics)
            except Exception as exc:
                log.error(f"run {run_id} stopped: {type(exc).__name__}: {exc}")
                raise
            except (KeyboardInterrupt, Interrupted):
                log.warning(f"run {run_id} interrupted: it resumes from its last epoch checkpoint")
                raise

    def execute_cohort(self, run_ids: list[str], indices: dict[str, int], total: int,
                       claims: dict[str, Claim]) -> dict[str, dict[str, Any] | Exception]:
        """Trains students that share teachers, data, seed and epochs as one cohort (engine/cohort.py): one
        teacher forward per batch for all. Each gets the record, checkpoint and files it would get trained
        alone; members that resume after different epochs train in one cohort per resume point. Returns
        each run's record, or the exception that stopped it (the others go on)."""
        outcome: dict[str, dict[str, Any] | Exception] = {}
        attempts = {r: self.store.attempt_for(r, force=True) for r in run_ids}
        with contextlib.ExitStack() as stack:
            for run_id in run_ids:
                claim = claims.get(run_id)
                stack.enter_context(RunLog(attempts[run_id], run_id, held=claim.held if claim else None))
            teachers = self._teacher_models(self.plan.runs[run_ids[0]], self.dataset(self.plan.runs[run_ids[0]].dataset).num_classes)
            runs: dict[str, PreparedRun] = {}
            for run_id in run_ids:
                with member_context(run_id):
                    try:
                        runs[run_id] = self._prepare(run_id, attempts[run_id], claims.get(run_id),
                                                     [self.progress.member(f"[{indices[run_id]}/{total}] "
                                                                           f"{self._label(run_id)}")], teachers)
                    except Exception as exc:  # noqa: BLE001 - one member's bad input must not cost the others
                        log.error(f"run {run_id} stopped: {type(exc).__name__}: {exc}")
                        outcome[run_id] = exc
            by_start: dict[int, list[PreparedRun]] = {}
            for run in runs.values():
                by_start.setdefault(run.trainer.start_epoch, []).append(run)
            groups = []
            for same_start in by_start.values():
                sizes = device_budget([run.trainer for run in same_start])
                if len(sizes) > 1:
                    self.progress.note(f"{len(same_start)} students do not fit {self.device} at once: cohorts of "
                                       + "+".join(map(str, sizes)))
                for size in sizes:
                    groups.append(same_start[:size])
                    same_start = same_start[size:]
            for group in groups:
                labels = [run.label for run in group]
                self.progress.cohort_started([indices[r.run_id] for r in group], total, labels,
                                             group[0].spec.recipe.epochs, group[0].resumed_epoch)
                for run in group:
                    run.cohort = [r.run_id for r in group]
                cohort = Cohort.of([r.trainer for r in group], [r.random_state for r in group],
                                   on_member=member_context, callbacks=[self.progress])
                try:
                    members = cohort.fit()
                except (KeyboardInterrupt, Interrupted):
                    for run in group:
                        with member_context(run.run_id):
                            log.warning(f"run {run.run_id} interrupted: it resumes from its last epoch checkpoint")
                        run.tracking.finish("failed")
                    raise
                for run, member in zip(group, members, strict=True):
                    with member_context(run.run_id):
                        run.tracking.finish("success" if member.error is None else "failed")
                        if member.error is not None:
                            log.error(f"run {run.run_id} stopped: {type(member.error).__name__}: {member.error}")
                            outcome[run.run_id] = member.error
                            continue
                        try:
                            outcome[run.run_id] = self._write_record(
                                run, member.summary, label=f"[{indices[run.run_id]}/{total}] {run.label}")
                        except Exception as exc:  # noqa: BLE001
                            outcome[run.run_id] = exc
        return outcome

    def _score_given(self, run_id: str, attempt: Path, index: int, total: int,
                     claim: Claim | None = None) -> dict[str, Any]:
        """A checkpoint trained elsewhere: scored on the test split, recorded like a trained run."""
        spec = self.plan.runs[run_id]
        data = self.dataset(spec.dataset)
        started_at, started = _now(), time.perf_counter()
        self.progress.run_started(index, total, self._label(run_id), 0, 0)
        model = create_model(spec.arch, data.num_classes)
        sha256 = load_weights(Path(spec.checkpoint), model, what=f"teacher checkpoint of {spec.arch}")
        self._check_unchanged(spec, sha256)
        model.to(self.device)
        loader = data.loader(False, self._test_recipe(run_id).loader_settings(False), self.device)
        test = evaluate(model, loader, Precision.for_device(self.device), self.device)
        metrics = {"test_acc_last": test["top1"], "test_acc_best": test["top1"], "test_top5_last": test["top5"],
                   "best_epoch": None, "epochs": 0}
        run = PreparedRun(run_id=run_id, spec=spec, attempt=attempt, label=self._label(run_id), started_at=started_at,
                          started=started, trainer=None, tracking=None, teacher_info=None, resumed_epoch=0,
                          # the given file, as loaded
                          loaded={"weights": str(spec.checkpoint), "weights_sha256": sha256},
                          guard=write_guard(claim, attempt))
        return self._write_record(run, metrics)

    def _prepare(self, run_id: str, attempt: Path, claim: Claim | None, reporters: list[Any],
                 teachers: tuple[list[torch.nn.Module], list[dict[str, Any]]] | None = None) -> "PreparedRun":
        """The run's trainer, resumed from its checkpoint when there is one, with its callbacks: history.jsonl
        first (what `status` and the curves read is on disk before anything else runs), the reporters, the
        trackers, the claim's check. ``teachers``: already loaded (a cohort loads them once)."""
        spec = self.plan.runs[run_id]
        data = self.dataset(spec.dataset)
        started_at, started = _now(), time.perf_counter()
        label = self._label(run_id)
        models, infos = teachers if teachers is not None else self._teacher_models(spec, data.num_classes)
        # one teacher: its record entry and fingerprint; several: a list, and one fingerprint of all. The
        # fingerprint is of the tensors, not the file: the same teacher trained again resumes its students
        teacher_info = infos[0] if len(infos) == 1 else ({"teachers": infos} if infos else None)
        fingerprint = (infos[0]["tensors_sha256"] if len(infos) == 1 else hashlib.sha256(
            "".join(i["tensors_sha256"] for i in infos).encode()).hexdigest() if infos else None)
        guard = write_guard(claim, attempt)
        tracking = TrackerCallback(
            [TRACKERS.get(name)(self.store.dir) for name in self.trackers()],
            {"run_id": run_id, "label": label, "suite": self.plan.name, "attempt": attempt.name,
             "epochs": spec.recipe.epochs},
            hparams_of({"label": label, "rows": self._role(run_id), **spec.to_dict()}))
        job = TrainJob(run_id=run_id, arch=spec.arch, recipe=spec.recipe, seed=spec.seed, method=spec.method,
                       data=data, workdir=attempt, device=self.device, teachers=models, teacher_sha256=fingerprint,
                       guard=guard, callbacks=[guard, HistoryFile(attempt), *reporters, tracking])
        trainer = Trainer(job)
        random_state = RandomState.capture(self.device)  # as the trainer left it, for a cohort to restore
        resumed_epoch = trainer.start_epoch - 1 if trainer.try_resume() else 0
        return PreparedRun(run_id=run_id, spec=spec, attempt=attempt, label=label, started_at=started_at,
                           started=started, trainer=trainer, tracking=tracking, teacher_info=teacher_info,
                           resumed_epoch=resumed_epoch, random_state=random_state, guard=guard)

    def _write_record(self, run: "PreparedRun", metrics: dict[str, Any], label: str | None = None) -> dict[str, Any]:
        spec, run_id = run.spec, run.run_id
        history = run.trainer.history if run.trainer is not None else []
        seconds = time.perf_counter() - run.started
        record = {
            "format": RECORD_FORMAT,
            "run_id": run_id,
            "suite": self.plan.name,
            "attempt": run.attempt.name,
            "suite_source": self.plan.source,
            "cells": [{"row": c.row, "column": c.column, "seed": c.seed}
                      for c in self.plan.cells if c.run_id == run_id],
            "spec": spec.to_dict(),
            "data": self._data_info[spec.dataset],
            "metrics": metrics,
            "teacher": run.teacher_info,
            "history": history,
            "provenance": {**provenance(self.device), "started": run.started_at, "finished": _now(),
                           "wall_seconds": seconds, "resumed_after_epoch": run.resumed_epoch,
                           "train_seconds": sum(e["seconds"] for e in history), "slurm_job": slurm_job(),
                           # trained with these runs, one teacher forward per batch for all: an epoch's
                           # seconds are the cohort's
                           **({"cohort": run.cohort} if run.cohort else {}),
                           **run.loaded},
        }
        if (where := non_finite({"metrics": metrics, "history": history})) is not None:
            raise TrainingDivergedError(f"run {run_id}: {where} is not a finite number; nothing was recorded")
        self.store.write_record(run.attempt, record, before_commit=run.guard)
        self.progress.run_finished(metrics, seconds, label=label)
        return record

    def _test_recipe(self, run_id: str) -> Recipe:
        """The recipe whose test view (batch size, crop) a run is scored with: its own, or for a given
        checkpoint the recipe of a run that learns from it (the images its students see)."""
        spec = self.plan.runs[run_id]
        if spec.recipe is not None:
            return spec.recipe
        runs = [r for r in self.plan.runs.values() if r.recipe is not None and r.dataset == spec.dataset]
        learner = next((r for r in runs if run_id in r.teachers), runs[0] if runs else None)  # else a student
        return learner.recipe if learner else resolve_recipe(DATASETS.get(spec.dataset).recipe, spec.arch, {})

    def _role(self, run_id: str) -> str:
        rows = dict.fromkeys(c.row for c in self.plan.cells if c.run_id == run_id)
        return "/".join(rows) or ("assistant" if self.plan.runs[run_id].teachers else "ensemble teacher")
