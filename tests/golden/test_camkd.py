"""Golden test: CA-MKD against the official code, run on fixed tensors.

Source: github:Rorozhl/CA-MKD@c2f39a9f13c1998e9971815760364587222581ce, helper/loops.py
``train_distill_multi_teacher`` (ensemble_method "CAMKD", distill "inter", -r 1 -a 1 -b 50, kd_T 4) with
distiller_zoo/CAMKD.py ``CAMKD.forward`` and models/util.py ``CalWeight``/``Embed`` (1x1 conv, BN, ReLU),
run unmodified for one batch of 8, 10 classes, 3 teachers. To compare like with like (our deliberate
difference: we regress the penultimate embedding), the official networks handed the loop the embeddings as
(B, C, 1, 1) maps, so the official regressor is a linear map + BatchNorm + ReLU and the "rest of the
teacher" (``distill_seq()[-1]``: avgpool, flatten, fc) is the teacher's linear classifier. Gradients are
the ``.grad`` of the student's embedding and logits after the loop's ``loss.backward()``.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tekapbench.data.loader import Batch
from tekapbench.methods import METHODS, DistillContext
from tekapbench.methods.camkd import CAMKDLoss, CAMKDParams
from tekapbench.models.base import FeatureShapes, ModelOutput

from tensors import fixed

B, C, DS, DT, K = 8, 10, 6, 12, 3  # batch, classes, student and teacher embedding widths, teachers


LABELS = torch.randint(0, C, (B,), generator=torch.Generator().manual_seed(0))
S_LOGITS = fixed((B, C), 1) * 2
S_EMB = fixed((B, DS), 2).abs()  # pooled post-ReLU features are non-negative
T_LOGITS = [fixed((B, C), 10 + k) * 3 for k in range(K)]
T_EMB = [fixed((B, DT), 20 + k).abs() for k in range(K)]
REG_W = [fixed((DT, DS), 30 + k) * 0.5 for k in range(K)]  # Embed's 1x1 conv weight, (DT, DS, 1, 1) there
REG_B = [fixed((DT,), 40 + k) * 0.1 for k in range(K)]
BN_W = [1 + 0.2 * fixed((DT,), 50 + k) for k in range(K)]
BN_B = [0.2 * fixed((DT,), 60 + k) for k in range(K)]
FC_W = [fixed((C, DT), 70 + k) * 0.5 for k in range(K)]  # each teacher's classifier
FC_B = [fixed((C,), 80 + k) * 0.1 for k in range(K)]

# github:Rorozhl/CA-MKD@c2f39a9f13c1998e9971815760364587222581ce helper/loops.py train_distill_multi_teacher,
# the loop's loss with (gamma, alpha, beta) = (0, 1, 0), epoch 2: the logit term
OFFICIAL_LOGIT_TERM = 1.6884613037109375
# same loop, (0, 0, 1), epoch 2: the feature term (distiller_zoo/CAMKD.py CAMKD.forward)
OFFICIAL_FEATURE_TERM = 0.24927133321762085
# same loop, (0, 0, 1), epoch 2: norm of d(feature term)/d(student embedding)
OFFICIAL_FEATURE_GRAD_NORM = 0.039795417338609695
# same loop, (1, 1, 50) as scripts/run.sh: the total at epoch 1 (feature term left out) and epoch 2
OFFICIAL_TOTAL_EPOCH1 = 5.66693115234375
OFFICIAL_TOTAL_EPOCH2 = 18.130496978759766
# same loop, (1, 1, 50), epoch 2: gradient of the total w.r.t. the student's embedding and logits
OFFICIAL_GRAD_EMB_NORM = 1.9897710084915161
OFFICIAL_GRAD_EMB_ROW0 = [0.2609882950782776, -0.31946709752082825, -0.08347900211811066,
                          0.0013822298496961594, -0.10977622866630554, 0.12079433351755142]
OFFICIAL_GRAD_LOGITS_NORM = 0.4707460403442383
OFFICIAL_GRAD_LOGITS_ROW0 = [-0.002741290256381035, -0.005238424055278301, 0.005715903360396624,
                             -0.005157097242772579, -0.08949873596429825, 0.016245709732174873,
                             0.005316996481269598, -0.010671797208487988, 0.012455085292458534,
                             0.07357364147901535]


def _term(**params) -> CAMKDLoss:
    s = FeatureShapes(features=(), embedding_dim=DS, num_classes=C)
    t = FeatureShapes(features=(), embedding_dim=DT, num_classes=C)
    ctx = DistillContext(student=s, teacher=t, num_classes=C, train_labels=torch.arange(C),
                         device=torch.device("cpu"), teachers=(t,) * K)
    term = CAMKDLoss(CAMKDParams(**params), ctx)
    with torch.no_grad():
        for k, (linear, bn, _) in enumerate(term.regressors):
            linear.weight.copy_(REG_W[k])
            linear.bias.copy_(REG_B[k])
            bn.weight.copy_(BN_W[k])
            bn.bias.copy_(BN_B[k])
    return term.train()


def _outputs():
    student = ModelOutput(logits=S_LOGITS.clone().requires_grad_(True), features=(), preact_features=(),
                          embedding=S_EMB.clone().requires_grad_(True))
    teachers = []
    for k in range(K):
        head = nn.Linear(DT, C).requires_grad_(False)
        with torch.no_grad():
            head.weight.copy_(FC_W[k])
            head.bias.copy_(FC_B[k])
        teachers.append(ModelOutput(logits=T_LOGITS[k], features=(), preact_features=(), embedding=T_EMB[k],
                                    head=head))
    batch = Batch(images=torch.zeros(B, 3, 1, 1), labels=LABELS, indices=torch.arange(B))
    return student, tuple(teachers), batch


def _total(epoch: int):
    """The run's objective with the registered defaults: ce_weight * CE + weight * term."""
    entry = METHODS.get("camkd")
    student, teachers, batch = _outputs()
    term = _term()
    total = entry.ce_weight * F.cross_entropy(student.logits, LABELS) + entry.weight * term(
        student, teachers, batch, epoch)
    total.backward()
    return total.item(), student


