"""An encrypted federated round against a plaintext one on the anti-fraud example, side by side in one run.

The anti-fraud config (examples/finance_antifraud/fedx.yaml, read when the benchmark starts) runs in
simulation with ``security.encryption: none`` and with ``bfv-compact``: same seed, same rounds, no
baselines, and no pairwise masks (``security.masking: none``; benchmarks/masking_bench.py measures them).
The runs alternate (none, bfv-compact, none, ...) with ``--repeat``, so that a change in the machine's load
falls on both. From each run's history it prints the seconds per round (median
over the rounds), the bytes up and down per round (all institutions), one institution's update, the
ratios encrypted / plaintext, and the final AUPRC of both.

Goals: an encrypted round costs at most 1.15x a plaintext round, and the final AUPRC agrees within
0.005 (bfv-compact quantizes each update to ``bits`` bits, so the two runs differ by rounding only).

With ``--flower`` (the default) stock Flower (benchmarks/flower_baseline.py: ``FedAvg`` on the Message
API, the same data, model and local training, evaluating every round) runs in the same alternation,
and two more goals are checked: a fedx bfv-compact steady round (rounds 2..R) costs at most
``--flower-ratio`` (1.05) times a stock Flower plaintext round, and fedx's whole run is no slower than
Flower's.

Usage::

    python benchmarks/he_round_bench.py [--rounds 5] [--repeat 2] [--config examples/finance_antifraud/fedx.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ENCRYPTIONS = ("none", "bfv-compact")


@dataclass
class RunStats:
    """One run's history, summarized."""

    encryption: str
    rounds: int
    s_round: float  # median of history[].seconds
    s_rounds_after_first: float  # median of rounds 2..R
    s_first: float
    bytes_up: float  # median per round, all institutions
    bytes_down: float
    update_bytes: float  # one institution's update (median over rounds)
    update_bytes_per_param: float
    wall: float  # the whole fedx.run: data, keys, setup, rounds, final evaluation
    auprc: float
    roc_auc: float


def one_run(config: Path, encryption: str, rounds: int, seed: int | None, out: Path) -> RunStats:
    """``fedx.run`` of the config with ``encryption`` and ``rounds``, no baselines, no plots."""
    import fedx

    # Pairwise masks (the example's security.masking) add three message exchanges per round; their cost is
    # measured by benchmarks/masking_bench.py. Here both runs send one update per round.
    overrides = {"security.encryption": encryption, "federation.rounds": rounds, "report.baselines": [],
                 "report.plots": False, "security.masking": "none"}
    if seed is not None:
        overrides["seed"] = seed
    cfg = fedx.load_config(config, overrides=overrides)
    t0 = time.perf_counter()
    result = fedx.run(cfg, out, progress=False, force=True)
    wall = time.perf_counter() - t0
    hist = result.history
    later = hist[1:] or hist
    return RunStats(
        encryption=encryption, rounds=len(hist),
        s_round=statistics.median(h["seconds"] for h in hist),
        s_rounds_after_first=statistics.median(h["seconds"] for h in later),
        s_first=hist[0]["seconds"],
        bytes_up=statistics.median(h["bytes_up"] for h in hist),
        bytes_down=statistics.median(h["bytes_down"] for h in hist),
        update_bytes=statistics.median(h["update_bytes_per_client"] for h in hist),
        update_bytes_per_param=statistics.median(h["update_bytes_per_param"] for h in hist),
        wall=wall, auprc=float(result.metrics["auprc"]), roc_auc=float(result.metrics.get("roc_auc", float("nan"))),
    )


def flower_run(config: Path, rounds: int, seed: int | None) -> Any:
    """One stock Flower run of the config (benchmarks/flower_baseline.py)."""
    import sys

    import fedx

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from flower_baseline import run_flower  # by name, so that Ray's workers find its functions

    overrides: dict[str, Any] = {"federation.rounds": rounds}
    if seed is not None:
        overrides["seed"] = seed
    return run_flower(fedx.load_config(config, overrides=overrides))


def _kb(b: float) -> str:
    return f"{b / 1e6:.2f} MB" if b >= 1e6 else f"{b / 1e3:.1f} kB"


def table(plain: RunStats, enc: RunStats) -> str:
    """Both runs and the ratios."""
    rows = [
        ("seconds per round (median)", f"{plain.s_round:.3f}", f"{enc.s_round:.3f}", enc.s_round / plain.s_round),
        ("  rounds 2..R (median)", f"{plain.s_rounds_after_first:.3f}", f"{enc.s_rounds_after_first:.3f}",
         enc.s_rounds_after_first / plain.s_rounds_after_first),
        ("  round 1", f"{plain.s_first:.3f}", f"{enc.s_first:.3f}", enc.s_first / plain.s_first),
        ("bytes up per round", _kb(plain.bytes_up), _kb(enc.bytes_up), enc.bytes_up / plain.bytes_up),
        ("bytes down per round", _kb(plain.bytes_down), _kb(enc.bytes_down), enc.bytes_down / plain.bytes_down),
        ("update of one institution", _kb(plain.update_bytes), _kb(enc.update_bytes),
         enc.update_bytes / plain.update_bytes),
        ("  bytes per parameter", f"{plain.update_bytes_per_param:.2f}", f"{enc.update_bytes_per_param:.2f}",
         enc.update_bytes_per_param / plain.update_bytes_per_param),
        ("whole run, wall seconds", f"{plain.wall:.1f}", f"{enc.wall:.1f}", enc.wall / plain.wall),
        ("final AUPRC", f"{plain.auprc:.4f}", f"{enc.auprc:.4f}", None),
        ("final ROC-AUC", f"{plain.roc_auc:.4f}", f"{enc.roc_auc:.4f}", None),
    ]
    head = f"{'':<28}{'none':>12}{'bfv-compact':>14}{'enc/plain':>11}"
    lines = [head, "-" * len(head)]
    for name, a, b, ratio in rows:
        lines.append(f"{name:<28}{a:>12}{b:>14}{'' if ratio is None else f'{ratio:.3f}x':>11}")
    return "\n".join(lines)


