"""Suite files: validation before anything runs, and the expansion into runs."""
import textwrap

import pytest

from tekapbench.errors import ConfigError
from tekapbench.suite.plan import TEACHER_ROW, plan_suite

BASE = """
[suite]
name = "t"
seeds = [0, 1]

[data]
datasets = ["digits"]

[recipe]
epochs = 2

[[pairs]]
teacher = "resnet20_tiny"
student = "resnet8_tiny"

[[methods]]
label = "Student"
method = "vanilla"

[[methods]]
label = "KD"
method = "kd"

[[methods]]
label = "KD+TeKAP (L)"
method = "kd"
tekap = { level = "logit" }
"""


def write(tmp_path, text, name="suite.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path, text):
    with pytest.raises(ConfigError) as info:
        plan_suite(write(tmp_path, text))
    assert str(tmp_path / "suite.toml") in str(info.value)
    return dict(info.value.problems)


def test_plan_expands_the_matrix_and_shares_teachers(tmp_path):
    plan = plan_suite(write(tmp_path, BASE))
    # per seed: one teacher, vanilla, KD, KD+TeKAP
    assert len(plan.runs) == 8
    assert len(plan.cells) == 8
    teachers = [c for c in plan.cells if c.row == TEACHER_ROW]
    students = [plan.runs[c.run_id] for c in plan.cells if c.row in ("KD", "KD+TeKAP (L)")]
    assert {s.teacher for s in students} == {t.run_id for t in teachers}
    order = list(plan.runs)
    assert all(order.index(s.teacher) < order.index(s.run_id) for s in students)
    tekap = next(plan.runs[c.run_id] for c in plan.cells if c.row == "KD+TeKAP (L)")
    settings = tekap.method.terms[0].tekap
    assert (settings.n_teachers, settings.alpha, settings.sigma) == (3, 0.1, 1.0)
    assert tekap.method.ce_weight == 0.1 and tekap.method.terms[0].weight == 0.9


def test_run_ids_are_stable_and_follow_the_resolved_spec(tmp_path):
    first = plan_suite(write(tmp_path, BASE))
    again = plan_suite(write(tmp_path, BASE.replace('label = "KD"', 'label = "Hinton KD"'), "b.toml"))
    assert list(first.runs) == list(again.runs)  # labels do not change ids
    changed = plan_suite(write(tmp_path, BASE.replace("epochs = 2", "epochs = 3"), "c.toml"))
    assert not set(first.runs) & set(changed.runs)


def test_a_vanilla_student_of_the_teacher_architecture_is_the_teacher_run(tmp_path):
    text = BASE.replace('student = "resnet8_tiny"', 'student = "resnet20_tiny"')
    plan = plan_suite(write(tmp_path, text))
    by_row = {(c.row, c.seed): c.run_id for c in plan.cells}
    assert by_row[TEACHER_ROW, 0] == by_row["Student", 0]


def test_per_architecture_lr_and_linear_scaling_but_never_over_an_explicit_lr(tmp_path):
    text = BASE.replace('student = "resnet8_tiny"', 'student = "MobileNetV2"')
    plan = plan_suite(write(tmp_path, text))
    lrs = {plan.runs[c.run_id].arch: plan.runs[c.run_id].recipe.lr for c in plan.cells}
    assert lrs == {"resnet20_tiny": 0.05, "MobileNetV2": 0.01}
    scaled = plan_suite(write(tmp_path, text.replace("epochs = 2", "epochs = 2\nbatch_size = 128"), "b.toml"))
    assert {scaled.runs[c.run_id].recipe.lr for c in scaled.cells
            if scaled.runs[c.run_id].arch == "MobileNetV2"} == {0.02}
    explicit = plan_suite(write(tmp_path, text.replace("epochs = 2", "epochs = 2\nlr = 0.1"), "c.toml"))
    assert {r.recipe.lr for r in explicit.runs.values()} == {0.1}


def test_dkd_beta_follows_the_pair_unless_given(tmp_path):
    text = BASE.replace('teacher = "resnet20_tiny"', 'teacher = "resnet56"').replace(
        'student = "resnet8_tiny"', 'student = "resnet20"') + '\n[[methods]]\nmethod = "dkd"\n'
    plan = plan_suite(write(tmp_path, text))
    dkd = next(plan.runs[c.run_id] for c in plan.cells if c.row == "dkd")
    assert dkd.method.terms[0].params.beta == 2.0


def test_composite_method_tekap_fl(tmp_path):
    text = BASE + """
[[methods]]
label = "TeKAP (F+L)"
terms = [
  { method = "crd", weight = 0.8, tekap = { level = "feature" } },
  { method = "kd", weight = 1.0, tekap = { level = "logit" } },
]
"""
    plan = plan_suite(write(tmp_path, text))
    run = next(plan.runs[c.run_id] for c in plan.cells if c.row == "TeKAP (F+L)")
    assert run.method.ce_weight == 1.0
    assert [(t.method, t.weight, t.tekap.level) for t in run.method.terms] == [("crd", 0.8, "feature"),
                                                                              ("kd", 1.0, "logit")]


@pytest.mark.parametrize("edit,key,fragment", [
    (("[recipe]", "[recipe]\nepoch = 3"), "recipe.epoch", "unknown key"),
    (("epochs = 2", 'epochs = "two"'), "recipe.epochs", "valid integer"),
    (('student = "resnet8_tiny"', 'student = "resnet9"'), "pairs[0].student", "allowed: MobileNetV2"),
    (('method = "kd"\n', 'method = "kdd"\n'), "methods[1].method", "unknown method 'kdd'; allowed: camkd, crd, dgkd, dkd, fitnet, kd"),
    (('datasets = ["digits"]', 'datasets = ["cifar10"]'), "data.datasets[0]", "unknown dataset 'cifar10'; allowed: cifar100"),
    (('level = "logit"', 'level = "pixel"'), "methods[2].tekap.level", "'logit' or 'feature'"),
    (('level = "logit"', 'level = "feature"'), "methods[2].tekap.level", "changes nothing that kd reads"),
    (('seeds = [0, 1]', 'seeds = [0, 0]'), "suite.seeds", "distinct"),
    (('name = "t"', 'name = "../x"'), "suite.name", "folder"),
])
def test_bad_suites_name_the_key_and_what_is_allowed(tmp_path, edit, key, fragment):
    found = problems(tmp_path, BASE.replace(*edit))
    assert key in found, found
    assert fragment in found[key]


def test_every_problem_is_reported_at_once(tmp_path):
    text = BASE.replace('student = "resnet8_tiny"', 'student = "resnet9"').replace("epochs = 2", "epochs = -1")
    text += '\n[[methods]]\nmethod = "dkd"\nparams = { temperature = 0, gamma = 1 }\n'
    found = problems(tmp_path, text)
    assert {"pairs[0].student", "recipe.epochs"} <= set(found)


def test_method_params_are_validated_against_the_method(tmp_path):
    text = BASE + '\n[[methods]]\nmethod = "dkd"\nparams = { temperature = 0, gamma = 1 }\n'
    found = problems(tmp_path, text)
    assert "temperature: Input should be greater than 0" in found["methods[3].params"]
    assert "gamma: unknown key; allowed: alpha, beta, temperature, warmup" in found["methods[3].params"]


def test_params_problems_are_reported_with_the_other_problems(tmp_path):
    text = BASE.replace("epochs = 2", "epochs = 2.5") + '\n[[methods]]\nmethod = "dkd"\nparams = { temp = 1 }\n'
    found = problems(tmp_path, text)
    assert "valid integer" in found["recipe.epochs"] and "temp: unknown key" in found["methods[3].params"]


@pytest.mark.parametrize("edit,key", [
    (('epochs = 2', 'epochs = "2"'), "recipe.epochs"),
    (('seeds = [0, 1]', 'seeds = [true]'), "suite.seeds[0]"),
    (('datasets = ["digits"]', 'datasets = ["digits"]\ndownload = "yes"'), "data.download"),
    (('tekap = { level = "logit" }', 'tekap = { level = "logit", n_teachers = 2.0 }'), "methods[2].tekap.n_teachers"),
])
def test_values_of_the_wrong_type_are_not_converted(tmp_path, edit, key):
    assert key in problems(tmp_path, BASE.replace(*edit))


def test_an_unknown_key_lists_the_allowed_ones(tmp_path):
    found = problems(tmp_path, BASE.replace("[recipe]", "[recpie]"))
    assert found["recpie"] == "unknown key; allowed: suite, data, recipe, teacher_recipe, pairs, methods, checkpoints, evaluations, slurm, tracking"


def test_missing_teacher_checkpoint_and_bad_toml(tmp_path):
    found = problems(tmp_path, BASE.replace('student = "resnet8_tiny"',
                                            'student = "resnet8_tiny"\nteacher_checkpoint = "nope.pth"'))
    assert "file not found" in found["pairs[0].teacher_checkpoint"]
    assert "not valid TOML" in problems(tmp_path, "[suite\n")[""]


def test_teacher_seed_trains_one_teacher_for_every_student_seed(tmp_path):
    plan = plan_suite(write(tmp_path, BASE.replace("seeds = [0, 1]", "seeds = [0, 1]\nteacher_seed = 0")))
    teachers = {c.run_id for c in plan.cells if c.row == TEACHER_ROW}
    assert len(teachers) == 1
    assert plan.runs[teachers.pop()].seed == 0
    assert {plan.runs[c.run_id].seed for c in plan.cells if c.row == "KD"} == {0, 1}


def test_milestones_follow_an_overridden_epoch_count_and_explicit_late_ones_are_refused(tmp_path):
    from tekapbench.engine.recipe import resolve_recipe

    assert resolve_recipe("cifar100", "resnet20", {"epochs": 30}).milestones == (19, 22, 26)
    assert resolve_recipe("cifar100", "resnet20", {}).milestones == (150, 180, 210)
    found = problems(tmp_path, BASE.replace("epochs = 2", "epochs = 2\nmilestones = [1, 5]"))
    assert "milestones [5] are not before the last epoch" in found["recipe.milestones"]


@pytest.mark.parametrize("extra,message", [
    ('tekap = { level = "logit" }', "cross-entropy only: remove tekap"),
    ("ce_weight = 0.0", "nothing to train on"),
])
def test_vanilla_refuses_settings_it_would_ignore(tmp_path, extra, message):
    text = BASE.replace('label = "Student"\nmethod = "vanilla"', f'label = "Student"\nmethod = "vanilla"\n{extra}')
    assert message in problems(tmp_path, text)["methods[0]"]


def test_an_unreadable_suite_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the file"):
        plan_suite(tmp_path)


def test_a_teacher_checkpoint_of_another_architecture_is_refused_before_training(tmp_path):
    import torch

    from tekapbench.models import create_model

    ckpt = tmp_path / "resnet20_vanilla.pth"
    torch.save({"model": create_model("resnet20", 10).state_dict()}, ckpt)
    found = problems(tmp_path, BASE.replace('student = "resnet8_tiny"',
                                            f'student = "resnet8_tiny"\nteacher_checkpoint = "{ckpt}"'))
    assert "does not fit the architecture" in found["pairs[0].teacher_checkpoint"]


def test_a_dkd_warmup_longer_than_training_is_noted(tmp_path):
    plan = plan_suite(write(tmp_path, BASE + '\n[[methods]]\nmethod = "dkd"\n'))
    assert plan.notes == ["methods[3]: DKD warmup (20 epochs) is longer than training (2 epochs): the DKD term "
                          "never reaches full weight; set params.warmup"]


def test_baseline_key_pairs_rows_and_must_name_another_method(tmp_path):
    text = BASE.replace('label = "KD+TeKAP (L)"\n', 'label = "KD+TeKAP (L)"\nbaseline = "KD"\n')
    plan = plan_suite(write(tmp_path, text))
    assert {c.row: c.baseline for c in plan.cells} == {"Teacher": None, "Student": None, "KD": None,
                                                      "KD+TeKAP (L)": "KD"}
    # presentation only: the key changes no run id
    assert {c.run_id for c in plan.cells} == {c.run_id for c in plan_suite(write(tmp_path, BASE)).cells}
    found = problems(tmp_path, BASE.replace('label = "KD+TeKAP (L)"\n', 'label = "KD+TeKAP (L)"\nbaseline = "DK"\n'))
    assert found["methods[2].baseline"] == ("'DK' is not the label of another row of this suite; allowed: "
                                            "Student, KD")
    found = problems(tmp_path, BASE.replace('label = "KD"\n', 'label = "KD"\nbaseline = "KD"\n'))
    assert "methods[1].baseline" in found


def test_a_suite_may_ask_for_several_table_layouts(tmp_path):
    plan = plan_suite(write(tmp_path, BASE.replace('seeds = [0, 1]', 'seeds = [0, 1]\nlayout = ["diverse", "sota"]')))
    assert plan.to_dict()["layout"] == ["diverse", "sota"]
    found = problems(tmp_path, BASE.replace('seeds = [0, 1]', 'seeds = [0, 1]\nlayout = ["diverse", "sotaa"]'))
    assert "unknown table layout 'sotaa'" in found["suite.layout[1]"]


def test_checkpoints_trained_elsewhere_become_rows_and_their_files_are_checked(tmp_path):
    import hashlib

    import torch

    from tekapbench.models.base import create_model

    weights = tmp_path / "theirs.pth"
    torch.save({"model": create_model("resnet8_tiny", 10).state_dict(), "epoch": 240}, weights)  # RepDistiller form
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    entry = f'\n[[checkpoints]]\nlabel = "NKD (theirs)"\narch = "resnet8_tiny"\npath = "{weights}"\ndataset = "digits"\n'
    plan = plan_suite(write(tmp_path, BASE + entry + f'sha256 = "{digest}"\nbaseline = "KD"\n'))
    cell = next(c for c in plan.cells if c.row == "NKD (theirs)")
    assert (cell.column, cell.seed, cell.baseline) == ("resnet20_tiny → resnet8_tiny", 0, "KD")
    spec = plan.runs[cell.run_id]
    assert (spec.kind, spec.checkpoint_sha256, spec.checkpoint) == ("pretrained", digest, str(weights))

    found = problems(tmp_path, BASE + entry + f'sha256 = "{"0" * 64}"\n')
    assert f"has sha256 {digest}, not the expected {'0' * 64}" in found["checkpoints[0].sha256"]
    found = problems(tmp_path, BASE + entry.replace('"resnet8_tiny"', '"resnet20_tiny"'))
    assert "no [[pairs]] entry has student 'resnet20_tiny'" in found["checkpoints[0].pair"]
    found = problems(tmp_path, BASE + entry.replace("NKD (theirs)", "KD"))
    assert "already the label of a method's row" in found["checkpoints[0].label"]
    found = problems(tmp_path, BASE + entry.replace(str(weights), str(tmp_path / "nope.pth")))
    assert "file not found" in found["checkpoints[0].path"]
    # weights of another architecture are refused at planning, under the checkpoint's key
    torch.save(create_model("resnet20_tiny", 10).state_dict(), weights)
    found = problems(tmp_path, BASE + entry)
    assert "does not fit the architecture" in found["checkpoints[0].path"]


def test_a_teacher_checkpoint_with_another_sha256_is_refused(tmp_path):
    import torch

    from tekapbench.models.base import create_model

    weights = tmp_path / "teacher.pth"
    torch.save(create_model("resnet20_tiny", 10).state_dict(), weights)
    text = BASE.replace('student = "resnet8_tiny"', f'student = "resnet8_tiny"\nteacher_checkpoint = "{weights}"\n'
                                                    f'teacher_sha256 = "{"ab" * 32}"')
    assert "not the expected" in problems(tmp_path, text)["pairs[0].teacher_sha256"]
