"""The suite file: a typed schema, checked whole before anything trains.

Every problem is reported with the file, the key path (``methods[2].tekap.alpha``) and what is allowed,
in one error (exit code 2). Names of architectures, datasets, methods and layouts are checked against
their registries.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, get_args

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from tekapbench.data.base import DATASETS
from tekapbench.data.views import VIEWS
from tekapbench.engine.optim import OPTIMIZERS, SCHEDULES
from tekapbench.errors import ConfigError
from tekapbench.evaluations.base import EVALUATIONS
from tekapbench.methods.base import METHODS, MethodParams
from tekapbench.models.base import MODELS
from tekapbench.modifiers.tekap import TeKAPSettings
from tekapbench.plugins import PluginError, load_plugin
from tekapbench.registry import Registry, UnknownNameError
from tekapbench.tables.layouts import LAYOUTS
from tekapbench.trackers import TRACKERS


# torch threads: a C int underneath (2**31 overflows it) and a thread pool (a million threads crash the
# process); far more than any machine has cores
MAX_THREADS = 1024


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # "2" is not 2


def _registered(registry: Registry) -> AfterValidator:
    def check(value: str) -> str:
        if value not in registry:
            try:
                registry.get(value)  # its message: the allowed names, or a namespace's close matches
            except UnknownNameError as exc:
                raise ValueError(str(exc)) from None
        return value

    return AfterValidator(check)


ArchName = Annotated[str, _registered(MODELS)]
DatasetName = Annotated[str, _registered(DATASETS)]
MethodName = Annotated[str, _registered(METHODS)]
LayoutName = Annotated[str, _registered(LAYOUTS)]
EvaluationName = Annotated[str, _registered(EVALUATIONS)]
OptimizerName = Annotated[str, _registered(OPTIMIZERS)]
ScheduleName = Annotated[str, _registered(SCHEDULES)]
ViewName = Annotated[str, _registered(VIEWS)]
TrackerName = Annotated[str, _registered(TRACKERS)]


def _sha256(value: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise ValueError(f"a sha256 is 64 hexadecimal digits, got {value!r}")
    return value.lower()


Sha256 = Annotated[str, AfterValidator(_sha256)]


def _one_or_list(value: Any) -> Any:
    """A name or a list of names, read as a list."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ValueError(f"must be a name or a list of names (got {value!r})")
    return value


class SuiteInfo(Strict):
    name: str = Field(description="names the results folder results/<name>/")
    description: str = ""
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    teacher_seed: int | None = Field(
        None, description="train one teacher with this seed for every student seed (default: one per seed)")
    layout: Annotated[list[LayoutName], BeforeValidator(_one_or_list)] = Field(
        default_factory=lambda: ["diverse"], min_length=1,
        description="table layout(s) of `tekapbench table`: one name or a list, e.g. [\"robustness\", \"calibration\"]")
    common_recipe: bool = Field(
        False, description="true: every method trains on the dataset's standard recipe (under [recipe]); false: "
                           "each method on its official recipe where its official code trains otherwise")
    plugins: list[str] = Field(
        default_factory=list, description="modules (\"my_kd.methods\") or .py files relative to the suite file "
                                          "that register methods, models, datasets, evaluations or layouts")
    cpu_threads: int | None = Field(
        None, ge=1, le=MAX_THREADS, description="torch threads on a CPU (default: torch's choice, one per core); fix it so that "
                                "CPU numbers repeat on other machines: the thread count changes float sums")

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError(f"{v!r} is not allowed: use letters, digits, '_', '-', '.' (it names a folder)")
        return v

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct, got {v}")
        return v


class DataSection(Strict):
    datasets: list[DatasetName] = Field(default_factory=lambda: ["cifar100"], min_length=1)
    root: str = Field("data", description="folder that holds the datasets, relative to the working directory")
    download: bool = False
    workers: int | None = Field(None, ge=0, description="processes that decode datasets of image files (imagenet); "
                                                        "0: in the training process; default: one per core but "
                                                        "one, at most 8. Does not change results")


