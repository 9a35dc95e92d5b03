"""One self-contained HTML page of a suite's results: its tables in each of its layouts, its plots (PNG,
embedded as data URIs), and per run its label(s), id, status, resolved spec and recipe, metrics, per-epoch
history, evaluations, provenance and relative links to its files.

The page loads nothing: inline CSS, no script, images as data URIs, and a Content-Security-Policy that
forbids any other source, so it opens offline and can be mailed as it is (the links to the run files are
relative to where the page is written, so they work beside the results folder).
"""
from __future__ import annotations

import base64
import io
import json
import math
import os
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

from tekapbench import __version__
from tekapbench.atomic import atomic_path
from tekapbench.errors import UsageError
from tekapbench.results.store import FAILURE, RECORD, ResultStore

REPORT_NAME = "report.html"
# what the page may load: its own inline styles and data: images, nothing else
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

# provenance keys shown first, in this order; the rest follow as stored
PROVENANCE_FIRST = ("git_commit", "tekapbench", "torch", "python", "packages", "device", "device_name",
                    "torch_threads", "host", "slurm_job", "started", "finished", "wall_seconds", "train_seconds",
                    "resumed_after_epoch")

STYLE = """
:root { color-scheme: light; --line: #d0d7de; --soft: #f6f8fa; --ink: #1f2328; --dim: #656d76; --accent: #0550ae; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       margin: 0 auto; padding: 1.5rem 2rem 4rem; max-width: 1200px; }
h1 { font-size: 1.6rem; margin: 0 0 .3rem; } h4 { font-size: .95rem; margin: .7rem 0 .3rem; }
h2 { font-size: 1.25rem; margin: 2.2rem 0 .6rem; border-bottom: 1px solid var(--line); padding-bottom: .25rem; }
h3 { font-size: 1.05rem; margin: 0 0 .4rem; }
a { color: var(--accent); } code, pre { font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background: var(--soft); border: 1px solid var(--line); padding: .6rem; overflow: auto; max-height: 28rem; }
.meta { color: var(--dim); margin: 0 0 1rem; } .meta code { color: var(--ink); }
nav ul { columns: 2; padding-left: 1.2rem; }
table { border-collapse: collapse; margin: .3rem 0 .6rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: .25rem .55rem; text-align: right; vertical-align: top; }
thead th, table.kv th { background: var(--soft); } th[scope=row], table.kv th { text-align: left; }
caption { text-align: left; font-weight: 600; padding: .2rem 0; }
figure { margin: 0 0 1.4rem; overflow-x: auto; } figcaption { color: var(--dim); font-size: 12.5px; }
figcaption ul { margin: .2rem 0; padding-left: 1.2rem; }
td.missing { color: var(--dim); } td.difference { font-style: italic; } .check { color: #1a7f37; font-weight: 700; }
img.plot { max-width: 100%; height: auto; border: 1px solid var(--line); }
section.run { border: 1px solid var(--line); border-radius: 6px; padding: .8rem 1rem; margin: 0 0 1rem; }
.state { display: inline-block; padding: 0 .45rem; border-radius: 1rem; font-size: 12px; font-weight: 600;
         background: var(--soft); border: 1px solid var(--line); }
.state.done { background: #dafbe1; border-color: #4ac26b; }
.state.failed { background: #ffebe9; border-color: #ff8182; }
.state.running { background: #ddf4ff; border-color: #54aeff; }
.state.skipped { background: #fff8c5; border-color: #d4a72c; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: .2rem 1.5rem; }
details { margin: .3rem 0; } summary { cursor: pointer; color: var(--accent); }
ul.files { margin: .2rem 0; padding-left: 1.2rem; } .size { color: var(--dim); }
table.kv td { text-align: left; word-break: break-word; }
@media print { details { display: block; } body { max-width: none; } }
"""


def default_out(results_root: Path, suite: str) -> Path:
    return Path(results_root) / suite / REPORT_NAME


