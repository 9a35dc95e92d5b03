"""Training recipes as data: the dataset's standard recipe, a method's official one over it, the suite on top;
the optimizer and the lr schedule come from the recipe."""
import json

import pytest
import torch

from tekapbench.engine.optim import OPTIMIZERS, SCHEDULES
from tekapbench.engine.recipe import check_recipe_table, resolve_recipe

OFFICIAL = {  # a method's official recipe, in the form methods register
    "source": "github:example/method@0123 train.py",
    "lr": 0.1, "lr_batch_size": 128, "batch_size": 128, "weight_decay": 1e-4, "nesterov": True,
    "epochs": 200, "milestones": [100, 150],
    "by_pair": {"resnet32x4->resnet8x4": {"epochs": 480, "milestones": [300, 400]}},
}


def test_a_methods_official_recipe_replaces_the_datasets_where_it_says_so():
    standard = resolve_recipe("cifar100", "resnet8x4", {})
    official = resolve_recipe("cifar100", "resnet20", {}, OFFICIAL, teacher_arch="resnet56")
    assert (standard.lr, standard.batch_size, standard.epochs, standard.nesterov) == (0.05, 64, 240, False)
    assert (official.lr, official.batch_size, official.weight_decay, official.nesterov) == (0.1, 128, 1e-4, True)
    assert (official.epochs, official.milestones) == (200, (100, 150))
    assert official.momentum == standard.momentum  # what the method does not state stays the dataset's
    assert "github:example/method@0123 train.py" in official.source


def test_per_pair_values_apply_to_that_pair_only():
    pair = resolve_recipe("cifar100", "resnet8x4", {}, OFFICIAL, teacher_arch="resnet32x4")
    other = resolve_recipe("cifar100", "resnet8x4", {}, OFFICIAL, teacher_arch="wrn_40_2")
    assert (pair.epochs, pair.milestones) == (480, (300, 400))
    assert "its values for resnet32x4->resnet8x4" in pair.source
    assert (other.epochs, other.milestones) == (200, (100, 150))


def test_a_method_lr_replaces_the_datasets_per_architecture_lrs_unless_it_gives_its_own():
    # the dataset's 0.01 for ShuffleV1 is relative to its own 0.05: a method's own lr replaces both
    assert resolve_recipe("cifar100", "ShuffleV1", {}).lr == pytest.approx(0.01)
    assert resolve_recipe("cifar100", "ShuffleV1", {}, OFFICIAL).lr == pytest.approx(0.1)
    own = {**OFFICIAL, "lr_by_arch": {"ShuffleV1": 0.02}}
    assert resolve_recipe("cifar100", "ShuffleV1", {}, own).lr == pytest.approx(0.02)
    # the lr is stated at lr_batch_size and scales linearly with the batch size
    assert resolve_recipe("cifar100", "resnet20", {"batch_size": 64}, OFFICIAL).lr == pytest.approx(0.05)


def test_the_suites_explicit_keys_win_and_an_explicit_lr_is_never_scaled():
    r = resolve_recipe("cifar100", "resnet8x4", {"epochs": 20, "lr": 0.3, "batch_size": 32}, OFFICIAL,
                       teacher_arch="resnet32x4")
    assert (r.epochs, r.lr, r.batch_size) == (20, 0.3, 32)
    assert r.milestones == (12, 17)  # the pair's 300/400 of 480, scaled to 20 epochs
    assert "suite overrides: batch_size, epochs, lr" in r.source


def test_run_identity_leaves_out_new_keys_at_their_default_so_existing_ids_hold():
    standard = resolve_recipe("cifar100", "resnet8x4", {}).identity()
    assert not {"optimizer", "nesterov", "schedule", "drop_last", "source"} & set(standard)
    assert resolve_recipe("cifar100", "resnet8x4", {"nesterov": True}).identity()["nesterov"] is True


def test_unknown_recipe_keys_are_refused_with_what_is_allowed():
    with pytest.raises(ValueError, match=r"unknown recipe keys \['epoch'\]; allowed: .*'epochs'"):
        check_recipe_table({"epoch": 3}, "method 'x'")
    with pytest.raises(ValueError, match="write 'teacher->student'"):
        check_recipe_table({"by_pair": {"a,b": {"epochs": 3}}}, "method 'x'")


