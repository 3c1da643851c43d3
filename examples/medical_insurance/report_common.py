"""What the two report scripts of this example share: reading a run, markdown tables, the README block.

Every number a report writes comes from a run's result.json, or is recomputed from the data that the
run's own config names. Nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedx.config import Config, config_from_dict

HERE = Path(__file__).resolve().parent
"""This example's folder: the base of the configs' relative data paths."""

REPO = HERE.parents[1]
RUNS = REPO / "runs" / "medical_insurance"
"""Where run.sh puts the runs."""

README = HERE / "README.md"
FIGURES = HERE / "figures"


class ReportError(RuntimeError):
    """A run folder that is missing, or that does not match the data it names."""


def add_output_arguments(parser: argparse.ArgumentParser, *, figures: bool) -> None:
    """The options that say where a report goes: under RUNS by default, the committed copies on request."""
    parser.add_argument("--update-docs", action="store_true",
                        help="also rewrite the committed copies: this example's README block"
                             + (" and figures/" if figures else ""))
    parser.add_argument("--readme", type=Path,
                        help="a README whose generated block is rewritten (with --update-docs: this example's)")
    if figures:
        parser.add_argument("--figures", type=Path,
                            help="where the PNG goes (default: RUNS/figures; with --update-docs: this example's "
                                 "figures/)")
    # The default since reports stopped rewriting the README unasked; kept so that old command lines still work.
    parser.add_argument("--no-readme", action="store_true", help=argparse.SUPPRESS)


def readme_to_rewrite(args: argparse.Namespace) -> Path | None:
    """The README whose block a report rewrites: ``--readme``, this example's with ``--update-docs``, or none."""
    if args.no_readme:
        return None
    return args.readme or (README if args.update_docs else None)


def figures_dir(args: argparse.Namespace) -> Path:
    """Where a report's PNG goes: ``--figures``, this example's figures/ with ``--update-docs``, else RUNS/figures."""
    return args.figures or (FIGURES if args.update_docs else args.runs / "figures")


def load_run(folder: Path, task: str) -> tuple[dict[str, Any], Config]:
    """A run's result.json and its resolved config, checked to be a run of ``task``."""
    path = Path(folder) / "result.json"
    if not path.exists():
        raise ReportError(f"{path}: not found (run examples/medical_insurance/run.sh first)")
    doc = json.loads(path.read_text())
    cfg = config_from_dict(doc["config"], source=str(path), base_dir=HERE)
    if cfg.task != task:
        raise ReportError(f"{path}: a run of task {cfg.task!r}, expected {task!r}")
    return doc, cfg


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a table: fixed decimals, or an en dash when undefined."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A markdown table; ``align`` holds one of l, r per column (default: first left, others right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(map(str, headers)) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def relative_link(target: Path, start: Path) -> str:
    """``target`` as a link relative to the folder of the markdown file ``start``."""
    return Path(os.path.relpath(Path(target).resolve(), Path(start).resolve().parent)).as_posix()


def run_label(folder: Path) -> str:
    """A run folder named relative to the repository when it lies inside it."""
    p = Path(folder).resolve()
    try:
        return p.relative_to(REPO).as_posix()
    except ValueError:
        return p.name


def rewrite_block(readme: Path, name: str, markdown: str) -> None:
    """Replace the text between ``<!-- BEGIN GENERATED name -->`` and ``<!-- END GENERATED name -->``.

    ``name`` is the report script's name without ``.py``.
    """
    text = Path(readme).read_text()
    begin, end = f"<!-- BEGIN GENERATED {name} -->", f"<!-- END GENERATED {name} -->"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if len(pattern.findall(text)) != 1:
        raise ReportError(f"{readme}: expected one block {begin} ... {end}")
    block = f"{begin}\n<!-- written by {name}.py from the runs: do not edit by hand -->\n\n{markdown.strip()}\n\n{end}"
    Path(readme).write_text(pattern.sub(lambda _: block, text))
