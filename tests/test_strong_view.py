"""MLKD's strong view (tekapbench/data/strong.py) against PIL, op by op and whole.

The reference is the PIL call each op of the official RandAugment makes
(github:Jin-Ying/Multi-Level-Logit-Distillation, mdistiller/dataset/cifar100.py, ``augment_list``,
``CutoutAbs``, ``get_cifar100_train_transform_strong``), written out here and run on the same image with the
same parameters, one image at a time. Tolerance: none; every pixel must match (the batched ops reproduce
Pillow's integer, float32 and 16.16 fixed-point arithmetic; verified on Pillow 13).
"""
import numpy as np
import pytest
import torch

from tekapbench.data.loader import DeviceLoader, Normalizer
from tekapbench.data.strong import (CUTOUT_FILL, OP, OPS, RANGES, crop_flip, cutout, draw_strong_plan,
                                    rand_augment_round, strong_pixels, strong_view)
from tekapbench.data.views import VIEWS, raw_images
from tekapbench.errors import UsageError

PIL = pytest.importorskip("PIL")
from PIL import Image, ImageDraw, ImageEnhance, ImageOps  # noqa: E402

MEAN, STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)


def images(n, seed):
    """Varied uint8 RGB images: smooth colour fields plus noise, each squeezed into its own value range
    (so autocontrast, equalize and the enhancers all have work to do)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randint(0, 256, (n, 3, 4, 4), generator=g).float()
    x = torch.nn.functional.interpolate(low, size=32, mode="bilinear", align_corners=False)
    x = x + torch.randn(n, 3, 32, 32, generator=g) * torch.rand(n, 1, 1, 1, generator=g) * 40
    lo = torch.randint(0, 120, (n, 1, 1, 1), generator=g)
    hi = lo + torch.randint(20, 136, (n, 1, 1, 1), generator=g)
    span = x.amax((1, 2, 3), keepdim=True) - x.amin((1, 2, 3), keepdim=True) + 1e-6
    x = lo + (x - x.amin((1, 2, 3), keepdim=True)) / span * (hi - lo)
    return x.round().clamp(0, 255).to(torch.uint8)


def to_pil(t):
    return Image.fromarray(t.permute(1, 2, 0).numpy())


def from_pil(im):
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)


def affine(img, m):
    return img.transform(img.size, Image.AFFINE, m)


PIL_OPS = {  # the official augment_list's calls
    "auto_contrast": lambda img, v: ImageOps.autocontrast(img),
    "brightness": lambda img, v: ImageEnhance.Brightness(img).enhance(v),
    "color": lambda img, v: ImageEnhance.Color(img).enhance(v),
    "contrast": lambda img, v: ImageEnhance.Contrast(img).enhance(v),
    "equalize": lambda img, v: ImageOps.equalize(img),
    "identity": lambda img, v: img,
    "posterize": lambda img, v: ImageOps.posterize(img, max(1, int(v))),
    "rotate": lambda img, v: img.rotate(v),
    "sharpness": lambda img, v: ImageEnhance.Sharpness(img).enhance(v),
    "shear_x": lambda img, v: affine(img, (1, v, 0, 0, 1, 0)),
    "shear_y": lambda img, v: affine(img, (1, 0, 0, v, 1, 0)),
    "solarize": lambda img, v: ImageOps.solarize(img, v),
    "translate_x": lambda img, v: affine(img, (1, 0, v * img.size[0], 0, 1, 0)),
    "translate_y": lambda img, v: affine(img, (1, 0, 0, 0, 1, v * img.size[1])),
}


def pil_cutout(img, side, cx, cy):
    """The official CutoutAbs, given the side and numpy's two uniform draws."""
    if side <= 0:
        return img
    w, h = img.size
    x0, y0 = int(max(0, cx - side / 2.0)), int(max(0, cy - side / 2.0))
    img = img.copy()
    ImageDraw.Draw(img).rectangle((x0, y0, min(w, x0 + side), min(h, y0 + side)), CUTOUT_FILL)
    return img


