"""Golden tests: CRD and CRD+TeKAP(F) compute what the official code computes.

Expected numbers are repr()s printed by RUNNING the official criteria on the fixed tensors below (the script
that did it is not committed; it imported the official ``crd`` package, CPU-patched, and replaced
``torch.randn_like`` by the step's fixed noise):

- CRD: github:HobbitLong/RepDistiller@b84f547c5db6a35318d4671d7d5c4de74c822403, crd/criterion.py
  (CRDLoss, ContrastLoss), crd/memory.py (ContrastMemory), called as train_student.py/helper/loops.py do:
  ``criterion_kd(feat_s[-1], feat_t[-1], index, contrast_idx)`` with ``contrast_idx[:, 0] = index``.
  Only patch: ``self.multinomial.cuda()`` removed (CPU run; the alias sampler is unused when idx is given).
- CRD+TeKAP(F): github:mdimtiazh/TeKAP@279d380ced180a9cc07291cc54edd4ee7a0ce6f7, crd/criterion.py CRDLoss.forward:
  ``f_t_1 = 0.9 * f_t + 0.1 * (0.1 * randn)`` on the pooled teacher feature, embedded by the same ``embed_t``,
  scored by a SECOND ``self.contrast(f_s, f_t_1, idx, contrast_idx)`` call (memory already updated by the first
  call, updated again), returning ``(s_loss + t_loss) + (s_loss + t_loss_1)`` (s_loss of the first call twice).

Two training steps on a 40-sample, 4-class set (embed weights unchanged between them, gradients zeroed); the
second batch re-uses memory rows of the first (0, 10) and its negatives read rows the first step updated.
"""
import pytest
import torch

from tekapbench.data.loader import Batch
from tekapbench.methods import DistillContext, FeatureShapes
from tekapbench.methods.crd import CRDLoss, CRDParams, FixedNegatives, OtherClassSampler
from tekapbench.models.base import ModelOutput
from tekapbench.modifiers import tekap as tekap_module
from tekapbench.modifiers.tekap import TeKAP, TeKAPSettings

from tensors import fixed

B, N, C, DS, DT, FD, K = 8, 40, 4, 12, 16, 8, 16


LABELS = torch.randint(0, C, (N,), generator=torch.Generator().manual_seed(100))
STEPS = [  # batch positions in the training set, pooled features, TeKAP noise, seed of the negatives
    dict(idx=torch.arange(0, 40, 5), fs=fixed((B, DS), 11), ft=fixed((B, DT), 12), eps=fixed((B, DT), 13), seed=1),
    dict(idx=torch.arange(0, 16, 2), fs=fixed((B, DS), 21), ft=fixed((B, DT), 22), eps=fixed((B, DT), 23), seed=2),
]


def negatives(idx, seed):
    """K distinct other-class samples per row (a fixed draw, handed to both implementations)."""
    rows = []
    for i, j in enumerate(idx.tolist()):
        pool = (LABELS != LABELS[j]).nonzero().flatten()
        perm = torch.randperm(pool.numel(), generator=torch.Generator().manual_seed(seed * 100 + i))[:K]
        rows.append(pool[perm])
    return torch.stack(rows)


OFFICIAL_CRD = {
    # github:HobbitLong/RepDistiller@b84f547c5db6a35318d4671d7d5c4de74c822403 crd/criterion.py CRDLoss.forward,
    # crd/memory.py ContrastMemory.forward (memory_v1 = student bank, memory_v2 = teacher bank; Z = params[2:4])
    "steps": [
        {
            "loss": 18.2476806640625,
            "grad_s_norm": 1.8943614959716797,
            "grad_t_norm": 2.2369778156280518,
            "grad_t_row0": [0.19555410742759705, -0.01045688521116972, 0.13615736365318298, 0.057773102074861526],
            "grad_s_row1": [-0.046106934547424316, 0.28408557176589966, 0.10472851991653442, 0.011519502848386765],
        },
        {
            "loss": 21.502300262451172,
            "grad_s_norm": 1.732638955116272,
            "grad_t_norm": 1.738850712776184,
            "grad_t_row0": [-0.07891570776700974, -0.15081410109996796, -0.06891263276338577, -0.09130573272705078],
            "grad_s_row1": [0.23094208538532257, -0.17079472541809082, -0.01740531623363495, -0.18974824249744415],
        },
    ],
    "z": [45314.1484375, 90425.65625],
    "memory_s": {
        "sum": 1.8077187538146973, "abs_sum": 88.68498229980469,
        0: [0.2593623697757721, 0.0895938128232956, -0.6319220066070557, -0.4174579083919525,
            0.5147529244422913, 0.22221918404102325, 0.15118557214736938, 0.11789190769195557],
        35: [-0.14834044873714447, -0.3067804276943207, 0.27301961183547974, 0.04534226283431053,
             0.020361648872494698, -0.5313992500305176, 0.05927737429738045, -0.7217836976051331],
    },
    "memory_t": {
        "sum": -1.8869552612304688, "abs_sum": 91.65116119384766,
        0: [-0.49032512307167053, -0.4452022314071655, -0.2665565311908722, -0.4001050889492035,
            0.3859986960887909, -0.06448797136545181, -0.35102379322052, -0.23209571838378906],
        35: [-0.5889925360679626, 0.27501028776168823, 0.05910932272672653, 0.5335187911987305,
             0.39150822162628174, -0.22120213508605957, -0.2763814330101013, -0.10356202721595764],
    },
}

