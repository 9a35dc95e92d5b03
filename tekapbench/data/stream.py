"""The streaming path, for datasets kept as image files (ImageNet: 1.28 M JPEGs do not fit in memory).

A :class:`FolderLoader` has the interface of the in-memory :class:`~tekapbench.data.loader.DeviceLoader`
(``epoch(generator)`` yields :class:`~tekapbench.data.loader.Batch`), so the training loop and the
evaluations do not know which one they read. Worker processes decode and augment; each batch crosses to the
device as uint8 (4x less than float32) and is normalized there.

Augmentation is the standard ImageNet recipe of the CRD/DKD code bases, as torchvision does it on a PIL image:
training, ``RandomResizedCrop(crop_size)`` (scale 0.08-1, aspect ratio 3/4-4/3, bilinear with antialiasing)
then ``RandomHorizontalFlip(0.5)``; testing, ``Resize(eval_resize)`` of the shorter side then
``CenterCrop(crop_size)``.

Reproducible whatever the number of workers: each epoch draws, from the generator passed to :meth:`epoch`,
the permutation and one seed per image; an image's crop and flip come from a generator seeded with its own
seed, in the worker that happens to decode it. The crop box is drawn exactly as torchvision's
``RandomResizedCrop.get_params`` draws it from the global generator (tests compare the two).
"""
from __future__ import annotations

import math
import os
from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tekapbench.data._files import CorruptDataError
from tekapbench.data.loader import Batch, Normalizer

SCALE = (0.08, 1.0)  # RandomResizedCrop's defaults: share of the image's area
RATIO = (3.0 / 4.0, 4.0 / 3.0)  # and the crop's aspect ratio (width / height)
CENTER_CROP_SHARE = 0.875  # 224 of 256: the usual test-time resize is crop_size / 0.875


def default_eval_resize(crop_size: int) -> int:
    return int(round(crop_size / CENTER_CROP_SHARE))


SHARE_ENV = "TEKAPBENCH_RUNNERS_ON_HOST"  # set by the local executor: runners that share this host's cores


def default_workers() -> int:
    """One decoding process per core this process may use (a Slurm job's allocation, not the node's count),
    shared among the runners the local executor started on this host, less one for the training loop;
    at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = max(1, int(os.environ.get(SHARE_ENV, "1") or 1))
    return max(0, min(8, cores // share - 1))


def random_resized_crop_box(height: int, width: int, generator: torch.Generator,
                            scale: tuple[float, float] = SCALE,
                            ratio: tuple[float, float] = RATIO) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop: torchvision's ``RandomResizedCrop.get_params``, same draws in the
    same order, from ``generator`` instead of the global one. Ten tries at a random area and aspect ratio,
    then a centre crop clamped to the allowed ratios."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        # exp in float32, as torchvision computes it: float64 rounds w or h otherwise about once in 1e5 draws
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0].item(), log_ratio[1].item(),
                                                         generator=generator)).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def open_rgb(path: str):
    """The image at ``path`` as an RGB PIL image (ImageNet holds some grayscale and CMYK JPEGs)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise CorruptDataError(f"{path} is missing (it was listed when the dataset was read); "
                               "was the folder changed while the suite ran?") from None
    except Exception as exc:  # truncated download, not an image
        raise CorruptDataError(f"cannot read the image {path} ({type(exc).__name__}: {exc}); "
                               "replace or delete the file") from exc


def train_view(path: str, seed: int, crop_size: int, flip: bool) -> torch.Tensor:
    """uint8 (3, crop_size, crop_size): RandomResizedCrop then RandomHorizontalFlip, drawn from ``seed``."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    generator = torch.Generator().manual_seed(seed)
    image = open_rgb(path)
    top, left, h, w = random_resized_crop_box(image.height, image.width, generator)
    image = TF.resized_crop(image, top, left, h, w, [crop_size, crop_size], InterpolationMode.BILINEAR,
                            antialias=True)
    if flip and torch.rand(1, generator=generator).item() < 0.5:
        image = TF.hflip(image)
    return TF.pil_to_tensor(image)


def eval_view(path: str, crop_size: int, eval_resize: int) -> torch.Tensor:
    """uint8 (3, crop_size, crop_size): the shorter side resized to ``eval_resize``, then the centre crop."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    image = TF.resize(open_rgb(path), eval_resize, InterpolationMode.BILINEAR, antialias=True)
    return TF.pil_to_tensor(TF.center_crop(image, [crop_size, crop_size]))


