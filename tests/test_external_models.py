"""torchvision and timm networks under the model contract: ``torchvision.<name>`` and ``timm.<name>``
resolve through registry namespaces, build with random weights (nothing is downloaded), and give logits,
stage features, the embedding and the classifier to every method, through the real training loop."""
from __future__ import annotations

import copy
import math
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch
import torchvision
from torch import nn

from tekapbench.errors import ConfigError
from tekapbench.models import MODELS, create_model
from tekapbench.models.base import probe_shapes
from tekapbench.models.external import MissingDependencyError, adapt
from tekapbench.registry import Registry, UnknownNameError

NUM_CLASSES = 10
SIZE = 32  # the embedded digits' image size: what the training test below feeds


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Small forwards gain nothing from intra-op threads on a busy 2-core machine (see test_models.py)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def timm_or_skip():
    return pytest.importorskip("timm", reason="timm is the optional extra 'timm' (in the 'test' extra)")


# -- the registry's namespaces ------------------------------------------------------------------------

def test_a_namespace_resolves_the_names_its_library_knows_and_nothing_else():
    things: Registry[str] = Registry("thing")
    things.register("own")("registered")
    things.register_namespace("lib.", lambda rest: f"built {rest}", contains=lambda rest: rest in {"alpha", "beta"},
                              names=lambda: ["alpha", "beta"], listing="lib.list()")
    assert things.get("lib.alpha") == "built alpha" and things.get("own") == "registered"
    assert "lib.beta" in things and "own" in things
    assert "lib.gamma" not in things and "lib." not in things and "alpha" not in things and 3 not in things
    # names() and iteration stay the registered entries (each can be built as it is); namespaces apart
    assert things.names() == list(things) == ["own"] and len(things) == 1
    assert things.namespaces() == ["lib.<name>"]

    with pytest.raises(UnknownNameError) as unknown:
        things.get("lib.alpah")
    assert str(unknown.value) == ("unknown thing 'lib.alpah': 'alpah' is not a name of lib.list(); "
                                  "close matches: lib.alpha")
    assert unknown.value.allowed == ["lib.alpha"]
    with pytest.raises(UnknownNameError) as outside:
        things.get("nope")
    assert outside.value.allowed == ["own"]
    assert "allowed: own; or lib.<name> (a name of lib.list())" in str(outside.value)

    with pytest.raises(ValueError, match="registered twice"):
        things.register_namespace("lib.", str, contains=bool, names=list, listing="")
    things.register("lib.alpha")("own alpha")  # a registered entry wins over the namespace
    assert things.get("lib.alpha") == "own alpha"


def test_a_registry_without_namespaces_behaves_as_before():
    plain: Registry[int] = Registry("number")
    plain.register("one")(1)
    with pytest.raises(UnknownNameError) as unknown:
        plain.get("two")
    assert str(unknown.value) == "unknown number 'two'; allowed: one" and unknown.value.allowed == ["one"]
    assert plain.namespaces() == []


def test_torchvision_and_timm_names_resolve_without_being_listed():
    for name in ("torchvision.resnet50", "torchvision.mobilenet_v2", "torchvision.vit_b_16"):
        assert name in MODELS and callable(MODELS.get(name))  # resolving builds nothing
    assert "torchvision.resnet9999" not in MODELS and "torchvision.fasterrcnn_resnet50_fpn" not in MODELS
    assert not any(name.startswith(("torchvision.", "timm.")) for name in MODELS.names())
    assert MODELS.namespaces() == ["timm.<name>", "torchvision.<name>"]
    with pytest.raises(UnknownNameError) as unknown:
        create_model("torchvision.resnet9999", NUM_CLASSES)
    message = str(unknown.value)
    assert "'torchvision.resnet9999'" in message and "torchvision.models.list_models()" in message
    assert "close matches: " in message and "torchvision.resnet18" in unknown.value.allowed

    timm_or_skip()
    assert "timm.resnet18" in MODELS and "timm.resnet18.a1_in1k" in MODELS and "timm.resnet9999" not in MODELS
    with pytest.raises(UnknownNameError, match=r"timm.list_models\(\); close matches: .*timm.resnet18"):
        create_model("timm.resnet9999", NUM_CLASSES)


def test_timm_names_without_timm_installed_say_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'tekapbench\[timm\]'"):
        "timm.resnet18" in MODELS
    with pytest.raises(MissingDependencyError, match="optional package timm"):
        create_model("timm.resnet18", NUM_CLASSES)
    assert "torchvision.resnet18" in MODELS  # the other namespace does not need it


