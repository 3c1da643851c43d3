"""Client-level differential privacy of federated training (DP-FedAvg), and its accounting.

DP-FedAvg (McMahan et al., 2018) bounds what the trained model reveals about any one institution:

- :func:`clip_update` scales each institution's update to L2 norm at most ``clip``, so that one
  institution moves the sum of updates by at most ``clip``. Under DP every participating institution
  counts equally (weight 1), so the federation's mean is the plain mean of the clipped updates.
- With encryption on, noise is *distributed*: each of the ``n`` institutions of a round adds its
  :func:`noise_share`, ``N(0, (noise_multiplier * clip)^2 / n)`` per value, before encrypting; the
  decrypted sum then carries ``N(0, (noise_multiplier * clip)^2)``, the noise of central DP-FedAvg.
  :func:`privatize_update` does both steps at an institution.
- With encryption off, institutions only clip, and the server adds :func:`central_noise` to the sum.
- :func:`effective_noise_multiplier` is the noise that a round actually carried when fewer shares
  arrived than expected (dropouts), or against an adversary who knows some shares (its own).
- :class:`ClientDPAccountant` wraps Opacus' RDP accountant; :func:`check_budget` says how many rounds
  fit in ``security.dp.target_epsilon``.

Sample-level DP-SGD (``security.dp.level: sample``) wraps torch objects, so it lives with local
training: :class:`fedx.tasks.training.SampleDP`. This module imports numpy and Opacus' accountants,
never flwr or tenseal. docs/privacy.md says what each epsilon means.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis import rdp as rdp_analysis

from ..config import DPConfig
from ..errors import ConfigError, PrivacyBudgetError, UpdateRejected

#: The accountant named in reports.
ACCOUNTANT = "rdp (opacus)"

#: Opacus' accountant history: ``(noise_multiplier, sample_rate, steps)`` per run of equal steps.
History = list[tuple[float, float, int]]


# --------------------------------------------------------------------------- clipping and noise


def clip_update(arrays: Sequence[np.ndarray], clip: float) -> tuple[list[np.ndarray], float, float]:
    """Scale one institution's update so that its global L2 norm is at most ``clip``.

    Parameters
    ----------
    arrays : sequence of np.ndarray
        The update (floating point), taken as one vector across all arrays.
    clip : float
        The L2 bound (``security.dp.clip``).

    Returns
    -------
    clipped : list of np.ndarray
        ``arrays * scale``, computed in float64 and returned in the input dtypes (float32 rounding can
        leave the norm above ``clip`` by a relative 1e-7).
    norm : float
        The L2 norm before clipping.
    scale : float
        ``min(1, clip / norm)``.

    Raises
    ------
    UpdateRejected
        If the update holds NaN or Inf.
    """
    _check_positive("clip", clip)
    norm = math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays))
    if not math.isfinite(norm):
        raise UpdateRejected("clip_update: the update holds NaN or Inf; it cannot be clipped")
    scale = clip / norm if norm > clip else 1.0
    return [(np.asarray(a, dtype=np.float64) * scale).astype(a.dtype) for a in arrays], norm, scale


def noise_share(shapes: Sequence[tuple[int, ...]], clip: float, noise_multiplier: float, n_clients: int,
                rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """One institution's share of the round's Gaussian noise: ``N(0, (noise_multiplier * clip)^2 / n_clients)``.

    The shares of ``n_clients`` institutions add up to ``N(0, (noise_multiplier * clip)^2)`` per value,
    the noise that central DP-FedAvg adds to the sum of clipped updates.

    Parameters
    ----------
    shapes : sequence of tuple of int
        The shapes of the update's arrays.
    clip, noise_multiplier : float
        ``security.dp.clip`` and ``security.dp.noise_multiplier``.
    n_clients : int
        Institutions expected in the round (those the server sampled).
    rng : np.random.Generator, optional
        Source of the noise, for tests only. None (the default) seeds a fresh generator from the
        operating system's entropy, so that nobody else can predict or subtract this share.

    Returns
    -------
    list of np.ndarray
        float64 noise, one array per shape.
    """
    _check_count("n_clients", n_clients)
    return _gaussian(shapes, _noise_std(clip, noise_multiplier) / math.sqrt(n_clients), rng)


def central_noise(shapes: Sequence[tuple[int, ...]], clip: float, noise_multiplier: float,
                  rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """The server's noise on the SUM of clipped updates when encryption is off: ``N(0, (noise_multiplier * clip)^2)``.

    Add it to the sum before dividing by the number of updates summed (equivalently, add
    ``noise / k`` to the plain mean of ``k`` updates). ``rng`` is as in :func:`noise_share`.
    """
    return _gaussian(shapes, _noise_std(clip, noise_multiplier), rng)


def privatize_update(delta: Sequence[np.ndarray], clip: float, noise_multiplier: float, n_clients: int,
                     rng: np.random.Generator | None = None, *,
                     distributed: bool) -> tuple[list[np.ndarray], dict[str, float | bool]]:
    """Clip an institution's update and, with ``distributed``, add its noise share (do this before encrypting).

    Parameters
    ----------
    delta : sequence of np.ndarray
        The update (new minus old parameters).
    clip, noise_multiplier : float
        ``security.dp.clip`` and ``security.dp.noise_multiplier``.
    n_clients : int
        Institutions expected in the round (ignored without ``distributed``).
    rng : np.random.Generator, optional
        For tests only; see :func:`noise_share`.
    distributed : bool
        True under encryption: add this institution's share of the noise. False in plaintext: clip
        only, and the server adds :func:`central_noise`.

    Returns
    -------
    noised : list of np.ndarray
        The update to send, in the input dtypes; send it with weight 1 (uniform weighting).
    report : dict
        ``norm`` (before clipping) and ``clipped`` (whether it was scaled down). Both depend on the
        data without noise: keep them in local logs, never send them to the server.
    """
    clipped, norm, scale = clip_update(delta, clip)
    report: dict[str, float | bool] = {"norm": norm, "clipped": scale < 1.0}
    if not distributed:
        return clipped, report
    shares = noise_share([a.shape for a in clipped], clip, noise_multiplier, n_clients, rng)
    return [(a.astype(np.float64) + z).astype(a.dtype) for a, z in zip(clipped, shares)], report


def effective_noise_multiplier(noise_multiplier: float, n_expected: int, n_arrived: int, n_known: int = 0) -> float:
    """The noise multiplier that a round's sum really carried, against an adversary who knows ``n_known`` shares.

    It is ``noise_multiplier * sqrt((n_arrived - n_known) / n_expected)``. Each of ``n_expected`` shares
    has variance ``(noise_multiplier * clip)^2 / n_expected``; only the ``n_arrived`` that reached the
    sum count, and an adversary can subtract the shares it knows (an institution knows its own:
    ``n_known=1``). Step the accountant with this value: it is conservative when fewer shares arrive
    than expected.

    Raises
    ------
    ConfigError
        Unless ``1 <= n_expected`` and ``0 <= n_known <= n_arrived <= n_expected``.
    """
    _check_count("n_expected", n_expected)
    if not (0 <= n_known <= n_arrived <= n_expected):
        raise ConfigError(f"effective_noise_multiplier: expected 0 <= n_known <= n_arrived <= n_expected, got "
                          f"n_known={n_known}, n_arrived={n_arrived}, n_expected={n_expected}")
    _check_positive("noise_multiplier", noise_multiplier, allow_zero=True)
    return noise_multiplier * math.sqrt((n_arrived - n_known) / n_expected)


def noised_value_bound(clip: float, noise_multiplier: float, n_clients: int, tail: float = 6.0) -> float:
    """A bound on |value| of a clipped and noised update: ``clip + tail * noise_multiplier * clip / sqrt(n_clients)``.

    A value of a clipped update is at most ``clip``, and a noise value exceeds ``tail`` standard
    deviations with probability ``erfc(tail / sqrt(2))`` (2e-9 at 6). The ``bfv-compact`` preset clips
    values to ``security.he.clip`` before quantizing them, which would cut the noise's tails: set that
    clip to at least this bound.
    """
    _check_count("n_clients", n_clients)
    return clip + tail * _noise_std(clip, noise_multiplier) / math.sqrt(n_clients)


def _noise_std(clip: float, noise_multiplier: float) -> float:
    _check_positive("clip", clip)
    _check_positive("noise_multiplier", noise_multiplier, allow_zero=True)
    return noise_multiplier * clip


def _gaussian(shapes: Sequence[tuple[int, ...]], std: float, rng: np.random.Generator | None) -> list[np.ndarray]:
    gen = np.random.default_rng() if rng is None else rng
    return [gen.normal(0.0, std, size=tuple(shape)) for shape in shapes]


# --------------------------------------------------------------------------- accounting


class ClientDPAccountant:
    """Privacy spent by the federation's noisy rounds, from Opacus' RDP accountant.

    One step is one round: a sampled Gaussian mechanism on the sum of clipped updates, with
    sensitivity ``clip`` (one institution added or removed, or its update replaced by zeros).

    Parameters
    ----------
    noise_multiplier : float
        The noise of a round, over ``clip``, when every sampled institution's share arrives.
    sample_rate : float
        Institutions sampled per round / institutions in the federation (1.0 when all take part).
        Opacus' analysis assumes Poisson sampling (each institution joins each round independently
        with this probability). For a fixed-size sample it is an approximation, not a proven bound;
        1.0 is a valid bound for any sampling.
    delta : float
        The delta of the reported (epsilon, delta).
    clip : float, optional
        ``security.dp.clip``, carried into :meth:`report`.
    """

    def __init__(self, noise_multiplier: float, sample_rate: float, delta: float, clip: float | None = None) -> None:
        _check_positive("noise_multiplier", noise_multiplier, allow_zero=True)
        _check_rate("sample_rate", sample_rate)
        if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not 0 < delta < 1:
            raise ConfigError(f"security.dp.delta: expected a number in (0, 1), got {delta!r}")
        if clip is not None:
            _check_positive("clip", clip)
        self.noise_multiplier = float(noise_multiplier)
        self.sample_rate = float(sample_rate)
        self.delta = float(delta)
        self.clip = clip
        self._rdp = RDPAccountant()

    @classmethod
    def from_config(cls, dp: DPConfig, sample_rate: float) -> ClientDPAccountant:
        """An accountant for ``security.dp`` at ``sample_rate``."""
        return cls(dp.noise_multiplier, sample_rate, dp.delta, dp.clip)

    @property
    def steps(self) -> int:
        """Rounds accounted so far."""
        return sum(n for _, _, n in self._rdp.history)

    @property
    def history(self) -> History:
        """``(noise_multiplier, sample_rate, steps)`` of each run of equal rounds, oldest first."""
        return list(self._rdp.history)

    def step(self, noise_multiplier: float | None = None, sample_rate: float | None = None) -> None:
        """Account one round, at the configured values unless given (for example after dropouts)."""
        sigma, q = self._params(noise_multiplier, sample_rate)
        self._rdp.step(noise_multiplier=sigma, sample_rate=q)

    def epsilon(self) -> float:
        """Epsilon spent so far, at ``delta`` (0.0 before the first round)."""
        return self._epsilon(self._rdp.history)

    def epsilon_after(self, rounds: int = 1, noise_multiplier: float | None = None,
                      sample_rate: float | None = None) -> float:
        """Epsilon after ``rounds`` more rounds, computed on a copy of the history (nothing is stepped)."""
        _check_count("rounds", rounds, lo=0)
        sigma, q = self._params(noise_multiplier, sample_rate)
        return self._epsilon([*self._rdp.history, (sigma, q, rounds)] if rounds else self._rdp.history)

    def would_exceed(self, target_epsilon: float, noise_multiplier: float | None = None,
                     sample_rate: float | None = None) -> bool:
        """Whether one more round would take epsilon above ``target_epsilon`` (nothing is stepped)."""
        return self.epsilon_after(1, noise_multiplier, sample_rate) > target_epsilon

    def state_dict(self) -> dict[str, Any]:
        """The accounting state, as plain JSON values, for checkpoints."""
        return {"mechanism": self._rdp.mechanism(), "history": [list(h) for h in self._rdp.history]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (a JSON round trip is fine)."""
        history = [(float(s), float(q), int(n)) for s, q, n in state.get("history", [])]
        self._rdp.load_state_dict({"mechanism": state.get("mechanism"), "history": history})

    def report(self) -> dict[str, Any]:
        """``epsilon, delta, noise_multiplier, clip, sample_rate, steps, accountant, history`` for result.json."""
        return {"epsilon": self.epsilon(), "delta": self.delta, "noise_multiplier": self.noise_multiplier,
                "clip": self.clip, "sample_rate": self.sample_rate, "steps": self.steps,
                "accountant": ACCOUNTANT, "history": self.state_dict()["history"]}

    def _params(self, noise_multiplier: float | None, sample_rate: float | None) -> tuple[float, float]:
        sigma = self.noise_multiplier if noise_multiplier is None else float(noise_multiplier)
        q = self.sample_rate if sample_rate is None else float(sample_rate)
        _check_positive("noise_multiplier", sigma, allow_zero=True)
        _check_rate("sample_rate", q)
        return sigma, q

    def _epsilon(self, history: Sequence[tuple[float, float, int]]) -> float:
        """``RDPAccountant.get_epsilon`` of ``history``, with each (noise, rate) pair's RDP computed once.

        Opacus recomputes the RDP of every history entry on each call (0.25 s per entry at a sample
        rate below 1), and rounds with dropouts add entries. The sum is the same as Opacus' own:
        ``compute_rdp(steps=n)`` is ``n`` times ``compute_rdp(steps=1)``.
        """
        if not history:
            return 0.0
        rdp = sum(n * _rdp_of_one_step(sigma, q) for sigma, q, n in history)
        epsilon, _ = rdp_analysis.get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=self.delta)
        return float(epsilon)


