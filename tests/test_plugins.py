"""Plugins: a user's method registered with tekapbench's own decorator, loaded from an installed package
(entry point), from a suite and from --plugin; bad plugins are one clear error; plugin code enters run ids.

Every test that loads a plugin runs tekapbench in a fresh interpreter, so that the registries of this
process (which other tests list) never see the plugin's entries.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "tekapbench-nkd"

SUITE = """
[suite]
name = "nkd_test"
seeds = [0]
cpu_threads = 1
layout = ["diverse", "sota"]
{plugins}

[data]
datasets = ["digits"]

[recipe]
epochs = 1

[[pairs]]
teacher = "resnet20_tiny"
student = "resnet8_tiny"

[[methods]]
label = "NKD"
method = "nkd"

[[methods]]
label = "NKD+TeKAP"
baseline = "NKD"
method = "nkd"
tekap = {{ level = "logit" }}
"""


def tekapbench(*args, cwd, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "tekapbench", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def nkd_module():
    """The example plugin's module, imported from its file under its own name (not registering anything
    here: ``register_method`` is replaced while it loads)."""
    import importlib.util
    from unittest import mock

    spec = importlib.util.spec_from_file_location("nkd_example", EXAMPLE / "tekapbench_nkd" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    with mock.patch("tekapbench.methods.base.register_method", lambda *a, **k: (lambda cls: cls)):
        spec.loader.exec_module(module)
    return module


# Golden numbers: the official NKDLoss, github:yzd-v/cls_KD@1e5d48f36957ee460d39d7ebc592c6cc7f8f3d66
# mmcls/models/dis_losses/nkd.py (NKDLoss.forward, copied without its registry decorator), run on
# tests/golden/tensors.py confident_logits(); the gradient with respect to the student logits is pinned by
# its norm, its projection on fixed(shape, 99) and two entries.
@pytest.mark.parametrize("temperature,gamma,loss,norm,proj,g00,g37", [
    (1.0, 1.5, 16.37067985534668, 0.5366107821464539, -0.8623090982437134, 6.377645718202984e-07,
     0.10179708898067474),  # the class defaults, and the ImageNet config's
    (3.0, 3.5, 166.30593872070312, 1.0300252437591553, -1.6062238216400146, 0.0015198343899101019,
     0.09465029835700989),  # configs/distillers/cifar100/res34_distill_res18_cifar.py
])
def test_example_nkd_equals_the_official_loss(temperature, gamma, loss, norm, proj, g00, g37):
    sys.path.insert(0, str(ROOT / "tests" / "golden"))
    try:
        from tensors import confident_logits, fixed
    finally:
        sys.path.pop(0)
    s, t, y = confident_logits()
    s.requires_grad_(True)
    value = nkd_module().nkd_loss(s, t, y, temperature, gamma)
    value.backward()
    g = s.grad
    assert value.item() == pytest.approx(loss, rel=1e-5)
    assert g.norm().item() == pytest.approx(norm, rel=1e-5)
    assert (g * fixed(g.shape, 99)).sum().item() == pytest.approx(proj, rel=1e-5)
    assert g[0, 0].item() == pytest.approx(g00, rel=1e-4, abs=1e-9)
    assert g[3, 7].item() == pytest.approx(g37, rel=1e-5)


def test_a_suite_loads_a_plugin_file_relative_to_itself_and_plugin_code_enters_the_run_id(tmp_path):
    plugin = tmp_path / "plugins" / "my_nkd.py"
    plugin.parent.mkdir()
    plugin.write_text((EXAMPLE / "tekapbench_nkd" / "__init__.py").read_text())
    suite = tmp_path / "suites" / "nkd.toml"
    suite.parent.mkdir()
    suite.write_text(SUITE.format(plugins='plugins = ["../plugins/my_nkd.py"]'))
    first = tekapbench("run", suite, "--dry-run", "--results", tmp_path / "results", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    plugin.write_text(plugin.read_text().replace("return target_loss - gamma", "return target_loss - 0.5 * gamma"))
    second = tekapbench("run", suite, "--dry-run", "--results", tmp_path / "results", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    ids = [set(line.split()[0] for line in out.stdout.splitlines() if line.endswith("nkd") or "nkd+tekap" in line)
           for out in (first, second)]
    assert ids[0] and ids[1] and not ids[0] & ids[1]  # edited plugin code: new runs, old records never reused


@pytest.mark.parametrize("body,fragment", [
    ("raise RuntimeError('boom')\n", "failed to import: RuntimeError: boom"),
    ("from tekapbench.methods.base import register_method, LossTerm\n"
     "@register_method('kd', ce_weight=1.0, weight=1.0)\nclass Again(LossTerm):\n    pass\n",
     "method 'kd' is registered twice (first by tekapbench); choose another name"),
])
def test_a_bad_plugin_is_one_clear_error_naming_it(tmp_path, body, fragment):
    (tmp_path / "bad.py").write_text(body)
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE.format(plugins='plugins = ["bad.py"]'))
    done = tekapbench("run", suite, "--dry-run", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "suite.plugins[0]" in done.stderr and "plugin bad.py" in done.stderr and fragment in done.stderr
    assert "Traceback" not in done.stderr
    done = tekapbench("--plugin", tmp_path / "bad.py", "list", "methods", cwd=tmp_path)
    assert done.returncode == 2 and fragment in done.stderr and "Traceback" not in done.stderr
    done = tekapbench("--plugin", "no_such_module_xyz", "list", "methods", cwd=tmp_path)
    assert done.returncode == 2 and "no module named 'no_such_module_xyz'" in done.stderr


def test_plugin_by_flag_is_listed_with_its_origin(tmp_path):
    done = tekapbench("--plugin", EXAMPLE / "tekapbench_nkd" / "__init__.py", "list", "methods", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.strip().startswith("nkd"))
    assert "plugin" in line and "--plugin" in line
    kd = next(line for line in done.stdout.splitlines() if line.strip().startswith("kd "))
    assert "plugin" not in kd


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The example plugin installed as a package would be (its entry point included) into a folder that a
    subprocess puts on its path."""
    target = tmp_path_factory.mktemp("site")
    try:
        import setuptools  # noqa: F401 - builds the example without fetching a build backend
        isolation = ["--no-build-isolation"]
    except ImportError:
        isolation = []
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *isolation, "--target",
                           str(target), str(EXAMPLE)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return {"PYTHONPATH": os.pathsep.join([str(target), *filter(None, [os.environ.get("PYTHONPATH")])])}