def pil_crop_flip(img, dy, dx, flip, padding=4):
    """torchvision RandomCrop(32, padding=4) + RandomHorizontalFlip with these draws, in PIL."""
    w, h = img.size
    padded = Image.new("RGB", (w + 2 * padding, h + 2 * padding))
    padded.paste(img, (padding, padding))
    out = padded.crop((dx, dy, dx + w, dy + h))
    return out.transpose(Image.FLIP_LEFT_RIGHT) if flip else out


PER_OP = 12


@pytest.fixture(scope="module")
def mixed_round():
    """One round on a batch where every op appears PER_OP times, in shuffled order."""
    g = torch.Generator().manual_seed(1)
    ops = torch.arange(len(OPS)).repeat_interleave(PER_OP)[torch.randperm(len(OPS) * PER_OP, generator=g)]
    ranges = torch.tensor(RANGES, dtype=torch.float64)[ops]
    v = ranges[:, 0] + (ranges[:, 1] - ranges[:, 0]) * torch.rand(len(ops), generator=g).double()
    x = images(len(ops), 0)
    return x, ops, v, rand_augment_round(x.long(), ops, v).to(torch.uint8)


@pytest.mark.parametrize("name", OPS)
def test_each_op_matches_pil_per_sample(mixed_round, name):
    x, ops, v, ours = mixed_round
    picked = (ops == OP[name]).nonzero().flatten().tolist()
    assert len(picked) == PER_OP
    for i in picked:
        expected = from_pil(PIL_OPS[name](to_pil(x[i]), float(v[i])))
        differ = int((expected != ours[i]).any(0).sum())
        assert differ == 0, f"{name}(v={float(v[i])!r}) on sample {i}: {differ} pixels differ"


@pytest.mark.parametrize("name,v", [("posterize", 4.0), ("posterize", 7.999), ("solarize", 0.0),
                                    ("solarize", 255.5), ("rotate", 0.0), ("rotate", -30.0),
                                    ("shear_x", -0.3), ("translate_y", 0.3), ("brightness", 0.05)])
def test_ops_at_the_ends_of_their_ranges(name, v):
    x = images(3, 5)
    ours = rand_augment_round(x.long(), torch.full((3,), OP[name]), torch.full((3,), v, dtype=torch.float64))
    for i in range(3):
        assert torch.equal(from_pil(PIL_OPS[name](to_pil(x[i]), v)), ours[i].to(torch.uint8)), (name, v, i)


def test_flat_and_single_value_images_pass_autocontrast_and_equalize_unchanged():
    x = torch.full((2, 3, 8, 8), 77, dtype=torch.uint8)
    x[1, 0, 0, 0] = 78  # two values in one channel
    for name in ("auto_contrast", "equalize"):
        ours = rand_augment_round(x.long(), torch.full((2,), OP[name]), torch.zeros(2, dtype=torch.float64))
        for i in range(2):
            assert torch.equal(from_pil(PIL_OPS[name](to_pil(x[i]), 0.0)), ours[i].to(torch.uint8)), (name, i)


def test_cutout_matches_the_official_rectangle():
    n = 64
    x = images(n, 2)
    plan = draw_strong_plan(n, 32, 32, torch.Generator().manual_seed(3), "cpu")
    side = plan.cutout.clone()
    side[0] = 0.0  # no cutout
    side[1] = 1e-3  # still one pixel: ImageDraw fills both ends
    ours = cutout(x.long(), side, plan.cutout_x, plan.cutout_y).to(torch.uint8)
    for i in range(n):
        expected = from_pil(pil_cutout(to_pil(x[i]), float(side[i]), float(plan.cutout_x[i]), float(plan.cutout_y[i])))
        assert torch.equal(expected, ours[i]), i
    assert torch.equal(ours[0], x[0]) and int((ours[1] != x[1]).any(0).sum()) <= 1


def test_crop_and_flip_match_torchvision_semantics():
    n = 16
    x = images(n, 4)
    plan = draw_strong_plan(n, 32, 32, torch.Generator().manual_seed(6), "cpu")
    ours = crop_flip(x.long(), plan.dy, plan.dx, plan.flip, 4).to(torch.uint8)
    for i in range(n):
        expected = pil_crop_flip(to_pil(x[i]), int(plan.dy[i]), int(plan.dx[i]), bool(plan.flip[i]))
        assert torch.equal(from_pil(expected), ours[i]), i


