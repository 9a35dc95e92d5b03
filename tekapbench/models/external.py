"""Networks of torchvision and timm under the model contract: ``torchvision.<name>`` and ``timm.<name>``.

Any classification model of ``torchvision.models.list_models(module=torchvision.models)`` or of
``timm.list_models()`` is an architecture of its own, resolved by name (registry namespaces; nothing is
listed by hand). The network is built with random weights (``weights=None`` / ``pretrained=False``;
nothing is downloaded) and with its classifier sized to the dataset's class count (the constructor's
``num_classes``). timm is an optional extra (``pip install 'tekapbench[timm]'``): it is imported only when a
``timm.`` name is asked for, and no external network is built before ``create_model`` asks for one.

What each field of :class:`ModelOutput` holds:

- ``logits``: the network's own output (its forward is unchanged);
- ``embedding`` and ``head``: the input of the final classification layer, and that layer
  (``head(embedding) == logits``). For most families that is the pooled feature; for the families with an
  MLP head (torchvision's VGG, AlexNet, MobileNetV3, MaxViT) it is the input of the head's last linear layer;
- ``features``: the stage feature maps, (N, C, H, W), highest resolution first:

  - torchvision's ResNets (ResNet, ResNeXt, Wide ResNet): the zoo's ``ResNet18``/``ResNet34`` forward
    (models/imagenet_resnet.py): the stem's output (before the max pool) and each of ``layer1..layer4``;
  - timm models with ``forward_intermediates`` (nearly all): its intermediates at every level of the
    model's ``feature_info``, NCHW (ResNets: the stem and the four stages; hierarchical transformers: each
    stage; plain ViTs: every block, as a (C, H, W) grid of patch tokens);
  - every other network: the output of the last module at each resolution, found once per architecture
    from two shape probes on a weightless ("meta") copy: among the modules whose output is a feature map
    (channels fixed, height and width following the input size), the shallowest module that finishes
    last at each resolution, e.g. ``features.1, .3, .6, .13`` and ``features`` (MobileNetV2),
    ``stem`` and ``trunk_output.block1..4`` (RegNet), ``features.1, .3, .5, .7`` (ConvNeXt; VGG: the ReLU
    before each max pool); channels-last maps (torchvision's Swin) are permuted to NCHW. A network with no
    such hierarchy (torchvision's ViT and MaxViT, which take one input size only) exposes none: ``features``
    is empty, and indexing it says why;
- ``preact_features``: torchvision's ResNets only (each stage's last residual sum before its ReLU, as the
  zoo's ``ResNet18``). Every other family exposes none: empty, and indexing it says why.

Methods that read only the logits (KD, DKD, MLKD, TAKD, DGKD), the embedding (CRD) or the embedding and the
classifier (CA-MKD) run with every family; FitNet needs the stage features.

The network is adapted in place: its class becomes a subclass with this forward, and the stage features
and the embedding are taken with forward hooks held for the duration of one forward call only. So there is
one forward pass, and the network keeps its modules, its train/eval behaviour and its state-dict keys:
torchvision's and timm's own checkpoint files load as a ``teacher_checkpoint`` (for the matching class
count). (torchvision's FX feature extraction would build a second module beside the network, with other
keys, and traces only what FX can.)
"""
from __future__ import annotations

import copy
import functools
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from tekapbench.errors import UsageError
from tekapbench.models.base import MODELS, ModelOutput
from tekapbench.models.imagenet_resnet import ImageNetResNet

