"""The training loop: exact resume after an interruption, and a clear stop on a non-finite loss."""
import pytest
import torch

from tekapbench.data import DataOptions, load_dataset
from tekapbench.engine.recipe import resolve_recipe
from tekapbench.engine.trainer import Trainer, TrainJob
from tekapbench.errors import TrainingDivergedError
from tekapbench.engine.objective import MethodSpec, TermSpec
from tekapbench.methods.crd import CRDParams
from tekapbench.methods.kd import KDParams
from tekapbench.models import create_model
from tekapbench.modifiers import TeKAPSettings

# TeKAP (F+L): CRD with feature-level TeKAP plus KD with logit-level TeKAP: exercises every random source
# (data order, augmentation, TeKAP noise, CRD negatives) and every piece of state (optimizer, CRD memory).
FL = MethodSpec(ce_weight=1.0, terms=(
    TermSpec("crd", 0.8, CRDParams(feat_dim=16, nce_k=64), TeKAPSettings(level="feature")),
    TermSpec("kd", 1.0, KDParams(), TeKAPSettings(level="logit")),
))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", DataOptions(root="unused"))


def make_job(tmp_path, data, *, epochs=3, lr=None, callbacks=()):
    torch.manual_seed(7)
    teacher = create_model("resnet8_tiny", data.num_classes)
    recipe = resolve_recipe("digits", "resnet8_tiny", {"epochs": epochs, "milestones": [1], "lr": lr})
    return TrainJob(run_id="test", arch="resnet8_tiny", recipe=recipe, seed=3, method=FL, data=data,
                    workdir=tmp_path, device=torch.device("cpu"), teacher=teacher, callbacks=list(callbacks))


class Interrupt(Exception):
    pass


def stop_after(epoch):
    def callback(entry):
        if entry["epoch"] == epoch:
            raise Interrupt
    return callback


def without_timing(history):
    return [{k: v for k, v in e.items() if k != "seconds"} for e in history]


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path, digits):
    straight = Trainer(make_job(tmp_path / "a", digits))
    straight.fit()

    interrupted = Trainer(make_job(tmp_path / "b", digits, callbacks=[stop_after(2)]))
    with pytest.raises(Interrupt):
        interrupted.fit()
    resumed = Trainer(make_job(tmp_path / "b", digits))
    assert resumed.try_resume() and resumed.start_epoch == 3
    resumed.fit()

    assert without_timing(resumed.history) == without_timing(straight.history)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    for key, value in straight.objective.state_dict().items():
        assert torch.equal(value, resumed.objective.state_dict()[key]), key
    final = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    assert set(final) >= {"model", "arch"}


def test_a_checkpoint_of_another_run_is_set_aside_not_used(tmp_path, digits, caplog):
    Trainer(make_job(tmp_path, digits, epochs=1)).fit()
    job = make_job(tmp_path, digits, epochs=1)
    job.run_id = "other"
    assert not Trainer(job).try_resume()  # trains from scratch
    assert "belongs to another run" in caplog.text and "checkpoint.pt.set-aside-1" in caplog.text
    assert (tmp_path / "checkpoint.pt.set-aside-1").exists() and not (tmp_path / "checkpoint.pt").exists()


def test_a_non_finite_loss_stops_training_with_a_clear_error(tmp_path, digits):
    trainer = Trainer(make_job(tmp_path, digits, epochs=2, lr=1e30))
    with pytest.raises(TrainingDivergedError, match="not finite at epoch 1"):
        trainer.fit()
    assert not (tmp_path / "model.pt").exists()


def test_history_records_last_and_best_epoch(tmp_path, digits):
    trainer = Trainer(make_job(tmp_path, digits, epochs=2))
    metrics = trainer.fit()
    accs = [e["test_acc"] for e in trainer.history]
    assert metrics["test_acc_last"] == accs[-1]
    assert metrics["test_acc_best"] == max(accs)
    assert set(trainer.history[0]["loss_terms"]) == {"ce", "crd+tekap", "kd+tekap"}
    assert trainer.history[1]["lr"] == pytest.approx(0.1 * trainer.history[0]["lr"])


