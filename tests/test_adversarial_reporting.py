"""The adversarial evaluation reports what it measured: notes from the stored settings, subsets kept
apart in tables and plots, AutoAttack's norm and version stored, RobustBench's subset protocol, and
stored results that keep their names (and the regression gate its score names)."""
import pytest
import torch
import torchattacks

from tekapbench.data import DataOptions
from tekapbench.data.base import ImageSplits
from tekapbench.evaluations import EVALUATIONS, EvalContext
from tekapbench.evaluations.adversarial import ATTACKS, AdversarialParams, attack_rows, evaluation_subset
from tekapbench.evaluations.base import NormalizedLogits, evaluation_key
from tekapbench.models.base import ModelOutput
from tekapbench.plots import PLOTS
from tekapbench.tables import LAYOUTS, Cell


class Results:
    """A ResultsView over stored evaluations given as {(run id, evaluation name): [stored, ...]}."""

    def __init__(self, evaluations):
        self.stored, self.metric_label = evaluations, "last-epoch top-1"

    def accuracy(self, run_id):
        return None

    def evaluations(self, run_id, name):
        return self.stored.get((run_id, name), [])


class Linear(torch.nn.Module):
    """A tiny differentiable classifier, enough for attacks to run in milliseconds."""

    def __init__(self, num_classes=3, pixels=3 * 4 * 4):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(pixels, num_classes)

    def forward(self, x):
        logits = self.fc(x.flatten(1))
        return ModelOutput(logits=logits, features=(), preact_features=(), embedding=logits)


def stored(results, settings=None, clean=90.0):
    """A stored adversarial evaluation as the runner writes it (only the keys layouts read)."""
    params = AdversarialParams(**(settings or {}))
    return {"evaluation": "adversarial", "settings": params.model_dump(mode="json"),
            "results": {"num_examples": params.num_examples, "subset": params.subset, "seed": params.seed,
                        "clean_acc": clean, "results": results}}


def rows_of(params: AdversarialParams, robust=50.0):
    """Result rows as attack_rows writes them (the attacks' own details), with a made-up robust accuracy."""
    model = NormalizedLogits(Linear(), (0.5,) * 3, (0.5,) * 3)
    rows = []
    for name in params.attacks:
        for eps in params.eps:
            _, details = ATTACKS.get(name)(model, eps / 255, params, 3)
            rows.append({"attack": name, "eps_255": eps, "robust_acc": robust, "attack_success_rate": 0.0,
                         "num_examples": params.num_examples, "subset": params.subset, "seed": params.seed,
                         "torchattacks": torchattacks.__version__, **details})
    return rows


def table_for(*evaluations, cells=None):
    cells = cells or [Cell("d", "t", "s", "KD", 0, "r0")]
    return LAYOUTS.get("robustness")(cells, Results({("r0", "adversarial"): list(evaluations)}))


def pgd_notes(table):
    return [n for n in table.notes if n.startswith("PGD")]


# -- the notes follow the stored settings --------------------------------------------------------------

def test_notes_state_the_stored_pgd_settings_eps_over_4_or_fixed():
    eps_quarter = dict(attacks=["pgd"], eps=[2.0, 8.0])
    fixed = dict(attacks=["pgd"], eps=[2.0, 8.0], pgd_steps=20, pgd_step_size=0.5, pgd_random_start=False)
    [quarter_table] = table_for(stored(rows_of(AdversarialParams(**eps_quarter)), eps_quarter))
    [fixed_table] = table_for(stored(rows_of(AdversarialParams(**fixed)), fixed))
    assert pgd_notes(quarter_table) == ["PGD: L-inf, 10 steps, step eps/4 (0.5/255 at eps 2/255, 2/255 at eps 8/255), "
                                        f"random start, 1 restart, torchattacks {torchattacks.__version__}"]
    assert pgd_notes(fixed_table) == ["PGD: L-inf, 20 steps, step fixed at 0.5/255, no random start, 1 restart, "
                                      f"torchattacks {torchattacks.__version__}"]
    assert "subset: 1000 test images drawn at random with seed 0 (which also seeds the attacks)" in fixed_table.notes
    assert not any("eps/4" in n for n in fixed_table.notes)  # the old fixed footnote is gone


