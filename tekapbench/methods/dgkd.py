"""DGKD (Son et al., ICCV 2021): densely guided knowledge distillation.

The student learns from the teacher and from every assistant at once: the sum of KD terms, one per
teacher. Stochastic DGKD drops each assistant's term in a batch with probability ``drop_rate`` (the
teacher's term is always kept), so the student does not lean on any one assistant. Each assistant is
itself trained this way from the teacher and the assistants before it (``teachers = "dense"``).
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from tekapbench.methods.base import DistillContext, LossTerm, MethodParams, register_method
from tekapbench.methods.kd import kd_loss


class DGKDParams(MethodParams):
    temperature: float = Field(4.0, gt=0)
    drop_rate: float = Field(0.5, ge=0, lt=1, description="chance that an assistant's term is left out of a batch")
    reduction: Literal["sum", "mean"] = Field(
        "sum", description="sum of the kept terms (the paper's loss) or their mean")


@register_method("dgkd", params=DGKDParams, ce_weight=0.1, weight=0.9, teachers="dense")
class DGKDLoss(LossTerm):
    """KD from the teacher and every assistant, assistants dropped at random."""

    reads = frozenset({"logits"})
    multi_teacher = True

    def __init__(self, params: DGKDParams, ctx: DistillContext | None = None):
        super().__init__()
        self.params = params
        self._seed: int | None = None
        self._generator: torch.Generator | None = None
        self._keep: torch.Tensor | None = None

    def reseed(self, seed: int) -> None:
        self._seed, self._generator = seed, None

    def _draw(self, count: int, device: torch.device) -> torch.Tensor:
        if self._seed is not None and (self._generator is None or self._generator.device != device):
            self._generator = torch.Generator(device=device).manual_seed(self._seed)
        return torch.rand(count, generator=self._generator, device=device) >= self.params.drop_rate

    def forward(self, student, teacher, batch, epoch, *, primary=True):
        first, *assistants = teacher
        if primary or self._keep is None:  # synthetic views (TeKAP) drop the same assistants as the real one
            self._keep = self._draw(len(assistants), student.logits.device)
        loss = kd_loss(student.logits, first.logits, self.params.temperature)
        if not assistants:
            return loss
        # every assistant's term is computed and multiplied by its 0/1 mask: no host sync on a GPU
        keep = self._keep.float()
        dropped_or_kept = torch.stack([kd_loss(student.logits, a.logits, self.params.temperature) for a in assistants])
        loss = loss + (keep * dropped_or_kept).sum()
        return loss / (1 + keep.sum()) if self.params.reduction == "mean" else loss
