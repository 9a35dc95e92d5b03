"""Methods that learn from several teachers: TAKD (a chain of assistants), DGKD (the teacher and every
assistant, one of their terms dropped at random), TeKAP on top of them; their planning into runs and training."""
import math
import textwrap

import pytest
import torch

from tekapbench.errors import ConfigError
from tekapbench.methods import METHODS
from tekapbench.engine.objective import MethodSpec, Objective, TermSpec
from tekapbench.methods.dgkd import DGKDLoss, DGKDParams
from tekapbench.methods.kd import KDParams
from tekapbench.modifiers.tekap import TeKAP, TeKAPSettings
from tekapbench.suite.plan import plan_suite

from one_epoch import one_epoch_records
from test_losses import S, T, Y, batch, kl, out, softmax

A = [[0.5, 0.5, 1.0, -2.0], [1.0, 0.0, 0.5, 0.5]]  # an assistant's logits


def kd_by_hand(s, t, temperature=4.0):
    return sum(kl(softmax(ti, temperature), softmax(si, temperature)) for si, ti in zip(s, t)) / len(s) * temperature**2


# Hinton's KD at T = 4 per term, so that the terms can be checked against kd_by_hand
BY_HAND = dict(temperature=4.0, kl_reduction="batchmean")


def test_dgkd_sums_kd_over_the_teacher_and_the_kept_assistants():
    keep_all = DGKDLoss(DGKDParams(drop_count=0, **BY_HAND))
    got = keep_all(out(S), (out(T), out(A)), batch(Y), epoch=1).item()
    assert got == pytest.approx(kd_by_hand(S, T) + kd_by_hand(S, A), rel=1e-5)
    mean = DGKDLoss(DGKDParams(drop_count=0, reduction="mean", **BY_HAND))
    assert mean(out(S), (out(T), out(A)), batch(Y), epoch=1).item() == pytest.approx(got / 2, rel=1e-5)
    # the official KL (nn.KLDivLoss 'mean') averages over every element: the batch-mean KL / classes
    element = DGKDLoss(DGKDParams(drop_count=0, temperature=4.0))
    assert element(out(S), (out(T), out(A)), batch(Y), epoch=1).item() == pytest.approx(got / 4, rel=1e-5)
    # the first assistant learns from the teacher alone: its only term is never dropped
    alone = DGKDLoss(DGKDParams(**BY_HAND))
    assert alone(out(S), (out(T),), batch(Y), epoch=1).item() == pytest.approx(kd_by_hand(S, T), rel=1e-5)


def test_dgkd_paper_form_drops_assistants_at_its_rate_from_its_own_generator_never_the_teacher():
    term = DGKDLoss(DGKDParams(behaviour="paper", drop_rate=0.5, **BY_HAND))
    term.reseed(7)
    teacher_only, both = kd_by_hand(S, T), kd_by_hand(S, T) + kd_by_hand(S, A)
    draws = [term(out(S), (out(T), out(A)), batch(Y), epoch=1).item() for _ in range(400)]
    assert all(d == pytest.approx(teacher_only, rel=1e-5) or d == pytest.approx(both, rel=1e-5) for d in draws)
    kept = sum(d == pytest.approx(both, rel=1e-5) for d in draws) / len(draws)
    assert 0.4 < kept < 0.6
    term.reseed(7)
    assert [term(out(S), (out(T), out(A)), batch(Y), epoch=1).item() for _ in range(400)] == draws


def test_dgkd_knobs_of_the_other_behaviour_are_refused():
    with pytest.raises(ValueError, match="drop_rate belongs"):
        DGKDParams(drop_rate=0.5)
    with pytest.raises(ValueError, match="drop_count belongs"):
        DGKDParams(behaviour="paper", drop_count=2)


def test_tekap_on_dgkd_perturbs_every_teacher_and_keeps_the_batchs_drops():
    tekap = TeKAP(DGKDLoss(DGKDParams(drop_count=0, **BY_HAND)), TeKAPSettings(level="logit", alpha=0.0))
    base = kd_by_hand(S, T) + kd_by_hand(S, A)
    assert tekap.multi_teacher
    assert tekap(out(S), (out(T), out(A)), batch(Y), epoch=1).item() == pytest.approx((1 + 3 * 0.8) * base, rel=1e-5)
    noisy = TeKAP(DGKDLoss(DGKDParams(drop_count=0)), TeKAPSettings(level="logit", alpha=0.5))
    noisy.reseed(0)
    views = noisy.synthetic_views((out(T), out(A)))
    assert len(views) == 3 and all(len(v) == 2 for v in views)
    assert not torch.equal(views[0][0].logits, views[0][1].logits)
    assert not torch.equal(views[0][0].logits, views[1][0].logits)


