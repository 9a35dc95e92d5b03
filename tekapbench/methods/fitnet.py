"""FitNet (Romero et al., 2015): regress a student stage feature onto the teacher's (hint), MSE.

Official code, as the distillation benchmarks run it: github:HobbitLong/RepDistiller,
``distiller_zoo/FitNet.py`` (``HintLoss``), ``models/util.py`` (``ConvReg``: convolution, BatchNorm, ReLU),
``train_student.py`` (hint layer 2, stem = 0), trained in one stage as ``1 * CE + 100 * hint``. The FitNets
paper trains in two stages (hint pre-training of the student's lower layers, then KD); like RepDistiller
and mdistiller, tekapbench has no option for that.
"""
from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field
from torch import nn

from tekapbench.methods.base import DistillContext, LossTerm, MethodParams, register_method


class FitNetParams(MethodParams):
    hint_layer: int = Field(2, ge=0, description="index into the post-activation stage features")


def conv_regressor(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> nn.Module:
    """RepDistiller's ConvReg: map a (C_s, H_s, W_s) feature onto (C_t, H_t, W_t), then BN + ReLU."""
    s_c, s_h, s_w = student_shape
    t_c, t_h, t_w = teacher_shape
    if s_h == 2 * t_h:
        conv: nn.Module = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
    elif s_h * 2 == t_h:
        conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
    elif s_h >= t_h:
        conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
    else:
        raise ValueError(f"no hint regressor from student feature {student_shape} to teacher {teacher_shape}")
    return nn.Sequential(conv, nn.BatchNorm2d(t_c), nn.ReLU(inplace=True))


@register_method("fitnet", params=FitNetParams, ce_weight=1.0, weight=100.0)
class FitNetLoss(LossTerm):
    """Hint learning: MSE between a regressed student feature and the teacher's."""

    reads = frozenset({"features"})

    def __init__(self, params: FitNetParams, ctx: DistillContext):
        super().__init__()
        n_s, n_t = len(ctx.student.features), len(ctx.teacher.features)
        if params.hint_layer >= min(n_s, n_t):
            raise ValueError(f"hint_layer {params.hint_layer} out of range: student has {n_s} stage features, "
                             f"teacher {n_t}")
        self.hint_layer = params.hint_layer
        self.regressor = conv_regressor(ctx.student.features[self.hint_layer], ctx.teacher.features[self.hint_layer])

    def forward(self, student, teacher, batch, epoch, *, primary=True):
        hint = self.regressor(student.features[self.hint_layer].float())
        return F.mse_loss(hint.float(), teacher.features[self.hint_layer].float())