def test_logit_term_matches_the_official_code():
    student, teachers, _ = _outputs()
    assert _term().logit_loss(student, teachers, LABELS).item() == pytest.approx(OFFICIAL_LOGIT_TERM, rel=1e-5)


def test_feature_term_and_its_gradient_match_the_official_code():
    student, teachers, _ = _outputs()
    loss = _term().feature_loss(student, teachers, LABELS)
    assert loss.item() == pytest.approx(OFFICIAL_FEATURE_TERM, rel=1e-5)
    loss.backward()  # the confidence weights carry gradient in the official code
    assert student.embedding.grad.norm().item() == pytest.approx(OFFICIAL_FEATURE_GRAD_NORM, rel=1e-5)


def test_total_at_epoch_1_leaves_the_feature_term_out():
    total, student = _total(epoch=1)
    assert total == pytest.approx(OFFICIAL_TOTAL_EPOCH1, rel=1e-5)
    assert student.embedding.grad is None or not student.embedding.grad.any()


def test_total_and_gradients_at_epoch_2_match_the_official_code():
    total, student = _total(epoch=2)
    assert total == pytest.approx(OFFICIAL_TOTAL_EPOCH2, rel=1e-5)
    assert student.embedding.grad.norm().item() == pytest.approx(OFFICIAL_GRAD_EMB_NORM, rel=1e-5)
    # entries: fp32 rounding relative to the gradient's scale (one entry is ~1e-3 of its row, cancellation)
    assert student.embedding.grad[0].tolist() == pytest.approx(OFFICIAL_GRAD_EMB_ROW0, rel=1e-5,
                                                               abs=1e-5 * OFFICIAL_GRAD_EMB_NORM)
    assert student.logits.grad.norm().item() == pytest.approx(OFFICIAL_GRAD_LOGITS_NORM, rel=1e-5)
    assert student.logits.grad[0].tolist() == pytest.approx(OFFICIAL_GRAD_LOGITS_ROW0, rel=1e-5,
                                                            abs=1e-5 * OFFICIAL_GRAD_LOGITS_NORM)


def test_paper_behaviour_drops_the_extra_division_by_the_number_of_teachers():
    student, teachers, _ = _outputs()
    paper = _term(behaviour="paper")
    assert paper.logit_loss(student, teachers, LABELS).item() == pytest.approx(K * OFFICIAL_LOGIT_TERM, rel=1e-5)
    assert paper.feature_loss(student, teachers, LABELS).item() == pytest.approx(K * OFFICIAL_FEATURE_TERM, rel=1e-5)
