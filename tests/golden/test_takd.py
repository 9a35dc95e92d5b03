"""Golden test: TAKD against its official implementation, run on fixed tensors.

Expected numbers were printed by running the official trainer unchanged,
github:imirzadeh/Teacher-Assistant-Knowledge-Distillation@0f8168f4e7223134361cdd411eba0ab3b1123e29 train.py,
TrainManager.train (one step: ``loss = (1 - lambda_) * CE + lambda_ * T * T * nn.KLDivLoss()(log_softmax(s / T),
softmax(t / T))``), on the tensors built below, with stand-in networks that return these logits; the loss is
the tensor it back-propagates and the gradient the student logits' ``.grad`` after that backward. ``lambda_``
and ``T`` come from NNI there (search_space.json); lambda = 1 isolates the distillation term (T^2 * KL).
"""
import pytest
import torch

from tekapbench.data.loader import Batch
from tekapbench.engine.objective import MethodSpec, Objective, TermSpec
from tekapbench.methods import METHODS
from tekapbench.methods.kd import kd_loss

from tensors import confident_logits as logits, fixed, grad_summary, out

B, C = 8, 100  # CIFAR-100's classes: the official KL is averaged over them as well


def run_objective(ce_weight, weight, **params):
    s, t, y = logits()
    spec = MethodSpec(ce_weight=ce_weight, terms=(TermSpec("takd", weight, METHODS.get("takd").params(**params)),))
    zs = s.clone().requires_grad_(True)
    losses = Objective(spec, None)(out(zs), out(t), Batch(images=torch.zeros(B, 3, 4, 4), labels=y,
                                                         indices=torch.arange(B)), epoch=1)
    total = sum(losses.values())
    total.backward()
    return total.item(), grad_summary(zs.grad)


def test_takd_defaults_are_the_authors_values():
    entry = METHODS.get("takd")
    params = entry.params()
    # lambda_student = 0.15, T_student = 5: the author's values for resnet110 -> resnet20 -> resnet8 on CIFAR-100,
    # github.com/imirzadeh/Teacher-Assistant-Knowledge-Distillation/issues/7 (the code leaves both to NNI)
    assert (entry.ce_weight, entry.weight, params.temperature) == (0.85, 0.15, 5.0)
    assert params.behaviour == "official" and entry.teachers == "chain"


@pytest.mark.parametrize("temperature,expected", [
    (5.0, 0.18537065386772156),  # official TrainManager.train, lambda_student=1.0, T_student=5
    (2.0, 0.15137946605682373),  # official TrainManager.train, lambda_student=1.0, T_student=2
    (10.0, 0.1818789541721344),  # official TrainManager.train, lambda_student=1.0, T_student=10
])
def test_takd_term_equals_official(temperature, expected):
    total, _ = run_objective(0.0, 1.0, temperature=temperature)
    assert total == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("lam,temperature,expected,grad", [
    # official TrainManager.train, lambda_student=0.15, T_student=5 (our defaults)
    (0.15, 5.0, 7.78416633605957, {"norm": 0.3371659815311432, "proj": 0.014275267720222473,
                                   "g00": 1.91485878531239e-06, "g37": 0.05164249986410141}),
    # official TrainManager.train, lambda_student=0.5, T_student=2
    (0.5, 2.0, 4.638254642486572, {"norm": 0.1992935836315155, "proj": 0.006837420165538788,
                                   "g00": 7.030370738903002e-07, "g37": 0.03053146041929722}),
    # official TrainManager.train, lambda_student=0.4, T_student=10
    (0.4, 10.0, 5.547829627990723, {"norm": 0.2381950169801712, "proj": 0.009276092052459717,
                                    "g00": 6.029632004356245e-06, "g37": 0.03648144006729126}),
])
def test_takd_objective_and_student_gradient_equal_official(lam, temperature, expected, grad):
    entry = METHODS.get("takd")
    if (lam, temperature) == (0.15, 5.0):  # the registered defaults
        ce_weight, weight, params = entry.ce_weight, entry.weight, {}
    else:
        ce_weight, weight, params = 1 - lam, lam, {"temperature": temperature}
    total, got = run_objective(ce_weight, weight, **params)
    assert total == pytest.approx(expected, rel=1e-5)
    for key, value in grad.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-9), key


def test_takd_paper_form_is_the_kl_summed_over_classes():
    """behaviour = "paper": tau^2 KL(p_t || p_s) per sample, batch mean (no division by the classes)."""
    s, t, _ = logits()
    official, _ = run_objective(0.0, 1.0, temperature=2.0)
    paper, _ = run_objective(0.0, 1.0, temperature=2.0, behaviour="paper")
    assert paper == pytest.approx(official * C, rel=1e-5)
    assert paper == pytest.approx(kd_loss(s, t, 2.0).item(), rel=1e-6)
