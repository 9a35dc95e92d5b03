"""CRD (Tian et al., ICLR 2020): contrastive representation distillation with a memory bank.

Follows RepDistiller (github:HobbitLong/RepDistiller, crd/criterion.py CRDLoss, crd/memory.py ContrastMemory,
dataset/cifar100.py CIFAR100InstanceSample): both pooled embeddings are projected to ``feat_dim`` and
L2-normalised; each is contrasted with ``nce_k`` negatives drawn from the other network's memory bank, scored by
an NCE loss whose normaliser Z is fixed on the first batch; the banks are momentum updates of the positives'
embeddings. The negatives of a sample are drawn uniformly WITHOUT replacement among the training samples of the
other classes (mode 'exact'); only where ``nce_k`` exceeds that pool are they drawn with replacement, as
``np.random.choice(cls_negative[target], k, replace=k > len(cls_negative[target]))`` does.

Feature-level TeKAP (github:mdimtiazh/TeKAP, crd/criterion.py CRDLoss.forward) calls the contrast memory a
second time with the perturbed teacher embedding. That call is what a call with ``primary=False`` does here:
it reuses the batch's negatives, scores the synthetic teacher against the student bank as the earlier calls
of the batch left it, adds the FIRST call's student-side loss again (the official ``loss_1 = s_loss +
t_loss_1``), and updates both banks once more (the student bank with the same student embedding, the teacher
bank with the synthetic teacher's).

Differences from the paper, none selectable: the code's NCE uses a constant normaliser Z estimated on the
first batch (the paper's critic is normalised implicitly), as RepDistiller does; ``nce_k`` defaults to the
training-set size where that is smaller than 16384 (RepDistiller would then draw with replacement).
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
_KEYS_PER_CHUNK = 1 << 26  # random keys held at once when drawing without replacement (256 MiB of fp32)


class CRDParams(MethodParams):
    feat_dim: int = Field(128, gt=0)
    nce_k: int | None = Field(None, gt=0, description="negatives per positive; default 16384, or the "
                              "training-set size when that is smaller")
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


class OtherClassSampler(nn.Module):
    """Draws, for each sample, k distinct indices uniformly among the training samples of the other classes.

    Without replacement by random keys: every training sample gets a uniform key, the sample's own class
    gets -1, and the k largest keys are a uniform k-subset of the other classes (rows in chunks, so that
    ImageNet-sized sets do not hold batch x N keys at once). A class whose pool of other-class samples is
    smaller than k is drawn with replacement instead, uniformly over that pool, as RepDistiller does.
    """

    def __init__(self, labels: torch.Tensor):
        super().__init__()
        labels = labels.long()
        counts = torch.bincount(labels)
        self.register_buffer("labels", labels, persistent=False)
        self.register_buffer("by_class", torch.argsort(labels, stable=True), persistent=False)
        self.register_buffer("class_start", torch.cumsum(counts, 0) - counts, persistent=False)
        self.register_buffer("class_count", counts, persistent=False)
        self.total = labels.numel()
        present = counts[counts > 0]
        # decided once, so the hot path never asks the device which rows need replacement
        self.min_pool = self.total - int(present.max())
        self.max_pool = self.total - int(present.min())

    def sample(self, labels: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
        if k > self.max_pool:
            return self._with_replacement(labels, k, generator)
        drawn = self._without_replacement(labels, k, generator)
        if k > self.min_pool:  # some classes have fewer other-class samples than k
            short = (self.total - self.class_count[labels] < k).unsqueeze(1)
            drawn = torch.where(short, self._with_replacement(labels, k, generator), drawn)
        return drawn

    def _without_replacement(self, labels, k, generator):
        rows = max(1, _KEYS_PER_CHUNK // self.total)
        parts = []
        for chunk in labels.split(rows):
            keys = torch.rand(chunk.numel(), self.total, device=chunk.device, generator=generator)
            keys.masked_fill_(self.labels.unsqueeze(0) == chunk.unsqueeze(1), -1.0)
            parts.append(keys.topk(k, dim=1, sorted=False).indices)
        return torch.cat(parts)

    def _with_replacement(self, labels, k, generator):
        start = self.class_start[labels].unsqueeze(1)
        count = self.class_count[labels].unsqueeze(1)
        u = torch.rand(labels.numel(), k, device=labels.device, generator=generator)
        slot = (u * (self.total - count)).long()
        slot = slot + (slot >= start) * count  # skip over the sample's own class block
        return self.by_class[slot]


class FixedNegatives(nn.Module):
    """Hands out given negatives instead of drawing them (tests; replaying a recorded draw):
    ``crd.sampler = FixedNegatives(indices)`` with ``indices`` int64 (B, nce_k)."""

    def __init__(self, negatives: torch.Tensor):
        super().__init__()
        self.register_buffer("negatives", negatives.long(), persistent=False)

    def sample(self, labels: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
        if self.negatives.shape != (labels.numel(), k):
            raise ValueError(f"fixed negatives have shape {tuple(self.negatives.shape)}, need ({labels.numel()}, {k})")
        return self.negatives


# revision 2: negatives drawn without replacement, and a synthetic teacher's call (TeKAP F) scored against
# and updating the memory, as the official code does; revision 1 drew with replacement and left it alone
@register_method("crd", params=CRDParams, ce_weight=1.0, weight=0.8, revision=2)
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
        self.sampler = OtherClassSampler(ctx.train_labels)  # replaceable, e.g. by FixedNegatives
        self.generator: torch.Generator | None = None
        # this batch's (bank rows, detached student embedding, student-side loss), for synthetic-teacher calls
        self._batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._z_ready = False  # caches "z_norm is set" so the hot path does not sync with the device

    def reseed(self, seed: int) -> None:
        self.generator = torch.Generator(device=self.memory_s.device).manual_seed(seed)

    def _scores(self, bank: torch.Tensor, idx: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        rows = bank.index_select(0, idx).view(v.shape[0], -1, v.shape[1])
        return torch.exp(torch.bmm(rows, v.unsqueeze(2)).squeeze(2) / self.params.nce_t)

    def forward(self, student, teacher, batch, epoch, *, primary=True):
        v_t = self.embed_t(teacher.embedding)
        if not primary and self._batch is not None:
            # TeKAP's synthetic teacher: official code calls the contrast memory again with the same indices;
            # it sees the banks as the earlier calls left them and reuses the first call's student-side loss
            idx, v_s, s_loss = self._batch
            out_t = self._scores(self.memory_s, idx, v_t)
            loss = s_loss + nce_loss(out_t / self.z_norm[1], self.num_data)
            if self.training:
                self._update_memory(batch.indices, v_s, v_t.detach())
            return loss
        v_s = self.embed_s(student.embedding)
        negatives = self.sampler.sample(batch.labels, self.nce_k, self.generator)
        idx = torch.cat([batch.indices.unsqueeze(1), negatives], dim=1).view(-1)
        # the student embedding is scored against the teacher bank and vice versa
        out_s = self._scores(self.memory_t, idx, v_s)
        out_t = self._scores(self.memory_s, idx, v_t)
        if not self._z_ready:
            if bool(self.z_norm[0] < 0):
                self.z_norm.copy_(torch.stack([out_s.mean(), out_t.mean()]).detach() * self.num_data)
            self._z_ready = True
        s_loss = nce_loss(out_s / self.z_norm[0], self.num_data)
        loss = s_loss + nce_loss(out_t / self.z_norm[1], self.num_data)
        self._batch = (idx, v_s.detach(), s_loss)  # graph buffers are freed by backward, as usual
        if self.training:
            self._update_memory(batch.indices, v_s.detach(), v_t.detach())
        return loss

    @torch.no_grad()
    def _update_memory(self, idx: torch.Tensor, v_s: torch.Tensor, v_t: torch.Tensor) -> None:
        m = self.params.nce_m
        for bank, v in ((self.memory_s, v_s), (self.memory_t, v_t)):
            updated = F.normalize(bank.index_select(0, idx) * m + v * (1 - m), dim=1)
            bank.index_copy_(0, idx, updated)
