"""fedx.load_model: a scikit-learn estimator over the federated torch model, fed a DataFrame or an array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, roc_auc_score

import fedx
from fedx.baselines import fit_preprocessor
from fedx.config import config_from_dict
from fedx.data.local import prepare_table
from fedx.data.spec import schema_for
from fedx.errors import DataError
from fedx.model import FedxClassifier, FedxEstimator, FedxModel, FedxRegressor
from fedx.tasks import get_task
from fedx.tasks.params import get_arrays

N = 400


def _table(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"row_id": np.arange(N), "site": rng.choice(["a", "b"], N), "age": rng.normal(50, 10, N),
                       "chol": rng.normal(220, 40, N), "cp": rng.choice(["typical", "atypical", "none"], N)})
    eta = 0.08 * (df["age"] - 50) + 0.01 * (df["chol"] - 220) + df["cp"].map({"typical": 0.8, "atypical": 0.0,
                                                                                 "none": -0.7})
    df["num"] = rng.binomial(1, 1 / (1 + np.exp(-eta)))
    df["years"] = rng.uniform(0.2, 1.0, N)
    df["claims"] = rng.poisson(df["years"] * np.exp(-1.5 + 0.5 * eta))
    return df


COEF = {"age": 0.8, "chol": 0.4, "cp[T.none]": -0.7, "cp[T.typical]": 0.8, "years": 0.3}   # standardized


def _build(task: str, data: dict) -> FedxModel:
    """A model as a run would save it, its weights set by hand (no federation needed)."""
    kind = "logistic" if task in ("fraud", "disease_risk") else "glm"
    cfg = config_from_dict({"name": "t", "task": task, "model": {"kind": kind},
                            "data": {"source": "x.csv", "split_by": "site", "standardize": True, **data}})
    df = prepare_table(_table(), cfg)
    prep = fit_preprocessor(cfg, schema_for(cfg, df), df)
    net = get_task(task).build_model(len(prep.feature_names), {"kind": kind}, seed=0)
    weight, bias = get_arrays(net)
    weight = np.array([[COEF[name] for name in prep.feature_names]], dtype=weight.dtype)
    bias = np.full_like(bias, -0.2 if kind == "logistic" else -1.5)
    return FedxModel.build(task, {"kind": kind}, prep, [weight, bias], cfg.data.na_values)


@pytest.fixture(scope="module")
def classifier() -> FedxClassifier:
    est = FedxEstimator.from_model(_build("disease_risk", {"target": "num", "drop": ["row_id", "years", "claims"]}))
    assert isinstance(est, FedxClassifier)
    return est


@pytest.fixture(scope="module")
def frequency() -> FedxRegressor:
    est = FedxEstimator.from_model(_build("claim_frequency", {"target": "claims", "exposure": "years",
                                                              "drop": ["row_id", "num"]}))
    assert isinstance(est, FedxRegressor)
    return est


def _by_hand(est: FedxEstimator, df: pd.DataFrame) -> np.ndarray:
    """The linear predictor, from the design matrix and the network's weights (independent of the task code)."""
    weight, bias = (a.astype(np.float64) for a in get_arrays(est.net))
    return est.design_matrix(df).astype(np.float64) @ weight.ravel() + bias[0]


def test_the_estimator_surface(classifier: FedxClassifier) -> None:
    assert list(classifier.feature_names_in_) == ["age", "chol", "cp"]   # raw inputs: no id, site or target
    assert classifier.n_features_in_ == 3
    assert classifier.feature_names == ("age", "chol", "cp[T.none]", "cp[T.typical]")   # the design columns
    assert list(classifier.classes_) == [0, 1]
    assert isinstance(classifier.module_, torch.nn.Module) and classifier.net is classifier.module_.net
    assert "FedxClassifier(task='disease_risk', features=3)" == repr(classifier)


def test_predict_proba_of_a_dataframe_with_extra_columns(classifier: FedxClassifier) -> None:
    df = _table(5)
    proba = classifier.predict_proba(df)                       # row_id, site, num, years, claims are ignored
    assert proba.shape == (N, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-_by_hand(classifier, df))), rtol=1e-5)
    np.testing.assert_array_equal(proba[:, 1], classifier.module_.predict(df))
    labels = classifier.predict(df)
    np.testing.assert_array_equal(labels, (proba[:, 1] >= 0.5).astype(int))
    assert set(np.unique(labels)) <= set(classifier.classes_)


def test_threshold_moves_the_labels(classifier: FedxClassifier) -> None:
    df = _table(5)
    p = classifier.predict_proba(df)[:, 1]
    strict = FedxClassifier(classifier.module_, threshold=0.9)
    np.testing.assert_array_equal(strict.predict(df), (p >= 0.9).astype(int))
    assert strict.predict(df).sum() < classifier.predict(df).sum()
    strict.threshold = 2.0
    with pytest.raises(DataError, match=r"threshold: expected a number in \[0, 1\], got 2.0"):
        strict.predict(df)


