"""Privacy/utility trade-off: the federated model's metric against epsilon, side by side in one run.

For the anti-fraud example (AUPRC) and the heart-disease MLP example (ROC-AUC), each read once from
its YAML file (so that every point of an example runs the same config, written to dp.json), the
benchmark runs ``fedx.run`` in simulation, as shipped (encryption on), with:

- no differential privacy (epsilon = infinity), which also gives each institution's training rows;
- client-level DP (DP-FedAvg, ``security.dp.level: client``) at epsilon 1, 3 and 8, and with clipping
  only (noise 0, epsilon infinite), which separates the cost of clipping and equal weighting from the
  cost of the noise;
- sample-level DP (DP-SGD with Opacus, ``security.dp.level: sample``) at epsilon 1, 3 and 8
  (``federation.mu: 0``, since FedProx is refused with DP-SGD).

Each noise multiplier is calibrated before its run so that the configured rounds spend exactly the
target epsilon at ``--delta``: for client level, with ``ClientDPAccountant`` (Opacus RDP, one step
per round, every institution in every round); for sample level, with Opacus' RDP analysis of each
institution's DP-SGD (sample rate 1 / batches per epoch, rounds x epochs x batches steps), taking
the largest multiplier so that no institution spends more than the target. The table shows the
epsilon that result.json then reports next to the target.

Writes ``dp.json`` and ``dp_tradeoff.png`` to ``--out``, and copies the PNG to ``--png`` (the docs).

Usage::

    python benchmarks/dp_bench.py [--quick] [--examples fraud,heart] [--levels client,sample]
                                  [--out runs/bench-dp] [--png docs/img/dp_tradeoff.png]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import textwrap
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EPSILONS = (1.0, 3.0, 8.0)

#: The heart-disease MLP config used when examples/medical_insurance/disease_warning_mlp.yaml is absent.
HEART_FALLBACK: dict[str, Any] = {
    "name": "disease-warning-mlp", "seed": 7, "task": "disease_risk",
    "model": {"kind": "mlp", "hidden": [32, 16], "dropout": 0.1},
    "data": {"source": "data/heart_disease_uci.csv", "split_by": "dataset", "target": "num", "target_above": 0,
             "drop": ["id"], "na_values": {"chol": [0], "trestbps": [0]}, "test_fraction": 0.3},
    "train": {"lr": 0.005, "batch_size": 32, "weight_decay": 0.0001, "pos_weight": 1.0},
    "federation": {"aggregator": "fedavg", "rounds": 30, "local_epochs": 2, "min_clients": 4},
    "security": {"encryption": "bfv-compact"},
}


@dataclass
class Example:
    """One example config and the metric plotted for it."""

    key: str
    title: str
    path: Path
    metric: str
    quick_rounds: int
    train: dict[str, Any] = field(default_factory=dict)  # overrides applied to every point of the example


#: The anti-fraud example trains with plain SGD at learning rate 1.0, which diverges once client-level
#: noise has moved the global model (measured: NaN losses at epsilon 1 and 3); its points train with Adam,
#: whose steps stay bounded, as the example did before.
FRAUD_DP_TRAIN = {"train.optimizer": "adam", "train.lr": 0.006, "train.lr_decay": 1.0, "train.batch_size": 1024}

#: The YAML of each example as the benchmark read it (written to dp.json).
CONFIGS: dict[str, dict[str, Any]] = {}

EXAMPLES = {
    "fraud": Example("fraud", "anti-fraud (5 banks)", ROOT / "examples/finance_antifraud/fedx.yaml", "auprc", 4,
                     FRAUD_DP_TRAIN),
    "heart": Example("heart", "heart disease (4 hospitals)", ROOT / "examples/medical_insurance/disease_warning_mlp.yaml",
                     "roc_auc", 6),
}


@dataclass
class Point:
    """One run."""

    example: str
    level: str  # none | client | sample
    target_epsilon: float  # inf without noise
    noise_multiplier: float
    clip: float | None
    metric: str
    value: float
    reported_epsilon: float | None
    rounds: int
    seconds: float
    config: str
    encryption: str
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- calibration


def _bisect(eps_of: Any, target: float, lo: float = 0.05, hi: float = 2000.0, rel: float = 1e-5) -> float:
    """The noise multiplier whose epsilon is ``target`` (epsilon falls as the multiplier grows)."""
    if eps_of(hi) > target:
        raise ValueError(f"epsilon {target} needs a noise multiplier above {hi}")
    while eps_of(lo) < target:
        lo /= 2
    while hi - lo > rel * hi:
        mid = 0.5 * (lo + hi)
        if eps_of(mid) > target:
            lo = mid
        else:
            hi = mid
    return hi  # the side whose epsilon is at most the target


def client_noise(target: float, rounds: int, delta: float) -> float:
    """Client level: the noise multiplier that spends ``target`` in ``rounds`` full-participation rounds."""
    from fedx.privacy.dp import ClientDPAccountant

    return _bisect(lambda s: ClientDPAccountant(s, 1.0, delta).epsilon_after(rounds), target)


def sample_epsilon(noise: float, n_train: int, batch_size: int, epochs: int, delta: float) -> float:
    """Sample level: one institution's DP-SGD epsilon after ``epochs`` epochs in all (Opacus RDP)."""
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp as rdp_analysis

    batches = math.ceil(n_train / batch_size)
    rdp = rdp_analysis.compute_rdp(q=1.0 / batches, noise_multiplier=noise, steps=epochs * batches,
                                   orders=RDPAccountant.DEFAULT_ALPHAS)
    eps, _ = rdp_analysis.get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta)
    return float(eps)


