"""How much encryption's rounding moves a config's final model: plaintext and bfv-compact runs side by side.

bfv-compact clips each update value and rounds it to a step of ``clip / (2**(bits-1) - 1)`` before it
encrypts it; the plaintext run does not. A training that is sensitive to small changes of the global
model turns that rounding into a different final model. This benchmark runs the config in-process
(:mod:`fedx.inprocess`, the shipped task code and update rules) once in plaintext and once with the
updates encoded as bfv-compact encodes them at each of ``--bits`` (tests/he/test_inprocess_encoding.py
checks the emulation against the real encryption), and prints each run's final metric, pooled and per
institution, and how far each lies from the plaintext run.

Usage::

    python benchmarks/he_sensitivity_bench.py [CONFIG] [--bits 15,16,17,19] [--set key=value ...]

``--set`` changes the config as ``fedx run --set`` does, for example
``--set train.optimizer=adam --set train.lr=0.006 --set train.lr_decay=1 --set train.batch_size=1024``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fedx.config import load_config, parse_override
from fedx.he import get_preset
from fedx.inprocess import federation, train_rounds
from fedx.tasks import get_task

DEFAULT_CONFIG = "examples/finance_antifraud/fedx.yaml"


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default=DEFAULT_CONFIG, help=f"run config (default {DEFAULT_CONFIG})")
    ap.add_argument("--bits", default=None,
                    help="comma-separated he.bits to emulate (default: the config's, or the preset's)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    overrides = dict(parse_override(o) for o in args.overrides)
    cfg = load_config(args.config, overrides={**overrides, "security.encryption": "bfv-compact"})
    bits = ([int(b) for b in args.bits.split(",")] if args.bits
            else [cfg.security.he.bits or get_preset("bfv-compact").bits])
    task = get_task(cfg.task)
    metric = task.primary_metric
    fed = federation(cfg)
    t = cfg.train
    print(f"config {args.config} {overrides or ''}: model {cfg.model.kind} {list(cfg.model.hidden)}, "
          f"{cfg.federation.rounds} rounds x {cfg.federation.local_epochs} epoch(s), {cfg.federation.aggregator}, "
          f"train {t.optimizer} lr {t.lr} (x{t.lr_decay} per round) batch {t.batch_size}; "
          f"clip {cfg.security.he.clip or 'preset default'}")

    largest: dict[int, float] = {}  # round -> largest |update value| of any institution (plaintext run)
    clip = cfg.security.he.clip or get_preset("bfv-compact").clip
    beyond = [0]

    def watch(name: str, r: int, delta: list[np.ndarray]) -> list[np.ndarray]:
        top = max(float(np.abs(d).max()) for d in delta)
        largest[r] = max(largest.get(r, 0.0), top)
        beyond[0] += sum(int(np.count_nonzero(np.abs(d) > clip)) for d in delta)
        return delta

    runs: dict[str, dict[str, float]] = {}
    for b in [None, *bits]:
        label = "plaintext" if b is None else f"bfv-compact, {b} bits"
        run_cfg = cfg if b is None else load_config(args.config, overrides={
            **overrides, "security.encryption": "bfv-compact", "security.he.bits": b})
        t0 = time.perf_counter()
        model, history = train_rounds(run_cfg, fed, encoded=b is not None, tamper=watch if b is None else None)
        per = {name: float(task.metrics(test, task.predict(model, test))[metric]) for name, (_, test) in fed.data.items()}
        runs[label] = {"all": float(history[-1][metric]), **per}
        print(f"  {label}: {metric} {runs[label]['all']:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)

    first, later = largest[1], max((v for r, v in largest.items() if r > 1), default=0.0)
    print(f"  largest |update value|: {first:.3g} in round 1, {later:.3g} after it; {beyond[0]} value(s) beyond "
          f"the clip range +-{clip:g} (the encoded runs clip those)")

    names = list(fed.data)
    plain = runs["plaintext"]
    width = max(map(len, runs)) + 2
    print(f"\nfinal {metric}, pooled test splits and each institution's own")
    print(f"{'run':<{width}}{'all':>8}" + "".join(f"{n:>10}" for n in names) + f"{'vs plaintext':>14}")
    for label, r in runs.items():
        diff = "" if label == "plaintext" else f"{r['all'] - plain['all']:+.4f}"
        print(f"{label:<{width}}{r['all']:>8.4f}" + "".join(f"{r[n]:>10.3f}" for n in names) + f"{diff:>14}")
    encoded = [r for label, r in runs.items() if label != "plaintext"]
    if encoded:
        spread = max(r["all"] for r in runs.values()) - min(r["all"] for r in runs.values())
        worst = max(abs(r["all"] - plain["all"]) for r in encoded)
        bank = max(max(r[n] for r in runs.values()) - min(r[n] for r in runs.values()) for n in names)
        print(f"\nlargest |encoded - plaintext| {worst:.4f}; spread of all runs {spread:.4f} pooled, "
              f"up to {bank:.4f} at one institution")
    return runs


if __name__ == "__main__":
    main()