TORCHVISION = "torchvision."
TIMM = "timm."
# input sizes the shape probes try, in this order, until two run (on a weightless copy: a size costs nothing)
PROBE_SIZES = (224, 160, 192, 256, 128, 96, 64, 32, 299, 384)
# two stage levels closer than this in height are one level (valid convolutions, e.g. Inception's 109/111)
_LEVEL_RATIO = 1.5
# constructor arguments beside weights=None and num_classes, for torchvision models that need them
_TORCHVISION_KWARGS: dict[str, dict[str, Any]] = {
    # no auxiliary classifiers (their outputs would replace the logits in training mode); the
    # initialisation the constructors warn about when it is left unset
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


class MissingDependencyError(UsageError, ValueError):
    """An optional package is needed for a name (a ValueError too, so a suite reports it at its key)."""


class Absent(tuple):
    """An empty tuple of features that says why it is empty when a method indexes it."""

    reason: str

    def __new__(cls, reason: str) -> "Absent":
        self = super().__new__(cls, ())
        self.reason = reason
        return self

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ()
        raise IndexError(self.reason)

    def __reduce__(self):
        return (Absent, (self.reason,))

    def __repr__(self) -> str:
        return f"Absent({self.reason!r})"


def import_timm():
    try:
        import timm
    except ImportError:
        raise MissingDependencyError(
            "timm.<name> architectures need the optional package timm: pip install 'tekapbench[timm]' "
            "(or pip install timm)") from None
    return timm


# -- the names each namespace knows ---------------------------------------------------------------------

def torchvision_names() -> list[str]:
    import torchvision.models

    return torchvision.models.list_models(module=torchvision.models)  # classification models only


def timm_names() -> list[str]:
    return import_timm().list_models()


def _torchvision_knows(name: str) -> bool:
    return name in torchvision_names()


def _timm_knows(name: str) -> bool:
    return bool(name) and import_timm().is_model(name)  # also "resnet18.a1_in1k": a tag of its weights


# -- how a network is adapted ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ExternalSpec:
    """How to read the contract's fields off one architecture (found once per process, then cached)."""

    arch: str
    head: str  # module name of the final classification layer
    intermediates: bool = False  # timm's forward_intermediates gives the stage features
    taps: tuple[str, ...] = ()  # otherwise: modules whose outputs are the stage features
    channels_last: tuple[bool, ...] = ()  # per tap: the output is (N, H, W, C)
    no_features: str = ""  # why there are no stage features ("" when there are)
    no_preact: str = ""


_SPECS: dict[str, ExternalSpec] = {}
_ADAPTED_CLASSES: dict[type, type] = {}


def _no_preact(arch: str) -> str:
    return (f"{arch} exposes no pre-activation features: only the zoo's networks and torchvision's ResNets "
            f"do; use a method that does not read them")


def _no_features(arch: str, why: str) -> str:
    return (f"{arch} exposes no stage features ({why}); methods that read them (FitNet) cannot use it: "
            f"use a convolutional network or a method that reads the logits or the embedding")


class _External:
    """Mixin put in front of a torchvision or timm class: the forward returns a :class:`ModelOutput`."""

    _tekap_spec: ExternalSpec

    def forward(self, x: torch.Tensor) -> ModelOutput:
        spec = self._tekap_spec
        model: nn.Module = self  # type: ignore[assignment]
        head = model.get_submodule(spec.head)
        taken: dict[Any, torch.Tensor] = {}
        handles = [head.register_forward_pre_hook(functools.partial(_take_input, taken))]
        for i, name in enumerate(spec.taps):
            handles.append(model.get_submodule(name).register_forward_hook(functools.partial(_take_output, taken, i)))
        try:
            if spec.intermediates:
                final, features = model.forward_intermediates(x)  # type: ignore[operator]
                logits = model.forward_head(final)  # type: ignore[operator]
                features = tuple(features)
            else:
                logits = super().forward(x)  # type: ignore[misc]
                missing = [name for i, name in enumerate(spec.taps) if i not in taken]
                if missing:
                    raise RuntimeError(f"{spec.arch}: the modules of its stage features {missing} did not run")
                features = tuple(taken[i].permute(0, 3, 1, 2) if last else taken[i]
                                 for i, last in enumerate(spec.channels_last))
        finally:
            for handle in handles:
                handle.remove()
        if not isinstance(logits, torch.Tensor):
            raise RuntimeError(f"{spec.arch} returned {type(logits).__name__}, not a tensor of logits")
        embedding = taken.get("embedding")
        if embedding is None or embedding.dim() != 2:
            raise RuntimeError(f"{spec.arch}: its classifier {spec.head!r} did not receive a (batch, dim) embedding")
        return ModelOutput(
            logits=logits,
            features=features if features else Absent(spec.no_features),
            preact_features=Absent(spec.no_preact),
            embedding=embedding,
            head=head,
        )

    def __reduce_ex__(self, protocol):  # the adapted class is made at run time: rebuild it from the base
        return (_restore, (type(self).__mro__[2],), self.__dict__.copy())


def _take_input(taken: dict, module: nn.Module, args: tuple) -> None:
    taken.setdefault("embedding", args[0])


def _take_output(taken: dict, index: int, module: nn.Module, args: tuple, output: Any) -> None:
    taken[index] = output


def _adapted_class(cls: type) -> type:
    if cls not in _ADAPTED_CLASSES:
        _ADAPTED_CLASSES[cls] = type(cls.__name__, (_External, cls), {"__qualname__": cls.__qualname__,
                                                                       "__doc__": cls.__doc__})
    return _ADAPTED_CLASSES[cls]


def _restore(cls: type) -> nn.Module:
    adapted = _adapted_class(cls)
    return adapted.__new__(adapted)


def adapt(model: nn.Module, arch: str, spec: ExternalSpec | None = None) -> nn.Module:
    """Makes a classification network return :class:`ModelOutput`, in place (it keeps its modules, its
    parameters and its state-dict keys); ``arch`` names it in messages. The spec is found by probing a
    weightless copy of the network (see the module's docstring) unless given."""
    if isinstance(model, _External):
        return model
    if spec is None:
        spec = find_spec(model, arch)
    model.__class__ = _adapted_class(type(model))
    model._tekap_spec = spec
    return model


# -- probes ---------------------------------------------------------------------------------------------

def _meta_copy(model: nn.Module) -> nn.Module:
    """A copy of the network whose parameters and buffers hold no data (shapes only; nothing is computed)."""
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo).eval()