def test_rows_stored_before_the_step_rule_take_it_from_the_settings():
    legacy_row = {"attack": "pgd", "eps_255": 2.0, "robust_acc": 40.0, "num_examples": 200, "seed": 0, "steps": 10,
                  "step_size_255": 0.5, "random_start": True, "restarts": 1}  # as stored before norm and step_rule
    settings = {"attacks": ["pgd"], "eps": [2.0], "num_examples": 200}
    [by_eps] = table_for(stored([legacy_row], settings))
    [fixed] = table_for(stored([legacy_row], {**settings, "pgd_step_size": 0.5}))
    assert pgd_notes(by_eps) == ["PGD: L-inf, 10 steps, step eps/4 (0.5/255 at eps 2/255), random start, 1 restart"]
    assert pgd_notes(fixed) == ["PGD: L-inf, 10 steps, step fixed at 0.5/255, random start, 1 restart"]


def test_old_and_new_rows_of_one_protocol_share_their_columns():
    """A run evaluated before norm, step_rule and version were stored and one evaluated after: one protocol."""
    settings = dict(attacks=["pgd", "autoattack"], eps=[8.0])
    new_rows = rows_of(AdversarialParams(**settings), robust=20.0)
    old_rows = [{k: v for k, v in r.items() if k not in ("norm", "step_rule", "version", "torchattacks", "subset")}
                for r in rows_of(AdversarialParams(**settings), robust=10.0)]
    cells = [Cell("d", "t", "s", "KD", 0, "old"), Cell("d", "t", "s", "KD", 1, "new")]
    [table] = LAYOUTS.get("robustness")(cells, Results({("old", "adversarial"): [stored(old_rows, settings)],
                                                        ("new", "adversarial"): [stored(new_rows, settings)]}))
    assert table.columns == ["clean", "AUTOATTACK 8/255", "PGD 8/255"]
    assert table.cells["KD", "PGD 8/255"].mean == 15.0 and table.cells["KD", "PGD 8/255"].n == 2


def test_notes_state_fgsm_and_autoattack_settings():
    settings = dict(attacks=["fgsm", "autoattack"], eps=[8.0], autoattack_steps=7)
    [table] = table_for(stored(rows_of(AdversarialParams(**settings)), settings))
    version = torchattacks.__version__
    assert f"FGSM: L-inf, 1 step, step eps, 1 restart, torchattacks {version}" in table.notes
    assert (f"AUTOATTACK: standard suite (APGD-CE, APGD-T, FAB-T, Square), L-inf, 7 steps, Square 5000 queries, "
            f"2 target classes, 1 restart, torchattacks {version}") in table.notes
    assert table.columns == ["clean", "AUTOATTACK 8/255", "FGSM 8/255"]


# -- different subsets never share a cell --------------------------------------------------------------

def test_two_subsets_of_one_run_are_two_tables_and_two_figures():
    small = dict(attacks=["pgd"], eps=[2.0], num_examples=500)
    large = dict(attacks=["pgd"], eps=[2.0], num_examples=1000)
    evaluations = [stored(rows_of(AdversarialParams(**small), robust=41.0), small, clean=91.0),
                   stored(rows_of(AdversarialParams(**large), robust=43.0), large, clean=93.0)]
    tables = table_for(*evaluations)
    assert len(tables) == 2 and len({t.title for t in tables}) == 2
    values = {t.title.rsplit(" · ", 1)[1]: (t.cells["KD", "clean"].mean, t.cells["KD", "PGD 2/255"].mean)
              for t in tables}
    assert values == {"500 random test images, seed 0": (91.0, 41.0), "1000 random test images, seed 0": (93.0, 43.0)}
    assert any("subset: 500 test images" in n for n in tables[0].notes + tables[1].notes)
    assert any("subset: 1000 test images" in n for n in tables[0].notes + tables[1].notes)

    figures = PLOTS.get("robustness")([Cell("d", "t", "s", "KD", 0, "r0")],
                                      Results({("r0", "adversarial"): evaluations}))
    assert len(figures) == 2
    lines = {name: fig.axes[0].lines[0].get_ydata().tolist() for name, fig in figures.items()}
    assert sorted(lines.values()) == [[91.0, 41.0], [93.0, 43.0]]  # clean at eps 0, then PGD: never averaged


