"""`fedx run` of a vertical config with model.kind: gbdt: the config's rules, the run's result.json, the ledgers,
the per-party model parts loaded back by fedx.load_model, against the same engine on the joined table and
against the truth of synthetic/credit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score

import fedx.model
from fedx.cli import main
from fedx.config import config_from_dict
from fedx.data.synthetic.credit import generate_credit
from fedx.errors import ConfigError
from fedx.vertical.run_gbdt import ks_statistic, lift_table


def credit_doc(**over: object) -> dict:
    doc = {"name": "credit-small", "seed": 3, "task": "fraud",
           "model": {"kind": "gbdt", "trees": 12, "depth": 3, "learning_rate": 0.3, "bins": 16},
           "data": {"partition": "vertical", "id": "customer_id", "label_party": "bank",
                    "params": {"n_customers": 3000},
                    "parties": {"bank": {"source": "synthetic/credit", "target": "default",
                                         "features": {"debt_to_income": "numeric", "income": "numeric",
                                                      "past_delinquencies": "numeric"}},
                                "telecom": {"source": "synthetic/credit"},
                                "utility": {"source": "synthetic/credit"}},
                    "test_fraction": 0.3},
           "security": {"encryption": "none", "psi_reveal": "all"},
           "report": {"baselines": ["local", "centralized"]}}
    for key, value in over.items():
        section, _, sub = key.partition("__")
        if sub:
            doc[section] = {**doc[section], sub: value}  # type: ignore[dict-item]
        else:
            doc[key] = value
    return doc


def test_config_rules_of_a_vertical_gbdt() -> None:
    config_from_dict(credit_doc())
    with pytest.raises(ConfigError, match="security.psi_reveal: vertical gradient-boosted trees"):
        config_from_dict(credit_doc(security={"encryption": "none"}))
    with pytest.raises(ConfigError, match="task: vertical gradient-boosted trees learn"):
        config_from_dict(credit_doc(task="claim_severity"))
    with pytest.raises(ConfigError, match="security.encryption"):
        config_from_dict(credit_doc(security={"encryption": "bfv-compact", "psi_reveal": "all"}))
    glm = credit_doc(model={"kind": "glm"}, task="claim_frequency", federation={"aggregator": "newton"})
    with pytest.raises(ConfigError, match="data.parties.telecom.features: a feature party needs at least one"):
        config_from_dict(glm)


def test_run_writes_scores_lift_importance_ledgers_and_a_joint_model(tmp_path: Path, capsys) -> None:
    path = tmp_path / "credit.yaml"
    path.write_text(yaml.safe_dump(credit_doc(), sort_keys=False))
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 0
    doc = json.loads((tmp_path / "run" / "result.json").read_text())
    assert "held-out rows: ROC-AUC" in capsys.readouterr().out
    assert doc["model"]["kind"] == "gbdt" and doc["model"]["protocol"] == "secureboost"
    # every column but the id is a feature of a party without features:
    assert list(doc["parties"]["telecom"]["features"]) == ["tenure_months", "monthly_spend", "data_usage_gb",
                                                           "late_payments_12m", "prepaid", "device_changes"]
    # the plaintext protocol grows the engine's trees on the joined table
    assert doc["baselines"]["centralized"]["same_trees"] is True
    test = doc["metrics"]["test"]
    assert test["roc_auc"] == pytest.approx(doc["baselines"]["centralized"]["roc_auc"], abs=1e-12)
    # the partners' columns carry real signal (the truth uses them): the joint model beats the bank alone
    assert test["roc_auc"] > doc["baselines"]["local"]["bank"]["roc_auc"] + 0.03
    by_party = doc["model"]["importance_by_party"]
    assert set(by_party) == {"bank", "telecom", "utility"} and min(by_party.values()) > 0.05
    assert sum(d["rows"] for d in doc["lift"]["joint"]) == doc["metrics"]["test_rows"]
    for name in ("bank", "telecom", "utility"):
        assert (tmp_path / "run" / "institutions" / name / "ledger.jsonl").stat().st_size > 0
    assert main(["audit", "verify", str(tmp_path / "run" / "institutions" / "telecom" / "ledger.jsonl"),
                 "--receipts", str(tmp_path / "run" / "receipts.jsonl"), "--institution", "telecom"]) == 0
    # the joint predictor from the parts scores the same people as the truth ranks them
    joint = fedx.model.FedxEstimator.load(tmp_path / "run")
    data = generate_credit(3000, seed=3)
    shared = set(data.telecom.customer_id) & set(data.utility.customer_id)
    bank = data.bank[data.bank.customer_id.isin(shared)].set_index("customer_id")
    ids = bank.index
    tables = {"bank": bank, "telecom": data.telecom.set_index("customer_id").loc[ids],
              "utility": data.utility.set_index("customer_id").loc[ids]}
    p = joint.predict_proba(tables)[:, 1]
    truth = data.truth.set_index("customer_id").loc[ids, "logit"].to_numpy()
    assert np.corrcoef(p, 1 / (1 + np.exp(-truth)))[0, 1] > 0.7


def test_ks_and_lift_against_direct_computation() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(1000) < 0.2).astype(float)
    s = y * 0.5 + rng.random(1000)
    grid = np.unique(s)
    ks = max(abs((s[y == 1] <= t).mean() - (s[y == 0] <= t).mean()) for t in grid)
    assert ks_statistic(y, s) == pytest.approx(ks)
    table = lift_table(y, s)
    assert [r["rows"] for r in table] == [100] * 10
    top = np.argsort(-s)[:100]
    assert table[0]["event_rate"] == pytest.approx(y[top].mean())
    assert table[-1]["cumulative_capture"] == pytest.approx(1.0)
    assert roc_auc_score(y, s) > 0.5