class RecipeOverrides(Strict):
    epochs: int | None = Field(None, gt=0)
    batch_size: int | None = Field(None, gt=0)
    lr: float | None = Field(None, gt=0)
    momentum: float | None = Field(None, ge=0, lt=1)
    weight_decay: float | None = Field(None, ge=0)
    milestones: list[int] | None = None
    lr_decay: float | None = Field(None, gt=0)
    eval_batch_size: int | None = Field(None, gt=0)
    crop_padding: int | None = Field(None, ge=0, description="random-crop padding in pixels; 0: no crop")
    flip: bool | None = Field(None, description="random horizontal flip")
    crop_size: int | None = Field(None, gt=0, description="datasets of image files (imagenet): the random-resized "
                                                          "crop and the test's centre crop, in pixels")
    eval_resize: int | None = Field(None, gt=0, description="datasets of image files: the test images' shorter "
                                                            "side before the centre crop (default crop_size/0.875)")
    optimizer: OptimizerName | None = None
    nesterov: bool | None = Field(None, description="Nesterov momentum (optimizer sgd)")
    drop_last: bool | None = Field(None, description="leave out each epoch's last, incomplete training batch")
    schedule: ScheduleName | None = Field(None, description="lr schedule: step (milestones, lr_decay) or cosine")
    views: dict[str, ViewName] | None = Field(
        None, description="augmentation of a method's extra views, e.g. { strong = \"mlkd_strong\" }; default: "
                          "the method's own")

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (any(m <= 0 for m in v) or sorted(set(v)) != v):
            raise ValueError(f"milestones must be strictly increasing positive epochs, got {v}")
        return v

    def merged(self, other: "RecipeOverrides") -> "RecipeOverrides":
        return RecipeOverrides(**{**self.model_dump(exclude_none=True), **other.model_dump(exclude_none=True)})


class PairSection(Strict):
    teacher: ArchName
    student: ArchName
    assistants: list[ArchName] = Field(
        default_factory=list, description="teacher assistants, from the teacher's side to the student's: "
                                          "methods that learn through assistants (TAKD, DGKD) train them")
    ensemble: int = Field(3, ge=2, description="teachers of an ensemble method (CA-MKD): the pair's teacher "
                                                "and more of its architecture, seeds teacher seed + 1, + 2, ...")
    teacher_checkpoint: str | None = Field(
        None, description="a trained teacher: a state dict under key 'model' (CRD/DKD zoo) or a bare one "
                           "(torchvision's files); the teacher is then not trained")
    teacher_sha256: Sha256 | None = Field(None, description="the teacher checkpoint's expected sha256, checked "
                                                            "before anything runs")


class CheckpointSection(Strict):
    """``[[checkpoints]]``: a model trained elsewhere, scored like a trained run (a row of every table)."""

    label: str = Field(description="its row in the tables; checkpoints of one label and distinct seeds are "
                                   "the seeds of one row")
    arch: ArchName
    path: str = Field(description="the weights file, relative to the working directory: a state dict, bare or "
                                  "under 'model', 'net' or 'state_dict' (RepDistiller, mdistiller, torchvision)")
    dataset: DatasetName = Field(description="the dataset it was trained on (one of [data] datasets)")
    pair: int | None = Field(None, ge=0, description="index of the [[pairs]] entry whose column it joins (default: "
                                                     "every pair whose student is its arch)")
    seed: int = Field(0, description="the seed it stands for when rows are compared seed by seed")
    sha256: Sha256 | None = Field(None, description="expected sha256 of the file, checked before anything runs")
    baseline: str | None = Field(None, description="label of the row it is compared with (as for methods)")


def _method_params(value: Any, info: ValidationInfo) -> Any:
    """A method's ``params`` table, validated against that method's own settings model."""
    method = info.data.get("method")
    if isinstance(value, MethodParams) or method not in METHODS:
        return value  # already validated, or the method name is reported on its own
    if not isinstance(value, dict):
        raise ValueError(f"must be a table of {method}'s settings")
    return _validated(METHODS.get(method).params, value)


def _validated(model: type[BaseModel], value: Any) -> BaseModel:
    """A settings table checked against its model; every problem named in one message."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise ValueError("; ".join(f"{_key_path(e['loc'])}: {_describe(e, model)}" for e in exc.errors())) from None


MethodParamsTable = Annotated[Any, AfterValidator(_method_params)]


class EvaluationSection(Strict):
    """``[[evaluations]]``: ``name`` plus that evaluation's own settings, side by side in one table."""

    name: EvaluationName
    settings: Any = None

    @model_validator(mode="before")
    @classmethod
    def _gather_settings(cls, data: Any) -> Any:
        if isinstance(data, dict) and "settings" not in data:
            return {"name": data.get("name"), "settings": {k: v for k, v in data.items() if k != "name"}}
        return data

    @field_validator("settings")
    @classmethod
    def _validate_settings(cls, value: Any, info: ValidationInfo) -> Any:
        name = info.data.get("name")
        if name not in EVALUATIONS:
            return value  # the name is reported on its own
        return _validated(EVALUATIONS.get(name).params, value or {})


