"""Run the vertical GLM in one process (simulation, tests, benchmarks), and its result.

:func:`fit_vertical_glm` passes the parties' bytes messages to each other, the way a relay would, records the
bytes and seconds of every Newton round, and can append every message that leaves a party to that party's
audit ledger. The result mirrors statsmodels' names (``params``, ``bse``, ``deviance``, ``aic``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..aggregators.glm_results import GLMResults
from ..aggregators.newton import GLMData, NewtonRule, newton_fit
from ..errors import AggregationError
from ..privacy.audit import AuditLedger
from .glm_messages import message_kind
from .glm_parties import FeatureParty, LabelParty

__all__ = ["VerticalGLMResult", "evaluate_vertical_glm", "exchange", "fit_vertical_glm", "vertical_result"]


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
    label_only : GLMResults
        The label party's own fit (its features alone, on the shared rows).
    results : GLMResults
        The joint fit as a results object (``conf_int(alpha)``, ``relativities(alpha)``, ``summary()``).
    report : dict
        ``results.to_dict()`` (z, p-values, 95% relativities, ...).
    history : list of dict
        Per Newton round (round 0 is the setup): ``round``, ``seconds`` (wall) and ``cpu_seconds`` (this
        process) of the parties' computing, ``bytes_up`` (label to feature parties), ``bytes_down`` (feature
        parties to label), ``bytes_between`` (feature party to feature party), ``messages``.
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
    label_only: GLMResults | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for result.json's ``model``)."""
        return {"params": self.params, "bse": self.bse, "deviance": self.deviance,
                "null_deviance": self.null_deviance, "aic": self.aic, "llf": self.llf, "scale": self.scale,
                "nobs": self.nobs, "iterations": self.iterations, "label_only_deviance": self.label_only_deviance,
                "label_only_aic": self.label_only_aic, "lift": self.lift, "coefficients": self.report["coefficients"],
                "history": self.history}


def fit_vertical_glm(label: LabelParty, features: Mapping[str, FeatureParty] | FeatureParty, *,
                     max_rounds: int = 60, ledgers: Mapping[str, AuditLedger] | None = None,
                     relay: Callable[[str, str, int, bytes], None] | None = None,
                     on_round: Callable[[dict[str, Any]], None] | None = None) -> VerticalGLMResult:
    """Fit the GLM of ``label`` with the columns of ``features`` by the vertical Newton protocol.

    The messages pass through an in-memory relay that only forwards them, in the order they are sent.

    Parameters
    ----------
    label : LabelParty
        The party with the target.
    features : FeatureParty or mapping of name to FeatureParty
        The feature parties, in the order of the coefficients (the first holds the two-key variant's key).
    max_rounds : int
        Newton rounds before giving up.
    ledgers : mapping of party name to AuditLedger, optional
        Each message that leaves a party is appended to its ledger (``kind`` ``glm-<message kind>``).
    relay : callable, optional
        Called with ``(sender, receiver, round, message)`` for every message forwarded (what a relay sees).
    on_round : callable, optional
        Called with each finished Newton round's entry of ``history`` (and ``deviance``, the label party's
        deviance at that round's coefficients).

    Raises
    ------
    AggregationError
        No convergence within ``max_rounds``, or any error of the Newton rule.
    """
    history = exchange(label, features, max_rounds=max_rounds, ledgers=ledgers, relay=relay, on_round=on_round)
    return vertical_result(label, history)


def evaluate_vertical_glm(label: LabelParty, features: Mapping[str, FeatureParty] | FeatureParty, *,
                          ledgers: Mapping[str, AuditLedger] | None = None,
                          relay: Callable[[str, str, int, bytes], None] | None = None) -> float:
    """The deviance, over the rows of ``label`` and ``features``, of the coefficients that ``label`` was built
    to evaluate (``LabelParty(..., evaluate=beta)``): one setup and one round of the protocol, no fit."""
    if label._evaluate is None:
        raise AggregationError("evaluate_vertical_glm: the label party was not given coefficients to evaluate")
    exchange(label, features, max_rounds=1, ledgers=ledgers, relay=relay, kind="glm-test")
    assert label.last_deviance is not None
    return label.last_deviance


