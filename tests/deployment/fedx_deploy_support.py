"""Support for the deployment tests: fedx driven through the CLI as operators would (`fedx certs`,
`fedx keygen`, `fedx node-keys`, `fedx server`, one `fedx node` per institution), on 127.0.0.1 with TLS and
SuperNode authentication. Every process is started and stopped by PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fedx.flower import deploy

SITES = ("east", "north", "south")


def fedx_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedx.cli", *args]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(fedx_cmd(*args), check=False, cwd=cwd, capture_output=True, text=True, timeout=120)


class Processes:
    """Background `fedx server` / `fedx node` processes, each the leader of its own session."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pids: set[int] = set()

    def start(self, name: str, args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
        log = open(cwd / f"{name}.out", "ab")  # noqa: SIM115 - the process writes to it for its whole life
        proc = subprocess.Popen(fedx_cmd(*args), cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"})
        self.procs[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Stop one process with its whole tree (its SuperLink or SuperNode, their app processes)."""
        proc = self.procs[name]
        tree = {proc.pid} | deploy.descendant_pids(proc.pid)
        self.pids |= tree
        for pid in tree:
            try:
                os.killpg(pid, sig) if pid == proc.pid else os.kill(pid, sig)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for pid in tree:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait(timeout=10)

    def stop_all(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is None:
                self.kill(name)
        deadline = time.monotonic() + 20
        while deploy.alive_pids(self.pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in deploy.alive_pids(self.pids):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    yield procs
    procs.stop_all()
    assert not deploy.alive_pids(procs.pids), f"left running: {deploy.alive_pids(procs.pids)}"


def make_site_table(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for name, n, shift in (("north", 600, 0.0), ("south", 400, 0.5), ("east", 250, -0.5)):
        x1 = rng.normal(shift, 1.0, n)
        x2 = rng.normal(0.0, 2.0, n)
        logit = -1.0 + 1.5 * x1 - 0.5 * x2
        y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
        parts.append(pd.DataFrame({"site": name, "x1": x1, "x2": x2, "label": y}))
    return pd.concat(parts, ignore_index=True)


def build_deployment(root: Path, rounds: int, port: int, *, extra_sites: tuple[str, ...] = ()) -> dict:
    """The folder a server operator and three institutions would set up, made with the fedx CLI."""
    root.mkdir(parents=True, exist_ok=True)
    for args in (("certs", "--out", "certs"), ("keygen", "--preset", "bfv-compact", "--out", "keys")):
        res = cli(*args, cwd=root)
        assert res.returncode == 0, res.stderr
    (root / "nodekeys").mkdir()
    table = make_site_table()
    table.to_csv(root / "all_sites.csv", index=False)
    for name in (*SITES, *extra_sites):
        site = root / name
        site.mkdir()
        res = cli("node-keys", "--name", name, "--out", str(site), cwd=root)
        assert res.returncode == 0, res.stderr
        if name in SITES:
            (root / "nodekeys" / f"{name}.pub").write_bytes((site / f"{name}.pub").read_bytes())
        part = table[table.site == (name if name in SITES else "north")]
        part.drop(columns=["site"]).to_csv(site / "data.csv", index=False)
        node = {"name": name, "data": "data.csv", "keys": "../keys/secret.fxk", "out_dir": "out",
                "policy": {"require_encryption": True},
                "superlink": {"address": f"127.0.0.1:{port}", "root_certificates": "../certs/ca.crt",
                              "auth_key": f"{name}.key"}}
        (site / "node.yaml").write_text(yaml.safe_dump(node))
    job = {"name": "deployed", "seed": 3, "task": "disease_risk", "model": {"kind": "logistic"},
           "data": {"source": "all_sites.csv", "split_by": "site", "target": "label"},
           "train": {"lr": 0.05, "batch_size": 64},
           "federation": {"rounds": rounds, "min_clients": 2, "timeout": 90, "eval_every": 0},
           "security": {"encryption": "bfv-compact", "keys": "keys"},
           "deployment": {"port": port, "certificates": "certs", "nodes": "nodekeys", "out_dir": "server-out",
                          "wait_seconds": 30}}
    (root / "server.yaml").write_text(yaml.safe_dump(job))
    return job


def wait_for(predicate, timeout: float, what: str, every: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def rounds_done(root: Path) -> int:
    index = root / "server-out" / "checkpoint" / "index.json"
    try:
        return len(json.loads(index.read_text())["history"])
    except (OSError, ValueError, KeyError):
        return 0


def ledger_entries(path: Path) -> list[tuple]:
    return [(e["round"], e["kind"], e["bytes"], e["sha256"])
            for e in map(json.loads, path.read_text().splitlines())]


def key_paths(doc: object, prefix: str = "") -> set[str]:
    """Every key of a JSON document, as a path (``history[].metrics.roc_auc``); list items share ``[]``."""
    if isinstance(doc, dict):
        out = set()
        for k, v in doc.items():
            out |= {f"{prefix}{k}"} | key_paths(v, f"{prefix}{k}.")
        return out
    if isinstance(doc, list):
        return set().union(*(key_paths(v, f"{prefix.rstrip('.')}[].") for v in doc)) if doc else set()
    return set()


def simulate(config: Path, out: Path, timeout: float = 900) -> dict:
    """`fedx run CONFIG --out OUT --quiet`, as a researcher would run the deployed config in simulation."""
    res = subprocess.run(fedx_cmd("run", str(config), "--out", str(out), "--quiet"), check=False, cwd=config.parent,
                         capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"})
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((out / "result.json").read_text())
