"""Task metrics: exact on one institution's rows, and combinable across institutions that never pool scores.

Each institution reports ADDITIVE statistics (:func:`binary_stats`, :func:`glm_stats`). Summing the dicts
of several institutions elementwise and calling :func:`binary_metrics_from_stats` or
:func:`glm_metrics_from_stats` gives the metrics of the pooled scores:

- Binary scores go into per-class histograms over ``LOGIT_BINS`` equal bins of the logit on
  ``[-LOGIT_LIMIT, LOGIT_LIMIT]`` (each 0.002 wide), plus one bin for each tail. Scores that share a bin count
  as tied, as sklearn counts equal scores, and thresholds sit at bin edges. Measured against sklearn on pooled
  raw scores (tests/tasks/test_task_metrics.py): AUPRC within 2.5e-4 when logits spread with a standard
  deviation of 1 or more, and within 6e-4 when they crowd together (standard deviation 0.3); ROC-AUC within
  1e-4 (3e-4 when a tenth of the scores lie beyond the tails, |logit| > 16). Recall at 1% FPR never exceeds the exact value and falls short by at most the positives of the one bin
  that straddles the FPR limit (a single positive in the tests).
  Accuracy, Brier score, log loss and calibration are sums, and are exact.
- GLM deviance, D^2 and MAE come from exact sums. The Gini coefficient comes from a Lorenz curve binned on the
  log of the predicted rate (``RATE_BINS`` bins over ``[-LOG_RATE_LIMIT, LOG_RATE_LIMIT]``, 1% wide in the
  rate), within about 2e-5 of the exact one.

Undefined metrics (an empty split, a split with one class, no claims) are None, never NaN.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, xlogy
from ..errors import ConfigError, DataError
from .data import check_target

#: Metric values by name; None where a metric is undefined.
Metrics = dict[str, float | None]
#: Additive statistics by name.
Stats = dict[str, np.ndarray]

LOGIT_BINS = 16384
LOGIT_LIMIT = 16.0
RATE_BINS = 4096
LOG_RATE_LIMIT = 20.0
#: Predicted rates whose logs differ by at most this count as tied in the exact Gini (float32 predictions with
#: an offset carry rounding noise of about 1e-6 in the log rate; equal rates must still tie).
RATE_TIE_TOL = 1e-5
CALIBRATION_BINS = 10
#: The false-positive rate at which fraud metrics report recall and precision.
MAX_FPR = 0.01

BINARY_METRICS = ("n", "base_rate", "auprc", "roc_auc", "recall_at_1pct_fpr", "precision_at_1pct_fpr",
                  "accuracy", "brier", "log_loss", "ece")
GLM_METRICS = ("n", "deviance", "d2", "gini", "mae")
#: Metrics where lower is better; every other metric is better higher.
LOWER_IS_BETTER = frozenset({"deviance", "brier", "log_loss", "ece", "mae"})
FAMILIES = ("poisson", "gamma")

_EPS = float(np.finfo(np.float64).eps)


def _fixed_bins(values: np.ndarray, limit: float, bins: int) -> np.ndarray:
    """Index of each value among ``bins`` equal bins over ``[-limit, limit)``, with 0 and ``bins + 1`` the tails."""
    pos = np.floor((values + limit) * (bins / (2 * limit))) + 1
    return np.clip(pos, 0, bins + 1).astype(np.int64)


def _lower_edges(limit: float, bins: int) -> np.ndarray:
    """Lower edge of each bin of :func:`_fixed_bins` (``-inf`` for the lower tail)."""
    inner = -limit + np.arange(bins) * (2 * limit / bins)
    return np.concatenate([[-np.inf], inner, [limit]])


#: The probability at the lower edge of each score bin: the threshold of "flag this bin and above".
SCORE_BIN_THRESHOLDS = expit(_lower_edges(LOGIT_LIMIT, LOGIT_BINS))


def score_bins(p: np.ndarray) -> np.ndarray:
    """Index of each probability's logit bin (0 .. ``LOGIT_BINS + 1``); equal scores share a bin."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return _fixed_bins(np.log(p) - np.log1p(-p), LOGIT_LIMIT, LOGIT_BINS)


def _weights(weight: np.ndarray | None, n: int) -> np.ndarray:
    return np.ones(n) if weight is None else np.asarray(weight, dtype=np.float64)


