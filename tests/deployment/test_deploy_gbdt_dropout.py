"""Vertical SecureBoost on Flower's deployment engine through the CLI (as in test_deploy_gbdt.py) in which a party
whose node dies mid-run stops the run with an error that names it; the other parties are told and stop, and their
ledgers verify against the server's receipts. (Support: vertical_deploy_support.py, fedx_deploy_support.py.)
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fedx_deploy_support import Processes, cli, wait_for
from vertical_deploy_support import SB_PARTIES, build_secureboost, start_all

from fedx.flower import deploy

pytestmark = [pytest.mark.deployment, pytest.mark.slow, pytest.mark.timeout(900)]


def test_a_party_that_drops_out_stops_the_run_naming_it(tmp_path: Path, processes: Processes) -> None:
    root = tmp_path / "dep"
    build_secureboost(root, deploy.free_port(), timeout=30)
    start_all(root, processes, SB_PARTIES)
    # Once the trees are under way (the bank has every partner's columns), the utility's node dies.
    wait_for(lambda: "secureboost on" in (root / "bank" / "bank.out").read_text(), 400, "the trees to start")
    processes.kill("utility")
    t0 = time.monotonic()
    assert processes.procs["server"].wait(timeout=300) != 0, (root / "server-out" / "relay.log").read_text()[-3000:]
    said = (root / "server.out").read_text()
    assert "party 'utility'" in said and "a vertical fit needs every party" in said, said[-3000:]
    assert time.monotonic() - t0 < 240
    for name in ("bank", "telecom"):
        assert processes.procs[name].wait(timeout=120) == 0, (root / name / f"{name}.out").read_text()[-2000:]
        res = cli("audit", "verify", str(root / name / "out" / "ledger.jsonl"), "--receipts",
                  str(root / "server-out" / "receipts.jsonl"), cwd=root)
        assert res.returncode == 0, res.stderr
    assert not (root / "server-out" / "result.json").exists()
    assert not (root / "bank" / "out" / "result.json").exists()
