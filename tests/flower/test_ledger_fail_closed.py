"""Nothing leaves an institution unrecorded: when its audit ledger cannot be written, its reply does not leave.

The server and the institutions are fedx's real ones over an in-process transport (:class:`local_grid.LocalGrid`).
A ledger that cannot be written at ``hello`` stops the run with the institution's name and the reason; one that
fails mid-run drops that institution from the round with the reason, and the others go on.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedx.config import config_from_dict
from fedx.errors import FederationError
from fedx.flower.records import read_json
from fedx.flower.server_app import Orchestrator
from fedx.institution import LocalPolicy, NodeSpec
from fedx.privacy.audit import verify

from local_grid import LocalGrid

SITES = ("ash", "birch", "cedar")


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    rng = np.random.default_rng(3)
    folder = tmp_path_factory.mktemp("sites")
    out = {}
    for i, name in enumerate(SITES):
        n = 150 + 50 * i
        x = rng.normal(0.2 * i, 1.0, n)
        y = (rng.random(n) < 1 / (1 + np.exp(-(x - 0.2)))).astype(int)
        out[name] = folder / f"{name}.csv"
        pd.DataFrame({"x": x, "label": y}).to_csv(out[name], index=False)
    return out


def run(sites: dict[str, Path], tmp: Path, before) -> tuple[Orchestrator, LocalGrid]:
    cfg = config_from_dict({
        "name": "ledger", "seed": 2, "task": "disease_risk", "model": {"kind": "logistic"},
        "data": {"source": "unused.csv", "target": "label", "features": {"x": "numeric"}},
        "federation": {"rounds": 3, "local_epochs": 1, "min_clients": 2},
        "security": {"encryption": "none"}, "report": {"baselines": []}})
    specs = [NodeSpec(name=n, data=sites[n], out_dir=tmp / n, policy=LocalPolicy()) for n in SITES]

    def hook(name: str, phase: str, rnd: int) -> bool:
        before(name, phase, rnd, tmp / name / "ledger.jsonl")
        return False  # no node is down: only its ledger fails

    grid = LocalGrid(specs, hook)
    return Orchestrator(cfg, grid, None, tmp / "server", expected_nodes=3, resume=False, wait_seconds=1.0), grid


def _break(ledger: Path) -> None:
    """Make the ledger unwritable for any user (root included): a folder where the file should be."""
    if ledger.is_file():
        ledger.unlink()
    ledger.mkdir(parents=True, exist_ok=True)


def test_a_ledger_that_cannot_be_written_at_hello_stops_the_run(sites, tmp_path: Path) -> None:
    orch, grid = run(sites, tmp_path, lambda name, phase, rnd, ledger: _break(ledger) if name == "birch" else None)
    with pytest.raises(FederationError, match=r"'birch' refused the run \(hello\).*cannot write its audit ledger"):
        orch.run()
    reply = grid.log[("birch", "hello", 0)]
    doc = read_json(reply.content)
    assert doc["status"] == "error" and doc["error_type"] == "AuditError"
    assert "n_train" not in doc and not reply.content.array_records  # nothing of its data left with the error


def test_a_ledger_that_fails_mid_run_drops_the_institution_from_the_round(sites, tmp_path: Path) -> None:
    def before(name: str, phase: str, rnd: int, ledger: Path) -> None:
        if name == "cedar" and phase == "train" and rnd == 2:
            shutil.copy(ledger, ledger.with_name("kept.jsonl"))
            _break(ledger)
        if name == "cedar" and phase == "train" and rnd == 3:  # the folder is fixed: cedar takes part again
            ledger.rmdir()
            shutil.copy(ledger.with_name("kept.jsonl"), ledger)

    orch, grid = run(sites, tmp_path, before)
    summary = orch.run()
    history = {h["round"]: h for h in summary.history}
    assert sorted(history[1]["clients"]) == list(SITES)
    assert sorted(history[2]["clients"]) == ["ash", "birch"]
    assert "cannot write its audit ledger" in history[2]["dropped"]["cedar"]
    assert sorted(history[3]["clients"]) == list(SITES)
    sent = grid.log[("cedar", "train", 2)]
    assert read_json(sent.content)["status"] == "error" and "payload" not in sent.content.array_records
    # What cedar's ledger records is what left: round 2's train reply is not in it, and the chain verifies.
    assert verify(tmp_path / "cedar" / "ledger.jsonl").entries > 0
