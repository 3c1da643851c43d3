"""FedAvg, FedProx, FedAdam and FedYogi on the anti-fraud example, side by side in one run.

Every aggregator trains the same model from the same start, on the same institutions' data, with
the config's local training settings, for the same number of rounds. After each round the global
model is scored on every institution's test split, pooled (summed statistics, as a fedx run reports
its metrics). The centralized baseline is fedx's own (:func:`fedx.baselines.centralized`): one model
trained on the pooled training rows with the same task code for ``rounds * local_epochs`` epochs.
The table gives each aggregator's AUPRC per round and the first round at which it reaches 95% of the
centralized AUPRC.

The rounds run in-process and in plaintext: the aggregation math is the same under encryption, since
with HE the institutions decrypt the weighted mean delta and apply the same deterministic rule (to the
preset's precision: tests/flower/test_fedadam_encrypted.py and the encrypted simulation tests in
tests/flower/ check it), while a Flower simulation would only add minutes of start-up and encryption.

Usage::

    python benchmarks/aggregators_bench.py [CONFIG] [--rounds N] [--mu 0.01] [--server-lr LR] [--quick]
                                           [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedx.baselines import centralized
from fedx.config import Config, config_from_dict, load_config
from fedx.data.institutions import institution_tables
from fedx.data.local import derive_seed
from fedx.inprocess import Federation, federation, train_rounds
from fedx.tasks import get_task, model_config

DEFAULT_CONFIG = "examples/finance_antifraud/fedx.yaml"
TARGET_SHARE = 0.95
PLAINTEXT_NOTE = ("in-process, plaintext: under encryption the institutions decrypt the same weighted mean "
                  "delta and apply the same deterministic rule, so the rounds are the same to the HE preset's "
                  "precision (checked by tests/flower/test_fedadam_encrypted.py and the encrypted simulation tests)")


@dataclass
class Curve:
    """One aggregator's run."""

    name: str
    settings: dict[str, Any]
    metric: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def rounds_to(self, target: float) -> int | None:
        """The first round whose metric reaches ``target``, or None."""
        return next((r for r, v in enumerate(self.metric, start=1) if v >= target), None)


def _with(cfg: Config, **changes: Any) -> Config:
    doc = cfg.to_dict()
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        doc[section][key] = value
    return config_from_dict(doc, base_dir=cfg.base_dir)


def run_aggregator(cfg: Config, fed: Federation) -> list[float]:
    """Rounds of ``cfg``'s aggregator; the pooled primary metric after each one."""
    metric = get_task(cfg.task).primary_metric
    _, history = train_rounds(cfg, fed)
    return [float(h[metric]) for h in history]


