"""Golden values for every loss, computed by hand on small tensors."""
import math

import pytest
import torch

from tekapbench.data.loader import Batch
from tekapbench.methods import METHODS, DistillContext, FeatureShapes
from tekapbench.engine.objective import MethodSpec, Objective, TermSpec
from tekapbench.methods.crd import CRDLoss, CRDParams, FixedNegatives, OtherClassSampler, nce_loss
from tekapbench.methods.dkd import DKDLoss, DKDParams, decoupled_kd
from tekapbench.methods.fitnet import conv_regressor
from tekapbench.methods.kd import KDParams, kd_loss
from tekapbench.models.base import ModelOutput
from tekapbench.modifiers.tekap import TeKAP, TeKAPSettings


def softmax(xs, t=1.0):
    e = [math.exp(x / t) for x in xs]
    return [v / sum(e) for v in e]


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def out(logits, embedding=None, features=()):
    logits = torch.as_tensor(logits, dtype=torch.float32)
    emb = logits if embedding is None else embedding
    return ModelOutput(logits=logits, features=tuple(features), preact_features=tuple(features), embedding=emb)


def batch(labels, indices=None):
    labels = torch.as_tensor(labels)
    indices = torch.arange(len(labels)) if indices is None else torch.as_tensor(indices)
    return Batch(images=torch.zeros(len(labels), 3, 4, 4), labels=labels, indices=indices)


S = [[1.0, 2.0, 0.5, -1.0], [0.0, -0.5, 2.5, 1.0]]
T = [[2.0, 1.0, 0.0, 0.0], [-1.0, 0.5, 3.0, 0.2]]
Y = [0, 2]


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_matches_hand_computation(temperature):
    expected = sum(kl(softmax(t, temperature), softmax(s, temperature)) for s, t in zip(S, T)) / 2 * temperature**2
    got = kd_loss(torch.tensor(S), torch.tensor(T), temperature)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_kd_is_zero_for_identical_logits_and_runs_in_fp32_from_bf16():
    z = torch.randn(8, 100).bfloat16()
    loss = kd_loss(z, z, 4.0)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_dkd_terms_match_hand_computation():
    temperature = 2.0
    tckd, nckd = decoupled_kd(torch.tensor(S), torch.tensor(T), torch.tensor(Y), temperature)
    for i, (s, t, y) in enumerate(zip(S, T, Y)):
        ps, pt = softmax(s, temperature), softmax(t, temperature)
        b_s, b_t = [ps[y], 1 - ps[y]], [pt[y], 1 - pt[y]]
        rest_s = softmax([v for j, v in enumerate(s) if j != y], temperature)
        rest_t = softmax([v for j, v in enumerate(t) if j != y], temperature)
        assert tckd[i].item() == pytest.approx(kl(b_t, b_s) * temperature**2, rel=1e-5)
        assert nckd[i].item() == pytest.approx(kl(rest_t, rest_s) * temperature**2, rel=1e-5)


def test_dkd_identity_kd_equals_tckd_plus_weighted_nckd():
    torch.manual_seed(0)
    zs, zt = torch.randn(16, 10) * 3, torch.randn(16, 10) * 3
    y = torch.randint(0, 10, (16,))
    temperature = 4.0
    tckd, nckd = decoupled_kd(zs, zt, y, temperature)
    p_target = torch.softmax(zt / temperature, 1).gather(1, y.view(-1, 1)).squeeze(1)
    for i in range(16):
        kd_i = kd_loss(zs[i:i + 1], zt[i:i + 1], temperature)
        assert kd_i.item() == pytest.approx((tckd[i] + (1 - p_target[i]) * nckd[i]).item(), rel=1e-4, abs=1e-6)