OFFICIAL_TEKAP_F = {
    # github:mdimtiazh/TeKAP@279d380ced180a9cc07291cc54edd4ee7a0ce6f7 crd/criterion.py CRDLoss.forward (loss + loss_1),
    # crd/memory.py ContrastMemory.forward, torch.randn_like returning the fixed noise EPS of the step
    "steps": [
        {
            "loss": 38.79815673828125,
            "grad_s_norm": 3.7887229919433594,
            "grad_t_norm": 4.0034966468811035,
            "grad_t_row0": [0.3524395823478699, 0.013669622130692005, 0.17746324837207794, 0.07442635297775269],
            "grad_s_row1": [-0.09221386909484863, 0.5681711435317993, 0.20945703983306885, 0.02303900569677353],
        },
        {
            "loss": 43.00680923461914,
            "grad_s_norm": 3.621330738067627,
            "grad_t_norm": 3.2354729175567627,
            "grad_t_row0": [0.03411716967821121, -0.48560699820518494, -0.22414390742778778, -0.04379766806960106],
            "grad_s_row1": [0.4200819134712219, -0.3948430120944977, 0.003034429857507348, -0.4600156247615814],
        },
    ],
    "z": [45314.1484375, 90425.65625],
    "memory_s": {
        "sum": 2.321305513381958, "abs_sum": 88.24835205078125,
        0: [0.03734729439020157, 0.00628622667863965, -0.6484797596931458, -0.41977372765541077,
            0.3959641754627228, 0.15556830167770386, 0.23902978003025055, 0.4046052396297455],
        35: [-0.09923733025789261, -0.16735409200191498, 0.225727379322052, 0.013504852540791035,
             0.19459228217601776, -0.7165576815605164, 0.05702721327543259, -0.5970226526260376],
    },
    "memory_t": {
        "sum": 0.15091562271118164, "abs_sum": 90.81180572509766,
        0: [-0.258924663066864, -0.6320008635520935, -0.12572303414344788, -0.16905970871448517,
            0.4530925750732422, -0.12068405747413635, -0.43493813276290894, -0.28304898738861084],
        35: [-0.4139266610145569, 0.05258595943450928, 0.11687908321619034, 0.7017929553985596,
             0.46299105882644653, 0.005776147823780775, -0.32107844948768616, -0.04732794687151909],
    },
}


def build_crd():
    shape = lambda d: FeatureShapes(features=(), embedding_dim=d, num_classes=C)  # noqa: E731
    ctx = DistillContext(student=shape(DS), teacher=shape(DT), num_classes=C, train_labels=LABELS,
                         device=torch.device("cpu"))
    crd = CRDLoss(CRDParams(feat_dim=FD, nce_k=K), ctx)
    with torch.no_grad():
        crd.embed_s.linear.weight.copy_(fixed((FD, DS), 1))
        crd.embed_s.linear.bias.copy_(fixed((FD,), 2))
        crd.embed_t.linear.weight.copy_(fixed((FD, DT), 3))
        crd.embed_t.linear.bias.copy_(fixed((FD,), 4))
        crd.memory_s.copy_(fixed((N, FD), 5) * 0.35)  # official memory_v1
        crd.memory_t.copy_(fixed((N, FD), 6) * 0.35)  # official memory_v2
    return crd


def output(embedding):
    return ModelOutput(logits=torch.zeros(B, C), features=(), preact_features=(), embedding=embedding)


def run_two_steps(term, crd, monkeypatch):
    got = []
    for step in STEPS:
        crd.sampler = FixedNegatives(negatives(step["idx"], step["seed"]))
        eps = step["eps"]
        monkeypatch.setitem(tekap_module.NOISE, "normal", lambda shape, generator, device, eps=eps: eps.clone())
        batch = Batch(images=torch.zeros(B, 3, 4, 4), labels=LABELS[step["idx"]], indices=step["idx"])
        term.zero_grad()
        loss = term(output(step["fs"]), output(step["ft"]), batch, epoch=1)
        loss.backward()
        got.append((loss.item(), crd.embed_s.linear.weight.grad.clone(), crd.embed_t.linear.weight.grad.clone()))
    return got