def _check_inputs(y: np.ndarray, pred: np.ndarray, weight: np.ndarray | None, target_kind: str,
                  positive_pred: bool) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if pred.shape != y.shape or y.ndim != 1:
        raise DataError(f"predictions: expected shape {y.shape} (one per row), got {pred.shape}")
    if weight is not None and np.shape(weight) != y.shape:
        raise DataError(f"weight: expected shape {y.shape} (one per row), got {np.shape(weight)}")
    bad = ~np.isfinite(pred) | ((pred <= 0) if positive_pred else ((pred < 0) | (pred > 1)))
    if bad.any():
        expected = "finite positive means" if positive_pred else "probabilities in [0, 1]"
        raise DataError(f"predictions: expected {expected}; {int(bad.sum())} are not "
                        f"(first: row {int(np.argmax(bad))}, value {float(pred[np.argmax(bad)]):g})")
    check_target(y, target_kind)
    return y, pred


def _read_stats(stats: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]]) -> Stats:
    out: Stats = {}
    for key, shape in shapes.items():
        if key not in stats:
            raise DataError(f"stats: missing {key!r}; expected the keys {', '.join(shapes)}")
        arr = np.asarray(stats[key], dtype=np.float64)
        if arr.shape != shape:
            raise DataError(f"stats[{key!r}]: expected shape {shape}, got {arr.shape}")
        if not np.isfinite(arr).all():
            raise DataError(f"stats[{key!r}]: expected finite values")
        out[key] = arr
    return out


def _empty(names: tuple[str, ...], n: int) -> Metrics:
    return {name: (int(n) if name == "n" else None) for name in names}


# --------------------------------------------------------------------------- operating points


@dataclass(frozen=True)
class OperatingPoint:
    """Where an alert threshold puts a classifier: rows scoring ``>= threshold`` are flagged.

    Attributes
    ----------
    threshold : float or None
        The threshold: as given, or the one found for ``max_fpr`` (None when no row can be flagged).
    precision : float or None
        Share of flagged rows that are positive (None when nothing is flagged).
    recall : float or None
        Share of positives flagged (None without positives).
    fpr : float or None
        Share of negatives flagged (None without negatives).
    """

    threshold: float | None
    precision: float | None
    recall: float | None
    fpr: float | None


def _operating(thr_desc: np.ndarray, pos_desc: np.ndarray, neg_desc: np.ndarray, *, max_fpr: float | None,
               threshold: float | None) -> OperatingPoint:
    """Operating point over tie groups given in descending score order."""
    tp, fp = np.cumsum(pos_desc), np.cumsum(neg_desc)
    n_pos = float(tp[-1]) if tp.size else 0.0
    n_neg = float(fp[-1]) if fp.size else 0.0
    if threshold is not None:
        k = int(np.count_nonzero(thr_desc >= threshold))
    else:
        assert max_fpr is not None
        # The most positives flagged within the FPR budget, with the fewest rows flagged for that recall.
        k = int(np.searchsorted(fp, max_fpr * n_neg * (1 + 1e-12), side="right"))
        k = int(np.searchsorted(tp, tp[k - 1], side="left")) + 1 if k and tp[k - 1] > 0 else 0
    t_pos = float(tp[k - 1]) if k else 0.0
    f_pos = float(fp[k - 1]) if k else 0.0
    chosen = threshold if threshold is not None else (float(thr_desc[k - 1]) if k else None)
    return OperatingPoint(threshold=chosen,
                          precision=t_pos / (t_pos + f_pos) if t_pos + f_pos > 0 else None,
                          recall=t_pos / n_pos if n_pos > 0 else None,
                          fpr=f_pos / n_neg if n_neg > 0 else None)


