"""Golden test: KD against its official implementations, run on fixed tensors.

Expected numbers were printed by running the official code (never ours) on the tensors built below:
- github:HobbitLong/RepDistiller@b84f547c5db6a35318d4671d7d5c4de74c822403 distiller_zoo/KD.py, DistillKL.forward;
  objective ``gamma*CE + alpha*KD`` of helper/loops.py train_distill with ``-r 0.1 -a 0.9 -b 0``
  (scripts/run_cifar_distill.sh);
- github:megvii-research/mdistiller@a08d46f10d6102bd6e3f258ca5ac880b020ea259 mdistiller/distillers/KD.py,
  kd_loss and KD.forward_train with the defaults of mdistiller/engine/cfg.py (T=4, CE 0.1, KD 0.9).
"""
import pytest
import torch

from tekapbench.data.loader import Batch
from tekapbench.engine.objective import MethodSpec, Objective, TermSpec
from tekapbench.methods import METHODS
from tekapbench.methods.kd import KDParams, kd_loss

from tensors import confident_logits as logits, fixed, grad_summary, out

B, C = 8, 100


@pytest.mark.parametrize("temperature,expected", [
    (4.0, 18.547685623168945),  # RepDistiller DistillKL(4); mdistiller kd_loss(T=4): 18.547687530517578
    (2.0, 15.137947082519531),  # RepDistiller DistillKL(2); mdistiller kd_loss(T=2): 15.137947082519531
])
def test_kd_loss_equals_official(temperature, expected):
    s, t, _ = logits()
    assert kd_loss(s, t, temperature).item() == pytest.approx(expected, rel=1e-5)


def test_kd_defaults_are_the_official_ones():
    entry = METHODS.get("kd")
    # RepDistiller train_student.py --kd_T 4, run_cifar_distill.sh -r 0.1 -a 0.9; mdistiller cfg.py KD.*
    assert (KDParams().temperature, entry.ce_weight, entry.weight) == (4.0, 0.1, 0.9)


def test_kd_objective_and_student_gradient_equal_official():
    s, t, y = logits()
    entry = METHODS.get("kd")
    spec = MethodSpec(ce_weight=entry.ce_weight, terms=(TermSpec("kd", entry.weight, KDParams()),))
    zs = s.clone().requires_grad_(True)
    losses = Objective(spec, None)(out(zs), out(t), Batch(images=torch.zeros(B, 3, 4, 4), labels=y,
                                                         indices=torch.arange(B)), epoch=1)
    total = sum(losses.values())
    total.backward()
    # mdistiller KD.forward_train: loss_ce + loss_kd (RepDistiller 0.1*CE + 0.9*DistillKL: 17.605430603027344)
    assert total.item() == pytest.approx(17.605432510375977, rel=1e-5)
    assert losses["ce"].item() == pytest.approx(0.9125129580497742, rel=1e-5)  # mdistiller loss_ce
    assert losses["kd"].item() == pytest.approx(16.69291877746582, rel=1e-5)  # mdistiller loss_kd
    # d total / d student logits, official (identical in RepDistiller and mdistiller)
    expected = {"norm": 0.30303800106048584, "proj": -0.36910706758499146,
                "g00": 0.000708394218236208, "g37": 0.023498132824897766}
    got = grad_summary(zs.grad)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-8), key
