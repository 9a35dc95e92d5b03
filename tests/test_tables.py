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


class Results:
    def __init__(self, values, evaluations=None):
        self.values, self.stored, self.metric_label = values, evaluations or {}, "last-epoch top-1"

    def accuracy(self, run_id):
        return self.values.get(run_id)

    def evaluations(self, run_id, name):
        return self.stored.get((run_id, name), [])


@pytest.fixture
def tables():
    return LAYOUTS.get("diverse")(CELLS, Results(VALUES))


def test_diverse_layout_counts_a_shared_teacher_once(tables):
    first = tables[0]
    assert first.rows == ["Teacher", "KD_1%"] and first.columns == ["t → s"]
    teacher = first.cells["Teacher", "t → s"]
    assert (teacher.mean, teacher.std, teacher.n) == (90.0, None, 1)
    kd = first.cells["KD_1%", "t → s"]
    assert kd.mean == pytest.approx(81.0) and kd.std == pytest.approx(2**0.5) and kd.n == 2


def test_unfinished_runs_are_noted_not_zero():
    tables = LAYOUTS.get("diverse")(CELLS[:3], Results({"teacher": 90.0}))
    assert tables[0].cells["KD_1%", "t → s"] is None
    assert "1 value(s) not available yet (run not finished or not evaluated)" in tables[0].notes
    assert "–" in FORMATS.get("github")(tables)


def test_latex_escapes_labels_and_renders_plus_minus(tables):
    text = FORMATS.get("latex")(tables)
    assert r"\toprule" in text and r"\bottomrule" in text
    assert r"KD\_1\%" in text and r"81.00 $\pm$ 1.41" in text and r"t $\rightarrow$ s" in text


def test_csv_is_one_frame_for_all_tables(tables):
    rows = list(csv.DictReader(io.StringIO(FORMATS.get("csv")(tables))))
    assert len(rows) == 3 and {r["table"] for r in rows} == {"digits: top-1 accuracy (%)", "other: top-1 accuracy (%)"}
    assert rows[1]["mean"] == "81.0" and rows[1]["n"] == "2" and rows[1]["metric"] == "last-epoch top-1"


def test_best_is_bold_per_column_ties_included_teacher_excluded():
    cells = [Cell("d", "t", "s", row, 0, row) for row in ("Teacher", "A", "B", "C")]
    values = {"Teacher": 99.0, "A": 80.0, "B": 82.0, "C": 82.0}
    table = LAYOUTS.get("diverse")(cells, Results(values))[0]
    assert table.best == {("B", "t → s"), ("C", "t → s")}
    text = FORMATS.get("github")([table])
    assert "**82.00**" in text and "**99.00**" not in text


def test_n_is_shown_when_seeds_differ():
    cells = [Cell("d", "t", "s", "A", 0, "a0"), Cell("d", "t", "s", "A", 1, "a1"), Cell("d", "t", "s", "B", 0, "b0")]
    table = LAYOUTS.get("diverse")(cells, Results({"a0": 1.0, "a1": 3.0, "b0": 2.0}))[0]
    assert table.show_n and "(n=2)" in FORMATS.get("markdown")([table])


def test_robustness_layout_has_a_column_per_attack_and_eps():
    stored = {("s0", "adversarial"): [{"settings": {"seed": 0}, "results": {
        "clean_acc": 90.0, "num_examples": 100,
        "results": [{"attack": "pgd", "eps_255": 8.0, "robust_acc": 10.0},
                    {"attack": "fgsm", "eps_255": 2.0, "robust_acc": 50.0},
                    {"attack": "pgd", "eps_255": 2.0, "robust_acc": 30.0}]}}]}
    cells = [Cell("d", "t", "s", "KD", 0, "s0")]
    table = LAYOUTS.get("robustness")(cells, Results({}, stored))[0]
    assert table.columns == ["clean", "FGSM 2/255", "PGD 2/255", "PGD 8/255"]
    assert table.cells["KD", "PGD 8/255"].mean == 10.0


def test_json_format_is_data():
    import json

    data = json.loads(FORMATS.get("json")(LAYOUTS.get("diverse")(CELLS, Results(VALUES))))
    assert data[0]["rows"] == ["Teacher", "KD_1%"] and data[0]["cells"][1]["mean"] == 81.0
    assert data[0]["cells"][1]["best"] is False  # a single method: nothing to single out


def test_compare_paper_puts_published_numbers_and_the_difference_beside_ours():
    from pathlib import Path

    from tekapbench.tables.paper import load_published, with_published

    published = load_published(Path(__file__).parent.parent / "results" / "paper")
    assert published["cifar100", "resnet32x4", "resnet8x4", "KD+TeKAP (L)", "top1"][0] == 74.79
    assert published["cifar100", "vgg13", "MobileNetV2", "DKD", "top1"][0] == 69.71
    cells = [Cell("cifar100", "resnet32x4", "resnet8x4", row, 0, row) for row in ("Teacher", "KD", "Mine")]
    table = LAYOUTS.get("diverse")(cells, Results({"Teacher": 79.0, "KD": 73.0, "Mine": 80.0}))[0]
    compared = with_published(table, published)
    column = "resnet32x4 → resnet8x4"
    assert compared.columns == [column, f"{column} · paper", f"{column} · Δ"]
    assert compared.cells["KD", f"{column} · paper"].mean == 73.33
    assert compared.cells["KD", f"{column} · Δ"].mean == pytest.approx(73.0 - 73.33)
    assert compared.cells["Mine", f"{column} · paper"] is None  # nothing published for this row
    assert any("REFERENCE.md section 3" in note for note in compared.notes)


