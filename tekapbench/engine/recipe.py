"""Training recipes: defaults kept as data (recipes.toml), resolved per architecture and suite overrides."""
from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tekapbench.data.base import LoaderSettings
from tekapbench.data.stream import default_eval_resize

_RECIPES_FILE = Path(__file__).with_name("recipes.toml")


@dataclass(frozen=True)
class Recipe:
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    milestones: tuple[int, ...]
    lr_decay: float
    eval_batch_size: int  # does not change results: not part of a run's identity
    crop_padding: int
    flip: bool
    # datasets of image files: RandomResizedCrop size, and the shorter side before the test's centre crop
    crop_size: int | None = None
    eval_resize: int | None = None

    def lr_at(self, epoch: int) -> float:
        """Step schedule; ``epoch`` counts from 1, and the lr drops after each milestone epoch."""
        return self.lr * self.lr_decay ** sum(epoch > m for m in self.milestones)

    def loader_settings(self, train: bool, channels_last: bool = False) -> LoaderSettings:
        """How the training (``train``) or test split is batched and augmented under this recipe."""
        return LoaderSettings(batch_size=self.batch_size if train else self.eval_batch_size,
                              crop_padding=self.crop_padding, flip=self.flip, crop_size=self.crop_size,
                              eval_resize=self.eval_resize, channels_last=channels_last)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    def identity(self) -> dict[str, Any]:
        """The settings that can change a result."""
        d = self.to_dict()
        del d["eval_batch_size"]
        for key in ("crop_size", "eval_resize"):  # unset (in-memory datasets): run ids stay as they were
            if d[key] is None:
                del d[key]
        return d


@lru_cache(maxsize=None)
def recipe_table() -> dict[str, dict[str, Any]]:
    with open(_RECIPES_FILE, "rb") as fh:
        return tomllib.load(fh)


def resolve_recipe(recipe_name: str, arch: str, overrides: dict[str, Any]) -> Recipe:
    """The default recipe of a dataset, the architecture's lr, then the suite's overrides on top."""
    base = dict(recipe_table()[recipe_name])
    lr_by_arch = base.pop("lr_by_arch", {})
    lr_batch_size = base.pop("lr_batch_size")
    given = {k: v for k, v in overrides.items() if v is not None}
    values = {**base, **given}
    if "lr" not in given:  # never touch a user's explicit lr
        values["lr"] = lr_by_arch.get(arch, base["lr"]) * values["batch_size"] / lr_batch_size
    if "epochs" in given and "milestones" not in given:
        scale = values["epochs"] / base["epochs"]
        values["milestones"] = sorted({m for m in (round(b * scale) for b in base["milestones"])
                                       if 0 < m < values["epochs"]})
    if "crop_size" in given and "eval_resize" not in given and values.get("eval_resize") is not None:
        values["eval_resize"] = default_eval_resize(values["crop_size"])  # the 224-of-256 centre crop's share
    values["milestones"] = tuple(values["milestones"])
    return Recipe(**values)
