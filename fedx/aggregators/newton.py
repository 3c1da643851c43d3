"""Exact federated GLMs: Newton/IRLS on summed sufficient statistics (``federation.aggregator: newton``).

A round has three steps, all on plain numpy:

1. Each institution calls :func:`local_stats` at the current coefficients and the round inputs of
   :func:`round_inputs`, and gets one flat float64 vector of *additive* statistics of its rows.
2. The vectors are summed: in plaintext by :meth:`NewtonRule.combine`, under encryption with
   ``he.encrypt(secret, [vec], kind="sum")``, ``he.aggregate`` and ``he.decrypt``. The sum equals
   the vector of the pooled rows.
3. :meth:`NewtonRule.apply` takes the summed vector and returns the next coefficients. It is
   deterministic (float64, no BLAS, sequential sums), so with encryption every institution runs it
   on the same decrypted sum and they all reach the same bits; in plaintext the server runs it.

The fit is the pooled maximum-likelihood (or L2-penalised) fit, to the tolerance of the iteration.

The statistics vector (:func:`stats_layout` gives the slice of each block; ``k = p + 1``)
-----------------------------------------------------------------------------------------
With ``X~ = [1, X]`` (intercept first), ``eta = X~ beta + offset`` and the family's per-row terms:

===================  ============  ============================================================
block                size          content (summed over rows)
===================  ============  ============================================================
``xtwx``             k (k+1) / 2   upper triangle (row-major, ``np.triu_indices``) of X~'WX~,
                                   W the Fisher-scoring weights: the expected information
``hessian``          k (k+1) / 2   the observed information, likewise (gamma, tweedie: their log
                                   link is not canonical; for poisson and binomial it is xtwx)
``score``            k             X~' w (y - mu) (dmu/deta) / V(mu)
``inputs``           k + 2         count x (beta, null intercept, scale): what the rows were
                                   evaluated at, so that a round on other inputs is refused
``deviance``         1             the deviance at beta
``pearson_chi2``     1             Pearson's chi2 at beta
``loglike``          1             statsmodels' log-likelihood at beta and the given ``scale``
``count``            1             number of rows
``sum_weight``       1             sum of the weights
``null_numerator``   1             the two sums whose ratio gives the intercept-only fit
``null_denominator`` 1             (see :meth:`Family.null_sums`)
``null_deviance``    1             deviance of the intercept-only model at ``null_intercept``
``null_score``       1             its score, and its information (one Newton step of the
``null_information`` 1             intercept-only model; 0 while ``null_intercept`` is None)
``positive``         k             rows with x > 0, per column
``negative``         k             rows with x < 0, per column
``positive_above``   k             rows with x > 0 and y > 0 (poisson, tweedie, binomial)
``negative_above``   k             rows with x < 0 and y > 0 (poisson, tweedie, binomial)
``positive_below``   k             rows with x > 0 and y < 1 (binomial)
``negative_below``   k             rows with x < 0 and y < 1 (binomial)
``unseparated``      1             rows that X~ beta does not strictly separate (binomial)
===================  ============  ============================================================

The rounds
----------
- Round 0 runs at any coefficients (the torch model's zeros). Its ``apply`` only starts the fit: the
  intercept becomes the intercept-only fit ``null_intercept(numerator, denominator)`` (for log links
  ``log(sum w y e^((1-p) o) / sum w e^((2-p) o))``, e.g. ``log(sum y / sum exposure)`` for Poisson;
  for the logit ``logit(weighted mean)``) and the other coefficients 0. It also refuses a column that
  is zero everywhere (a level absent at every institution) and a column whose nonzero rows all have
  y = 0 (or, for binomial, y = 0 on one sign and y = 1 on the other), whose estimate would be
  infinite; with ``l2 > 0`` both are fitted.
- Every later round takes one Newton step on the observed information, which converges
  quadratically (Fisher scoring on the expected information, the same for the canonical Poisson and
  binomial links, is only linear for Gamma and Tweedie). Standard errors use the expected information,
  as statsmodels' IRLS does. If the penalised deviance went up, the step is halved instead (at most
  30 times), deterministically.
- The null deviance comes in the same vector: ``local_stats(..., null_intercept=b0)`` adds the
  deviance of the intercept-only model at ``b0``. For log links, and the logit without offset, the
  round-0 intercept is that model's exact fit; otherwise ``apply`` refines it by one Newton step per
  round from ``null_score`` and ``null_information``.
- Converged: when the deviance decrease that the next step predicts (its Newton decrement, in
  deviance units, penalty included) is below ``tolerance * (|deviance| + 0.1)`` (R's ``glm``
  criterion), for the model and for the intercept-only model. That last step is taken, and from
  then on ``apply`` is a no-op that keeps the coefficients and records the statistics at them.
- :meth:`NewtonRule.report_ready`: the statistics at this state give the exact :class:`~fedx.aggregators.glm_results.GLMResults`;
  one round after convergence for Poisson and binomial, two for Gamma and Tweedie (their
  log-likelihood needs the dispersion at the fitted coefficients, passed as ``scale``).
- A binomial fit whose coefficients separate every row (complete separation: the likelihood keeps
  growing along beta) is refused with :class:`AggregationError` when ``l2 == 0``.

Penalty: ``l2 > 0`` minimises ``deviance / 2 + l2 / 2 * ||beta[1:]||^2`` (the intercept is not
penalised). Standard errors then come from the penalised information ``X~'WX~ + l2 D``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from ..config import NEWTON_L2, NEWTON_TOLERANCE, check_number
from ..errors import AggregationError, DataError
from .base import Arrays, ModelState, UpdateRule
from .glm_families import Family, get_family

__all__ = ["Covariance", "GLMData", "NewtonFit", "NewtonRule", "beta_to_params", "local_stats", "newton_fit",
           "params_to_beta", "round_inputs", "stats_layout"]

#: Consecutive step halvings before the fit is declared stuck.
MAX_HALVINGS = 30
#: A pivot of the unit-diagonal information below this means a column is a combination of earlier ones.
COLLINEAR_PIVOT = 1e-10
#: Relative difference allowed between the inputs recovered from a sum and the state's (HE noise).
INPUT_TOLERANCE = 1e-6


def stats_layout(p: int, family: str) -> dict[str, slice]:
    """Where each block of the statistics vector lies, for ``p`` features (without intercept).

    Parameters
    ----------
    p : int
        Number of columns of X.
    family : str
        One of ``poisson``, ``gamma``, ``tweedie``, ``binomial``.

    Returns
    -------
    dict of str to slice
        Block name -> slice of the vector, in order; the last ``stop`` is the vector's length.

    Raises
    ------
    ConfigError
        An unknown family.
    """
    k = p + 1
    fam = get_family(family)
    triangle = k * (k + 1) // 2
    sizes = [("xtwx", triangle)] + ([] if fam.canonical else [("hessian", triangle)])
    sizes += [("score", k), ("inputs", k + 2)]
    sizes += [(name, 1) for name in ("deviance", "pearson_chi2", "loglike", "count", "sum_weight", "null_numerator",
                                     "null_denominator", "null_deviance", "null_score", "null_information")]
    sizes += [("positive", k), ("negative", k)]
    if fam.boundary_zero:
        sizes += [("positive_above", k), ("negative_above", k)]
    if fam.boundary_one:
        sizes += [("positive_below", k), ("negative_below", k), ("unseparated", 1)]
    layout, start = {}, 0
    for name, size in sizes:
        layout[name] = slice(start, start + size)
        start += size
    return layout


def params_to_beta(params: Sequence[np.ndarray]) -> np.ndarray:
    """The coefficients ``[intercept, w_1, ..., w_p]`` (float64) of a linear layer's ``[weight (1, p), bias (1,)]``.

    Raises
    ------
    AggregationError
        If ``params`` is not a finite ``[weight (1, p), bias (1,)]`` pair.
    """
    if len(params) != 2:
        raise AggregationError(f"newton: expected the model's [weight (1, p), bias (1,)], got {len(params)} arrays")
    weight, bias = (np.asarray(a) for a in params)
    if weight.ndim != 2 or weight.shape[0] != 1 or bias.shape != (1,):
        raise AggregationError(f"newton: expected params of shapes (1, p) and (1,), got {weight.shape} and "
                               f"{bias.shape}")
    beta = np.concatenate([bias, weight[0]]).astype(np.float64)
    if not np.all(np.isfinite(beta)):
        raise AggregationError("newton: the coefficients hold NaN or Inf")
    return beta


def beta_to_params(beta: np.ndarray) -> Arrays:
    """The linear layer's ``[weight (1, p), bias (1,)]`` (float64) from ``[intercept, w_1, ..., w_p]``."""
    beta = np.asarray(beta, dtype=np.float64)
    return [beta[1:].reshape(1, -1).copy(), beta[:1].copy()]


