"""ImageNet: the ImageFolder reader, the streaming loader (torchvision's augmentation, reproducible whatever
the worker count), torchvision's ResNets, the ImageNet recipe, and a suite end to end on a small fixture."""
from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision import transforms

from imagenet_fixture import FakeImageFolder, write_imagenet_fixture
from tekapbench.cli import main
from tekapbench.data import CorruptDataError, DataOptions, load_dataset
from tekapbench.data.base import LoaderSettings
from tekapbench.data.imagefolder import read_imagefolder
from tekapbench.data.stream import FolderLoader, eval_view, random_resized_crop_box, train_view
from tekapbench.engine.recipe import resolve_recipe
from tekapbench.errors import ConfigError, DataNotFoundError
from tekapbench.models import create_model
from tekapbench.models.base import load_weights
from tekapbench.suite.plan import plan_suite

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory) -> FakeImageFolder:
    """1000 classes (what ImageNet's reader requires) of one training image, validation images for 250 of
    them; written once for the module, read-only."""
    return write_imagenet_fixture(tmp_path_factory.mktemp("imagenet"), train_per_class=1, val_classes=250)


def small(tmp_path: Path, **kwargs) -> FakeImageFolder:
    return write_imagenet_fixture(tmp_path, classes=kwargs.pop("classes", 6), **kwargs)


def read_small(fake: FakeImageFolder, classes: int = 6, workers: int = 0):
    return read_imagefolder(fake.folder, name="fixture", num_classes=classes, mean=MEAN, std=STD, image_size=24,
                            workers=workers)


# ------------------------------------------------------------------------------------------------ reader
def test_reader_lists_classes_in_sorted_order_and_files_in_sorted_order(imagenet):
    data = load_dataset("imagenet", DataOptions(root=imagenet.folder.parent))
    assert data.num_classes == 1000 and list(data.class_names) == imagenet.wnids
    assert [Path(p.decode()) for p in data.train_files] == [p for p, _ in imagenet.train]
    assert data.train_labels.tolist() == [label for _, label in imagenet.train]
    assert [Path(p.decode()) for p in data.test_files] == [p for p, _ in imagenet.val]
    assert data.test_labels.tolist() == [label for _, label in imagenet.val]
    suffixes = {Path(p.decode()).suffix for p in data.train_files}
    assert suffixes == {".JPEG", ".png"}  # notes.txt is not an image
    assert data.mean == MEAN and data.std == STD and not data.in_memory
    # not the published ILSVRC-2012 counts: read, with a note that says so
    assert data.notes == (f"{imagenet.folder} holds 1,000 training and 250 validation images in 1000/250 class "
                          "folders; ImageNet has 1,281,167 and 50,000: numbers from it are not comparable with "
                          "published ones",)
    assert read_small(FakeImageFolder(imagenet.folder, [], [], []), classes=1000).notes == ()  # no published counts


def test_fingerprint_follows_the_file_list_not_the_folders_place(tmp_path):
    fake = small(tmp_path / "here")
    before = read_small(fake).fingerprint()
    (tmp_path / "here").rename(tmp_path / "there")
    moved = FakeImageFolder(tmp_path / "there" / "imagenet", fake.wnids, [], [])
    assert read_small(moved).fingerprint() == before
    file = next((moved.folder / "train" / fake.wnids[1]).iterdir())
    file.rename(file.with_name("renamed.JPEG"))
    assert read_small(moved).fingerprint() != before


def test_missing_imagenet_says_where_and_how(tmp_path):
    with pytest.raises(DataNotFoundError) as error:
        load_dataset("imagenet", DataOptions(root=tmp_path, download=True))
    message = str(error.value)
    assert str(tmp_path / "imagenet" / "train") in message
    assert "image-net.org" in message and "cannot be downloaded automatically" in message


def test_reader_errors_name_the_folder(tmp_path):
    fake = small(tmp_path, classes=5)
    with pytest.raises(CorruptDataError, match=re.escape(f"{fake.folder / 'train'} should hold 6 class folders, "
                                                         "found 5")):
        read_small(fake)
    (fake.folder / "train" / "n99999999").mkdir()
    with pytest.raises(CorruptDataError, match=re.escape(f"no images in {fake.folder / 'train' / 'n99999999'}")):
        read_small(fake)
    (fake.folder / "train" / "n99999999").rmdir()
    stranger = fake.folder / "val" / "n99999998"
    stranger.mkdir()
    with pytest.raises(CorruptDataError, match="class folders that train/ lacks: n99999998"):
        read_small(fake, classes=5)