def check(expected, got, crd):
    close = dict(rel=1e-5, abs=1e-6)  # abs: entries near zero
    for want, (loss, grad_s, grad_t) in zip(expected["steps"], got):
        assert loss == pytest.approx(want["loss"], rel=1e-5)
        assert grad_s.norm().item() == pytest.approx(want["grad_s_norm"], rel=1e-5)
        assert grad_t.norm().item() == pytest.approx(want["grad_t_norm"], rel=1e-5)
        assert grad_t[0, :4].tolist() == pytest.approx(want["grad_t_row0"], **close)
        assert grad_s[1, :4].tolist() == pytest.approx(want["grad_s_row1"], **close)
    assert crd.z_norm.tolist() == pytest.approx(expected["z"], rel=1e-5)
    for name in ("memory_s", "memory_t"):
        bank, want = getattr(crd, name), expected[name]
        assert bank.sum().item() == pytest.approx(want["sum"], abs=1e-5)  # a sum of +-: absolute
        assert bank.abs().sum().item() == pytest.approx(want["abs_sum"], rel=1e-5)
        for row in (0, 35):
            assert bank[row].tolist() == pytest.approx(want[row], **close)


def test_crd_matches_repdistiller_over_two_steps(monkeypatch):
    crd = build_crd()
    check(OFFICIAL_CRD, run_two_steps(crd, crd, monkeypatch), crd)


def test_crd_with_feature_level_tekap_matches_the_official_tekap_code_over_two_steps(monkeypatch):
    crd = build_crd()
    term = TeKAP(crd, TeKAPSettings(level="feature"))  # defaults: N=1, alpha=0.1, sigma=0.1, weights 1 and 1
    check(OFFICIAL_TEKAP_F, run_two_steps(term, crd, monkeypatch), crd)


# -- the negatives (RepDistiller dataset/cifar100.py CIFAR100InstanceSample.__getitem__, mode 'exact':
#    np.random.choice(cls_negative[target], k, replace=k > len(cls_negative[target]))) ----------------------

def test_negatives_are_distinct_other_class_samples_drawn_uniformly():
    labels = torch.randint(0, 10, (300,), generator=torch.Generator().manual_seed(7))
    sampler = OtherClassSampler(labels)
    query = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(8))
    k = 200  # smaller than every pool (about 270), so no sample may repeat within a row
    generator = torch.Generator().manual_seed(0)
    hits = torch.zeros(64, 300)
    draws = 200
    for _ in range(draws):
        drawn = sampler.sample(query, k, generator)
        assert drawn.shape == (64, k)
        assert (labels[drawn] != query.unsqueeze(1)).all()  # never the sample's own class
        ordered = drawn.sort(dim=1).values
        assert (ordered[:, 1:] != ordered[:, :-1]).all()  # no duplicates within a row
        hits.scatter_add_(1, drawn, torch.ones_like(drawn, dtype=torch.float))
    # every other-class sample is drawn with probability k / pool per draw
    own = labels.unsqueeze(0) == query.unsqueeze(1)
    pool = (~own).sum(dim=1, keepdim=True).float()
    freq = hits / draws
    assert (freq[own] == 0).all()
    expected = (k / pool).expand_as(freq)[~own]
    z = (freq[~own] - expected) / (expected * (1 - expected) / draws).sqrt()  # binomial z-scores, ~17k cells
    assert abs(z.mean().item()) < 0.05
    assert 0.95 < z.std().item() < 1.05  # drawing with replacement would spread them about twice as wide
    assert z.abs().max() < 6.5


def test_negatives_repeat_only_when_k_exceeds_the_other_class_pool():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])  # pools: class 0: 7, class 2: 6, class 3: 9
    sampler = OtherClassSampler(labels)
    generator = torch.Generator().manual_seed(0)
    query = torch.tensor([0, 2, 3, 3])
    drawn = sampler.sample(query, 8, generator)  # k=8 exceeds the pools of classes 0 and 2, not of 3
    assert (labels[drawn] != query.unsqueeze(1)).all()
    assert all(len(set(row)) == 8 for row in drawn[2:].tolist())  # class 3: 8 of its 9 candidates
    counts = torch.zeros(10)
    for _ in range(500):  # with replacement: each of class 0's 7 candidates equally often
        counts += torch.bincount(sampler.sample(torch.tensor([0]), 8, generator)[0], minlength=10)
    assert counts[:3].sum() == 0
    assert (counts[3:] / counts.sum() - 1 / 7).abs().max() < 0.02


def test_negatives_come_from_the_terms_seeded_generator():
    labels = torch.arange(50) % 5
    sampler = OtherClassSampler(labels)
    query = torch.tensor([0, 1, 4])
    a = sampler.sample(query, 20, torch.Generator().manual_seed(3))
    b = sampler.sample(query, 20, torch.Generator().manual_seed(3))
    c = sampler.sample(query, 20, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