def test_dkd_warmup_ramps_linearly_and_uses_per_pair_beta():
    params = DKDParams(warmup=20).resolved_for("resnet56", "resnet20")
    assert params.beta == 2.0
    assert DKDParams().resolved_for("resnet32x4", "resnet8x4").beta == 8.0
    assert DKDParams(beta=3.0).resolved_for("resnet56", "resnet20").beta == 3.0
    loss = DKDLoss(params)
    s, t, b = out(S), out(T), batch(Y)
    full = loss(s, t, b, epoch=20).item()
    assert loss(s, t, b, epoch=5).item() == pytest.approx(full * 5 / 20, rel=1e-6)
    assert loss(s, t, b, epoch=100).item() == pytest.approx(full, rel=1e-6)
    tckd, nckd = decoupled_kd(torch.tensor(S), torch.tensor(T), torch.tensor(Y), 4.0)
    assert full == pytest.approx((tckd.mean() + 2.0 * nckd.mean()).item(), rel=1e-6)


def test_dkd_refuses_two_classes():
    with pytest.raises(ValueError, match="3 classes"):
        decoupled_kd(torch.randn(2, 2), torch.randn(2, 2), torch.tensor([0, 1]), 4.0)


# -- TeKAP -------------------------------------------------------------------------------------------

def kd_term(temperature=4.0):
    return METHODS.get("kd").term(KDParams(temperature=temperature), None)


def test_tekap_with_alpha_zero_is_a_weighted_copy_of_the_base_loss():
    settings = TeKAPSettings(level="logit", alpha=0.0)
    tekap = TeKAP(kd_term(), settings)
    s, t, b = out(S), out(T), batch(Y)
    base = kd_loss(torch.tensor(S), torch.tensor(T), 4.0).item()
    # official form: 1 * KD(s, t) + 0.8 * sum over N=3 identical synthetic teachers
    assert tekap(s, t, b, epoch=1).item() == pytest.approx((1.0 + 3 * 0.8) * base, rel=1e-6)
    paper = TeKAP(kd_term(), TeKAPSettings(level="logit", alpha=0.0, weighting="paper", **{"lambda": 0.25}))
    assert paper(s, t, b, epoch=1).item() == pytest.approx((0.25 + 3 * 0.75) * base, rel=1e-6)


def test_tekap_closed_form_with_pure_noise_of_zero_variance():
    # alpha = 1, sigma = 0: every synthetic teacher has all-zero logits, i.e. the uniform distribution
    tekap = TeKAP(kd_term(1.0), TeKAPSettings(level="logit", alpha=1.0, sigma=0.0, n_teachers=2))
    s, t, b = out(S), out(T), batch(Y)
    uniform = sum(kl([0.25] * 4, softmax(row)) for row in S) / 2
    expected = kd_loss(torch.tensor(S), torch.tensor(T), 1.0).item() + 2 * 0.8 * uniform
    assert tekap(s, t, b, epoch=1).item() == pytest.approx(expected, rel=1e-5)


def test_tekap_defaults_are_the_official_codes():
    logit = TeKAPSettings(level="logit").resolved()
    assert (logit.n_teachers, logit.alpha, logit.sigma, logit.real_weight, logit.synthetic_weight) == (3, 0.1, 1.0, 1.0, 0.8)
    feature = TeKAPSettings(level="feature").resolved()
    assert (feature.n_teachers, feature.alpha, feature.sigma, feature.synthetic_weight) == (1, 0.1, 0.1, 1.0)


def test_tekap_noise_comes_from_its_own_seeded_generator():
    s, t, b = out(S), out(T), batch(Y)
    values = []
    for seed in (1, 1, 2):
        tekap = TeKAP(kd_term(), TeKAPSettings(level="logit"))
        tekap.reseed(seed)
        torch.manual_seed(123 + len(values))  # the global generator must not matter
        values.append(tekap(s, t, b, epoch=1).item())
    assert values[0] == values[1] != values[2]


