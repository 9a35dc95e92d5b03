"""Golden test: MLKD against its official implementation, run on fixed tensors.

Expected numbers were printed by running the official code (never ours) on the tensors built below:
github:Jin-Ying/Multi-Level-Logit-Distillation@5ee473fcf193dfb00a0598b64d0acfe6ad58a482
mdistiller/distillers/KD_ours.py, ``KD_ours.forward_train`` with the defaults of mdistiller/engine/cfg.py
(KD.TEMPERATURE 4, KD.LOSS.CE_WEIGHT 0.1, KD.LOSS.KD_WEIGHT 0.9; configs/cifar100/ours/*.yaml set none),
the total summed as mdistiller/engine/trainer.py ``AugTrainer.train_iter`` does. The student and teacher
were stand-ins returning these logits for the weak and the strong view; the file's unused
``termios``/``turtle`` imports were removed to run it. The halves of ``loss_kd`` were read from the
function's locals (``loss_kd_weak``, ``loss_kd_strong``) at its return.
"""
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from tekapbench.data.loader import Batch
from tekapbench.engine.objective import MethodSpec, Objective, TermSpec
from tekapbench.methods import METHODS
from tekapbench.methods.mlkd import MLKDLoss, MLKDParams

from tensors import fixed, grad_summary, out

B, C = 8, 10
SOURCE = "github:Jin-Ying/Multi-Level-Logit-Distillation@5ee473fcf193dfb00a0598b64d0acfe6ad58a482"


def logits():
    """weak student, weak teacher, strong student, strong teacher, labels (teachers favour the label)."""
    y = torch.randint(0, C, (B,), generator=torch.Generator().manual_seed(5))
    sw, tw, ss, ts = fixed((B, C), 1) * 2, fixed((B, C), 2) * 3, fixed((B, C), 3) * 2, fixed((B, C), 4) * 3
    tw[torch.arange(B), y] += 4.0
    ts[torch.arange(B), y] += 2.0
    return sw, tw, ss, ts, y


def test_mlkd_defaults_are_the_official_ones():
    entry = METHODS.get("mlkd")
    params = MLKDParams()
    # cfg.py KD.LOSS.CE_WEIGHT 0.1 (weak + strong CE), KD.LOSS.KD_WEIGHT 0.9; T = 4 plus 2, 3, 5, 6 in KD_ours.py
    assert (entry.ce_weight, entry.weight, params.behaviour) == (0.1, 0.9, "official")
    assert entry.weight * params.strong_ce_weight == pytest.approx(0.1, rel=1e-12)
    assert sorted(params.temperatures) == [2.0, 3.0, 4.0, 5.0, 6.0]


def test_mlkd_loss_parts_equal_official():
    sw, tw, ss, ts, _ = logits()
    parts = MLKDLoss(MLKDParams()).official_parts(sw, tw, ss, ts)
    w = METHODS.get("mlkd").weight
    assert w * parts["instance_weak"].item() == pytest.approx(17.533859252929688, rel=1e-5)  # loss_kd_weak
    assert w * parts["instance_strong"].item() == pytest.approx(28.320905685424805, rel=1e-5)  # loss_kd_strong
    assert w * parts["class"].item() == pytest.approx(0.18618144094944, rel=1e-5)  # loss_cc
    assert w * parts["batch"].item() == pytest.approx(0.10779369622468948, rel=1e-5)  # loss_bc


def test_mlkd_objective_and_student_gradients_equal_official():
    sw, tw, ss, ts, y = logits()
    entry = METHODS.get("mlkd")
    spec = MethodSpec(ce_weight=entry.ce_weight, terms=(TermSpec("mlkd", entry.weight, MLKDParams()),))
    zw, zs = sw.clone().requires_grad_(True), ss.clone().requires_grad_(True)
    b = Batch(images=torch.zeros(B, 3, 4, 4), labels=y, indices=torch.arange(B), views={"strong": (out(zs), out(ts))})
    losses = Objective(spec, None)(out(zw), out(tw), b, epoch=1)
    total = sum(losses.values())
    total.backward()
    assert total.item() == pytest.approx(46.968353271484375, rel=1e-5)  # sum of the returned losses
    # loss_ce = 0.1 * (CE(weak) + CE(strong)) = 0.819615364074707, CE(strong) = 3.5024359226226807
    ce_strong = F.cross_entropy(ss, y).item()
    assert ce_strong == pytest.approx(3.5024359226226807, rel=1e-5)
    assert losses["ce"].item() + 0.1 * ce_strong == pytest.approx(0.819615364074707, rel=1e-5)
    # loss_kd + loss_cc + loss_bc = 45.854766845703125 + 0.18618144094944 + 0.10779369622468948
    assert losses["mlkd"].item() - 0.1 * ce_strong == pytest.approx(46.148741982877254, rel=1e-5)
    expected = {  # d total / d logits of the student, official
        "weak": {"norm": 2.0468201637268066, "proj": -3.4480910301208496,
                 "g00": 0.05473420023918152, "g37": 0.0536893755197525},
        "strong": {"norm": 1.1295077800750732, "proj": 2.037228584289551,
                   "g00": 0.06405649334192276, "g37": -0.14257633686065674},
    }
    for view, z in (("weak", zw), ("strong", zs)):
        got = grad_summary(z.grad)
        for key, value in expected[view].items():
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-8), (view, key)


def test_official_masks_keep_the_less_confident_half():
    _, tw, _, _, _ = logits()
    sample_mask, class_mask = MLKDLoss(MLKDParams())._masks(tw, keep_confident=False)
    # official: confidence.le(np.percentile(confidence, 50)) on the weak teacher, per sample and per class
    assert sample_mask.tolist() == [False, True, False, True, False, True, False, True]
    assert class_mask.tolist() == [True, False, False, False, True, True, True, False, True, False]
