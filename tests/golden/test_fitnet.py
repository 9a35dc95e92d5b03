"""Golden test: FitNet against its official implementation, run on fixed tensors.

Expected numbers were printed by running the official code (never ours) on the tensors built below:
github:HobbitLong/RepDistiller@b84f547c5db6a35318d4671d7d5c4de74c822403
- models/util.py, ConvReg(s_shape, t_shape) (use_relu=True, train mode as in helper/loops.py train_distill),
  its conv weight and bias overwritten with the fixed state below (BatchNorm keeps its default init);
- distiller_zoo/FitNet.py, HintLoss.forward (nn.MSELoss) on ``ConvReg(feat_s[hint_layer])`` and
  ``feat_t[hint_layer]``; train_student.py: --hint_layer 2, weight ``-b 100`` with ``-r 1 -a 0``
  (scripts/run_cifar_distill.sh).
"""
import pytest
import torch

from tekapbench.data.loader import Batch
from tekapbench.methods import METHODS, DistillContext, FeatureShapes
from tekapbench.methods.fitnet import FitNetParams
from tekapbench.models.base import ModelOutput

from tensors import fixed

B = 8


# case: (student feature (C,H,W), teacher feature (C,H,W), official values)
# values: HintLoss, |d loss/d f_s|, sum(d loss/d f_s * fixed(f_s.shape, 98)), |d loss/d conv.weight|,
#         then after a second forward on 0.5 * f_s: sum(bn.running_mean), sum(bn.running_var)
CASES = {
    "same_size_1x1": ((32, 8, 8), (64, 8, 8),  # ConvReg -> Conv2d(32, 64, kernel_size=(1, 1))
                      (0.6767125129699707, 0.010147768072783947, 0.01013593003153801, 0.07223452627658844,
                       -0.3123176097869873, 52.64741516113281)),
    "stride_2": ((32, 16, 16), (64, 8, 8),  # ConvReg -> Conv2d(32, 64, 3, stride=2, padding=1)
                 (0.6923619508743286, 0.009839221835136414, -0.005514740943908691, 0.06089726835489273,
                  0.6169085502624512, 58.63679122924805)),
    "upsample": ((64, 4, 4), (64, 8, 8),  # ConvReg -> ConvTranspose2d(64, 64, 4, stride=2, padding=1)
                 (0.6932411193847656, 0.008953829295933247, 0.010764237493276596, 0.07089348882436752,
                  0.026868179440498352, 58.53193664550781)),
}


def out(features):
    z = torch.zeros(B, 100)
    return ModelOutput(logits=z, features=features, preact_features=features, embedding=z)


@pytest.mark.parametrize("case", list(CASES))
def test_fitnet_hint_loss_gradient_and_bn_state_equal_official(case):
    index = list(CASES).index(case)
    s_shape, t_shape, expected = CASES[case]
    filler = (4, 2, 2)  # other stages: never read with hint_layer 2
    ctx = DistillContext(
        student=FeatureShapes(features=(filler, filler, s_shape, filler), embedding_dim=4, num_classes=100),
        teacher=FeatureShapes(features=(filler, filler, t_shape, filler), embedding_dim=4, num_classes=100),
        num_classes=100, train_labels=torch.arange(100), device=torch.device("cpu"))
    term = METHODS.get("fitnet").term(FitNetParams(), ctx)
    conv, bn = term.regressor[0], term.regressor[1]
    with torch.no_grad():  # the fixed state copied into the official ConvReg's conv
        conv.weight.copy_(fixed(tuple(conv.weight.shape), 10 + index) * 0.1)
        conv.bias.copy_(fixed(tuple(conv.bias.shape), 20 + index) * 0.1)
    term.train()
    f_s = fixed((B, *s_shape), 30 + index).relu().requires_grad_(True)  # post-ReLU, like is_feat=True
    f_t = fixed((B, *t_shape), 40 + index).relu()
    other_s = torch.zeros(B, *filler)
    batch = Batch(images=torch.zeros(B, 3, 4, 4), labels=torch.zeros(B, dtype=torch.long), indices=torch.arange(B))
    loss = term(out((other_s, other_s, f_s, other_s)), out((other_s, other_s, f_t, other_s)), batch, epoch=1)
    loss.backward()
    hint, g_norm, g_proj, w_norm, rm_sum, rv_sum = expected
    assert loss.item() == pytest.approx(hint, rel=1e-5)
    assert f_s.grad.norm().item() == pytest.approx(g_norm, rel=1e-5)
    assert (f_s.grad * fixed((B, *s_shape), 98)).sum().item() == pytest.approx(g_proj, rel=1e-4, abs=1e-7)
    assert conv.weight.grad.norm().item() == pytest.approx(w_norm, rel=1e-5)
    term(out((other_s, other_s, f_s.detach() * 0.5, other_s)), out((other_s, other_s, f_t, other_s)), batch, epoch=1)
    assert bn.running_mean.sum().item() == pytest.approx(rm_sum, rel=1e-4, abs=1e-6)
    assert bn.running_var.sum().item() == pytest.approx(rv_sum, rel=1e-5)
    assert int(bn.num_batches_tracked) == 2


def test_fitnet_defaults_are_the_official_ones():
    entry = METHODS.get("fitnet")
    # train_student.py --hint_layer default 2; run_cifar_distill.sh FitNet: -a 0 -b 100, -r default 1
    assert (FitNetParams().hint_layer, entry.ce_weight, entry.weight) == (2, 1.0, 100.0)