def test_objective_gives_single_teacher_terms_the_first_teacher():
    dgkd = TermSpec("dgkd", 1.0, DGKDParams(drop_count=0, **BY_HAND))
    spec = MethodSpec(0.0, (TermSpec("kd", 1.0, KDParams()), dgkd))
    losses = Objective(spec, None)(out(S), (out(T), out(A)), batch(Y), epoch=1)
    assert losses["kd"].item() == pytest.approx(kd_by_hand(S, T), rel=1e-5)
    assert losses["dgkd"].item() == pytest.approx(kd_by_hand(S, T) + kd_by_hand(S, A), rel=1e-5)


def test_takd_is_its_own_logit_term_on_a_chain():
    from tekapbench.methods.takd import TAKDLoss, TAKDParams

    entry = METHODS.get("takd")
    assert entry.teachers == "chain" and entry.term is TAKDLoss and TAKDLoss.reads == {"logits"}
    assert METHODS.get("dgkd").teachers == "dense" and METHODS.get("kd").teachers == "one"
    # official: KD's batch-mean KL divided by the classes as well (nn.KLDivLoss() default); paper: KD's term
    official = TAKDLoss(TAKDParams(temperature=4.0))(out(S), out(T), batch(Y), epoch=1).item()
    paper = TAKDLoss(TAKDParams(temperature=4.0, behaviour="paper"))(out(S), out(T), batch(Y), epoch=1).item()
    assert official == pytest.approx(kd_by_hand(S, T) / len(S[0]), rel=1e-5)
    assert paper == pytest.approx(kd_by_hand(S, T), rel=1e-5)


def test_takd_under_tekap_perturbs_the_logits_it_reads():
    from tekapbench.methods.takd import TAKDLoss, TAKDParams

    term = TAKDLoss(TAKDParams())
    tekap = TeKAP(TAKDLoss(TAKDParams()), TeKAPSettings(level="logit", alpha=0.0))
    base = term(out(S), out(T), batch(Y), epoch=1).item()
    assert tekap(out(S), out(T), batch(Y), epoch=1).item() == pytest.approx((1 + 3 * 0.8) * base, rel=1e-5)


SUITE = """
[suite]
name = "ta"
seeds = [0, 1]
teacher_seed = 0

[data]
datasets = ["digits"]

[recipe]
epochs = 2

[[pairs]]
teacher = "resnet20_tiny"
student = "resnet8_tiny"
assistants = ["resnet14_tiny", "resnet8_tiny"]

[[methods]]
label = "KD"
method = "kd"

[[methods]]
label = "TAKD"
method = "takd"

[[methods]]
label = "TAKD+TeKAP"
method = "takd"
tekap = { level = "logit" }

[[methods]]
label = "DGKD"
method = "dgkd"
"""


def _plan(tmp_path, text=SUITE):
    path = tmp_path / "ta.toml"
    path.write_text(textwrap.dedent(text))
    return plan_suite(path)


