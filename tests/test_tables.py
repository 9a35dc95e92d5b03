"""Tables: mean ± sample std over seeds, one value per run, and every output format."""
import csv
import io

import pytest

from tekapbench.tables import FORMATS, LAYOUTS, Cell

CELLS = [
    Cell("digits", "t", "s", "Teacher", 0, "teacher"),  # one teacher serves both seeds
    Cell("digits", "t", "s", "Teacher", 1, "teacher"),
    Cell("digits", "t", "s", "KD_1%", 0, "kd0"),
    Cell("digits", "t", "s", "KD_1%", 1, "kd1"),
    Cell("other", "t", "s", "Teacher", 0, "teacher2"),
]
VALUES = {"teacher": 90.0, "kd0": 80.0, "kd1": 82.0, "teacher2": 50.0}


@pytest.fixture
def tables():
    return LAYOUTS.get("diverse")(CELLS, VALUES.get, "last-epoch top-1")


def test_diverse_layout_counts_a_shared_teacher_once(tables):
    first = tables[0]
    assert first.rows == ["Teacher", "KD_1%"] and first.columns == ["t → s"]
    teacher = first.cells["Teacher", "t → s"]
    assert (teacher.mean, teacher.std, teacher.n) == (90.0, None, 1)
    kd = first.cells["KD_1%", "t → s"]
    assert kd.mean == pytest.approx(81.0) and kd.std == pytest.approx(2**0.5) and kd.n == 2


def test_unfinished_runs_are_noted_not_zero():
    tables = LAYOUTS.get("diverse")(CELLS[:3], {"teacher": 90.0}.get, "m")
    assert tables[0].cells["KD_1%", "t → s"] is None
    assert "1 run(s) not finished yet" in tables[0].notes
    assert "–" in FORMATS.get("github")(tables)


def test_latex_escapes_labels_and_renders_plus_minus(tables):
    text = FORMATS.get("latex")(tables)
    assert r"\toprule" in text and r"\bottomrule" in text
    assert r"KD\_1\%" in text and r"81.00 $\pm$ 1.41" in text and r"t $\rightarrow$ s" in text


def test_csv_is_one_frame_for_all_tables(tables):
    rows = list(csv.DictReader(io.StringIO(FORMATS.get("csv")(tables))))
    assert len(rows) == 3 and {r["table"] for r in rows} == {"digits: top-1 accuracy (%)", "other: top-1 accuracy (%)"}
    assert rows[1]["mean"] == "81.0" and rows[1]["n"] == "2" and rows[1]["metric"] == "last-epoch top-1"