def write_report(results_root: Path, suite: str, *, out: Path | None = None, metric: str = "last") -> Path:
    """Writes the page atomically (a reader never sees half of it) and returns its path."""
    target = Path(out) if out is not None else default_out(results_root, suite)
    page = build_report(results_root, suite, out=target, metric=metric)
    with atomic_path(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return target


def build_report(results_root: Path, suite: str, *, out: Path, metric: str = "last") -> str:
    """The page of ``suite`` under ``results_root``; ``out`` is where it will be written (links are relative
    to its folder)."""
    from tekapbench.results.status import suite_status
    from tekapbench.tables.build import plan_layouts, suite_results, suite_tables
    from tekapbench.tables.formats import FORMATS

    results_root = Path(results_root)
    store = ResultStore(results_root, suite)
    if store.read_plan() is None:
        raise UsageError(f"no results for suite {suite!r} under {results_root}/ (no plan.json): run "
                         f"`tekapbench run SUITE.toml` first")
    plan, cells, results = suite_results(results_root, suite, metric)
    tables = suite_tables(results_root, suite, metric=metric)
    statuses = suite_status(plan, store, _queue(store))
    here = Path(os.path.abspath(out)).parent
    link = lambda path: quote(Path(os.path.relpath(os.path.abspath(path), here)).as_posix())  # noqa: E731

    counts: dict[str, int] = {}
    for status in statuses:
        counts[status.state] = counts.get(status.state, 0) + 1
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = f"tekapbench · {suite}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="tekapbench {escape(__version__)}">',
        f"<title>{escape(title)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
        f"<h1>{escape(title)}</h1>",
    ]
    if plan.get("description"):
        parts.append(f"<p>{escape(str(plan['description']))}</p>")
    parts.append(
        '<p class="meta">'
        f"suite file <code>{escape(str(plan.get('source', '')))}</code> · "
        f"results <code>{escape(str(results_root))}</code> "
        f"(<a href=\"{link(store.dir / 'plan.json')}\">plan.json</a>) · "
        f"layouts {escape(', '.join(plan_layouts(plan)))} · metric {escape(results.metric_label)} · "
        f"{len(statuses)} runs: {escape(', '.join(f'{n} {s}' for s, n in counts.items()))} · "
        f"written {generated} by tekapbench {escape(__version__)}</p>")
    plots = _plots(cells, results)
    parts.append("<nav><ul>" + "".join(
        f'<li><a href="#{anchor}">{escape(text)}</a></li>' for anchor, text in
        [("tables", f"Tables ({len(tables)})"), ("plots", f"Plots ({len(plots)})"),
         ("runs", f"Runs ({len(statuses)})")])
        + "</ul></nav>")

    parts.append('<h2 id="tables">Tables</h2>')
    parts.append(FORMATS.get("html")(tables) if tables else "<p>No tables: no layout of this suite has cells.</p>")

    parts.append('<h2 id="plots">Plots</h2>')
    if not plots:
        parts.append("<p>No plots: they need training histories, adversarial or shot_groups evaluations.</p>")
    for kind, name, data in plots:
        parts.append(f'<figure class="plot" id="plot-{escape(name)}"><img class="plot" alt="{escape(name)}" '
                     f'src="data:image/png;base64,{data}"><figcaption>{escape(kind)}: {escape(name)}'
                     "</figcaption></figure>")

    parts.append('<h2 id="runs">Runs</h2>')
    for status in statuses:
        parts.append(_run_section(plan, store, status, link))
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _queue(store: ResultStore):
    """Where a submitted run stands in the Slurm queue, as `tekapbench status` says; nothing for a suite
    never submitted to Slurm (whose executor, and the model registry it imports, then stay unloaded)."""
    if not any((store.dir / "submissions").glob("*.json")):  # execution.slurm.SUBMISSIONS
        return lambda run_id: None
    try:
        from tekapbench.execution.slurm import queue_lookup

        return queue_lookup(store)
    except Exception:  # noqa: BLE001 - no submitit, no squeue: a report still tells what the folder holds
        return lambda run_id: None


def _plots(cells, results) -> list[tuple[str, str, str]]:
    """(kind, name, base64 PNG) of every registered plot that has data."""
    from tekapbench.plots import PLOTS

    found = []
    for kind in PLOTS.names():
        for name, figure in PLOTS.get(kind)(cells, results).items():
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=100)
            found.append((kind, name, base64.b64encode(buffer.getvalue()).decode("ascii")))
    return found