def test_a_flat_validation_folder_is_explained(tmp_path):
    fake = small(tmp_path, classes=3)
    for path, _ in fake.val:
        path.rename(fake.folder / "val" / path.name)
        path.parent.rmdir()
    with pytest.raises(CorruptDataError, match="holds images but no class folders.*valprep.sh"):
        read_small(fake, classes=3)


def test_validation_may_lack_some_classes(tmp_path):
    fake = small(tmp_path, val_classes=4)
    data = read_small(fake)
    assert len(data.test_files) == 4 and data.test_labels.tolist() == [label for _, label in fake.val]


@pytest.mark.parametrize("workers", [0, 1])
def test_a_damaged_image_is_named_when_it_is_decoded(tmp_path, workers):
    fake = small(tmp_path)
    damaged = fake.train[5][0]
    damaged.write_bytes(b"not a jpeg")
    data = read_small(fake, workers=workers)
    loader = data.loader(True, LoaderSettings(batch_size=4), "cpu")
    with pytest.raises(CorruptDataError) as error:
        list(loader.epoch(torch.Generator().manual_seed(0)))
    assert f"cannot read the image {damaged} " in str(error.value) and "Traceback" not in str(error.value)


# ------------------------------------------------------------------------------------------ augmentation
@pytest.mark.parametrize("size", [(375, 500), (500, 333), (64, 64), (20, 400), (400, 20), (1, 1)])
def test_crop_box_draws_as_torchvision(size):
    """Same seed, same boxes: torchvision's get_params (global generator) against ours (own generator),
    including the centre-crop fallback that very long images reach. The three seeds at 375x500 are where
    an aspect ratio computed in float64 instead of torchvision's float32 rounds to another box."""
    height, width = size
    image = torch.zeros(1, height, width)
    for seed in [*range(40), 88994, 110142, 142777]:
        torch.manual_seed(seed)
        expected = transforms.RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3])
        assert random_resized_crop_box(height, width, torch.Generator().manual_seed(seed)) == tuple(expected)


def test_views_are_torchvisions_transforms(tmp_path):
    fake = small(tmp_path, classes=3)
    train_tf = transforms.Compose([transforms.RandomResizedCrop(24), transforms.RandomHorizontalFlip(),
                                   transforms.PILToTensor()])
    eval_tf = transforms.Compose([transforms.Resize(27), transforms.CenterCrop(24), transforms.PILToTensor()])
    flipped = 0
    for path, _ in fake.train:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        for seed in range(6):
            torch.manual_seed(seed)
            expected = train_tf(rgb)
            assert torch.equal(train_view(str(path), seed, 24, flip=True), expected)
            no_flip = train_view(str(path), seed, 24, flip=False)
            flipped += not torch.equal(no_flip, expected)
        assert torch.equal(eval_view(str(path), 24, 27), eval_tf(rgb))
    assert flipped > 0


def test_loader_batches_do_not_depend_on_the_worker_count(tmp_path):
    fake = small(tmp_path)
    data = read_small(fake)
    settings = LoaderSettings(batch_size=5, crop_size=24)

    def epoch(workers: int, seed: int):
        loader = FolderLoader(data.train_files, data.train_labels, batch_size=5, device="cpu", mean=MEAN, std=STD,
                              train=True, crop_size=24, workers=workers)
        return list(loader.epoch(torch.Generator().manual_seed(seed)))

    one, two = epoch(0, 0), epoch(2, 0)
    assert len(one) == 3 and [b.labels.numel() for b in one] == [5, 5, 2]
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.indices, b.indices)
    indices = torch.cat([b.indices for b in one])
    assert sorted(indices.tolist()) == list(range(12))  # a permutation of the split
    assert torch.equal(torch.cat([b.labels for b in one]), data.train_labels[indices])
    other = epoch(0, 1)
    assert not torch.equal(torch.cat([b.indices for b in other]), indices)
    assert data.loader(True, settings, "cpu").num_images == 12


