"""``fedx.local_split``: an institution rebuilds the rows its run held out, and scores them itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

import fedx
from fedx.data import read_table
from fedx.institution import Institution, NodeSpec
from fedx.tasks import get_task

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "medical_insurance"


@pytest.fixture
def cleveland(tmp_path: Path) -> tuple[fedx.Config, pd.DataFrame, Path]:
    """The disease-warning config in plaintext, and Cleveland's raw table in its own file (as a node holds it)."""
    cfg = fedx.load_config(EXAMPLE / "disease_warning.yaml", overrides={"security.encryption": "none"})
    heart = read_table(EXAMPLE / "data" / "heart_disease_uci.csv")
    path = tmp_path / "cleveland.csv"
    heart[heart["dataset"] == "Cleveland"].to_csv(path, index=False)
    return cfg, read_table(path), path


def test_local_split_is_the_split_the_institution_trains_and_scores_on(cleveland, tmp_path: Path) -> None:
    cfg, raw, path = cleveland
    task = get_task(cfg.task)
    node = Institution(NodeSpec("Cleveland", path, tmp_path / "out"), cfg)
    train, test = fedx.local_split(raw, cfg, "Cleveland", task)
    node_train, node_test = node.split()
    pd.testing.assert_frame_equal(test, node_test)
    pd.testing.assert_frame_equal(train, node_train)
    # The table is cleaned as the run cleans it: chol 0 is missing, the target is 0/1.
    assert set(test["num"]) == {0, 1} and not (test["chol"] == 0).any()
    assert len(test) == round(cfg.data.test_fraction * len(raw))
    assert sorted([*train.index, *test.index]) == list(raw.index)
    # Another institution's name draws other rows: the split depends on the name.
    assert not test.index.equals(fedx.local_split(raw, cfg, "Hungary", task)[1].index)


def test_an_institution_scores_its_held_out_rows_as_the_run_did(cleveland, tmp_path: Path) -> None:
    cfg, raw, path = cleveland
    node = Institution(NodeSpec("Cleveland", path, tmp_path / "out"), cfg)
    levels = node.levels()
    reply = node.setup(levels, node.moments(levels))
    rng = np.random.default_rng(3)
    node.sync(1, params=[rng.normal(0, 0.5, (1, int(reply["n_features"]))), rng.normal(0, 0.5, (1,))])
    metrics, _ = node.evaluate()
    model = fedx.load_model(node.save_model())

    _, test = fedx.local_split(raw, cfg, "Cleveland", get_task(cfg.task))
    p = model.predict_proba(test)[:, 1]
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(test["num"], p), abs=1e-12)
    assert metrics["brier"] == pytest.approx(brier_score_loss(test["num"], p), abs=1e-6)


def test_the_design_matrix_is_built_once_per_split_and_anew_when_the_file_changes(cleveland, tmp_path: Path) -> None:
    import os

    from fedx.data.preprocess import Preprocessor
    from fedx.tasks import TabularData

    cfg, raw, path = cleveland
    node = Institution(NodeSpec("Cleveland", path, tmp_path / "out"), cfg)
    levels = node.levels()
    node.setup(levels, node.moments(levels))
    prep = Preprocessor.from_dict(node.state.preprocessor)
    train, test = fedx.local_split(raw, cfg, "Cleveland", get_task(cfg.task))
    first = node.split_data(prep, "train")
    np.testing.assert_array_equal(first.X, TabularData.from_frame(cfg, prep, train).X)
    np.testing.assert_array_equal(node.split_data(prep, "test").y, TabularData.from_frame(cfg, prep, test).y)
    # The next round, by another Institution object of the same node, gets the same matrix without rebuilding it.
    again = Institution(NodeSpec("Cleveland", path, tmp_path / "out"), cfg)
    assert again.split_data(prep, "train") is first
    # The node's table changes (half its rows): the matrix is built from the new file.
    raw.iloc[: len(raw) // 2].to_csv(path, index=False)
    os.utime(path, (1, 1))
    changed = Institution(NodeSpec("Cleveland", path, tmp_path / "out"), cfg).split_data(prep, "train")
    new_train, _ = fedx.local_split(read_table(path), cfg, "Cleveland", get_task(cfg.task))
    assert len(changed) == len(new_train) < len(first)
    np.testing.assert_array_equal(changed.X, TabularData.from_frame(cfg, prep, new_train).X)


def test_split_matrices_are_kept_by_their_bytes(monkeypatch) -> None:
    """A worker that serves many institutions keeps all their matrices, up to a byte budget, oldest out first."""
    import fedx.institution as institution
    from fedx.tasks.data import TabularData

    class Node:
        def __init__(self, name: str, rows: int) -> None:
            self.name, self.rows, self.built = name, rows, 0

        def split(self):
            self.built += 1
            return None, None

        def tabular(self, prep, df):
            return TabularData(X=np.zeros((self.rows, 4)), y=np.zeros(self.rows))

    def get(node: Node):
        return institution._split_data_cached(node, node.name, 0.0, "k", node.name, "d", "train", None)

    monkeypatch.setattr(institution, "_SPLIT_DATA", {})
    nodes = [Node(f"inst_{i}", 100) for i in range(200)]  # 2,000 bytes each
    for node in nodes:
        get(node)
    for node in nodes:
        get(node)
    assert all(node.built == 1 for node in nodes)  # 200 institutions, each matrix built once
    monkeypatch.setattr(institution, "_SPLIT_DATA", {})
    monkeypatch.setattr(institution, "_SPLIT_DATA_BYTES", 5_000)  # room for two of them
    a, b, c = (Node(name, 100) for name in "abc")
    for node in (a, b, a, c):  # a is used again before c arrives: b is the oldest and goes
        get(node)
    get(a), get(c), get(b)  # a and c are kept; b is built again
    assert (a.built, b.built, c.built) == (1, 2, 1)
