"""The one training loop, for teachers and students alike.

A run is a model, a recipe, a seed and an objective (engine/objective.py); a teacher is just a run whose
objective is cross-entropy only. Data stays on the training device (data/loader.py). On CUDA the networks
run in bf16 autocast and channels_last; the losses always run in fp32. The full training state is written
atomically after every epoch, and every random source is reseeded from (seed, epoch), so an interrupted
run resumes from its last epoch and ends exactly as an uninterrupted one would (bit for bit on a CPU;
on a GPU up to nondeterministic cuDNN kernels).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from tekapbench.atomic import save_torch
from tekapbench.data.base import BatchSource, Splits
from tekapbench.data.views import VIEWS, raw_images
from tekapbench.engine.optim import OPTIMIZERS
from tekapbench.engine.recipe import Recipe
from tekapbench.errors import TrainingDivergedError, UnsafeFileError, UsageError
from tekapbench.methods.base import DistillContext
from tekapbench.engine.objective import MethodSpec, Objective
from tekapbench.models.base import create_model, probe_shapes
from tekapbench.models.checkpoints import read_torch_file
from tekapbench.progress import log
from tekapbench.seeding import derive_seed, make_generator, seed_everything

# The resume checkpoint holds plain data only (tensors, numbers, strings, None, lists, tuples, dicts): format,
# run_id, teacher_sha256, epoch, cpu_threads, the state dicts of model, objective and optimizer, and the
# history. It is read with torch.load(weights_only=True); a file asking for anything else is refused, never
# unpickled. No RNG state is saved: every random source is reseeded from (seed, epoch) at the start of each
# epoch. The checkpoint before the last one is kept beside it (a hard link: no second write), so that a
# damaged last checkpoint costs one epoch, not the run.
CHECKPOINT_FORMAT = 1
_PLAIN = (str, int, float, bool, type(None), torch.dtype, torch.device, torch.Size)
# Called with each finished epoch's history entry, after its checkpoint is written. A callback object may
# also have ``on_start(trainer)`` (before the first epoch to train, after a resume) and ``on_batch(epoch,
# step, steps)`` (after each optimizer step; ``step`` counts from 1): progress bars, history files, trackers.
EpochCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Precision:
    """How the networks run on a device: autocast dtype (None = fp32) and memory format."""

    autocast_dtype: torch.dtype | None
    channels_last: bool

    @staticmethod
    def for_device(device: torch.device) -> "Precision":
        if device.type == "cuda":
            # bf16 needs Ampere or newer; older GPUs train in fp32 rather than risk fp16 overflow
            bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
            return Precision(torch.bfloat16 if bf16 else None, channels_last=True)
        return Precision(None, channels_last=False)

    def autocast(self, device: torch.device):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)


@torch.no_grad()
def evaluate(model: nn.Module, loader: BatchSource, precision: Precision, device: torch.device) -> dict[str, float]:
    """Top-1 and top-5 accuracy in % and mean cross-entropy over the loader's split."""
    was_training = model.training
    model.eval()
    top1 = torch.zeros((), device=device)
    top5 = torch.zeros((), device=device)
    nll = torch.zeros((), device=device)
    n = 0
    for batch in loader.epoch():
        with precision.autocast(device):
            logits = model(batch.images).logits
        logits = logits.float()
        k = min(5, logits.shape[1])
        hits = logits.topk(k, dim=1).indices == batch.labels.unsqueeze(1)
        top1 += hits[:, 0].sum()
        top5 += hits.any(dim=1).sum()
        nll += torch.nn.functional.cross_entropy(logits, batch.labels, reduction="sum")
        n += batch.labels.numel()
    model.train(was_training)
    return {"top1": 100.0 * top1.item() / n, "top5": 100.0 * top5.item() / n, "nll": nll.item() / n}