def round_inputs(state: ModelState) -> dict[str, Any]:
    """The keyword arguments of this round's :func:`local_stats`: ``null_intercept`` and ``scale``.

    Every institution must use the same ones (in plaintext the server sends them with the coefficients).
    """
    opt = state.opt
    return {"null_intercept": float(opt["null_intercept"][0][0]) if "null_intercept" in opt else None,
            "scale": float(opt["scale"][0][0]) if "scale" in opt else 1.0}


def local_stats(X: np.ndarray, y: np.ndarray, params: Sequence[np.ndarray], family: str,
                offset: np.ndarray | None = None, weight: np.ndarray | None = None, tweedie_power: float = 1.5,
                *, null_intercept: float | None = None, scale: float = 1.0) -> np.ndarray:
    """One institution's additive statistics at the current coefficients (the layout of :func:`stats_layout`).

    Parameters
    ----------
    X : np.ndarray
        The design matrix without intercept column, (n, p), finite.
    y : np.ndarray
        Responses, (n,): counts (poisson), positive amounts (gamma), non-negative amounts (tweedie),
        outcomes in [0, 1] (binomial).
    params : sequence of np.ndarray
        The model's ``[weight (1, p), bias (1,)]``; the intercept is the bias.
    family : str
        ``poisson``, ``gamma``, ``tweedie`` or ``binomial``.
    offset : np.ndarray, optional
        Added to the linear predictor (for example ``log(exposure)``), (n,).
    weight : np.ndarray, optional
        Positive ``var_weights`` (for example claim counts for average severities), (n,).
    tweedie_power : float
        Variance power of ``tweedie``, in (1, 2).
    null_intercept : float, optional
        Intercept of the intercept-only model at which to add its deviance, score and information.
    scale : float
        Dispersion at which ``loglike`` is evaluated (gamma, tweedie; 1 for poisson and binomial).

    Returns
    -------
    np.ndarray
        The float64 vector; the sum of several institutions' vectors is the vector of their pooled rows.

    Raises
    ------
    DataError
        Misshapen or non-finite data, or responses outside the family's support.
    AggregationError
        Coefficients or round inputs that are misshapen, or statistics that overflow at them.
    """
    fam = get_family(family, tweedie_power)
    beta = params_to_beta(params)
    X, y, offset, w = _check_data(X, y, offset, weight, fam, beta.size - 1)
    if not (math.isfinite(scale) and scale > 0):
        raise AggregationError(f"newton: scale must be a positive number, got {scale!r}")
    if null_intercept is not None and not math.isfinite(null_intercept):
        raise AggregationError(f"newton: null_intercept must be finite, got {null_intercept!r}")
    design = np.hstack([np.ones((X.shape[0], 1)), X])
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below, by name
        vec, eta = _stats_vector(fam, design, y, offset, w, beta, null_intercept, scale)
    if not np.all(np.isfinite(vec)):
        raise AggregationError(f"newton: the statistics overflow at the current coefficients (largest linear "
                               f"predictor {np.max(np.abs(eta)):.4g}); the fit diverged")
    return vec


