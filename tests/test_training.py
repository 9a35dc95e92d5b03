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


def test_a_checkpoint_of_another_run_is_refused(tmp_path, digits):
    Trainer(make_job(tmp_path, digits, epochs=1)).fit()
    job = make_job(tmp_path, digits, epochs=1)
    job.run_id = "other"
    with pytest.raises(Exception, match="belongs to another run"):
        Trainer(job).try_resume()


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


def test_a_resume_with_other_teacher_weights_is_refused(tmp_path, digits):
    job = make_job(tmp_path, digits, epochs=2, callbacks=[stop_after(1)])
    job.teacher_sha256 = "a" * 64
    with pytest.raises(Interrupt):
        Trainer(job).fit()
    job = make_job(tmp_path, digits, epochs=2)
    job.teacher_sha256 = "b" * 64
    with pytest.raises(Exception, match="other teacher weights"):
        Trainer(job).try_resume()


def test_devices_that_do_not_exist_are_usage_errors():
    from tekapbench.engine.runner import pick_device
    from tekapbench.errors import UsageError

    assert pick_device("cpu").type == "cpu"
    with pytest.raises(UsageError, match="not a device"):
        pick_device("foo")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA device"):
            pick_device("cuda:0")
