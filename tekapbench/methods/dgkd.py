"""DGKD (Son et al., ICCV 2021): densely guided knowledge distillation.

The student learns from the teacher and from every assistant at once: the sum of one KD term per teacher,
``T^2 * sum_k KL(p_k || p_S)`` at temperature T. Each assistant is itself trained this way from the teacher
and the assistants before it (``teachers = "dense"``). Stochastic DGKD leaves terms out at random in every
batch so that the student does not lean on one source (a regulariser, like dropout).

Official code (github:wonchulSon/DGKD, train.py, ``TrainManager.train``), the default:

- exactly ``drop_count`` (``--drop-num``, 1) of the K = 1 + n_assistants terms is removed in every batch,
  drawn uniformly among all of them, the teacher's included (``loss_KD_list.remove(random.choice(...))``);
- the KL is ``nn.KLDivLoss()`` with its default reduction ``"mean"``: averaged over every element, batch *
  classes, i.e. the batch-mean KL divided by the number of classes (``kl_reduction = "mean"``);
- ``T = 5`` (``--T``); loss ``(1 - lambda) * CE + lambda * T^2 * sum(kept terms)`` with ``lambda = 1``
  (``--lamb``): no cross-entropy, so the method is registered with ce_weight 0 and weight 1.

Paper (``behaviour = "paper"``, Sec. 3.3, as transcribed by secondary sources): each assistant's term is
kept with a Bernoulli draw of survival probability ``1 - drop_rate`` (the teacher's term always kept),
``L = (n+1)(1 - lambda) CE + lambda (L_T + sum_i b_i L_A_i)``; p = 0.75 reported best. The paper applies
the drop only when training the final student; here the term cannot tell an assistant's run from the
student's, so both draw the same way (for the first assistant, taught by the teacher alone, nothing is
ever dropped: see below).

Deliberate difference in both forms: the last remaining term is never dropped. The official code with
one term (the first assistant, taught by the teacher only) and ``--drop-num 1`` would remove it and train
on nothing; here such a run is plain KD from the teacher.

``reduction = "mean"`` divides the kept terms' sum by their number (neither code nor paper does).
The draws come from the term's own seeded generator (``reseed``); the synthetic views of TeKAP
(``primary=False``) reuse the draw of the batch's real call. All terms are computed and masked on the
device, so a draw never syncs with the host.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field, model_validator

from tekapbench.methods.base import DistillContext, LossTerm, MethodParams, register_method, soft_log_probs
from tekapbench.methods.takd import NOT_RESNETS, PLAIN_CNN
from tekapbench.seeding import LazyGenerator


class DGKDParams(MethodParams):
    behaviour: Literal["official", "paper"] = Field(
        "official", description="official: drop exactly drop_count terms, teacher included; "
                                "paper: drop each assistant's term with probability drop_rate, keep the teacher's")
    temperature: float = Field(5.0, gt=0)
    drop_count: int = Field(1, ge=0, description="official: terms removed per batch (--drop-num); 0: no drop")
    drop_rate: float = Field(0.25, ge=0, lt=1, description="paper: chance that an assistant's term is left out")
    kl_reduction: Literal["mean", "batchmean"] = Field(
        "mean", description="mean: KL averaged over batch*classes (nn.KLDivLoss default, official); "
                            "batchmean: summed over classes, averaged over the batch (Hinton's KD)")
    reduction: Literal["sum", "mean"] = Field(
        "sum", description="sum of the kept terms (code and paper) or their mean")

    @model_validator(mode="after")
    def _knob_matches_behaviour(self) -> "DGKDParams":
        if self.behaviour == "official" and "drop_rate" in self.model_fields_set:
            raise ValueError("drop_rate belongs to behaviour = 'paper'; the official code drops drop_count terms")
        if self.behaviour == "paper" and "drop_count" in self.model_fields_set:
            raise ValueError("drop_count belongs to behaviour = 'official'; the paper drops with drop_rate")
        return self


def dgkd_terms(student_logits: torch.Tensor, teacher_logits: Sequence[torch.Tensor], temperature: float,
               kl_reduction: str = "mean") -> torch.Tensor:
    """``T^2 * KL(p_k || p_S)`` for every teacher k, shape (K,), fp32."""
    log_s = soft_log_probs(student_logits, temperature)
    log_t = torch.log_softmax(torch.stack([t.float() for t in teacher_logits]) / temperature, dim=-1)
    per_sample = (log_t.exp() * (log_t - log_s)).sum(dim=-1)  # (K, B)
    terms = per_sample.mean(dim=1) * temperature**2
    return terms / student_logits.shape[1] if kl_reduction == "mean" else terms


def dgkd_loss(terms: torch.Tensor, keep: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """The kept terms' sum (or mean); ``keep`` is a 0/1 mask over the terms."""
    keep = keep.to(terms.dtype)
    loss = (keep * terms).sum()
    return loss / keep.sum() if reduction == "mean" else loss