def test_tekap_views_perturb_only_what_the_base_reads():
    tekap = TeKAP(kd_term(), TeKAPSettings(level="logit", alpha=0.5))
    teacher = out(T, embedding=torch.ones(2, 3))
    views = tekap.synthetic_views(teacher)
    assert len(views) == 3
    for view in views:
        assert torch.equal(view.embedding, teacher.embedding)
        assert not torch.allclose(view.logits, teacher.logits)
    per_batch = TeKAP(kd_term(), TeKAPSettings(level="logit", alpha=1.0, noise_per="batch"))
    view = per_batch.synthetic_views(teacher)[0]
    assert torch.equal(view.logits[0], view.logits[1])  # one draw shared by the batch


def test_tekap_rejects_a_level_the_base_method_does_not_read():
    with pytest.raises(ValueError, match="changes nothing"):
        TeKAP(kd_term(), TeKAPSettings(level="feature"))


# -- CRD ---------------------------------------------------------------------------------------------

def test_nce_loss_matches_hand_computation():
    scores = torch.tensor([[0.5, 0.1, 0.2], [0.3, 0.4, 0.05]])
    n_data = 10
    m, pn = 2, 1 / 10
    expected = 0.0
    for row in scores.tolist():
        expected += math.log(row[0] / (row[0] + m * pn + 1e-7))
        expected += sum(math.log(m * pn / (v + m * pn + 1e-7)) for v in row[1:])
    assert nce_loss(scores, n_data).item() == pytest.approx(-expected / 2, rel=1e-6)


def test_crd_negatives_are_distinct_samples_of_other_classes_drawn_uniformly():
    # RepDistiller: np.random.choice(cls_negative[target], k, replace=k > len(cls_negative[target]))
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    sampler = OtherClassSampler(labels)
    query = torch.tensor([0, 2, 3])
    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(10)
    for _ in range(2000):
        drawn = sampler.sample(query, 5, generator)  # pools of 7, 6 and 9 candidates
        assert (labels[drawn] != query.unsqueeze(1)).all()
        assert all(len(set(row)) == 5 for row in drawn.tolist())  # without replacement
        counts += torch.bincount(drawn[0], minlength=10)
    assert counts[:3].sum() == 0
    assert (counts[3:] / 2000 - 5 / 7).abs().max() < 0.04  # each candidate in 5 of 7 draws


def crd_context(n=40, classes=4, dim_s=6, dim_t=8):
    labels = torch.arange(n) % classes
    shape = lambda d: FeatureShapes(features=(), embedding_dim=d, num_classes=classes)  # noqa: E731
    return DistillContext(student=shape(dim_s), teacher=shape(dim_t), num_classes=classes,
                          train_labels=labels, device=torch.device("cpu"))


