"""Evaluations: hand-computed calibration and fidelity, shot groups, and attacks on a trained model."""
import math

import pytest
import torch

from tekapbench.data import DataOptions, load_dataset
from tekapbench.data.base import ImageSplits
from tekapbench.engine.recipe import resolve_recipe
from tekapbench.engine.trainer import Trainer, TrainJob
from tekapbench.evaluations import EVALUATIONS, EvalContext, Skip
from tekapbench.evaluations.adversarial import AdversarialParams, evaluation_subset
from tekapbench.evaluations.calibration import expected_calibration_error
from tekapbench.engine.objective import MethodSpec


def test_ece_matches_hand_computation():
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right); two bins: (0, .5], (.5, 1]
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4]])
    labels = torch.tensor([0, 1, 0])
    # one bin holds all three: |2/3 - 0.8| = 0.1333
    assert expected_calibration_error(probs.log(), labels, bins=2) == pytest.approx(100 * (0.8 - 2 / 3), rel=1e-5)
    # 15 bins: 0.9 -> bin (0.8667, 0.9333], 0.6 -> bin (0.5333, 0.6]
    expected = 2 / 3 * abs(0.5 - 0.9) + 1 / 3 * abs(1.0 - 0.6)
    assert expected_calibration_error(probs.log(), labels, bins=15) == pytest.approx(100 * expected, rel=1e-5)
    perfect = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).clamp_min(1e-12).log()
    assert expected_calibration_error(perfect, torch.tensor([0, 1])) == pytest.approx(0.0, abs=1e-6)


