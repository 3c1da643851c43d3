"""A vertical run on Flower's deployment engine through the CLI (as in test_deploy_vertical.py) in which a party
whose node dies mid-run stops the run with an error that names it; the other parties are told and stop, and their
ledgers verify against the server's receipts. (Support: vertical_deploy_support.py, fedx_deploy_support.py.)
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fedx_deploy_support import Processes, cli, wait_for
from vertical_deploy_support import GLM_PARTIES, build_vertical, start_all

from fedx.flower import deploy

pytestmark = [pytest.mark.deployment, pytest.mark.slow, pytest.mark.timeout(900)]


def test_a_party_that_drops_out_stops_the_run_naming_it(tmp_path: Path, processes: Processes) -> None:
    root = tmp_path / "dep"
    build_vertical(root, deploy.free_port(), timeout=30)  # a hop takes seconds: 30 s unanswered is a party gone
    start_all(root, processes, GLM_PARTIES)
    # Once the fit is under way (the PSI is done at the second hospital), that hospital's node dies.
    wait_for(lambda: "PSI done" in (root / "hospital_b" / "hospital_b.out").read_text(), 400, "the PSI")
    processes.kill("hospital_b")
    t0 = time.monotonic()
    server = processes.procs["server"]
    assert server.wait(timeout=300) != 0, (root / "server-out" / "relay.log").read_text()[-3000:]
    said = (root / "server.out").read_text()
    assert "party 'hospital_b'" in said and "a vertical fit needs every party" in said, said[-3000:]
    assert time.monotonic() - t0 < 240
    # The other parties are told and stop; what they sent before is in their ledgers and the receipts.
    for name in ("insurer", "hospital_a"):
        assert processes.procs[name].wait(timeout=120) == 0, (root / name / f"{name}.out").read_text()[-2000:]
        ledger = root / name / "out" / "ledger.jsonl"
        res = cli("audit", "verify", str(ledger), "--receipts", str(root / "server-out" / "receipts.jsonl"), cwd=root)
        assert res.returncode == 0, res.stderr
    assert not (root / "server-out" / "result.json").exists()