def test_chain_and_dense_teachers_are_planned_as_runs_shared_by_tekap_and_seeds(tmp_path):
    plan = _plan(tmp_path)
    cell = {(c.row, c.seed): c.run_id for c in plan.cells}
    teacher = cell["Teacher", 0]
    assert plan.runs[cell["KD", 0]].teachers == (teacher,)
    takd = plan.runs[cell["TAKD", 0]]
    (last,) = takd.teachers
    assert plan.runs[last].arch == "resnet8_tiny"
    (first,) = plan.runs[last].teachers
    assert plan.runs[first].arch == "resnet14_tiny" and plan.runs[first].teachers == (teacher,)
    assert all(t.tekap is None for t in plan.runs[last].method.terms)  # assistants learn without TeKAP ...
    assert plan.runs[cell["TAKD+TeKAP", 0]].teachers == takd.teachers  # ... so TAKD+TeKAP shares them
    assert plan.runs[cell["TAKD", 1]].teachers == takd.teachers  # teacher_seed: one chain for all seeds
    dgkd = plan.runs[cell["DGKD", 0]]
    assert len(dgkd.teachers) == 3 and dgkd.teachers[0] == teacher
    assert plan.runs[dgkd.teachers[2]].teachers == dgkd.teachers[:2]
    order = list(plan.runs)
    for run_id, spec in plan.runs.items():  # every run after the runs it learns from
        assert all(order.index(t) < order.index(run_id) for t in spec.teachers)
    # a single-teacher run's identity keeps the key it always had, so its id does not change
    assert "teacher" in plan.runs[cell["KD", 0]].identity() and "teachers" not in plan.runs[cell["KD", 0]].identity()
    assert "teachers" in dgkd.identity()


def test_a_method_through_assistants_without_assistants_is_refused(tmp_path):
    text = SUITE.replace('assistants = ["resnet14_tiny", "resnet8_tiny"]\n', "")
    with pytest.raises(ConfigError) as caught:
        _plan(tmp_path, text)
    keys = {key for key, _ in caught.value.problems}
    assert keys == {"pairs[0].assistants"}
    assert "TAKD" in str(caught.value) and "assistants = [" in str(caught.value)


def test_terms_of_different_topologies_are_refused(tmp_path):
    text = SUITE + '\n[[methods]]\nlabel = "mix"\nterms = [{ method = "takd" }, { method = "dgkd" }]\n'
    with pytest.raises(ConfigError, match="different teachers"):
        _plan(tmp_path, text)


# ---------------------------------------------------------------------------------------- CA-MKD

def test_camkd_confidence_weights_by_hand():
    from tekapbench.methods.camkd import confidence_weights

    ce = [[-math.log(softmax(t)[y]) for t, y in zip(logits, Y)] for logits in (T, A)]
    got = confidence_weights([torch.tensor(T), torch.tensor(A)], torch.tensor(Y))
    for b in range(2):
        e = [math.exp(ce[k][b]) for k in range(2)]
        for k in range(2):
            assert got[k, b].item() == pytest.approx(1 - e[k] / sum(e), rel=1e-5)  # K - 1 = 1
    assert torch.allclose(got.sum(0), torch.ones(2))
    # the more confident teacher about the true label gets the larger weight
    assert (got[0] > got[1]).tolist() == [ce[0][b] < ce[1][b] for b in range(2)]


def _camkd(feature_weight: float):
    from tekapbench.methods import DistillContext
    from tekapbench.methods.camkd import CAMKDLoss, CAMKDParams
    from tekapbench.models.base import FeatureShapes

    shapes = FeatureShapes(features=(), embedding_dim=4, num_classes=4)
    ctx = DistillContext(student=shapes, teacher=shapes, num_classes=4, train_labels=torch.arange(4),
                         device=torch.device("cpu"), teachers=(shapes, shapes))
    return CAMKDLoss(CAMKDParams(feature_weight=feature_weight), ctx)


def test_camkd_logit_term_is_the_confidence_weighted_kd_by_hand():
    from tekapbench.methods.camkd import confidence_weights

    term = _camkd(0.0)
    got = term(out(S), (out(T), out(A)), batch(Y), epoch=1).item()
    w = confidence_weights([torch.tensor(T), torch.tensor(A)], torch.tensor(Y))
    expected = sum(w[k, b].item() * kl(softmax(teacher[b], 4.0), softmax(S[b], 4.0))
                   for k, teacher in enumerate((T, A)) for b in range(2)) / (2 * 2) * 16  # / (batch x teachers)
    assert got == pytest.approx(expected, rel=1e-5)