def test_seeds_and_selections_are_subsets_too():
    base = dict(attacks=["fgsm"], eps=[4.0], num_examples=100)
    evaluations = [stored(rows_of(AdversarialParams(**base), robust=10.0), base),
                   stored(rows_of(AdversarialParams(**base, seed=1), robust=11.0), {**base, "seed": 1}),
                   stored(rows_of(AdversarialParams(**base, subset="first"), robust=12.0), {**base, "subset": "first"})]
    tables = table_for(*evaluations)
    assert sorted(t.cells["KD", "FGSM 4/255"].mean for t in tables) == [10.0, 11.0, 12.0]
    first = next(t for t in tables if t.cells["KD", "FGSM 4/255"].mean == 12.0)
    assert first.title.endswith("first 100 test images, seed 0")
    assert "subset: the first 100 test images in order (RobustBench's protocol); attacks seeded with 0" in first.notes


def test_one_attack_with_two_settings_on_one_subset_gets_two_numbered_columns():
    ten, twenty = dict(attacks=["pgd"], eps=[2.0]), dict(attacks=["pgd"], eps=[2.0], pgd_steps=20)
    [table] = table_for(stored(rows_of(AdversarialParams(**ten), robust=30.0), ten),
                        stored(rows_of(AdversarialParams(**twenty), robust=25.0), twenty))
    assert table.columns == ["clean", "PGD (1) 2/255", "PGD (2) 2/255"]
    assert {table.cells["KD", c].mean for c in table.columns[1:]} == {30.0, 25.0}
    assert [n.split(",")[1].strip() for n in pgd_notes(table)] in (["10 steps", "20 steps"], ["20 steps", "10 steps"])


def test_same_subset_evaluations_share_one_table():
    """The GPU suite's two evaluations (FGSM+PGD, AutoAttack) on one subset make one table, as before."""
    pgd, auto = dict(attacks=["fgsm", "pgd"], eps=[8.0]), dict(attacks=["autoattack"], eps=[8.0])
    [table] = table_for(stored(rows_of(AdversarialParams(**pgd)), pgd),
                        stored(rows_of(AdversarialParams(**auto)), auto))
    assert table.columns == ["clean", "AUTOATTACK 8/255", "FGSM 8/255", "PGD 8/255"]
    assert "robust top-1" in table.notes[0] and table.title == "d t → s: adversarial robustness"


# -- AutoAttack rows carry norm and version ------------------------------------------------------------

