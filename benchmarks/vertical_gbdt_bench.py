"""Vertical SecureBoost against XGBoost ``hist`` on the joined table: time ratio (goal <= 10x) and bytes per tree.

The vertical part of issue 19's speed goal: ``--rows`` shared rows (default 100,000), ``--features`` columns
(default 20) at the label party and at one feature party, ``--trees`` trees (default 100) of depth ``--depth``
(default 6) with ``--bins`` bins (default 256). Measured side by side in one process:

- SecureBoost under CKKS (:func:`fedx.vertical.secureboost.fit_secureboost`, every encryption, histogram
  product and decryption of the protocol), its bytes per tree by message kind;
- the same protocol in plaintext (the engine's own cost);
- XGBoost ``hist`` on the joined table with the same parameters (``n_jobs=1``).

The CKKS run is timed over ``--he-trees`` trees (default 2) and scaled to ``--trees`` (every tree costs the
same: one encryption of g and h and the same levels), unless ``--he-trees`` equals ``--trees``. Ratios are of
CPU seconds of this process; wall seconds are printed too. The data: a logistic truth over both parties' columns.

Usage::

    python benchmarks/vertical_gbdt_bench.py [--rows N] [--features F] [--trees T] [--depth D] [--bins B]
                                             [--he-trees K]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import xgboost as xgb
from sklearn.metrics import roc_auc_score

from fedx.trees import GBDTParams
from fedx.vertical.secureboost import (
    SETUP_KINDS,
    FitStats,
    SecureBoostFeatureParty,
    SecureBoostLabelParty,
    fit_secureboost,
)


def data(rows: int, features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 2 * features))
    w = rng.normal(size=2 * features) / np.sqrt(features)
    logit = X @ w + 0.8 * np.sin(2 * X[:, 0]) + 0.6 * X[:, features] * X[:, features + 1] - 1.0
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(float)
    return X, y


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def fit(X: np.ndarray, y: np.ndarray, features: int, params: GBDTParams, encryption: str):
    label = SecureBoostLabelParty("label", X[:, :features], [f"a{i}" for i in range(features)], y, params,
                                  encryption=encryption)
    feature = SecureBoostFeatureParty("feature", X[:, features:], [f"b{i}" for i in range(features)],
                                      params.max_bins)
    stats = FitStats()
    model = fit_secureboost(label, {"feature": feature}, stats=stats)
    return model, stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--bins", type=int, default=256)
    ap.add_argument("--he-trees", type=int, default=2, help="CKKS trees timed (scaled to --trees); 0 skips CKKS")
    args = ap.parse_args()
    F = args.features
    X, y = data(args.rows, F)
    Xt, yt = data(20_000, F, seed=1)
    print(f"vertical SecureBoost: {args.rows:,} shared rows, {F} + {F} features, {args.trees} trees of depth "
          f"{args.depth}, {args.bins} bins")
    params = GBDTParams(trees=args.trees, max_depth=args.depth, learning_rate=0.1, max_bins=args.bins)
    ref, xw, xc = timed(lambda: xgb.XGBClassifier(
        n_estimators=args.trees, max_depth=args.depth, learning_rate=0.1, reg_lambda=1.0, min_child_weight=1.0,
        max_bin=args.bins, tree_method="hist", base_score=float(y.mean()), n_jobs=1).fit(X, y))
    auc_x = roc_auc_score(yt, ref.predict_proba(Xt)[:, 1])
    print(f"  XGBoost hist (joined table): {xc:8.2f} s CPU ({xw:.2f} s wall), ROC-AUC {auc_x:.4f}")
    (plain, _), pw, pc = timed(lambda: fit(X, y, F, params, "none"))
    auc_p = roc_auc_score(yt, plain.predict_proba({"label": Xt[:, :F], "feature": Xt[:, F:]})[:, 1])
    print(f"  SecureBoost, plaintext:      {pc:8.2f} s CPU ({pw:.2f} s wall), ROC-AUC {auc_p:.4f} "
          f"({pc / xc:.1f}x XGBoost)")
    k = min(args.he_trees, args.trees)
    if k < 1:
        return
    he_params = GBDTParams(trees=k, max_depth=args.depth, learning_rate=0.1, max_bins=args.bins)
    (_, stats), hw, hc = timed(lambda: fit(X, y, F, he_params, "ckks"))
    scale = args.trees / k
    setup = sum(v for kind, v in stats.bytes.items() if kind in SETUP_KINDS)
    per_tree = (stats.total_bytes - setup) / k
    what = "" if k == args.trees else f" (measured over {k} trees, scaled to {args.trees})"
    print(f"  SecureBoost, CKKS:           {hc * scale:8.2f} s CPU ({hw * scale:.2f} s wall){what}")
    print(f"  ratio CKKS / XGBoost: {hc * scale / xc:.1f}x CPU (goal <= 10x), {hw * scale / xw:.1f}x wall")
    print(f"  bytes per tree: {per_tree / 1e6:.2f} MB (" + ", ".join(
        f"{kind} {b / k / 1e6:.2f} MB" for kind, b in sorted(stats.bytes.items()) if kind not in SETUP_KINDS)
        + f"); once per run: {setup / 1e6:.2f} MB (public context, column names)")
    print(f"  largest CKKS error of a decrypted sum: {stats.max_error:.2e} (grid step 2^-{params.quantum_bits})")


if __name__ == "__main__":
    main()