def main() -> int:
    """Run both, print the table and the goals; exit 1 when a goal fails."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "examples/finance_antifraud/fedx.yaml"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeat", type=int, default=2, help="runs of each encryption, alternating; medians are kept")
    p.add_argument("--seed", type=int, default=None, help="override the config's seed")
    p.add_argument("--max-ratio", type=float, default=1.15, help="goal: encrypted / plaintext seconds per round")
    p.add_argument("--auprc-tol", type=float, default=0.005, help="goal: |AUPRC encrypted - plaintext|")
    p.add_argument("--out", default="runs/bench-he-round")
    p.add_argument("--flower", action=argparse.BooleanOptionalAction, default=True,
                   help="also run stock Flower (benchmarks/flower_baseline.py) in the alternation")
    p.add_argument("--flower-ratio", type=float, default=1.05,
                   help="goal: fedx bfv-compact steady round / stock Flower plaintext steady round")
    args = p.parse_args()
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    out = Path(args.out)
    config = Path(args.config)
    print(f"{config}: {args.rounds} rounds, encryption none and bfv-compact, same seed, no baselines; "
          f"{args.repeat} run(s) of each, alternating", flush=True)
    runs: dict[str, list[RunStats]] = {e: [] for e in ENCRYPTIONS}
    flower_runs: list[Any] = []
    for i in range(args.repeat):
        if args.flower:
            f = flower_run(config, args.rounds, args.seed)
            flower_runs.append(f)
            print(f"  run {i + 1} {'flower':<12} {f.s_steady:.3f} s/round (rounds 2..R), round 1 {f.s_first:.3f} s, "
                  f"whole run {f.wall:.0f} s", flush=True)
        for enc in ENCRYPTIONS if i % 2 == 0 else ENCRYPTIONS[::-1]:
            r = one_run(config, enc, args.rounds, args.seed, out / f"{enc}-{i}")
            runs[enc].append(r)
            print(f"  run {i + 1} {enc:<12} {r.s_round:.3f} s/round (median), AUPRC {r.auprc:.4f}, "
                  f"whole run {r.wall:.0f} s", flush=True)

    def merged(rs: list[RunStats]) -> RunStats:
        if len(rs) == 1:
            return rs[0]
        fields = asdict(rs[0])
        for key, value in fields.items():
            if isinstance(value, float):
                fields[key] = statistics.median(getattr(r, key) for r in rs)
        return RunStats(**fields)

    plain, enc = merged(runs["none"]), merged(runs["bfv-compact"])
    print()
    print(table(plain, enc))
    ratio = enc.s_round / plain.s_round
    gap = abs(enc.auprc - plain.auprc)
    goals = [(f"encrypted round <= {args.max_ratio:g}x plaintext (measured {ratio:.3f}x)", ratio <= args.max_ratio),
             (f"final AUPRC within {args.auprc_tol:g} (measured |diff| {gap:.4f})", gap <= args.auprc_tol)]
    if flower_runs:
        fl_steady = statistics.median(f.s_steady for f in flower_runs)
        fl_first = statistics.median(f.s_first for f in flower_runs)
        fl_wall = statistics.median(f.wall for f in flower_runs)
        print()
        print(f"{'':<28}{'flower':>10}{'fedx none':>12}{'fedx bfv':>12}{'none/fl':>9}{'bfv/fl':>9}")
        for name, fl, a, b in (("rounds 2..R (median)", fl_steady, plain.s_rounds_after_first,
                                enc.s_rounds_after_first),
                               ("round 1", fl_first, plain.s_first, enc.s_first),
                               ("whole run, wall seconds", fl_wall, plain.wall, enc.wall)):
            print(f"{name:<28}{fl:>10.3f}{a:>12.3f}{b:>12.3f}{a / fl:>8.3f}x{b / fl:>8.3f}x")
        steady = enc.s_rounds_after_first / fl_steady
        goals.append((f"fedx bfv-compact round <= {args.flower_ratio:g}x stock Flower plaintext round (measured "
                      f"{steady:.3f}x: {enc.s_rounds_after_first:.3f} s vs {fl_steady:.3f} s"
                      + ("" if steady <= args.flower_ratio else
                         f", gap {enc.s_rounds_after_first - args.flower_ratio * fl_steady:+.3f} s") + ")",
                      steady <= args.flower_ratio))
        goals.append((f"fedx bfv-compact whole run no slower than Flower's (measured {enc.wall:.1f} s vs "
                      f"{fl_wall:.1f} s)", enc.wall <= fl_wall))
    print("goals:")
    for goal, ok in goals:
        print(f"  {'PASS' if ok else 'FAIL'}  {goal}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "he_round.json").write_text(json.dumps(
        {"args": vars(args), "runs": {k: [asdict(r) for r in v] for k, v in runs.items()},
         "flower": [{"seconds": f.seconds, "wall": f.wall, "auprc": f.auprc} for f in flower_runs]}, indent=2))
    return 0 if all(ok for _, ok in goals) else 1


if __name__ == "__main__":
    raise SystemExit(main())