def _check_operating_args(max_fpr: float | None, threshold: float | None) -> None:
    if (max_fpr is None) == (threshold is None):
        raise ConfigError("operating_point: expected exactly one of max_fpr and threshold")
    if max_fpr is not None and not 0.0 <= max_fpr <= 1.0:
        raise ConfigError(f"operating_point.max_fpr: expected a rate in [0, 1], got {max_fpr!r}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"operating_point.threshold: expected a probability in [0, 1], got {threshold!r}")


def operating_point(y: np.ndarray, p: np.ndarray, max_fpr: float | None = None, threshold: float | None = None,
                    weight: np.ndarray | None = None) -> OperatingPoint:
    """Exact precision, recall and FPR of flagging ``p >= threshold``.

    Give either ``threshold``, or ``max_fpr`` to get the highest recall whose false-positive rate is at most
    ``max_fpr`` (at the highest threshold that reaches it).
    """
    _check_operating_args(max_fpr, threshold)
    y, p = _check_inputs(y, p, weight, "binary", positive_pred=False)
    w = _weights(weight, len(y))
    scores, group = np.unique(p, return_inverse=True)
    pos = y > 0.5
    pos_g = np.bincount(group[pos], weights=w[pos], minlength=scores.size)
    neg_g = np.bincount(group[~pos], weights=w[~pos], minlength=scores.size)
    return _operating(scores[::-1], pos_g[::-1], neg_g[::-1], max_fpr=max_fpr, threshold=threshold)


def operating_point_from_stats(stats: Mapping[str, np.ndarray], max_fpr: float | None = None,
                               threshold: float | None = None) -> OperatingPoint:
    """:func:`operating_point` of the pooled scores, from summed :func:`binary_stats`.

    Thresholds sit at bin edges: a given ``threshold`` is lowered to the edge of its bin.
    """
    _check_operating_args(max_fpr, threshold)
    s = _read_stats(stats, _binary_shapes())
    thr, pos, neg = _nonempty_bins_desc(s)
    if threshold is not None:
        threshold = float(SCORE_BIN_THRESHOLDS[score_bins(np.array([threshold]))[0]])
    return _operating(thr, pos, neg, max_fpr=max_fpr, threshold=threshold)


def _nonempty_bins_desc(s: Stats) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keep = (s["hist_pos"] + s["hist_neg"]) > 0
    return (SCORE_BIN_THRESHOLDS[keep][::-1], s["hist_pos"][keep][::-1], s["hist_neg"][keep][::-1])


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class CalibrationCurve:
    """Mean predicted probability against observed rate in ``CALIBRATION_BINS`` equal bins of [0, 1].

    Attributes
    ----------
    weight : np.ndarray
        Total sample weight (rows) in each bin.
    mean_predicted, observed_rate : np.ndarray
        Per bin; NaN where a bin is empty (matplotlib skips those points).
    """

    weight: np.ndarray
    mean_predicted: np.ndarray
    observed_rate: np.ndarray

    @property
    def bin_edges(self) -> np.ndarray:
        """The ``CALIBRATION_BINS + 1`` edges of the bins."""
        return np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)

    @property
    def ece(self) -> float | None:
        """Expected calibration error: the weight-averaged ``|mean_predicted - observed_rate|``."""
        total = float(self.weight.sum())
        if total <= 0:
            return None
        full = self.weight > 0
        gap = np.abs(self.mean_predicted[full] - self.observed_rate[full])
        return float((self.weight[full] * gap).sum() / total)


