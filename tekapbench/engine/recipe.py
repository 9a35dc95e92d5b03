"""Training recipes as data, resolved in layers for each run:

1. the dataset's standard recipe (recipes.toml; CIFAR-100: CRD's, which DKD and TeKAP share), with its
   per-architecture lr;
2. the method's official recipe for that dataset, where its official code trains otherwise (registered with
   the method: ``register_method(..., recipes={"cifar100": {...}})``), and that recipe's per-pair values;
3. the suite's explicit ``[recipe]`` keys, always as written.

``[suite] common_recipe = true`` skips layer 2: every method then trains on one recipe. The resolved recipe,
and where each layer came from (``source``), is stored with every run.
"""
from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tekapbench.data.base import LoaderSettings
from tekapbench.data.stream import default_eval_resize
from tekapbench.engine.optim import SCHEDULES

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
    drop_last: bool = False  # training leaves out an epoch's last, incomplete batch (CA-MKD's loop does)
    optimizer: str = "sgd"  # engine/optim.py OPTIMIZERS
    nesterov: bool = False
    schedule: str = "step"  # engine/optim.py SCHEDULES
    # the augmentation of each extra view the method compares on (data/views.py), as (view, augmentation)
    views: tuple[tuple[str, str], ...] = ()
    source: str = ""  # where the values come from (not part of a run's identity)

    def lr_at(self, epoch: int) -> float:
        """The lr of an epoch (counted from 1) under the recipe's schedule."""
        return self.lr * SCHEDULES.get(self.schedule)(self, epoch)

    def loader_settings(self, train: bool, channels_last: bool = False) -> LoaderSettings:
        """How the training (``train``) or test split is batched and augmented under this recipe."""
        return LoaderSettings(batch_size=self.batch_size if train else self.eval_batch_size,
                              crop_padding=self.crop_padding, flip=self.flip, crop_size=self.crop_size,
                              eval_resize=self.eval_resize, channels_last=channels_last,
                              drop_last=self.drop_last and train)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        d["views"] = dict(self.views)
        return d

    def identity(self) -> dict[str, Any]:
        """The settings that can change a result."""
        d = self.to_dict()
        del d["eval_batch_size"], d["source"]
        # keys at their historical default are left out, so the ids of runs they do not change stay the same
        for key, default in _IDENTITY_DEFAULTS.items():
            if d[key] == default:
                del d[key]
        return d


_IDENTITY_DEFAULTS = {"crop_size": None, "eval_resize": None, "optimizer": "sgd", "nesterov": False,
                      "schedule": "step", "drop_last": False, "views": {}}
_RECIPE_KEYS = frozenset(Recipe.__dataclass_fields__) - {"source"}
# keys of a recipe table besides the recipe's own: lr_batch_size (the batch size its lr is stated at),
# lr_by_arch (lr per student architecture at that batch size), by_arch (architecture -> values) and
# by_pair ("teacher->student" -> values), the latter two in methods' official recipes
_TABLE_KEYS = frozenset({"lr_batch_size", "lr_by_arch", "by_arch", "by_pair", "source"})


def check_recipe_table(table: dict[str, Any], where: str) -> None:
    """A recipe table (recipes.toml's, or a method's official one) names only known keys."""
    unknown = sorted(set(table) - _RECIPE_KEYS - _TABLE_KEYS)
    for pair, values in table.get("by_pair", {}).items():
        if "->" not in pair:
            unknown.append(f"by_pair[{pair!r}] (write 'teacher->student')")
        unknown += [f"by_pair[{pair!r}].{k}" for k in sorted(set(values) - _RECIPE_KEYS)]
    for arch, values in table.get("by_arch", {}).items():
        unknown += [f"by_arch[{arch!r}].{k}" for k in sorted(set(values) - _RECIPE_KEYS)]
    if unknown:
        raise ValueError(f"{where}: unknown recipe keys {unknown}; allowed: {sorted(_RECIPE_KEYS | _TABLE_KEYS)}")


@lru_cache(maxsize=None)
def recipe_table() -> dict[str, dict[str, Any]]:
    with open(_RECIPES_FILE, "rb") as fh:
        tables = tomllib.load(fh)
    for name, table in tables.items():
        check_recipe_table(table, f"{_RECIPES_FILE}[{name}]")
    return tables


def resolve_recipe(recipe_name: str, arch: str, overrides: dict[str, Any],
                   method_recipe: dict[str, Any] | None = None, teacher_arch: str | None = None) -> Recipe:
    """The dataset's recipe and the architecture's lr; the method's official recipe over it (its values for
    the architecture ``arch``, then for the pair ``teacher_arch -> arch``); the suite's overrides on top."""
    base = dict(recipe_table()[recipe_name])
    sources = [f"{recipe_name} standard recipe ({base.pop('source', 'engine/recipes.toml')})"]
    layers = [base]
    if method_recipe:
        method = dict(method_recipe)
        sources.append(method.pop("source"))
        if "lr" in method and "lr_by_arch" not in method:
            base.pop("lr_by_arch", None)  # the dataset's per-architecture lrs are relative to its own lr
        by_arch = method.pop("by_arch", {}).get(arch, {})
        by_pair = method.pop("by_pair", {}).get(f"{teacher_arch}->{arch}", {})
        layers += [method, by_arch, by_pair]
        sources += [f"its values for {arch}"] * bool(by_arch) + [f"its values for {teacher_arch}->{arch}"] * bool(by_pair)
    values: dict[str, Any] = {}
    milestones_at = 0  # the epoch count the milestones were stated for: an official long recipe keeps them
    for layer in layers:
        values.update(layer)
        if "milestones" in layer:
            milestones_at = values["epochs"]
    lr_by_arch = values.pop("lr_by_arch", {})
    lr_batch_size = values.pop("lr_batch_size")
    given = {k: v for k, v in overrides.items() if v is not None}
    if given:
        sources.append(f"suite overrides: {', '.join(sorted(given))}")
    if "lr" not in given:  # never touch a user's explicit lr
        values["lr"] = lr_by_arch.get(arch, values["lr"]) * given.get("batch_size", values["batch_size"]) / lr_batch_size
    if "epochs" in given and "milestones" not in given:
        scale = given["epochs"] / milestones_at
        values["milestones"] = sorted({m for m in (round(b * scale) for b in values["milestones"])
                                       if 0 < m < given["epochs"]})
    values.update(given)
    if "crop_size" in given and "eval_resize" not in given and values.get("eval_resize") is not None:
        values["eval_resize"] = default_eval_resize(values["crop_size"])  # the 224-of-256 centre crop's share
    values["milestones"] = tuple(values["milestones"])
    values["views"] = tuple(sorted(dict(values.get("views") or {}).items()))
    return Recipe(**values, source="; ".join(sources))