def exchange(label: LabelParty, features: Mapping[str, FeatureParty] | FeatureParty, *, max_rounds: int = 60,
             ledgers: Mapping[str, AuditLedger] | None = None,
             relay: Callable[[str, str, int, bytes], None] | None = None,
             on_round: Callable[[dict[str, Any]], None] | None = None, kind: str = "glm") -> list[dict[str, Any]]:
    """Pass the parties' messages to each other until the label party is done; the history of the rounds.

    Messages are delivered in the order they are sent; each is recorded in its sender's ledger (``kind``
    ``<kind>-<message kind>``) and shown to ``relay``.
    """
    parties = {features.name: features} if isinstance(features, FeatureParty) else dict(features)
    opening = label.start({name: party.names for name, party in parties.items()})
    queue: deque[tuple[str, str, bytes]] = deque((label.name, to, data) for to, data in opening.items())
    history: list[dict[str, Any]] = []
    step = _new_step(0)
    while queue:
        sender, to, data = queue.popleft()
        rnd = label.round
        if rnd != step["round"]:
            _close(step, history, on_round, label)
            step = _new_step(rnd)
            if rnd > max_rounds:
                raise AggregationError(f"vertical newton: the fit did not converge in {max_rounds} Newton rounds")
        if ledgers and sender in ledgers:
            ledgers[sender].append(round=rnd, kind=f"{kind}-{message_kind(data)}", payload=data)
        if relay is not None:
            relay(sender, to, rnd, data)
        direction = "bytes_up" if sender == label.name else "bytes_down" if to == label.name else "bytes_between"
        step[direction] += len(data)
        step["messages"] += 1
        t0, c0 = time.perf_counter(), time.process_time()
        if to == label.name:
            out = label.receive_from(sender, data)
        elif to in parties:
            out = parties[to].receive(sender, data)
        else:
            raise AggregationError(f"vertical newton: a message for {to!r}, which is no party of this fit")
        step["seconds"] += time.perf_counter() - t0
        step["cpu_seconds"] += time.process_time() - c0
        queue.extend((to, receiver, message) for receiver, message in out.items())
        if label.done:
            _close(step, history, on_round, label)
            return history
    raise AggregationError("vertical newton: the parties stopped exchanging messages before the fit converged")


def _new_step(rnd: int) -> dict[str, Any]:
    return {"round": rnd, "seconds": 0.0, "cpu_seconds": 0.0, "bytes_up": 0, "bytes_down": 0, "bytes_between": 0,
            "messages": 0}


def _close(step: dict[str, Any], history: list[dict[str, Any]], on_round: Callable[[dict[str, Any]], None] | None,
           label: LabelParty) -> None:
    history.append(step)
    if on_round is not None:
        on_round({**step, "deviance": label.last_deviance})


def vertical_result(label: LabelParty, history: list[dict[str, Any]]) -> VerticalGLMResult:
    """The result of a finished fit, from the label party (which holds every coefficient) and the rounds' history."""
    assert label.state is not None and label.rule is not None and label.total is not None
    names = label.coefficient_names()
    results = GLMResults.from_newton(label.total, label.state, label.rule, names[1:], label.reference_levels)
    report = results.to_dict()
    alone = NewtonRule(label.fam.name, l2=label.l2, tweedie_power=label.tweedie_power, tolerance=label.tolerance)
    exposure = np.exp(label.offset)
    fit = newton_fit([GLMData(label.X, label.y, np.log(exposure), label.w)], alone)
    own_results = GLMResults.from_newton(fit.total, fit.state, alone, [f"{label.name}:{c}" for c in label.names],
                                         label.reference_levels)
    own = own_results.to_dict()
    coefs = report["coefficients"]
    return VerticalGLMResult(
        params={c["name"]: c["estimate"] for c in coefs}, bse={c["name"]: c["std_error"] for c in coefs},
        deviance=report["deviance"], null_deviance=report["null_deviance"], aic=report["aic"],
        llf=report["loglike"], scale=report["dispersion"], nobs=report["nobs"], iterations=report["iterations"],
        label_only_deviance=own["deviance"], label_only_aic=own["aic"],
        lift=1.0 - report["deviance"] / own["deviance"] if own["deviance"] > 0 else 0.0, report=report,
        results=results, history=history, label_only=own_results)
