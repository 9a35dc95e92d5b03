"""Expands a validated suite into a matrix of runs with content-addressed ids.

A run's id is a hash of its fully resolved spec (recipe, method settings, seed, and the teacher's own id),
so a teacher shared by several students, or a vanilla student identical to a teacher, is one run trained
once; a label is presentation and not part of the id.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from tekapbench.data.base import DATASETS
from tekapbench.engine.recipe import Recipe, resolve_recipe
from tekapbench.evaluations.base import evaluation_key
from tekapbench.errors import ConfigError, UsageError
from tekapbench.methods.base import METHODS, TEACHER_TOPOLOGIES, THROUGH_ASSISTANTS, DistillContext, MethodParams
from tekapbench.engine.objective import MethodSpec, Objective, TermSpec
from tekapbench.models.base import MODELS, FeatureShapes, create_model, load_weights, probe_shapes
from tekapbench.modifiers.tekap import LEVEL_FIELDS
from tekapbench.plugins import plugin_code
from tekapbench.results.provenance import sha256_file
from tekapbench.tables.base import Cell
from tekapbench.suite.schema import MethodSection, PairSection, SuiteFile, TermSection, read_suite

TEACHER_ROW = "Teacher"
VANILLA = MethodSpec(ce_weight=1.0, terms=())


@dataclass(frozen=True)
class RunSpec:
    """One unit of work: train ``arch`` on ``dataset`` (kind 'train'), or score a given checkpoint ('pretrained')."""

    kind: str
    dataset: str
    arch: str
    seed: int | None = None
    recipe: Recipe | None = None
    method: MethodSpec | None = None
    teachers: tuple[str, ...] = ()  # run ids of the teachers it distils from (assistants included), in order
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None

    @property
    def teacher(self) -> str | None:
        """The first teacher (the only one, for single-teacher methods)."""
        return self.teachers[0] if self.teachers else None

    def identity(self) -> dict[str, Any]:
        """What the run id hashes: everything that changes the result, nothing that merely names it."""
        d: dict[str, Any] = {"kind": self.kind, "dataset": self.dataset, "arch": self.arch}
        code = {key: c for key, registry, name in (("arch", MODELS, self.arch), ("dataset", DATASETS, self.dataset))
                if (c := plugin_code(registry, name)) is not None}
        if code:  # absent for tekapbench's own models and datasets, so their ids stay what they were
            d["plugin_code"] = code
        if self.kind == "pretrained":
            d["checkpoint_sha256"] = self.checkpoint_sha256
        else:
            d.update(seed=self.seed, recipe=self.recipe.identity(), method=self.method.to_dict())
            # one teacher keeps the key of single-teacher runs, so their ids stay what they were
            d.update(teacher=self.teacher) if len(self.teachers) <= 1 else d.update(teachers=list(self.teachers))
        return d

    @property
    def run_id(self) -> str:
        canonical = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        d = self.identity()
        if self.recipe is not None:
            d["recipe"] = self.recipe.to_dict()
        if self.checkpoint:
            d["checkpoint"] = self.checkpoint
        return d


@dataclass(frozen=True)
class EvaluationSpec:
    """An evaluation with its resolved settings; ``key`` names its stored result."""

    name: str
    settings: dict[str, Any]

    @property
    def key(self) -> str:
        return evaluation_key(self.name, self.settings)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "settings": self.settings, "key": self.key}


@dataclass
class SuitePlan:
    name: str
    source: str
    layout: str | list[str]
    description: str = ""
    runs: dict[str, RunSpec] = field(default_factory=dict)  # in execution order: teachers first
    cells: list[Cell] = field(default_factory=list)
    download: bool = False
    data_root: str = "data"
    data_workers: int | None = None  # decoding processes for datasets of image files (None: the default)
    notes: list[str] = field(default_factory=list)  # valid settings that are probably not meant
    evaluations: list[EvaluationSpec] = field(default_factory=list)
    cpu_threads: int | None = None
    slurm: dict[str, Any] = field(default_factory=dict)  # the suite's [slurm] section, validated
    trackers: list[str] | None = None  # [tracking] trackers (or --tracker); None: tensorboard when installed

    def add_run(self, spec: RunSpec) -> str:
        run_id = spec.run_id
        self.runs.setdefault(run_id, spec)
        return run_id

    def teacher_of(self, run_id: str) -> str | None:
        """The teacher a run is compared with: its table column's teacher (for a vanilla student too, and
        for a student that learnt through assistants), or, for an assistant, the first it learnt from."""
        return self._column_teachers.get(run_id, self.runs[run_id].teacher)

    def dependencies(self, run_id: str) -> list[str]:
        """Runs that must be finished first: the teachers it learns from, and the teacher its evaluations
        compare it with (a vanilla student's column teacher)."""
        deps = [*self.runs[run_id].teachers, self.teacher_of(run_id)]
        return [d for d in dict.fromkeys(deps) if d is not None and d != run_id]

    @cached_property
    def _column_teachers(self) -> dict[str, str | None]:
        """run id -> the Teacher cell of its column, for every run shown in a non-teacher row."""
        teachers = {(c.dataset, c.teacher, c.student, c.seed): c.run_id for c in self.cells if c.row == TEACHER_ROW}
        any_seed = {key[:3]: run_id for key, run_id in reversed(teachers.items())}  # the first seed's teacher
        found: dict[str, str | None] = {}
        for cell in self.cells:
            if cell.row != TEACHER_ROW:  # a checkpoint's seed may be none of the suite's: the column's first teacher
                found.setdefault(cell.run_id, teachers.get((cell.dataset, cell.teacher, cell.student, cell.seed),
                                                           any_seed.get((cell.dataset, cell.teacher, cell.student))))
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.name,
            "source": self.source,
            "layout": self.layout,
            "description": self.description,
            "runs": {run_id: spec.to_dict() for run_id, spec in self.runs.items()},
            "cells": [cell.__dict__ for cell in self.cells],
            "evaluations": [e.to_dict() for e in self.evaluations],
            "needs": {run_id: self.dependencies(run_id) for run_id in self.runs},  # read by `tekapbench status`
        }


