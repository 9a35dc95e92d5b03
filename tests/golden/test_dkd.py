"""Golden test: DKD against its official implementation, run on fixed tensors.

Expected numbers were printed by running the official code (never ours) on the tensors built below:
github:megvii-research/mdistiller@a08d46f10d6102bd6e3f258ca5ac880b020ea259
- mdistiller/distillers/DKD.py, dkd_loss(logits_student, logits_teacher, target, alpha, beta, temperature);
- mdistiller/distillers/DKD.py, DKD.forward_train: ``CE_WEIGHT * CE + min(epoch / WARMUP, 1) * dkd_loss``,
  with the defaults of mdistiller/engine/cfg.py (CE_WEIGHT 1, ALPHA 1, BETA 8, T 4, WARMUP 20) and the per-pair
  BETA of configs/cifar100/dkd/*.yaml; the trainer (mdistiller/engine/trainer.py) counts epochs from 1.
"""
import pytest
import torch

from tekapbench.data.loader import Batch
from tekapbench.engine.objective import MethodSpec, Objective, TermSpec
from tekapbench.methods import METHODS
from tekapbench.methods.dkd import DKDLoss, DKDParams, decoupled_kd

from tensors import confident_logits as logits, fixed, grad_summary, out

B, C = 8, 100


@pytest.mark.parametrize("alpha,beta,temperature,expected", [
    (1.0, 8.0, 4.0, 135.0894012451172),  # dkd_loss(s, t, y, 1, 8, 4)
    (1.0, 2.0, 4.0, 36.33694076538086),  # dkd_loss(s, t, y, 1, 2, 4)
    (1.0, 6.0, 4.0, 102.17191314697266),  # dkd_loss(s, t, y, 1, 6, 4)
    (0.5, 8.0, 2.0, 109.3273696899414),  # dkd_loss(s, t, y, 0.5, 8, 2)
    (1.0, 0.0, 4.0, 3.41945219039917),  # dkd_loss(s, t, y, 1, 0, 4): TCKD alone
    (0.0, 1.0, 4.0, 16.458744049072266),  # dkd_loss(s, t, y, 0, 1, 4): NCKD alone
])
def test_dkd_loss_equals_official(alpha, beta, temperature, expected):
    s, t, y = logits()
    tckd, nckd = decoupled_kd(s, t, y, temperature)
    assert (alpha * tckd.mean() + beta * nckd.mean()).item() == pytest.approx(expected, rel=1e-5)


# DKD.forward_train at epoch e: (loss_ce + loss_kd, loss_kd, gradient of the sum w.r.t. the student logits)
FORWARD_TRAIN = {
    (8.0, 1): (15.879600524902344, 6.754470348358154,
               {"norm": 0.429507315158844, "proj": -0.13798119127750397, "g00": 0.00031192618189379573,
                "g37": 0.06859548389911652}),
    (8.0, 10): (76.66983032226562, 67.5447006225586,
                {"norm": 1.179623007774353, "proj": -1.5369263887405396, "g00": 0.00311546609736979,
                 "g37": 0.1394161731004715}),
    (8.0, 20): (144.21453857421875, 135.0894012451172,
                {"norm": 2.182203531265259, "proj": -3.0913100242614746, "g00": 0.006230510771274567,
                 "g37": 0.21810583770275116}),
    (8.0, 240): (144.21453857421875, 135.0894012451172,
                 {"norm": 2.182203531265259, "proj": -3.0913100242614746, "g00": 0.006230510771274567,
                  "g37": 0.21810583770275116}),
    (2.0, 1): (10.941976547241211, 1.8168470859527588,
               {"norm": 0.40682974457740784, "proj": -0.024076789617538452, "g00": 8.020272071007639e-05,
                "g37": 0.06274478882551193}),
    (2.0, 10): (27.29360008239746, 18.16847038269043,
                {"norm": 0.5566738247871399, "proj": -0.3978814482688904, "g00": 0.0007982315728440881,
                 "g37": 0.08090920001268387}),
    (2.0, 20): (45.46207046508789, 36.33694076538086,
                {"norm": 0.7852525115013123, "proj": -0.8132199645042419, "g00": 0.0015960413729771972,
                 "g37": 0.1010918840765953}),
    (2.0, 240): (45.46207046508789, 36.33694076538086,
                 {"norm": 0.7852525115013123, "proj": -0.8132199645042419, "g00": 0.0015960413729771972,
                  "g37": 0.1010918840765953}),
}


