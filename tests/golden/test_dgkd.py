"""Golden test: DGKD against its official implementation, run on fixed tensors.

Expected numbers were printed by running the official code (never ours) on the tensors built below:
github:wonchulSon/DGKD@2599350ebe8cce045efd322a9f7fbf92f12528d7 train.py, the loss of
``TrainManager.train`` (``(1 - lamb) * CE + lamb * T*T * sum(loss_KD_list)`` after ``--drop-num``
removals) with the defaults of ``parse_arguments`` (T = 5, lamb = 1, drop-num = 1), its
``random.choice`` forced to the index of the dropped term (teacher = 0, then the assistants).
"""
import pytest
import torch

from tekapbench.engine.objective import MethodSpec, Objective, TermSpec
from tekapbench.methods import METHODS
from tekapbench.methods.dgkd import DGKDLoss, DGKDParams
from tekapbench.modifiers.tekap import TeKAP, TeKAPSettings
from tekapbench.seeding import derive_seed

from tensors import batch, fixed, grad_summary, out

B, C = 8, 100
SOURCE = "github:wonchulSon/DGKD@2599350ebe8cce045efd322a9f7fbf92f12528d7 train.py, TrainManager.train"


def inputs():
    """student, teacher, assistants (largest first), labels; trained networks are confident on the label."""
    y = torch.randint(0, C, (B,), generator=torch.Generator().manual_seed(3))
    s = fixed((B, C), 1) * 3
    t = fixed((B, C), 2) * 5
    t[torch.arange(B), y] += 8.0
    a1 = fixed((B, C), 4) * 4
    a1[torch.arange(B), y] += 6.0
    a2 = fixed((B, C), 5) * 3
    a2[torch.arange(B), y] += 4.0
    return s, t, [a1, a2], y


# (assistants, dropped index) -> official loss and d loss / d student logits; SOURCE, --drop-num 1
OFFICIAL = {
    (1, 0): (0.12642210721969604, {"norm": 0.002067778492346406, "proj": -0.0017031042370945215,
                                   "g00": 4.793865173269296e-06, "g37": 0.00019746963516809046}),
    (1, 1): (0.18537065386772156, {"norm": 0.002758409595116973, "proj": -0.0037556677125394344,
                                   "g00": 1.0375840247434098e-05, "g37": 0.00016637104272376746}),
    (2, 0): (0.2159895896911621, {"norm": 0.00307019567117095, "proj": -0.0037100876215845346,
                                  "g00": -0.00011788486153818667, "g37": 0.000361143727786839}),
    (2, 1): (0.2749381363391876, {"norm": 0.003601244417950511, "proj": -0.00576265063136816,
                                  "g00": -0.00011230288509977981, "g37": 0.0003300451207906008}),
    (2, 2): (0.3117927610874176, {"norm": 0.003975412342697382, "proj": -0.005458771251142025,
                                  "g00": 1.5169705875450745e-05, "g37": 0.0003638406633399427}),
}
# SOURCE with --drop-num 0 (no stochastic drop): every term kept
OFFICIAL_NO_DROP = {1: 0.3117927610874176, 2: 0.4013602137565613}


def default_objective():
    entry = METHODS.get("dgkd")
    return Objective(MethodSpec(entry.ce_weight, (TermSpec("dgkd", entry.weight, DGKDParams()),)), None)


def test_dgkd_defaults_are_the_official_ones():
    entry, params = METHODS.get("dgkd"), DGKDParams()
    # SOURCE parse_arguments: --T 5, --lamb 1 (so (1 - lamb) * CE = 0), --drop-num 1; nn.KLDivLoss() 'mean'
    assert (entry.ce_weight, entry.weight, params.temperature) == (0.0, 1.0, 5.0)
    assert (params.behaviour, params.drop_count, params.kl_reduction, params.reduction) == (
        "official", 1, "mean", "sum")


@pytest.mark.parametrize("assistants,dropped", sorted(OFFICIAL))
def test_dgkd_objective_and_gradient_equal_official_with_the_same_term_dropped(assistants, dropped, monkeypatch):
    s, t, a, y = inputs()
    objective = default_objective()
    term = objective.terms["dgkd"]
    forced = torch.ones(1 + assistants, dtype=torch.bool)
    forced[dropped] = False
    monkeypatch.setattr(term, "draw_keep", lambda count, device: forced)
    zs = s.clone().requires_grad_(True)
    losses = objective(out(zs), (out(t), *map(out, a[:assistants])), batch(y), epoch=1)
    total = sum(losses.values())
    total.backward()
    expected_loss, expected_grad = OFFICIAL[assistants, dropped]
    assert set(losses) == {"dgkd"}  # lamb = 1: no cross-entropy term
    assert total.item() == pytest.approx(expected_loss, rel=1e-5)
    got = grad_summary(zs.grad)
    for key, value in expected_grad.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-9), key


@pytest.mark.parametrize("assistants", [1, 2])
def test_dgkd_without_drops_equals_official_drop_num_0(assistants):
    s, t, a, y = inputs()
    term = DGKDLoss(DGKDParams(drop_count=0))
    got = term(out(s), (out(t), *map(out, a[:assistants])), batch(y), epoch=1).item()
    assert got == pytest.approx(OFFICIAL_NO_DROP[assistants], rel=1e-5)


@pytest.mark.parametrize("assistants", [1, 2])
def test_each_term_teacher_included_is_dropped_one_time_in_k_from_the_seeded_generator(assistants):
    s, t, a, y = inputs()
    teachers = (out(t), *map(out, a[:assistants]))
    k = len(teachers)
    # the loss when term i is dropped (official numbers above): identifies the dropped term of each batch
    by_dropped = [OFFICIAL[assistants, i][0] for i in range(k)]
    term = DGKDLoss(DGKDParams())
    term.reseed(11)
    draws = [term(out(s), teachers, batch(y), epoch=1).item() for _ in range(3000)]
    dropped = [min(range(k), key=lambda i: abs(by_dropped[i] - d)) for d in draws]
    assert all(d == pytest.approx(by_dropped[i], rel=1e-5) for d, i in zip(draws, dropped))
    for i in range(k):
        assert dropped.count(i) / len(dropped) == pytest.approx(1 / k, abs=0.03), i
    term.reseed(11)
    assert [term(out(s), teachers, batch(y), epoch=1).item() for _ in range(50)] == draws[:50]


def test_tekap_synthetic_teachers_drop_the_same_term_as_the_real_call():
    s, t, a, y = inputs()
    teachers = (out(t), *map(out, a))
    tekap = TeKAP(DGKDLoss(DGKDParams()), TeKAPSettings(level="logit", alpha=0.0))  # synthetic == real
    plain = DGKDLoss(DGKDParams())
    tekap.reseed(5)
    plain.reseed(derive_seed(5, "base"))
    for _ in range(30):
        real = plain(out(s), teachers, batch(y), epoch=1).item()
        assert tekap(out(s), teachers, batch(y), epoch=1).item() == pytest.approx((1 + 3 * 0.8) * real, rel=1e-5)