def test_persistent_workers_follow_each_epoch_and_leave_the_global_generator_alone(tmp_path):
    """Two epochs from one loader (workers kept alive between them) equal those of a loader without
    workers, and torch's global generator ends in the same state whatever the worker count."""
    data = read_small(small(tmp_path))

    def two_epochs(workers: int):
        torch.manual_seed(123)
        loader = FolderLoader(data.train_files, data.train_labels, batch_size=5, device="cpu", mean=MEAN, std=STD,
                              train=True, crop_size=24, workers=workers)
        test = FolderLoader(data.test_files, data.test_labels, batch_size=5, device="cpu", mean=MEAN, std=STD,
                            train=False, crop_size=24, workers=workers)
        images = [b.images for seed in (0, 1) for b in [*loader.epoch(torch.Generator().manual_seed(seed)),
                                                         *test.epoch()]]
        return torch.cat(images), torch.get_rng_state()

    (alone, state_alone), (pooled, state_pooled) = two_epochs(0), two_epochs(2)
    assert torch.equal(alone, pooled) and torch.equal(state_alone, state_pooled)


def test_test_loader_keeps_file_order_and_normalizes(tmp_path):
    fake = small(tmp_path)
    data = read_small(fake)
    batches = list(data.loader(False, LoaderSettings(batch_size=4, crop_size=24, eval_resize=28), "cpu").epoch())
    images = torch.cat([b.images for b in batches])
    assert torch.equal(torch.cat([b.labels for b in batches]), data.test_labels)
    views = torch.stack([eval_view(str(p), 24, 28) for p, _ in fake.val]).float() / 255
    expected = (views - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.allclose(images, expected, atol=1e-5)
    picked = data.test_images_at(torch.tensor([4, 1]), LoaderSettings(batch_size=1, crop_size=24, eval_resize=28))
    assert torch.equal(picked.float() / 255, views[[4, 1]])


# ----------------------------------------------------------------------------------------------- models
@pytest.mark.parametrize("arch, reference", [("ResNet18", torchvision.models.resnet18),
                                             ("ResNet34", torchvision.models.resnet34)])
def test_resnets_are_torchvisions(arch, reference, tmp_path):
    """Same state-dict layout, so torchvision's pretrained files load as a teacher_checkpoint, and the
    same logits; features at 224: stem 112, stages 56, 28, 14, 7."""
    ours, theirs = create_model(arch, 1000), reference()
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in theirs.state_dict().items()]
    torch.save(theirs.state_dict(), tmp_path / "torchvision.pth")  # torchvision's files are bare state dicts
    load_weights(tmp_path / "torchvision.pth", ours, what="teacher")
    ours.eval(), theirs.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = ours(x)
        assert torch.allclose(out.logits, theirs(x), atol=1e-4)
    assert [tuple(f.shape[1:]) for f in out.features] == [(64, 112, 112), (64, 56, 56), (128, 28, 28),
                                                          (256, 14, 14), (512, 7, 7)]


# ----------------------------------------------------------------------------------------------- recipe
def test_imagenet_recipe_is_the_standard_one():
    recipe = resolve_recipe("imagenet", "ResNet18", {})
    assert (recipe.epochs, recipe.batch_size, recipe.lr, recipe.milestones, recipe.weight_decay) == \
        (100, 256, 0.1, (30, 60, 90), 1e-4)
    assert (recipe.crop_size, recipe.eval_resize, recipe.momentum, recipe.lr_decay) == (224, 256, 0.9, 0.1)
    assert resolve_recipe("imagenet", "ResNet18", {"batch_size": 512}).lr == pytest.approx(0.2)  # linear scaling
    assert resolve_recipe("imagenet", "ResNet18", {"crop_size": 32}).eval_resize == 37
    assert "crop_size" not in resolve_recipe("cifar100", "resnet8", {}).identity()  # CIFAR run ids unchanged


SUITE = """
[suite]
name = "{name}"
seeds = [0]
layout = "imagenet"
cpu_threads = 2

[data]
datasets = ["{dataset}"]
root = "{root}"
workers = 1

[recipe]
epochs = 1
batch_size = 128
{recipe}

[[pairs]]
teacher = "ResNet34"
student = "ResNet18"

[[methods]]
label = "KD+TeKAP (L)"
method = "kd"
weight = 0.5
ce_weight = 0.5
params = {{ temperature = 1.0 }}
tekap = {{ level = "logit" }}
{evaluations}
"""