class _Views(Dataset):
    """Item ``(index, seed)`` (training) or ``index`` (testing) -> (uint8 view, index); ``files`` are paths
    as str or bytes."""

    def __init__(self, files: Sequence[str | bytes], *, train: bool, crop_size: int, eval_resize: int, flip: bool):
        self.files = files
        self.train, self.crop_size, self.eval_resize, self.flip = train, crop_size, eval_resize, flip

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item):
        if self.train:
            index, seed = item
            return train_view(os.fsdecode(self.files[index]), seed, self.crop_size, self.flip), index
        return eval_view(os.fsdecode(self.files[item]), self.crop_size, self.eval_resize), item


class _EpochItems(Sampler):
    """The items of the current epoch, set before each pass (workers can then stay alive across epochs)."""

    def __init__(self):
        self.items: list = []

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


class FolderLoader:
    """Batches of image files, decoded and augmented by ``workers`` processes (0: in this process).

    ``labels`` int64 (N,) are kept on ``device`` (CRD's memory bank and CA-MKD read them there). Train mode:
    a fresh permutation and one seed per image every epoch, from the generator passed to :meth:`epoch`;
    eval mode: the files' order, the centre view.
    """

    def __init__(self, files: Sequence[str | bytes], labels: torch.Tensor, *, batch_size: int, device: torch.device | str,
                 mean: Sequence[float], std: Sequence[float], train: bool, crop_size: int, eval_resize: int | None = None,
                 flip: bool = True, drop_last: bool = False, channels_last: bool = False, workers: int | None = None):
        if labels.shape != (len(files),):
            raise ValueError(f"labels must have shape ({len(files)},), got {tuple(labels.shape)}")
        if batch_size < 1 or crop_size < 1:
            raise ValueError(f"batch_size and crop_size must be at least 1, got {batch_size} and {crop_size}")
        eval_resize = eval_resize or default_eval_resize(crop_size)
        if eval_resize < crop_size:  # the suite's planner reports it with the key; this guards direct use
            raise ValueError(f"eval_resize ({eval_resize}) must be at least crop_size ({crop_size})")
        self.device = torch.device(device)
        self.train = bool(train)
        self.batch_size = int(batch_size)
        self.drop_last = bool(drop_last)
        self.channels_last = bool(channels_last)
        self.num_images = len(files)
        self.labels = labels.to(device=self.device, dtype=torch.int64)
        self._normalize = Normalizer(mean, std, 3, self.device)
        self._items = _EpochItems()
        workers = default_workers() if workers is None else int(workers)
        self._batches = DataLoader(
            _Views(files, train=self.train, crop_size=crop_size, eval_resize=eval_resize, flip=flip and self.train),
            batch_size=self.batch_size, sampler=self._items, num_workers=workers, drop_last=self.drop_last,
            pin_memory=self.device.type == "cuda",
            # the training split's workers live across epochs; the test split's only while it is read
            persistent_workers=workers > 0 and self.train,
            # the DataLoader seeds its workers from this generator, not from torch's global one, whose state
            # would otherwise depend on the worker count (it draws once per pass when not persistent)
            generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_images // self.batch_size
        return math.ceil(self.num_images / self.batch_size)

    def epoch(self, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """One pass over the files. ``generator`` may live on any device (None: torch's default)."""
        n = self.num_images
        if self.train:
            where = generator.device if generator is not None else "cpu"
            order = torch.randperm(n, generator=generator, device=where)
            seeds = torch.randint(0, 2**62, (n,), generator=generator, device=where)
            self._items.items = list(zip(order.tolist(), seeds.tolist()))
        else:
            self._items.items = list(range(n))
        try:
            for pixels, index in self._batches:
                index = index.to(self.device, non_blocking=True)
                yield Batch(images=self._normalize(pixels.to(self.device, non_blocking=True), self.channels_last),
                            labels=self.labels.index_select(0, index), indices=index)
        except CorruptDataError as exc:
            # a worker's error arrives wrapped in its traceback: keep the message that names the file
            raise CorruptDataError(str(exc).strip().splitlines()[-1].split("CorruptDataError: ", 1)[-1]) from None


def read_views(files: Sequence[str | bytes], crop_size: int, eval_resize: int | None = None) -> torch.Tensor:
    """uint8 (len(files), 3, crop_size, crop_size): the test views of ``files`` (e.g. an attack's subset)."""
    eval_resize = eval_resize or default_eval_resize(crop_size)
    if not files:
        return torch.zeros((0, 3, crop_size, crop_size), dtype=torch.uint8)
    return torch.stack([eval_view(os.fsdecode(f), crop_size, eval_resize) for f in files])

