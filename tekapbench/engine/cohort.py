"""Students that learn from the same teachers on the same batches, trained together: each batch goes once
through the teachers (and once per extra view), then every member takes its own step.

The students of one seed already see the same batches: the data order and augmentation of an epoch are a
function of (seed, epoch) (Trainer.data_generator), and so are the view augmentations. Everything else is
each member's own: model, objective (its TeKAP noise stream included), optimizer, lr schedule, checkpoint,
history and callbacks, and torch's global random state, which the cohort swaps in before and out after
each member's work, so that each member draws exactly what it would draw trained alone. A cohort's
records are therefore those of its members trained one by one, bit for bit on a CPU.

Which runs may form a cohort is ``cohort_key``: one device, dataset, seed, teachers and epoch count, and
one batching and augmentation of the training split. A member whose loss diverges (or whose claim is
lost) stops alone, with its error; the others go on.
"""
from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from tekapbench.engine.trainer import TeacherPass, Trainer, view_makers


def cohort_key(spec) -> tuple | None:
    """What the runs of one cohort share (a RunSpec of the plan), or None for a run that trains alone: a
    given checkpoint, or a run without teachers (nothing to share but the batches)."""
    if spec.kind != "train" or not spec.teachers or spec.recipe is None:
        return None
    recipe = spec.recipe
    return (spec.dataset, spec.seed, tuple(spec.teachers), recipe.epochs,
            recipe.loader_settings(True), recipe.loader_settings(False))


@dataclass
class RandomState:
    """torch's (CPU and current CUDA device), Python's and NumPy's global random state of one member."""

    torch_cpu: torch.Tensor
    torch_cuda: torch.Tensor | None
    python: Any
    numpy: Any

    @staticmethod
    def capture(device: torch.device) -> "RandomState":
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return RandomState(torch.get_rng_state(), cuda, random.getstate(), np.random.get_state())

    def restore(self, device: torch.device) -> None:
        torch.set_rng_state(self.torch_cpu)
        if self.torch_cuda is not None:
            torch.cuda.set_rng_state(self.torch_cuda, device)
        random.setstate(self.python)
        np.random.set_state(self.numpy)


@dataclass
class Member:
    trainer: Trainer
    random_state: RandomState
    error: BaseException | None = None
    summary: dict[str, Any] | None = None

    @property
    def run_id(self) -> str:
        return self.trainer.job.run_id


@dataclass
class Cohort:
    """Trainers built one after another (each Trainer seeds its own initialisation) and resumed to one
    epoch; ``fit`` trains them in lock step. ``on_member(run_id)`` is entered around everything done for
    one member (its run.log takes that member's messages only); ``callbacks`` get the cohort's own events
    (``on_start(cohort)``, ``on_batch(epoch, step, steps)``), for a progress bar."""

    members: list[Member]
    on_member: Callable[[str], Any] = field(default=lambda run_id: contextlib.nullcontext())
    callbacks: list[Any] = field(default_factory=list)

    @staticmethod
    def of(trainers: list[Trainer], random_states: list[RandomState], **kwargs) -> "Cohort":
        starts = {t.start_epoch for t in trainers}
        if len(starts) != 1:
            raise ValueError(f"the members of a cohort resume after one epoch, not {sorted(starts)}")
        return Cohort([Member(t, r) for t, r in zip(trainers, random_states, strict=True)], **kwargs)

    @property
    def lead(self) -> Trainer:
        return self.members[0].trainer

    # what a progress bar reads of a trainer
    @property
    def train_loader(self):
        return self.lead.train_loader

    @property
    def start_epoch(self) -> int:
        return self.lead.start_epoch

    def _as(self, member: Member, work: Callable[[], Any]) -> None:
        """``work`` for one member, under its random state; an exception stops that member only."""
        device = member.trainer.device
        with self.on_member(member.run_id):
            member.random_state.restore(device)
            try:
                work()
            except Exception as exc:  # noqa: BLE001 - the others go on; the runner reports this one
                member.error = exc
            member.random_state = RandomState.capture(device)

    def active(self) -> list[Member]:
        return [m for m in self.members if m.error is None]

    def train_epoch(self, epoch: int) -> None:
        """One pass over the training split: per batch the teachers' forward once, then each member's step."""
        lead = self.lead
        on_batch = [c.on_batch for c in self.callbacks if hasattr(c, "on_batch")]
        for member in self.active():
            self._as(member, lambda t=member.trainer: t.begin_epoch(epoch))
        # the union of the members' (view, augmentation)s, each made once per batch for all
        views = view_makers([pair for m in self.active() for pair in m.trainer.view_augmentations().items()],
                            lead.job.seed, epoch, lead.device)
        steps_per_epoch = len(lead.train_loader)
        for step, batch in enumerate(lead.train_loader.epoch(lead.data_generator(epoch))):
            shared = TeacherPass.of(lead.teachers, lead.train_loader, lead.job.data, batch, views,
                                    lead.precision, lead.device)
            for member in self.active():
                self._as(member, lambda t=member.trainer: t.train_step(epoch, step, batch, shared))
            if not self.active():
                break
            for callback in on_batch:
                callback(epoch, step + 1, steps_per_epoch)

    def fit(self) -> list[Member]:
        lead = self.lead
        for member in self.members:
            for callback in member.trainer.job.callbacks:
                if hasattr(callback, "on_start"):
                    self._as(member, lambda c=callback, t=member.trainer: c.on_start(t))
        for callback in self.callbacks:
            if hasattr(callback, "on_start"):
                callback.on_start(self)
        for epoch in range(lead.start_epoch, lead.job.recipe.epochs + 1):
            if not self.active():
                break
            started = time.perf_counter()
            self.train_epoch(epoch)
            for member in self.active():
                self._as(member, lambda t=member.trainer: t.end_epoch(epoch, started))
        for member in self.active():
            self._as(member, lambda m=member: setattr(m, "summary", m.trainer.finish()))
        return self.members