def test_importing_tekapbench_imports_no_timm_and_builds_no_external_model():
    code = textwrap.dedent("""
        import sys
        import tekapbench, tekapbench.models
        from tekapbench.models import MODELS, external
        assert "torchvision.resnet18" in MODELS
        assert "timm" not in sys.modules, "timm imported"
        assert not external._SPECS, "an external model was built"
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# -- the contract --------------------------------------------------------------------------------------

def library_twin(name: str) -> nn.Module:
    """The same architecture as the library builds it, without the adapter."""
    library, arch = name.split(".", 1)
    if library == "torchvision":
        return torchvision.models.get_model(arch, weights=None, num_classes=NUM_CLASSES)
    return timm_or_skip().create_model(arch, pretrained=False, num_classes=NUM_CLASSES)


@pytest.mark.parametrize("name, preacts", [
    ("torchvision.resnet18", True),  # the zoo's ImageNet ResNet forward: stem, layer1..layer4, pre-activations
    ("torchvision.mobilenet_v2", False),  # found by the shape probes: features.1, .3, .6, .13 and the last map
    ("timm.resnet10t", False),  # timm's forward_intermediates
])
def test_an_external_network_fulfils_the_contract(name, preacts):
    if name.startswith("timm."):
        timm_or_skip()
    torch.manual_seed(0)
    model = create_model(name, NUM_CLASSES).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        out = model(x)
    assert out.logits.shape == (2, NUM_CLASSES)
    head = out.head
    assert isinstance(head, nn.Linear) and head.out_features == NUM_CLASSES
    assert out.embedding.shape == (2, head.in_features)
    torch.testing.assert_close(head(out.embedding), out.logits)

    assert len(out.features) >= 4 and all(f.dim() == 4 and f.shape[0] == 2 for f in out.features)
    channels = [f.shape[1] for f in out.features]
    sides = [f.shape[2] for f in out.features]
    assert channels == sorted(channels) and channels[-1] > channels[0], channels
    assert all(a > b for a, b in zip(sides, sides[1:])), sides
    if preacts:
        assert [p.shape for p in out.preact_features] == [f.shape for f in out.features]
    else:
        assert len(out.preact_features) == 0
        with pytest.raises(IndexError, match=f"{name} exposes no pre-activation features"):
            out.preact_features[0]

    # the network itself is the library's: same state-dict keys (its checkpoints load), same function
    twin = library_twin(name).eval()
    twin.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), out.logits)

    was = model.train()
    shapes = probe_shapes(was, SIZE)
    assert model.training  # probing leaves the mode alone
    assert shapes.features == tuple(tuple(f.shape[1:]) for f in out.features)
    assert (shapes.embedding_dim, shapes.num_classes) == (head.in_features, NUM_CLASSES)


def test_a_transformer_gives_its_blocks_as_feature_grids():
    timm_or_skip()
    model = create_model("timm.test_vit", NUM_CLASSES).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 160, 160))
    assert out.logits.shape == (2, NUM_CLASSES)
    assert len(out.features) > 1 and len({f.shape for f in out.features}) == 1 and out.features[0].dim() == 4
    torch.testing.assert_close(out.head(out.embedding), out.logits)


def tiny_vit(num_classes: int = NUM_CLASSES) -> nn.Module:
    """torchvision's ViT, tiny: it takes 32x32 images only and has no feature maps."""
    return torchvision.models.VisionTransformer(image_size=SIZE, patch_size=8, num_layers=1, num_heads=2,
                                                hidden_dim=16, mlp_dim=32, num_classes=num_classes)


def test_a_network_without_feature_maps_says_so_when_indexed():
    model = adapt(tiny_vit(), "tiny_vit").eval()
    out = model(torch.randn(2, 3, SIZE, SIZE))
    assert out.logits.shape == (2, NUM_CLASSES) and out.embedding.shape == (2, 16)
    assert len(out.features) == 0 and probe_shapes(model, SIZE).features == ()
    with pytest.raises(IndexError, match="tiny_vit exposes no stage features .*FitNet"):
        out.features[2]


def test_a_network_without_a_linear_classifier_is_refused_clearly():
    with pytest.raises(Exception, match="does not end in a classification layer on a pooled embedding"):
        create_model("torchvision.squeezenet1_1", NUM_CLASSES)


def test_an_adapted_network_copies_and_pickles():
    model = create_model("torchvision.mobilenet_v3_small", NUM_CLASSES).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert type(clone) is type(model)
        torch.testing.assert_close(clone(x).logits, model(x).logits)
        assert len(clone(x).features) == len(model(x).features)


# -- suites, planning and training ------------------------------------------------------------------

SUITE = """
[suite]
name = "external"

[data]
datasets = ["digits"]

[recipe]
epochs = 1

[[pairs]]
teacher = "{teacher}"
student = "{student}"

[[methods]]
method = "kd"
{more}
"""


def write_suite(tmp_path, teacher, student="resnet8_tiny", more=""):
    path = tmp_path / "suite.toml"
    path.write_text(textwrap.dedent(SUITE).format(teacher=teacher, student=student, more=more))
    return path


def test_a_suite_names_external_architectures_and_unknown_ones_are_reported_at_their_key(tmp_path, monkeypatch):
    from tekapbench.suite.plan import plan_suite
    from tekapbench.suite.schema import read_suite

    suite = read_suite(write_suite(tmp_path, "torchvision.resnet18", "torchvision.mobilenet_v3_small"))
    assert (suite.pairs[0].teacher, suite.pairs[0].student) == ("torchvision.resnet18", "torchvision.mobilenet_v3_small")
    plan = plan_suite(write_suite(tmp_path, "torchvision.resnet18"))  # the preflight builds and probes both
    assert {spec.arch for spec in plan.runs.values()} == {"torchvision.resnet18", "resnet8_tiny"}

    with pytest.raises(ConfigError) as bad:
        read_suite(write_suite(tmp_path, "torchvision.resnet9999"))
    problems = dict(bad.value.problems)
    assert "unknown architecture 'torchvision.resnet9999'" in problems["pairs[0].teacher"]

    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ConfigError) as missing:
        read_suite(write_suite(tmp_path, "timm.resnet18"))
    assert "pip install 'tekapbench[timm]'" in dict(missing.value.problems)["pairs[0].teacher"]


