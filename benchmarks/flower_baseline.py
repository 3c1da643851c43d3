"""Stock Flower on the anti-fraud example: the baseline that fedx's round time is measured against.

A Message-API ServerApp with ``flwr.serverapp.strategy.FedAvg`` (train and evaluate on every node,
every round) and a ClientApp with ``@app.train()`` / ``@app.evaluate()``, run on Flower's simulation
engine (Ray on 127.0.0.1, 1 CPU per client, telemetry off). The work per round is fedx's own, so
that only the federation machinery differs:

- the per-bank tables, their cleaning and train/test split are fedx's (``institution_tables``,
  ``prepare_table``, ``local_split``), and the preprocessing is fitted on the pooled training rows by
  ``fedx.baselines.fit_preprocessor`` (the federation fits the same one from summed statistics);
- the model is fedx's (``task.build_model`` with the config's ``model:``), and local training is
  ``task.train`` with ``TrainOptions.from_config`` (same epochs, batch size, learning rate and its
  decay, pos_weight, seeds per bank and round);
- evaluation is ``task.predict`` and ``task.metrics`` on each bank's test split.

As a stock Flower app would, each client reads its partition once per worker process (the design
matrices are built in the driver and handed over as .npz files) and keeps nothing else between rounds.

Usage::

    python benchmarks/flower_baseline.py [--config examples/finance_antifraud/fedx.yaml] [--rounds 5]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class FlowerStats:
    """One stock Flower run: seconds of each round (train + evaluate), and the whole run."""

    rounds: int
    seconds: list[float] = field(default_factory=list)
    wall: float = 0.0  # data, preprocessing, Ray start, every round, Ray shutdown
    setup_seconds: float = 0.0  # fedx's data code: tables, split, preprocessing, design matrices
    auprc: float = float("nan")  # weighted mean of the banks' own AUPRC after the last round

    @property
    def s_first(self) -> float:
        return self.seconds[0]

    @property
    def s_steady(self) -> float:
        return statistics.median(self.seconds[1:] or self.seconds)


def _partitions(cfg: Any, folder: Path) -> tuple[list[Path], int]:
    """Each bank's train/test design matrices as .npz files, built with fedx's data code."""
    import pandas as pd

    from fedx.baselines import fit_preprocessor
    from fedx.data.institutions import institution_tables
    from fedx.data.local import local_split, prepare_table
    from fedx.data.spec import schema_for
    from fedx.tasks import TabularData, get_task

    task = get_task(cfg.task)
    tables = institution_tables(cfg)
    splits = {name: local_split(prepare_table(df, cfg), cfg, name, task) for name, df in tables.items()}
    pooled = pd.concat([tr for tr, _ in splits.values()], ignore_index=True)
    prep = fit_preprocessor(cfg, schema_for(cfg, pooled), pooled)
    paths = []
    for i, (name, (train, test)) in enumerate(splits.items()):
        tr, te = TabularData.from_frame(cfg, prep, train), TabularData.from_frame(cfg, prep, test)
        path = folder / f"part-{i}.npz"
        np.savez(path, name=np.array(name), X_train=tr.X, y_train=tr.y, X_test=te.X, y_test=te.y)
        paths.append(path)
    return paths, len(prep.feature_names)


@functools.lru_cache(maxsize=8)
def _load(path: str) -> dict[str, Any]:
    from fedx.tasks import TabularData

    with np.load(path) as z:
        return {"name": str(z["name"]), "train": TabularData(X=z["X_train"], y=z["y_train"]),
                "test": TabularData(X=z["X_test"], y=z["y_test"])}


def make_apps(cfg: Any, paths: list[Path], n_features: int, seconds: list[float]) -> tuple[Any, Any, dict]:
    """The ClientApp and ServerApp; ``seconds`` receives each round's duration."""
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    from fedx.tasks import TrainOptions, get_task, model_config
    from fedx.tasks.params import get_arrays, set_arrays

    task = get_task(cfg.task)
    files = [str(p) for p in paths]
    client = ClientApp()

    def _model(arrays: ArrayRecord) -> Any:
        model = task.build_model(n_features, model_config(cfg), seed=cfg.seed)
        set_arrays(model, arrays.to_numpy_ndarrays())
        return model

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        part = _load(files[int(context.node_config["partition-id"])])
        model = _model(msg.content["arrays"])
        server_round = int(msg.content["config"]["server-round"])
        options = TrainOptions.from_config(cfg, part["name"], server_round, cfg.federation.local_epochs)
        report = task.train(model, part["train"], options)
        metrics = MetricRecord({"train_loss": float(report.loss_after), "num-examples": len(part["train"])})
        return Message(RecordDict({"arrays": ArrayRecord(get_arrays(model)), "metrics": metrics}), reply_to=msg)

    @client.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        part = _load(files[int(context.node_config["partition-id"])])
        model = _model(msg.content["arrays"])
        found = task.metrics(part["test"], task.predict(model, part["test"]))
        metrics = {k: float(v) for k, v in found.items() if isinstance(v, (int, float)) and v is not None}
        metrics["num-examples"] = len(part["test"])
        return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

    class TimedFedAvg(FedAvg):
        """Flower's FedAvg, unchanged, with the time from each round's train request to its evaluation."""

        started: dict[int, float] = {}

        def configure_train(self, server_round, arrays, config, grid):  # type: ignore[no-untyped-def]
            self.started[server_round] = time.perf_counter()
            return super().configure_train(server_round, arrays, config, grid)

        def aggregate_evaluate(self, server_round, replies):  # type: ignore[no-untyped-def]
            out = super().aggregate_evaluate(server_round, replies)
            seconds.append(time.perf_counter() - self.started[server_round])
            return out

    n = len(paths)
    server = ServerApp()
    outcome: dict[str, Any] = {}

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        model = task.build_model(n_features, model_config(cfg), seed=cfg.seed)
        strategy = TimedFedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=n,
                               min_evaluate_nodes=n, min_available_nodes=n)
        outcome["result"] = strategy.start(grid=grid, initial_arrays=ArrayRecord(get_arrays(model)),
                                           num_rounds=cfg.federation.rounds)

    return client, server, outcome


