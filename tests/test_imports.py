"""Every subpackage imports on its own, as the first import of a fresh interpreter (no import cycles)."""
import pkgutil
import subprocess
import sys

import pytest

import tekapbench

SUBPACKAGES = sorted(m.name for m in pkgutil.walk_packages(tekapbench.__path__, "tekapbench.")
                     if m.ispkg and m.name.count(".") == 1)


def test_the_subpackages_are_found():
    assert {"tekapbench.methods", "tekapbench.modifiers", "tekapbench.engine", "tekapbench.suite"} <= set(SUBPACKAGES)


@pytest.mark.parametrize("module", SUBPACKAGES)
def test_imports_first_in_a_fresh_interpreter(module):
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
