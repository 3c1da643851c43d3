"""Federated GBDT on the anti-fraud example's own per-bank splits: plaintext vs encrypted, beside XGBoost.

The horizontal part of issue 19's speed and accuracy goals, measured side by side in one run:

- fedx's federated GBDT (:func:`fedx.trees.fit_horizontal`, bin edges from the federated quantile sketch)
  with the histograms summed in plaintext, and under ``bfv-compact`` (and ``ckks`` with ``--ckks``):
  time, and the ratio encrypted / plaintext (goal <= 2);
- XGBoost ``hist`` on the pooled training rows (goal: the federated GBDT within 0.005 AUPRC of it);
- each bank's own XGBoost on its own training rows (goal: the federated GBDT beats it at every bank).

Every model is scored on each bank's own test split (AUPRC and ROC-AUC), and on all test splits
together. The splits and the design matrix are fedx's own: :func:`fedx.data.local_split` (the
train/test split every part of fedx computes) and a :class:`~fedx.data.preprocess.Preprocessor` fitted
with :func:`fedx.baselines.fit_preprocessor` on the pooled training rows, which is the preprocessor the
federation fits from its summed moments (trees do not depend on the scaling). Everything runs in one
process on one core (XGBoost with ``n_jobs=1``); the encrypted run performs every encryption, server-side
addition and decryption of the real protocol. The ratio is of CPU seconds (this process's), which a busy
shared machine disturbs less than wall time; both are printed.

Usage::

    python benchmarks/gbdt_bench.py [--quick] [--trees N] [--ckks] [--no-encrypted] [--binned-reference]

``--binned-reference`` also trains XGBoost on the rows pre-binned with the federated sketch's edges: fed the
same cut points, XGBoost grows the trees fedx's engine grows (tests/trees/test_trees_xgboost.py checks it
to 1e-5), so its scores are those of the federated model, in seconds instead of minutes.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import average_precision_score, roc_auc_score

from fedx import he
from fedx.baselines import fit_preprocessor
from fedx.config import load_config
from fedx.data.institutions import institution_tables
from fedx.data.local import local_split
from fedx.data.spec import schema_for
from fedx.tasks import TabularData, get_task
from fedx.trees import (
    EncryptedSum,
    FitReport,
    GBDTParams,
    HorizontalParty,
    federated_edges,
    fit_horizontal,
    plain_sum,
)

CONFIG = "examples/finance_antifraud/fedx.yaml"


def bank_data(config: str) -> tuple[dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], list[str]]:
    """Each bank's (X_train, y_train, X_test, y_test), and the feature names."""
    cfg = load_config(config)
    task = get_task(cfg.task)
    splits = {name: local_split(df, cfg, name, task) for name, df in institution_tables(cfg).items()}
    pooled = pd.concat([tr for tr, _ in splits.values()], ignore_index=True)
    prep = fit_preprocessor(cfg, schema_for(cfg, pooled), pooled)
    out = {}
    for name, (train, test) in splits.items():
        a, b = TabularData.from_frame(cfg, prep, train), TabularData.from_frame(cfg, prep, test)
        out[name] = (a.X.astype(np.float64), a.y.astype(np.float64), b.X.astype(np.float64), b.y.astype(np.float64))
    return out, list(prep.feature_names)