def test_an_installed_plugin_is_found_by_its_entry_point_and_runs_end_to_end_with_tekap(tmp_path, installed):
    done = tekapbench("list", "methods", cwd=tmp_path, env_extra=installed)
    assert done.returncode == 0, done.stderr
    assert "entry point 'nkd' of tekapbench-nkd 0.1.0" in done.stdout
    suite = tmp_path / "nkd.toml"
    suite.write_text(SUITE.format(plugins=""))
    done = tekapbench("run", suite, "--results", tmp_path / "results", "--threads", 1, cwd=tmp_path,
                      env_extra=installed)
    assert done.returncode == 0, done.stderr
    assert "| NKD+TeKAP" in done.stdout or "NKD / NKD+TeKAP" in done.stdout or "| NKD " in done.stdout
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "nkd_test").rglob("record.json")]
    methods = {r["spec"]["method"]["terms"][0]["method"] if r["spec"]["method"]["terms"] else "ce"
               for r in records}
    assert methods == {"ce", "nkd"}
    tekap = next(r for r in records if r["spec"]["method"]["terms"] and r["spec"]["method"]["terms"][0]["tekap"])
    assert tekap["spec"]["method"]["terms"][0]["plugin_code"]
    assert all(torch.isfinite(torch.tensor(r["metrics"]["test_acc_last"])) for r in records)
    # the suite may also name the installed module: it is the same plugin, loaded once
    suite.write_text(SUITE.format(plugins='plugins = ["tekapbench_nkd"]'))
    done = tekapbench("run", suite, "--dry-run", "--results", tmp_path / "results", cwd=tmp_path, env_extra=installed)
    assert done.returncode == 0, done.stderr