class TermSection(Strict):
    method: MethodName
    weight: float | None = Field(None, ge=0, description="default: the method's standard weight")
    params: MethodParamsTable = Field(default_factory=dict)
    tekap: TeKAPSettings | None = None


class MethodSection(Strict):
    """Either one base method (``method = "kd"``, optionally with weight, params, tekap) or ``terms``."""

    label: str | None = None
    method: MethodName | None = None
    weight: float | None = Field(None, ge=0)
    params: MethodParamsTable = Field(default_factory=dict)
    tekap: TeKAPSettings | None = None
    ce_weight: float | None = Field(None, ge=0)
    terms: list[TermSection] | None = None
    baseline: str | None = Field(
        None, description="label of the method this one is compared with, seed by seed (e.g. \"KD\" on KD+TeKAP): "
                          "the sota layout's pairing and its ✓")

    @model_validator(mode="after")
    def _one_form(self) -> "MethodSection":
        if (self.method is None) == (self.terms is None):
            raise ValueError("give either 'method' (one base method) or 'terms' (a list of terms), not both or neither")
        if self.terms is not None and {"weight", "params", "tekap"} & self.model_fields_set:
            raise ValueError("with 'terms', put weight, params and tekap inside each term")
        if self.terms is not None and not self.terms:
            raise ValueError("'terms' is empty; use method = \"vanilla\" for cross-entropy only")
        if self.method is not None and METHODS.get(self.method).term is None:
            given = [k for k in ("weight", "params", "tekap") if k in self.model_fields_set]
            if given:
                raise ValueError(f"{self.method!r} trains with cross-entropy only: remove {', '.join(given)}")
            if self.ce_weight == 0:
                raise ValueError(f"{self.method!r} with ce_weight = 0 has nothing to train on")
        return self

    def term_sections(self) -> list[TermSection]:
        if self.terms is not None:
            return list(self.terms)
        if METHODS.get(self.method).term is None:  # vanilla: no distillation term
            return []
        return [TermSection(method=self.method, weight=self.weight, params=self.params, tekap=self.tekap)]

    @property
    def display_label(self) -> str:
        if self.label:
            return self.label
        if self.method:
            return self.method + ("+TeKAP" if self.tekap else "")
        return "+".join(t.method + ("+TeKAP" if t.tekap else "") for t in self.terms or [])


class SlurmSection(Strict):
    """How `tekapbench run --executor slurm` asks Slurm for resources: one array task per run."""

    partition: str | None = Field(None, description="sbatch --partition (default: the cluster's default)")
    time_min: int = Field(24 * 60, ge=1, description="time limit of one run's job, in minutes")
    cpus_per_task: int = Field(4, ge=1)
    gpus_per_task: int = Field(1, ge=0, description="0 for CPU-only jobs")
    mem_gb: float | None = Field(None, gt=0, description="memory per job (default: the partition's default)")
    array_parallelism: int = Field(64, ge=1, description="at most this many of a stage's jobs run at once")
    sbatch: dict[str, str | int] = Field(default_factory=dict,
                                         description="more sbatch options, e.g. { account = 'lab', qos = 'high' }")
    setup: list[str] = Field(default_factory=list, description="shell lines run before each job (module load, ...)")
    folder: str | None = Field(None, description="job scripts and logs (default: results/<suite>/slurm)")
    signal_delay_s: int = Field(120, ge=1, description="seconds of warning (USR2) before a time limit or preemption")
    max_requeues: int = Field(3, ge=0, description="how often a job that hit its time limit is requeued")
    device: str = Field("auto", description="device inside a job: auto (the job's GPU, else CPU), cpu, cuda")


class TrackingSection(Strict):
    """Where each run's per-epoch numbers and settings go besides history.jsonl (`tekapbench list trackers`)."""

    trackers: list[TrackerName] | None = Field(
        None, description="e.g. ['tensorboard', 'mlflow']; default: tensorboard when it is installed; [] for none")