class FixedLogits(torch.nn.Module):
    """A 'model' whose outputs are given, to check evaluations against hand computations."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        from tekapbench.models.base import ModelOutput

        n = x.shape[0]
        out = self.logits[:n]
        self.logits = self.logits[n:]
        return ModelOutput(logits=out, features=(), preact_features=(), embedding=out)


def tiny_split(train_labels, test_labels, num_classes):
    n_train, n_test = len(train_labels), len(test_labels)
    return ImageSplits("toy", torch.zeros(n_train, 3, 4, 4, dtype=torch.uint8), torch.tensor(train_labels),
                       torch.zeros(n_test, 3, 4, 4, dtype=torch.uint8), torch.tensor(test_labels), num_classes,
                       (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def context(data, student_logits, teacher_logits=None):
    return EvalContext(model=FixedLogits(student_logits), data=data, device=torch.device("cpu"),
                       data_options=DataOptions(root="unused"),
                       load_teacher=(lambda: FixedLogits(teacher_logits)) if teacher_logits is not None else None)


def run(name, ctx, **settings):
    entry = EVALUATIONS.get(name)
    return entry.evaluate(ctx, entry.params(**settings))


def test_calibration_and_fidelity_by_hand():
    data = tiny_split([0, 1, 2], [0, 1, 2, 2], 3)
    student = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.5], [0.0, 0.0, 3.0]])
    teacher = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    result = run("calibration", context(data, student))
    nll = -sum(math.log(torch.softmax(row, 0)[y].item()) for row, y in zip(student, [0, 1, 2, 2])) / 4
    assert result["nll"] == pytest.approx(nll, rel=1e-5) and result["accuracy"] == 75.0
    fid = run("fidelity", context(data, student, teacher))
    assert fid["top1_agreement"] == 50.0  # agree on samples 0 and 3
    kl = sum((torch.softmax(t, 0) * (torch.log_softmax(t, 0) - torch.log_softmax(s, 0))).sum().item()
             for s, t in zip(student, teacher)) / 4
    assert fid["kl_teacher_student"] == pytest.approx(kl, rel=1e-5)
    with pytest.raises(Skip):
        run("fidelity", context(data, student))


def test_shot_groups_follow_training_counts_and_an_empty_group_is_nan():
    train = [0] * 150 + [1] * 50 + [2] * 5  # many, medium, few
    data = tiny_split(train, [0, 0, 1, 2], 3)
    logits = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0], [1.0, 0, 0]])
    result = run("shot_groups", context(data, logits))
    assert (result["many_shot"], result["medium_shot"], result["few_shot"]) == (50.0, 100.0, 0.0)
    assert result["group_sizes"] == {"many": 1, "medium": 1, "few": 1}
    balanced = run("shot_groups", context(tiny_split([0] * 200 + [1] * 200, [0, 1], 2), torch.eye(2)))
    assert math.isnan(balanced["few_shot"]) and math.isnan(balanced["medium_shot"]) and balanced["many_shot"] == 100.0


@pytest.fixture(scope="module")
def trained_digits_model(tmp_path_factory):
    data = load_dataset("digits", DataOptions(root="unused"))
    recipe = resolve_recipe("digits", "resnet8_tiny", {"epochs": 8})
    job = TrainJob(run_id="adv", arch="resnet8_tiny", recipe=recipe, seed=0, method=MethodSpec(1.0), data=data,
                   workdir=tmp_path_factory.mktemp("adv"), device=torch.device("cpu"))
    trainer = Trainer(job)
    trainer.fit()
    return trainer.model.eval(), data


def test_attacks_never_beat_clean_accuracy_and_pgd_is_stronger_than_fgsm(trained_digits_model):
    model, data = trained_digits_model
    ctx = EvalContext(model=model, data=data, device=torch.device("cpu"), data_options=DataOptions(root="unused"))
    result = run("adversarial", ctx, eps=[0.0, 4.0, 8.0], num_examples=200, attacks=["fgsm", "pgd"])
    rows = {(r["attack"], r["eps_255"]): r for r in result["results"]}
    assert result["clean_acc"] > 60  # a model worth attacking
    for attack in ("fgsm", "pgd"):
        assert rows[attack, 0.0]["robust_acc"] == result["clean_acc"]  # eps = 0 is clean accuracy
        assert rows[attack, 0.0]["attack_success_rate"] == 0.0
    for eps in (4.0, 8.0):
        assert rows["pgd", eps]["robust_acc"] <= rows["fgsm", eps]["robust_acc"] <= result["clean_acc"]
    assert rows["pgd", 8.0]["robust_acc"] <= rows["pgd", 4.0]["robust_acc"]
    assert rows["pgd", 4.0]["steps"] == 10 and rows["pgd", 4.0]["step_size_255"] == pytest.approx(1.0)
    again = run("adversarial", ctx, eps=[4.0], num_examples=200, attacks=["pgd"])
    assert again["results"][0]["robust_acc"] == rows["pgd", 4.0]["robust_acc"]  # seeded: repeats exactly


def test_the_evaluation_subset_is_fixed_by_its_seed():
    assert torch.equal(evaluation_subset(1000, 50, 0), evaluation_subset(1000, 50, 0))
    assert not torch.equal(evaluation_subset(1000, 50, 0), evaluation_subset(1000, 50, 1))
    assert len(evaluation_subset(30, 50, 0)) == 30
    with pytest.raises(Exception):
        AdversarialParams(eps=[-1.0])


# -- corruptions and transfer ---------------------------------------------------------------------------

def cifar_like(num_test=4):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (num_test, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.tensor([(11 * i + 5) % 100 for i in range(num_test)])  # the CIFAR-100-C fixture's labels
    return ImageSplits("cifar100", images, torch.arange(num_test), images, labels, 100,
                       (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))


def test_cifar100c_accuracy_is_computed_on_each_severity_slice(fake_cifar100c):
    from tekapbench.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet8_tiny", 100).eval()
    data = cifar_like()
    ctx = EvalContext(model=model, data=data, device=torch.device("cpu"),
                      data_options=DataOptions(root=fake_cifar100c.root))
    result = run("corruptions", ctx, source="files", severities=[1, 5], corruptions=["gaussian_noise", "fog"])
    assert set(result["per_corruption"]) == {"gaussian_noise", "fog"}
    mean = torch.tensor(data.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.std).view(1, 3, 1, 1)
    n = fake_cifar100c.per_severity
    for name in ("gaussian_noise", "fog"):
        for severity in (1, 5):
            rows = fake_cifar100c.images[name][(severity - 1) * n: severity * n]
            x = (torch.from_numpy(rows).permute(0, 3, 1, 2).float() / 255 - mean) / std
            with torch.no_grad():
                predicted = model(x).logits.argmax(1)
            labels = torch.from_numpy(fake_cifar100c.labels[:n])
            expected = 100.0 * (predicted == labels).sum().item() / n
            assert result["per_severity"][name][str(severity)] == pytest.approx(expected)


def test_cifar100c_skips_other_datasets_and_reports_missing_files(tmp_path, trained_digits_model):
    from tekapbench.errors import DataNotFoundError

    model, digits = trained_digits_model
    ctx = EvalContext(model=model, data=digits, device=torch.device("cpu"), data_options=DataOptions(root=tmp_path))
    with pytest.raises(Skip, match="generated"):
        run("corruptions", ctx, source="files")
    from tekapbench.models import create_model

    cifar_ctx = EvalContext(model=create_model("resnet8_tiny", 100).eval(), data=cifar_like(), device=torch.device("cpu"),
                            data_options=DataOptions(root=tmp_path))
    with pytest.raises(DataNotFoundError, match="CIFAR-100-C"):
        run("corruptions", cifar_ctx, source="files")


def test_generated_corruptions_follow_the_published_formulas_and_repeat():
    from tekapbench.evaluations.corruptions import GENERATED

    x = torch.tensor([[[[0.2, 0.4], [0.6, 0.8]]]]).repeat(1, 3, 1, 1)
    contrast = GENERATED.get("contrast")(x, 5, torch.Generator())
    assert torch.allclose(contrast, (x - 0.5) * 0.15 + 0.5)
    noisy = [GENERATED.get("gaussian_noise")(x, 3, torch.Generator().manual_seed(1)) for _ in range(2)]
    assert torch.equal(noisy[0], noisy[1]) and not torch.equal(noisy[0], x)
    assert (noisy[0] - x).std().item() == pytest.approx(0.08, rel=0.9)


def test_linear_probe_fits_separable_features_and_transfer_runs_on_stl10_files(fake_stl10):
    from tekapbench.evaluations.transfer import TransferParams, fit_linear_probe
    from tekapbench.models import create_model

    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=g)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    probe, fit = fit_linear_probe(x, y, 4, TransferParams(weight_decay=0.0))
    assert fit["iterations"] > 0
    assert (probe(x).argmax(1) == y).all()
    # the stored loss is the objective at the fitted probe, not L-BFGS's first evaluation (ln 4 from zero)
    with torch.no_grad():
        assert fit["final_loss"] == pytest.approx(torch.nn.functional.cross_entropy(probe(x), y).item(), rel=1e-6)
    assert fit["final_loss"] < 0.5 * math.log(4)

    torch.manual_seed(0)
    ctx = EvalContext(model=create_model("resnet8_tiny", 100).eval(), data=cifar_like(), device=torch.device("cpu"),
                      data_options=DataOptions(root=fake_stl10.root))
    result = run("transfer", ctx, dataset="stl10")
    assert result["test_images"] == len(fake_stl10.test_labels) and result["feature_dim"] == 32
    assert 0 <= result["accuracy"] <= 100 and result["probe"]["weight_decay"] == 1e-4


def test_autoattack_runs_seeded_and_never_beats_clean(trained_digits_model):
    model, data = trained_digits_model
    ctx = EvalContext(model=model, data=data, device=torch.device("cpu"), data_options=DataOptions(root="unused"))
    results = [run("adversarial", ctx, eps=[8.0], num_examples=16, attacks=["autoattack"]) for _ in range(2)]
    row = results[0]["results"][0]
    assert row["robust_acc"] <= results[0]["clean_acc"] and row["steps"] == 100 and row["target_classes"] == 9
    assert results[0] == results[1]


def test_absent_cifar100c_is_a_note_and_the_other_evaluations_are_stored(tmp_path, make_cifar100, capsys,
                                                                          monkeypatch):
    from tekapbench.cli import main

    make_cifar100(tmp_path / "data", n_train=40, n_test=20)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text("""
