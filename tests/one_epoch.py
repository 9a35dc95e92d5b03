"""Trains one method for one epoch on the embedded digits (resnet8_tiny -> resnet8_tiny) through the
command line and returns the records: the end-to-end check of a loss term with its teachers."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tekapbench.cli import main

SUITE = """
[suite]
name = "{name}"
seeds = [0]
cpu_threads = 1

[data]
datasets = ["digits"]

[recipe]
epochs = 1

[[pairs]]
teacher = "resnet8_tiny"
student = "resnet8_tiny"
{pair}

[[methods]]
{method}
"""


def one_epoch_records(tmp_path: Path, name: str, *, method: str, pair: str = "") -> list[dict]:
    path = tmp_path / f"{name}.toml"
    path.write_text(textwrap.dedent(SUITE).format(name=name, pair=pair, method=textwrap.dedent(method).strip()))
    results = tmp_path / "results"
    assert main(["run", str(path), "--results", str(results), "--quiet"]) == 0
    return [json.loads(p.read_text()) for p in results.glob(f"{name}/runs/*/attempt-*/record.json")]