def scores(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """AUPRC and ROC-AUC."""
    return float(average_precision_score(y, p)), float(roc_auc_score(y, p))


def xgb_model(params: GBDTParams) -> xgb.XGBClassifier:
    return xgb.XGBClassifier(n_estimators=params.trees, max_depth=params.max_depth, learning_rate=params.learning_rate,
                             max_bin=params.max_bins, reg_lambda=params.reg_lambda,
                             min_child_weight=params.min_child_weight, gamma=params.gamma, tree_method="hist",
                             n_jobs=1, random_state=0)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=CONFIG)
    ap.add_argument("--quick", action="store_true", help="40 trees instead of 400 (a fast check)")
    ap.add_argument("--trees", type=int, default=None)
    ap.add_argument("--ckks", action="store_true", help="also run under ckks")
    ap.add_argument("--no-encrypted", action="store_true", help="plaintext and XGBoost only")
    ap.add_argument("--no-fedx", action="store_true", help="skip fedx's runs (with --binned-reference)")
    ap.add_argument("--binned-reference", action="store_true",
                    help="also XGBoost on the federated sketch's bins (the federated model's trees)")
    args = ap.parse_args(argv)
    trees = args.trees or (40 if args.quick else 400)
    params = GBDTParams(trees=trees, max_depth=6, learning_rate=0.05, max_bins=256, reg_lambda=1.0,
                        min_child_weight=1.0, gamma=0.0)
    banks, names = bank_data(args.config)
    y_test = np.concatenate([d[3] for d in banks.values()])
    X_test = np.vstack([d[2] for d in banks.values()])
    rows: dict[str, dict[str, Any]] = {}

    def score_all(label: str, predict: Any, seconds: float, cpu: float) -> None:
        per = {b: scores(d[3], predict(d[2])) for b, d in banks.items()}
        rows[label] = {"all": scores(y_test, predict(X_test)), "banks": per, "seconds": seconds, "cpu": cpu}

    X_pool = np.vstack([d[0] for d in banks.values()])
    y_pool = np.concatenate([d[1] for d in banks.values()])
    t, c = time.perf_counter(), time.process_time()
    pooled = xgb_model(params).fit(X_pool, y_pool)
    score_all("xgboost pooled", lambda X: pooled.predict_proba(X)[:, 1], time.perf_counter() - t,
              time.process_time() - c)
    local_scores = {}
    for b, d in banks.items():
        own = xgb_model(params).fit(d[0], d[1])
        local_scores[b] = scores(d[3], own.predict_proba(d[2])[:, 1])

    if args.binned_reference:
        parties = {b: HorizontalParty(b, d[0], d[1], params) for b, d in banks.items()}
        t, c = time.perf_counter(), time.process_time()
        edges, _ = federated_edges(parties, params.max_bins)
        binned = xgb_model(params).fit(edges.bin(X_pool).astype(np.float64), y_pool)
        score_all("xgboost fed. bins", lambda X: binned.predict_proba(edges.bin(X).astype(np.float64))[:, 1],
                  time.perf_counter() - t, time.process_time() - c)
        rows["xgboost fed. bins"]["edges"] = edges

    runs: list[tuple[str, Any]] = [] if args.no_fedx else [("fedx plaintext", plain_sum)]
    if not args.no_encrypted:
        runs.append(("fedx bfv-compact", EncryptedSum(he.keygen("bfv-compact"), params.quantum_bits)))
        if args.ckks:
            runs.append(("fedx ckks", EncryptedSum(he.keygen("ckks"), params.quantum_bits)))
    models = {}
    for label, combine in runs:
        parties = {b: HorizontalParty(b, d[0], d[1], params) for b, d in banks.items()}
        report = FitReport()
        t, c = time.perf_counter(), time.process_time()
        model = fit_horizontal(parties, params, names, combine=combine, report=report)
        seconds, cpu = time.perf_counter() - t, time.process_time() - c
        models[label] = model
        score_all(label, lambda X, m=model: m.predict_proba(X)[:, 1], seconds, cpu)
        rows[label]["rounds"] = report.rounds
        rows[label]["sketch_stages"] = report.sketch_stages
        rows[label]["sketch_seconds"] = report.seconds.get("sketch", 0.0)
        if isinstance(combine, EncryptedSum):
            rows[label]["bytes_up_per_tree"] = combine.bytes_up / trees
            rows[label]["max_grid_error"] = combine.max_error

    edges = models["fedx plaintext"].edges if models else rows["xgboost fed. bins"]["edges"]
    print(f"anti-fraud, {len(banks)} banks, {len(y_pool)} training rows, {len(names)} features; {trees} trees, "
          f"depth 6, learning rate 0.05, 256 bins (bins per feature from the federated sketch: "
          f"{min(len(c) + 1 for c in edges.cuts)}..{max(len(c) + 1 for c in edges.cuts)})")
    print(f"{'model':<18} {'AUPRC':>7} {'ROC-AUC':>8} {'wall s':>8} {'CPU s':>8}  AUPRC per bank "
          f"({', '.join(banks)})")
    for label, r in rows.items():
        per = " ".join(f"{r['banks'][b][0]:.4f}" for b in banks)
        print(f"{label:<18} {r['all'][0]:7.4f} {r['all'][1]:8.4f} {r['seconds']:8.1f} {r['cpu']:8.1f}  {per}")
    print(f"{'xgboost own bank':<18} {'':>7} {'':>8} {'':>8} {'':>8}  "
          + " ".join(f"{local_scores[b][0]:.4f}" for b in banks))
    base = rows["xgboost pooled"]["all"]
    plain = rows.get("fedx plaintext")
    for label in [k for k in rows if k.startswith("fedx") or k == "xgboost fed. bins"]:
        r = rows[label]
        gap = base[0] - r["all"][0]
        beats = [b for b in banks if r["banks"][b][0] > local_scores[b][0]]
        line = (f"{label}: AUPRC {r['all'][0]:.4f} vs pooled xgboost {base[0]:.4f} (gap {gap:+.4f}, goal <= 0.005: "
                f"{'met' if gap <= 0.005 else 'NOT met'}); ROC-AUC gap {base[1] - r['all'][1]:+.4f}; beats own-bank "
                f"xgboost at {len(beats)}/{len(banks)} banks")
        if label.startswith("fedx") and label != "fedx plaintext" and plain is not None:
            ratio = r["cpu"] / plain["cpu"]
            same = all(np.array_equal(a.feature, b.feature) and np.array_equal(a.bin, b.bin)
                       and np.max(np.abs(a.value - b.value)) <= 1e-12
                       for a, b in zip(models[label].trees, models["fedx plaintext"].trees))
            line += (f"; CPU time {ratio:.2f}x plaintext (wall {r['seconds'] / plain['seconds']:.2f}x) (goal <= 2: {'met' if ratio <= 2 else 'NOT met'}); "
                     f"trees identical to plaintext: {same}; {r['bytes_up_per_tree'] / 1e6:.2f} MB up per tree "
                     f"(all banks); largest distance from the 2^-20 grid {r['max_grid_error']:.2g}")
        print(line)
    if plain is not None:
        print(f"fedx plaintext: {plain['rounds']} message rounds ({plain['sketch_stages']} sketch stages, "
              f"{plain['sketch_seconds']:.1f} s); pooled xgboost {rows['xgboost pooled']['seconds']:.1f} s")
    return {"rows": rows, "local": local_scores}


if __name__ == "__main__":
    main()
