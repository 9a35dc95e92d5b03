"""Golden test: TeKAP at logit level (TeKAP(KD)) against its official implementation, run on fixed tensors.

Expected numbers were printed by running the official code (never ours) on the tensors built below:
github:mdimtiazh/TeKAP@279d380ced180a9cc07291cc54edd4ee7a0ce6f7 distiller_zoo/Ours_TeKAP_L.py,
DistillKL(T=4).forward (``.cuda()`` removed to run on CPU), which distiller_zoo/__init__.py exports as the
``criterion_div`` of train_student.py; helper/loops.py train_distill: ``gamma*CE + alpha*loss_div + beta*loss_kd``
with the README's TeKAP-L command ``--distill kd -r 0.1 -a 0.9 -b 0``. Official:
``KD(s, t) + 0.8 * sum_{i=1..3} KD(s, softmax((0.1 * eta_i + 0.9 * t) / T))``, eta_i = randn(B, C) * sqrt(1).
For the comparison the official ``torch.randn`` calls were patched to return eta_i = fixed((8, 100), 50 + i),
i = 0, 1, 2 in call order; here TeKAP's noise source returns the same tensors.
"""
import pytest
import torch

from tekapbench.engine.objective import MethodSpec, Objective, TermSpec
from tekapbench.methods import METHODS
from tekapbench.methods.kd import KDParams
from tekapbench.modifiers import tekap as tekap_module
from tekapbench.modifiers.tekap import TeKAP, TeKAPSettings

from tensors import batch, confident_logits as logits, fixed, grad_summary, out

B, C = 8, 100


@pytest.fixture
def fixed_noise(monkeypatch):
    """TeKAP's unit-normal draws become eta_i = fixed((8, 100), 50 + i), i = 0, 1, 2, as in the official run."""
    queue = [fixed((B, C), 50 + i) for i in range(3)]

    def draw(shape, generator, device):
        assert tuple(shape) == (B, C)  # one value per sample and class, as official randn(B, C)
        return queue.pop(0).clone()

    monkeypatch.setitem(tekap_module.NOISE, "normal", draw)
    yield queue
    assert not queue  # exactly N = 3 synthetic teachers were drawn


def test_tekap_logit_defaults_are_the_official_ones():
    s = TeKAPSettings(level="logit").resolved()
    entry = METHODS.get("kd")
    # Ours_TeKAP_L.py: 3 synthetic teachers, randn * sqrt(1), 0.1 noise + 0.9 logits, weights 1 and 0.8, T 4
    assert (s.n_teachers, s.alpha, s.sigma, s.real_weight, s.synthetic_weight) == (3, 0.1, 1.0, 1.0, 0.8)
    assert (s.noise, s.noise_per, s.weighting) == ("normal", "sample", "official")
    # README / helper/loops.py: -r 0.1 -a 0.9; train_student.py --kd_T 4
    assert (entry.ce_weight, entry.weight, KDParams().temperature) == (0.1, 0.9, 4.0)


def test_tekap_kd_loss_equals_official(fixed_noise):
    s, t, y = logits()
    term = TeKAP(METHODS.get("kd").term(KDParams(), None), TeKAPSettings(level="logit"))
    # Ours_TeKAP_L.DistillKL(4)(s, t, y) with eta_i = fixed((8, 100), 50 + i)
    assert term(out(s), out(t), batch(y), epoch=1).item() == pytest.approx(56.69148254394531, rel=1e-5)


def test_tekap_kd_objective_and_student_gradient_equal_official(fixed_noise):
    s, t, y = logits()
    entry = METHODS.get("kd")
    spec = MethodSpec(ce_weight=entry.ce_weight,
                      terms=(TermSpec("kd", entry.weight, KDParams(), tekap=TeKAPSettings(level="logit")),))
    zs = s.clone().requires_grad_(True)
    losses = Objective(spec, None)(out(zs), out(t), batch(y), epoch=1)
    total = sum(losses.values())
    total.backward()
    # 0.1 * CrossEntropyLoss + 0.9 * Ours_TeKAP_L.DistillKL(4), and its gradient w.r.t. the student logits
    assert total.item() == pytest.approx(51.934844970703125, rel=1e-5)
    expected = {"norm": 0.8841044902801514, "proj": -1.1424956321716309,
                "g00": 0.001990199089050293, "g37": 0.06460858136415482}
    got = grad_summary(zs.grad)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-8), key


def test_tekap_unseeded_draws_in_the_official_order():
    """Never reseeded, TeKAP draws from torch's global generator exactly as the official randn calls do."""
    s, t, y = logits()
    term = TeKAP(METHODS.get("kd").term(KDParams(), None), TeKAPSettings(level="logit"))
    zs = s.clone().requires_grad_(True)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(0)
        loss = term(out(zs), out(t), batch(y), epoch=1)
    finally:
        torch.random.set_rng_state(state)
    loss.backward()
    # Ours_TeKAP_L.DistillKL(4)(s, t, y) right after torch.manual_seed(0), unpatched CPU torch.randn
    assert loss.item() == pytest.approx(56.81505584716797, rel=1e-5)
    assert zs.grad.norm().item() == pytest.approx(0.9603480696678162, rel=1e-5)
    assert (zs.grad * fixed(zs.shape, 99)).sum().item() == pytest.approx(-1.259944200515747, rel=1e-5)
