"""CRD (Tian et al., ICLR 2020): contrastive representation distillation with a memory bank.

Follows RepDistiller: both pooled embeddings are projected to ``feat_dim`` and L2-normalised; each is
contrasted with ``nce_k`` negatives drawn from the other network's memory bank (samples of other classes,
RepDistiller's 'exact' mode), scored by an NCE loss whose normaliser Z is fixed on the first batch; the
banks are momentum updates of the positives' embeddings.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from tekapbench.methods.base import DistillContext, LossTerm, MethodParams, register_method

_EPS = 1e-7
DEFAULT_NCE_K = 16384


class CRDParams(MethodParams):
    feat_dim: int = Field(128, gt=0)
    nce_k: int | None = Field(None, gt=0, description="negatives per positive; default 16384, or the "
                              "training-set size when that is smaller (drawing more than exist only repeats them)")
    nce_t: float = Field(0.07, gt=0, description="temperature of the critic")
    nce_m: float = Field(0.5, ge=0, lt=1, description="momentum of the memory bank update")


class Embed(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x.flatten(1).float()), dim=1)


def nce_loss(scores: torch.Tensor, num_data: int) -> torch.Tensor:
    """NCE loss of RepDistiller's ContrastLoss: column 0 holds the positive, the rest the negatives."""
    batch, m = scores.shape[0], scores.shape[1] - 1
    noise = m / num_data
    log_pos = torch.log(scores[:, 0] / (scores[:, 0] + noise + _EPS))
    log_neg = torch.log(noise / (scores[:, 1:] + noise + _EPS))
    return -(log_pos.sum() + log_neg.sum()) / batch


class OtherClassSampler:
    """Draws, for each sample, k indices uniformly among the training samples of the other classes."""

    def __init__(self, labels: torch.Tensor):
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels)
        self.by_class = order  # sample indices grouped by class
        self.class_start = torch.cumsum(counts, 0) - counts
        self.class_count = counts
        self.total = labels.numel()

    def sample(self, labels: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
        start = self.class_start[labels].unsqueeze(1)
        count = self.class_count[labels].unsqueeze(1)
        u = torch.rand(labels.numel(), k, device=labels.device, generator=generator)
        slot = (u * (self.total - count)).long()
        slot = slot + (slot >= start) * count  # skip over the sample's own class block
        return self.by_class[slot]


@register_method("crd", params=CRDParams, ce_weight=1.0, weight=0.8)
class CRDLoss(LossTerm):
    """Contrastive representation distillation on the pooled embeddings."""

    reads = frozenset({"embedding"})

    def __init__(self, params: CRDParams, ctx: DistillContext):
        super().__init__()
        self.num_data = ctx.num_train
        self.nce_k = params.nce_k or min(DEFAULT_NCE_K, self.num_data)
        self.params = params
        self.embed_s = Embed(ctx.student.embedding_dim, params.feat_dim)
        self.embed_t = Embed(ctx.teacher.embedding_dim, params.feat_dim)
        stdv = 1.0 / math.sqrt(params.feat_dim / 3)
        for name in ("memory_s", "memory_t"):  # drawn from the run's seeded global generator, like the weights
            bank = torch.rand(self.num_data, params.feat_dim) * (2 * stdv) - stdv
            self.register_buffer(name, bank)
        # NCE normalisers, fixed from the first batch (negative = not yet set)
        self.register_buffer("z_norm", torch.full((2,), -1.0))
        self.sampler = OtherClassSampler(ctx.train_labels)
        self.generator: torch.Generator | None = None
        self._gathered: tuple[torch.Tensor, torch.Tensor] | None = None  # this batch's bank rows
        self._z_ready = False  # caches "z_norm is set" so the hot path does not sync with the device

    def reseed(self, seed: int) -> None:
        self.generator = torch.Generator(device=self.memory_s.device).manual_seed(seed)

    def _apply(self, fn, recurse=True):  # keep the sampler's index tensors on the module's device
        out = super()._apply(fn, recurse)
        device = self.memory_s.device
        for attr in ("by_class", "class_start", "class_count"):
            setattr(self.sampler, attr, getattr(self.sampler, attr).to(device))
        return out

    def forward(self, student, teacher, batch, epoch, *, primary=True):
        v_s = self.embed_s(student.embedding)
        v_t = self.embed_t(teacher.embedding)
        if primary or self._gathered is None:
            # the real teacher's call samples the negatives and gathers the banks; calls on synthetic
            # teachers reuse both, so every view of a batch is scored against the same memory state
            negatives = self.sampler.sample(batch.labels, self.nce_k, self.generator)
            idx = torch.cat([batch.indices.unsqueeze(1), negatives], dim=1).view(-1)
            shape = (batch.indices.numel(), self.nce_k + 1, self.params.feat_dim)
            self._gathered = (self.memory_t.index_select(0, idx).view(shape),
                              self.memory_s.index_select(0, idx).view(shape))
        w_t, w_s = self._gathered
        # the student embedding is scored against the teacher bank and vice versa
        out_s = torch.exp(torch.bmm(w_t, v_s.unsqueeze(2)).squeeze(2) / self.params.nce_t)
        out_t = torch.exp(torch.bmm(w_s, v_t.unsqueeze(2)).squeeze(2) / self.params.nce_t)
        if not self._z_ready:
            if bool(self.z_norm[0] < 0):
                self.z_norm.copy_(torch.stack([out_s.mean(), out_t.mean()]).detach() * self.num_data)
            self._z_ready = True
        loss = nce_loss(out_s / self.z_norm[0], self.num_data) + nce_loss(out_t / self.z_norm[1], self.num_data)
        if primary and self.training:
            self._update_memory(batch.indices, v_s.detach(), v_t.detach())
        return loss

    @torch.no_grad()
    def _update_memory(self, idx: torch.Tensor, v_s: torch.Tensor, v_t: torch.Tensor) -> None:
        m = self.params.nce_m
        for bank, v in ((self.memory_s, v_s), (self.memory_t, v_t)):
            updated = F.normalize(bank.index_select(0, idx) * m + v * (1 - m), dim=1)
            bank.index_copy_(0, idx, updated)