class _Planner:
    def __init__(self, suite: SuiteFile, source: str):
        self.suite = suite
        self.source = source
        self.problems: list[tuple[str, str]] = []
        self.weights_key: dict[str, tuple[str, str]] = {}  # run id of a given weights file -> (suite key, what)

    def resolve_term(self, section: TermSection, key: str, pair: PairSection) -> TermSpec | None:
        entry = METHODS.get(section.method)
        params = section.params if isinstance(section.params, MethodParams) else entry.params()
        if entry.term is None:
            self.problems.append((f"{key}.method", f"{section.method!r} has no distillation term to combine"))
            return None
        if section.tekap is not None and not (LEVEL_FIELDS[section.tekap.level] & entry.term.reads):
            self.problems.append((f"{key}.tekap.level", (
                f"level {section.tekap.level!r} changes nothing that {section.method} reads "
                f"({', '.join(sorted(entry.term.reads))}); allowed here: "
                + ", ".join(lvl for lvl, f in LEVEL_FIELDS.items() if f & entry.term.reads))))
            return None
        weight = entry.weight if section.weight is None else section.weight
        return TermSpec(section.method, weight, params.resolved_for(pair.teacher, pair.student),
                        section.tekap.resolved() if section.tekap else None)

    def resolve_method(self, section: MethodSection, index: int, pair: PairSection) -> MethodSpec | None:
        key = f"methods[{index}]"
        terms = []
        for j, term_section in enumerate(section.term_sections()):
            term_key = f"{key}.terms[{j}]" if section.terms is not None else key
            term = self.resolve_term(term_section, term_key, pair)
            if term is not None:
                terms.append(term)
        if section.ce_weight is not None:
            ce_weight = section.ce_weight
        elif section.method is not None:
            ce_weight = METHODS.get(section.method).ce_weight
        else:
            ce_weight = 1.0  # composite methods (e.g. CRD+KD) keep the full cross-entropy, as RepDistiller does
        return MethodSpec(ce_weight, tuple(terms))

    def topology(self, section: MethodSection, index: int, pair: PairSection, p_index: int) -> str:
        """How the method's runs learn from teachers: the one topology its terms share."""
        found = {METHODS.get(t.method).teachers for t in section.term_sections()} - {"one"}
        if len(found) > 1:
            self.problems.append((f"methods[{index}]", f"its terms need different teachers ({', '.join(sorted(found))}); "
                                  "combine terms of one kind"))
        topology = next(iter(found), "one")
        if topology in THROUGH_ASSISTANTS and not pair.assistants:
            self.problems.append((f"pairs[{p_index}].assistants", (
                f"methods[{index}] learns {TEACHER_TOPOLOGIES[topology]}: list the assistants' architectures, "
                f"e.g. assistants = [\"resnet20\"]")))
        return topology

    def assistants(self, plan: SuitePlan, dataset: str, pair: PairSection, seed: int,
                   method: MethodSpec, teacher_id: str, *, dense: bool) -> list[str]:
        """The runs of the pair's assistants, each learning by ``method`` (without TeKAP, so that a method
        with and without TeKAP shares them) on the method's recipe, from the one before it, or, ``dense``,
        from all before it."""
        base = MethodSpec(method.ce_weight, tuple(replace(t, tekap=None) for t in method.terms))
        ids, archs = [teacher_id], [pair.teacher]
        for arch in pair.assistants:
            recipe = self.recipe(dataset, arch, self.suite.recipe.model_dump(), "recipe",
                                 self.method_recipe(method, dataset), teacher_arch=archs[-1], method=base)
            spec = RunSpec(kind="train", dataset=dataset, arch=arch, seed=seed, recipe=recipe, method=base,
                           teachers=tuple(ids) if dense else (ids[-1],))
            ids.append(plan.add_run(spec))
            archs.append(arch)
        return ids

    def method_recipe(self, method: MethodSpec, dataset: str, index: int | None = None) -> dict[str, Any] | None:
        """The official recipe the method's terms train with on this dataset (None: the dataset's standard
        one, also for every method under ``common_recipe``); with ``index``, terms that each bring one are
        reported as a problem of methods[index]."""
        if self.suite.suite.common_recipe:
            return None
        recipe_name = DATASETS.get(dataset).recipe
        found = {t.method: METHODS.get(t.method).recipes[recipe_name] for t in method.terms
                 if recipe_name in METHODS.get(t.method).recipes}
        if len(found) > 1 and index is not None:
            self.problems.append((f"methods[{index}]", (
                f"its terms each have an official recipe of their own ({', '.join(sorted(found))}) on {dataset}: "
                "set [suite] common_recipe = true to train it on the dataset's standard recipe, or use one of them")))
        return next(iter(found.values())) if len(found) == 1 else None

    def teacher_run(self, pair: PairSection, index: int, dataset: str, seed: int) -> RunSpec | None:
        if pair.teacher_checkpoint is not None:
            checked = self.checked_file(pair.teacher_checkpoint, pair.teacher_sha256,
                                        f"pairs[{index}].teacher_checkpoint", f"pairs[{index}].teacher_sha256")
            if checked is None:
                return None
            path, digest = checked
            spec = RunSpec(kind="pretrained", dataset=dataset, arch=pair.teacher, checkpoint=str(path),
                           checkpoint_sha256=digest)
            self.weights_key.setdefault(spec.run_id, (f"pairs[{index}].teacher_checkpoint", f"teacher {pair.teacher}"))
            return spec
        overrides = self.suite.recipe.merged(self.suite.teacher_recipe).model_dump()
        recipe = self.recipe(dataset, pair.teacher, overrides, "teacher_recipe")
        return RunSpec(kind="train", dataset=dataset, arch=pair.teacher, seed=seed, recipe=recipe, method=VANILLA)

    def recipe(self, dataset: str, arch: str, overrides: dict[str, Any], section: str,
               method_recipe: dict[str, Any] | None = None, teacher_arch: str | None = None,
               method: MethodSpec | None = None) -> Recipe:
        """The run's recipe; ``method``: the views its terms compare on get their augmentation (the suite's
        choice, else the term's own), and no other run records any."""
        entry = DATASETS.get(dataset)
        overrides = dict(overrides)
        chosen = overrides.pop("views", None) or {}
        recipe = resolve_recipe(entry.recipe, arch, overrides, method_recipe, teacher_arch)
        if method is not None:
            needed = {name: aug for t in method.terms for name, aug in METHODS.get(t.method).term.views.items()}
            recipe = replace(recipe, views=tuple(sorted({**needed, **{k: v for k, v in chosen.items()
                                                                       if k in needed}}.items())))
        if recipe.nesterov and recipe.momentum == 0:
            self.problems.append((f"{section}.momentum", "Nesterov momentum needs momentum > 0; set momentum or "
                                  "nesterov = false"))

        def where(*keys: str) -> str:
            """The table that set these keys: a teacher's recipe inherits [recipe]'s, reported there once."""
            own = self.suite.teacher_recipe.model_fields_set if section == "teacher_recipe" else set(keys)
            return section if own & set(keys) else "recipe"

        # crop settings of the other kind of dataset would be silently ignored: refuse them
        files = [name for name in DATASETS.names() if DATASETS.get(name).files]
        for key in ("crop_padding",) if entry.files else ("crop_size", "eval_resize"):
            if overrides.get(key) is not None:
                self.problems.append((f"{where(key)}.{key}", (
                    f"applies to datasets held in memory; {dataset} is read from image files, augmented with "
                    "random-resized crops of crop_size" if entry.files else
                    f"applies to datasets read from image files ({', '.join(files)}); {dataset} is held in memory "
                    "and augmented with crop_padding")))
        crop = recipe.crop_size or entry.image_size
        if entry.files and recipe.eval_resize is not None and recipe.eval_resize < crop:
            self.problems.append((f"{where('eval_resize', 'crop_size')}.eval_resize", f"{recipe.eval_resize} is "
                                  f"smaller than the centre crop ({crop}): it must be at least crop_size"))
        late = [m for m in recipe.milestones if m >= recipe.epochs]
        if late:
            self.problems.append((f"{where('milestones', 'epochs')}.milestones", f"milestones {late} are not before "
                                  f"the last epoch ({recipe.epochs}): the lr would never drop there"))
        return recipe

    def check_views(self) -> None:
        """A view chosen in [recipe] must be one that some method of the suite compares on."""
        compared = {name for m in self.suite.methods for t in m.term_sections()
                    for name in METHODS.get(t.method).term.views}
        for name in self.suite.recipe.views or {}:
            if name not in compared:
                self.problems.append((f"recipe.views.{name}", (
                    f"no method of this suite compares on a view {name!r}; views its methods compare on: "
                    f"{', '.join(sorted(compared)) or 'none'}")))
        if self.suite.teacher_recipe.views:
            self.problems.append(("teacher_recipe.views", "teachers train on cross-entropy alone, on no extra view"))

    def check_baselines(self) -> None:
        """Each ``baseline`` names another row of the suite (a method or a checkpoint) by its label."""
        labels = self.suite.row_labels()
        rows = [(f"methods[{i}]", m.display_label, m.baseline) for i, m in enumerate(self.suite.methods)]
        rows += [(f"checkpoints[{i}]", c.label, c.baseline) for i, c in enumerate(self.suite.checkpoints)]
        for key, label, baseline in rows:
            if baseline is not None and (baseline not in labels or baseline == label):
                others = [other for other in labels if other != label]
                self.problems.append((f"{key}.baseline", (
                    f"{baseline!r} is not the label of another row of this suite; allowed: "
                    f"{', '.join(others) or 'none'}")))

    def checkpoint_cells(self, plan: SuitePlan) -> None:
        """A row for each model trained elsewhere, in the columns of its pairs; its run scores the file."""
        methods = {m.display_label for m in self.suite.methods}
        seen: set[tuple[str, int]] = set()
        for index, entry in enumerate(self.suite.checkpoints):
            key = f"checkpoints[{index}]"
            if entry.label in methods or entry.label == TEACHER_ROW:
                self.problems.append((f"{key}.label", f"{entry.label!r} is already the label of a method's row"))
            if (entry.label, entry.seed) in seen:
                self.problems.append((f"{key}.seed", f"a checkpoint labelled {entry.label!r} with seed {entry.seed} "
                                                     "is listed already: give each seed of a row once"))
            seen.add((entry.label, entry.seed))
            if entry.dataset not in self.suite.data.datasets:
                self.problems.append((f"{key}.dataset", f"{entry.dataset!r} is not among [data] datasets "
                                                        f"({', '.join(self.suite.data.datasets)})"))
                continue
            if entry.pair is not None and entry.pair >= len(self.suite.pairs):
                self.problems.append((f"{key}.pair", f"there are {len(self.suite.pairs)} [[pairs]]; allowed: "
                                                     f"0..{len(self.suite.pairs) - 1}"))
                continue
            pairs = ([self.suite.pairs[entry.pair]] if entry.pair is not None
                     else [p for p in self.suite.pairs if p.student == entry.arch])
            if not pairs:
                self.problems.append((f"{key}.pair", f"no [[pairs]] entry has student {entry.arch!r}; give 'pair' "
                                                     "(the index of the column it joins)"))
                continue
            checked = self.checked_file(entry.path, entry.sha256, f"{key}.path", f"{key}.sha256")
            if checked is None:
                continue
            path, digest = checked
            spec = RunSpec(kind="pretrained", dataset=entry.dataset, arch=entry.arch, checkpoint=str(path),
                           checkpoint_sha256=digest)
            run_id = plan.add_run(spec)
            self.weights_key.setdefault(run_id, (f"{key}.path", f"checkpoint {entry.label!r} ({entry.arch})"))
            plan.cells += [Cell(entry.dataset, p.teacher, p.student, entry.label, entry.seed, run_id,
                                baseline=entry.baseline) for p in pairs]

    def checked_file(self, given: str, expected: str | None, key: str, sha_key: str) -> tuple[Path, str] | None:
        """The resolved path and sha256 of a weights file that exists and, when an expected sha256 is given,
        has it (the file is hashed once)."""
        path = Path(given).expanduser().resolve()
        if not path.is_file():
            self.problems.append((key, f"file not found: {path}"))
            return None
        found = sha256_file(path)
        if expected is not None and found != expected:
            self.problems.append((sha_key, f"{path} has sha256 {found}, not the expected {expected}: the file "
                                           "changed or is another one"))
            return None
        return path, found

    def plan(self) -> SuitePlan:
        suite = self.suite
        self.check_views()
        self.check_baselines()
        plan = SuitePlan(name=suite.suite.name, source=self.source, layout=suite.suite.layout,
                         description=suite.suite.description, download=suite.data.download,
                         cpu_threads=suite.suite.cpu_threads, slurm=suite.slurm.model_dump(),
                         trackers=None if suite.tracking.trackers is None else list(suite.tracking.trackers),
                         data_root=suite.data.root, data_workers=suite.data.workers,
                         evaluations=[EvaluationSpec(e.name, e.settings.model_dump(mode="json"))
                                      for e in suite.evaluations])
        teachers: dict[tuple, RunSpec | None] = {}
        for dataset in suite.data.datasets:
            for p_index, pair in enumerate(suite.pairs):
                methods = [self.resolve_method(m, i, pair) for i, m in enumerate(suite.methods)]
                recipes = []  # each method's student recipe
                for index, method in enumerate(methods):
                    recipes.append(self.recipe(dataset, pair.student, suite.recipe.model_dump(), "recipe",
                                               self.method_recipe(method, dataset, index), teacher_arch=pair.teacher,
                                               method=method))
                    for term in method.terms:
                        for advice in term.params.advice(recipes[-1].epochs):
                            if f"methods[{index}]: {advice}" not in plan.notes:
                                plan.notes.append(f"methods[{index}]: {advice}")
                for seed in suite.suite.seeds:
                    teacher_seed = seed if suite.suite.teacher_seed is None else suite.suite.teacher_seed
                    key = (dataset, p_index, teacher_seed if pair.teacher_checkpoint is None else None)
                    if key not in teachers:
                        teachers[key] = self.teacher_run(pair, p_index, dataset, teacher_seed)
                    teacher = teachers[key]
                    if teacher is None or self.problems:
                        continue
                    teacher_id = plan.add_run(teacher)
                    plan.cells.append(Cell(dataset, pair.teacher, pair.student, TEACHER_ROW, seed, teacher_id))
                    for m_index, (section, method, student_recipe) in enumerate(zip(suite.methods, methods, recipes)):
                        learns_from = ()
                        if method.needs_teacher:
                            topology = self.topology(section, m_index, pair, p_index)
                            learns_from = TOPOLOGIES[topology](self, plan, dataset, pair, teacher_seed,
                                                               method, teacher_id)
                        spec = RunSpec(kind="train", dataset=dataset, arch=pair.student, seed=seed,
                                       recipe=student_recipe, method=method, teachers=learns_from)
                        plan.cells.append(Cell(dataset, pair.teacher, pair.student, section.display_label, seed,
                                               plan.add_run(spec), baseline=section.baseline))
        self.checkpoint_cells(plan)
        if not self.problems:
            self.preflight(plan)
        if self.problems:
            raise ConfigError(self.source, sorted(set(self.problems), key=self.problems.index))
        # teachers first, so that every student finds its teacher done
        plan.runs = dict(sorted(plan.runs.items(), key=lambda kv: kv[1].method is not None and kv[1].method.needs_teacher))
        return plan

    def preflight(self, plan: SuitePlan) -> None:
        """Builds every distinct student objective and loads every given teacher checkpoint on the CPU,
        from the shapes the architectures produce, so that a setting an architecture cannot run (a hint
        layer it does not have, a checkpoint of another network) is reported before any data is read."""
        shapes: dict[tuple[str, str, int], FeatureShapes] = {}

        def shapes_of(arch: str, dataset: str, size: int) -> FeatureShapes:
            if (arch, dataset, size) not in shapes:
                entry = DATASETS.get(dataset)
                try:
                    shapes[arch, dataset, size] = probe_shapes(create_model(arch, entry.num_classes), size)
                except (RuntimeError, ValueError) as exc:  # e.g. a network too deep for 32-pixel images
                    raise ValueError(f"{arch} cannot take {size}x{size} images of {dataset}: {exc}") from None
            return shapes[arch, dataset, size]

        labels = {c.run_id: c.row for c in plan.cells}
        method_index = {section.display_label: i for i, section in enumerate(self.suite.methods)}
        checked = set()
        for cell in plan.cells:
            spec = plan.runs[cell.run_id]
            if spec.kind == "pretrained" and cell.run_id not in checked:
                checked.add(cell.run_id)
                model = create_model(spec.arch, DATASETS.get(spec.dataset).num_classes)
                key, what = self.weights_key[cell.run_id]
                try:
                    load_weights(Path(spec.checkpoint), model, what=what)
                except UsageError as exc:
                    self.problems.append((key, str(exc)))
            if spec.method is None or not spec.method.needs_teacher:
                continue
            key = (spec.dataset, cell.teacher, spec.arch, labels[cell.run_id])
            if key in checked:
                continue
            checked.add(key)
            num_classes = DATASETS.get(spec.dataset).num_classes
            size = spec.recipe.crop_size or DATASETS.get(spec.dataset).image_size  # what the teachers see too
            try:
                teachers = tuple(shapes_of(plan.runs[t].arch, spec.dataset, size) for t in spec.teachers)
                ctx = DistillContext(student=shapes_of(spec.arch, spec.dataset, size), teacher=teachers[0],
                                     num_classes=num_classes, train_labels=torch.arange(2 * num_classes) % num_classes,
                                     device=torch.device("cpu"), teachers=teachers)
                featureless = [(arch, term.method) for term in spec.method.terms
                               if "features" in METHODS.get(term.method).term.reads
                               for arch, shapes in [(spec.arch, ctx.student)] + list(zip(
                                   [plan.runs[t].arch for t in spec.teachers], teachers)) if not shapes.features]
                if featureless:
                    arch, method = featureless[0]
                    raise ValueError(f"{method} reads stage features, and {arch} exposes none (its family has no "
                                     "feature-map stages, e.g. a vision transformer); use a logit or embedding method")
                Objective(spec.method, ctx)
            except ValueError as exc:
                self.problems.append((f"methods[{method_index[cell.row]}]", f"{cell.column}: {exc}"))


