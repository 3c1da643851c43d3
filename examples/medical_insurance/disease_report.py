"""The clinician's report of the early-warning runs: each hospital's own model, the federated one, the pooled one.

    .venv/bin/python examples/medical_insurance/disease_report.py [--runs runs/medical_insurance]

For the logistic (Newton) run and the MLP (FedProx) run, and at each hospital's test split: ROC-AUC,
accuracy at 0.5 and the Brier score from result.json, and calibration-in-the-large (mean predicted risk
against the observed rate). result.json does not hold the mean predicted risk, so the script scores the
test patients again: with the federated model each hospital saved, and with the hospital's own model and
the pooled-data model refitted exactly as the run fitted its baselines. It checks that this gives
result.json's Brier score and ROC-AUC before it reports anything.

The markdown goes to ``<runs>/disease_report.md``; with ``--update-docs`` also into the committed README
block between ``<!-- BEGIN GENERATED disease_report -->`` and ``<!-- END GENERATED disease_report -->``.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report_common import (
    RUNS,
    ReportError,
    add_output_arguments,
    fmt,
    load_run,
    readme_to_rewrite,
    rewrite_block,
    run_label,
    table,
)

from fedx.aggregators import make_rule
from fedx.baselines import fit_model, fit_preprocessor
from fedx.config import Config
from fedx.data.institutions import institution_tables
from fedx.data.local import derive_seed, local_split
from fedx.data.spec import schema_for
from fedx.model import FedxModel
from fedx.tasks import TabularData, get_task

RUN_NAMES = {"disease_warning": "logistic regression (exact Newton, CKKS)",
             "disease_warning_mlp": "MLP (FedProx, bfv-compact)"}
"""The run folders this report reads, and how it names their models."""

MODELS = ("local", "federated", "pooled")
TOLERANCE = 1e-6
"""How closely the re-scored Brier score and ROC-AUC must match result.json (the MLP trains in float32)."""


def _model_file(folder: Path, doc: dict[str, Any], name: str) -> Path:
    path = Path(doc["model"]["paths"][name])
    if path.exists():
        return path
    moved = folder / "institutions" / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "institution") / "model.pt"
    if not moved.exists():
        raise ReportError(f"{folder}: the model of {name} is neither at {path} nor at {moved}")
    return moved


def rescore(folder: Path) -> tuple[dict[str, Any], Config, dict[str, dict[str, dict[str, Any]]]]:
    """Each hospital's test patients scored by the three models: metrics and mean predicted risk.

    Returns
    -------
    (doc, cfg, scores)
        ``scores[model][hospital]`` holds ``roc_auc``, ``accuracy``, ``brier``, ``base_rate``, ``n`` from
        result.json and ``mean_pred`` from the re-scoring; ``hospital`` "all" is every test patient.
    """
    doc, cfg = load_run(folder, "disease_risk")
    task = get_task("disease_risk")
    tables = institution_tables(cfg)
    splits = {name: local_split(df, cfg, name, task) for name, df in tables.items()}
    fed_models = {name: FedxModel.load(_model_file(folder, doc, name)) for name in splits}
    # The schema the federation settled on (declared, or merged from the hospitals' column kinds).
    schema = next(iter(fed_models.values())).preprocessor.schema
    cfg = replace(cfg, data=replace(cfg.data, features={f.name: f.kind for f in schema.features}))
    epochs = cfg.federation.rounds * cfg.federation.local_epochs
    rule = make_rule(cfg)

    preds: dict[str, dict[str, np.ndarray]] = {m: {} for m in MODELS}
    ys: dict[str, np.ndarray] = {}
    pooled = pd.concat([train for train, _ in splits.values()], ignore_index=True)
    prep = fit_preprocessor(cfg, schema_for(cfg, pooled), pooled)
    pooled_model = fit_model(cfg, task, rule, prep, TabularData.from_frame(cfg, prep, pooled), epochs,
                             seed=cfg.seed)
    for name, (train, test) in splits.items():
        ys[name] = test[cfg.data.target].to_numpy(dtype=np.float64)
        preds["federated"][name] = fed_models[name].predict(test)
        preds["pooled"][name] = task.predict(pooled_model, TabularData.from_frame(cfg, prep, test))
        own = fit_preprocessor(cfg, schema_for(cfg, train), train)
        model = fit_model(cfg, task, rule, own, TabularData.from_frame(cfg, own, train), epochs,
                          seed=derive_seed(cfg.seed, name, "local"))
        preds["local"][name] = task.predict(model, TabularData.from_frame(cfg, own, test))

    reported = {"local": doc["baselines"]["local"], "federated": doc["per_institution"],
                "pooled": {name: doc["comparison"][name]["centralized"] for name in splits}}
    combined = {"local": doc["baselines"].get("local_combined", {}), "federated": doc["metrics"],
                "pooled": doc["baselines"]["centralized"]}
    scores: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in MODELS}
    for m in MODELS:
        for name in splits:
            held_out = TabularData.from_frame(cfg, prep, splits[name][1])
            mine = task.metrics(held_out, preds[m][name])   # only its y counts
            for key in ("brier", "roc_auc"):
                if mine[key] is not None and abs(mine[key] - reported[m][name][key]) > TOLERANCE:
                    raise ReportError(f"{folder}: {name} {m} {key} is {mine[key]:.6f} re-scored and "
                                      f"{reported[m][name][key]:.6f} in result.json")
            scores[m][name] = {**reported[m][name], "mean_pred": float(np.mean(preds[m][name]))}
        everyone = np.concatenate([preds[m][n] for n in splits])
        scores[m]["all"] = {**combined[m], "mean_pred": float(np.mean(everyone)),
                            "base_rate": float(np.mean(np.concatenate(list(ys.values()))))}
    return doc, cfg, scores


def config_markdown(folder: Path, doc: dict[str, Any], cfg: Config, scores: dict[str, Any]) -> str:
    rows = []
    for name in scores["federated"]:
        first = True
        for m in MODELS:
            s = scores[m][name]
            rows.append([f"**{name}**" if first else "", f"{int(s['n'])}" if first else "",
                         fmt(s["base_rate"]) if first else "", m, fmt(s.get("roc_auc")), fmt(s.get("accuracy")),
                         fmt(s.get("brier")), fmt(s["mean_pred"]), f"{s['mean_pred'] - s['base_rate']:+.3f}"])
            first = False
    body = table(["hospital", "test patients", "observed rate", "model", "ROC-AUC", "accuracy", "Brier",
                  "mean predicted", "predicted − observed"], rows, "lrrlrrrrr")
    seconds = sum(h["seconds"] for h in doc["history"])
    return (f"Run `{run_label(folder)}`: {len(doc['history'])} rounds ({seconds:.1f} s of rounds), "
            f"encryption {doc['privacy']['encryption']}.\n\n{body}")


def build_markdown(results: dict[str, tuple[Path, dict[str, Any], Config, dict[str, Any]]]) -> str:
    parts = []
    for key, (folder, doc, cfg, scores) in results.items():
        parts.append(f"#### {RUN_NAMES[key][0].upper()}{RUN_NAMES[key][1:]}: `{key}.yaml`")
        parts.append(config_markdown(folder, doc, cfg, scores))
    missing = [k for k in RUN_NAMES if k not in results]
    if missing:
        parts.append("Not run: " + ", ".join(f"`{k}.yaml`" for k in missing) + ".")
    parts.append("*local*: the hospital's own model, trained on its own training patients only; *federated*: the "
                 "one model of the federation; *pooled*: the same model trained on every hospital's training "
                 "patients in one place (possible only in simulation). Each is scored on the hospital's own test "
                 "patients; *all* is every test patient. Accuracy at a 0.5 threshold; Brier score: mean squared "
                 "error of the predicted risk, lower is better.")
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=RUNS, help="folder with the runs (default: %(default)s)")
    parser.add_argument("--only", choices=list(RUN_NAMES), action="append",
                        help="report only this run (repeatable; default: every run found, at least one)")
    add_output_arguments(parser, figures=False)
    args = parser.parse_args(argv)
    readme = readme_to_rewrite(args)
    try:
        wanted = args.only or [k for k in RUN_NAMES if (args.runs / k / "result.json").exists()]
        if not wanted:
            raise ReportError(f"{args.runs}: no disease run found (run examples/medical_insurance/run.sh first)")
        results = {}
        for key in wanted:
            folder = args.runs / key
            doc, cfg, scores = rescore(folder)
            results[key] = (folder, doc, cfg, scores)
        markdown = build_markdown(results)
        (args.runs / "disease_report.md").write_text(markdown + "\n")
        if readme is not None:
            rewrite_block(readme, "disease_report", markdown)
    except ReportError as exc:
        print(f"disease_report: {exc}", file=sys.stderr)
        return 2
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
