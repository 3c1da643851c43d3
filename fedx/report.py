"""Run history -> result.json, CSV tables, PNG plots, and the table printed at the end of a run.

result.json holds (see DESIGN.md):

``config``           the resolved config
``metrics``          the federated model on every institution's test split (scored locally, combined)
``per_institution``  {name: metrics of the federated model on that institution's own test split}
``baselines``        {"centralized": metrics of a model trained on the pooled data (simulation only),
                      "local": {name: that institution's own model on its own test split}}
``comparison``       {name: {"local", "federated", "centralized"}}: the per-institution table
``model``            what was trained (for GLMs: coefficients with standard errors, deviances)
``privacy``          {"encryption": preset, ...; epsilon and delta when DP is on}
``history``          [{"round", "metrics", "bytes_up", "bytes_down", "seconds", ...}]
``primary_metric``   the task's headline metric, which the plots and the printed table lead with

and ``schema_version`` (:data:`SCHEMA_VERSION`), ``fedx_version`` and ``written``. The counts named in
:data:`COUNT_KEYS` are written as JSON integers: metrics travel through Flower's MetricRecord as floats, so
the writer turns them back by name (never by guessing from the value).
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .atomic import write_atomic

SCHEMA_VERSION = 1
"""Version of the layout of result.json; it grows when a key changes meaning or moves (a new key does not)."""

COUNT_KEYS = frozenset({"n", "n_pos", "n_neg", "nobs", "n_train", "n_test", "n_rows", "rows", "round",
                        "bytes_up", "bytes_down", "n_clients", "iterations"})
"""Keys whose values are counts: a whole float under one of them is written as an integer."""


@dataclass
class RunResult:
    """What :func:`fedx.run` returns; everything in it is also in ``out_dir/result.json``."""

    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    out_dir: Path
    per_institution: dict[str, dict[str, Any]] = field(default_factory=dict)
    baselines: dict[str, Any] = field(default_factory=dict)
    comparison: dict[str, dict[str, Any]] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    privacy: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    institutions: dict[str, Any] = field(default_factory=dict)
    primary_metric: str | None = None

    @property
    def result_path(self) -> Path:
        """The result.json file."""
        return self.out_dir / "result.json"

    def to_dict(self) -> dict[str, Any]:
        """The content of result.json."""
        return {
            "schema_version": SCHEMA_VERSION,
            "fedx_version": __version__,
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": self.config,
            "primary_metric": self.primary_metric,
            "metrics": self.metrics,
            "per_institution": self.per_institution,
            "baselines": self.baselines,
            "comparison": self.comparison,
            "model": self.model,
            "privacy": self.privacy,
            "institutions": self.institutions,
            "history": self.history,
        }

    @classmethod
    def load(cls, path: str | Path) -> RunResult:
        """Read a result.json (or the folder that holds it)."""
        p = Path(path)
        p = p / "result.json" if p.is_dir() else p
        d = json.loads(p.read_text())
        return cls(metrics=d["metrics"], history=d["history"], out_dir=p.parent,
                   per_institution=d.get("per_institution", {}), baselines=d.get("baselines", {}),
                   comparison=d.get("comparison", {}), model=d.get("model", {}), privacy=d.get("privacy", {}),
                   config=d.get("config", {}), institutions=d.get("institutions", {}),
                   primary_metric=d.get("primary_metric"))


def comparison_table(per_institution: Mapping[str, Mapping[str, Any]], baselines: Mapping[str, Any],
                     centralized_per_institution: Mapping[str, Mapping[str, Any]] | None = None
                     ) -> dict[str, dict[str, Any]]:
    """{name: {"local": ..., "federated": ..., "centralized": ...}} for each institution."""
    local = baselines.get("local", {}) or {}
    central = centralized_per_institution or {}
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(per_institution) | set(local) | set(central)):
        row: dict[str, Any] = {}
        if name in local:
            row["local"] = local[name]
        if name in per_institution:
            row["federated"] = per_institution[name]
        if name in central:
            row["centralized"] = central[name]
        out[name] = row
    return out


def write_result(result: RunResult, *, plots: bool = True, primary_metric: str | None = None) -> Path:
    """Write result.json, history.csv, institutions.csv and (optionally) the PNG plots."""
    out = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    path = out / "result.json"
    write_atomic(path, json.dumps(json_ready(result.to_dict()), indent=2, allow_nan=False))
    _write_history_csv(out / "history.csv", result.history)
    _write_institutions_csv(out / "institutions.csv", result.comparison)
    if plots:
        metric = primary_metric or result.primary_metric or _first_metric(result.metrics)
        if metric:
            plot_rounds(result, metric, out / "rounds.png")
            plot_institutions(result, metric, out / "institutions.png")
    return path


def _first_metric(metrics: Mapping[str, Any]) -> str | None:
    for k, v in metrics.items():
        if isinstance(v, (int, float)) and k not in ("n", "n_pos", "base_rate"):
            return k
    return None


def json_ready(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/Inf to null, Paths to strings, whole counts to integers."""
    if isinstance(value, Mapping):
        return {str(k): _count(json_ready(v)) if k in COUNT_KEYS else json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _count(value: Any) -> Any:
    """A whole float under a :data:`COUNT_KEYS` key as an int; anything else (a noisy count, a list) as is."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _write_history_csv(path: Path, history: Sequence[Mapping[str, Any]]) -> None:
    keys: list[str] = []
    for row in history:
        for k in _scalar_metrics(row.get("metrics", {})):
            if k not in keys:
                keys.append(k)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["round", *keys, "bytes_up", "bytes_down", "update_bytes_per_param", "seconds", "clients"])
        for row in history:
            m = _scalar_metrics(row.get("metrics", {}))
            w.writerow([row["round"], *[_fmt(m.get(k)) for k in keys], row.get("bytes_up"), row.get("bytes_down"),
                        _fmt(row.get("update_bytes_per_param")), _fmt(row.get("seconds")),
                        len(row.get("clients", []))])


def _write_institutions_csv(path: Path, comparison: Mapping[str, Mapping[str, Any]]) -> None:
    keys: list[str] = []
    for row in comparison.values():
        for part in row.values():
            for k in _scalar_metrics(part):
                if k not in keys:
                    keys.append(k)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["institution", "model", *keys])
        for name, row in comparison.items():
            for which in ("local", "federated", "centralized"):
                if which in row:
                    m = _scalar_metrics(row[which])
                    w.writerow([name, which, *[_fmt(m.get(k)) for k in keys]])


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def plot_rounds(result: RunResult, metric: str, path: Path) -> Path | None:
    """The combined metric per round, with the centralized and local baselines as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r["round"] for r in result.history if metric in r.get("metrics", {})]
    values = [r["metrics"][metric] for r in result.history if metric in r.get("metrics", {})]
    if not rounds:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(rounds, values, marker="o", ms=3, label="federated")
    central = (result.baselines.get("centralized") or {}).get(metric)
    if isinstance(central, (int, float)):
        ax.axhline(central, color="tab:green", ls="--", label="centralized (pooled data)")
    local = (result.baselines.get("local_combined") or {}).get(metric)
    if isinstance(local, (int, float)):
        ax.axhline(local, color="tab:red", ls=":", label="each institution alone")
    ax.set_xlabel("round")
    ax.set_ylabel(metric)
    ax.set_title(f"{result.config.get('name', '')}: {metric} on every institution's test split")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_institutions(result: RunResult, metric: str, path: Path) -> Path | None:
    """Per-institution bars: its own model, the federated model, and the pooled model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result.comparison) or list(result.per_institution)
    if not names:
        return None
    kinds = [k for k in ("local", "federated", "centralized")
             if any(k in result.comparison.get(n, {}) for n in names)] or ["federated"]
    colors = {"local": "tab:red", "federated": "tab:blue", "centralized": "tab:green"}
    x = np.arange(len(names))
    width = 0.8 / len(kinds)
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(names) + 2), 4.2))
    for i, kind in enumerate(kinds):
        vals = []
        for n in names:
            part = result.comparison.get(n, {}).get(kind) or (result.per_institution.get(n) if kind == "federated"
                                                               else None) or {}
            v = part.get(metric)
            vals.append(float(v) if isinstance(v, (int, float)) else np.nan)
        ax.bar(x + (i - (len(kinds) - 1) / 2) * width, vals, width, label=kind, color=colors[kind])
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=20, ha="right")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per institution, on its own test split")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def print_run_summary(result: RunResult, task: Any) -> None:
    """The final table of a run: the task's primary metric and up to three others."""
    shown = [m for m in task.metric_names if m not in (task.primary_metric, "n", "base_rate")]
    print_summary(result, [task.primary_metric, *shown[:3]])


def print_summary(result: RunResult, metrics: Sequence[str] | None = None) -> None:
    """The final table in the terminal: per institution, local vs federated vs centralized."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    shown = list(metrics or [k for k in _scalar_metrics(result.metrics) if k not in ("n", "n_pos")][:3])
    table = Table(title=f"{result.config.get('name', 'fedx run')}: metrics on each institution's test split")
    table.add_column("institution")
    table.add_column("model")
    for m in shown:
        table.add_column(m, justify="right")
    for name, row in result.comparison.items():
        for kind in ("local", "federated", "centralized"):
            if kind in row:
                vals = row[kind]
                table.add_row(name, kind, *[_cell(vals.get(m)) for m in shown])
    table.add_row("[b]all[/b]", "[b]federated[/b]", *[_cell(result.metrics.get(m)) for m in shown])
    central = result.baselines.get("centralized") or {}
    if central:
        table.add_row("all", "centralized", *[_cell(central.get(m)) for m in shown])
    console.print(table)
    console.print(f"result: {result.result_path}")


def _cell(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"