def _plot(path: Path, curves: list[Curve], central: float, metric: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for c in curves:
        ax.plot(range(1, len(c.metric) + 1), c.metric, marker="o", markersize=3, label=c.name)
    ax.axhline(central, color="black", linestyle="--", linewidth=1, label=f"centralized ({central:.3f})")
    ax.axhline(TARGET_SHARE * central, color="grey", linestyle=":", linewidth=1,
               label=f"{TARGET_SHARE:.0%} of centralized")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel(f"{metric} (institutions' test splits, pooled)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default=DEFAULT_CONFIG, help=f"run config (default {DEFAULT_CONFIG})")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default: the config's federation.rounds)")
    ap.add_argument("--mu", type=float, default=0.01, help="FedProx proximal weight (default 0.01)")
    ap.add_argument("--server-lr", type=float, default=None,
                    help="FedAdam/FedYogi server learning rate (default: the config's server_optimizer.lr)")
    ap.add_argument("--quick", action="store_true", help="a quarter of the rows and at most 5 rounds")
    ap.add_argument("--out", default="runs/bench-aggregators", help="folder for aggregators.json and .png")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    cfg = load_config(args.config, overrides={"security.encryption": "none", "security.masking": "none"})
    rounds = args.rounds or cfg.federation.rounds
    if args.quick:
        rounds = min(rounds, 5)
    cfg = _with(cfg, federation__rounds=rounds)
    if args.server_lr is not None:
        cfg = config_from_dict(cfg.to_dict(), overrides={"federation.server_optimizer.lr": args.server_lr},
                               base_dir=cfg.base_dir)
    task = get_task(cfg.task)
    metric = task.primary_metric
    print(f"config {args.config}: task {cfg.task}, model {model_config(cfg)}, {rounds} rounds x "
          f"{cfg.federation.local_epochs} local epoch(s), train {cfg.train.optimizer} lr {cfg.train.lr} "
          f"(x{cfg.train.lr_decay} per round) batch {cfg.train.batch_size}{', quick (1/4 of the rows)' if args.quick else ''}")
    print(f"rounds run {PLAINTEXT_NOTE}")
    t0 = time.perf_counter()
    tables = institution_tables(cfg)
    if args.quick:  # a quarter of each institution's rows
        tables = {n: df.sample(frac=0.25, random_state=derive_seed(cfg.seed, n, "quick")).sort_index()
                  for n, df in tables.items()}
    fed_data = federation(cfg, tables)
    data = fed_data.data
    n_train = {n: len(tr) for n, (tr, _) in data.items()}
    print(f"{len(data)} institutions, training rows {n_train} ({time.perf_counter() - t0:.0f} s to prepare)")

    t0 = time.perf_counter()
    central = float(centralized(cfg, tables)[0][metric])
    central_s = time.perf_counter() - t0
    opt = cfg.federation.server_optimizer
    variants = [
        ("fedavg", {"aggregator": "fedavg", "mu": 0.0}),
        (f"fedprox (mu={args.mu:g})", {"aggregator": "fedprox", "mu": args.mu}),
        ("fedadam", {"aggregator": "fedadam", "mu": 0.0}),
        ("fedyogi", {"aggregator": "fedyogi", "mu": 0.0}),
    ]
    curves = []
    for label, fed in variants:
        c = _with(cfg, federation__aggregator=fed["aggregator"], federation__mu=fed["mu"])
        settings = dict(fed)
        if fed["aggregator"] in ("fedadam", "fedyogi"):
            settings.update(server_lr=opt.lr or 0.01, beta1=opt.beta1, beta2=opt.beta2, tau=opt.tau)
        t0 = time.perf_counter()
        curve = Curve(label, settings, run_aggregator(c, fed_data))
        curve.seconds = time.perf_counter() - t0
        curves.append(curve)
        print(f"  {label}: done in {curve.seconds:.0f} s")

    target = TARGET_SHARE * central
    shown = sorted({1, 2, 3, 5, rounds} | set(range(10, rounds + 1, 5)))
    shown = [r for r in shown if r <= rounds]
    name_w = max(len(c.name) for c in curves) + 2
    head = f"{'aggregator':<{name_w}}" + "".join(f"{'r' + str(r):>8}" for r in shown) + \
        f"{'best':>8}{'rounds to ' + format(TARGET_SHARE, '.0%'):>16}{'seconds':>9}"
    print(f"\n{metric} per round (pooled test splits); centralized {central:.4f} "
          f"({rounds * cfg.federation.local_epochs} epochs on the pooled rows, {central_s:.0f} s), "
          f"{TARGET_SHARE:.0%} of it = {target:.4f}")
    print(head)
    for c in curves:
        reach = c.rounds_to(target)
        print(f"{c.name:<{name_w}}" + "".join(f"{c.metric[r - 1]:>8.4f}" for r in shown) +
              f"{max(c.metric):>8.4f}{(str(reach) if reach else 'not in ' + str(rounds)):>16}{c.seconds:>9.0f}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "config": str(args.config), "date": time.strftime("%Y-%m-%d", time.gmtime()), "quick": args.quick,
        "metric": metric, "rounds": rounds, "local_epochs": cfg.federation.local_epochs,
        "train": {"optimizer": cfg.train.optimizer, "lr": cfg.train.lr, "batch_size": cfg.train.batch_size},
        "model": model_config(cfg), "institutions": n_train, "note": PLAINTEXT_NOTE,
        "centralized": central, "target": target,
        "aggregators": {c.name: {"settings": c.settings, "per_round": c.metric, "best": max(c.metric),
                                 "rounds_to_target": c.rounds_to(target), "seconds": c.seconds} for c in curves},
    }
    (out / "aggregators.json").write_text(json.dumps(doc, indent=2))
    _plot(out / "aggregators.png", curves, central, metric,
          f"{cfg.name}: {metric} per round, {len(data)} institutions ({Path(args.config).name})")
    print(f"\nwrote {out / 'aggregators.json'} and {out / 'aggregators.png'}")
    return doc


if __name__ == "__main__":
    main()
