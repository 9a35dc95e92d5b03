"""`tekapbench report`: one self-contained HTML page of a suite, from a suite trained for one epoch on the
embedded digits: its tables hold the records' numbers, its plots are embedded, it names no outside
address, and a headless Chromium (where installed) loads it without a console message and shows the
tables; the screenshot is kept in the test's tmp_path."""
from __future__ import annotations

import base64
import functools
import json
import os
import shutil
import subprocess
import textwrap
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from tekapbench.cli import main
from tekapbench.tables import FORMATS
from tekapbench.tables.base import Stat, Table

SUITE = """
[suite]
name = "reportsuite"
description = "One epoch on digits, <for> the report's tests & its escaping"
seeds = [0]
cpu_threads = 1

[data]
datasets = ["digits"]

[recipe]
epochs = 1

[[pairs]]
teacher = "resnet8_tiny"
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


class Page(HTMLParser):
    """What the tests read of a page: its results tables (caption, rows of cell texts), images, links,
    scripts, stylesheets and the Content-Security-Policy."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: list[dict] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.scripts = self.stylesheets = 0
        self.csp = None
        self.ids: set[str] = set()
        self._table = self._row = self._cell = self._caption = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "table" and "results" in (attrs.get("class") or "").split():
            self._table = {"caption": "", "rows": []}
            self.tables.append(self._table)
        elif tag == "caption" and self._table is not None:
            self._caption = []
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table["rows"].append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])
        elif tag == "script":
            self.scripts += 1
        elif tag == "link":
            self.stylesheets += 1
        elif tag == "meta" and (attrs.get("http-equiv") or "").lower() == "content-security-policy":
            self.csp = attrs.get("content")
        for name in ("src", "href", "action", "srcset", "poster", "data"):
            if attrs.get(name) and tag not in ("img", "a"):
                self.links.append(attrs[name])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr":
            self._row = None
        elif tag == "caption" and self._caption is not None:
            self._table["caption"] = "".join(self._caption).strip()
            self._caption = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        for part in (self._cell, self._caption):
            if part is not None:
                part.append(data)

    def cells(self) -> dict[tuple[str, str], str]:
        """(row, column) -> cell text of every results table."""
        found = {}
        for table in self.tables:
            header, *rows = table["rows"]
            for row in rows:
                found.update({(row[0], column): text for column, text in zip(header[1:], row[1:])})
        return found


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A suite trained for one epoch: (suite file, results folder, {row: record})."""
    root = tmp_path_factory.mktemp("report")
    suite = root / "reportsuite.toml"
    suite.write_text(textwrap.dedent(SUITE))
    results = root / "results"
    assert main(["run", str(suite), "--results", str(results), "--quiet"]) == 0
    plan = json.loads((results / "reportsuite" / "plan.json").read_text())
    records = {}
    for cell in plan["cells"]:
        [path] = (results / "reportsuite" / "runs" / cell["run_id"]).glob("attempt-*/record.json")
        records[cell["row"]] = json.loads(path.read_text())
    return suite, results, records


@pytest.fixture(scope="module")
def report(trained):
    """The page written by `tekapbench report reportsuite` where it goes by default."""
    _, results, _ = trained
    assert main(["report", "reportsuite", "--results", str(results)]) == 0
    out = results / "reportsuite" / "report.html"
    return out, out.read_text(encoding="utf-8")


COLUMN = "resnet8_tiny → resnet8_tiny"


def test_the_tables_show_the_numbers_of_the_records(trained, report):
    _, _, records = trained
    page = Page(report[1])
    assert page.tables and page.tables[0]["caption"].startswith("reportsuite · ")
    cells = page.cells()
    assert {row for row, _ in cells} == set(records)  # Teacher, Student, KD, KD+TeKAP (L)
    for row, record in records.items():
        assert cells[row, COLUMN] == f"{record['metrics']['test_acc_last']:.2f}", row


def test_each_run_has_its_settings_provenance_and_links_to_its_files(trained, report):
    _, results, records = trained
    out, text = report
    page = Page(text)
    for record in records.values():
        assert f"run-{record['run_id']}" in page.ids
        assert record["provenance"]["git_commit"] in text if record["provenance"]["git_commit"] else True
        assert f"{record['provenance']['wall_seconds']:.6g}" in text
        assert record["data"]["sha256"] in text
    targets = {(out.parent / unquote(link)).resolve() for link in page.links if not link.startswith("#")}
    assert all(target.exists() for target in targets), sorted(t for t in targets if not t.exists())
    for record in records.values():
        attempt = results / "reportsuite" / "runs" / record["run_id"] / record["attempt"]
        assert {(attempt / "record.json").resolve(), (attempt / "model.pt").resolve()} <= targets
        # and whatever else the run keeps there (its history and log, its checkpoint), hidden files aside
        kept = {p.resolve() for p in attempt.rglob("*") if p.is_file() and not p.name.startswith(".")}
        assert kept <= targets, sorted(kept - targets)
    assert (results / "reportsuite" / "plan.json").resolve() in targets
    # the KD row's resolved method (its temperature) and its teacher, as a link within the page
    kd = records["KD"]
    assert '&quot;temperature&quot;: 4.0' in text and f'href="#run-{kd["spec"]["teacher"]}"' in text


def test_the_page_is_self_contained_and_escaped(report):
    text = report[1]
    page = Page(text)
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    for src in page.images:
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert page.scripts == 0 and page.stylesheets == 0 and "<style>" in text
    assert page.csp and "default-src 'none'" in page.csp
    for link in page.links:  # in-page anchors and relative paths only: nothing to fetch from elsewhere
        parsed = urlparse(link)
        assert not parsed.scheme and not parsed.netloc and not link.startswith("/"), link
    assert "http://" not in text and "https://" not in text and "url(" not in text
    assert "&lt;for&gt; the report&#x27;s tests &amp; its escaping" in text  # the description, escaped


def test_a_suite_file_and_another_place_for_the_page(trained, tmp_path, capsys):
    suite, results, records = trained
    out = tmp_path / "elsewhere" / "page.html"
    assert main(["report", str(suite), "--results", str(results), "--out", str(out), "--metric", "best"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    page = Page(out.read_text(encoding="utf-8"))
    assert page.cells()["KD", COLUMN] == f"{records['KD']['metrics']['test_acc_best']:.2f}"
    files = [link for link in page.links if not link.startswith("#")]
    assert files and all((out.parent / unquote(link)).exists() for link in files)
    assert not list(out.parent.glob(".*.tmp"))  # written atomically: no temporary file left


def test_a_suite_without_results_exits_2(tmp_path, capsys):
    assert main(["report", "nosuch", "--results", str(tmp_path / "results")]) == 2
    assert "no results for suite 'nosuch'" in capsys.readouterr().err


def test_the_html_format_escapes_and_marks():
    table = Table("t <&> t", ["<b>A</b>", "B"], ["c&d"],
                  {("<b>A</b>", "c&d"): Stat(1.0, 0.5, 2), ("B", "c&d"): None}, notes=["n < m"])
    table.best.add(("<b>A</b>", "c&d"))
    table.marks.add(("<b>A</b>", "c&d"))
    text = FORMATS.get("html")([table])
    assert "<b>" not in text and "&lt;b&gt;A&lt;/b&gt;" in text and "c&amp;d" in text and "n &lt; m" in text
    page = Page(text)
    assert page.tables[0]["caption"] == "t <&> t"
    assert page.cells() == {("<b>A</b>", "c&d"): "1.00 ± 0.50 ✓", ("B", "c&d"): "–"}
    assert '<td class="best mark"><strong>1.00 ± 0.50</strong>' in text


@functools.lru_cache(maxsize=None)
def chromium() -> str | None:
    """A Chromium that starts (Ubuntu's chromium-browser may be a stub that asks for snap)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            try:
                if subprocess.run([path, "--version"], capture_output=True, timeout=60).returncode == 0:
                    return path
            except (OSError, subprocess.SubprocessError):
                pass
    return None


@pytest.mark.skipif(chromium() is None, reason="no working chromium, chromium-browser or google-chrome: install "
                                               "Debian's chromium (.ci/run does, best effort) to load the page in one")
def test_a_headless_chromium_loads_the_page_and_shows_the_tables(trained, report, tmp_path):
    _, _, records = trained
    out = report[0]
    common = [chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
              f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
              "--window-size=1280,2000"]
    url = out.resolve().as_uri()
    screenshot = tmp_path / "report.png"
    shot = subprocess.run([*common, f"--screenshot={screenshot}", url], capture_output=True, text=True, timeout=180)
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.read_bytes().startswith(b"\x89PNG") and screenshot.stat().st_size > 10_000
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    # a script error, a refused load (the page's Content-Security-Policy) or a missing resource would be
    # logged as a console message
    problems = [line for line in (shot.stderr + dom.stderr).splitlines()
                if ":CONSOLE" in line or "Refused to" in line or "net::ERR_" in line]
    assert not problems, problems
    page = Page(dom.stdout)
    assert page.tables, dom.stdout[:2000]
    cells = page.cells()
    for row, record in records.items():
        assert cells[row, COLUMN] == f"{record['metrics']['test_acc_last']:.2f}", row
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    # the screenshot kept as the test's artefact (.artifacts/, or $TEKAPBENCH_TEST_ARTIFACTS): what the page looked like
    artifacts = Path(os.environ.get("TEKAPBENCH_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / ".artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(screenshot, artifacts / "report-chromium.png")


def test_unfinished_failed_and_bare_runs_have_their_place(tmp_path):
    """A hand-written folder (no training): a record with only metrics and an empty history, beside its
    history log and an evaluation; a failed run; a pending one. Each gets its section, state and files;
    nothing breaks."""
    from tekapbench.report import write_report

    results = tmp_path / "results"
    runs = {name: {"kind": "train", "dataset": "digits", "arch": "resnet8_tiny", "seed": 0, "teacher": None}
            for name in ("done0", "failed0", "pending0")}
    cells = [{"dataset": "digits", "teacher": "t", "student": "s", "row": row, "seed": 0, "run_id": run_id}
             for row, run_id in (("Teacher", "done0"), ("KD <x>", "failed0"), ("Student", "pending0"))]
    (results / "bare").mkdir(parents=True)
    (results / "bare" / "plan.json").write_text(json.dumps(
        {"suite": "bare", "layout": "diverse", "runs": runs, "cells": cells, "needs": {}}))
    done = results / "bare" / "runs" / "done0" / "attempt-1"
    (done / "evaluations").mkdir(parents=True)
    record = {"run_id": "done0", "metrics": {"test_acc_last": 12.345}, "history": []}
    (done / "record.json").write_text(json.dumps(record))
    (done / "history.jsonl").write_text('{"epoch": 1}\n')
    (done / "evaluations" / "calibration-abc.json").write_text(json.dumps(
        {"evaluation": "calibration", "version": 1, "settings": {}, "results": {"ece": 0.125}}))
    (done / ".record.json.x.tmp").write_text("half")  # a write in progress: not listed
    failed = results / "bare" / "runs" / "failed0" / "attempt-1"
    failed.mkdir(parents=True)
    (failed / "failure.json").write_text(json.dumps({"error": "RuntimeError: <boom> & out"}))

    out = write_report(results, "bare")
    assert out == results / "bare" / "report.html"
    text = out.read_text(encoding="utf-8")
    page = Page(text)
    assert {"run-done0", "run-failed0", "run-pending0"} <= page.ids
    assert page.cells()["Teacher", "t → s"] == "12.35" and page.cells()["Student", "t → s"] == "–"
    assert '<span class="state failed">failed</span>' in text and "RuntimeError: &lt;boom&gt; &amp; out" in text
    assert '<span class="state pending">pending</span>' in text
    assert "&quot;ece&quot;: 0.125" in text  # the stored evaluation
    links = {unquote(link) for link in page.links if not link.startswith("#")}
    assert {"runs/done0/attempt-1/record.json", "runs/done0/attempt-1/history.jsonl",
            "runs/done0/attempt-1/evaluations/calibration-abc.json", "runs/failed0/attempt-1/failure.json",
            "plan.json"} <= links
    assert not any(".tmp" in link for link in links)
    assert not page.images and "No plots" in text