def _one(planner, plan, dataset, pair, seed, method, teacher_id) -> tuple[str, ...]:
    return (teacher_id,)


def _chain(planner, plan, dataset, pair, seed, method, teacher_id) -> tuple[str, ...]:
    return (planner.assistants(plan, dataset, pair, seed, method, teacher_id, dense=False)[-1],)


def _dense(planner, plan, dataset, pair, seed, method, teacher_id) -> tuple[str, ...]:
    return tuple(planner.assistants(plan, dataset, pair, seed, method, teacher_id, dense=True))


def _ensemble(planner, plan, dataset, pair, seed, method, teacher_id) -> tuple[str, ...]:
    """The pair's teacher and ``pair.ensemble - 1`` more of its architecture, seeds ``seed + k``."""
    first = plan.runs[teacher_id]
    if first.kind == "pretrained":
        planner.problems.append(("pairs", f"an ensemble method needs teachers it trains itself; the pair "
                                 f"{pair.teacher} -> {pair.student} gives a teacher_checkpoint"))
        return (teacher_id,)
    others = [plan.add_run(replace(first, seed=seed + k)) for k in range(1, pair.ensemble)]
    return (teacher_id, *others)


# the student's teachers for each topology of methods/base.py's TEACHER_TOPOLOGIES
TOPOLOGIES = {"one": _one, "chain": _chain, "dense": _dense, "ensemble": _ensemble}


def plan_suite(path: Path | str) -> SuitePlan:
    path = Path(path)
    return _Planner(read_suite(path), str(path)).plan()