def sample_noise(target: float, n_trains: Sequence[int], batch_size: int, epochs: int, delta: float) -> float:
    """Sample level: the smallest noise multiplier that keeps every institution's epsilon at or below ``target``."""
    return max(_bisect(lambda s, n=n: sample_epsilon(s, n, batch_size, epochs, delta), target, lo=0.3, hi=100.0)
               for n in n_trains)


# --------------------------------------------------------------------------- runs


def snapshot(ex: Example) -> tuple[dict[str, Any], Path, str]:
    """The example's YAML as it is now, read once so that every point of the example runs the same config."""
    import yaml

    if ex.path.exists():
        return yaml.safe_load(ex.path.read_text(encoding="utf-8")), ex.path.parent, str(ex.path.relative_to(ROOT))
    return HEART_FALLBACK, ROOT / "examples/medical_insurance", "built-in heart MLP (the example file is absent)"


def run_point(ex: Example, raw: dict[str, Any], base_dir: Path, source: str, out: Path, tag: str,
              overrides: dict[str, Any], level: str, target: float, noise: float,
              clip: float | None) -> tuple[Point, dict[str, Any] | None]:
    """One fedx.run of the snapshot with ``overrides``; a failure becomes a Point with ``error`` set."""
    import fedx
    from fedx.config import config_from_dict

    t0 = time.perf_counter()
    cfg = config_from_dict(raw, overrides=overrides, source=source, base_dir=base_dir)
    base = Point(ex.key, level, target, noise, clip, ex.metric, float("nan"), None, cfg.federation.rounds, 0.0,
                 source, cfg.security.encryption)
    try:
        result = fedx.run(cfg, out / f"{ex.key}-{tag}", progress=False, force=True)
    except Exception as exc:  # noqa: BLE001 - one failed point must not lose the others
        base.error, base.seconds = f"{type(exc).__name__}: {exc}", time.perf_counter() - t0
        return base, None
    body = json.loads((result.out_dir / "result.json").read_text())
    privacy = body.get("privacy", {})
    base.value = float(body["metrics"].get(ex.metric, float("nan")))
    base.reported_epsilon = privacy.get("epsilon")
    base.rounds = len(body.get("history", []))
    base.seconds = time.perf_counter() - t0
    if "per_institution_epsilon" in privacy:
        base.extra["per_institution_epsilon"] = privacy["per_institution_epsilon"]
    return base, body


