"""Vertical SecureBoost on Flower's deployment engine through the CLI: a bank, a telecom operator and a utility,
each a `fedx node` with its own table, and `fedx server` relaying their sealed messages over TLS with node
authentication. The trees grown in deployment are those of `fedx run` on the same training rows, the held-out rows
are scored by federated prediction as the simulated model scores them, each party keeps only its own part of the
model, and every ledger verifies against the server's receipts. A party whose node dies mid-run:
tests/deployment/test_deploy_gbdt_dropout.py, in a file of its own so that it runs beside this one. (Support:
vertical_deploy_support.py, fedx_deploy_support.py.)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fedx_deploy_support import Processes, cli, simulate
from sklearn.metrics import roc_auc_score
from vertical_deploy_support import SB_PARTIES, build_secureboost, start_all

from fedx.flower import deploy
from fedx.vertical.secureboost_model import load_joint

pytestmark = [pytest.mark.deployment, pytest.mark.slow, pytest.mark.timeout(900)]

PARTIES = SB_PARTIES


def test_three_parties_over_tls_grow_the_simulated_trees(tmp_path: Path, processes: Processes) -> None:
    root = tmp_path / "dep"
    tables = build_secureboost(root, deploy.free_port())
    t0 = time.monotonic()
    start_all(root, processes, PARTIES)
    assert processes.procs["server"].wait(timeout=800) == 0, (root / "server.out").read_text()[-3000:]
    seconds = time.monotonic() - t0
    for name in PARTIES:
        assert processes.procs[name].wait(timeout=120) == 0, (root / name / f"{name}.out").read_text()[-2000:]

    # The label party holds the trees and the result; each partner only its own thresholds; the relay neither.
    result = json.loads((root / "bank" / "out" / "result.json").read_text())
    relay = json.loads((root / "server-out" / "result.json").read_text())
    assert relay["role"] == "relay" and set(relay["parties"]) == set(PARTIES)
    assert not {"metrics", "trees", "feature_importance", "splits"} & set(relay)
    assert result["model"]["kind"] == "gbdt" and result["model"]["trees"] == 2
    for name in ("telecom", "utility"):
        part = json.loads((root / name / "out" / "model.json").read_text())
        assert part["role"] == "feature" and part["party"] == name and "trees" not in part
        assert not (root / name / "out" / "result.json").exists()

    # `fedx run` of the same config on the rows the deployed run trained on (its hold-out is keyed by the run's
    # own secret): the same trees, and the same scores of the held-out rows, from the parts of either run.
    scores = pd.read_csv(root / "bank" / "out" / "predictions.csv").set_index("customer_id")["score"]
    assert len(scores) == result["metrics"]["test_rows"] > 0
    bank = tables["bank"]
    bank[~bank["customer_id"].isin(scores.index)].to_csv(root / "bank_train.csv", index=False)
    job = yaml.safe_load((root / "server.yaml").read_text())
    job["data"]["test_fraction"] = 0.0
    job["data"]["parties"]["bank"]["source"] = "bank_train.csv"
    (root / "sim.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
    simulate(root / "sim.yaml", tmp_path / "sim")
    dep = load_joint([root / name / "out" / "model.json" for name in PARTIES])
    ref = load_joint(tmp_path / "sim")
    for a, b in zip(dep.trees, ref.trees, strict=True):
        for key in ("owner", "feature", "bin", "default_left", "left", "right", "value"):
            assert np.array_equal(getattr(a, key), getattr(b, key)), key
    cols = {n: tables[n].set_index("customer_id") for n in PARTIES}
    held = {n: cols[n].loc[scores.index, dep.columns(n)] for n in PARTIES}
    np.testing.assert_allclose(scores.to_numpy(), ref.predict_proba(held)[:, 1], rtol=0, atol=1e-9)
    np.testing.assert_allclose(dep.predict_proba(held)[:, 1], scores.to_numpy(), rtol=0, atol=1e-9)
    y = cols["bank"].loc[scores.index, "default"].to_numpy(float)
    assert result["metrics"]["test"]["roc_auc"] == pytest.approx(roc_auc_score(y, scores.to_numpy()), abs=1e-12)

    # Every party's ledger verifies against the server's receipts, and holds exactly what the server received.
    receipts = [json.loads(line) for line in (root / "server-out" / "receipts.jsonl").read_text().splitlines()]
    for name in PARTIES:
        ledger = root / name / "out" / "ledger.jsonl"
        res = cli("audit", "verify", str(ledger), "--receipts", str(root / "server-out" / "receipts.jsonl"), cwd=root)
        assert res.returncode == 0, res.stderr
        assert "not receipted" not in res.stdout
        entries = [json.loads(line) for line in ledger.read_text().splitlines()]
        assert sorted((e["kind"], e["sha256"]) for e in entries) == sorted(
            (r["kind"], r["sha256"]) for r in receipts if r["checks"]["institution"] == name)
        kinds = {e["kind"] for e in entries}
        assert ({"psi-blinded", "sb_gradients", "sb_nodes", "sb_split", "sb_done"} if name == "bank" else
                {"psi-reply", "sb_describe", "sb_histograms"}) <= kinds, kinds
        if name != "bank":   # a partner answers partition requests only if it owns a split
            owns = bool(json.loads((root / name / "out" / "model.json").read_text())["splits"]["splits"])
            assert ("sb_partition" in kinds) == owns, kinds
    print(f"deployed vertical secureboost: {seconds:.1f} s, {relay['waves']} waves")
