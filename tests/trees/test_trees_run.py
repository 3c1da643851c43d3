"""``fedx run`` of a horizontal gbdt config: result.json, the saved models, exactness against the pooled engine, resume.

Small on purpose (a few trees of depth 3 on a few thousand rows): the full anti-fraud run is the example's and
the benchmark's (benchmarks/gbdt_bench.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fedx
from fedx.errors import ConfigError
from fedx.tasks import get_task
from fedx.trees import fit_pooled
from fedx.trees.run import gbdt_params
from fedx.trees.saved import SavedGBDT

from trees_support import classification, counts

BANKS = ("north", "south", "west")


def _table(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    X, y = classification(n, seed=seed, missing=0.05)
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    df["channel"] = np.random.default_rng(seed).choice(["web", "pos", "atm"], n)
    df["bank"] = np.array(BANKS)[np.random.default_rng(seed + 1).integers(0, len(BANKS), n)]
    df["is_fraud"] = y.astype(int)
    return df


def _config(**model: object) -> dict:
    return {"name": "trees", "task": "fraud", "seed": 3,
            "model": {"kind": "gbdt", "trees": 3, "depth": 3, "learning_rate": 0.3, "bins": 32, **model},
            "data": {"target": "is_fraud", "split_by": "bank", "test_fraction": 0.3,
                     "features": {**{f"x{i}": "numeric" for i in range(6)}, "channel": "categorical"}},
            "federation": {"min_clients": 2}, "security": {"encryption": "none"},
            "report": {"baselines": [], "plots": False}}


@pytest.fixture(scope="module")
def encrypted_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    df = _table()
    cfg = _config()
    cfg["security"] = {"encryption": "bfv-compact"}
    cfg["report"] = {"baselines": ["local", "centralized"], "plots": False}
    out = tmp_path_factory.mktemp("gbdt") / "run"
    fedx.run(cfg, out, tables=df, progress=False)
    return out, df


def test_result_json_has_the_sections_of_every_run(encrypted_run: tuple[Path, pd.DataFrame]) -> None:
    out, _ = encrypted_run
    r = json.loads((out / "result.json").read_text())
    assert r["model"]["kind"] == "gbdt" and r["model"]["trees"] == 3 and r["privacy"]["encryption"] == "bfv-compact"
    assert sorted(r["per_institution"]) == sorted(BANKS) and sorted(r["baselines"]["local"]) == sorted(BANKS)
    assert [h["tree"] for h in r["history"]] == [1, 2, 3] and all(h["bytes_up"] > 0 for h in r["history"])
    # Three levels per tree, one message per institution each: the ledger of every bank holds them.
    ledger = [json.loads(line) for line in (out / "institutions" / "north" / "ledger.jsonl").read_text().splitlines()]
    levels = [e for e in ledger if e["kind"].startswith("gbdt-level")]
    assert [e["round"] for e in levels] == [1, 1, 1, 2, 2, 2, 3, 3, 3] and all(e["checks"]["encrypted"] for e in ledger)
    # The federated trees are the pooled engine's: the same metrics as the centralized baseline.
    assert r["metrics"]["auprc"] == pytest.approx(r["baselines"]["centralized"]["auprc"], abs=1e-12)
    for bank in BANKS:
        assert r["comparison"][bank]["federated"]["auprc"] == pytest.approx(
            r["comparison"][bank]["centralized"]["auprc"], abs=1e-12)


def test_encrypted_federated_trees_equal_the_engine_on_pooled_rows(encrypted_run: tuple[Path, pd.DataFrame]) -> None:
    out, df = encrypted_run
    saved = SavedGBDT.load(out / "institutions" / "south" / "model.json")
    cfg = fedx.config_from_dict(_config())
    task = get_task("fraud")
    trains = [fedx.local_split(df[df["bank"] == b].drop(columns="bank"), cfg, b, task)[0] for b in BANKS]
    pooled = pd.concat(trains, ignore_index=True)
    X = saved.design_matrix(pooled)
    params = gbdt_params(cfg)
    ref = fit_pooled(X, pooled["is_fraud"].to_numpy(float), params, list(saved.feature_names), saved.gbdt.edges)
    assert len(ref.trees) == len(saved.gbdt.trees) == 3
    for a, b in zip(saved.gbdt.trees, ref.trees):
        assert np.array_equal(a.feature, b.feature) and np.array_equal(a.bin, b.bin)
        assert np.array_equal(a.default_left, b.default_left)
        np.testing.assert_array_equal(a.value, b.value)
    assert saved.gbdt.base_margin == ref.base_margin


def test_load_model_scores_raw_tables_with_the_scikit_learn_surface(encrypted_run: tuple[Path, pd.DataFrame]) -> None:
    out, df = encrypted_run
    model = fedx.load_model(out / "institutions" / "west" / "model.json")
    assert list(model.feature_names_in_) == [f"x{i}" for i in range(6)] + ["channel"]
    rows = df[df["bank"] == "west"].head(200)
    p = model.predict_proba(rows)
    assert p.shape == (200, 2) and np.allclose(p.sum(axis=1), 1.0)
    saved = SavedGBDT.load(out / "institutions" / "west" / "model.json")
    np.testing.assert_array_equal(p[:, 1], saved.gbdt.predict_proba(saved.design_matrix(rows))[:, 1])
    assert set(np.unique(model.predict(rows))) <= {0, 1}
    same = model.predict_proba(rows[list(model.feature_names_in_)].to_numpy(dtype=object))
    np.testing.assert_allclose(same, p)


def test_resume_after_some_trees_grows_the_uninterrupted_model(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    df = _table(2000, seed=5)
    fedx.run(_config(trees=4), tmp_path / "straight", tables=df, progress=False)
    fedx.run(_config(trees=2), tmp_path / "resumed", tables=df, progress=False)
    with pytest.raises(ConfigError, match=r"holds a finished run"):
        fedx.run(_config(trees=4), tmp_path / "resumed", tables=df, progress=False)
    r = fedx.run(_config(trees=4), tmp_path / "resumed", tables=df, progress=False, resume=True)
    a = SavedGBDT.load(tmp_path / "straight" / "institutions" / "north" / "model.json").gbdt
    b = SavedGBDT.load(tmp_path / "resumed" / "institutions" / "north" / "model.json").gbdt
    assert len(a.trees) == len(b.trees) == 4
    for x, y in zip(a.trees, b.trees):
        assert np.array_equal(x.feature, y.feature) and np.array_equal(x.value, y.value)
    assert [h["tree"] for h in r.history] == [1, 2, 3, 4]
    capsys.readouterr()
    # Resumed again, the checkpoint holds every tree: said plainly, not as an empty range ("trees 5-4").
    again = fedx.run(_config(trees=4), tmp_path / "resumed", tables=df, progress=True, resume=True)
    err = capsys.readouterr().err
    assert "resuming after tree 4 from the checkpoint\nall 4 trees were already grown; nothing to do\n" in err
    assert "trees 5-4" not in err and [h["tree"] for h in again.history] == [1, 2, 3, 4]
    with pytest.raises(ConfigError, match=r"model\.trees: 3 is fewer than the 4 tree\(s\)"):
        fedx.run(_config(trees=3), tmp_path / "resumed", tables=df, progress=False, resume=True)


def test_claim_frequency_trees_take_the_exposure_as_offset(tmp_path: Path) -> None:
    X, y, exposure = counts(3000)
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    df["years"], df["claims"] = exposure, y
    df["insurer"] = np.array(BANKS)[np.random.default_rng(2).integers(0, 3, len(df))]
    cfg = {"name": "freq", "task": "claim_frequency", "seed": 1,
           "model": {"kind": "gbdt", "trees": 3, "depth": 2, "learning_rate": 0.3, "bins": 16},
           "data": {"target": "claims", "exposure": "years", "split_by": "insurer", "test_fraction": 0.3},
           "federation": {"min_clients": 2}, "security": {"encryption": "none"},
           "report": {"baselines": ["centralized"], "plots": False}}
    r = fedx.run(cfg, tmp_path / "freq", tables=df, progress=False)
    assert r.model["objective"] == "count:poisson"
    dev = next(k for k in r.metrics if "deviance" in k)
    assert r.metrics[dev] == pytest.approx(r.baselines["centralized"][dev], rel=1e-12)
    model = fedx.load_model(tmp_path / "freq" / "institutions" / "north" / "model.json")
    rows = df.head(50)
    doubled = model.predict(rows, exposure=2 * rows["years"].to_numpy())
    np.testing.assert_allclose(doubled, 2 * model.predict(rows), rtol=1e-12)
