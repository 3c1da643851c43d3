"""fedx on Flower's deployment engine through the CLI: three institutions, encrypted, TLS, node
authentication, audit ledgers, an unregistered node refused, and the nodes ending with their run. (Support: fedx_deploy_support.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fedx_deploy_support import (
    SITES,
    Processes,
    build_deployment,
    cli,
    key_paths,
    ledger_entries,
    simulate,
    wait_for,
)

from fedx.flower import deploy

pytestmark = [pytest.mark.deployment, pytest.mark.slow, pytest.mark.timeout(900)]


def test_three_institutions_encrypted_tls_auth_audit_and_unregistered_node(tmp_path: Path,
                                                                          processes: Processes) -> None:
    root = tmp_path / "dep"
    build_deployment(root, rounds=2, port=deploy.free_port(), extra_sites=("rogue",))
    server = processes.start("server", ["server", "--config", "server.yaml"], root)
    wait_for(lambda: "launched" in (root / "server.out").read_text(), 180, "the run to launch")
    for name in SITES:
        processes.start(name, ["node", "--config", "node.yaml"], root / name)
    rogue = processes.start("rogue", ["node", "--config", "node.yaml", "--once"], root / "rogue")

    # A node whose key the server never registered is refused.
    assert rogue.wait(timeout=90) == 2
    assert "refused this node's key" in (root / "rogue" / "rogue.out").read_text()

    assert server.wait(timeout=600) == 0, (root / "server.out").read_text()[-3000:]
    # While it waited, the server said who had connected; each node stops once its run has ended, rather
    # than redialling the server's address; the log files hold plain text.
    assert "institutions connected: 3/3" in (root / "server.out").read_text()
    for name in SITES:
        said = root / name / f"{name}.out"
        assert processes.procs[name].wait(timeout=120) == 0, said.read_text()[-2000:]
        assert "has ended; this node stops" in said.read_text()
    for log in [root / "server-out" / "superlink.log", *(root / name / "out" / "supernode.log" for name in SITES)]:
        assert "\x1b[" not in log.read_text(), log
    result = json.loads((root / "server-out" / "result.json").read_text())
    assert [h["round"] for h in result["history"]] == [1, 2]
    assert set(result["per_institution"]) == set(SITES)
    assert 0.6 < result["metrics"]["roc_auc"] <= 1.0

    # The same job in simulation (`fedx run`), same seed and data: the same model, bit for bit up to float32
    # rounding, and a result.json written by the same writer: the same keys at every depth, the same privacy.
    from fedx.model import FedxModel

    sim = simulate(root / "server.yaml", tmp_path / "sim")
    for name in SITES:
        deployed = FedxModel.load(root / name / "out" / "model.pt")
        simulated = FedxModel.load(tmp_path / "sim" / "institutions" / name / "model.pt")
        for a, b in zip(deployed.state_dict().values(), simulated.state_dict().values()):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-6)
    assert sim["metrics"]["roc_auc"] == pytest.approx(result["metrics"]["roc_auc"], abs=1e-6)
    assert key_paths(result) == key_paths(sim), key_paths(result) ^ key_paths(sim)
    assert result["primary_metric"] == sim["primary_metric"] == "roc_auc"
    # The preset's bytes per parameter are measured on random ciphertexts, so they vary by a few bytes.
    deployed_bytes, sim_bytes = result["privacy"]["preset"].pop("bytes_per_param"), sim["privacy"]["preset"].pop(
        "bytes_per_param")
    assert result["privacy"] == sim["privacy"] and result["privacy"]["preset"]["name"] == "bfv-compact"
    assert deployed_bytes == pytest.approx(sim_bytes, rel=0.05)

    # Every institution's ledger verifies, and accounts for exactly what the server received from it.
    receipts = [json.loads(line) for line in (root / "server-out" / "receipts.jsonl").read_text().splitlines()]
    for name in SITES:
        ledger = root / name / "out" / "ledger.jsonl"
        res = cli("audit", "verify", str(ledger), "--receipts", str(root / "server-out" / "receipts.jsonl"), cwd=root)
        assert res.returncode == 0, res.stderr
        assert f"for {name}: " in res.stdout and "not receipted" not in res.stdout
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
    # Its last entry removed, the chain still holds, but the server's receipts show it.
    tampered.write_text("\n".join(ledger.read_text().splitlines()[:-1]) + "\n")
    res = cli("audit", "verify", str(tampered), "--receipts", str(root / "server-out" / "receipts.jsonl"), cwd=root)
    assert res.returncode == 2 and f"entry {len(lines)} is missing" in res.stderr, res.stderr