@functools.lru_cache(maxsize=1024)
def _rdp_of_one_step(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    """Opacus' RDP of one sampled Gaussian mechanism at its default orders (read-only: it is cached)."""
    rdp = np.asarray(rdp_analysis.compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1,
                                              orders=RDPAccountant.DEFAULT_ALPHAS), dtype=np.float64)
    rdp.flags.writeable = False
    return rdp


def check_budget(accountant: ClientDPAccountant, target_epsilon: float, rounds_planned: int, *,
                 noise_multiplier: float | None = None) -> int:
    """How many more rounds (at most ``rounds_planned``) keep epsilon within ``target_epsilon``.

    Parameters
    ----------
    accountant : ClientDPAccountant
        What has been spent so far (not changed).
    target_epsilon : float
        ``security.dp.target_epsilon``.
    rounds_planned : int
        Rounds still to run.
    noise_multiplier : float, optional
        The noise multiplier of each future round; the accountant's by default. Pass
        ``effective_noise_multiplier(sigma, n, min_clients)`` to stay within budget however many
        institutions drop out.

    Raises
    ------
    PrivacyBudgetError
        If not even one more round fits; the message gives the numbers.
    """
    _check_positive("target_epsilon", target_epsilon)
    _check_count("rounds_planned", rounds_planned)
    if accountant.epsilon_after(rounds_planned, noise_multiplier) <= target_epsilon:
        return rounds_planned
    lo, hi = 0, rounds_planned  # epsilon grows with rounds: lo fits (or is 0), hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if accountant.epsilon_after(mid, noise_multiplier) <= target_epsilon:
            lo = mid
        else:
            hi = mid
    if lo == 0:
        sigma = accountant.noise_multiplier if noise_multiplier is None else noise_multiplier
        raise PrivacyBudgetError(
            f"security.dp.target_epsilon: {target_epsilon:g} allows no further round: one more round would "
            f"bring epsilon to {accountant.epsilon_after(1, noise_multiplier):.4g} (now {accountant.epsilon():.4g} "
            f"after {accountant.steps} round(s); noise_multiplier {sigma:g}, sample_rate "
            f"{accountant.sample_rate:g}, delta {accountant.delta:g}). Raise target_epsilon or noise_multiplier")
    return lo


# --------------------------------------------------------------------------- validation


def _check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
          and (value >= 0 if allow_zero else value > 0))
    if not ok:
        raise ConfigError(f"security.dp.{name}: expected a number {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def _check_rate(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value <= 1:
        raise ConfigError(f"security.dp.{name}: expected a number in (0, 1], got {value!r}")


def _check_count(name: str, value: int, lo: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise ConfigError(f"{name}: expected an integer >= {lo}, got {value!r}")
