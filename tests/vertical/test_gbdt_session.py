"""Vertical SecureBoost message by message, as deployed parties run it (fedx.vertical.gbdt_session): passed between
sessions in one process, the parties grow the trees of `fedx run` on the same config, score the held-out rows alike
by federated prediction, each keeps only its own part of the model, and a message out of turn is refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_secureboost_run import credit_doc

from fedx.config import config_from_dict
from fedx.data.synthetic.credit import generate_credit
from fedx.errors import PSIError
from fedx.trees import GBDTParams
from fedx.vertical.gbdt_session import GBDTSession
from fedx.vertical.run import run_vertical
from fedx.vertical.secureboost import (
    SecureBoostFeatureParty,
    SecureBoostLabelParty,
    fit_secureboost,
    route,
    run_driver,
)
from fedx.vertical.secureboost_model import load_joint
from fedx.vertical.session import run_sessions
from fedx.vertical.tables import load_party_table


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return generate_credit(2_000, seed=4).tables()


def _sessions(cfg, tables, out: Path) -> dict[str, GBDTSession]:
    return {n: GBDTSession(cfg, load_party_table(cfg, n, tables[n], f"{n}.csv"), "run-1", out / n) for n in tables}


def _held_out_simulation(cfg_doc: dict, tables, scores: pd.Series, out: Path):
    """`fedx run` of the same config on the rows the deployed run trained on: the shared rows but the held-out
    ones (the hold-out is keyed by each run's own secret, so two runs hold out different rows)."""
    doc = {**cfg_doc, "data": {**cfg_doc["data"], "test_fraction": 0.0}}
    train = {n: t[~t["customer_id"].isin(scores.index)] if n == "bank" else t for n, t in tables.items()}
    run_vertical(config_from_dict(doc), out, progress=False, tables=train)
    return load_joint(out)


@pytest.mark.parametrize("encryption", ["none", "ckks"])
def test_sessions_equal_the_simulated_run(tmp_path: Path, tables, encryption: str) -> None:
    trees = 4 if encryption == "none" else 2
    cfg_doc = credit_doc(security={"encryption": encryption, "psi_reveal": "all"},
                         model={"kind": "gbdt", "trees": trees, "depth": 3, "learning_rate": 0.3, "bins": 16},
                         report={"baselines": []})
    cfg = config_from_dict(cfg_doc)
    sent: list[tuple[str, str]] = []
    done = run_sessions(_sessions(cfg, tables, tmp_path / "dep"), relay=lambda s, m: sent.append((s, m.kind)))
    assert all(s.done for s in done.values())
    doc = json.loads((tmp_path / "dep" / "bank" / "result.json").read_text())
    scores = pd.read_csv(tmp_path / "dep" / "bank" / "predictions.csv").set_index("customer_id")["score"]
    assert doc["metrics"]["test_rows"] == len(scores) > 0
    # the parts written at each party are the parts of `fedx run` on the same training rows, tree by tree
    dep = load_joint([tmp_path / "dep" / n / "model.json" for n in tables])
    ref = _held_out_simulation(cfg_doc, tables, scores, tmp_path / "sim")
    assert len(dep.trees) == len(ref.trees) == trees
    for a, b in zip(dep.trees, ref.trees):
        assert np.array_equal(a.value, b.value) and np.array_equal(a.feature, b.feature)
        assert np.array_equal(a.owner, b.owner) and np.array_equal(a.bin, b.bin)
    # the label party's held-out scores (federated prediction, message by message) are the simulated model's
    cols = {n: tables[n].set_index("customer_id") for n in tables}
    held = {n: cols[n].loc[scores.index, dep.columns(n)] for n in tables}
    np.testing.assert_allclose(scores.to_numpy(), ref.predict_proba(held)[:, 1], rtol=0, atol=1e-12)
    y = cols["bank"].loc[scores.index, "default"].to_numpy(float)
    assert doc["metrics"]["test"]["roc_auc"] == pytest.approx(roc_auc_score(y, scores.to_numpy()), abs=1e-12)
    assert doc["model"]["feature_importance"] == pytest.approx(ref.feature_importances("gain"), abs=1e-9)
    # a feature party keeps its thresholds only; no result at a feature party
    part = json.loads((tmp_path / "dep" / "telecom" / "model.json").read_text())
    assert part["role"] == "feature" and "trees" not in part and part["splits"]["splits"]
    assert not (tmp_path / "dep" / "telecom" / "result.json").exists()
    kinds = {k for _, k in sent}
    assert {"sb_describe", "sb_gradients", "sb_nodes", "sb_histograms", "sb_split", "sb_partition", "sb_route",
            "sb_routed", "sb_done"} <= kinds
    assert ("sb_public_key" in kinds) == (encryption == "ckks")


def test_a_reply_out_of_turn_is_refused(tmp_path: Path, tables) -> None:
    cfg = config_from_dict(credit_doc(model={"kind": "gbdt", "trees": 2, "depth": 2, "bins": 8},
                                      report={"baselines": []}))
    sessions = _sessions(cfg, tables, tmp_path)
    queue = [(n, m) for n, s in sessions.items() for m in s.start()]
    answered = None
    while queue:
        sender, out = queue.pop(0)
        if sender == "utility" and out.kind == "sb_histograms":
            answered = sessions["bank"]._wave  # the request this reply answers
        queue.extend((out.to, m) for m in sessions[out.to].receive(out.message))
        if answered is not None:
            break
    assert answered is not None
    # the same reply again, properly sealed by utility: whether the label party awaits nothing from utility or
    # already awaits its reply to a later request, a reply to the answered request is refused
    for meta in ({"stage": "fit", "round": 0, "wave": answered}, {"stage": "fit", "round": 0}):
        again = sessions["utility"]._channels["bank"].seal("sb_histograms", meta, b"")
        with pytest.raises(PSIError, match="unexpected 'sb_histograms' message from 'utility'"):
            sessions["bank"].receive(again)


def test_route_equals_the_joint_predictor() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 4))
    X[rng.random(X.shape) < 0.05] = np.nan
    y = (np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 2]) + rng.normal(size=400) > 0).astype(float)
    params = GBDTParams(trees=5, max_depth=3, learning_rate=0.3, max_bins=8)
    label = SecureBoostLabelParty("a", X[:, :2], ["x0", "x1"], y, params, encryption="none")
    other = SecureBoostFeatureParty("b", X[:, 2:], ["x2", "x3"], params.max_bins)
    model = fit_secureboost(label, {"b": other})
    Z = rng.normal(size=(150, 4))
    leaves = run_driver(route(model, Z[:, :2]), "a", {"b": other}, lambda s, r, k, p: p, held={"b": Z[:, 2:]})
    assert np.array_equal(leaves, model.leaves({"a": Z[:, :2], "b": Z[:, 2:]}))
