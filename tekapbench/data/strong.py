"""MLKD's strongly augmented view of a training batch, made in batch on the batch's device.

The official one (github:Jin-Ying/Multi-Level-Logit-Distillation, mdistiller/dataset/cifar100.py,
``get_cifar100_train_transform_strong`` and ``RandAugment``) transforms the ORIGINAL image, independently
of the weak view, with PIL:

1. ``RandomCrop(32, padding=4)`` (zero padding) and ``RandomHorizontalFlip()``;
2. ``RandAugment(2, 10)``: two ops drawn with replacement (``random.choices``) from 14, each with a
   magnitude uniform in the op's range (the ``m = 10`` argument is unused):

   ===============  ============  =====================================================================
   op               range         PIL call
   ===============  ============  =====================================================================
   AutoContrast     (unused)      ``ImageOps.autocontrast(img)``
   Brightness       0.05 .. 0.95  ``ImageEnhance.Brightness(img).enhance(v)``
   Color            0.05 .. 0.95  ``ImageEnhance.Color(img).enhance(v)``
   Contrast         0.05 .. 0.95  ``ImageEnhance.Contrast(img).enhance(v)``
   Equalize         (unused)      ``ImageOps.equalize(img)``
   Identity         (unused)      none
   Posterize        4 .. 8        ``ImageOps.posterize(img, int(v))`` (4 to 7 bits)
   Rotate           -30 .. 30     ``img.rotate(v)`` (degrees, counter-clockwise, nearest, black fill)
   Sharpness        0.05 .. 0.95  ``ImageEnhance.Sharpness(img).enhance(v)`` (blurs: v < 1)
   ShearX, ShearY   -0.3 .. 0.3   ``img.transform(size, AFFINE, (1, v, 0, 0, 1, 0))`` / ``(1, 0, 0, v, 1, 0)``
   Solarize         0 .. 256      ``ImageOps.solarize(img, v)``
   TranslateX, -Y   -0.3 .. 0.3   affine shift by ``v * width`` / ``v * height`` pixels
   ===============  ============  =====================================================================

3. Cutout, inside ``RandAugment.__call__``: a square of side ``v = U(0, 0.5) * width`` (random size, 0 to
   16 px on CIFAR) filled with (125, 123, 114). Its corner is ``int(max(0, c - v / 2))`` with
   ``c = np.random.uniform(width)``, which is numpy's ``uniform(low=width, high=1.0)``, so c lies in
   (1, width] (the centre is never near the top/left border: a quirk kept here). ``ImageDraw.rectangle``
   truncates the float corners to int and fills both ends inclusive: ``floor(v) + 1`` pixels a side,
   clipped to the image. ``v == 0`` leaves the image as it is;
4. ``ToTensor`` and ``Normalize`` (the dataset's mean and std).

Here every step is a batched tensor operation with per-sample parameters, on uint8 values with PIL's
integer semantics (verified against Pillow in tests/test_strong_view.py): point ops (AutoContrast,
Equalize, Posterize, Solarize) as per-sample lookup tables; the enhancers as ``Image.blend`` does it,
``trunc(d + float32(v) * (x - d))`` with PIL's degenerate image ``d`` (black; the ITU-R 601 grey
``(19595 R + 38470 G + 7471 B + 2^15) >> 16``; the grey mean ``int(mean + 0.5)``; the SMOOTH 3x3 filter
rounded half up, border pixels kept); geometric ops as a nearest-neighbour gather from PIL's inverse
affine map at pixel centres (outside: black), in PIL's own arithmetic: float64 for translations, 16.16
fixed point for rotations and shears (:func:`affine`). On Pillow 13 every op, the cutout and the whole
view replayed image by image match PIL pixel for pixel. One RandAugment round applies
a lookup table, a blend and a gather to the whole batch, each the identity for the samples whose op is of
another kind, so a batch costs a fixed number of kernels and no host synchronisation.

The trainer hands in the loader's un-augmented images (``DeviceLoader.raw_images``); a loader that streams
from disk (ImageNet, data/stream.py) has none, and :func:`tekapbench.data.views.raw_images` says that MLKD needs an in-memory
dataset. Every draw comes from the generator passed in, in the order of :func:`draw_strong_plan`. Magnitudes are
drawn in float32 and mapped to the op's range in float64 (Python draws in float64; the distribution is
the same).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from tekapbench.data.loader import Normalizer
from tekapbench.data.views import VIEWS

OPS: tuple[str, ...] = (
    "auto_contrast", "brightness", "color", "contrast", "equalize", "identity", "posterize",
    "rotate", "sharpness", "shear_x", "shear_y", "solarize", "translate_x", "translate_y",
)
# (low, high) of each op's magnitude, in the order of OPS (the official augment_list)
RANGES: tuple[tuple[float, float], ...] = (
    (0.0, 1.0), (0.05, 0.95), (0.05, 0.95), (0.05, 0.95), (0.0, 1.0), (0.0, 1.0), (4.0, 8.0),
    (-30.0, 30.0), (0.05, 0.95), (-0.3, 0.3), (-0.3, 0.3), (0.0, 256.0), (-0.3, 0.3), (-0.3, 0.3),
)
OP = {name: i for i, name in enumerate(OPS)}
CUTOUT_FILL = (125, 123, 114)
CUTOUT_MAX = 0.5  # the side is U(0, CUTOUT_MAX) * width
_BLENDS = ("brightness", "color", "contrast", "sharpness")
_AFFINE = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


@dataclass(frozen=True)
class StrongPlan:
    """Everything random about a batch's strong view (on the batch's device)."""

    dy: torch.Tensor  # int64 (B,): crop row offset into the zero-padded image, 0..2p
    dx: torch.Tensor  # int64 (B,): crop column offset
    flip: torch.Tensor  # bool (B,): mirror after the crop
    ops: torch.Tensor  # int64 (B, n): index into OPS, round by round
    magnitudes: torch.Tensor  # float64 (B, n): in the op's range
    cutout: torch.Tensor  # float64 (B,): the side in pixels, U(0, 0.5) * width (0: no cutout)
    cutout_x: torch.Tensor  # float64 (B,): numpy's uniform(width) = width + (1 - width) * U, in (1, width]
    cutout_y: torch.Tensor  # float64 (B,): likewise with the height


def draw_strong_plan(batch: int, height: int, width: int, generator: torch.Generator | None,
                     device: torch.device | str, *, padding: int = 4, num_ops: int = 2) -> StrongPlan:
    """Draw, in this order: row offsets, column offsets, flips, ops, magnitudes, cutout sides, cutout x,
    cutout y (the order is part of the contract: the tests replay it)."""
    def rand(*shape):
        return torch.rand(shape, generator=generator, device=device)

    dy = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    dx = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    flip = rand(batch) < 0.5
    ops = torch.randint(0, len(OPS), (batch, num_ops), generator=generator, device=device)
    ranges = torch.tensor(RANGES, dtype=torch.float64, device=device)[ops]  # (B, n, 2)
    magnitudes = ranges[..., 0] + (ranges[..., 1] - ranges[..., 0]) * rand(batch, num_ops).double()
    cutout = rand(batch).double() * CUTOUT_MAX * width
    cutout_x = width + (1.0 - width) * rand(batch).double()
    cutout_y = height + (1.0 - height) * rand(batch).double()
    return StrongPlan(dy, dx, flip, ops, magnitudes, cutout, cutout_x, cutout_y)


# -- building blocks (uint8 values held in int64, (B, C, H, W)) ---------------------------------------------

def _per_sample(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (x.dim() - 1)))


def _gather_pixels(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, C, h, w), index (B, H, W) into the flattened h*w plane -> (B, C, H, W)."""
    b, c = x.shape[:2]
    flat = index.reshape(b, 1, -1).expand(b, c, -1)
    return x.reshape(b, c, -1).gather(2, flat).view(b, c, *index.shape[1:])


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, padding: int) -> torch.Tensor:
    """torchvision RandomCrop(H, padding) with zero fill, then the flip, with these offsets."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    rows = dy.view(b, 1) + torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device).expand(b, w)
    cols = dx.view(b, 1) + torch.where(flip.view(b, 1), w - 1 - cols, cols)
    return _gather_pixels(padded, rows.view(b, h, 1) * (w + 2 * padding) + cols.view(b, 1, w))


def histograms(x: torch.Tensor) -> torch.Tensor:
    """(B, C, 256) int64 counts of each value per sample and channel."""
    b, c = x.shape[:2]
    flat = x.reshape(b * c, -1)
    hist = torch.zeros(b * c, 256, dtype=torch.int64, device=x.device)
    return hist.scatter_add_(1, flat, torch.ones_like(flat)).view(b, c, 256)


def auto_contrast_lut(hist: torch.Tensor) -> torch.Tensor:
    """ImageOps.autocontrast (cutoff 0): ``int(i * scale + offset)`` clipped, scale = 255 / (hi - lo)."""
    ramp = torch.arange(256, device=hist.device)
    present = hist > 0
    lo = present.int().argmax(-1, keepdim=True)
    hi = 255 - present.flip(-1).int().argmax(-1, keepdim=True)
    spread = hi > lo
    # a true division (``255.0 / tensor`` would multiply by a rounded reciprocal)
    scale = torch.full(lo.shape, 255.0, dtype=torch.float64, device=hist.device) / torch.where(spread, hi - lo, 1)
    offset = -lo.double() * scale
    lut = (ramp.double() * scale + offset).trunc().clamp(0, 255).long()  # two roundings, as in Python
    return torch.where(spread, lut, ramp)


def equalize_lut(hist: torch.Tensor) -> torch.Tensor:
    """ImageOps.equalize: ``(step // 2 + sum_{j<i} h_j) // step``, step = (n - h_last) // 255, clipped."""
    ramp = torch.arange(256, device=hist.device)
    present = hist > 0
    last = 255 - present.flip(-1).int().argmax(-1, keepdim=True)
    step = (hist.sum(-1, keepdim=True) - hist.gather(-1, last)) // 255
    before = hist.cumsum(-1) - hist
    lut = ((step // 2 + before) // step.clamp_min(1)).clamp(max=255)  # Image.point clips to 8 bits
    use = (present.sum(-1, keepdim=True) > 1) & (step > 0)
    return torch.where(use, lut, ramp)


def posterize_lut(bits: torch.Tensor) -> torch.Tensor:
    """ImageOps.posterize: keep the top ``bits`` bits; bits (B,) int64."""
    drop = (8 - bits).view(-1, 1, 1)
    ramp = torch.arange(256, device=bits.device).view(1, 1, 256)
    return (ramp >> drop) << drop


def solarize_lut(threshold: torch.Tensor) -> torch.Tensor:
    """ImageOps.solarize: values at or above the (float) threshold are inverted."""
    ramp = torch.arange(256, device=threshold.device).view(1, 1, 256)
    return torch.where(ramp.double() < threshold.view(-1, 1, 1), ramp, 255 - ramp)


def apply_lut(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    b, c = x.shape[:2]
    return lut.expand(b, c, 256).gather(2, x.reshape(b, c, -1)).view_as(x)


def grey(x: torch.Tensor) -> torch.Tensor:
    """PIL's RGB -> L: ``(19595 R + 38470 G + 7471 B + 0x8000) >> 16``, (B, 1, H, W)."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16


def grey_mean(x: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Contrast's ``int(mean(L) + 0.5)``, exactly in integers, (B, 1, 1, 1)."""
    n = x.shape[2] * x.shape[3]
    return (2 * grey(x).sum((1, 2, 3), keepdim=True) + n) // (2 * n)


def smooth(x: torch.Tensor) -> torch.Tensor:
    """ImageFilter.SMOOTH (kernel 1 1 1 / 1 5 1 / 1 1 1, scale 13), rounded half up; border pixels kept."""
    h, w = x.shape[2:]
    if h < 3 or w < 3:
        return x
    total = 4 * x[:, :, 1:-1, 1:-1]
    for i in range(3):
        for j in range(3):
            total = total + x[:, :, i:h - 2 + i, j:w - 2 + j]
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = (2 * total + 13) // 26
    return out


def blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Image.blend(degenerate, x, factor) for factors in [0, 1]: ``trunc(d + f * (x - d))`` in float32."""
    f = factor.float().view(-1, 1, 1, 1)
    return (degenerate.float() + f * (x - degenerate).float()).trunc().long()


def rotation_matrix(angle: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Image.rotate(angle)'s inverse map (a, b, c, d, e, f), (B, 6) float64."""
    theta = -(torch.remainder(angle.double(), 360.0) * (math.pi / 180.0))
    cos, sin = torch.round(torch.cos(theta), decimals=15), torch.round(torch.sin(theta), decimals=15)
    cx, cy = width / 2, height / 2
    c = cos * -cx + sin * -cy + 0.0 + cx
    f = -sin * -cx + cos * -cy + 0.0 + cy
    return torch.stack([cos, sin, c, -sin, cos, f], 1)


def _fix16(v: torch.Tensor) -> torch.Tensor:
    """PIL's FIX(v) = FLOOR(v * 65536.0 + 0.5): 16.16 fixed point, int64."""
    return (v * 65536.0 + 0.5).floor().long()


def affine(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Image.transform(size, AFFINE, matrix) with NEAREST and black fill, per sample; matrix (B, 6), the
    inverse map (a, b, c, d, e, f): output pixel (x, y) reads input (a x' + b y' + c, d x' + e y' + f) at
    the pixel centre x' = x + 0.5, y' = y + 0.5, floored.

    Pillow (Geometry.c, ImagingTransformAffine) computes it two ways, both reproduced exactly: maps with
    b = d = 0 (translations, the identity) in float64 (ImagingScaleAffine), the others (rotations, shears)
    in 16.16 fixed point (affine_fixed: every coefficient rounded to 1/65536 and accumulated in integers,
    which moves a boundary by up to ~1e-4 pixel against the exact map)."""
    b, c, h, w = x.shape
    m = matrix.double()
    coef = m.view(b, 6, 1, 1)
    xi = torch.arange(w, device=x.device).view(1, 1, w)
    yi = torch.arange(h, device=x.device).view(1, h, 1)
    # ImagingScaleAffine: xo = c + a * 0.5, then + a per column (exact for the a = 1 used here)
    sx = (coef[:, 0] * (xi + 0.5) + coef[:, 2]).floor().long()
    sy = (coef[:, 4] * (yi + 0.5) + coef[:, 5]).floor().long()
    # affine_fixed: a2 = FIX(c + a/2 + b/2), a5 = FIX(f + d/2 + e/2), then integer steps, >> 16
    fx = torch.stack([_fix16(m[:, 0]), _fix16(m[:, 1]), _fix16(m[:, 2] + m[:, 0] * 0.5 + m[:, 1] * 0.5)], 1)
    fy = torch.stack([_fix16(m[:, 3]), _fix16(m[:, 4]), _fix16(m[:, 5] + m[:, 3] * 0.5 + m[:, 4] * 0.5)], 1)
    fx, fy = fx.view(b, 3, 1, 1), fy.view(b, 3, 1, 1)
    fixed_x = torch.div(fx[:, 2] + yi * fx[:, 1] + xi * fx[:, 0], 65536, rounding_mode="floor")
    fixed_y = torch.div(fy[:, 2] + yi * fy[:, 1] + xi * fy[:, 0], 65536, rounding_mode="floor")
    use_fixed = ((m[:, 1] != 0) | (m[:, 3] != 0)).view(b, 1, 1)
    sx = torch.where(use_fixed, fixed_x, sx.expand(b, h, w))
    sy = torch.where(use_fixed, fixed_y, sy.expand(b, h, w))
    inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
    index = sy.clamp(0, h - 1) * w + sx.clamp(0, w - 1)
    return torch.where(inside.unsqueeze(1), _gather_pixels(x, index), 0)


def op_matrices(ops: torch.Tensor, v: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse affine map of each sample's op (identity for non-geometric ops), (B, 6) float64."""
    b = ops.shape[0]
    one, zero = torch.ones_like(v), torch.zeros_like(v)
    candidates = {
        "rotate": rotation_matrix(v, height, width),
        "shear_x": torch.stack([one, v, zero, zero, one, zero], 1),
        "shear_y": torch.stack([one, zero, zero, v, one, zero], 1),
        "translate_x": torch.stack([one, zero, v * width, zero, one, zero], 1),
        "translate_y": torch.stack([one, zero, zero, zero, one, v * height], 1),
    }
    matrix = torch.tensor([1.0, 0, 0, 0, 1, 0], dtype=torch.float64, device=v.device).expand(b, 6)
    for name, m in candidates.items():
        matrix = torch.where((ops == OP[name]).view(b, 1), m, matrix)
    return matrix


def rand_augment_round(x: torch.Tensor, ops: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One RandAugment op per sample: ``ops`` (B,) indices into OPS, ``v`` (B,) float64 magnitudes.
    x: uint8 values in int64 (B, 3, H, W)."""
    b, _, h, w = x.shape

    def chosen(name):
        return ops == OP[name]

    # point ops: one lookup table per sample and channel
    hist = histograms(x)
    ramp = torch.arange(256, device=x.device).expand_as(hist)
    lut = torch.where(_per_sample(hist, chosen("auto_contrast")), auto_contrast_lut(hist), ramp)
    lut = torch.where(_per_sample(hist, chosen("equalize")), equalize_lut(hist), lut)
    bits = v.floor().long().clamp(1, 8)  # int(v), max(1, v)
    lut = torch.where(_per_sample(hist, chosen("posterize")), posterize_lut(bits).expand_as(hist), lut)
    lut = torch.where(_per_sample(hist, chosen("solarize")), solarize_lut(v).expand_as(hist), lut)
    x = apply_lut(x, lut)
    # enhancers: a blend with the op's degenerate image (factor 1, i.e. x itself, for the other ops)
    degenerate = torch.where(_per_sample(x, chosen("brightness")), 0, x)
    degenerate = torch.where(_per_sample(x, chosen("color")), grey(x).expand_as(x), degenerate)
    degenerate = torch.where(_per_sample(x, chosen("contrast")), grey_mean(x).expand_as(x), degenerate)
    degenerate = torch.where(_per_sample(x, chosen("sharpness")), smooth(x), degenerate)
    is_blend = torch.zeros_like(chosen("identity"))
    for name in _BLENDS:
        is_blend = is_blend | chosen(name)
    x = blend(degenerate, x, torch.where(is_blend, v, 1.0))
    # geometry: one gather (identity map for the other ops)
    return affine(x, op_matrices(ops, v, h, w))


def cutout(x: torch.Tensor, side: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor,
           fill: Sequence[int] = CUTOUT_FILL) -> torch.Tensor:
    """The official CutoutAbs: corner ``int(max(0, c - side / 2))``, far edge ``int(min(size, corner + side))``,
    both inclusive (ImageDraw.rectangle), clipped; ``side == 0``: unchanged."""
    b, ch, h, w = x.shape
    x0 = (cx - side / 2).clamp_min(0).floor()
    y0 = (cy - side / 2).clamp_min(0).floor()
    x1 = torch.minimum(x0 + side, torch.full_like(x0, w)).floor()
    y1 = torch.minimum(y0 + side, torch.full_like(y0, h)).floor()
    cols = torch.arange(w, device=x.device, dtype=torch.float64).view(1, 1, w)
    rows = torch.arange(h, device=x.device, dtype=torch.float64).view(1, h, 1)
    box = ((cols >= x0.view(b, 1, 1)) & (cols <= x1.view(b, 1, 1)) & (rows >= y0.view(b, 1, 1))
           & (rows <= y1.view(b, 1, 1)) & (side > 0).view(b, 1, 1))
    colour = torch.tensor(fill, device=x.device, dtype=x.dtype).view(1, ch, 1, 1)
    return torch.where(box.unsqueeze(1), colour, x)


def strong_pixels(images: torch.Tensor, plan: StrongPlan, padding: int = 4) -> torch.Tensor:
    """The strong view of uint8 (B, 3, H, W) images under ``plan``, as uint8."""
    with torch.autocast(device_type=images.device.type, enabled=False):
        x = crop_flip(images.long(), plan.dy, plan.dx, plan.flip, padding)
        for r in range(plan.ops.shape[1]):
            x = rand_augment_round(x, plan.ops[:, r], plan.magnitudes[:, r])
        x = cutout(x, plan.cutout, plan.cutout_x, plan.cutout_y)
        return x.to(torch.uint8)


@VIEWS.register("mlkd_strong")
def strong_view(images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                generator: torch.Generator | None = None, *, padding: int = 4, num_ops: int = 2,
                channels_last: bool = False) -> torch.Tensor:
    """MLKD's strong view of the un-augmented uint8 images (B, 3, H, W): float32, normalized."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"the strong view takes uint8 RGB images (B, 3, H, W), got {images.dtype} "
                         f"{tuple(images.shape)}")
    b, c, h, w = images.shape
    plan = draw_strong_plan(b, h, w, generator, images.device, padding=padding, num_ops=num_ops)
    return Normalizer(mean, std, c, images.device)(strong_pixels(images, plan, padding), channels_last)