def test_crd_call_on_a_synthetic_teacher_sees_and_updates_the_banks_like_a_second_contrast_call():
    # TeKAP's crd/criterion.py calls the contrast memory again with the perturbed teacher: same indices, the
    # banks as the first call left them, both banks updated again, and the first call's student-side loss
    torch.manual_seed(0)
    crd = CRDLoss(CRDParams(feat_dim=5, nce_k=7), crd_context())
    crd.sampler = FixedNegatives(torch.tensor([[1, 2, 3, 6, 7, 9, 11], [0, 2, 3, 4, 6, 8, 12], [1, 3, 4, 5, 7, 9, 13]]))
    s = out(torch.randn(3, 4), embedding=torch.randn(3, 6, requires_grad=True))
    t = out(torch.randn(3, 4), embedding=torch.randn(3, 8))
    t2 = out(torch.randn(3, 4), embedding=torch.randn(3, 8))
    b = batch(torch.tensor([0, 1, 2]), indices=torch.tensor([0, 5, 10]))
    before = crd.memory_s.clone()
    loss = crd(s, t, b, epoch=1)
    assert torch.isfinite(loss) and loss.item() > 0
    changed = (crd.memory_s != before).any(dim=1).nonzero().flatten().tolist()
    assert changed == [0, 5, 10]
    assert torch.allclose(crd.memory_s[[0, 5, 10]].norm(dim=1), torch.ones(3))
    mem_s, mem_t = crd.memory_s.clone(), crd.memory_t.clone()
    with torch.no_grad():
        v_s, v_t2 = crd.embed_s(s.embedding), crd.embed_t(t2.embedding)
        idx = torch.cat([b.indices.unsqueeze(1), crd.sampler.negatives], dim=1)
        first_t = nce_loss(torch.exp((before[idx] @ crd.embed_t(t.embedding).unsqueeze(2)).squeeze(2) / 0.07)
                           / crd.z_norm[1], 40)  # the real teacher's part, scored before the update
    synthetic = crd(s, t2, b, epoch=1, primary=False)
    # the student bank as the first call left it scores the synthetic teacher; the first call's s_loss is reused
    scores = torch.exp((mem_s[idx] @ v_t2.unsqueeze(2)).squeeze(2) / 0.07) / crd.z_norm[1]
    s_loss = loss.item() - first_t.item()
    assert synthetic.item() == pytest.approx(s_loss + nce_loss(scores, 40).item(), rel=1e-5)
    changed = ((crd.memory_s != mem_s) | (crd.memory_t != mem_t)).any(dim=1).nonzero().flatten().tolist()
    assert changed == [0, 5, 10]
    rows = torch.tensor([0, 5, 10])
    assert torch.allclose(crd.memory_s[rows], torch.nn.functional.normalize(0.5 * mem_s[rows] + 0.5 * v_s), atol=1e-6)
    assert torch.allclose(crd.memory_t[rows], torch.nn.functional.normalize(0.5 * mem_t[rows] + 0.5 * v_t2), atol=1e-6)
    (loss + synthetic).backward()
    assert s.embedding.grad is not None and crd.embed_t.linear.weight.grad is not None


@pytest.mark.parametrize("s_shape,t_shape", [((8, 16, 16), (16, 8, 8)), ((8, 8, 8), (16, 16, 16)),
                                             ((8, 10, 10), (16, 8, 8)), ((8, 8, 8), (8, 8, 8))])
def test_fitnet_regressor_maps_student_onto_teacher_shape(s_shape, t_shape):
    reg = conv_regressor(s_shape, t_shape)
    assert reg(torch.randn(2, *s_shape)).shape == (2, *t_shape)


# -- the objective -----------------------------------------------------------------------------------

def test_objective_is_the_weighted_sum_of_named_terms():
    spec = MethodSpec(ce_weight=0.1, terms=(TermSpec("kd", 0.9, KDParams()),))
    objective = Objective(spec, None)
    s, t, b = out(S), out(T), batch(Y)
    losses = objective(s, t, b, epoch=1)
    assert set(losses) == {"ce", "kd"}
    ce = torch.nn.functional.cross_entropy(torch.tensor(S), torch.tensor(Y)).item()
    assert losses["ce"].item() == pytest.approx(0.1 * ce, rel=1e-6)
    assert losses["kd"].item() == pytest.approx(0.9 * kd_loss(torch.tensor(S), torch.tensor(T), 4).item(), rel=1e-6)
    assert set(Objective(MethodSpec(ce_weight=1.0), None)(s, t, b, epoch=1)) == {"ce"}


def test_fitnet_is_the_mse_between_the_regressed_hint_and_the_teacher_feature():
    shapes = FeatureShapes(features=((2, 4, 4), (3, 4, 4)), embedding_dim=3, num_classes=4)
    ctx = DistillContext(student=shapes, teacher=shapes, num_classes=4, train_labels=torch.arange(4), device=None)
    fitnet = METHODS.get("fitnet").term(METHODS.get("fitnet").params(hint_layer=1), ctx)
    fitnet.regressor = torch.nn.Identity()  # isolate the loss from the regressor's random weights
    fs, ft = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    s = out(torch.zeros(2, 4), features=(torch.zeros(2, 2, 4, 4), fs))
    t = out(torch.zeros(2, 4), features=(torch.zeros(2, 2, 4, 4), ft))
    expected = sum((a - b) ** 2 for a, b in zip(fs.flatten().tolist(), ft.flatten().tolist())) / fs.numel()
    assert fitnet(s, t, batch([0, 1]), epoch=1).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        METHODS.get("fitnet").term(METHODS.get("fitnet").params(hint_layer=2), ctx)