def test_a_numpy_array_in_feature_names_in_order(classifier: FedxClassifier) -> None:
    df = _table(6)
    arr = df[list(classifier.feature_names_in_)].to_numpy(dtype=object)
    np.testing.assert_allclose(classifier.predict_proba(arr), classifier.predict_proba(df), rtol=0, atol=1e-12)
    with pytest.raises(DataError, match=r"expected an array with 3 columns \(age, chol, cp\), got 2"):
        classifier.predict_proba(arr[:, :2])
    with pytest.raises(DataError, match="2-d array"):
        classifier.predict_proba(arr[:, 0])


def test_missing_columns_are_named(classifier: FedxClassifier) -> None:
    with pytest.raises(DataError, match=r"lacks the model's input column\(s\) 'chol', 'cp'"):
        classifier.predict_proba(_table().drop(columns=["chol", "cp"]))


def test_sklearn_metrics_and_calibration_take_it(classifier: FedxClassifier) -> None:
    df = _table(7)
    y, p = df["num"].to_numpy(), classifier.predict_proba(df)[:, 1]
    # Independent truth: the rank statistic of ROC AUC (Mann-Whitney), the Brier score by hand.
    pos, neg = p[y == 1], p[y == 0]
    mann_whitney = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
        len(pos) * len(neg))
    assert roc_auc_score(y, p) == pytest.approx(mann_whitney, rel=1e-12)
    assert roc_auc_score(y, p) > 0.6                          # the weights carry the simulated signal
    assert brier_score_loss(y, p) == pytest.approx(np.mean((p - y) ** 2), rel=1e-12)
    frac_pos, mean_pred = calibration_curve(y, p, n_bins=5, strategy="quantile")
    bins = np.quantile(p, np.linspace(0, 1, 6))
    idx = np.clip(np.searchsorted(bins[1:-1], p, side="right"), 0, 4)
    np.testing.assert_allclose(mean_pred, [p[idx == b].mean() for b in range(5)], rtol=1e-9)
    np.testing.assert_allclose(frac_pos, [y[idx == b].mean() for b in range(5)], rtol=1e-9)
    assert classifier.score(df, y) == pytest.approx(np.mean(classifier.predict(df) == y))   # ClassifierMixin


def test_glm_predict_is_exp_eta_times_exposure(frequency: FedxRegressor) -> None:
    df = _table(8)
    assert list(frequency.feature_names_in_) == ["age", "chol", "cp"]    # the exposure column is not an input
    assert not hasattr(frequency, "classes_") and not hasattr(frequency, "predict_proba")
    by_hand = np.exp(_by_hand(frequency, df))
    np.testing.assert_allclose(frequency.predict(df), by_hand * df["years"], rtol=1e-5)   # the table's exposure
    e = np.full(N, 2.0)
    np.testing.assert_allclose(frequency.predict(df, exposure=e), by_hand * 2.0, rtol=1e-5)
    arr = df[["age", "chol", "cp"]].to_numpy(dtype=object)
    np.testing.assert_allclose(frequency.predict(arr, exposure=df["years"].to_numpy()), by_hand * df["years"],
                               rtol=1e-5)
    with pytest.raises(DataError, match="column 'years' \\(exposure\\) is missing.*pass exposure="):
        frequency.predict(arr)
    with pytest.raises(DataError, match="exposure: expected 400 values"):
        frequency.predict(df, exposure=[1.0, 2.0])
    with pytest.raises(DataError, match="exposure: expected positive finite numbers"):
        frequency.predict(df, exposure=np.zeros(N))


def test_glm_without_exposure_has_exposure_one() -> None:
    plain = FedxEstimator.from_model(_build("claim_frequency", {"target": "claims", "drop": ["row_id", "num"]}))
    df = _table(9)
    assert "years" in plain.feature_names_in_               # not declared as exposure: an ordinary feature here
    by_hand = np.exp(_by_hand(plain, df))
    np.testing.assert_allclose(plain.predict(df), by_hand, rtol=1e-5)
    np.testing.assert_allclose(plain.predict(df, exposure=np.full(N, 0.5)), 0.5 * by_hand, rtol=1e-5)
    severity = FedxEstimator.from_model(_build("claim_severity",
                                               {"target": "years", "drop": ["row_id", "num", "claims"]}))
    with pytest.raises(DataError, match="exposure= is for claim_frequency; a claim_severity model takes none"):
        severity.predict(df, exposure=np.ones(N))


def test_save_and_load_round_trip(tmp_path: Path, classifier: FedxClassifier, frequency: FedxRegressor) -> None:
    df = _table(10)
    for est in (classifier, frequency):
        path = est.save(tmp_path / f"{est.task}.pt")
        back = fedx.load_model(path)
        assert type(back) is type(est) and list(back.feature_names_in_) == list(est.feature_names_in_)
        np.testing.assert_array_equal(back.predict(df), est.predict(df))
        assert isinstance(FedxModel.load(path), FedxModel)     # the torch module loads as before
    with pytest.raises(DataError, match="no GLM results"):
        _ = frequency.glm_results                               # not a newton fit
    with pytest.raises(DataError, match="model file not found"):
        fedx.load_model(tmp_path / "nope.pt")
    torch.save({"format": "something-else/9"}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="not a fedx model file"):
        fedx.load_model(tmp_path / "other.pt")


def test_clone_is_refused_with_a_reason(classifier: FedxClassifier) -> None:
    from sklearn.base import clone

    with pytest.raises(TypeError, match="fitted by the federation; clone is not supported"):
        clone(classifier)