def run_flower(cfg: Any) -> FlowerStats:
    """One stock Flower run of ``cfg`` (its data, model, training and rounds) in the simulation engine."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # The ClientApp's functions live in this module: the Ray workers import it by name.
    here = str(Path(__file__).resolve().parent)
    paths_env = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if here not in paths_env:
        os.environ["PYTHONPATH"] = os.pathsep.join([here, *[p for p in paths_env if p]])
    # Stock Flower: fedx installs its own message loop and queue waits in Flower's simulation engine when
    # it runs in this process (fedx.flower.simulation._install_extractor); the baseline runs with Flower's own.
    from flwr.server.superlink.fleet.vce import vce_api
    from flwr.simulation import run_simulation

    installed = {name: getattr(vce_api, name) for name in ("add_messages_to_queue", "put_message_into_state")}
    for name, fn in installed.items():
        setattr(vce_api, name, getattr(fn, "_stock", fn))
    try:
        return _run_flower(cfg, run_simulation)
    finally:
        for name, fn in installed.items():
            setattr(vce_api, name, fn)


def _run_flower(cfg: Any, run_simulation: Any) -> FlowerStats:
    import logging

    stats = FlowerStats(rounds=cfg.federation.rounds)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="flower-baseline-") as tmp:
        paths, n_features = _partitions(cfg, Path(tmp))
        stats.setup_seconds = time.perf_counter() - t0
        client, server, outcome = make_apps(cfg, paths, n_features, stats.seconds)
        backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                   "init_args": {"_node_ip_address": "127.0.0.1", "include_dashboard": False,
                                 "logging_level": logging.ERROR, "log_to_driver": False,
                                 "num_cpus": min(os.cpu_count() or 1, len(paths))}}
        flwr_log = logging.getLogger("flwr")
        level = flwr_log.level
        flwr_log.setLevel(logging.ERROR)
        try:
            run_simulation(server_app=server, client_app=client, num_supernodes=len(paths), backend_config=backend)
        finally:
            flwr_log.setLevel(level)
    stats.wall = time.perf_counter() - t0
    result = outcome.get("result")
    if result is None or len(stats.seconds) != cfg.federation.rounds:
        raise RuntimeError(f"the Flower run ended after {len(stats.seconds)} of {cfg.federation.rounds} rounds")
    last = result.evaluate_metrics_clientapp.get(cfg.federation.rounds)
    if last is not None and "auprc" in last:
        stats.auprc = float(last["auprc"])
    return stats


def main() -> int:
    import sys

    import fedx

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from flower_baseline import (
        run_flower as run,  # by name, so that Ray's workers find its functions
    )

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "examples/finance_antifraud/fedx.yaml"))
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    cfg = fedx.load_config(args.config, overrides={"federation.rounds": args.rounds})
    s = run(cfg)
    print(f"stock Flower FedAvg, {s.rounds} rounds: round 1 {s.s_first:.3f} s, rounds 2..{s.rounds} median "
          f"{s.s_steady:.3f} s, whole run {s.wall:.1f} s (of which data {s.setup_seconds:.1f} s), "
          f"AUPRC (mean of the banks') {s.auprc:.4f}")
    print("rounds:", " ".join(f"{x:.3f}" for x in s.seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
