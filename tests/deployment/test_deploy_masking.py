"""A deployment with ``security.masking: pairwise``: real SuperLink and SuperNodes on 127.0.0.1 over TLS with
node authentication, four institutions, one node killed by PID mid-run. The masked rounds go on with the
survivors, and every masked sum still decrypts at the institutions. (Support: fedx_deploy_support.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from fedx_deploy_support import Processes, build_deployment, rounds_done, wait_for

from fedx.flower import deploy

pytestmark = [pytest.mark.deployment, pytest.mark.slow, pytest.mark.timeout(2400)]


def test_masked_deployment_survives_a_node_killed_mid_run(tmp_path: Path, processes: Processes) -> None:
    root = tmp_path / "dep"
    build_deployment(root, rounds=2, port=deploy.free_port(), extra_sites=("west",))
    (root / "nodekeys" / "west.pub").write_bytes((root / "west" / "west.pub").read_bytes())
    job = yaml.safe_load((root / "server.yaml").read_text())
    job["security"]["masking"] = "pairwise"
    job["federation"]["min_clients"] = 3
    (root / "server.yaml").write_text(yaml.safe_dump(job))
    server = processes.start("server", ["server", "--config", "server.yaml"], root)
    wait_for(lambda: "launched" in (root / "server.out").read_text(), 180, "the run to launch")
    for name in ("east", "north", "south", "west"):
        processes.start(name, ["node", "--config", "node.yaml"], root / name)

    wait_for(lambda: rounds_done(root) >= 1, 900, "round 1")
    processes.kill("west")  # mid-run: the server is already in round 2's masking steps, or about to be
    assert server.wait(timeout=900) == 0, (root / "server.out").read_text()[-3000:]
    result = json.loads((root / "server-out" / "result.json").read_text())
    history = result["history"]
    assert [h["round"] for h in history] == [1, 2]
    assert set(history[0]["clients"]) == {"east", "north", "south", "west"}
    assert set(history[1]["clients"]) == {"east", "north", "south"}
    assert all(h["masking_bytes"]["up"] > 0 for h in history)
    assert set(result["per_institution"]) == {"east", "north", "south"}
    assert result["metrics"]["roc_auc"] > 0.7
    # Each institution pinned the others' identity keys, and its ledger recorded the masking messages.
    pins = json.loads((root / "north" / "out" / "identity-pins.json").read_text())
    assert set(pins) == {"east", "north", "south", "west"}
    kinds = {json.loads(line)["kind"] for line in (root / "north" / "out" / "ledger.jsonl").read_text().splitlines()}
    assert {"mask-keys", "mask-shares", "mask-unmask"} <= kinds