@dataclass
class _Calls:
    inputs: dict[str, Any]  # module name -> the first argument of its last call
    outputs: dict[str, Any]  # module name -> the output of its last call
    order: dict[str, int]  # module name -> when its last call finished
    counts: Counter
    result: Any


@torch.no_grad()
def _record(model: nn.Module, size: int, device: torch.device | str) -> _Calls:
    calls = _Calls({}, {}, {}, Counter(), None)

    def hook(name, module, args, output):
        calls.counts[name] += 1
        calls.order[name] = sum(calls.counts.values())
        calls.inputs[name] = args[0] if args else None
        calls.outputs[name] = output

    handles = [m.register_forward_hook(functools.partial(hook, name)) for name, m in model.named_modules() if name]
    try:
        calls.result = model(torch.zeros(1, 3, size, size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _probes(model: nn.Module) -> tuple[_Calls, _Calls | None, int]:
    """The calls of the first two probe sizes that the network takes (the second None when it takes one only)
    and the first of them: on a meta copy, or, where an operation has no meta implementation, on the network
    itself in eval mode (no statistic changes)."""
    targets: list[tuple[nn.Module, torch.device | str]] = [(_meta_copy(model), "meta")]
    targets.append((model, next(model.parameters()).device))
    errors = []
    for target, device in targets:
        was_training = target.training
        target.eval()
        found: list[tuple[_Calls, int]] = []
        try:
            for size in PROBE_SIZES:
                try:
                    found.append((_record(target, size, device), size))
                except Exception as exc:
                    errors.append(f"{size}x{size}: {exc}")
                if len(found) == 2:
                    break
        finally:
            target.train(was_training)
        if found:
            return found[0][0], found[1][0] if len(found) > 1 else None, found[0][1]
    raise RuntimeError(f"cannot run an image of any of the sizes {', '.join(map(str, PROBE_SIZES))} through the "
                       f"network ({errors[-1]})")


def _feature_map(a: Any, b: Any) -> tuple[tuple[int, int, int], bool] | None:
    """((C, H, W) at the first probe size, channels-last) when outputs a, b (one per probe size) are a
    feature map: 4-D, channels fixed, height and width following the input size."""
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dim() == b.dim() == 4):
        return None
    if a.shape[1] == b.shape[1] and a.shape[2] != b.shape[2] and a.shape[3] != b.shape[3]:
        return (a.shape[1], a.shape[2], a.shape[3]), False
    if a.shape[3] == b.shape[3] and a.shape[1] != b.shape[1] and a.shape[2] != b.shape[2]:
        return (a.shape[3], a.shape[1], a.shape[2]), True
    return None


def select_taps(first: _Calls, second: _Calls, skip: str = "") -> list[tuple[str, bool]]:
    """The stage features' modules (name, channels-last), highest resolution first: at each resolution the
    shallowest module that finishes last; a level counts only if every later level is coarser, and levels
    closer than _LEVEL_RATIO in height are one (the later). ``skip``: the classifier, never a stage."""
    best: dict[int, tuple[int, int, str, bool]] = {}  # height -> (depth, order, name, channels-last)
    for name, out in first.outputs.items():
        if first.counts[name] != 1 or second.counts.get(name) != 1 or (skip and (name + ".").startswith(skip + ".")):
            continue
        found = _feature_map(out, second.outputs[name])
        if found is None:
            continue
        (_, height, _), last = found
        depth, order = name.count(".") + 1, first.order[name]
        if height not in best or (depth, -order) < (best[height][0], -best[height][1]):
            best[height] = (depth, order, name, last)
    levels = sorted((order, height, name, last) for height, (_, order, name, last) in best.items())
    kept: list[tuple[int, str, bool]] = []
    coarsest_later = 0
    for _, height, name, last in reversed(levels):
        if height > coarsest_later and (not kept or height >= _LEVEL_RATIO * kept[-1][0]):
            kept.append((height, name, last))
        coarsest_later = max(coarsest_later, height)
    return [(name, last) for _, name, last in reversed(kept)]


def _linear_head(calls: _Calls) -> str | None:
    """The module whose output is the logits themselves (None: the network does not end in one)."""
    for name, out in calls.outputs.items():
        if out is calls.result and calls.counts[name] == 1:
            return name
    return None


def _module_name(model: nn.Module, module: nn.Module) -> str | None:
    return next((name for name, m in model.named_modules() if m is module and name), None)


def find_spec(model: nn.Module, arch: str) -> ExternalSpec:
    """How to read the contract off ``model`` (see the module's docstring); raises UsageError for a network
    that does not end in a classification layer on a (batch, dim) embedding."""
    no_preact = _no_preact(arch)
    if callable(getattr(model, "forward_intermediates", None)) and callable(getattr(model, "forward_head", None)):
        spec = _timm_spec(model, arch, no_preact)
        if spec is not None:
            return spec
    first, second, size = _probes(model)
    head = _linear_head(first)
    if head is None or not isinstance(first.outputs.get(head), torch.Tensor):
        raise UsageError(f"{arch} does not end in a classification layer on a pooled embedding (its logits are "
                         f"not the output of one module), so it has no embedding for the model contract")
    embedding = first.inputs.get(head)
    if not isinstance(embedding, torch.Tensor) or embedding.dim() != 2:
        raise UsageError(f"{arch}: its classifier {head!r} does not take a (batch, dim) embedding (e.g. a "
                         f"convolutional classifier); it is not supported")
    if second is None:
        return ExternalSpec(arch, head, no_preact=no_preact, no_features=_no_features(
            arch, f"it takes {size}x{size} images only, so its feature maps cannot be told from other "
                  "4-D tensors"))
    taps = select_taps(first, second, skip=head)
    if len(taps) < 2:
        return ExternalSpec(arch, head, no_preact=no_preact,
                            no_features=_no_features(arch, "it has no hierarchy of feature maps"))
    return ExternalSpec(arch, head, taps=tuple(n for n, _ in taps), channels_last=tuple(last for _, last in taps),
                        no_preact=no_preact)


def _timm_spec(model: nn.Module, arch: str, no_preact: str) -> ExternalSpec | None:
    """timm's forward_intermediates + forward_head, if they run on a probe and give NCHW maps; else None."""
    classifier = model.get_classifier() if callable(getattr(model, "get_classifier", None)) else None
    if isinstance(classifier, tuple):  # distilled heads (head, head_dist): the embedding enters both
        classifier = classifier[0]
    head = _module_name(model, classifier) if isinstance(classifier, nn.Module) else None
    if head is None:
        return None
    size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, PROBE_SIZES[0], PROBE_SIZES[0]))
    try:
        meta = _meta_copy(model)
        taken: dict = {}
        handle = meta.get_submodule(head).register_forward_pre_hook(functools.partial(_take_input, taken))
        try:
            with torch.no_grad():  # at the model's own input size: some take no other (e.g. MaxViT)
                final, features = meta.forward_intermediates(torch.zeros(1, *size, device="meta"))
                meta.forward_head(final)
        finally:
            handle.remove()
    except Exception:
        return None
    embedding = taken.get("embedding")
    if embedding is None or embedding.dim() != 2 or not all(f.dim() == 4 for f in features):
        return None
    no_features = "" if features else _no_features(arch, "forward_intermediates gave none")
    return ExternalSpec(arch, head, intermediates=True, no_features=no_features, no_preact=no_preact)