def test_schedules_step_and_cosine():
    r = resolve_recipe("cifar100", "resnet20", {"epochs": 10, "milestones": [4, 8], "lr": 1.0})
    assert [r.lr_at(e) for e in (1, 4, 5, 8, 9)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    c = resolve_recipe("cifar100", "resnet20", {"epochs": 10, "lr": 1.0, "schedule": "cosine"})
    assert [c.lr_at(e) for e in (1, 6)] == pytest.approx([1.0, 0.5])
    assert {"step", "cosine"} <= set(SCHEDULES.names())


@pytest.mark.parametrize("nesterov", [False, True])
def test_the_optimizer_is_built_from_the_recipe(nesterov):
    r = resolve_recipe("cifar100", "resnet20", {"nesterov": nesterov, "weight_decay": 1e-4})
    opt = OPTIMIZERS.get(r.optimizer)([torch.nn.Parameter(torch.zeros(2))], r)
    group = opt.param_groups[0]
    assert (group["nesterov"], group["momentum"], group["weight_decay"], group["lr"]) == (nesterov, 0.9, 1e-4, r.lr)


SUITE = """
[suite]
name = "r"
{common}

[data]
datasets = ["cifar100"]

[recipe]
{overrides}

[[pairs]]
teacher = "resnet56"
student = "resnet20"
assistants = ["resnet32"]

[[methods]]
label = "KD"
method = "kd"

[[methods]]
label = "DGKD"
method = "dgkd"

[[methods]]
label = "CA-MKD"
method = "camkd"
"""


def _plan(tmp_path, common="", overrides=""):
    from tekapbench.suite.plan import plan_suite

    path = tmp_path / "suite.toml"
    path.write_text(SUITE.format(common=common, overrides=overrides))
    plan = plan_suite(path)
    by_row = {}
    for cell in plan.cells:
        spec = plan.runs[cell.run_id]
        by_row.setdefault(cell.row, spec.recipe)
        if spec.method and spec.method.terms and cell.row == "DGKD":
            assistant = plan.runs[spec.teachers[1]]
            by_row["DGKD assistant"] = assistant.recipe
    return by_row


def test_each_method_plans_on_its_official_recipe_and_teachers_on_the_datasets(tmp_path):
    recipes = _plan(tmp_path)
    standard = resolve_recipe("cifar100", "resnet20", {})
    assert recipes["Teacher"].identity() == resolve_recipe("cifar100", "resnet56", {}).identity()
    assert recipes["KD"].identity() == standard.identity()
    dgkd = recipes["DGKD"]
    assert (dgkd.epochs, dgkd.batch_size, dgkd.lr, dgkd.weight_decay, dgkd.milestones) == (160, 128, 0.1, 1e-4, (80, 120))
    assert (dgkd.crop_padding, dgkd.flip) == (0, False)
    assert recipes["DGKD assistant"].identity() == dgkd.identity()  # assistants learn by the method's recipe
    assert recipes["CA-MKD"].nesterov and recipes["CA-MKD"].drop_last
    assert "github:wonchulSon/DGKD" in dgkd.source and "github:Rorozhl/CA-MKD" in recipes["CA-MKD"].source


def test_common_recipe_puts_every_method_on_the_datasets_recipe(tmp_path):
    recipes = _plan(tmp_path, common="common_recipe = true", overrides="epochs = 30")
    assert {r.identity()["epochs"] for r in recipes.values()} == {30}
    # teacher, students and assistants alike (every architecture here has the dataset's lr)
    assert len({json.dumps(r.identity(), sort_keys=True) for r in recipes.values()}) == 1


def test_terms_with_two_official_recipes_are_refused_unless_the_recipe_is_common(tmp_path):
    from tekapbench.errors import ConfigError
    from tekapbench.suite.plan import plan_suite

    text = SUITE.format(common="", overrides="") + """
[[methods]]
label = "both"
terms = [{ method = "camkd" }, { method = "dgkd" }]
"""
    (tmp_path / "s.toml").write_text(text)
    with pytest.raises(ConfigError) as info:
        plan_suite(tmp_path / "s.toml")
    assert "official recipe of their own (camkd, dgkd)" in str(info.value)
    assert "common_recipe = true" in str(info.value)


def test_a_methods_extra_views_are_recipe_data_recorded_only_where_a_method_needs_them(tmp_path):
    from tekapbench.errors import ConfigError
    from tekapbench.suite.plan import plan_suite

    text = SUITE.format(common="", overrides="{views}") + """
[[methods]]
label = "MLKD"
method = "mlkd"
"""
    (tmp_path / "s.toml").write_text(text.format(views=""))
    plan = plan_suite(tmp_path / "s.toml")
    recipes = {c.row: plan.runs[c.run_id].recipe for c in plan.cells}
    assert recipes["MLKD"].to_dict()["views"] == {"strong": "mlkd_strong"}
    assert (recipes["MLKD"].lr, recipes["MLKD"].epochs) == (0.025, 240)  # MLKD's official recipe
    assert "views" not in recipes["KD"].identity() and "views" not in recipes["Teacher"].identity()
    assert recipes["MLKD"].identity()["views"] == {"strong": "mlkd_strong"}

    (tmp_path / "bad.toml").write_text(text.format(views='views = { strong = "jitter" }'))
    with pytest.raises(ConfigError) as info:
        plan_suite(tmp_path / "bad.toml")
    assert "recipe.views.strong" in str(info.value) and "allowed: mlkd_strong" in str(info.value)


def test_milestones_stated_for_another_epoch_count_are_kept_by_a_per_pair_length():
    """MLKD's 960-epoch pairs keep 150/180/210, and a suite's epochs scale from the count they were stated for."""
    from tekapbench.methods import METHODS

    mlkd = METHODS.get("mlkd").recipes["cifar100"]
    long = resolve_recipe("cifar100", "ShuffleV2", {}, mlkd, teacher_arch="resnet32x4")
    assert (long.epochs, long.milestones, long.lr) == (960, (150, 180, 210), 0.01)
    assert resolve_recipe("cifar100", "ShuffleV2", {"epochs": 240}, mlkd, "resnet32x4").milestones == (150, 180, 210)
    assert resolve_recipe("cifar100", "ShuffleV2", {"epochs": 24}, mlkd, "resnet32x4").milestones == (15, 18, 21)


@pytest.mark.parametrize("method,arch,expected", [
    ("dgkd", "resnet20", (0.1, (80, 120))), ("dgkd", "wrn_16_2", (0.01, ())), ("dgkd", "ShuffleV1", (0.01, ())),
    ("takd", "resnet8x4", (0.01, (120,))), ("takd", "vgg8", (0.01, ())),
])
def test_the_official_codes_of_takd_and_dgkd_train_any_non_resnet_student_at_a_constant_lr(method, arch, expected):
    from tekapbench.methods import METHODS

    r = resolve_recipe("cifar100", arch, {}, METHODS.get(method).recipes["cifar100"], teacher_arch="resnet56")
    assert (r.lr, r.milestones) == expected
    assert (r.epochs, r.batch_size, r.weight_decay, r.crop_padding, r.flip) == (160, 128, 1e-4, 0, False)


def test_every_architecture_a_method_recipe_names_is_in_the_model_zoo():
    from tekapbench.methods import METHODS
    from tekapbench.models import MODELS

    for name in METHODS.names():
        for dataset, table in METHODS.get(name).recipes.items():
            archs = set(table.get("by_arch", {})) | set(table.get("lr_by_arch", {}))
            archs |= {a for pair in table.get("by_pair", {}) for a in pair.split("->")}
            assert archs <= set(MODELS.names()), (name, dataset, archs - set(MODELS.names()))


def test_view_choices_that_no_method_compares_on_and_nesterov_without_momentum_are_refused(tmp_path):
    from tekapbench.errors import ConfigError
    from tekapbench.suite.plan import plan_suite

    text = SUITE.format(common="", overrides='views = { strnog = "mlkd_strong" }\nmomentum = 0.0')
    text += '\n[teacher_recipe]\nviews = { strong = "mlkd_strong" }\n'
    (tmp_path / "s.toml").write_text(text)
    with pytest.raises(ConfigError) as info:
        plan_suite(tmp_path / "s.toml")
    message = str(info.value)
    assert "recipe.views.strnog: no method of this suite compares on a view 'strnog'" in message
    assert "teacher_recipe.views" in message
    assert "recipe.momentum: Nesterov momentum needs momentum > 0" in message  # CA-MKD's official Nesterov


def test_a_revised_methods_runs_get_new_ids_and_unrevised_ones_keep_theirs():
    from tekapbench.engine.objective import TermSpec
    from tekapbench.methods import METHODS

    crd = TermSpec("crd", 0.8, METHODS.get("crd").params())
    kd = TermSpec("kd", 0.9, METHODS.get("kd").params())
    assert crd.to_dict()["revision"] == 2  # negatives without replacement; TeKAP F's second memory update
    assert "revision" not in kd.to_dict()