def bench_example(ex: Example, args: argparse.Namespace, out: Path) -> list[Point]:
    """Every point of one example."""
    from fedx.config import config_from_dict

    common: dict[str, Any] = {"report.baselines": [], "report.plots": False, "federation.eval_every": 0, **ex.train}
    raw, base_dir, source = snapshot(ex)
    cfg = config_from_dict(raw, overrides=common, source=source, base_dir=base_dir)
    CONFIGS[ex.key] = raw
    rounds = min(cfg.federation.rounds, ex.quick_rounds) if args.quick else cfg.federation.rounds
    common["federation.rounds"] = rounds
    epochs, batch = cfg.federation.local_epochs, cfg.train.batch_size
    print(f"\n== {ex.title}: {source} ({rounds} rounds, {epochs} local epoch(s), batch {batch}, "
          f"{cfg.federation.aggregator}, mu {cfg.federation.mu:g}, encryption {cfg.security.encryption}"
          f"{', ' + str(ex.train) if ex.train else ''})", flush=True)
    points: list[Point] = []

    def record(p: Point) -> None:
        points.append(p)
        eps = "-" if p.reported_epsilon is None else f"{p.reported_epsilon:.3f}"
        status = f"ERROR {p.error}" if p.error else f"{p.metric} {p.value:.4f}"
        print(f"  {p.level:<7} target eps {p.target_epsilon:<5g} sigma {p.noise_multiplier:<8.4g} "
              f"reported eps {eps:<7} {status} ({p.seconds:.0f} s)", flush=True)

    def point(tag: str, extra: dict[str, Any], level: str, target: float, noise: float,
              clip: float | None) -> tuple[Point, dict[str, Any] | None]:
        return run_point(ex, raw, base_dir, source, out, tag, {**common, **extra}, level, target, noise, clip)

    plain, body = point("none", {}, "none", math.inf, 0.0, None)
    record(plain)
    n_trains = [int(v["n_train"]) for v in (body or {}).get("institutions", {}).values()]

    if "client" in args.levels:
        clip = args.client_clip
        # An example's security.he.clip suits its plain updates; under client-level DP the run sizes the
        # keys' clip range to the noised update instead.
        room = {"security.he.clip": None} if cfg.security.encryption == "bfv-compact" else {}
        for target in EPSILONS:
            sigma = client_noise(target, rounds, args.delta)
            dp = {"level": "client", "clip": clip, "noise_multiplier": sigma, "delta": args.delta}
            record(point(f"client-eps{target:g}", {"security.dp": dp, **room}, "client", target, sigma, clip)[0])
        dp = {"level": "client", "clip": clip, "noise_multiplier": 0.0, "delta": args.delta}
        record(point("client-clip-only", {"security.dp": dp, **room}, "client", math.inf, 0.0, clip)[0])
    if "sample" in args.levels:
        if not n_trains:
            print("  sample level skipped: the run without DP failed, so the institutions' sizes are unknown")
        else:
            clip = args.sample_clip
            for target in EPSILONS:
                sigma = sample_noise(target, n_trains, batch, epochs * rounds, args.delta)
                dp = {"level": "sample", "clip": clip, "noise_multiplier": sigma, "delta": args.delta}
                record(point(f"sample-eps{target:g}", {"security.dp": dp, "federation.mu": 0.0}, "sample", target,
                             sigma, clip)[0])
    return points


# --------------------------------------------------------------------------- output


def table(points: list[Point]) -> str:
    """Side by side: one line per run."""
    head = (f"{'example':<8}{'DP level':<12}{'target eps':>11}{'sigma':>10}{'clip':>6}{'reported eps':>14}"
            f"{'metric':>9}{'value':>9}{'vs no DP':>10}{'seconds':>9}")
    lines = [head, "-" * len(head)]
    base = {p.example: p.value for p in points if p.level == "none"}
    for p in points:
        eps = f"{p.reported_epsilon:.3f}" if p.reported_epsilon is not None else \
            "inf" if p.level != "none" and not p.error else "-"
        target = "inf" if math.isinf(p.target_epsilon) else f"{p.target_epsilon:g}"
        level = "client clip" if p.level == "client" and p.noise_multiplier == 0 else p.level
        value = "failed" if p.error else f"{p.value:.4f}"
        diff = "" if p.error or p.level == "none" else f"{p.value - base.get(p.example, math.nan):+.4f}"
        clip = "-" if p.clip is None else f"{p.clip:g}"
        lines.append(f"{p.example:<8}{level:<12}{target:>11}{p.noise_multiplier:>10.4g}{clip:>6}{eps:>14}"
                     f"{p.metric:>9}{value:>9}{diff:>10}{p.seconds:>9.0f}")
    return "\n".join(lines)