def test_tekap_on_crd_calls_the_contrast_memory_once_per_teacher_in_turn():
    from tekapbench.seeding import derive_seed

    def build():
        torch.manual_seed(0)
        return CRDLoss(CRDParams(feat_dim=5, nce_k=7), crd_context())

    torch.manual_seed(1)
    s = out(torch.randn(3, 4), embedding=torch.randn(3, 6))
    t = out(torch.randn(3, 4), embedding=torch.randn(3, 8))
    b = batch(torch.tensor([0, 1, 2]), indices=torch.tensor([0, 5, 10]))
    plain = build()
    plain.reseed(derive_seed(9, "base"))  # the wrapper reseeds its base with this seed: the same negatives
    calls = [plain(s, t, b, epoch=1), plain(s, t, b, epoch=1, primary=False), plain(s, t, b, epoch=1, primary=False)]
    wrapped = TeKAP(build(), TeKAPSettings(level="feature", alpha=0.0, n_teachers=2))
    wrapped.reseed(9)
    # alpha = 0: the synthetic teachers equal the real one, yet each call sees the banks the previous one updated
    got = wrapped(s, t, b, epoch=1).item()
    assert got == pytest.approx(sum(c.item() for c in calls), rel=1e-6)
    assert got != pytest.approx(3 * calls[0].item(), rel=1e-4)
    assert torch.equal(wrapped.base.memory_s, plain.memory_s) and torch.equal(wrapped.base.memory_t, plain.memory_t)


def test_crd_loss_matches_the_repdistiller_formula_by_hand():
    torch.manual_seed(0)
    crd = CRDLoss(CRDParams(feat_dim=2, nce_k=2, nce_t=0.5), crd_context(n=6, classes=3, dim_s=2, dim_t=2))
    negatives = torch.tensor([[1, 2], [0, 5]])
    crd.sampler = FixedNegatives(negatives)  # fix the draw to compute by hand
    e_s, e_t = torch.tensor([[1.0, 0.0], [0.5, 0.5]]), torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    s, t = out(torch.zeros(2, 3), embedding=e_s), out(torch.zeros(2, 3), embedding=e_t)
    b = batch(torch.tensor([0, 1]), indices=torch.tensor([3, 4]))
    mem_s, mem_t = crd.memory_s.tolist(), crd.memory_t.tolist()

    def embed(layer, x):
        y = [sum(w * xi for w, xi in zip(row, x)) + bias for row, bias in zip(layer.weight.tolist(), layer.bias.tolist())]
        norm = math.sqrt(sum(v * v for v in y))
        return [v / norm for v in y]

    def nce(rows, n_data=6):
        m = len(rows[0]) - 1
        total = 0.0
        for row in rows:
            total += math.log(row[0] / (row[0] + m / n_data + 1e-7))
            total += sum(math.log((m / n_data) / (v + m / n_data + 1e-7)) for v in row[1:])
        return -total / len(rows)

    scores = {"s": [], "t": []}
    for i in range(2):
        idx = [int(b.indices[i])] + negatives[i].tolist()
        v_s, v_t = embed(crd.embed_s.linear, e_s[i].tolist()), embed(crd.embed_t.linear, e_t[i].tolist())
        scores["s"].append([math.exp(sum(a * c for a, c in zip(mem_t[j], v_s)) / 0.5) for j in idx])
        scores["t"].append([math.exp(sum(a * c for a, c in zip(mem_s[j], v_t)) / 0.5) for j in idx])
    expected = 0.0
    for key in ("s", "t"):
        z = sum(sum(row) for row in scores[key]) / 6 * 6  # mean over the 6 scores, times n_data
        expected += nce([[v / z for v in row] for row in scores[key]])
    assert crd(s, t, b, epoch=1).item() == pytest.approx(expected, rel=1e-5)