@dataclass
class TrainJob:
    run_id: str
    arch: str
    recipe: Recipe
    seed: int
    method: MethodSpec
    data: Splits
    workdir: Path
    device: torch.device
    teacher: nn.Module | None = None  # shorthand for teachers=[teacher]
    teacher_sha256: str | None = None  # fingerprint of the teachers' weights: a resume must use the same
    callbacks: list[EpochCallback] = field(default_factory=list)
    teachers: list[nn.Module] = field(default_factory=list)  # teacher first, then its assistants
    # called before each file of the run is written (and right before it takes its place): raises when this
    # process may no longer write into the run (its claim was taken over, or the run is finished)
    guard: Callable[[], None] = lambda: None

    def __post_init__(self):
        if self.teacher is not None and not self.teachers:
            self.teachers = [self.teacher]


class Trainer:
    def __init__(self, job: TrainJob):
        if job.method.needs_teacher and not job.teachers:
            raise ValueError(f"run {job.run_id}: the method needs a teacher")
        self.job = job
        self.device = job.device
        self.precision = Precision.for_device(job.device)
        seed_everything(derive_seed(job.seed, "init"))
        data = job.data
        self.model = self._prepare(create_model(job.arch, data.num_classes))
        # frozen: a term may pass student tensors through a teacher's classifier (CA-MKD)
        self.teachers = ([self._prepare(t).eval().requires_grad_(False) for t in job.teachers]
                         if job.method.needs_teacher else [])
        channels_last = self.precision.channels_last
        self.train_loader = data.loader(True, job.recipe.loader_settings(True, channels_last), job.device)
        self.test_loader = data.loader(False, job.recipe.loader_settings(False, channels_last), job.device)
        context = None
        if self.teachers:
            size = job.recipe.crop_size or data.image_size
            teachers = tuple(probe_shapes(t, size, job.device) for t in self.teachers)
            context = DistillContext(
                student=probe_shapes(self.model, size, job.device),
                teacher=teachers[0],
                num_classes=data.num_classes,
                train_labels=self.train_loader.labels,
                device=job.device,
                teachers=teachers,
            )
        try:
            self.objective = Objective(job.method, context).to(job.device)
        except ValueError as exc:
            raise UsageError(f"run {job.run_id}: {exc}") from None
        params = list(self.model.parameters()) + list(self.objective.parameters())
        self.optimizer = OPTIMIZERS.get(job.recipe.optimizer)(params, job.recipe)
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 1
        # syncing with the device on every step would stall a GPU; on a CPU it is free
        self.check_every = 1 if job.device.type == "cpu" else 25

    def _prepare(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        if self.precision.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    @property
    def checkpoint_path(self) -> Path:
        return self.job.workdir / "checkpoint.pt"

    @property
    def previous_checkpoint_path(self) -> Path:
        return self.job.workdir / "checkpoint.prev.pt"

    @property
    def model_path(self) -> Path:
        return self.job.workdir / "model.pt"

    def cpu_threads(self) -> int | None:
        """The thread count CPU numbers depend on (None on a GPU, whose numbers it does not change)."""
        return torch.get_num_threads() if self.device.type == "cpu" else None

    # -- state -------------------------------------------------------------------------------------
    def _state(self, epoch: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "run_id": self.job.run_id,
            "teacher_sha256": self.job.teacher_sha256,
            "epoch": epoch,
            "cpu_threads": self.cpu_threads(),
            "model": self.model.state_dict(),
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": self.history,
        }

    def try_resume(self) -> bool:
        """Restores the last completed epoch from the checkpoint, if there is one. A checkpoint that cannot
        serve (damaged, not tekapbench's, another run's, trained with other teacher weights) is set aside,
        never deleted, with a warning; the one before it is tried next, then training starts over."""
        for path in (self.checkpoint_path, self.previous_checkpoint_path):
            if not path.exists():
                continue
            try:
                state = self._read_checkpoint(path)
            except UsageError as exc:
                if isinstance(exc, UnsafeFileError) and exc.asks_for:
                    raise  # crafted (it asks to run code): refused loudly, never quietly moved away
                aside = _set_aside(path)
                log.warning(f"{exc} It was moved to {aside.name}; run {self.job.run_id} resumes from the "
                            f"checkpoint before it, if any, else from scratch.")
                continue
            threads = state.get("cpu_threads")
            if threads is not None and self.cpu_threads() is not None and threads != self.cpu_threads():
                raise UsageError(f"{path}: epochs 1-{state['epoch']} of run {self.job.run_id} were trained with "
                                 f"{threads} CPU threads, this process has {self.cpu_threads()}: CPU numbers depend "
                                 f"on the thread count, so a run is never resumed with another; resume with "
                                 f"--threads {threads} (or [suite] cpu_threads = {threads}), or move the "
                                 f"checkpoints aside to train it from scratch with {self.cpu_threads()}")
            self.model.load_state_dict(state["model"])
            self.objective.load_state_dict(state["objective"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.history = list(state["history"])
            self.start_epoch = state["epoch"] + 1
            return True
        return False

    def _read_checkpoint(self, path: Path) -> dict[str, Any]:
        """The resume state in ``path``; a UsageError saying why it cannot serve this run."""
        what = f"resume checkpoint of run {self.job.run_id}"
        state, _ = read_torch_file(path, what, map_location=self.device,
                                   accepted=f"Delete it to train run {self.job.run_id} from scratch (only this "
                                            f"run's progress is lost): tekapbench's own resume checkpoints hold "
                                            f"tensors, numbers, strings, lists and dicts only.")
        if not isinstance(state, dict) or not {"model", "objective", "optimizer", "history", "epoch"} <= set(state):
            raise UsageError(f"{what}: {path} is damaged or not a resume checkpoint of tekapbench.")
        if state.get("run_id") != self.job.run_id or state.get("format") != CHECKPOINT_FORMAT:
            raise UsageError(f"{what}: {path} belongs to another run ({state.get('run_id')}).")
        if state.get("teacher_sha256") != self.job.teacher_sha256:
            raise UsageError(f"{what}: {path} was trained with other teacher weights (tensors sha256 "
                             f"{state.get('teacher_sha256')}) than the teacher's now ({self.job.teacher_sha256}): "
                             f"the teacher was trained again.")
        return state

    # -- loop --------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        recipe = self.job.recipe
        for callback in self.job.callbacks:
            if hasattr(callback, "on_start"):
                callback.on_start(self)
        for epoch in range(self.start_epoch, recipe.epochs + 1):
            started = time.perf_counter()
            self.train_epoch(epoch)
            self.end_epoch(epoch, started)
        return self.finish()

    def train_epoch(self, epoch: int) -> None:
        """One pass over the training split: the teachers' forward, then the student's step, per batch."""
        on_batch = [c.on_batch for c in self.job.callbacks if hasattr(c, "on_batch")]
        self.begin_epoch(epoch)
        views = view_makers(self.view_augmentations().items(), self.job.seed, epoch, self.device)
        steps_per_epoch = len(self.train_loader)
        for step, batch in enumerate(self.train_loader.epoch(self.data_generator(epoch))):
            shared = TeacherPass.of(self.teachers, self.train_loader, self.job.data, batch, views,
                                    self.precision, self.device)
            self.train_step(epoch, step, batch, shared)
            for callback in on_batch:
                callback(epoch, step + 1, steps_per_epoch)

    def finish(self) -> dict[str, Any]:
        """The final weights written beside the checkpoint; the summary of the history."""
        self.job.guard()
        save_torch(self.model_path, {"model": self.model.state_dict(), "arch": self.job.arch,
                                     "run_id": self.job.run_id, "epoch": self.job.recipe.epochs},
                   before_commit=self.job.guard)
        self.previous_checkpoint_path.unlink(missing_ok=True)  # served its purpose: the run is complete
        return summarize(self.history)

    # The pieces of one epoch, which a cohort (engine/cohort.py) calls for each of its members in turn.
    def data_generator(self, epoch: int) -> torch.Generator:
        """The training split's order and augmentation of ``epoch``: a function of the seed and the epoch only,
        so that the students of one seed see the same batches."""
        return make_generator(derive_seed(self.job.seed, "data", epoch), self.device)

    def view_augmentations(self) -> dict[str, str]:
        """Each extra view the objective compares on, and its augmentation: the recipe's, else the term's own."""
        return {name: aug for name, aug in {**self.objective.views, **dict(self.job.recipe.views)}.items()
                if name in self.objective.views}

    def begin_epoch(self, epoch: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.job.recipe.lr_at(epoch)
        torch.manual_seed(derive_seed(self.job.seed, "torch", epoch))
        self.objective.reseed(derive_seed(self.job.seed, "objective", epoch))
        self.model.train()
        self.objective.train()
        self._sums: dict[str, torch.Tensor] = {}
        self._total = torch.zeros((), device=self.device)
        self._correct = torch.zeros((), device=self.device)
        self._seen = self._steps = 0
        self._losses: dict[str, torch.Tensor] = {}

    def train_step(self, epoch: int, step: int, batch, shared: "TeacherPass") -> None:
        """The student's forward (and on each extra view), its objective, backward and optimizer step, with
        the teachers' outputs ``shared`` computed once for the batch."""
        with self.precision.autocast(self.device):
            student = self.model(batch.images)
            views = self.view_augmentations()
            if views:
                batch = replace(batch, views={name: (self.model(shared.view_images[name, aug]),
                                                     shared.view_teacher[name, aug])
                                              for name, aug in views.items()})
        losses = self.objective(student, shared.teacher, batch, epoch)
        loss = sum(losses.values())
        self._total += loss.detach()
        self._losses = losses
        if step % self.check_every == 0 and not torch.isfinite(self._total):
            self._diverged(epoch, step, losses)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        for name, value in losses.items():
            self._sums[name] = self._sums.get(name, 0.0) + value.detach()
        self._correct += (student.logits.detach().argmax(1) == batch.labels).sum()
        self._seen += batch.labels.numel()
        self._steps = step + 1

    def end_epoch(self, epoch: int, started: float) -> dict[str, Any]:
        """Checks the loss and the weights the last update left, scores the test split, writes the
        checkpoint, then calls the epoch callbacks."""
        if not torch.isfinite(self._total):
            self._diverged(epoch, self._steps - 1, self._losses)
        # the loss is checked before each update, so the epoch's last update is checked here, on what it made
        state = [*self.model.state_dict().values(), *self.objective.state_dict().values()]
        floats = [t for t in state if t.is_floating_point()]
        if floats and not torch.stack([t.isfinite().all() for t in floats]).all():
            self._diverged(epoch, self._steps - 1, self._losses, what="the weights are not finite after the "
                                                                        "epoch's last update")
        steps = self._steps
        test = evaluate(self.model, self.test_loader, self.precision, self.device)
        if not all(map(math.isfinite, test.values())):
            self._diverged(epoch, self._steps - 1, self._losses, what=f"the test split gives {test}")
        entry = {"epoch": epoch, "lr": self.job.recipe.lr_at(epoch),
                 "train_loss": self._total.item() / steps, "train_acc": 100.0 * self._correct.item() / self._seen,
                 "loss_terms": {name: float(v) / steps for name, v in self._sums.items()},
                 "test_acc": test["top1"], "test_top5": test["top5"], "test_nll": test["nll"],
                 "seconds": time.perf_counter() - started,
                 **({"cpu_threads": self.cpu_threads()} if self.cpu_threads() is not None else {})}
        self.history.append(entry)
        self.job.guard()
        self._keep_previous_checkpoint()
        save_torch(self.checkpoint_path, plain_data(self._state(epoch)), before_commit=self.job.guard)
        for callback in self.job.callbacks:
            callback(entry)
        return entry

    def _keep_previous_checkpoint(self) -> None:
        """The checkpoint about to be replaced becomes the previous one: a hard link, swapped in atomically
        (rename does nothing when both names are already links to one file: a resume after a kill here)."""
        current, previous = self.checkpoint_path, self.previous_checkpoint_path
        if not current.exists() or (previous.exists() and os.path.samefile(current, previous)):
            return
        link = self.job.workdir / f".{previous.name}.link.tmp"
        link.unlink(missing_ok=True)
        os.link(current, link)
        os.replace(link, previous)

    def _diverged(self, epoch: int, step: int, losses: dict[str, torch.Tensor],
                  what: str = "the loss is not finite") -> None:
        terms = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
        raise TrainingDivergedError(
            f"run {self.job.run_id} ({self.job.arch}): {what} at epoch {epoch} (found at step "
            f"{step}; last step's terms: {terms}); training stopped. "
            + (f"The last good state is {self.checkpoint_path} (epoch {epoch - 1}). " if epoch > 1 else "")
            + f"Try a lower lr (now {self.job.recipe.lr_at(epoch):g}).")


def _set_aside(path: Path) -> Path:
    """Renames ``path`` to the first free ``<name>.set-aside-<k>``: out of the way, never deleted."""
    k = 1
    while (aside := path.with_name(f"{path.name}.set-aside-{k}")).exists():
        k += 1
    os.replace(path, aside)
    return aside


def plain_data(obj: Any, where: str = "checkpoint") -> Any:
    """``obj`` itself, after checking that torch.load(weights_only=True) can read it back: tensors, numbers,
    strings, None, lists, tuples and dicts only (a numpy scalar in the history would make the checkpoint
    unreadable on resume, so it fails here, where the mistake is made)."""
    kind = type(obj)  # exact types: a numpy float64 is a float, but pickles as numpy's
    if kind in (dict, OrderedDict):
        for key, value in obj.items():
            if type(key) not in (str, int):
                raise TypeError(f"{where}: key {key!r} is a {type(key).__name__}, not a str or int")
            plain_data(value, f"{where}[{key!r}]")
    elif kind in (list, tuple):
        for i, value in enumerate(obj):
            plain_data(value, f"{where}[{i}]")
    elif not (kind in _PLAIN or isinstance(obj, torch.Tensor)):
        raise TypeError(f"{where} is a {kind.__module__}.{kind.__qualname__}: a resume checkpoint "
                        f"holds tensors, numbers, strings, None, lists, tuples and dicts only")
    return obj


def summarize(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Last-epoch and best-epoch test accuracy (CRD/TeKAP report the former, DKD the latter)."""
    last = history[-1]
    best = max(history, key=lambda e: e["test_acc"])
    return {
        "test_acc_last": last["test_acc"],
        "test_top5_last": last["test_top5"],
        "test_acc_best": best["test_acc"],
        "best_epoch": best["epoch"],
        "train_loss_last": last["train_loss"],
        "epochs": last["epoch"],
    }


def view_makers(views: Iterable[tuple[str, str]], seed: int, epoch: int, device: torch.device) -> dict:
    """Each (view, augmentation) with its own generator of (seed, view, epoch): the same images for every
    student of one seed that compares on that view with that augmentation."""
    return {(name, aug): (VIEWS.get(aug), make_generator(derive_seed(seed, name, epoch), device))
            for name, aug in sorted(set(views))}


@dataclass
class TeacherPass:
    """What every student of a batch reads: the teachers' outputs on the batch (a tuple of every teacher's
    when there are several; None without a teacher) and, for each (view, augmentation), the view's images
    and the teachers' outputs on them. Read only: a student's objective never changes it in place."""

    teacher: Any
    view_images: dict[tuple[str, str], torch.Tensor]
    view_teacher: dict[tuple[str, str], Any]

    @staticmethod
    def of(teachers: list[nn.Module], loader: BatchSource, data: Splits, batch, views: dict, precision: Precision,
           device: torch.device) -> "TeacherPass":
        def forward(images: torch.Tensor):
            if not teachers:
                return None
            with torch.no_grad():
                outputs = tuple(t(images) for t in teachers)
            return outputs[0] if len(outputs) == 1 else outputs

        view_images: dict[tuple[str, str], torch.Tensor] = {}
        with precision.autocast(device):
            teacher = forward(batch.images)
            if views:
                original = raw_images(loader, batch.indices, next(iter(views))[0])
                channels_last = batch.images.is_contiguous(memory_format=torch.channels_last)
                view_images = {key: augment(original, data.mean, data.std, generator, channels_last=channels_last)
                               for key, (augment, generator) in views.items()}
            view_teacher = {key: forward(images) for key, images in view_images.items()}
        return TeacherPass(teacher, view_images, view_teacher)