class SuiteFile(Strict):
    suite: SuiteInfo
    data: DataSection = Field(default_factory=DataSection)
    recipe: RecipeOverrides = Field(default_factory=RecipeOverrides)
    teacher_recipe: RecipeOverrides = Field(default_factory=RecipeOverrides,
                                            description="overrides on top of [recipe] for the teachers")
    pairs: list[PairSection] = Field(min_length=1)
    methods: list[MethodSection] = Field(default_factory=list)
    checkpoints: list[CheckpointSection] = Field(
        default_factory=list, description="models trained elsewhere, scored without training")
    evaluations: list[EvaluationSection] = Field(
        default_factory=list, description="scored on every trained model, beside the built-in test accuracy")
    slurm: SlurmSection = Field(default_factory=SlurmSection, description="resources for --executor slurm")
    tracking: TrackingSection = Field(default_factory=TrackingSection, description="experiment trackers")

    @model_validator(mode="after")
    def _distinct_labels(self) -> "SuiteFile":
        if not self.methods and not self.checkpoints:
            raise ValueError("nothing to score: give [[methods]] to train, [[checkpoints]] to score, or both")
        labels = [m.display_label for m in self.methods]
        dupes = sorted({label for label in labels if labels.count(label) > 1})
        if dupes:
            raise ValueError(f"method labels must be distinct; repeated: {', '.join(dupes)} (set 'label')")
        return self

    def row_labels(self) -> list[str]:
        """Every row a method or a checkpoint adds, in suite order."""
        return list(dict.fromkeys([m.display_label for m in self.methods] + [c.label for c in self.checkpoints]))


def _key_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``list[TermSection] | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(_model_in, get_args(annotation)) if m is not None), None)


def allowed_keys(root: type[BaseModel], loc: tuple) -> list[str]:
    """The keys a table at ``loc`` (a pydantic error location) accepts."""
    model: type[BaseModel] | None = root
    for part in loc:
        if isinstance(part, int):
            continue
        fields = {f.alias or name: f for name, f in model.model_fields.items()}
        if part not in fields or (model := _model_in(fields[part].annotation)) is None:
            return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _describe(error: dict, root: type[BaseModel] | None = None) -> str:
    kind, msg = error["type"], error["msg"]
    if kind == "extra_forbidden":
        allowed = allowed_keys(root, error["loc"][:-1]) if root is not None else []
        return "unknown key" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    if kind == "missing":
        return "required key is missing"
    msg = msg.removeprefix("Value error, ")
    if "input" in error and kind not in ("value_error",) and not isinstance(error["input"], (dict, list)):
        msg += f" (got {error['input']!r})"
    return msg


def read_suite(path: Path) -> SuiteFile:
    """Parses and validates a suite file; returns the model or raises ConfigError naming every problem."""
    source = str(path)
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(source, [("", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [("", f"cannot read the file: {exc}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [("", f"not valid TOML: {exc}")]) from None
    load_suite_plugins(raw, path, source)
    try:
        return SuiteFile.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = error["loc"]
            # pydantic appends the validator's name for model validators; drop non-key parts
            loc = tuple(p for p in loc if not str(p).startswith("function-"))
            if loc[:1] == ("evaluations",) and loc[2:3] == ("settings",):
                loc = loc[:2] + loc[3:]  # settings sit beside 'name' in the file
            problems.append((_key_path(loc), _describe({**error, "loc": loc}, SuiteFile)))
        raise ConfigError(source, problems) from None


def load_suite_plugins(raw: dict, path: Path, source: str) -> None:
    """Imports the plugins of ``[suite] plugins`` before the rest is validated: they may register the names
    the suite uses. A plugin that cannot be loaded is an error at its key."""
    specs = raw.get("suite", {}).get("plugins", []) if isinstance(raw.get("suite"), dict) else []
    if not isinstance(specs, list):
        return  # reported by the schema
    problems = []
    for index, spec in enumerate(specs):
        if not isinstance(spec, str):
            continue  # reported by the schema
        try:
            load_plugin(spec, f"suite {path}", relative_to=Path(path).parent)
        except PluginError as exc:
            problems.append((f"suite.plugins[{index}]", str(exc)))
    if problems:
        raise ConfigError(source, problems)
