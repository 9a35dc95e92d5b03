"""The one output contract of every model, and the model registry.

Every network returns logits plus its stage features, so a distiller never needs model-specific code:

- ``features``: post-activation stage features, stem first, then the output of each stage
  (what RepDistiller's ``is_feat=True, preact=False`` returns, without the pooled vector);
- ``preact_features``: the same stages before their final ReLU (equal to ``features`` where a stage has
  no final activation, e.g. the stem or ShuffleNet blocks whose activation comes later);
- ``embedding``: the pooled penultimate feature, shape (batch, dim), the input of the classifier.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from tekapbench.errors import UsageError
from tekapbench.models.checkpoints import read_weights
from tekapbench.registry import Registry


@dataclass(frozen=True)
class ModelOutput:
    logits: torch.Tensor
    features: tuple[torch.Tensor, ...]
    preact_features: tuple[torch.Tensor, ...]
    embedding: torch.Tensor
    # the classifier that maps an embedding to logits (CA-MKD asks a teacher's classifier how confident it
    # is about the student's regressed embedding); not compared, not perturbed
    head: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, compare=False, repr=False)

    def replace(self, **changes) -> "ModelOutput":
        return replace(self, **changes)



@dataclass(frozen=True)
class FeatureShapes:
    """Shapes a model produces for one image, probed once, so no method needs model-specific code."""

    features: tuple[tuple[int, ...], ...]  # (C, H, W) per stage, stem first
    embedding_dim: int
    num_classes: int


@torch.no_grad()
def probe_shapes(model: nn.Module, image_size: int, device: torch.device | str = "cpu") -> FeatureShapes:
    """Runs one blank image through the model in eval mode (BatchNorm statistics stay untouched)."""
    was_training = model.training
    model.eval()
    out = model(torch.zeros(1, 3, image_size, image_size, device=device))
    model.train(was_training)
    return FeatureShapes(
        features=tuple(tuple(f.shape[1:]) for f in out.features),
        embedding_dim=int(out.embedding.shape[1]),
        num_classes=int(out.logits.shape[1]),
    )

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("architecture")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    return MODELS.register(name)


def create_model(name: str, num_classes: int) -> nn.Module:
    return MODELS.get(name)(num_classes=num_classes)


class LogitsOnly(nn.Module):
    """Adapter for code that expects ``model(x) -> logits`` (attacks, probes)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits


def load_weights(path: Path, model: nn.Module, what: str) -> str:
    """Loads a checkpoint into ``model`` and returns the sha256 of the file's bytes (exactly those loaded).

    Formats: a bare state dict, or one under 'model', 'state_dict' or 'net', with or without DataParallel's
    'module.' prefix (models/checkpoints.py). Only plain tensor data is unpickled: a file that asks for
    anything else is refused (:class:`~tekapbench.errors.UnsafeFileError`), so a checkpoint never runs code.
    """
    path = Path(path)
    weights = read_weights(path, what)
    state = weights.state_dict
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or misshaped:
        def some(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

        found = [f"{len(keys)} {kind} ({some(keys)})" for kind, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("keys of another shape", misshaped))
                 if keys]
        raise UsageError(f"{what}: {path} does not fit the architecture (or the class count): {'; '.join(found)}")
    model.load_state_dict(state, strict=True)
    return weights.sha256
