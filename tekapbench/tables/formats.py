"""Output formats, each registered in FORMATS: a list of tables in, one text out."""
from __future__ import annotations

import io
import json
from typing import Callable

from tabulate import tabulate

from tekapbench.registry import Registry
from tekapbench.tables.base import Stat, Table

Renderer = Callable[[list[Table]], str]
FORMATS: Registry[Renderer] = Registry("table format")


def _plain(stat: Stat | None, pm: str = "±", show_n: bool = False, signed: bool = False) -> str:
    if stat is None:
        return "–"
    number = "{:+.2f}" if signed else "{:.2f}"
    text = number.format(stat.mean)
    if stat.interval is not None:
        text += " [" + ", ".join(map(number.format, stat.interval)) + "]"
    elif stat.std is not None:
        text += f" {pm} {stat.std:.2f}"
    return f"{text} (n={stat.n})" if show_n else text


def _cell(table: Table, row: str, column: str, bold: Callable[[str], str], pm: str = "±", check: str = "✓") -> str:
    text = _plain(table.cells[row, column], pm, table.show_n, signed=(row, column) in table.differences)
    text = bold(text) if (row, column) in table.best else text
    return f"{text} {check}" if (row, column) in table.marks else text


def _text_table(table: Table, tablefmt: str) -> str:
    body = [[row] + [_cell(table, row, col, lambda t: f"**{t}**") for col in table.columns] for row in table.rows]
    text = tabulate(body, headers=["", *table.columns], tablefmt=tablefmt, disable_numparse=True)
    return "\n".join([f"**{table.title}**", "", text, "", *[f"_{n}_" for n in table.notes]])


@FORMATS.register("github")
def render_github(tables: list[Table]) -> str:
    return "\n\n".join(_text_table(table, "github") for table in tables)


@FORMATS.register("markdown")
def render_markdown(tables: list[Table]) -> str:
    return "\n\n".join(_text_table(table, "pipe") for table in tables)


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    escaped = "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)
    return escaped.replace("→", r"$\rightarrow$").replace("±", r"$\pm$")


@FORMATS.register("latex")
def render_latex(tables: list[Table]) -> str:
    """Booktabs tabulars, ready to paste into a paper (needs \\usepackage{booktabs}; amssymb for the ✓)."""
    return "\n\n".join(map(_latex_tabular, tables))


def _latex_tabular(table: Table) -> str:
    lines = [f"% {latex_escape(table.title)}; " + "; ".join(latex_escape(n) for n in table.notes),
             r"\begin{tabular}{l" + "c" * len(table.columns) + "}", r"\toprule",
             " & ".join(["", *map(latex_escape, table.columns)]) + r" \\", r"\midrule"]
    for row in table.rows:
        cells = [_cell(table, row, col, lambda t: rf"\textbf{{{t}}}", pm=r"$\pm$", check=r"$\checkmark$")
                 for col in table.columns]
        lines.append(" & ".join([latex_escape(row), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


@FORMATS.register("csv")
def render_csv(tables: list[Table]) -> str:
    """One CSV for all tables, a line per cell."""
    import pandas as pd  # here: only the csv format needs it (and it costs half a second to import)

    records = _records(tables)
    buffer = io.StringIO()
    pd.DataFrame.from_records(records, columns=["table", "metric", "row", "column", "mean", "std", "n", "ci_low",
                                               "ci_high", "best", "mark"]).to_csv(buffer, index=False)
    return buffer.getvalue().rstrip("\n")


def _records(tables: list[Table]) -> list[dict]:
    return [{"table": table.title, "metric": table.metric, "row": row, "column": col,
             "mean": s.mean if s else None, "std": s.std if s else None, "n": s.n if s else 0,
             "ci_low": s.interval[0] if s and s.interval else None,
             "ci_high": s.interval[1] if s and s.interval else None,
             "best": (row, col) in table.best, "mark": (row, col) in table.marks}
            for table in tables for row in table.rows for col in table.columns for s in [table.cells[row, col]]]


@FORMATS.register("json")
def render_json(tables: list[Table]) -> str:
    """The tables as data: title, rows, columns, notes and one entry per cell (null where missing)."""
    return json.dumps([{"title": t.title, "metric": t.metric, "rows": t.rows, "columns": t.columns, "notes": t.notes,
                        "cells": [r for r in _records([t])]} for t in tables], indent=2)


@FORMATS.register("html")
def render_html(tables: list[Table]) -> str:
    """HTML <table>s, every text escaped, each with its title as caption and its notes below; what
    `tekapbench report` embeds in its page (class names: best, mark, missing, difference)."""
    return "\n".join(map(html_table, tables))


def html_table(table: Table) -> str:
    from html import escape

    lines = ['<figure class="table">', '<table class="results">', f"<caption>{escape(table.title)}</caption>",
             "<thead><tr><th></th>" + "".join(f'<th scope="col">{escape(c)}</th>' for c in table.columns)
             + "</tr></thead>", "<tbody>"]
    for row in table.rows:
        cells = []
        for column in table.columns:
            key = (row, column)
            stat = table.cells[key]
            text = escape(_plain(stat, show_n=table.show_n, signed=key in table.differences))
            classes = [name for name, on in (("best", key in table.best), ("mark", key in table.marks),
                                             ("missing", stat is None), ("difference", key in table.differences))
                       if on]
            if key in table.best:
                text = f"<strong>{text}</strong>"
            if key in table.marks:
                text += ' <span class="check" title="' + escape(table.mark_meaning) + '">✓</span>'
            attribute = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attribute}>{text}</td>")
        lines.append(f'<tr><th scope="row">{escape(row)}</th>' + "".join(cells) + "</tr>")
    lines += ["</tbody>", "</table>"]
    if table.notes:
        lines.append("<figcaption><ul>" + "".join(f"<li>{escape(n)}</li>" for n in table.notes)
                     + "</ul></figcaption>")
    lines.append("</figure>")
    return "\n".join(lines)