def _spec_of(arch: str, model: nn.Module) -> ExternalSpec:
    if arch not in _SPECS:
        _SPECS[arch] = find_spec(model, arch)
    return _SPECS[arch]


# -- builders -------------------------------------------------------------------------------------------

def build_torchvision(name: str, num_classes: int) -> nn.Module:
    """torchvision's ``name`` with random weights and ``num_classes`` outputs, under the model contract."""
    from torchvision.models import get_model
    from torchvision.models.resnet import ResNet

    arch = TORCHVISION + name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # e.g. about the default initialisation changing
        model = get_model(name, weights=None, num_classes=num_classes, **_TORCHVISION_KWARGS.get(name, {}))
    if type(model) is ResNet:  # ResNet, ResNeXt, Wide ResNet: the zoo's forward, with pre-activations
        model.__class__ = ImageNetResNet
        return model
    return adapt(model, arch, _spec_of(arch, model))


def build_timm(name: str, num_classes: int) -> nn.Module:
    """timm's ``name`` with random weights and ``num_classes`` outputs, under the model contract."""
    timm = import_timm()
    arch = TIMM + name
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    return adapt(model, arch, _spec_of(arch, model))


def _factory(build: Callable[[str, int], nn.Module], name: str) -> Callable[..., nn.Module]:
    def factory(num_classes: int = 1000) -> nn.Module:
        return build(name, num_classes)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = build.__doc__.replace("``name``", repr(name)) if build.__doc__ else None
    return factory


MODELS.register_namespace(TORCHVISION, functools.partial(_factory, build_torchvision), contains=_torchvision_knows,
                          names=torchvision_names, listing="torchvision.models.list_models()")
MODELS.register_namespace(TIMM, functools.partial(_factory, build_timm), contains=_timm_knows, names=timm_names,
                          listing="timm.list_models()")
