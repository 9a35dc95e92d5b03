"""No file tekapbench reads may run code: a crafted pickle (teacher checkpoint, resume checkpoint, CIFAR file)
is refused with a message naming the file, and what it asked to run never runs."""
from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from one_epoch import SUITE as ONE_EPOCH_SUITE
from tekapbench.cli import main
from tekapbench.data import DataOptions, load_dataset
from tekapbench.data._files import CorruptDataError, UnsafeDataError
from tekapbench.engine.objective import MethodSpec
from tekapbench.engine.recipe import resolve_recipe
from tekapbench.engine.trainer import Trainer, TrainJob, plain_data
from tekapbench.errors import UnsafeFileError, UsageError
from tekapbench.models import create_model
from tekapbench.models.base import load_weights
from tekapbench.models.checkpoints import read_state_dict, read_torch_file, read_weights, sha256_of

VANILLA = MethodSpec(ce_weight=1.0, terms=())


class Payload:
    """Unpickled, it writes ``marker``: what a crafted checkpoint would do with os.system & co."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def assert_refused(info: pytest.ExceptionInfo, path: Path, marker: Path) -> str:
    message = str(info.value)
    assert str(path) in message, message
    assert "arbitrary code" in message, message
    assert not marker.exists(), "the payload ran"
    assert isinstance(info.value, UnsafeFileError) and info.value.exit_code == 2
    return message


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", DataOptions(root="unused"))


def test_the_payload_really_runs_when_unpickled_unsafely(tmp_path):
    """The malicious files of these tests are real: loading one without weights_only runs it."""
    marker = tmp_path / "pwned"
    torch.save({"model": Payload(marker)}, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.read_text() == "pwned"


# -------------------------------------------------------------------------------- teacher checkpoints

@pytest.mark.parametrize("content", ["dict", "bare", "legacy"])
def test_a_malicious_teacher_checkpoint_is_refused(tmp_path, content):
    marker, path = tmp_path / "pwned", tmp_path / "teacher.pth"
    state = create_model("resnet8_tiny", 10).state_dict()
    if content == "dict":
        torch.save({"model": state, "best_acc": Payload(marker)}, path)
    elif content == "bare":
        torch.save(Payload(marker), path)
    else:  # the pre-1.6 format the RepDistiller zoo was saved in
        torch.save({"model": state, "epoch": Payload(marker)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeFileError) as info:
        read_state_dict(path, "teacher checkpoint of resnet8_tiny")
    message = assert_refused(info, path, marker)
    assert "builtins.exec" in message or "exec" in message  # what it asked for
    assert "Accepted:" in message and "'model'" in message  # and what would be read
    with pytest.raises(UnsafeFileError):
        load_weights(path, create_model("resnet8_tiny", 10), what="teacher")
    assert not marker.exists()


def test_a_whole_pickled_model_is_refused_with_the_way_to_save_weights(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(create_model("resnet8_tiny", 10), path)
    with pytest.raises(UnsafeFileError, match=r"state_dict\(\)") as info:
        read_state_dict(path, "teacher")
    assert str(path) in str(info.value)


def test_a_malicious_teacher_checkpoint_in_a_suite_is_refused_at_planning(tmp_path, capsys):
    marker, path = tmp_path / "pwned", tmp_path / "teacher.pth"
    torch.save({"model": Payload(marker)}, path)
    suite = tmp_path / "suite.toml"
    suite.write_text(ONE_EPOCH_SUITE.format(name="evil", pair=f'teacher_checkpoint = "{path}"',
                                            method='method = "vanilla"'))
    assert main(["run", str(suite), "--results", str(tmp_path / "results"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "arbitrary code" in err
    assert not marker.exists()


def model_state(prefix: str = "") -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {prefix + k: v for k, v in create_model("resnet8_tiny", 10).state_dict().items()}


@pytest.mark.parametrize("wrap", [
    lambda sd: {"model": sd, "epoch": 240, "best_acc": torch.tensor(71.2)},  # RepDistiller / CRD / DKD zoo
    lambda sd: {"net": sd},
    lambda sd: {"state_dict": sd, "optimizer": {"lr": 0.1}},
    lambda sd: sd,  # bare: torchvision's files
    lambda sd: {"model": sd, "best_acc": np.float64(73.3), "epoch": np.int64(240)},  # numpy metadata: plain data
], ids=["model", "net", "state_dict", "bare", "numpy-metadata"])
@pytest.mark.parametrize("prefix", ["", "module."], ids=["plain", "dataparallel"])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_every_accepted_format_loads_into_a_model(tmp_path, wrap, prefix, legacy):
    path = tmp_path / "teacher.pth"
    torch.save(wrap(model_state(prefix)), path, _use_new_zipfile_serialization=not legacy)
    model = create_model("resnet8_tiny", 10)
    sha256 = load_weights(path, model, what="teacher")
    assert sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    for key, value in model_state().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert read_weights(path, "teacher").sha256 == sha256


def test_nested_dataparallel_prefixes_are_stripped_and_others_kept(tmp_path):
    path = tmp_path / "teacher.pth"
    torch.save({"model": model_state("module.module.")}, path)
    assert set(read_state_dict(path, "teacher")) == set(model_state())
    torch.save({"model": {"module.a": torch.ones(1), "b": torch.ones(1)}}, path)  # not all prefixed: as is
    assert set(read_state_dict(path, "teacher")) == {"module.a", "b"}


def test_a_checkpoint_without_a_state_dict_names_what_it_found(tmp_path):
    path = tmp_path / "teacher.pth"
    torch.save({"epoch": 3, "weights": [1, 2]}, path)
    with pytest.raises(UsageError, match="holds no state dict") as info:
        read_state_dict(path, "teacher")
    assert "'epoch'" in str(info.value) and not isinstance(info.value, UnsafeFileError)


def test_damaged_and_missing_files_are_usage_errors_naming_the_file(tmp_path):
    path = tmp_path / "teacher.pth"
    torch.save({"model": model_state()}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UsageError, match="not a readable PyTorch checkpoint"):
        read_state_dict(path, "teacher")
    path.write_bytes(b"")
    with pytest.raises(UsageError, match="is empty"):
        read_state_dict(path, "teacher")
    with pytest.raises(UsageError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pth", "teacher")
    with pytest.raises(UsageError, match="is a folder"):
        read_state_dict(tmp_path, "teacher")


def test_sha256_of_is_hashlibs(tmp_path):
    path = tmp_path / "blob"
    data = np.random.default_rng(0).integers(0, 256, size=3 * (1 << 20) + 17, dtype=np.uint8).tobytes()
    path.write_bytes(data)  # more than one chunk, and a partial last one
    assert sha256_of(path) == hashlib.sha256(data).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_of(empty) == hashlib.sha256(b"").hexdigest()


# -------------------------------------------------------------------------------- resume checkpoints

def make_job(workdir: Path, data, *, epochs: int = 1, callbacks=()) -> TrainJob:
    recipe = resolve_recipe("digits", "resnet8_tiny", {"epochs": epochs, "milestones": [1]})
    return TrainJob(run_id="safe", arch="resnet8_tiny", recipe=recipe, seed=1, method=VANILLA, data=data,
                    workdir=workdir, device=torch.device("cpu"), callbacks=list(callbacks))


def test_a_malicious_resume_checkpoint_is_refused_not_run(tmp_path, digits):
    marker, workdir = tmp_path / "pwned", tmp_path / "attempt-1"
    trainer = Trainer(make_job(workdir, digits))
    workdir.mkdir()
    # what tekapbench writes, with one entry more: a crafted file next to a real run's results
    torch.save({"format": 1, "run_id": "safe", "teacher_sha256": None, "epoch": 1, "history": [],
                "model": trainer.model.state_dict(), "objective": {}, "optimizer": {}, "x": Payload(marker)},
               trainer.checkpoint_path)
    with pytest.raises(UnsafeFileError) as info:
        trainer.try_resume()
    message = assert_refused(info, trainer.checkpoint_path, marker)
    assert "Delete it to train run safe from scratch" in message
    assert trainer.start_epoch == 1


def test_a_malicious_resume_checkpoint_fails_its_run_in_tekapbench_run(tmp_path, capsys):
    """The attack as reported: a checkpoint.pt dropped into a shared results folder, then `tekapbench run`."""
    from tekapbench.suite.plan import plan_suite

    marker = tmp_path / "pwned"
    suite = tmp_path / "suite.toml"
    suite.write_text(ONE_EPOCH_SUITE.format(name="shared", pair="", method='method = "vanilla"'))
    plan = plan_suite(suite)
    teacher = next(c.run_id for c in plan.cells if c.row == "Teacher")
    planted = tmp_path / "results" / "shared" / "runs" / teacher / "attempt-1" / "checkpoint.pt"
    planted.parent.mkdir(parents=True)
    torch.save({"format": 1, "run_id": teacher, "epoch": 1, "x": Payload(marker)}, planted)
    assert main(["run", str(suite), "--results", str(tmp_path / "results"), "--quiet"]) != 0
    assert not marker.exists()
    err = capsys.readouterr().err
    assert str(planted) in err and "arbitrary code" in err
    failure = json.loads((tmp_path / "results" / "shared" / "runs" / teacher / "failure.json").read_text()) \
        if (tmp_path / "results" / "shared" / "runs" / teacher / "failure.json").exists() else None
    if failure is not None:
        assert str(planted) in failure["error"]


def test_the_trainers_checkpoint_is_plain_data_and_resumes(tmp_path, digits):
    """What the trainer writes, torch's safe loader reads as it is (test_training.py checks that a resumed
    run ends exactly as an uninterrupted one)."""
    trained = Trainer(make_job(tmp_path, digits))
    trained.fit()
    path = trained.checkpoint_path
    state = torch.load(path, weights_only=True)
    assert set(state) == {"format", "run_id", "teacher_sha256", "epoch", "cpu_threads", "model", "objective", "optimizer",
                          "history"}
    assert state["epoch"] == 1 and torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    content, sha256 = read_torch_file(path, "resume checkpoint")
    assert sha256 == sha256_of(path) and content["run_id"] == "safe"

    resumed = Trainer(make_job(tmp_path, digits))
    assert resumed.try_resume() and resumed.start_epoch == 2 and resumed.history == trained.history
    for key, value in trained.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert resumed.optimizer.state_dict()["state"].keys() == trained.optimizer.state_dict()["state"].keys()


def test_a_resume_checkpoint_of_another_shape_is_set_aside_not_used(tmp_path, digits, caplog):
    trainer = Trainer(make_job(tmp_path, digits))
    torch.save({"model": trainer.model.state_dict()}, trainer.checkpoint_path)  # e.g. a model.pt copied over
    assert not trainer.try_resume() and trainer.start_epoch == 1  # trains from scratch
    assert "not a resume checkpoint of tekapbench" in caplog.text and str(trainer.checkpoint_path) in caplog.text
    assert (tmp_path / "checkpoint.pt.set-aside-1").exists()  # moved, never deleted


def test_a_checkpoint_that_could_not_be_read_back_is_not_written():
    assert plain_data({"history": [{"lr": 0.1, "terms": {"ce": 2.0}}], "w": torch.ones(2), "n": None})
    with pytest.raises(TypeError, match=r"checkpoint\['history'\]\[0\]\['acc'\] is a numpy"):
        plain_data({"history": [{"acc": np.float64(1.0)}]})


# -------------------------------------------------------------------------------- dataset pickles

def test_a_malicious_cifar100_file_is_refused_not_run(tmp_path, make_cifar100):
    fake = make_cifar100(tmp_path)
    marker, path = tmp_path / "pwned", fake.folder / "train"
    with path.open("wb") as f:
        pickle.dump({"data": Payload(marker), "fine_labels": [1]}, f, protocol=2)
    with pytest.raises(UnsafeDataError) as info:
        load_dataset("cifar100", DataOptions(root=tmp_path))
    message = assert_refused(info, path, marker)
    assert "builtins.exec" in message
    assert isinstance(info.value, CorruptDataError)  # readers and the CLI treat it as unusable data


def test_cifar100_files_with_numpys_older_names_still_read(tmp_path, make_cifar100):
    """The official files (written by Python 2 and numpy 1) name numpy.core.multiarray, not numpy._core."""
    fake = make_cifar100(tmp_path)
    for name in ("train", "test"):
        path = fake.folder / name
        path.write_bytes(path.read_bytes().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))
    splits = load_dataset("cifar100", DataOptions(root=tmp_path))
    assert splits.train_images.shape[0] == len(fake.train_labels)
    assert torch.equal(splits.train_images.reshape(len(fake.train_labels), -1),
                       torch.from_numpy(fake.train_data))
