"""Released statistics to files and to the terminal: stats.json, stats.md, PNG histograms, rich tables."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

NULL = "–"

SCHEMA_VERSION = 1
"""Version of the layout of stats.json, written as its ``schema_version`` key."""


class Table(NamedTuple):
    """One table of the report: a title, column headers and rows of text."""

    title: str
    headers: list[str]
    rows: list[list[str]]


def write_stats(result: Mapping[str, Any], out_dir: str | Path, plots: bool = True) -> list[Path]:
    """Write stats.json, stats.md and (with ``plots``) one PNG per histogram into ``out_dir``.

    Returns
    -------
    list of Path
        The files written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "stats.json", out / "stats.md"]
    doc = {"schema_version": SCHEMA_VERSION, **{k: v for k, v in result.items() if k != "schema_version"}}
    paths[0].write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    paths[1].write_text(format_markdown(result), encoding="utf-8")
    if plots:
        paths += [_plot_histogram(result, col, out) for col in result.get("histograms", {})]
    return paths


def format_markdown(result: Mapping[str, Any]) -> str:
    """The released statistics as Markdown tables (the content of stats.md)."""
    lines = ["# Federated statistics", "",
             f"`{NULL}` marks a value that is suppressed (fewer records than the minimum cohort) or undefined.", ""]
    for table in tables(result):
        lines += [f"## {table.title}", "", "| " + " | ".join(table.headers) + " |",
                  "|" + "---|" * len(table.headers)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table.rows]
        lines.append("")
    return "\n".join(lines)


def print_stats(result: Mapping[str, Any], console: Console | None = None) -> None:
    """Print the released statistics as rich tables."""
    console = console or Console()
    for table in tables(result):
        rich_table = RichTable(title=Text(table.title), title_justify="left")
        for i, header in enumerate(table.headers):
            rich_table.add_column(Text(header), justify="left" if i == 0 else "right")
        for row in table.rows:
            rich_table.add_row(*map(Text, row))  # Text: brackets in cell names are not markup
        console.print(rich_table)


def tables(result: Mapping[str, Any]) -> list[Table]:
    """Every table of the report, in order: institutions, each block's statistics, suppressed, privacy."""
    out: list[Table] = []
    if result.get("institutions"):
        out.append(Table("Institutions", ["institution", "rows"],
                         [[i["name"], _fmt(i["rows"])] for i in result["institutions"]]))
    out += _block_tables(result, "")
    groups = result.get("groups")
    if groups:
        for label, block in groups["levels"].items():
            where = f" ({groups['by']} = {label})"
            if block is None:
                out.append(Table(f"Group{where}", ["rows"], [["suppressed"]]))
            else:
                out += _block_tables(block, where)
    out.append(Table("Suppressed", ["cell"], [[name] for name in result.get("suppressed", [])] or [["none"]]))
    privacy = result.get("privacy", {})
    out.append(Table("Privacy", ["parameter", "value"],
                     [[k, _fmt(v)] for k, v in privacy.items() if k != "statistics"]))
    if privacy.get("statistics"):
        out.append(Table("Noisy statistics (each at epsilon)", ["statistic", "sensitivity", "scale"],
                         [[s["statistic"], _fmt(s["sensitivity"]), _fmt(s["scale"])] for s in privacy["statistics"]]))
    return out


def _block_tables(block: Mapping[str, Any], where: str) -> list[Table]:
    out: list[Table] = []
    if block.get("columns"):
        out.append(Table(f"Columns{where}", ["column", "count", "mean", "variance", "std"],
                         [[c, *(_fmt(m[k]) for k in ("count", "mean", "variance", "std"))]
                          for c, m in block["columns"].items()]))
    if block.get("quantiles"):
        rows = [[c, p, _fmt(v), _fmt(q["precision"])] for c, q in block["quantiles"].items()
                for p, v in q.items() if p != "precision"]
        out.append(Table(f"Quantiles{where} (numpy 'inverted_cdf')", ["column", "p", "value", "precision"], rows))
    for c, h in block.get("histograms", {}).items():
        labels = [f"[{a:g}, {b:g})" for a, b in zip(h["edges"][:-2], h["edges"][1:-1])]
        labels.append(f"[{h['edges'][-2]:g}, {h['edges'][-1]:g}]")
        rows = [[f"below {h['edges'][0]:g}", _fmt(h["underflow"])]]
        rows += [[label, _fmt(n)] for label, n in zip(labels, h["counts"])]
        rows.append([f"above {h['edges'][-1]:g}", _fmt(h["overflow"])])
        out.append(Table(f"Histogram of {c}{where}", ["bin", "count"], rows))
    for c, f in block.get("frequencies", {}).items():
        rows = [[lvl, _fmt(n)] for lvl, n in zip(f["levels"], f["counts"])] + [["missing", _fmt(f["missing"])]]
        out.append(Table(f"Frequencies of {c}{where}", ["level", "count"], rows))
    for name, x in block.get("crosstabs", {}).items():
        rows = [[lvl, *map(_fmt, counts)] for lvl, counts in zip(x["row_levels"], x["counts"])]
        out.append(Table(f"Crosstab {name}{where}", [f"{x['rows']} \\ {x['columns']}", *x["column_levels"]], rows))
    corr = block.get("correlation")
    if corr:
        for key, title in (("matrix", "Correlation"), ("covariance", "Covariance")):
            matrix = corr[key] or [[None] * len(corr["columns"])] * len(corr["columns"])
            rows = [[c, *map(_fmt, row)] for c, row in zip(corr["columns"], matrix)]
            out.append(Table(f"{title}{where} (complete cases: n = {_fmt(corr['n'])})", ["", *corr["columns"]], rows))
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return NULL
    if isinstance(value, bool) or isinstance(value, (int, str)):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value)


def _plot_histogram(result: Mapping[str, Any], column: str, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = result["histograms"][column]
    edges = hist["edges"]
    widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
    fig, ax = plt.subplots(figsize=(7, 4))
    shown = [n if n is not None else 0 for n in hist["counts"]]
    ax.bar(edges[:-1], shown, width=widths, align="edge", color="#4c72b0", edgecolor="white", label="all rows")
    for k, i in enumerate(i for i, n in enumerate(hist["counts"]) if n is None):
        ax.axvspan(edges[i], edges[i + 1], facecolor="none", edgecolor="#aaaaaa", hatch="//", lw=0,
                   label="suppressed" if k == 0 else None)
    groups = result.get("groups") or {}
    for label, block in (groups.get("levels") or {}).items():
        counts = (block or {}).get("histograms", {}).get(column, {}).get("counts")
        if counts:
            ax.stairs([n if n is not None else float("nan") for n in counts], edges, label=f"{groups['by']}={label}")
    ax.set_xlabel(column)
    ax.set_ylabel("records")
    ax.set_title(f"{column}: below {edges[0]:g}: {_fmt(hist['underflow'])}, above {edges[-1]:g}: "
                 f"{_fmt(hist['overflow'])}")
    ax.legend(fontsize="small")
    fig.tight_layout()
    path = out / f"hist_{re.sub(r'[^A-Za-z0-9_.-]+', '_', column)}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
