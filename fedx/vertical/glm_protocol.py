"""Run the vertical GLM in one process (simulation, tests, benchmarks), and its result.

:func:`fit_vertical_glm` passes the parties' bytes messages to each other, the way a relay would, records the
bytes and seconds of every Newton round, and can append every message that leaves a party to that party's
audit ledger. The result mirrors statsmodels' names (``params``, ``bse``, ``deviance``, ``aic``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..aggregators.glm_results import GLMResults
from ..aggregators.newton import GLMData, NewtonRule, newton_fit
from ..errors import AggregationError
from ..privacy.audit import AuditLedger
from .glm_parties import FeatureParty, LabelParty

__all__ = ["VerticalGLMResult", "fit_vertical_glm"]


@dataclass
class VerticalGLMResult:
    """A fitted vertical GLM, with statsmodels' names.

    Attributes
    ----------
    params, bse : dict of str to float
        Coefficients and standard errors, named ``Intercept``, ``party:column``.
    deviance, null_deviance, aic, llf, scale : float
        As statsmodels' ``GLMResults`` (``aic`` and ``llf`` at the estimated dispersion).
    label_only_deviance, label_only_aic : float
        The same model on the label party's features alone (its own rows, no protocol).
    lift : float
        ``1 - deviance / label_only_deviance``: the share of the label party's own deviance that the
        feature party's columns explain.
    results : GLMResults
        The joint fit as a results object (``conf_int(alpha)``, ``relativities(alpha)``, ``summary()``).
    report : dict
        ``results.to_dict()`` (z, p-values, 95% relativities, ...).
    history : list of dict
        Per Newton round: ``round``, ``seconds`` (wall), ``cpu_seconds`` (this process), ``bytes_up`` (label to feature party), ``bytes_down``.
    """

    params: dict[str, float]
    bse: dict[str, float]
    deviance: float
    null_deviance: float
    aic: float | None
    llf: float | None
    scale: float
    nobs: int
    iterations: int
    label_only_deviance: float
    label_only_aic: float | None
    lift: float
    report: dict[str, Any]
    results: GLMResults
    history: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for result.json's ``model``)."""
        return {"params": self.params, "bse": self.bse, "deviance": self.deviance,
                "null_deviance": self.null_deviance, "aic": self.aic, "llf": self.llf, "scale": self.scale,
                "nobs": self.nobs, "iterations": self.iterations, "label_only_deviance": self.label_only_deviance,
                "label_only_aic": self.label_only_aic, "lift": self.lift, "coefficients": self.report["coefficients"],
                "history": self.history}


def fit_vertical_glm(label: LabelParty, features: Mapping[str, FeatureParty] | FeatureParty, *,
                     max_rounds: int = 60, ledgers: Mapping[str, AuditLedger] | None = None) -> VerticalGLMResult:
    """Fit the GLM of ``label`` with the columns of ``features`` by the vertical Newton protocol.

    Parameters
    ----------
    label : LabelParty
        The party with the target.
    features : FeatureParty or mapping of name to FeatureParty
        The feature party (one, so far).
    max_rounds : int
        Message exchanges before giving up (a Newton round is one or two exchanges).
    ledgers : mapping of party name to AuditLedger, optional
        Each message that leaves a party is appended to its ledger (``kind`` ``vertical_glm``).

    Raises
    ------
    AggregationError
        No convergence within ``max_rounds``, or any error of the Newton rule.
    """
    parties = {features.name: features} if isinstance(features, FeatureParty) else dict(features)
    outbox = label.start({name: party.names for name, party in parties.items()})
    history: list[dict[str, Any]] = []
    for exchange in range(max_rounds):
        rnd = 0 if label.state is None else label.state.round
        t0, c0 = time.perf_counter(), time.process_time()
        replies = {}
        for name, data in outbox.items():
            if ledgers and label.name in ledgers:
                ledgers[label.name].append(round=rnd, kind="vertical_glm", payload=data)
            replies[name] = parties[name].respond(data)
            if ledgers and name in ledgers:
                ledgers[name].append(round=rnd, kind="vertical_glm", payload=replies[name])
        up, down = sum(map(len, outbox.values())), sum(map(len, replies.values()))
        outbox = label.receive(replies)
        step = {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0, "bytes_up": up,
                "bytes_down": down}
        if history and history[-1]["round"] == rnd:  # the unmask exchange belongs to the same Newton round
            for key, value in step.items():
                history[-1][key] += value
        else:
            history.append({"round": rnd, **step})
        if label.done:
            return _result(label, history)
    raise AggregationError(f"vertical newton: the fit did not converge in {max_rounds} exchanges")


def _result(label: LabelParty, history: list[dict[str, Any]]) -> VerticalGLMResult:
    assert label.state is not None and label.rule is not None and label.total is not None
    names = label.coefficient_names()
    results = GLMResults.from_newton(label.total, label.state, label.rule, names[1:])
    report = results.to_dict()
    alone = NewtonRule(label.fam.name, l2=label.l2, tweedie_power=label.tweedie_power, tolerance=label.tolerance)
    exposure = np.exp(label.offset)
    fit = newton_fit([GLMData(label.X, label.y, np.log(exposure), label.w)], alone)
    own = GLMResults.from_newton(fit.total, fit.state, alone, label.names).to_dict()
    coefs = report["coefficients"]
    return VerticalGLMResult(
        params={c["name"]: c["estimate"] for c in coefs}, bse={c["name"]: c["std_error"] for c in coefs},
        deviance=report["deviance"], null_deviance=report["null_deviance"], aic=report["aic"],
        llf=report["loglike"], scale=report["dispersion"], nobs=report["nobs"], iterations=report["iterations"],
        label_only_deviance=own["deviance"], label_only_aic=own["aic"],
        lift=1.0 - report["deviance"] / own["deviance"] if own["deviance"] > 0 else 0.0, report=report,
        results=results,
        history=history)
