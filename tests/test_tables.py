"""Tables: mean ± sample std over seeds, one value per run, and every output format."""
import csv
import io

import pytest

from tekapbench.tables import FORMATS, LAYOUTS, Cell
from tekapbench.tables.base import Stat, paired_difference, seeds_needed, settle_marks, with_delta

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
    assert any("HobbitLong/RepDistiller README.md" in note for note in compared.notes)


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
    table = settle_marks(LAYOUTS.get("sota")(cells, Results(rows))[0], ci=False)  # one seed: marks on the mean
    assert table.rows == ["Teacher", "Student", "DKD", "MLKD"]
    assert table.columns == ["t → s · base", "t → s · +TeKAP", "t → s · Δ"]
    assert table.cells["DKD", "t → s · +TeKAP"].mean == 76.6
    assert table.cells["DKD", "t → s · Δ"].mean == pytest.approx(0.3)
    assert table.marks == {("DKD", "t → s · +TeKAP")}  # MLKD+TeKAP did not improve
    assert "76.60 ✓" in FORMATS.get("github")([table]) and r"$\checkmark$" in FORMATS.get("latex")([table])
    assert "+0.30" in FORMATS.get("github")([table])  # a difference carries its sign
    assert settle_marks(LAYOUTS.get("sota")(cells, Results(rows))[0], ci=True).marks == set()  # one seed: no interval


def test_delta_column_and_imagenet_errors():
    table = with_delta(LAYOUTS.get("diverse")(CELLS, Results(VALUES))[0], "Teacher")
    assert table.columns == ["t → s", "t → s · Δ vs Teacher"]
    # paired seed by seed: the one teacher run serves both seeds, so the differences are -10 and -8
    assert table.cells["KD_1%", "t → s · Δ vs Teacher"].mean == pytest.approx(81.0 - 90.0)
    assert table.cells["KD_1%", "t → s · Δ vs Teacher"].n == 2
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


T_975_2DF = 4.302652729911275  # 97.5 % quantile of Student's t with 2 degrees of freedom


def seeded(dataset, row, values, baseline=None):
    """Cells of one row over seeds 0, 1, 2, ..., one run per seed."""
    return [Cell(dataset, "t", "s", row, seed, f"{row}-{seed}", baseline) for seed in range(len(values))]


def test_paired_difference_has_a_t_interval_over_seeds_and_marks_only_when_it_excludes_zero():
    # KD 70, 71, 72; +TeKAP 71, 71.5, 73.5: differences 1, 0.5, 1.5 -> mean 1, std 0.5
    runs = {"KD": [70.0, 71.0, 72.0], "KD+TeKAP": [71.0, 71.5, 73.5], "Other": [70.2, 70.9, 72.1]}
    values = {f"{row}-{seed}": v for row, vs in runs.items() for seed, v in enumerate(vs)}
    cells = seeded("d", "KD", runs["KD"]) + seeded("d", "KD+TeKAP", runs["KD+TeKAP"], "KD") + \
        seeded("d", "Other", runs["Other"], "KD")
    table = settle_marks(LAYOUTS.get("sota")(cells, Results(values))[0], ci=True)
    delta = table.cells["KD / KD+TeKAP", "t → s · Δ"]
    half = T_975_2DF * 0.5 / 3 ** 0.5
    assert (delta.mean, delta.std, delta.n) == (pytest.approx(1.0), pytest.approx(0.5), 3)
    assert delta.interval == (pytest.approx(1.0 - half), pytest.approx(1.0 + half))  # [-0.24, 2.24]
    # the interval includes 0: no ✓, though the mean rose; with --no-ci the mean decides
    assert table.marks == set()
    assert settle_marks(LAYOUTS.get("sota")(cells, Results(values))[0], ci=False).marks == {
        ("KD / KD+TeKAP", "t → s · +TeKAP"), ("KD / Other", "t → s · +TeKAP")}
    text = FORMATS.get("github")([table])
    assert "+1.00 [-0.24, +2.24]" in text
    assert "KD+TeKAP vs KD, t → s: Δ +1.00, std 0.50 over 3 seeds, interval includes 0; about 4 seeds" in text
    assert "t-distribution" in text and "✓: TeKAP improves its base method, with the 95% interval" in text
    # a steadier gain is resolved and marked
    runs["KD+TeKAP"] = [71.0, 72.1, 72.9]
    values.update({f"KD+TeKAP-{seed}": v for seed, v in enumerate(runs["KD+TeKAP"])})
    table = settle_marks(LAYOUTS.get("sota")(cells, Results(values))[0], ci=True)
    assert table.cells["KD / KD+TeKAP", "t → s · Δ"].interval[0] > 0
    assert table.marks == {("KD / KD+TeKAP", "t → s · +TeKAP")}
    csv_text = FORMATS.get("csv")([table])
    assert "ci_low" in csv_text.splitlines()[0]


