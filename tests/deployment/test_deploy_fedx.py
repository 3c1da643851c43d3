"""fedx on Flower's deployment engine, driven through the CLI as operators would: `fedx certs`, `fedx keygen`,
`fedx node-keys`, `fedx server` and one `fedx node` per institution, on 127.0.0.1 with TLS and SuperNode
authentication. Every process is started here and stopped here, by PID.
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

pytestmark = [pytest.mark.deployment, pytest.mark.slow, pytest.mark.timeout(900)]

SITES = ("east", "north", "south")


def fedx_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedx.cli", *args]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(fedx_cmd(*args), cwd=cwd, capture_output=True, text=True, timeout=120)


class Processes:
    """Background `fedx server` / `fedx node` processes, each the leader of its own session."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pids: set[int] = set()

    def start(self, name: str, args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
        log = open(cwd / f"{name}.out", "ab")
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


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1.0)
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


def test_three_institutions_encrypted_tls_auth_audit_and_unregistered_node(tmp_path: Path,
                                                                          processes: Processes) -> None:
    root = tmp_path / "dep"
    build_deployment(root, rounds=2, port=deploy.free_port(), extra_sites=("rogue",))
    server = processes.start("server", ["server", "--config", "server.yaml"], root)
    wait_for(lambda: "launched" in (root / "server.out").read_text(), 60, "the run to launch")
    for name in SITES:
        processes.start(name, ["node", "--config", "node.yaml"], root / name)
    rogue = processes.start("rogue", ["node", "--config", "node.yaml", "--once"], root / "rogue")

    # A node whose key the server never registered is refused.
    assert rogue.wait(timeout=90) == 2
    assert "refused this node's key" in (root / "rogue" / "rogue.out").read_text()

    assert server.wait(timeout=600) == 0, (root / "server.out").read_text()[-3000:]
    result = json.loads((root / "server-out" / "result.json").read_text())
    assert [h["round"] for h in result["history"]] == [1, 2]
    assert set(result["per_institution"]) == set(SITES)
    assert 0.6 < result["metrics"]["roc_auc"] <= 1.0

    # The same job in simulation, same seed and data: the same model, bit for bit up to float32 rounding.
    import fedx
    from fedx.config import load_config
    from fedx.model import FedxModel

    sim = fedx.run(load_config(root / "server.yaml"), tmp_path / "sim", progress=False)
    for name in SITES:
        deployed = FedxModel.load(root / name / "out" / "model.pt")
        simulated = FedxModel.load(sim.out_dir / "institutions" / name / "model.pt")
        for a, b in zip(deployed.state_dict().values(), simulated.state_dict().values()):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-6)
    assert sim.metrics["roc_auc"] == pytest.approx(result["metrics"]["roc_auc"], abs=1e-6)

    # Every institution's ledger verifies, and accounts for exactly what the server received from it.
    receipts = [json.loads(line) for line in (root / "server-out" / "receipts.jsonl").read_text().splitlines()]
    for name in SITES:
        ledger = root / name / "out" / "ledger.jsonl"
        res = cli("audit", "verify", str(ledger), cwd=root)
        assert res.returncode == 0, res.stderr
        got = sorted(ledger_entries(ledger))
        want = sorted((r["round"], r["kind"], r["bytes"], r["sha256"]) for r in receipts
                      if r["checks"]["institution"] == name)
        assert got == want and len(got) >= 7
        summary = json.loads(cli("audit", "summary", str(ledger), cwd=root).stdout)
        assert summary["bytes"] == sum(e[2] for e in got)
        assert summary["by_kind"]["train"]["messages"] == 2

    # A tampered ledger fails verification.
    ledger = root / "east" / "out" / "ledger.jsonl"
    lines = ledger.read_text().splitlines()
    entry = json.loads(lines[3])
    entry["bytes"] += 1
    lines[3] = json.dumps(entry, sort_keys=True, separators=(",", ":"))
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(lines) + "\n")
    res = cli("audit", "verify", str(tampered), cwd=root)
    assert res.returncode == 2 and ":4:" in res.stderr and "hash" in res.stderr


def test_node_dies_mid_run_and_server_restarts_from_checkpoint(tmp_path: Path, processes: Processes) -> None:
    root = tmp_path / "dep"
    build_deployment(root, rounds=3, port=deploy.free_port())
    processes.start("server", ["server", "--config", "server.yaml"], root)
    wait_for(lambda: "launched" in (root / "server.out").read_text(), 60, "the run to launch")
    for name in SITES:
        processes.start(name, ["node", "--config", "node.yaml"], root / name)

    # After round 1, one institution's node goes away: the run goes on with the two others.
    wait_for(lambda: rounds_done(root) >= 1, 400, "round 1")
    processes.kill("east")
    # After round 2, the server dies.
    wait_for(lambda: rounds_done(root) >= 2, 400, "round 2")
    processes.kill("server", signal.SIGKILL)
    history = json.loads((root / "server-out" / "checkpoint" / "index.json").read_text())["history"]
    assert "east" not in history[1]["clients"]

    # Restarted, it resumes after round 2: the SuperLink's database kept the registrations, and the
    # nodes reconnect and catch up from the stored aggregates.
    server = processes.start("server2", ["server", "--config", "server.yaml"], root)
    assert server.wait(timeout=600) == 0, (root / "server2.out").read_text()[-3000:]
    result = json.loads((root / "server-out" / "result.json").read_text())
    assert [h["round"] for h in result["history"]] == [1, 2, 3]
    assert result["history"][:2] == history[:2]
    assert set(result["history"][2]["clients"]) == {"north", "south"}
    assert set(result["per_institution"]) == {"north", "south"}
