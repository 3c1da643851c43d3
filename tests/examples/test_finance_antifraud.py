"""The anti-fraud example as shipped (examples/finance_antifraud/fedx.yaml), run end to end.

Checks from result.json, with the config as shipped:

- the federated model reaches at least 97% of the pooled model's AUPRC;
- every bank's federated model beats that bank's local-only model in AUPRC on its own test split
  (and so do all banks' test splits together);
- the encrypted run's AUPRC is within 0.005 of the same run in plaintext.

Measured as shipped: ratio 0.983, the smallest per-bank gain 0.036 (bank_d), |encrypted - plaintext|
0.0006.

Then the example's table script turns the results into its table and plot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fedx

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "finance_antifraud"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("antifraud")
    cfg = fedx.load_config(EXAMPLE / "fedx.yaml")
    assert cfg.security.encryption == "bfv-compact", "the example ships with encryption on"
    fedx.run(cfg, out / "encrypted", progress=False)
    plain = fedx.load_config(EXAMPLE / "fedx.yaml",
                             overrides={"security.encryption": "none", "security.masking": "none",
                                        "report.baselines": []})
    fedx.run(plain, out / "plain", progress=False)
    return {"encrypted": out / "encrypted", "plain": out / "plain"}


def _result(path: Path) -> dict:
    return json.loads((path / "result.json").read_text())


def test_the_examples_promises_hold(runs: dict[str, Path]) -> None:
    r, p = _result(runs["encrypted"]), _result(runs["plain"])
    fed, central = r["metrics"]["auprc"], r["baselines"]["centralized"]["auprc"]
    print(f"\nfederated (encrypted) AUPRC {fed:.4f}, plaintext {p['metrics']['auprc']:.4f}, pooled {central:.4f}, "
          f"ratio {fed / central:.3f}")
    for bank, row in sorted(r["comparison"].items()):
        print(f"  {bank}: local {row['local']['auprc']:.3f}  federated {row['federated']['auprc']:.3f}  "
              f"pooled {row['centralized']['auprc']:.3f}")
    assert fed >= 0.97 * central
    assert fed > r["baselines"]["local_combined"]["auprc"]
    losers = [b for b, row in r["comparison"].items() if not row["federated"]["auprc"] > row["local"]["auprc"]]
    assert len(r["comparison"]) == 5 and not losers, f"federated does not beat local-only at {losers}"
    assert abs(fed - p["metrics"]["auprc"]) <= 0.005
    assert r["privacy"]["encryption"] == "bfv-compact" and p["privacy"]["encryption"] == "none"


def test_table_and_plot_are_generated_from_the_results(runs: dict[str, Path]) -> None:
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run([sys.executable, str(EXAMPLE / "make_table.py"), str(runs["encrypted"]),
                           "--plain", str(runs["plain"])], check=False, capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    table = (runs["encrypted"] / "table.md").read_text()
    r = _result(runs["encrypted"])
    for bank, row in r["comparison"].items():
        assert f"| {bank} |" in table
        assert f"{row['federated']['auprc']:.3f}" in table
    assert "✅ federated AUPRC" in table
    assert (runs["encrypted"] / "per_bank.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def gbdt_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """gbdt.yaml as shipped but with few small trees (the 400-tree run is the README's and the benchmark's)."""
    out = tmp_path_factory.mktemp("antifraud-gbdt") / "gbdt"
    cfg = fedx.load_config(EXAMPLE / "gbdt.yaml", overrides={"model.trees": 5, "model.depth": 3, "model.bins": 64})
    assert cfg.security.encryption == "bfv-compact" and cfg.model.kind == "gbdt"
    fedx.run(cfg, out, progress=False)
    return out


def test_gbdt_table_compares_trees_and_mlp_from_the_results(runs: dict[str, Path], gbdt_run: Path) -> None:
    g = _result(gbdt_run)
    assert g["metrics"]["auprc"] == pytest.approx(g["baselines"]["centralized"]["auprc"], abs=1e-12)
    done = subprocess.run([sys.executable, str(EXAMPLE / "make_gbdt_table.py"), str(runs["encrypted"]), str(gbdt_run)],
                          check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    m = _result(runs["encrypted"])
    lines: dict[str, str] = {}
    for line in done.stdout.splitlines():
        if line.startswith("| bank_"):
            lines.setdefault(line.split("|")[1].strip(), line)   # the first table (AUPRC)
    for bank in g["comparison"]:
        cells = [c.strip() for c in lines[bank].split("|")[2:8]]   # the first (AUPRC) table's row of the bank
        assert cells[1] == f"{m['comparison'][bank]['federated']['auprc']:.3f}"
        assert cells[4] == f"{g['comparison'][bank]['federated']['auprc']:.3f}"
        assert cells[3] == f"{g['comparison'][bank]['local']['auprc']:.3f}"