def _stats_vector(fam: Family, design: np.ndarray, y: np.ndarray, offset: np.ndarray, w: np.ndarray,
                  beta: np.ndarray, null_intercept: float | None, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The statistics vector of :func:`local_stats` on checked data, and the linear predictor."""
    n, k = design.shape
    linear = design @ beta
    eta = linear + offset
    terms = fam.terms(y, eta, w)
    upper = np.triu_indices(k)
    blocks: dict[str, Any] = {
        "xtwx": (design.T @ (terms.working_weight[:, None] * design))[upper],
        "score": design.T @ terms.score_weight,
        "inputs": n * np.concatenate([beta, [0.0 if null_intercept is None else null_intercept, scale]]),
        "deviance": terms.deviance.sum(),
        "pearson_chi2": terms.pearson.sum(),
        "loglike": fam.loglike(y, eta, w, scale),
        "count": n,
        "sum_weight": w.sum(),
    }
    if not fam.canonical:
        blocks["hessian"] = (design.T @ (terms.observed_weight[:, None] * design))[upper]
    blocks["null_numerator"], blocks["null_denominator"] = fam.null_sums(y, offset, w)
    if null_intercept is not None:
        null = fam.terms(y, null_intercept + offset, w)
        blocks.update(null_deviance=null.deviance.sum(), null_score=null.score_weight.sum(),
                      null_information=null.working_weight.sum())
    positive, negative = design > 0, design < 0
    blocks.update(positive=positive.sum(axis=0), negative=negative.sum(axis=0))
    layout = stats_layout(k - 1, fam.name)
    if fam.boundary_zero:
        above = (y > 0)[:, None]
        blocks.update(positive_above=(positive & above).sum(axis=0), negative_above=(negative & above).sum(axis=0))
    if fam.boundary_one:
        below = (y < 1)[:, None]
        blocks.update(positive_below=(positive & below).sum(axis=0), negative_below=(negative & below).sum(axis=0),
                      unseparated=np.sum(~(((y == 1) & (linear > 0)) | ((y == 0) & (linear < 0)))))
    vec = np.zeros(next(reversed(layout.values())).stop)
    for name, where in layout.items():
        vec[where] = blocks.get(name, 0.0)
    return vec, eta


class NewtonRule(UpdateRule):
    """The Newton/IRLS step of a federated GLM on summed :func:`local_stats` vectors.

    Parameters
    ----------
    family : str
        ``poisson``, ``gamma``, ``tweedie`` or ``binomial``.
    l2 : float
        L2 penalty on the coefficients other than the intercept (``federation.l2``).
    tweedie_power : float
        Variance power of ``tweedie``, in (1, 2) (``federation.tweedie_power``).
    tolerance : float
        Relative change of the (penalised) deviance below which the fit has converged.
    feature_names : sequence of str, optional
        Names of the p columns of X, for error messages.
    """

    name = "newton"
    he_kind = "sum"
    clients_need_opt = True

    def __init__(self, family: str, l2: float = 0.0, tweedie_power: float = 1.5, tolerance: float = 1e-8,
                 feature_names: Sequence[str] | None = None) -> None:
        l2 = check_number(l2, "federation.l2", NEWTON_L2)
        tolerance = check_number(tolerance, "federation.tolerance", NEWTON_TOLERANCE)
        self.family: Family = get_family(family, tweedie_power)
        self.l2, self.tweedie_power, self.tolerance = l2, float(tweedie_power), tolerance
        self.feature_names = None if feature_names is None else list(feature_names)

    def combine(self, updates: Sequence[Arrays], weights: Sequence[float]) -> Arrays:
        """The plain sum of the institutions' statistics vectors (``weights`` are ignored)."""
        if not updates:
            raise AggregationError("newton: no statistics to sum")
        return [np.sum([np.asarray(u[0], dtype=np.float64) for u in updates], axis=0)]

    @staticmethod
    def converged(state: ModelState) -> bool:
        """Whether the fit in ``state`` has converged (further rounds are no-ops)."""
        return bool(state.opt.get("converged", [np.zeros(1)])[0][0])

    def apply(self, state: ModelState, aggregate: Arrays) -> ModelState:
        """The next state from the summed statistics at ``state.params``. Deterministic.

        Raises
        ------
        AggregationError
            A malformed aggregate, statistics computed at other inputs or on other rows than earlier rounds,
            a column absent everywhere, collinear columns, separation, or a fit that stopped descending.
        """
        beta = params_to_beta(state.params)
        stats = self._unpack(aggregate, beta.size)
        if "null_intercept" not in state.opt:
            return self._start(state, stats, beta.size)
        self._check_inputs(stats, state)
        opt = _copy_opt(state.opt)
        opt.update(scale=_vec(self._dispersion(stats, beta.size)), deviance=_vec(_scalar(stats, "deviance")),
                   null_deviance=_vec(_scalar(stats, "null_deviance")))
        if self.converged(state):
            # A no-op that records the dispersion at the fitted coefficients, for the next round's loglike.
            opt["report_ready"] = _vec(1.0)
            return ModelState([a.copy() for a in state.params], opt, state.round + 1)
        return self._step(state, stats, beta, opt)

    @staticmethod
    def report_ready(state: ModelState) -> bool:
        """Whether the statistics computed at ``state`` give the exact :class:`~fedx.aggregators.glm_results.GLMResults` (converged, and for
        gamma and tweedie a no-op round has recorded the dispersion at the fitted coefficients)."""
        return bool(state.opt.get("report_ready", [np.zeros(1)])[0][0])

    # ---------------------------------------------------------------- the steps

    def _start(self, state: ModelState, stats: Mapping[str, np.ndarray], k: int) -> ModelState:
        count = _scalar(stats, "count")
        if count < 0.5:
            raise AggregationError("newton: the statistics cover no rows")
        if self.l2 == 0.0:
            self._check_columns(stats)
        b0 = self.family.null_intercept(_scalar(stats, "null_numerator"), _scalar(stats, "null_denominator"))
        beta = np.zeros(k)
        beta[0] = b0
        opt = {"null_intercept": _vec(b0), "scale": _vec(1.0), "count": _vec(count), "iterations": _vec(1.0),
               "halvings": _vec(0.0), "converged": _vec(0.0), "report_ready": _vec(0.0)}
        return ModelState(beta_to_params(beta), opt, state.round + 1)

    def _step(self, state: ModelState, stats: Mapping[str, np.ndarray], beta: np.ndarray,
              opt: dict[str, Arrays]) -> ModelState:
        if self.family.boundary_one and self.l2 == 0.0 and _scalar(stats, "unseparated") < 0.5:
            raise AggregationError(
                "newton: complete separation: the current coefficients classify every row correctly, so the "
                "binomial likelihood grows without bound and the coefficients run off to infinity. Set "
                "federation.l2 > 0 (a ridge penalty keeps them finite) or drop the separating columns")
        opt["iterations"] = _vec(float(opt["iterations"][0][0]) + 1.0)
        objective = _scalar(stats, "deviance") + self.l2 * _seqsum(beta[1:] * beta[1:])
        previous = state.opt.get("objective")
        if previous is not None and objective - previous[0][0] > self.tolerance * (abs(objective) + 0.1):
            halvings = float(opt["halvings"][0][0]) + 1.0
            if halvings > MAX_HALVINGS:
                raise AggregationError(f"newton: the deviance did not decrease after {MAX_HALVINGS} step halvings; "
                                       f"check the data for extreme values, or set federation.l2 > 0")
            anchor = opt["anchor"][0]
            opt["halvings"] = _vec(halvings)
            return ModelState(beta_to_params(anchor + (beta - anchor) * 0.5), opt, state.round + 1)
        penalty = self._penalty(beta.size)
        gradient = stats["score"] - penalty * beta
        step = self._solve(self._information(stats, beta.size, "hessian" if "hessian" in stats else "xtwx")
                           + np.diag(penalty), gradient)
        null_score, null_info = _scalar(stats, "null_score"), _scalar(stats, "null_information")
        null_step = null_score / null_info if null_info > 0.0 else 0.0
        # Newton decrements: the deviance decrease that the steps predict.
        converged = (_seqsum(gradient * step) <= self.tolerance * (abs(objective) + 0.1)
                     and null_score * null_step <= self.tolerance * (abs(_scalar(stats, "null_deviance")) + 0.1))
        opt.update(anchor=[beta.copy()], objective=_vec(objective), halvings=_vec(0.0),
                   null_intercept=_vec(float(opt["null_intercept"][0][0]) + null_step),
                   converged=_vec(float(converged)), report_ready=_vec(float(converged and self.family.fixed_scale)))
        return ModelState(beta_to_params(beta + step), opt, state.round + 1)

    def covariance(self, total: np.ndarray, state: ModelState) -> Covariance:
        """The covariance of the coefficients from statistics summed at ``state``, with the dispersion.

        Standard errors are ``sqrt(diag((X~'WX~ + l2 D)^-1) * dispersion)``; the dispersion is 1 for
        poisson and binomial, Pearson chi2 / (n - k) otherwise (statsmodels' defaults).

        Raises
        ------
        AggregationError
            The statistics are malformed, or were computed at other inputs than ``state``'s, or the fit
            has not started yet.
        """
        k = params_to_beta(state.params).size
        stats = self._unpack([total], k)
        if "null_intercept" not in state.opt:
            raise AggregationError("newton: the fit has not started yet; use the statistics of a later round")
        self._check_inputs(stats, state)
        dispersion = self._dispersion(stats, k)
        matrix = self._solve(self._information(stats, k) + np.diag(self._penalty(k)), np.eye(k)) * dispersion
        return Covariance(matrix, dispersion, {name: float(v[0]) for name, v in stats.items() if v.size == 1})

    # ---------------------------------------------------------------- pieces of apply and covariance

    def _unpack(self, aggregate: Arrays, k: int) -> dict[str, np.ndarray]:
        layout = stats_layout(k - 1, self.family.name)
        size = next(reversed(layout.values())).stop
        if len(aggregate) != 1:
            raise AggregationError(f"newton: expected the aggregate [summed statistics], got {len(aggregate)} arrays")
        total = np.asarray(aggregate[0], dtype=np.float64)
        if total.shape != (size,):
            raise AggregationError(f"newton: the summed statistics have shape {total.shape}; a {self.family.name} "
                                   f"GLM with {k - 1} features expects ({size},) (see stats_layout)")
        if not np.all(np.isfinite(total)):
            raise AggregationError("newton: the summed statistics hold NaN or Inf")
        return {name: total[where] for name, where in layout.items()}

    def _check_inputs(self, stats: Mapping[str, np.ndarray], state: ModelState) -> None:
        count = _scalar(stats, "count")
        expected = float(state.opt["count"][0][0])
        if abs(count - expected) > 0.5:
            raise AggregationError(f"newton: this round's statistics cover {count:.0f} rows, the first round's "
                                   f"{expected:.0f}; every institution must send statistics in every round "
                                   f"(federation.fraction 1.0)")
        inputs = round_inputs(state)
        want = np.concatenate([params_to_beta(state.params), [inputs["null_intercept"], inputs["scale"]]])
        got = stats["inputs"] / count
        if np.any(np.abs(got - want) > INPUT_TOLERANCE * (np.abs(want) + 1.0)):
            raise AggregationError("newton: the statistics were computed at other coefficients or round inputs "
                                   "than this state's (a stale round, or an institution out of step): each round "
                                   "must use the state's params and round_inputs(state). Under ckks, features of "
                                   "very different scales also blur the sum: standardize them")

    def _check_columns(self, stats: Mapping[str, np.ndarray]) -> None:
        """Refuse a column absent everywhere, and a column whose estimate is infinite (y at a boundary)."""
        pos, neg = stats["positive"], stats["negative"]
        for j in range(1, pos.size):
            if pos[j] + neg[j] < 0.5:
                raise AggregationError(f"newton: {self._coef(j)} is zero in every row (a level absent at every "
                                       f"institution?): its coefficient is not identified. Drop the column or set "
                                       f"federation.l2 > 0")
        if "positive_above" not in stats:
            return
        # "above": rows with y > 0; "below": rows with y < 1, which is every row without an upper bound on y.
        pos_below, neg_below = stats.get("positive_below", pos), stats.get("negative_below", neg)
        for j in range(1, pos.size):
            if stats["positive_above"][j] < 0.5 and neg_below[j] < 0.5:
                self._refuse_separated(stats, j, "-")
            if stats["negative_above"][j] < 0.5 and pos_below[j] < 0.5:
                self._refuse_separated(stats, j, "+")

    def _refuse_separated(self, stats: Mapping[str, np.ndarray], j: int, sign: str) -> None:
        low, high = ("positive", "negative") if sign == "-" else ("negative", "positive")
        detail = f"every row where it is {low} has y = 0"
        if stats[high][j] >= 0.5:
            detail += f" and every row where it is {high} has y = 1"
        raise AggregationError(f"newton: {self._coef(j)}: {detail}, so its maximum-likelihood estimate is "
                               f"{sign}infinity (separation). Merge or drop the level, or set "
                               f"federation.l2 > 0")

    def _dispersion(self, stats: Mapping[str, np.ndarray], k: int) -> float:
        if self.family.fixed_scale:
            return 1.0
        df_resid = _scalar(stats, "count") - k
        if df_resid < 0.5:
            raise AggregationError(f"newton: {self.family.name} estimates its dispersion from n - k residual degrees "
                                   f"of freedom, and there are {df_resid:.0f}")
        return _scalar(stats, "pearson_chi2") / df_resid

    def _penalty(self, k: int) -> np.ndarray:
        penalty = np.full(k, self.l2)
        penalty[0] = 0.0
        return penalty

    @staticmethod
    def _information(stats: Mapping[str, np.ndarray], k: int, block: str = "xtwx") -> np.ndarray:
        """The symmetric k x k matrix of an upper-triangle block (``xtwx``: expected, ``hessian``: observed)."""
        info = np.zeros((k, k))
        info[np.triu_indices(k)] = stats[block]
        lower = np.tril_indices(k, -1)
        info[lower] = info.T[lower]
        return info

    def _solve(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``a^-1 b`` for a symmetric positive-definite ``a`` (b a vector or matrix), bit-reproducibly."""
        diag = np.diag(a)
        empty = np.flatnonzero(~(diag > 0))
        if empty.size:
            raise AggregationError(f"newton: {self._coef(int(empty[0]))} carries no information at the current fit "
                                   f"(zero in every row, or rows whose fitted weights vanished). Drop the column or "
                                   f"set federation.l2 > 0")
        d = np.sqrt(diag)
        scale = d[:, None] if b.ndim == 2 else d
        return _cholesky_solve(_cholesky(a / np.outer(d, d), self._coef), b / scale) / scale

    def _coef(self, j: int) -> str:
        if j == 0:
            return "coefficient 0 (Intercept)"
        if self.feature_names is not None and j - 1 < len(self.feature_names):
            return f"coefficient {j} ({self.feature_names[j - 1]})"
        return f"coefficient {j} (column {j - 1} of X)"


# -------------------------------------------------------------------- deterministic linear algebra


def _seqsum(a: np.ndarray) -> float:
    """Left-to-right sum (``cumsum`` is sequential, unlike ``sum`` and ``dot``): the same bits everywhere."""
    return float(np.cumsum(a)[-1]) if a.size else 0.0


def _rowsums(a: np.ndarray) -> np.ndarray:
    return np.cumsum(a, axis=1)[:, -1] if a.shape[1] else np.zeros(a.shape[0])


def _cholesky(c: np.ndarray, name: Callable[[int], str]) -> np.ndarray:
    """Lower Cholesky factor of a unit-diagonal matrix; a tiny pivot names the collinear column."""
    k = c.shape[0]
    low = np.zeros_like(c)
    for j in range(k):
        row = low[j, :j]
        pivot = c[j, j] - _seqsum(row * row)
        if not pivot > COLLINEAR_PIVOT:
            raise AggregationError(f"newton: {name(j)} is (nearly) a linear combination of the columns before it "
                                   f"(collinear design, e.g. every level of a categorical with the intercept): its "
                                   f"coefficient is not identified. Drop the column or set federation.l2 > 0")
        low[j, j] = math.sqrt(pivot)
        low[j + 1:, j] = (c[j + 1:, j] - _rowsums(low[j + 1:, :j] * row)) / low[j, j]
    return low


def _cholesky_solve(low: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(L L')^-1 b`` by forward and back substitution with sequential sums (b a vector or matrix)."""
    k = low.shape[0]
    z = np.zeros_like(b)
    for j in range(k):
        z[j] = (b[j] - _colsum(low[j, :j], z[:j])) / low[j, j]
    x = np.zeros_like(b)
    for j in reversed(range(k)):
        x[j] = (z[j] - _colsum(low[j + 1:, j], x[j + 1:])) / low[j, j]
    return x


def _colsum(coef: np.ndarray, rows: np.ndarray) -> np.ndarray | float:
    """``coef @ rows`` summed in order (rows: a vector or a matrix of right-hand sides)."""
    if rows.ndim == 1:
        return _seqsum(coef * rows)
    prod = coef[:, None] * rows
    return np.cumsum(prod, axis=0)[-1] if prod.shape[0] else np.zeros(rows.shape[1])


# -------------------------------------------------------------------- small helpers


def _scalar(stats: Mapping[str, np.ndarray], name: str) -> float:
    return float(stats[name][0])


def _vec(value: float) -> list[np.ndarray]:
    return [np.array([value], dtype=np.float64)]


def _copy_opt(opt: Mapping[str, Arrays]) -> dict[str, Arrays]:
    return {key: [a.copy() for a in arrays] for key, arrays in opt.items()}


def _check_data(X: np.ndarray, y: np.ndarray, offset: np.ndarray | None, weight: np.ndarray | None, fam: Family,
                p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != p:
        raise DataError(f"X: expected a 2-D array with {p} columns (the model's features, no intercept), got shape "
                        f"{X.shape}")
    n = X.shape[0]
    if not np.all(np.isfinite(X)):
        raise DataError("X: holds NaN or Inf")

    def column(values: np.ndarray | None, what: str, default: float) -> np.ndarray:
        if values is None:
            return np.full(n, default)
        arr = np.asarray(values, dtype=np.float64)
        if arr.shape != (n,):
            raise DataError(f"{what}: expected shape ({n},) to match X, got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise DataError(f"{what}: holds NaN or Inf")
        return arr

    y_arr, off, w = column(y, "y", 0.0), column(offset, "offset", 0.0), column(weight, "weight", 1.0)
    fam.check_y(y_arr)
    if np.any(w <= 0):
        raise DataError("weight: expected positive weights (drop rows of weight 0, e.g. policies without claims for "
                        "a severity model)")
    return X, y_arr, off, w


# -------------------------------------------------------------------- running and reporting


class Covariance(NamedTuple):
    """What :meth:`NewtonRule.covariance` returns: the k x k covariance, the dispersion, the scalar statistics."""

    matrix: np.ndarray
    dispersion: float
    scalars: dict[str, float]


class GLMData(NamedTuple):
    """One institution's rows: the design ``X`` (n, p) without intercept, ``y``, and optional offset and weight."""

    X: np.ndarray
    y: np.ndarray
    offset: np.ndarray | None = None
    weight: np.ndarray | None = None


class NewtonFit(NamedTuple):
    """A converged fit: the state, and the summed statistics that the institutions computed at it."""

    state: ModelState
    total: np.ndarray


def newton_fit(parts: Sequence[GLMData], rule: NewtonRule, *, max_rounds: int = 50,
               sum_stats: Callable[[list[np.ndarray]], np.ndarray] | None = None) -> NewtonFit:
    """Run the federated protocol in one process, on several institutions' rows.

    For the centralized baseline (one part: the pooled rows), each institution's local baseline (one
    part each), and tests. It stops at the first round whose state is :meth:`NewtonRule.report_ready`,
    so ``total`` is at the fitted coefficients and dispersion (what :meth:`GLMResults.from_newton` needs).

    Parameters
    ----------
    parts : sequence of GLMData
        One entry per institution.
    rule : NewtonRule
        The family, penalty and tolerance.
    max_rounds : int
        Rounds before giving up.
    sum_stats : callable, optional
        How the institutions' vectors are summed (default :meth:`NewtonRule.combine`); for example
        encrypt, ``he.aggregate`` and decrypt.

    Raises
    ------
    AggregationError
        No convergence within ``max_rounds``, or any error of :meth:`NewtonRule.apply`.
    """
    if not parts:
        raise AggregationError("newton: no institutions")
    state = ModelState(beta_to_params(np.zeros(np.shape(parts[0].X)[1] + 1)))
    for _ in range(max_rounds):
        inputs = round_inputs(state)
        vecs = [local_stats(part.X, part.y, state.params, rule.family.name, part.offset, part.weight,
                            rule.tweedie_power, **inputs) for part in parts]
        total = rule.combine([[v] for v in vecs], [1.0] * len(vecs))[0] if sum_stats is None else sum_stats(vecs)
        if rule.report_ready(state):
            return NewtonFit(state, np.asarray(total, dtype=np.float64))
        state = rule.apply(state, [total])
    raise AggregationError(f"newton: the fit did not converge in {max_rounds} rounds")
