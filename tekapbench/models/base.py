"""The one output contract of every model, and the model registry.

Every network returns logits plus its stage features, so a distiller never needs model-specific code:

- ``features``: post-activation stage features, stem first, then the output of each stage
  (what RepDistiller's ``is_feat=True, preact=False`` returns, without the pooled vector);
- ``preact_features``: the same stages before their final ReLU (equal to ``features`` where a stage has
  no final activation, e.g. the stem or ShuffleNet blocks whose activation comes later);
- ``embedding``: the pooled penultimate feature, shape (batch, dim), the input of the classifier.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Callable

import torch
from torch import nn

from tekapbench.registry import Registry


@dataclass(frozen=True)
class ModelOutput:
    logits: torch.Tensor
    features: tuple[torch.Tensor, ...]
    preact_features: tuple[torch.Tensor, ...]
    embedding: torch.Tensor

    def replace(self, **changes) -> "ModelOutput":
        return replace(self, **changes)

    def detach(self) -> "ModelOutput":
        return ModelOutput(
            logits=self.logits.detach(),
            features=tuple(f.detach() for f in self.features),
            preact_features=tuple(f.detach() for f in self.preact_features),
            embedding=self.embedding.detach(),
        )


MODEL_FIELDS = tuple(f.name for f in fields(ModelOutput))

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
