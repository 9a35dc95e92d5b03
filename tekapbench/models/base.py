"""The one output contract of every model, and the model registry.

Every network returns logits plus its stage features, so a distiller never needs model-specific code:

- ``features``: post-activation stage features, stem first, then the output of each stage
  (what RepDistiller's ``is_feat=True, preact=False`` returns, without the pooled vector);
- ``preact_features``: the same stages before their final ReLU (equal to ``features`` where a stage has
  no final activation, e.g. the stem or ShuffleNet blocks whose activation comes later);
- ``embedding``: the pooled penultimate feature, shape (batch, dim), the input of the classifier.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from tekapbench.errors import UsageError
from tekapbench.registry import Registry


@dataclass(frozen=True)
class ModelOutput:
    logits: torch.Tensor
    features: tuple[torch.Tensor, ...]
    preact_features: tuple[torch.Tensor, ...]
    embedding: torch.Tensor

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


def load_weights(path: Path, model: nn.Module, what: str) -> None:
    """Loads a checkpoint in the public format (state dict under key 'model') or a bare state dict."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"{what}: checkpoint {path} does not exist") from None
    except Exception as exc:  # a truncated or foreign file
        raise UsageError(f"{what}: cannot read checkpoint {path}: {exc}") from None
    state = blob.get("model", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise UsageError(f"{what}: {path} holds no state dict (expected a dict with key 'model')")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UsageError(f"{what}: {path} does not fit the architecture: {exc}") from None
