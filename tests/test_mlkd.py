"""MLKD: instance-, batch- and class-level logit distillation at several temperatures on a weak and a
strong view, with confidence masks; the paper's behaviour and the public code's, by hand (the official
numbers: tests/golden/test_mlkd_official.py; the strong view itself: tests/test_strong_view.py)."""
import math
from dataclasses import replace

import pytest
import torch

from tekapbench.methods import METHODS
from tekapbench.methods.mlkd import MLKDLoss, MLKDParams
from tekapbench.modifiers.tekap import TeKAP, TeKAPSettings

from one_epoch import one_epoch_records
from test_losses import S, T, Y, batch, kl, out, softmax

S2 = [[0.2, 1.0, -0.5, 0.3], [1.5, -0.2, 0.0, 0.4]]  # student on the strong view
T2 = [[1.0, 1.2, -1.0, 0.0], [0.5, 0.5, 2.0, -0.5]]  # teacher on the strong view


def with_strong(b):
    return replace(b, views={"strong": (out(S2), out(T2))})


def gram_terms(s, t, temp):
    """Batch-level sum_ij (Gt - Gs)^2 per row, class-level sum_cd (Mt - Ms)^2 per row, by hand."""
    ps = [softmax(r, temp) for r in s]
    pt = [softmax(r, temp) for r in t]
    b, c = len(s), len(s[0])
    batch_rows = [sum((sum(pt[i][k] * pt[j][k] for k in range(c)) - sum(ps[i][k] * ps[j][k] for k in range(c))) ** 2
                      for j in range(b)) for i in range(b)]
    class_rows = [sum((sum(pt[n][x] * pt[n][y] for n in range(b)) - sum(ps[n][x] * ps[n][y] for n in range(b))) ** 2
                      for y in range(c)) for x in range(c)]
    return batch_rows, class_rows


def test_paper_levels_by_hand_with_every_sample_and_class_kept():
    term = MLKDLoss(MLKDParams(temperatures=(1.0, 4.0), confidence_percentile=0.0, strong_ce_weight=0.0,
                               behaviour="paper"))
    got = term(out(S), out(T), with_strong(batch(Y)), epoch=1).item()
    expected = 0.0
    for s, t in ((S, T), (S2, T2)):
        for temp in (1.0, 4.0):
            expected += sum(kl(softmax(ti, temp), softmax(si, temp)) for si, ti in zip(s, t)) / 2 * temp**2
            batch_rows, class_rows = gram_terms(s, t, temp)
            expected += sum(batch_rows) / 2 + sum(class_rows) / 4
    assert got == pytest.approx(expected, rel=1e-5)


def test_paper_mask_keeps_the_confident_samples_the_code_the_others():
    confidence = [max(softmax(t)) for t in T]
    confident = confidence.index(max(confidence))
    for behaviour, kept in (("paper", confident), ("official", 1 - confident)):
        term = MLKDLoss(MLKDParams(behaviour=behaviour))
        sample_mask, class_mask = term._masks(torch.tensor(T), keep_confident=behaviour == "paper")
        assert sample_mask.tolist() == [i == kept for i in range(2)]
        assert int(class_mask.sum()) == 2  # the median of 4 class sums splits them in halves


def test_official_behaviour_scales_batch_scalars_by_the_share_the_mask_keeps():
    term = MLKDLoss(MLKDParams(temperatures=(4.0,), behaviour="official", strong_ce_weight=0.0))
    got = term(out(S), out(T), with_strong(batch(Y)), epoch=1).item()
    kd = lambda s, t: sum(kl(softmax(ti, 4.0), softmax(si, 4.0)) for si, ti in zip(s, t)) / 2 * 16  # noqa: E731
    batch_rows, class_rows = gram_terms(S, T, 4.0)
    # masks keep one sample of two and two classes of four: each weak term is scaled by 1/2
    expected = kd(S, T) * 0.5 + kd(S2, T2) + sum(class_rows) / 4 * 0.5 + sum(batch_rows) / 2 * 0.5
    assert got == pytest.approx(expected, rel=1e-5)