def test_compare_paper_without_the_data_exits_2(tmp_path, capsys):
    import json

    from tekapbench.cli import main

    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "plan.json").write_text(json.dumps({"layout": "diverse", "cells": []}))
    assert main(["table", "--results", str(tmp_path), "--compare", "paper", "--paper", str(tmp_path)]) == 2
    assert "published.csv" in capsys.readouterr().err


def test_sota_layout_puts_each_base_beside_its_tekap_variant_and_marks_improvements():
    rows = {"Teacher": 79.0, "Student": 72.0, "DKD": 76.3, "DKD+TeKAP": 76.6, "MLKD": 77.1, "MLKD+TeKAP": 77.0}
    cells = [Cell("cifar100", "t", "s", row, 0, row) for row in rows]
    table = LAYOUTS.get("sota")(cells, Results(rows))[0]
    assert table.rows == ["Teacher", "Student", "DKD", "MLKD"]
    assert table.columns == ["t → s · base", "t → s · +TeKAP"]
    assert table.cells["DKD", "t → s · +TeKAP"].mean == 76.6
    assert table.marks == {("DKD", "t → s · +TeKAP")}  # MLKD+TeKAP did not improve
    assert "76.60 ✓" in FORMATS.get("github")([table]) and r"$\checkmark$" in FORMATS.get("latex")([table])


def test_delta_column_and_imagenet_errors():
    from tekapbench.tables.base import with_delta

    table = with_delta(LAYOUTS.get("diverse")(CELLS, Results(VALUES))[0], "Teacher")
    assert table.columns == ["t → s", "t → s · Δ vs Teacher"]
    assert table.cells["KD_1%", "t → s · Δ vs Teacher"].mean == pytest.approx(81.0 - 90.0)
    assert table.cells["Teacher", "t → s · Δ vs Teacher"] is None

    class Records(Results):
        def record(self, run_id):
            return {"metrics": {"test_acc_last": self.values[run_id], "test_top5_last": 95.0}}

    cells = [Cell("imagenet", "ResNet34", "ResNet18", row, 0, row) for row in ("Teacher", "KD", "KD+TeKAP (L)")]
    errors = LAYOUTS.get("imagenet")(cells, Records({"Teacher": 73.3, "KD": 70.4, "KD+TeKAP (L)": 70.7}))[0]
    assert errors.cells["KD", "Top-1 error"].mean == pytest.approx(29.6)
    assert errors.best == {("KD+TeKAP (L)", "Top-1 error"), ("KD", "Top-5 error"), ("KD+TeKAP (L)", "Top-5 error")}


def test_latex_table_compiles_when_a_tex_engine_is_installed(tmp_path):
    import shutil
    import subprocess

    text = FORMATS.get("latex")(LAYOUTS.get("diverse")(CELLS, Results(VALUES)))
    assert text.count(r"\\") == 5 and text.count(r"\begin{tabular}{lc}") == 2  # two datasets: 3 + 2 lines
    engine = shutil.which("pdflatex")
    if engine is None:
        return  # no TeX here: the text checks above are what can be checked
    (tmp_path / "t.tex").write_text("\\documentclass{article}\\usepackage{booktabs,amssymb}\\begin{document}\n"
                                    + text + "\n\\end{document}\n")
    done = subprocess.run([engine, "-interaction=nonstopmode", "t.tex"], cwd=tmp_path, capture_output=True)
    assert done.returncode == 0, done.stdout.decode()[-2000:]


def test_a_results_folder_of_another_suite_is_refused(tmp_path, capsys):
    import json

    from tekapbench.cli import main

    (tmp_path / "renamed").mkdir()
    (tmp_path / "renamed" / "plan.json").write_text(json.dumps({"suite": "smoke", "layout": "diverse", "cells": []}))
    assert main(["table", "--results", str(tmp_path)]) == 2
    assert "belongs to suite 'smoke', not 'renamed'" in capsys.readouterr().err


def test_compare_paper_on_the_sota_layout_reads_the_tekap_rows():
    from pathlib import Path

    from tekapbench.tables.paper import load_published, with_published

    rows = {"DKD": 76.0, "DKD+TeKAP": 76.5}
    cells = [Cell("cifar100", "resnet32x4", "resnet8x4", row, 0, row) for row in rows]
    table = with_published(LAYOUTS.get("sota")(cells, Results(rows))[0],
                           load_published(Path(__file__).parent.parent / "results" / "paper"))
    column = "resnet32x4 → resnet8x4"
    assert table.cells["DKD", f"{column} · base · paper"].mean == 76.32
    assert table.cells["DKD", f"{column} · +TeKAP · paper"].mean == 76.59