[suite]
name = "c"
[data]
datasets = ["cifar100"]
[recipe]
epochs = 1
[[pairs]]
teacher = "resnet8_tiny"
student = "resnet8_tiny"
[[methods]]
label = "Student"
method = "vanilla"
[[evaluations]]
name = "corruptions"
[[evaluations]]
name = "calibration"
""")
    assert main(["run", "s.toml"]) == 0
    assert "corruptions of cifar100 resnet8_tiny" in capsys.readouterr().err
    stored = [p.name for p in tmp_path.glob("results/c/runs/*/attempt-1/evaluations/*.json")]
    assert len(stored) == 1 and stored[0].startswith("calibration")


def test_cifar100c_mean_covers_the_15_standard_corruptions_only_and_needs_them_all(tmp_path, make_cifar100c):
    from tekapbench.data.cifar100c import CORRUPTIONS, EXTRA_CORRUPTIONS
    from tekapbench.errors import DataNotFoundError
    from tekapbench.models import create_model

    make_cifar100c(tmp_path, corruptions=CORRUPTIONS[:14] + EXTRA_CORRUPTIONS[:1], per_severity=4)
    ctx = EvalContext(model=create_model("resnet8_tiny", 100).eval(), data=cifar_like(), device=torch.device("cpu"),
                      data_options=DataOptions(root=tmp_path))
    with pytest.raises(DataNotFoundError, match=CORRUPTIONS[14]):
        run("corruptions", ctx, source="files", severities=[1])
    make_cifar100c(tmp_path, corruptions=CORRUPTIONS[14:], per_severity=4)
    result = run("corruptions", ctx, source="files", severities=[1])
    assert result["corruptions"] == list(CORRUPTIONS) and EXTRA_CORRUPTIONS[0] not in result["per_corruption"]


def test_contrast_uses_a_mean_per_channel():
    from tekapbench.evaluations.corruptions import GENERATED

    x = torch.stack([torch.full((2, 2), 0.2), torch.full((2, 2), 0.8), torch.tensor([[0.0, 1.0], [0.0, 1.0]])])[None]
    out = GENERATED.get("contrast")(x, 1, torch.Generator())
    assert torch.allclose(out[0, 0], torch.full((2, 2), 0.2)) and torch.allclose(out[0, 1], torch.full((2, 2), 0.8))
    assert torch.allclose(out[0, 2], (x[0, 2] - 0.5) * 0.75 + 0.5)


def test_attack_success_rate_counts_only_initially_correct_images():
    from tekapbench.evaluations.adversarial import attack_rows
    from tekapbench.evaluations.base import NormalizedLogits

    class Threshold(torch.nn.Module):  # class 1 when the mean pixel exceeds 0.5
        def forward(self, x):
            from tekapbench.models.base import ModelOutput

            score = x.mean(dim=(1, 2, 3)) * 0.5 + 0.5 - 0.5  # undo normalization (mean 0.5, std 0.5)
            logits = torch.stack([-score, score], 1) * 100
            return ModelOutput(logits=logits, features=(), preact_features=(), embedding=logits)

    model = NormalizedLogits(Threshold(), (0.5,) * 3, (0.5,) * 3)
    images = torch.stack([torch.full((3, 2, 2), v) for v in (0.52, 0.9, 0.1, 0.48)])
    labels = torch.tensor([1, 1, 0, 1])  # the last one is wrong before any attack
    clean, rows = attack_rows(model, images, labels, AdversarialParams(attacks=["fgsm"], eps=[8.0]), 4, 2)
    assert clean == 75.0
    # FGSM at 8/255 flips 0.52 (to 0.489) but neither 0.9 nor 0.1; 0.48 would flip to right but stays wrong
    assert rows[0]["robust_acc"] == 50.0 and rows[0]["attack_success_rate"] == pytest.approx(100 / 3)


def test_autoattack_on_fewer_than_10_classes():
    from tekapbench.evaluations.adversarial import attack_rows
    from tekapbench.evaluations.base import NormalizedLogits
    from tekapbench.models import create_model

    torch.manual_seed(0)
    model = NormalizedLogits(create_model("resnet8_tiny", 5), (0.5,) * 3, (0.5,) * 3).eval()
    x = torch.rand(6, 3, 32, 32)
    y = model(x).argmax(1)
    clean, rows = attack_rows(model, x, y, AdversarialParams(attacks=["autoattack"], eps=[8.0], autoattack_steps=5), 6, 5)
    assert clean == 100.0 and rows[0]["target_classes"] == 4 and rows[0]["robust_acc"] <= clean


def test_probe_ignores_features_constant_on_the_train_split():
    from tekapbench.evaluations.transfer import transfer

    class DeadChannel(torch.nn.Module):
        def forward(self, x):
            from tekapbench.models.base import ModelOutput

            signal = x.mean(dim=(1, 2, 3), keepdim=False)[:, None]
            emb = torch.cat([signal, torch.zeros_like(signal)], 1)
            return ModelOutput(logits=emb, features=(), preact_features=(), embedding=emb)

    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (40, 3, 4, 4), dtype=torch.uint8, generator=g)
    test = train.clone()
    test[:, 0, 0, 0] = 255  # would light up a 'dead' feature only on test if it were not constant
    target = ImageSplits("t", train, (train.float().mean(dim=(1, 2, 3)) > 127.5).long(), test,
                         (test.float().mean(dim=(1, 2, 3)) > 127.5).long(), 2, (0.5,) * 3, (0.5,) * 3)
    ctx = EvalContext(model=DeadChannel(), data=target, device=torch.device("cpu"), data_options=DataOptions(root="x"),
                      datasets=lambda name: target)
    entry = EVALUATIONS.get("transfer")
    result = transfer(ctx, entry.params.model_construct(dataset="t", weight_decay=1e-4, max_iter=100))
    assert result["features_used"] == 1 and result["accuracy"] >= 90