def write_suite(tmp_path: Path, name: str, *, dataset="imagenet", root=".", recipe="crop_size = 32",
                evaluations="") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(textwrap.dedent(SUITE).format(name=name, dataset=dataset, root=root, recipe=recipe,
                                                  evaluations=evaluations))
    return path


@pytest.mark.parametrize("dataset, recipe, key", [("cifar100", "crop_size = 32", "recipe.crop_size"),
                                                  ("digits", "eval_resize = 40", "recipe.eval_resize"),
                                                  ("imagenet", "crop_padding = 4", "recipe.crop_padding"),
                                                  ("imagenet", "crop_size = 64\neval_resize = 60", "recipe.eval_resize")])
def test_crop_settings_that_cannot_apply_are_refused(tmp_path, dataset, recipe, key):
    with pytest.raises(ConfigError) as error:
        plan_suite(write_suite(tmp_path, "wrong", dataset=dataset, recipe=recipe))
    message = str(error.value)
    assert key in message and "teacher_recipe" not in message  # the teachers inherit [recipe]: said once
    assert any(why in message for why in ("read from image files (imagenet)", "held in memory",
                                          "must be at least crop_size"))


# ------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_kd_tekap_on_imagenet_files_end_to_end(imagenet, tmp_path, capsys):
    """Teacher and KD+TeKAP student trained from the streamed files; evaluations that read the test set
    stream it too, and the one that needs it in memory says so."""
    evaluations = textwrap.dedent("""
        [[evaluations]]
        name = "calibration"

        [[evaluations]]
        name = "fidelity"

        [[evaluations]]
        name = "adversarial"
        attacks = ["fgsm"]
        eps = [2.0]
        num_examples = 24

        [[evaluations]]
        name = "corruptions"
        source = "generated"
        corruptions = ["gaussian_noise"]
        severities = [1]

        [[evaluations]]
        name = "transfer"
        dataset = "digits"

        [[evaluations]]
        name = "transfer"
        dataset = "imagenet"
    """)
    suite = write_suite(tmp_path, "imagenet_e2e", root=str(imagenet.folder.parent), evaluations=evaluations)
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), "--quiet"]) == 0
    records = {r["cells"][0]["row"]: r for r in
               (json.loads(p.read_text()) for p in results.glob("imagenet_e2e/runs/*/attempt-1/record.json"))}
    assert set(records) == {"Teacher", "KD+TeKAP (L)"}
    student = records["KD+TeKAP (L)"]
    assert student["spec"]["recipe"]["crop_size"] == 32 and student["spec"]["recipe"]["eval_resize"] == 37
    assert student["data"]["train_images"] == 1000 and student["data"]["test_images"] == 250
    assert "not comparable with published ones" in student["data"]["notes"][0]
    assert student["teacher"]["arch"] == "ResNet34"
    assert 0.0 <= student["metrics"]["test_acc_last"] <= student["metrics"]["test_top5_last"] <= 100.0
    found = {}
    for path in results.glob("imagenet_e2e/runs/*/attempt-1/evaluations/*.json"):
        data = json.loads(path.read_text())
        found.setdefault(data["evaluation"], []).append(data["results"])
    for result in found["calibration"]:
        assert result["accuracy"] in {r["metrics"]["test_acc_last"] for r in records.values()}
    assert any("top1_agreement" in r for r in found["fidelity"])
    assert all(r["num_examples"] == 24 and r["results"][0]["robust_acc"] <= r["clean_acc"] for r in found["adversarial"])
    assert all("streamed from image files" in r["skipped"] for r in found["corruptions"])
    probes = [r for r in found["transfer"] if "skipped" not in r]
    assert len(probes) == 2 and all(r["dataset"] == "digits" for r in probes)  # 32x32 crops: a 32x32 target
    assert sum("read from image files" in r.get("skipped", "") for r in found["transfer"]) == 2
    capsys.readouterr()
    assert main(["table", "--results", str(results), "--format", "markdown"]) == 0
    assert "Top-1 error" in capsys.readouterr().out