def test_official_strong_instance_loss_reads_the_weak_logits_at_t_2_and_6():
    b = with_strong(batch(Y))
    for temp, strong_pair in ((2.0, (S, T)), (6.0, (S, T)), (3.0, (S2, T2))):
        term = MLKDLoss(MLKDParams(temperatures=(temp,), behaviour="official", strong_ce_weight=0.0))
        got = term.official_parts(out(S).logits, out(T).logits, out(S2).logits, out(T2).logits)["instance_strong"]
        s, t = strong_pair
        expected = sum(kl(softmax(ti, temp), softmax(si, temp)) for si, ti in zip(s, t)) / 2 * temp**2
        assert got.item() == pytest.approx(expected, rel=1e-5), temp
        assert term(out(S), out(T), b, epoch=1).item() == pytest.approx(
            sum(v.item() for v in term.official_parts(out(S).logits, out(T).logits, out(S2).logits,
                                                      out(T2).logits).values()), rel=1e-6)


def test_default_weights_give_the_strong_view_the_weak_views_cross_entropy_weight():
    entry = METHODS.get("mlkd")
    assert entry.weight * MLKDParams().strong_ce_weight == pytest.approx(entry.ce_weight, rel=1e-12)


def test_strong_view_cross_entropy_is_added_once_even_under_tekap():
    plain = MLKDLoss(MLKDParams(strong_ce_weight=0.0))
    with_ce = MLKDLoss(MLKDParams(strong_ce_weight=1.0))
    b = with_strong(batch(Y))
    ce = -sum(math.log(softmax(s)[y]) for s, y in zip(S2, Y)) / 2
    assert (with_ce(out(S), out(T), b, epoch=1) - plain(out(S), out(T), b, epoch=1)).item() == pytest.approx(ce, rel=1e-5)
    tekap_plain = TeKAP(MLKDLoss(MLKDParams(strong_ce_weight=0.0)), TeKAPSettings(level="logit", alpha=0.0))
    tekap_ce = TeKAP(MLKDLoss(MLKDParams(strong_ce_weight=1.0)), TeKAPSettings(level="logit", alpha=0.0))
    diff = tekap_ce(out(S), out(T), b, epoch=1) - tekap_plain(out(S), out(T), b, epoch=1)
    assert diff.item() == pytest.approx(ce, rel=1e-5)  # real weight 1; synthetic views add no CE
    # with alpha = 0 the synthetic teachers equal the real one on both views: 1 + 3 * 0.8 copies
    assert tekap_plain(out(S), out(T), b, epoch=1).item() == pytest.approx(
        3.4 * plain(out(S), out(T), b, epoch=1).item(), rel=1e-5)


def test_tekap_perturbs_the_teacher_on_the_strong_view_too():
    tekap = TeKAP(MLKDLoss(MLKDParams()), TeKAPSettings(level="logit", alpha=0.5))
    tekap.reseed(0)
    perturbed = tekap._with_views_perturbed(with_strong(batch(Y)))
    student, teacher = perturbed.views["strong"]
    assert torch.equal(student.logits, out(S2).logits) and not torch.equal(teacher.logits, out(T2).logits)


@pytest.mark.slow
def test_mlkd_with_tekap_trains_end_to_end(tmp_path):
    records = one_epoch_records(tmp_path, "mlkd", method="""
        label = "MLKD+TeKAP"
        method = "mlkd"
        tekap = { level = "logit" }
    """)
    student = next(r for r in records if r["teacher"])
    assert student["spec"]["method"]["terms"][0]["params"]["behaviour"] == "official"
    terms = student["history"][-1]["loss_terms"]
    assert set(terms) == {"ce", "mlkd+tekap"} and all(math.isfinite(v) and v > 0 for v in terms.values())
