"""fedx on Flower's deployment engine through the CLI: a node dies mid-run and the server restarts from
its checkpoint. (Support: fedx_deploy_support.py.) In a file of its own so that it runs beside the other
deployment test: both spend most of their time waiting on Flower's polling.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from fedx_deploy_support import (
    SITES,
    Processes,
    build_deployment,
    rounds_done,
    wait_for,
)

from fedx.flower import deploy

pytestmark = [pytest.mark.deployment, pytest.mark.slow, pytest.mark.timeout(900)]


def test_node_dies_mid_run_and_server_restarts_from_checkpoint(tmp_path: Path, processes: Processes) -> None:
    root = tmp_path / "dep"
    build_deployment(root, rounds=3, port=deploy.free_port())
    processes.start("server", ["server", "--config", "server.yaml"], root)
    wait_for(lambda: "launched" in (root / "server.out").read_text(), 180, "the run to launch")
    for name in SITES:
        processes.start(name, ["node", "--config", "node.yaml"], root / name)

    # After round 1, one institution's node goes away: the run goes on with the two others. Round 2's
    # message may reach east and be answered in the moment between round 1's checkpoint and the kill,
    # so round 2 may or may not count east; every round after that must not.
    wait_for(lambda: rounds_done(root) >= 1, 400, "round 1", every=0.05)
    processes.kill("east")
    # After round 2, the server dies.
    wait_for(lambda: rounds_done(root) >= 2, 400, "round 2")
    processes.kill("server", signal.SIGKILL)
    history = json.loads((root / "server-out" / "checkpoint" / "index.json").read_text())["history"]
    assert set(history[0]["clients"]) == set(SITES)
    assert {"north", "south"} <= set(history[1]["clients"]) <= set(SITES)

    # Restarted, it resumes after round 2: the SuperLink's database kept the registrations, and the
    # nodes reconnect and catch up from the stored aggregates.
    server = processes.start("server2", ["server", "--config", "server.yaml"], root)
    assert server.wait(timeout=600) == 0, (root / "server2.out").read_text()[-3000:]
    result = json.loads((root / "server-out" / "result.json").read_text())
    assert [h["round"] for h in result["history"]] == [1, 2, 3]
    assert result["history"][:2] == history[:2]
    assert set(result["history"][2]["clients"]) == {"north", "south"}
    assert set(result["per_institution"]) == {"north", "south"}