def test_autoattack_details_carry_norm_and_version():
    model = NormalizedLogits(Linear(), (0.5,) * 3, (0.5,) * 3)
    attack, details = ATTACKS.get("autoattack")(model, 8 / 255, AdversarialParams(attacks=["autoattack"]), 10)
    assert details["norm"] == "Linf" and details["version"] == "standard"
    assert details["torchattacks"] == torchattacks.__version__
    assert details["components"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert [type(a).__name__ for a in attack.attacks] == ["APGD", "APGDT", "FAB", "Square"]
    assert all(a.norm == "Linf" for a in attack.attacks)
    assert all(ATTACKS.get(name)(model, 8 / 255, AdversarialParams(), 10)[1]["norm"] == "Linf" for name in ATTACKS)


def test_every_stored_row_carries_norm_subset_and_library():
    model = NormalizedLogits(Linear(2), (0.5,) * 3, (0.5,) * 3)
    images, labels = torch.rand(4, 3, 4, 4), torch.tensor([0, 1, 0, 1])
    _, rows = attack_rows(model, images, labels, AdversarialParams(attacks=["fgsm", "pgd"], eps=[4.0],
                                                                   subset="first"), 4, 2)
    assert all(r["norm"] == "Linf" and r["subset"] == "first" and r["torchattacks"] == torchattacks.__version__
               for r in rows)
    assert [r["step_rule"] for r in rows] == ["eps", "eps/4"]


# -- the subset protocol -------------------------------------------------------------------------------

def test_first_takes_the_first_n_test_images_in_order():
    assert evaluation_subset(10000, 8, 0, "first").tolist() == list(range(8))
    assert evaluation_subset(10000, 8, 5, "first").tolist() == list(range(8))  # the seed does not choose them
    assert evaluation_subset(30, 50, 0, "first").tolist() == list(range(30))


def test_random_subset_is_pinned():
    """Today's indices: a change would silently move every stored adversarial number to other images."""
    assert evaluation_subset(10000, 8, 0).tolist() == [896, 1207, 1412, 2636, 3182, 4282, 4608, 6927]
    assert evaluation_subset(10000, 8, 0, "random").tolist() == [896, 1207, 1412, 2636, 3182, 4282, 4608, 6927]
    assert evaluation_subset(100, 10, 0).tolist() == [7, 24, 34, 55, 58, 59, 81, 82, 88, 96]
    assert evaluation_subset(10000, 8, 1).tolist() == [397, 976, 1422, 4359, 6301, 7689, 8226, 8332]


@pytest.mark.parametrize("subset, expected", [("first", [0, 1, 2, 3, 4]), ("random", [2, 5, 6, 7, 8])])
def test_the_evaluation_attacks_the_subset_it_stores(subset, expected):
    data = ImageSplits("toy", torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]),
                       torch.randint(0, 255, (10, 3, 4, 4), dtype=torch.uint8), torch.arange(10) % 3, 3,
                       (0.5,) * 3, (0.5,) * 3)
    ctx = EvalContext(model=Linear(), data=data, device=torch.device("cpu"), data_options=DataOptions(root="unused"))
    attacked = []
    ctx.test_images = lambda indices: attacked.append(indices.tolist()) or data.test_images_at(indices)
    entry = EVALUATIONS.get("adversarial")
    result = entry.evaluate(ctx, AdversarialParams(attacks=["fgsm"], eps=[1.0], num_examples=5, subset=subset))
    assert attacked == [expected] == [evaluation_subset(10, 5, 0, subset).tolist()]
    assert result["subset"] == subset and result["num_examples"] == 5 and result["results"][0]["subset"] == subset


# -- stored results keep their names -------------------------------------------------------------------

def test_the_subset_default_leaves_the_settings_hash_unchanged():
    """``subset`` was added later: at its default it is left out of the settings, so every result stored
    before keeps its key (robustness_cpu's was adversarial-7016d9b47e) and the gate its score names."""
    cpu_twin = AdversarialParams(attacks=["fgsm", "pgd"], eps=[1.0, 2.0, 4.0, 8.0], num_examples=200)
    settings = cpu_twin.model_dump(mode="json")
    assert "subset" not in settings and evaluation_key("adversarial", settings) == "adversarial-7016d9b47e"
    assert AdversarialParams.model_validate(settings) == cpu_twin and cpu_twin.subset == "random"
    first = AdversarialParams(**{**settings, "subset": "first"})
    assert first.model_dump(mode="json")["subset"] == "first"
    assert evaluation_key("adversarial", first.model_dump(mode="json")) != "adversarial-7016d9b47e"


def test_the_gate_names_scores_by_evaluation_and_score():
    from tekapbench.regression.measured import run_scores

    record = {"metrics": {"test_acc_last": 90.0}}
    evaluation = {**stored(rows_of(AdversarialParams(attacks=["pgd"], eps=[2.0]), robust=40.0)), "key": "adversarial-x"}
    scores, _ = run_scores(record, {"adversarial-7016d9b47e": evaluation})
    assert {"adversarial:clean", "adversarial:pgd@2/255"} <= set(scores)
    assert scores["adversarial:pgd@2/255"].value == 40.0
