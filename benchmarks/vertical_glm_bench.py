"""Seconds and bytes per Newton round of the vertical GLM (CKKS), beside statsmodels on the joined table.

A Poisson claim-frequency model with exposure on ``n`` shared rows: the label party holds 10 columns, the
feature party 10 (``--features``). Both parties run in this one process, one after the other, so the
seconds are the sum of both parties' compute. Prints, per size: rounds, seconds and MB per round each way,
the whole fit's seconds, statsmodels' seconds on the joined table (wall and CPU seconds of this process: on a
shared machine the CPU seconds are the steadier figure), and the largest relative differences of
the coefficients and standard errors.

    PYTHONPATH=. python benchmarks/vertical_glm_bench.py --sizes 20000 100000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import statsmodels.api as sm

from fedx.vertical.glm_parties import FeatureParty, LabelParty
from fedx.vertical.glm_protocol import fit_vertical_glm


def make_data(n: int, pg: int, ph: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Label columns, feature columns (half numeric, half binary each), exposure and claim counts."""
    rng = np.random.default_rng(seed)

    def block(p: int) -> np.ndarray:
        num = rng.normal(size=(n, p - p // 2))
        binary = (rng.random((n, p // 2)) < 0.3).astype(float)
        return np.hstack([num, binary])

    xg, xh = block(pg), block(ph)
    beta_g, beta_h = rng.normal(0, 0.15, pg), rng.normal(0, 0.15, ph)
    exposure = rng.uniform(0.2, 1.0, n)
    y = rng.poisson(exposure * np.exp(-1.5 + xg @ beta_g + xh @ beta_h)).astype(float)
    return xg, xh, exposure, y


def run(n: int, pg: int, ph: int, label_block: str, encryption: str) -> None:
    xg, xh, exposure, y = make_data(n, pg, ph)
    t0, c0 = time.perf_counter(), time.process_time()
    ref = sm.GLM(y, np.column_stack([np.ones(n), xg, xh]), family=sm.families.Poisson(), exposure=exposure).fit(
        tol=1e-10)
    sm_seconds, sm_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    label = LabelParty("insurer", xg, [f"g{j}" for j in range(pg)], y, family="poisson", exposure=exposure,
                       encryption=encryption, label_block=label_block, seed=0)
    feature = FeatureParty("hospital", xh, [f"h{j}" for j in range(ph)], encryption=encryption)
    res = fit_vertical_glm(label, feature)
    total, total_cpu = time.perf_counter() - t0, time.process_time() - c0
    rounds = [h for h in res.history if h["round"] > 0]
    setup = res.history[0]
    per_round = np.mean([h["seconds"] for h in rounds])
    per_round_cpu = np.mean([h["cpu_seconds"] for h in rounds])
    up = max(h["bytes_up"] for h in rounds) / 1e6
    down = max(h["bytes_down"] for h in rounds) / 1e6
    dp = np.max(np.abs(np.array(list(res.params.values())) - ref.params) / np.abs(ref.params))
    ds = np.max(np.abs(np.array(list(res.bse.values())) - ref.bse) / ref.bse)
    print(f"n={n:>7} {pg}+{ph} {encryption}/{label_block}: {len(rounds)} rounds, {per_round:.2f} s/round "
          f"({per_round_cpu:.2f} CPU s), "
          f"max {up:.1f} MB up / {down:.1f} MB down per round; setup {setup['seconds']:.2f} s, "
          f"{setup['bytes_up'] / 1e6:.1f} MB up / {setup['bytes_down'] / 1e6:.1f} MB down; whole fit {total:.1f} s "
          f"({total_cpu:.1f} CPU s); statsmodels {sm_seconds:.2f} s ({sm_cpu:.2f} CPU s; CPU ratio "
          f"{total_cpu / sm_cpu:.0f}x); max rel diff params {dp:.1e}, "
          f"bse {ds:.1e}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000, 500_000])
    parser.add_argument("--features", type=int, nargs=2, default=[10, 10], metavar=("LABEL", "FEATURE"))
    parser.add_argument("--label-block", choices=["two_key", "one_key"], default="two_key")
    parser.add_argument("--encryption", choices=["ckks", "none"], default="ckks")
    args = parser.parse_args()
    for n in args.sizes:
        run(n, args.features[0], args.features[1], args.label_block, args.encryption)


if __name__ == "__main__":
    main()
