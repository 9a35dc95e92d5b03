"""The model zoo: reference state-dict layouts (so public CRD/DKD teachers load strictly) and the output contract."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tekapbench.models import MODELS, LogitsOnly, ModelOutput, create_model
from tekapbench.models.layers import ChannelShuffle
from tekapbench.registry import UnknownNameError

# the 22 CIFAR architectures of the CRD/DKD model zoo (RepDistiller's models/__init__.py)
REFERENCE_ARCHS = [
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet8x4", "resnet32x4",
    "ResNet50", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "vgg8", "vgg11", "vgg13", "vgg16", "vgg19",
    "MobileNetV2", "ShuffleV1", "ShuffleV2",
]  # fmt: skip
ALL_NAMES = MODELS.names()
# <arch>.txt (state-dict key<TAB>shape, in the order of the reference definitions) and param_counts.json,
# copied from the project's reference material so that the tests never depend on files outside the repo
ZOO = Path(__file__).parent / "fixtures" / "zoo"
NUM_CLASSES = 100



def reference_layout(arch: str) -> list[tuple[str, tuple[int, ...]]]:
    layout = []
    for line in (ZOO / f"{arch}.txt").read_text().splitlines():
        key, shape = line.split("\t")
        layout.append((key, tuple(ast.literal_eval(shape))))
    return layout


def classifier_of(model: nn.Module) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def with_trained_statistics(model: nn.Module) -> nn.Module:
    """Give BatchNorm non-default running statistics and affine parameters, so checkpoints test them too."""
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 32, 32) * 2 + 0.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model.eval()


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Batch-2 forwards gain nothing from intra-op threads, and on a busy 2-core machine two threads spinning
    on one free core make them up to ~100x slower; restore the setting for other modules."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_reference_lists_the_same_architectures() -> None:
    assert sorted(json.loads((ZOO / "param_counts.json").read_text())) == sorted(REFERENCE_ARCHS)


def test_every_reference_architecture_is_registered() -> None:
    assert set(REFERENCE_ARCHS) <= set(ALL_NAMES)
    assert {"resnet8_tiny", "resnet20_tiny"} <= set(ALL_NAMES)


@pytest.mark.parametrize("arch", REFERENCE_ARCHS)
def test_state_dict_matches_reference_layout(arch: str) -> None:
    model = create_model(arch, NUM_CLASSES)
    ours = [(key, tuple(value.shape)) for key, value in model.state_dict().items()]
    assert ours == reference_layout(arch)
    param_counts = json.loads((ZOO / "param_counts.json").read_text())
    assert sum(p.numel() for p in model.parameters()) == param_counts[arch]


@pytest.mark.parametrize("arch", REFERENCE_ARCHS)
def test_public_checkpoint_format_loads_strictly(arch: str, tmp_path: Path, images: torch.Tensor) -> None:
    torch.manual_seed(1)
    source = with_trained_statistics(create_model(arch, NUM_CLASSES))
    path = tmp_path / f"{arch}_vanilla" / "ckpt_epoch_240.pth"
    path.parent.mkdir()
    torch.save({"model": source.state_dict(), "epoch": 240}, path)

    torch.manual_seed(2)
    fresh = create_model(arch, NUM_CLASSES)
    fresh.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"], strict=True)
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(images).logits, source(images).logits)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_forward_contract(name: str, images: torch.Tensor) -> None:
    model = create_model(name, NUM_CLASSES).eval()
    with torch.no_grad():
        out = model(images)
        classifier = classifier_of(model)
        recomputed = classifier(out.embedding)
        assert isinstance(out, ModelOutput)
        assert out.logits.shape == (2, NUM_CLASSES)
        assert out.embedding.shape == (2, classifier.in_features)
        torch.testing.assert_close(recomputed, out.logits)
        assert torch.equal(LogitsOnly(model)(images), out.logits)
    assert len(out.features) == len(out.preact_features) >= 4
    for feature, preact in zip(out.features, out.preact_features):
        assert feature.dim() == 4 and feature.shape[0] == 2
        assert preact.shape == feature.shape


@pytest.mark.parametrize("name", ALL_NAMES)
def test_num_classes_sets_the_classifier(name: str) -> None:
    assert classifier_of(create_model(name, 10)).out_features == 10


@pytest.mark.parametrize(
    ("arch", "stages", "embedding_dim"),
    [
        ("resnet8x4", [(32, 32), (64, 32), (128, 16), (256, 8)], 256),
        ("wrn_40_2", [(16, 32), (32, 32), (64, 16), (128, 8)], 128),
        ("ShuffleV2", None, 1024),
        ("MobileNetV2", None, 1280),
    ],
)
def test_reference_feature_shapes(arch: str, stages, embedding_dim: int, images: torch.Tensor) -> None:
    with torch.no_grad():
        out = create_model(arch, NUM_CLASSES).eval()(images)
    if stages is not None:
        assert [tuple(f.shape[1:]) for f in out.features] == [(c, s, s) for c, s in stages]
    assert out.embedding.shape == (2, embedding_dim)


def _is_relu_of(feature: torch.Tensor, preact: torch.Tensor) -> bool:
    return torch.equal(F.relu(preact), feature)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_preact_features_follow_repdistiller(name: str, images: torch.Tensor) -> None:
    """What preact_features means per family (RepDistiller's ``preact=True``); the stem is shared by both."""
    model = with_trained_statistics(create_model(name, NUM_CLASSES))
    with torch.no_grad():
        out = model(images)
        assert out.preact_features[0] is out.features[0]
        stages = list(zip(out.features[1:], out.preact_features[1:]))
        if name.startswith("wrn"):
            # pre-activation blocks: the stage output normalized by the BN before its next ReLU
            next_bns = [model.block2.layer[0].bn1, model.block3.layer[0].bn1, model.bn1]
            for (feature, preact), bn in zip(stages, next_bns, strict=True):
                torch.testing.assert_close(preact, bn(feature))
        elif name == "MobileNetV2":  # linear bottlenecks: no final ReLU
            assert all(preact is feature for feature, preact in stages)
        elif name == "ShuffleV2":  # the reference takes the preact before the channel shuffle
            assert all(torch.equal(ChannelShuffle(2)(F.relu(preact)), feature) for feature, preact in stages)
        else:
            assert all(_is_relu_of(feature, preact) for feature, preact in stages)
            assert not any(torch.equal(feature, preact) for feature, preact in stages)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_one_training_forward_updates_each_batchnorm_once(name: str, images: torch.Tensor) -> None:
    """Pre-activation features come for free: no BatchNorm runs twice (which would skew its running stats)."""
    model = create_model(name, NUM_CLASSES).train()
    model(images)
    counts = {int(m.num_batches_tracked) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    assert counts == {1}


def test_tiny_models_are_smaller_than_resnet8() -> None:
    def count(name: str) -> int:
        return sum(p.numel() for p in create_model(name, NUM_CLASSES).parameters())

    assert count("resnet8_tiny") < count("resnet20_tiny") < count("resnet8")


def test_unknown_architecture_lists_allowed_names() -> None:
    with pytest.raises(UnknownNameError) as excinfo:
        create_model("nope", NUM_CLASSES)
    message = str(excinfo.value)
    assert "nope" in message
    assert all(name in message for name in ("resnet8x4", "wrn_40_2", "ShuffleV2", "MobileNetV2"))
    assert excinfo.value.allowed == ALL_NAMES