def split_to_fit(count: int, free_bytes: int, held_bytes: int, step_bytes: int) -> list[int]:
    """How many members each cohort gets when ``count`` students would not all fit the device.

    The members' weights (and CRD's memory) are already on the device when this is asked, so
    ``free_bytes`` is what is left; each member then holds ``held_bytes`` more for as long as the cohort
    trains (its gradients and optimizer state), while the activations of one step (``step_bytes``) are
    needed by one member at a time: members step one after another. A cohort of k fits when
    k * held_bytes + step_bytes <= 0.9 * free_bytes (a tenth kept for the allocator's fragmentation).
    The members are dealt into the fewest cohorts of that size, as evenly as can be."""
    budget = 0.9 * free_bytes - step_bytes
    fits = count if held_bytes <= 0 else max(1, min(count, int(budget // held_bytes)))
    cohorts = -(-count // fits)
    return [count // cohorts + (i < count % cohorts) for i in range(cohorts)]


def device_budget(trainers: list[Trainer]) -> list[int]:
    """The cohort sizes ``trainers`` (built, on their device) are trained in: one cohort on a CPU (the
    host's memory holds a few students of the networks tekapbench trains); on a GPU as ``split_to_fit``
    says from the free memory, each member's parameter bytes (gradients and momentum: twice them) and the
    measured peak of one training step of the largest student, taken on a copy so that no member's state
    or random stream moves."""
    device = trainers[0].device
    if device.type != "cuda" or len(trainers) == 1:
        return [len(trainers)]
    held = max(2 * sum(p.numel() * p.element_size() for p in [*t.model.parameters(), *t.objective.parameters()])
               for t in trainers)
    largest = max(trainers, key=lambda t: sum(p.numel() for p in t.model.parameters()))
    step = _step_peak_bytes(largest)
    free, _ = torch.cuda.mem_get_info(device)
    return split_to_fit(len(trainers), free, held, step)


def _step_peak_bytes(trainer: Trainer) -> int:
    """The device memory one training step of ``trainer``'s student takes beyond what is allocated now,
    measured on copies of its model and objective with a batch of the training split's shape."""
    import copy

    device = trainer.device
    state = RandomState.capture(device)
    clone = copy.copy(trainer)  # the same job, loaders and teachers; its own student, objective, optimizer
    clone.model, clone.objective = copy.deepcopy(trainer.model), copy.deepcopy(trainer.objective)
    clone.optimizer = type(trainer.optimizer)([*clone.model.parameters(), *clone.objective.parameters()],
                                              **trainer.optimizer.defaults)
    batch = next(iter(trainer.train_loader.epoch(trainer.data_generator(1))))
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    try:
        views = view_makers(trainer.view_augmentations().items(), trainer.job.seed, 1, device)
        shared = TeacherPass.of(trainer.teachers, trainer.train_loader, trainer.job.data, batch, views,
                                trainer.precision, device)
        clone.begin_epoch(1)
        clone.train_step(1, 0, batch, shared)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    finally:
        del clone
        torch.cuda.empty_cache()
        state.restore(device)