def test_differences_pair_seeds_not_positions():
    base = Stat.of([1.0, 2.0], by_seed={0: 1.0, 5: 2.0})
    ours = Stat.of([3.0, 2.5, 9.0], by_seed={5: 3.0, 0: 2.5, 7: 9.0})  # seed 7 has no base: left out
    difference = paired_difference(ours, base)
    assert difference.n == 2 and difference.mean == pytest.approx((1.5 + 1.0) / 2)
    assert paired_difference(ours, None) is None


def test_seeds_needed_is_the_least_n_whose_interval_excludes_zero():
    from scipy.stats import t

    difference = Stat(0.3, 0.5, 3)
    n = seeds_needed(difference)
    assert t.ppf(0.975, n - 1) * 0.5 / n ** 0.5 < 0.3 <= t.ppf(0.975, n - 2) * 0.5 / (n - 1) ** 0.5
    assert seeds_needed(Stat(1.0, 0.0, 2)) == 2 and seeds_needed(Stat(0.0, 0.5, 3)) is None
    assert seeds_needed(Stat(1e-6, 5.0, 3)) is None  # beyond any feasible count


def test_sota_pairs_rows_by_the_baseline_key_not_by_label_text():
    # 'KD+TeKAP (F+L)' starts with 'KD' and names TeKAP, but its baseline key says what it is compared with
    rows = {"Teacher": 79.0, "KD": 73.0, "KD+TeKAP (L)": 73.5, "KD+TeKAP (F+L)": 74.0, "CRD": 75.0, "Ours": 75.5}
    baselines = {"KD+TeKAP (L)": "KD", "KD+TeKAP (F+L)": "KD", "Ours": "CRD"}
    cells = [Cell("c", "t", "s", row, 0, row, baselines.get(row)) for row in rows]
    table = LAYOUTS.get("sota")(cells, Results(rows))[0]
    assert table.rows == ["Teacher", "KD / KD+TeKAP (L)", "KD / KD+TeKAP (F+L)", "CRD"]
    assert table.cells["KD / KD+TeKAP (F+L)", "t → s · base"].mean == 73.0
    assert table.cells["KD / KD+TeKAP (F+L)", "t → s · +TeKAP"].mean == 74.0
    assert table.cells["CRD", "t → s · +TeKAP"].mean == 75.5
    assert "rows paired by the suite's baseline key" in table.notes
    # the published numbers are looked up under the base's and the variant's own labels
    assert table.column_keys["t → s · +TeKAP"]["rows"]["CRD"] == "Ours"
    # without the key (plans written before it), '<base>+TeKAP' is the variant of '<base>', nothing looser
    unkeyed = [Cell("c", "t", "s", row, 0, row) for row in ("KD", "KD+TeKAP", "KD+TeKAP (F+L)")]
    table = LAYOUTS.get("sota")(unkeyed, Results({"KD": 1.0, "KD+TeKAP": 2.0, "KD+TeKAP (F+L)": 3.0}))[0]
    assert table.rows == ["KD+TeKAP (F+L)", "KD"]
