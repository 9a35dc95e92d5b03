"""The fixed inputs of the golden tests, built the same way by the scripts that ran the official code:
``torch.randn`` / ``torch.randint`` from ``torch.Generator().manual_seed(seed)``, float32, CPU."""
import torch

from tekapbench.data.loader import Batch
from tekapbench.models.base import ModelOutput


def fixed(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def confident_logits(batch: int = 8, classes: int = 100):
    """student, teacher, labels; the teacher is confident on the label, as a trained one is."""
    y = torch.randint(0, classes, (batch,), generator=torch.Generator().manual_seed(3))
    s = fixed((batch, classes), 1) * 3
    t = fixed((batch, classes), 2) * 5
    t[torch.arange(batch), y] += 8.0
    return s, t, y


def out(z):
    """A model output that is only logits (the logit methods read nothing else)."""
    return ModelOutput(logits=z, features=(), preact_features=(), embedding=z)


def batch(y):
    return Batch(images=torch.zeros(len(y), 3, 4, 4), labels=y, indices=torch.arange(len(y)))


def grad_summary(g):
    """A gradient pinned by its norm, a fixed random projection and two entries."""
    return {"norm": g.norm().item(), "proj": (g * fixed(g.shape, 99)).sum().item(),
            "g00": g[0, 0].item(), "g37": g[3, 7].item()}
