"""End-to-end runs on Flower's simulation engine (3 institutions, 2 rounds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import fedx
from fedx.config import config_from_dict
from fedx.model import FedxModel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plain_run(small_csv: Path, small_config, tmp_path_factory: pytest.TempPathFactory) -> fedx.RunResult:
    cfg = config_from_dict(small_config(small_csv))
    return fedx.run(cfg, tmp_path_factory.mktemp("plain"), progress=False)


@pytest.fixture(scope="module")
def encrypted_run(small_csv: Path, small_config, tmp_path_factory: pytest.TempPathFactory) -> fedx.RunResult:
    cfg = config_from_dict(small_config(small_csv, security={"encryption": "bfv-compact"}))
    return fedx.run(cfg, tmp_path_factory.mktemp("enc"), progress=False)


def test_run_leaves_valid_result_json_and_plots(plain_run: fedx.RunResult) -> None:
    out = plain_run.out_dir
    doc = json.loads((out / "result.json").read_text())
    for key in ("config", "metrics", "per_institution", "baselines", "model", "privacy", "history"):
        assert key in doc, key
    assert set(doc["per_institution"]) == {"north", "south", "east"}
    assert [h["round"] for h in doc["history"]] == [1, 2]
    for h in doc["history"]:
        assert h["bytes_up"] > 0 and h["bytes_down"] > 0 and h["seconds"] > 0
        assert 0.5 < h["metrics"]["roc_auc"] <= 1.0
    assert set(doc["baselines"]["local"]) == {"north", "south", "east"}
    assert 0.5 < doc["baselines"]["centralized"]["roc_auc"] <= 1.0
    assert doc["config"]["federation"]["rounds"] == 2
    # Combined metrics are those of the pooled test rows: n adds up.
    assert doc["metrics"]["n"] == sum(m["n"] for m in doc["per_institution"].values())
    for png in ("rounds.png", "institutions.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert (out / "history.csv").read_text().startswith("round,")
    # Each institution keeps its model and an audit ledger that verifies, and matches the server's receipts.
    from fedx.privacy.audit import verify, verify_receipts

    for name in ("north", "south", "east"):
        assert (out / "institutions" / name / "model.pt").exists()
        ledger = out / "institutions" / name / "ledger.jsonl"
        assert verify(ledger).entries > 5
        anchored = verify_receipts(ledger, out / "receipts.jsonl")
        assert anchored.institution == name
        assert (anchored.receipted, anchored.unreceipted) == (anchored.ledger.entries, ())


def test_encrypted_run_ends_with_the_plaintext_model(plain_run: fedx.RunResult, encrypted_run: fedx.RunResult) -> None:
    for name in ("north", "south", "east"):
        a = FedxModel.load(plain_run.out_dir / "institutions" / name / "model.pt")
        b = FedxModel.load(encrypted_run.out_dir / "institutions" / name / "model.pt")
        for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
            # bfv-compact quantizes deltas to 16 bits of the clip range: a few 1e-5 per round.
            np.testing.assert_allclose(pa.numpy(), pb.numpy(), atol=2e-4)
    assert abs(plain_run.metrics["roc_auc"] - encrypted_run.metrics["roc_auc"]) < 2e-3
    assert encrypted_run.privacy["encryption"] == "bfv-compact"
    # Every institution decrypted the same aggregates: their models are identical.
    models = [FedxModel.load(encrypted_run.out_dir / "institutions" / n / "model.pt") for n in ("north", "south", "east")]
    for m in models[1:]:
        for p0, p1 in zip(models[0].state_dict().values(), m.state_dict().values()):
            assert torch.equal(p0, p1)


def test_fedavg_one_full_batch_step_equals_one_centralized_step(small_csv: Path, small_config, tmp_path: Path) -> None:
    """Through the whole federation: FedAvg of one full-batch SGD step = one pooled gradient step."""
    cfg = config_from_dict(small_config(small_csv, train={"optimizer": "sgd", "full_batch": True, "lr": 0.5,
                                                           "pos_weight": 1.0},
                                        federation={"rounds": 1}, report={"baselines": []}))
    result = fedx.run(cfg, tmp_path / "run", progress=False)
    fed = FedxModel.load(result.out_dir / "institutions" / "north" / "model.pt")

    from fedx.data.institutions import institution_tables
    from fedx.data.local import local_split
    from fedx.tasks import TabularData, TrainOptions, get_task

    task = get_task("disease_risk")
    tables = institution_tables(cfg)
    train = pd.concat([local_split(df, cfg, name, task)[0] for name, df in tables.items()], ignore_index=True)
    prep = fed.preprocessor                  # fitted from summed moments = the pooled rows' moments
    model = task.build_model(len(prep.feature_names), {"kind": "logistic"}, seed=cfg.seed)
    task.train(model, TabularData.from_frame(cfg, prep, train),
               TrainOptions(epochs=1, optimizer="sgd", full_batch=True, lr=0.5, pos_weight=1.0))
    moved = False
    for p_fed, p_central in zip(fed.net.state_dict().values(), model.state_dict().values()):
        np.testing.assert_allclose(p_fed.numpy(), p_central.numpy(), rtol=1e-6, atol=1e-6)
        moved |= bool(np.abs(p_central.numpy()).max() > 1e-3)   # the step moved the weights from zero
    assert moved