def test_whole_view_replays_pil_image_by_image():
    n = 96
    x = images(n, 11)
    plan = draw_strong_plan(n, 32, 32, torch.Generator().manual_seed(12), "cpu")
    ours = strong_pixels(x, plan)
    for i in range(n):
        img = pil_crop_flip(to_pil(x[i]), int(plan.dy[i]), int(plan.dx[i]), bool(plan.flip[i]))
        for r in range(plan.ops.shape[1]):
            img = PIL_OPS[OPS[int(plan.ops[i, r])]](img, float(plan.magnitudes[i, r]))
        img = pil_cutout(img, float(plan.cutout[i]), float(plan.cutout_x[i]), float(plan.cutout_y[i]))
        assert torch.equal(from_pil(img), ours[i]), i


def test_strong_view_is_the_plan_of_its_generator_normalized():
    x = images(8, 13)
    got = strong_view(x, MEAN, STD, torch.Generator().manual_seed(21))
    plan = draw_strong_plan(8, 32, 32, torch.Generator().manual_seed(21), "cpu")
    assert torch.equal(got, Normalizer(MEAN, STD, 3, torch.device("cpu"))(strong_pixels(x, plan)))


@pytest.mark.parametrize("shape", [(8, 3, 32, 32), (5, 3, 24, 40)])
def test_strong_view_is_deterministic_for_a_generator(shape):
    x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a = strong_view(x, MEAN, STD, torch.Generator().manual_seed(1))
    b = strong_view(x, MEAN, STD, torch.Generator().manual_seed(1))
    c = strong_view(x, MEAN, STD, torch.Generator().manual_seed(2))
    assert a.dtype == torch.float32 and a.shape == x.shape
    assert torch.equal(a, b) and not torch.equal(a, c)
    last = strong_view(x, MEAN, STD, torch.Generator().manual_seed(1), channels_last=True)
    assert last.is_contiguous(memory_format=torch.channels_last) and torch.equal(last, a)


def test_draws_cover_the_official_ranges():
    n = 20000
    plan = draw_strong_plan(n, 32, 32, torch.Generator().manual_seed(0), "cpu")
    counts = torch.bincount(plan.ops.flatten(), minlength=len(OPS))
    assert plan.ops.shape == (n, 2) and int(counts.min()) > 0.8 * 2 * n / len(OPS)
    for k, (lo, hi) in enumerate(RANGES):
        v = plan.magnitudes[plan.ops == k]
        assert float(v.min()) >= lo and float(v.max()) < hi
    assert 0 <= float(plan.cutout.min()) and float(plan.cutout.max()) < 16.0  # U(0, 0.5) * 32
    assert 1.0 < float(plan.cutout_x.min()) and float(plan.cutout_x.max()) <= 32.0  # numpy uniform(32)
    assert set(plan.dy.unique().tolist()) == set(range(9)) and 0.45 < plan.flip.float().mean() < 0.55


def test_strong_view_wants_uint8_rgb():
    with pytest.raises(ValueError, match="uint8 RGB"):
        strong_view(torch.zeros(2, 3, 8, 8), MEAN, STD)


def test_loader_hands_out_the_original_images():
    x = images(10, 3)
    labels = torch.arange(10)
    for train in (True, False):
        loader = DeviceLoader(x, labels, batch_size=4, device="cpu", mean=MEAN, std=STD, train=train)
        index = torch.tensor([7, 2, 2, 9])
        assert torch.equal(raw_images(loader, index, "strong"), x[index])


def test_a_streaming_loader_says_the_strong_view_needs_images_in_memory():
    class Streaming:
        pass

    with pytest.raises(UsageError, match="'strong' view .* in-memory dataset"):
        raw_images(Streaming(), torch.arange(2), "strong")


def test_the_official_strong_view_is_registered_for_recipes_to_name():
    assert VIEWS.get("mlkd_strong") is strong_view