def test_fitnet_with_a_network_without_stage_features_is_refused_when_planning(tmp_path, monkeypatch):
    from tekapbench.suite.plan import plan_suite

    monkeypatch.setattr(MODELS, "_namespaces", dict(MODELS._namespaces))  # undone after the test
    MODELS.register_namespace("tiny.", lambda rest: lambda num_classes: adapt(tiny_vit(num_classes), "tiny.vit"),
                              contains=lambda rest: rest == "vit", names=lambda: ["vit"], listing="nothing")
    plan_suite(write_suite(tmp_path, "tiny.vit"))  # KD reads the logits only: fine
    with pytest.raises(ConfigError) as refused:
        plan_suite(write_suite(tmp_path, "tiny.vit", more='\n[[methods]]\nmethod = "fitnet"'))
    problems = dict(refused.value.problems)
    assert "fitnet reads stage features, and tiny.vit exposes none" in problems["methods[1]"], problems


def test_one_kd_epoch_with_torchvision_networks_through_the_training_loop(tmp_path):
    from tekapbench.data import DataOptions, load_dataset
    from tekapbench.engine.objective import MethodSpec, TermSpec
    from tekapbench.engine.recipe import resolve_recipe
    from tekapbench.engine.trainer import Trainer, TrainJob
    from tekapbench.methods.kd import KDParams

    data = load_dataset("digits", DataOptions(root="unused"))
    student = "torchvision.shufflenet_v2_x0_5"  # its stage features come from the shape probes
    torch.manual_seed(0)
    teacher = create_model("torchvision.resnet18", data.num_classes)
    method = MethodSpec(ce_weight=0.1, terms=(TermSpec("kd", 0.9, KDParams()),))
    job = TrainJob(run_id="external-kd", arch=student, recipe=resolve_recipe("digits", student, {"epochs": 1}),
                   seed=0, method=method, data=data, workdir=tmp_path, device=torch.device("cpu"), teacher=teacher)
    trainer = Trainer(job)
    trainer.fit()
    (epoch,) = trainer.history
    assert math.isfinite(epoch["train_loss"]) and set(epoch["loss_terms"]) == {"ce", "kd"}
    assert all(math.isfinite(v) for v in epoch["loss_terms"].values())
    assert 0 <= epoch["test_acc"] <= 100
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert saved["arch"] == student


def test_fitnet_reads_the_stage_features_of_torchvision_networks():
    from tekapbench.methods.base import DistillContext
    from tekapbench.methods.fitnet import FitNetLoss, FitNetParams

    teacher = create_model("torchvision.resnet18", NUM_CLASSES).eval()
    student = create_model("torchvision.mobilenet_v3_small", NUM_CLASSES)
    ctx = DistillContext(student=probe_shapes(student, SIZE), teacher=probe_shapes(teacher, SIZE),
                         num_classes=NUM_CLASSES, train_labels=torch.arange(20) % NUM_CLASSES,
                         device=torch.device("cpu"))
    term = FitNetLoss(FitNetParams(), ctx)
    x = torch.randn(4, 3, SIZE, SIZE)
    with torch.no_grad():
        t = teacher(x)
    loss = term(student(x), t, None, 1)
    loss.backward()
    assert math.isfinite(loss.item())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