def test_a_checkpoint_trained_with_other_teacher_weights_is_set_aside_and_the_run_starts_over(tmp_path, digits,
                                                                                               caplog):
    """A teacher trained again (--force after an interrupted suite) with other weights: its student starts
    over with the teacher it has now, instead of failing on every later run."""
    job = make_job(tmp_path, digits, epochs=2, callbacks=[stop_after(1)])
    job.teacher_sha256 = "a" * 64
    with pytest.raises(Interrupt):
        Trainer(job).fit()
    job = make_job(tmp_path, digits, epochs=2)
    job.teacher_sha256 = "b" * 64
    trainer = Trainer(job)
    assert not trainer.try_resume() and trainer.start_epoch == 1
    assert "other teacher weights" in caplog.text
    trainer.fit()
    assert [e["epoch"] for e in trainer.history] == [1, 2]


@pytest.mark.parametrize("damage", [b"", b"garbage", "truncated"])
def test_a_damaged_checkpoint_is_named_set_aside_and_the_run_resumes_from_the_one_before(tmp_path, digits, caplog,
                                                                                          damage):
    straight = Trainer(make_job(tmp_path / "a", digits))
    straight.fit()
    with pytest.raises(Interrupt):
        Trainer(make_job(tmp_path / "b", digits, callbacks=[stop_after(2)])).fit()
    checkpoint = tmp_path / "b" / "checkpoint.pt"
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2] if damage == "truncated" else damage)
    resumed = Trainer(make_job(tmp_path / "b", digits))
    assert resumed.try_resume() and resumed.start_epoch == 2  # from epoch 1's checkpoint, kept beside
    assert str(checkpoint) in caplog.text and "set-aside-1" in caplog.text
    resumed.fit()
    assert without_timing(resumed.history) == without_timing(straight.history)
    assert not (tmp_path / "b" / "checkpoint.prev.pt").exists()  # removed once the run is complete


def test_both_checkpoints_damaged_start_the_run_over(tmp_path, digits, caplog):
    with pytest.raises(Interrupt):
        Trainer(make_job(tmp_path, digits, callbacks=[stop_after(2)])).fit()
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (tmp_path / name).write_bytes(b"\x00" * 10)
    trainer = Trainer(make_job(tmp_path, digits))
    assert not trainer.try_resume() and trainer.start_epoch == 1
    assert caplog.text.count("set-aside-1") == 2


def test_weights_made_non_finite_by_the_last_update_stop_training(tmp_path, digits, monkeypatch):
    """The loss is checked before each update; the last update of an epoch (one step per epoch, or a huge
    lr) is checked on the weights it made, so NaN weights are never checkpointed or recorded."""
    trainer = Trainer(make_job(tmp_path, digits, epochs=1))
    step, steps, taken = trainer.optimizer.step, len(trainer.train_loader), []

    def poisoned_step(*args, **kwargs):  # the epoch's last update overflows
        step(*args, **kwargs)
        taken.append(1)
        if len(taken) == steps:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))

    monkeypatch.setattr(trainer.optimizer, "step", poisoned_step)
    with pytest.raises(TrainingDivergedError, match="weights are not finite after the epoch's last update"):
        trainer.fit()
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "model.pt").exists()


def test_a_cpu_run_never_resumes_with_another_thread_count(tmp_path, digits):
    from tekapbench.errors import UsageError

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        trainer = Trainer(make_job(tmp_path, digits, callbacks=[stop_after(1)]))
        with pytest.raises(Interrupt):
            trainer.fit()
        assert trainer.history[0]["cpu_threads"] == 1  # recorded per epoch
        torch.set_num_threads(2)
        with pytest.raises(UsageError, match="trained with 1 CPU threads, this process has 2.*--threads 1"):
            Trainer(make_job(tmp_path, digits)).try_resume()
    finally:
        torch.set_num_threads(before)


def test_devices_that_do_not_exist_are_usage_errors():
    from tekapbench.engine.runner import pick_device
    from tekapbench.errors import UsageError

    assert pick_device("cpu").type == "cpu"
    with pytest.raises(UsageError, match="not a device"):
        pick_device("foo")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA device"):
            pick_device("cuda:0")