def _calibration_sums(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b = np.minimum((p * CALIBRATION_BINS).astype(np.int64), CALIBRATION_BINS - 1)
    return (np.bincount(b, weights=w, minlength=CALIBRATION_BINS),
            np.bincount(b, weights=w * p, minlength=CALIBRATION_BINS),
            np.bincount(b, weights=w * y, minlength=CALIBRATION_BINS))


def _calibration_from_sums(w: np.ndarray, wp: np.ndarray, wy: np.ndarray) -> CalibrationCurve:
    with np.errstate(invalid="ignore", divide="ignore"):
        return CalibrationCurve(weight=w, mean_predicted=np.where(w > 0, wp / w, np.nan),
                                observed_rate=np.where(w > 0, wy / w, np.nan))


def calibration_curve(y: np.ndarray, p: np.ndarray, weight: np.ndarray | None = None) -> CalibrationCurve:
    """The calibration curve of one institution's scores (for plotting; its ``ece`` is a metric)."""
    y, p = _check_inputs(y, p, weight, "binary", positive_pred=False)
    return _calibration_from_sums(*_calibration_sums(y, p, _weights(weight, len(y))))


def calibration_from_stats(stats: Mapping[str, np.ndarray]) -> CalibrationCurve:
    """The calibration curve of the pooled scores, from summed :func:`binary_stats` (exact)."""
    s = _read_stats(stats, _binary_shapes())
    return _calibration_from_sums(s["calib_w"], s["calib_w_pred"], s["calib_w_pos"])


# --------------------------------------------------------------------------- binary metrics


def _binary_shapes() -> dict[str, tuple[int, ...]]:
    hist = (LOGIT_BINS + 2,)
    cal = (CALIBRATION_BINS,)
    return {"n": (1,), "sum_w": (1,), "hist_pos": hist, "hist_neg": hist, "sum_w_correct": (1,),
            "sum_w_sq_err": (1,), "sum_w_log_loss": (1,), "calib_w": cal, "calib_w_pred": cal, "calib_w_pos": cal}


def _binary_report(n: int, total: float, total_pos: float, auprc: float | None, roc_auc: float | None,
                   op: OperatingPoint, accuracy: float, brier: float, log_loss_: float,
                   ece: float | None) -> Metrics:
    both = 0 < total_pos < total
    return {"n": int(n), "base_rate": total_pos / total, "auprc": auprc if both else None,
            "roc_auc": roc_auc if both else None, "recall_at_1pct_fpr": op.recall if both else None,
            "precision_at_1pct_fpr": op.precision if both else None, "accuracy": accuracy, "brier": brier,
            "log_loss": log_loss_, "ece": ece}


def binary_metrics(y: np.ndarray, p: np.ndarray, weight: np.ndarray | None = None) -> Metrics:
    """Exact metrics of one institution's probabilities ``p`` (sklearn where it applies).

    Returns the keys of ``BINARY_METRICS``. With one class only, the ranking metrics are None.
    """
    # sklearn is imported here, not at module level: it costs most of a second, and an institution's
    # process imports this module for every message.
    from sklearn.metrics import accuracy_score, average_precision_score, brier_score_loss, log_loss, roc_auc_score

    y, p = _check_inputs(y, p, weight, "binary", positive_pred=False)
    w = _weights(weight, len(y))
    total, total_pos = float(w.sum()), float(w[y > 0.5].sum())
    if total <= 0:
        return _empty(BINARY_METRICS, len(y))
    both = 0 < total_pos < total
    return _binary_report(
        len(y), total, total_pos,
        auprc=float(average_precision_score(y, p, sample_weight=weight)) if both else None,
        roc_auc=float(roc_auc_score(y, p, sample_weight=weight)) if both else None,
        op=operating_point(y, p, max_fpr=MAX_FPR, weight=weight),
        accuracy=float(accuracy_score(y > 0.5, p >= 0.5, sample_weight=weight)),
        brier=float(brier_score_loss(y, p, sample_weight=weight, pos_label=1)),
        log_loss_=float(log_loss(y, p, sample_weight=weight, labels=[0, 1])),
        ece=calibration_curve(y, p, weight).ece)


def binary_stats(y: np.ndarray, p: np.ndarray, weight: np.ndarray | None = None) -> Stats:
    """Additive statistics of one institution's probabilities (see the module docstring)."""
    y, p = _check_inputs(y, p, weight, "binary", positive_pred=False)
    w = _weights(weight, len(y))
    pos = y > 0.5
    bins = score_bins(p)
    clipped = np.clip(p, _EPS, 1 - _EPS)
    unit_log_loss = np.where(pos, -np.log(clipped), -np.log1p(-clipped))
    cal_w, cal_wp, cal_wy = _calibration_sums(y, p, w)
    return {"n": np.array([float(len(y))]), "sum_w": np.array([w.sum()]),
            "hist_pos": np.bincount(bins[pos], weights=w[pos], minlength=LOGIT_BINS + 2),
            "hist_neg": np.bincount(bins[~pos], weights=w[~pos], minlength=LOGIT_BINS + 2),
            "sum_w_correct": np.array([w[(p >= 0.5) == pos].sum()]),
            "sum_w_sq_err": np.array([(w * (p - y) ** 2).sum()]),
            "sum_w_log_loss": np.array([(w * unit_log_loss).sum()]),
            "calib_w": cal_w, "calib_w_pred": cal_wp, "calib_w_pos": cal_wy}


def _ranking_from_groups(pos_desc: np.ndarray, neg_desc: np.ndarray) -> tuple[float | None, float | None]:
    """(average precision, ROC-AUC) over tie groups in descending score order, as sklearn defines them."""
    n_pos, n_neg = float(pos_desc.sum()), float(neg_desc.sum())
    if n_pos <= 0 or n_neg <= 0:
        return None, None
    tp, fp = np.cumsum(pos_desc), np.cumsum(neg_desc)
    has = pos_desc > 0
    auprc = float((pos_desc[has] / n_pos * tp[has] / (tp[has] + fp[has])).sum())
    roc_auc = float((pos_desc * (n_neg - fp + 0.5 * neg_desc)).sum() / (n_pos * n_neg))
    return auprc, roc_auc


def binary_metrics_from_stats(stats: Mapping[str, np.ndarray]) -> Metrics:
    """The metrics of the pooled scores, from :func:`binary_stats` summed over institutions."""
    s = _read_stats(stats, _binary_shapes())
    n, total = int(round(s["n"][0])), float(s["sum_w"][0])
    if total <= 0:
        return _empty(BINARY_METRICS, n)
    thr, pos, neg = _nonempty_bins_desc(s)
    auprc, roc_auc = _ranking_from_groups(pos, neg)
    return _binary_report(
        n, total, float(s["hist_pos"].sum()), auprc=auprc, roc_auc=roc_auc,
        op=_operating(thr, pos, neg, max_fpr=MAX_FPR, threshold=None),
        accuracy=float(s["sum_w_correct"][0] / total), brier=float(s["sum_w_sq_err"][0] / total),
        log_loss_=float(s["sum_w_log_loss"][0] / total),
        ece=_calibration_from_sums(s["calib_w"], s["calib_w_pred"], s["calib_w_pos"]).ece)


# --------------------------------------------------------------------------- GLM metrics


def check_family(family: str, offset: np.ndarray | None = None) -> None:
    """Check that ``family`` is a GLM family fedx fits, and that it can take ``offset``."""
    if family not in FAMILIES:
        raise ConfigError(f"family: expected one of {', '.join(FAMILIES)}, got {family!r}")
    if family == "gamma" and offset is not None:
        raise DataError("offset: the gamma (severity) model takes no offset; remove data.exposure, or use "
                        "claim counts as weights")


def unit_deviance(family: str, y: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Deviance of each row: Poisson ``2 (y log(y/mu) - y + mu)``, Gamma ``2 (log(mu/y) + y/mu - 1)``."""
    check_family(family)
    y, mu = np.asarray(y, dtype=np.float64), np.asarray(mu, dtype=np.float64)
    if family == "poisson":
        return 2 * (xlogy(y, y / mu) - y + mu)
    return 2 * (np.log(mu / y) + y / mu - 1)


def _null_sums(family: str, y: np.ndarray, offset: np.ndarray | None, w: np.ndarray) -> dict[str, float]:
    """The sums that :func:`_null_deviance` needs."""
    sums = {"sum_w": float(w.sum()), "sum_w_y": float((w * y).sum())}
    if family == "poisson":
        o = np.zeros_like(y) if offset is None else np.asarray(offset, dtype=np.float64)
        sums |= {"sum_w_exposure": float((w * np.exp(o)).sum()), "sum_w_y_log_y": float((w * xlogy(y, y)).sum()),
                 "sum_w_y_offset": float((w * y * o).sum())}
    else:
        sums["sum_w_log_y"] = float((w * np.log(y)).sum())
    return sums


def _null_deviance(family: str, s: Mapping[str, float]) -> float:
    """Deviance of the intercept-only model (with the offset, for Poisson) fitted on the same rows."""
    if family == "poisson":
        if s["sum_w_y"] <= 0:
            return 0.0
        rate = s["sum_w_y"] / s["sum_w_exposure"]
        return 2 * (s["sum_w_y_log_y"] - s["sum_w_y_offset"] - s["sum_w_y"] * np.log(rate))
    mean = s["sum_w_y"] / s["sum_w"]
    return 2 * (s["sum_w"] * np.log(mean) - s["sum_w_log_y"])


def _gini_from_groups(exposure_asc: np.ndarray, loss_asc: np.ndarray) -> float | None:
    """``1 - 2 * area`` under the Lorenz curve of groups sorted by ascending predicted rate."""
    total_e, total_l = float(exposure_asc.sum()), float(loss_asc.sum())
    if total_e <= 0 or total_l <= 0:
        return None
    x = np.concatenate([[0.0], np.cumsum(exposure_asc) / total_e])
    c = np.concatenate([[0.0], np.cumsum(loss_asc) / total_l])
    return float(1 - (np.diff(x) * (c[1:] + c[:-1])).sum())


def _glm_report(n: int, deviance: float, null_deviance: float, total: float, gini: float | None,
                mae: float) -> Metrics:
    d2 = 1 - deviance * total / null_deviance if null_deviance > 0 else None
    return {"n": int(n), "deviance": deviance, "d2": d2, "gini": gini, "mae": mae}


def _log_rate(mu: np.ndarray, offset: np.ndarray | None) -> np.ndarray:
    return np.log(mu) - (0.0 if offset is None else np.asarray(offset, dtype=np.float64))


def _exposure(offset: np.ndarray | None, n: int) -> np.ndarray:
    return np.ones(n) if offset is None else np.exp(np.asarray(offset, dtype=np.float64))


def glm_metrics(family: str, y: np.ndarray, mu: np.ndarray, offset: np.ndarray | None = None,
                weight: np.ndarray | None = None) -> Metrics:
    """Exact metrics of one institution's predicted means ``mu`` (sklearn where it applies).

    ``deviance`` and ``mae`` are weighted means; ``d2`` is the share of the null deviance explained (the null
    model is the intercept with the offset, fitted on these rows); ``gini`` is ``1 - 2 * area`` under the
    Lorenz curve: rows ranked by predicted rate ``mu / exposure``, cumulative ``weight * exposure`` against
    cumulative ``weight * y``, with rates within ``RATE_TIE_TOL`` (in log) grouped as ties.
    """
    from sklearn.metrics import mean_absolute_error, mean_gamma_deviance, mean_poisson_deviance

    check_family(family, offset)
    y, mu = _check_inputs(y, mu, weight, "count" if family == "poisson" else "positive", positive_pred=True)
    w = _weights(weight, len(y))
    total = float(w.sum())
    if total <= 0:
        return _empty(GLM_METRICS, len(y))
    mean_deviance = mean_poisson_deviance if family == "poisson" else mean_gamma_deviance
    exposure = _exposure(offset, len(y))
    log_rate = _log_rate(mu, offset)
    order = np.argsort(log_rate, kind="stable")
    group = np.cumsum(np.r_[True, np.diff(log_rate[order]) > RATE_TIE_TOL]) - 1
    gini = _gini_from_groups(np.bincount(group, weights=(w * exposure)[order]),
                             np.bincount(group, weights=(w * y)[order]))
    return _glm_report(len(y), float(mean_deviance(y, mu, sample_weight=weight)),
                       _null_deviance(family, _null_sums(family, y, offset, w)), total, gini,
                       float(mean_absolute_error(y, mu, sample_weight=weight)))


def _glm_shapes(family: str) -> dict[str, tuple[int, ...]]:
    null_keys = ("sum_w_exposure", "sum_w_y_log_y", "sum_w_y_offset") if family == "poisson" else ("sum_w_log_y",)
    return {"n": (1,), "sum_w": (1,), "sum_w_y": (1,), "sum_w_dev": (1,), "sum_w_abs_err": (1,),
            **{k: (1,) for k in null_keys}, "lorenz_exposure": (RATE_BINS + 2,), "lorenz_loss": (RATE_BINS + 2,)}


def glm_stats(family: str, y: np.ndarray, mu: np.ndarray, offset: np.ndarray | None = None,
              weight: np.ndarray | None = None) -> Stats:
    """Additive statistics of one institution's predicted means (see the module docstring)."""
    check_family(family, offset)
    y, mu = _check_inputs(y, mu, weight, "count" if family == "poisson" else "positive", positive_pred=True)
    w = _weights(weight, len(y))
    exposure = _exposure(offset, len(y))
    bins = _fixed_bins(_log_rate(mu, offset), LOG_RATE_LIMIT, RATE_BINS)
    sums = _null_sums(family, y, offset, w) | {"sum_w_dev": float((w * unit_deviance(family, y, mu)).sum()),
                                                "sum_w_abs_err": float((w * np.abs(y - mu)).sum())}
    return {"n": np.array([float(len(y))]), **{k: np.array([v]) for k, v in sums.items()},
            "lorenz_exposure": np.bincount(bins, weights=w * exposure, minlength=RATE_BINS + 2),
            "lorenz_loss": np.bincount(bins, weights=w * y, minlength=RATE_BINS + 2)}


def glm_metrics_from_stats(family: str, stats: Mapping[str, np.ndarray]) -> Metrics:
    """The metrics of the pooled predictions, from :func:`glm_stats` summed over institutions."""
    check_family(family)
    s = _read_stats(stats, _glm_shapes(family))
    n, total = int(round(s["n"][0])), float(s["sum_w"][0])
    if total <= 0:
        return _empty(GLM_METRICS, n)
    scalars = {k: float(v[0]) for k, v in s.items() if v.shape == (1,)}
    return _glm_report(n, scalars["sum_w_dev"] / total, _null_deviance(family, scalars), total,
                       _gini_from_groups(s["lorenz_exposure"], s["lorenz_loss"]), scalars["sum_w_abs_err"] / total)
