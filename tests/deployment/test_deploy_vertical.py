"""A vertical run on Flower's deployment engine through the CLI: an insurer and two hospitals, each a `fedx node`
with its own table, and `fedx server` relaying their messages over TLS with node authentication. The deployed fit
equals the simulated one and statsmodels on the joined table, and every party's ledger verifies against the
server's receipts. A party whose node dies mid-run: tests/deployment/test_deploy_vertical_dropout.py, in a file of
its own so that it runs beside this one. (Support: vertical_deploy_support.py, fedx_deploy_support.py.)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from fedx_deploy_support import Processes, cli, simulate
from vertical_deploy_support import FEATURES, GLM_PARTIES, build_vertical, start_all

from fedx.flower import deploy

pytestmark = [pytest.mark.deployment, pytest.mark.slow, pytest.mark.timeout(900)]

PARTIES = GLM_PARTIES


def joined_fit(tables: dict[str, pd.DataFrame]):
    joined = tables["insurer"].merge(tables["hospital_a"], on="person_id").merge(tables["hospital_b"], on="person_id")
    cols = {}
    for party in PARTIES:
        for col, kind in FEATURES[party].items():
            if kind == "numeric":
                cols[f"{party}:{col}"] = joined[col].to_numpy(float)
            else:
                for level in sorted(set(joined[col].astype(str)))[1:]:
                    cols[f"{party}:{col}[T.{level}]"] = (joined[col].astype(str) == level).to_numpy(float)
    X = pd.DataFrame(cols)
    X.insert(0, "Intercept", 1.0)
    return sm.GLM(joined["claims"].to_numpy(float), X, family=sm.families.Poisson(),
                  exposure=joined["exposure"].to_numpy(float)).fit(tol=1e-12)


def test_three_parties_over_tls_equal_simulation_and_statsmodels(tmp_path: Path, processes: Processes) -> None:
    root = tmp_path / "dep"
    tables = build_vertical(root, deploy.free_port())
    t0 = time.monotonic()
    start_all(root, processes, PARTIES)
    assert processes.procs["server"].wait(timeout=800) == 0, (root / "server.out").read_text()[-3000:]
    seconds = time.monotonic() - t0
    for name in PARTIES:
        assert processes.procs[name].wait(timeout=120) == 0, (root / name / f"{name}.out").read_text()[-2000:]

    # The label party holds the model; the relay's result holds only what a relay sees.
    result = json.loads((root / "insurer" / "out" / "result.json").read_text())
    relay = json.loads((root / "server-out" / "result.json").read_text())
    assert relay["role"] == "relay" and set(relay["parties"]) == set(PARTIES) and "coefficients" not in str(relay)
    assert (root / "insurer" / "out" / "pricing_table.csv").exists()
    for name in ("hospital_a", "hospital_b"):
        assert not (root / name / "out" / "result.json").exists()

    # The same config in simulation (`fedx run`): the same coefficients; and statsmodels on the joined table.
    # Each run draws fresh CKKS encryption noise, so the two fits agree to the noise of the decrypted totals
    # (measured 5e-10 relative on the intercept), not bit for bit: compare relatively, well inside the 1e-6
    # that both keep to statsmodels.
    sim = simulate(root / "server.yaml", tmp_path / "sim")
    got = {c["name"]: c for c in result["model"]["coefficients"]}
    want = {c["name"]: c for c in sim["model"]["coefficients"]}
    assert list(got) == list(want)
    np.testing.assert_allclose([got[k]["estimate"] for k in want], [want[k]["estimate"] for k in want],
                               rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose([got[k]["std_error"] for k in want], [want[k]["std_error"] for k in want], rtol=1e-8)
    ref = joined_fit(tables)
    assert list(got) == list(ref.params.index)
    np.testing.assert_allclose([got[k]["estimate"] for k in got], ref.params.to_numpy(), rtol=1e-6)
    np.testing.assert_allclose([got[k]["std_error"] for k in got], ref.bse.to_numpy(), rtol=1e-6)
    assert result["metrics"]["deviance"] == pytest.approx(ref.deviance, rel=1e-6)
    assert result["psi"]["shared"] == sim["psi"]["shared"] == int(ref.nobs)

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
        assert "psi-hello" in kinds and "glm-hello" in kinds
        assert ({"psi-blinded", "psi-result", "glm-setup", "glm-round"} if name == "insurer" else
                {"psi-spec", "psi-reply", "glm-columns", "glm-round_reply"}) <= kinds, kinds
    print(f"deployed vertical run: {seconds:.1f} s, {relay['waves']} waves")