@pytest.mark.parametrize("pair,beta,epoch", [
    (("resnet32x4", "resnet8x4"), 8.0, 1), (("resnet32x4", "resnet8x4"), 8.0, 10),
    (("resnet32x4", "resnet8x4"), 8.0, 20), (("resnet32x4", "resnet8x4"), 8.0, 240),
    (("resnet56", "resnet20"), 2.0, 1), (("resnet56", "resnet20"), 2.0, 10),
    (("resnet56", "resnet20"), 2.0, 20), (("resnet56", "resnet20"), 2.0, 240),
])
def test_dkd_objective_with_warmup_and_gradient_equal_official(pair, beta, epoch):
    s, t, y = logits()
    entry = METHODS.get("dkd")
    params = DKDParams().resolved_for(*pair)
    assert params.beta == beta
    spec = MethodSpec(ce_weight=entry.ce_weight, terms=(TermSpec("dkd", entry.weight, params),))
    zs = s.clone().requires_grad_(True)
    losses = Objective(spec, None)(out(zs), out(t), Batch(images=torch.zeros(B, 3, 4, 4), labels=y,
                                                         indices=torch.arange(B)), epoch=epoch)
    total = sum(losses.values())
    total.backward()
    expected_total, expected_dkd, expected_grad = FORWARD_TRAIN[(beta, epoch)]
    assert total.item() == pytest.approx(expected_total, rel=1e-5)
    assert losses["dkd"].item() == pytest.approx(expected_dkd, rel=1e-5)
    got = grad_summary(zs.grad)
    for key, value in expected_grad.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-8), key


# configs/cifar100/dkd/*.yaml (DISTILLER.TEACHER, DISTILLER.STUDENT) -> DKD.BETA (absent: cfg.py's 8.0)
OFFICIAL_BETA = {
    ("resnet110", "resnet32"): 2.0,  # res110_res32.yaml
    ("resnet32x4", "resnet8x4"): 8.0,  # res32x4_res8x4.yaml
    ("resnet32x4", "ShuffleV1"): 8.0,  # res32x4_shuv1.yaml
    ("resnet32x4", "ShuffleV2"): 8.0,  # res32x4_shuv2.yaml
    ("ResNet50", "MobileNetV2"): 8.0,  # res50_mv2.yaml
    ("resnet56", "resnet20"): 2.0,  # res56_res20.yaml
    ("vgg13", "MobileNetV2"): 6.0,  # vgg13_mv2.yaml
    ("vgg13", "vgg8"): 6.0,  # vgg13_vgg8.yaml
    ("wrn_40_2", "ShuffleV1"): 8.0,  # wrn40_2_shuv1.yaml
    ("wrn_40_2", "wrn_16_2"): 6.0,  # wrn40_2_wrn_16_2.yaml
    ("wrn_40_2", "wrn_40_1"): 6.0,  # wrn40_2_wrn_40_1.yaml
}


def test_dkd_defaults_and_per_pair_beta_are_the_official_configs():
    entry = METHODS.get("dkd")
    p = DKDParams()
    # mdistiller/engine/cfg.py: DKD.CE_WEIGHT 1.0, ALPHA 1.0, BETA 8.0, T 4.0, WARMUP 20; loss_kd weight 1
    assert (entry.ce_weight, entry.weight, p.alpha, p.temperature, p.warmup) == (1.0, 1.0, 1.0, 4.0, 20)
    for (teacher, student), beta in OFFICIAL_BETA.items():
        assert DKDParams().resolved_for(teacher, student).beta == beta, (teacher, student)
    assert DKDLoss(DKDParams().resolved_for("resnet110", "resnet32")).params.beta == 2.0