def plot(points: list[Point], examples: list[Example], path: Path, note: str) -> None:
    """Metric against epsilon, one panel per example; epsilon = infinity is drawn at the right end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inf_x = 30.0
    fig, axes = plt.subplots(1, len(examples), figsize=(5.2 * len(examples), 4.2), squeeze=False)
    for ax, ex in zip(axes[0], examples):
        pts = [p for p in points if p.example == ex.key and not p.error]
        base = next((p for p in pts if p.level == "none"), None)
        for level, style, label in (("client", "o-", "client level (DP-FedAvg)"),
                                    ("sample", "s-", "sample level (DP-SGD)")):
            curve = sorted((p for p in pts if p.level == level and p.noise_multiplier > 0),
                           key=lambda p: p.target_epsilon)
            if not curve:
                continue
            xs = [p.target_epsilon for p in curve]
            ys = [p.value for p in curve]
            line = ax.plot(xs, ys, style, label=label)[0]
            clip_only = [p for p in pts if p.level == level and p.noise_multiplier == 0]
            if clip_only:
                ax.plot([inf_x], [clip_only[0].value], style[0], mfc="none", color=line.get_color(),
                        label=f"{level} level, clipping only")
                ax.plot([xs[-1], inf_x], [ys[-1], clip_only[0].value], ":", color=line.get_color())
        if base is not None:
            ax.axhline(base.value, color="k", ls="--", lw=1, label=f"no DP: {base.value:.3f}")
            ax.plot([inf_x], [base.value], "k*", ms=9)
        ax.set_xscale("log")
        ax.set_xticks([1, 3, 8, inf_x])
        ax.set_xticklabels(["1", "3", "8", "∞"])
        ax.minorticks_off()
        ax.set_xlabel("epsilon (delta = 1e-5)")
        ax.set_ylabel({"auprc": "AUPRC", "roc_auc": "ROC-AUC"}.get(ex.metric, ex.metric))
        ax.set_title(ex.title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("fedx: federated model's test metric against epsilon", fontsize=11)
    fig.text(0.5, 0.005, textwrap.fill(note, 70 * len(examples)), ha="center", va="bottom", fontsize=7.5)
    fig.tight_layout(rect=(0, 0.07, 1, 0.97))
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> int:
    """Run every point, print the table, write dp.json and the PNG; exit 1 if a run failed."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="few rounds (a smoke test of the benchmark)")
    p.add_argument("--examples", default="fraud,heart", help="fraud and/or heart, comma-separated")
    p.add_argument("--levels", default="client,sample", help="client and/or sample, comma-separated")
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--client-clip", type=float, default=1.0, help="L2 bound of each institution's update")
    p.add_argument("--sample-clip", type=float, default=1.0, help="L2 bound of each row's gradient")
    p.add_argument("--out", default="runs/bench-dp")
    p.add_argument("--png", default=str(ROOT / "docs/img/dp_tradeoff.png"), help="copy of the plot ('' for none)")
    args = p.parse_args()
    # Calibration probes noise multipliers far from the answer, where the best RDP order is at the edge.
    warnings.filterwarnings("ignore", message="Optimal order is the", category=UserWarning)
    args.levels = [s.strip() for s in args.levels.split(",") if s.strip()]
    examples = [EXAMPLES[k.strip()] for k in args.examples.split(",") if k.strip()]
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    points: list[Point] = []
    for ex in examples:
        points.extend(bench_example(ex, args, out))
    print()
    print(table(points))
    print(f"(epsilon at delta = {args.delta:g}; sigma: noise multiplier calibrated to the target; reported eps: "
          f"result.json privacy.epsilon, for sample level the largest institution's; clip: of each institution's "
          f"update (client) or each row's gradient (sample); client clip: clipping and equal weights, no noise)")
    (out / "dp.json").write_text(json.dumps({"started": started, "args": vars(args),
                                             "configs": CONFIGS, "points": [asdict(p) for p in points]}, indent=2, default=str))
    rounds = ", ".join(f"{ex.key} {next((p.rounds for p in points if p.example == ex.key), '?')} rounds"
                       for ex in examples)
    png = out / "dp_tradeoff.png"
    plot(points, examples, png, f"{started}; {rounds}; encryption as shipped; one run per point (noise from the "
                                f"OS's entropy, so a rerun differs)")
    print(f"wrote {out / 'dp.json'} and {png}")
    if args.png:
        Path(args.png).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, args.png)
        print(f"copied the plot to {args.png}")
    finite = [p for p in points if not p.error and p.reported_epsilon is not None and not math.isinf(p.target_epsilon)]
    over = [p for p in finite if p.reported_epsilon > p.target_epsilon * (1 + 1e-3)]
    for p_ in over:
        print(f"WARNING: {p_.example} {p_.level}: reported epsilon {p_.reported_epsilon:.4f} exceeds the target "
              f"{p_.target_epsilon:g}")
    return 1 if any(p_.error for p_ in points) or over else 0


if __name__ == "__main__":
    raise SystemExit(main())