def test_camkd_feature_term_asks_each_teachers_classifier_about_the_regressed_student():
    from tekapbench.methods.camkd import confidence_weights

    term = _camkd(2.0).eval()  # BatchNorm on its initial running statistics: x / sqrt(1 + eps)
    with torch.no_grad():
        for linear, _, _ in term.regressors:
            linear.weight.copy_(torch.eye(4))
            linear.bias.zero_()
    heads = [torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)]
    f_s = torch.tensor(S)  # the student's embedding
    regressed = torch.relu(f_s / math.sqrt(1 + term.regressors[0][1].eps))  # identity map, BatchNorm, ReLU
    f_t = [torch.tensor(T), torch.tensor(A)]
    teachers = tuple(out(logits, embedding=f).replace(head=h) for logits, f, h in zip((T, A), f_t, heads))
    logit_part = _camkd(0.0)(out(S), (out(T), out(A)), batch(Y), epoch=2).item()
    # the official loop leaves the feature term out at epoch 1
    assert term(out(S, embedding=f_s), teachers, batch(Y), epoch=1).item() == pytest.approx(logit_part, rel=1e-6)
    got = term(out(S, embedding=f_s), teachers, batch(Y), epoch=2).item()
    v = confidence_weights([h(regressed) for h in heads], torch.tensor(Y))
    mse = torch.stack([(regressed - f).pow(2).mean(1) for f in f_t])
    assert got == pytest.approx(logit_part + 2.0 * (v * mse).sum().item() / (2 * 2), rel=1e-5)  # / (batch x teachers)


@pytest.mark.parametrize("level,features_per_teacher", [("logit", False), ("feature", True)])
def test_tekap_on_camkd_repeats_only_the_parts_that_read_what_it_perturbs(level, features_per_teacher):
    """Logit-level TeKAP leaves the embeddings alone, so CA-MKD's feature term counts once (on the real
    teachers); feature-level TeKAP perturbs them, so it is scored on every synthetic teacher too."""
    torch.manual_seed(0)
    term = _camkd(2.0).eval()  # eval: BatchNorm does not move between the calls compared
    heads = [torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)]
    student = out(S, embedding=torch.randn(2, 4))
    teachers = tuple(out(t, embedding=torch.randn(2, 4)).replace(head=h) for t, h in zip((T, A), heads))
    wrapped = TeKAP(term, TeKAPSettings(level=level, n_teachers=3, alpha=0.0))  # alpha 0: views equal the teachers
    got = wrapped(student, teachers, batch(Y), epoch=2).item()
    full = term(student, teachers, batch(Y), epoch=2).item()
    logits_only = term(student, teachers, batch(Y), epoch=2, features=False).item()
    s = wrapped.settings
    per_synthetic = full if features_per_teacher else logits_only
    assert got == pytest.approx(s.real_weight * full + 3 * s.synthetic_weight * per_synthetic, rel=1e-5)
    assert full > logits_only  # the feature term is there to be counted or not


def test_camkd_learns_from_an_ensemble_of_the_pairs_teacher(tmp_path):
    text = SUITE + '\n[[methods]]\nlabel = "CA-MKD"\nmethod = "camkd"\n\n[[methods]]\nlabel = "CA-MKD+TeKAP"\n' \
                   'method = "camkd"\ntekap = { level = "logit" }\n'
    plan = _plan(tmp_path, text.replace('assistants = [', 'ensemble = 3\nassistants = ['))
    cell = {(c.row, c.seed): c.run_id for c in plan.cells}
    camkd = plan.runs[cell["CA-MKD", 1]]
    assert camkd.teachers[0] == cell["Teacher", 1] and len(camkd.teachers) == 3
    assert [plan.runs[t].seed for t in camkd.teachers] == [0, 1, 2]  # teacher_seed 0, then + 1, + 2
    assert {plan.runs[t].arch for t in camkd.teachers} == {"resnet20_tiny"}
    assert plan.runs[cell["CA-MKD+TeKAP", 0]].teachers == camkd.teachers


@pytest.mark.slow
def test_camkd_with_feature_level_tekap_trains_end_to_end(tmp_path):
    records = one_epoch_records(tmp_path, "camkd", pair="ensemble = 2", method="""
        label = "CA-MKD+TeKAP (F)"
        method = "camkd"
        tekap = { level = "feature" }
    """)
    assert len(records) == 3  # two teachers (seeds 0 and 1) and the student
    student = next(r for r in records if r["teacher"])
    assert [t["arch"] for t in student["teacher"]["teachers"]] == ["resnet8_tiny", "resnet8_tiny"]
    terms = student["history"][-1]["loss_terms"]
    assert set(terms) == {"ce", "camkd+tekap"} and all(math.isfinite(v) and v > 0 for v in terms.values())
