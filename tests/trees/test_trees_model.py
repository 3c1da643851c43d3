"""The fitted GBDT: scikit-learn surface, JSON save and load, importances, and refused settings."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from trees_support import NAMES6, classification

from fedx.errors import ConfigError, DataError
from fedx.trees import BinEdges, GBDTModel, GBDTParams, fit_pooled


@pytest.fixture(scope="module")
def model() -> tuple[GBDTModel, np.ndarray, np.ndarray]:
    X, y = classification(n=3000, missing=0.05)
    params = GBDTParams(trees=10, max_depth=3, learning_rate=0.3, max_bins=32)
    return fit_pooled(X, y, params, NAMES6, BinEdges.from_quantiles(X, 32)), X, y


def test_scikit_learn_surface(model) -> None:
    m, X, y = model
    proba = m.predict_proba(X)
    assert proba.shape == (len(y), 2) and np.allclose(proba.sum(axis=1), 1.0)
    assert list(m.classes_) == [0, 1] and list(m.feature_names_in_) == NAMES6 and m.n_features_in_ == 6
    assert np.array_equal(m.predict(X), (proba[:, 1] >= 0.5).astype(int))
    assert roc_auc_score(y, proba[:, 1]) > 0.8
    df = pd.DataFrame(X[:, ::-1], columns=NAMES6[::-1])            # columns taken by name, in any order
    assert np.array_equal(m.predict_proba(df), proba)
    with pytest.raises(DataError, match="x0"):
        m.predict_proba(df.drop(columns="x0"))


def test_json_round_trip_predicts_identically(model) -> None:
    m, X, _ = model
    text = json.dumps(m.to_dict(), allow_nan=False)                 # strict JSON, no pickle
    back = GBDTModel.from_dict(json.loads(text))
    assert np.array_equal(back.predict_raw(X), m.predict_raw(X))
    assert back.params == m.params and back.edges is not None
    with pytest.raises(DataError, match="format"):
        GBDTModel.from_dict({"format": "other"})


def test_importances_count_splits_and_sum_gains(model) -> None:
    m, _, _ = model
    splits = m.feature_importances("split")
    gains = m.feature_importances("gain")
    assert sum(splits.values()) == sum(int((t.feature >= 0).sum()) for t in m.trees)
    total_gain = sum(float(t.gain[t.feature >= 0].sum()) for t in m.trees)
    assert sum(gains.values()) == pytest.approx(total_gain)
    assert max(gains, key=gains.get) == "x0"                        # the strongest effect of the ground truth
    assert m.feature_importances_.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("bad, key", [({"max_bins": 300}, "max_bins"), ({"learning_rate": 0}, "learning_rate"),
                                      ({"objective": "multi"}, "objective"), ({"subsample": 1.5}, "subsample"),
                                      ({"base_score": 1.0}, "base_score")])
def test_bad_settings_name_their_key(bad: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"model.{key}"):
        GBDTParams(**bad)