# The official recipe (train.py: argument defaults and adjust_learning_rate, TAKD's code extended): 160
# epochs, batch 128, SGD momentum 0.9, weight decay 1e-4, lr 0.1 dropped x0.1 at epochs/2 and 3*epochs/4
# for ResNet students, a constant 0.01 for every other student (model_factory.is_resnet: a name starting
# with "resnet"), and no augmentation: ``--crop`` defaults to False (data_loader.py get_cifar). A suite
# that wants CRD's augmentation for DGKD sets crop_padding = 4 and flip = true under [recipe].
OFFICIAL_RECIPES = {"cifar100": {
    "source": "DGKD, github:wonchulSon/DGKD@2599350ebe8cce045efd322a9f7fbf92f12528d7 train.py, data_loader.py",
    "epochs": 160, "batch_size": 128, "lr": 0.1, "lr_batch_size": 128, "weight_decay": 1e-4,
    "milestones": [80, 120], "lr_decay": 0.1, "crop_padding": 0, "flip": False,
    "by_arch": {arch: PLAIN_CNN for arch in NOT_RESNETS},
}}


@register_method("dgkd", params=DGKDParams, ce_weight=0.0, weight=1.0, teachers="dense", recipes=OFFICIAL_RECIPES)
class DGKDLoss(LossTerm):
    """KD from the teacher and every assistant, one term left out at random in each batch."""

    reads = frozenset({"logits"})
    multi_teacher = True

    def __init__(self, params: DGKDParams, ctx: DistillContext | None = None):
        super().__init__()
        self.params = params
        self.draws = LazyGenerator()
        self._keep: torch.Tensor | None = None

    def reseed(self, seed: int) -> None:
        self.draws.reseed(seed)

    def _rand(self, count: int, device: torch.device) -> torch.Tensor:
        return torch.rand(count, generator=self.draws.on(device), device=device)

    def draw_keep(self, count: int, device: torch.device) -> torch.Tensor:
        """This batch's 0/1 mask over the ``count`` terms (teacher first); at least one is kept."""
        p = self.params
        keep = torch.ones(count, dtype=torch.bool, device=device)
        if p.behaviour == "official":
            dropped = min(p.drop_count, count - 1)
            if dropped:  # the `dropped` smallest of K uniform scores: a uniform draw without replacement
                keep = keep.scatter(0, self._rand(count, device).argsort()[:dropped], False)
        elif count > 1:
            keep[1:] = self._rand(count - 1, device) >= p.drop_rate
        return keep

    def forward(self, student, teacher, batch, epoch, *, primary=True):
        teachers = teacher if isinstance(teacher, tuple) else (teacher,)
        if primary or self._keep is None or self._keep.numel() != len(teachers):
            self._keep = self.draw_keep(len(teachers), student.logits.device)
        terms = dgkd_terms(student.logits, [t.logits for t in teachers], self.params.temperature,
                           self.params.kl_reduction)
        return dgkd_loss(terms, self._keep, self.params.reduction)