def _run_section(plan: dict, store: ResultStore, status, link) -> str:
    run_id = status.run_id
    spec = plan["runs"][run_id]
    record = store.latest_record(run_id)
    labels = sorted({(c["row"], f"{c['teacher']} → {c['student']}", c["seed"]) for c in plan["cells"]
                     if c["run_id"] == run_id}, key=lambda t: (t[1], t[2], t[0]))
    label_text = "; ".join(f"{row} ({column}, seed {seed})" for row, column, seed in labels) or (
        "assistant teacher" if spec.get("teachers") else "no table cell")
    out = [f'<section class="run" id="run-{escape(run_id)}">',
           f'<h3>{escape(status.rows or label_text)} <code>{escape(run_id)}</code> '
           f'<span class="state {escape(status.state)}">{escape(status.state)}</span></h3>']
    about = {"cells": label_text, "dataset": spec.get("dataset"), "architecture": spec.get("arch"),
             "seed": spec.get("seed"), "status": " ".join(x for x in (status.state, status.detail) if x)}
    teachers = [t for t in [spec.get("teacher"), *(spec.get("teachers") or [])] if isinstance(t, str)]
    out.append('<div class="grid"><div>' + _kv(about))
    if teachers:
        out.append("<p>learns from " + ", ".join(
            f'<a href="#run-{escape(t)}"><code>{escape(t)}</code></a>' if t in plan["runs"] else
            f"<code>{escape(t)}</code>" for t in teachers) + "</p>")
    if record is not None:
        out.append("<h4>metrics</h4>" + _kv(record.get("metrics", {})))
    out.append("</div><div>")
    if record is not None:
        provenance = record.get("provenance", {})
        ordered = {k: provenance[k] for k in PROVENANCE_FIRST if k in provenance}
        ordered.update({k: v for k, v in provenance.items() if k not in ordered})
        out.append("<h4>provenance</h4>" + _kv(ordered))
    out.append("</div></div>")

    out.append(_details("resolved spec (method, recipe, teacher)", _pre(record.get("spec", spec) if record else spec)))
    if record is not None and record.get("data"):
        out.append(_details("data", _pre(record["data"])))
    if record is not None and record.get("history"):
        out.append(_details(f"history ({len(record['history'])} epochs)", _history(record["history"])))
    for key, evaluation in store.evaluations(run_id).items():
        name = evaluation.get("evaluation", key)
        out.append(_details(f"evaluation {name} ({key})",
                            _pre({"settings": evaluation.get("settings"), "results": evaluation.get("results")})))
    if record is None and (failure := store.failure(run_id)) is not None:
        out.append(_details("failure", _pre(failure), open_=True))
    files = _files(store, run_id)
    if files:
        out.append("<h4>files</h4><ul class=\"files\">" + "".join(
            f'<li><a href="{link(path)}">{escape(text)}</a> <span class="size">{_size(path)}</span></li>'
            for path, text in files) + "</ul>")
    out.append("</section>")
    return "\n".join(out)


def _files(store: ResultStore, run_id: str) -> list[tuple[Path, str]]:
    """The run's files, newest attempt first: record, weights, checkpoint, history, logs, evaluations (not
    the claims, which only coordinate workers, nor hidden temporary files)."""
    run_dir = store.run_dir(run_id)
    if not run_dir.is_dir():
        return []
    order = {RECORD: 0, "model.pt": 1, FAILURE: 2}
    found = []
    for attempt in reversed(store.attempts(run_id)):
        paths = [p for p in attempt.rglob("*") if p.is_file() and not any(x.startswith(".") for x in
                                                                          p.relative_to(attempt).parts)]
        paths.sort(key=lambda p: (order.get(p.name, 3), len(p.relative_to(attempt).parts), str(p)))
        found += [(p, p.relative_to(run_dir).as_posix()) for p in paths]
    found += [(p, p.name) for p in sorted(run_dir.iterdir()) if p.is_file() and not p.name.startswith(".")]
    return found


def _size(path: Path) -> str:
    try:
        size = float(path.stat().st_size)
    except OSError:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def _value(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(map(_value, value))
    return str(value)


def _kv(mapping: dict) -> str:
    return ('<table class="kv"><tbody>' + "".join(
        f'<tr><th scope="row">{escape(str(k))}</th><td>{escape(_value(v))}</td></tr>' for k, v in mapping.items())
        + "</tbody></table>")


def _pre(data: Any) -> str:
    return f"<pre>{escape(json.dumps(data, indent=2, ensure_ascii=False, default=str))}</pre>"


def _details(summary: str, body: str, open_: bool = False) -> str:
    return f"<details{' open' if open_ else ''}><summary>{escape(summary)}</summary>{body}</details>"


def _flat(entry: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in entry.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _history(history: Iterable[dict]) -> str:
    rows = [_flat(entry) for entry in history]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return ('<table class="history"><thead><tr>' + "".join(f"<th>{escape(c)}</th>" for c in columns)
            + "</tr></thead><tbody>" + "".join(
                "<tr>" + "".join(f"<td>{escape(_value(row.get(c)))}</td>" for c in columns) + "</tr>" for row in rows)
            + "</tbody></table>")
