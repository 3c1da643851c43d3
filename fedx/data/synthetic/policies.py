"""Synthetic motor insurance policies of several insurers, with a known claim frequency and severity.

Each policy has rating factors, an exposure in years (0, 1] and, given them,

- ``claim_count`` ~ Poisson(exposure * exp(x'beta_freq)),
- each claim's cost ~ Gamma(shape :data:`GAMMA_SHAPE`, mean exp(x'beta_sev)), so that the total
  ``claim_amount`` of a policy with n claims is Gamma(shape * n) and its mean ``avg_severity`` is
  Gamma with shape ``GAMMA_SHAPE * n`` and the same mean (a Gamma GLM with weights n).

``x`` is the design row with treatment coding: an intercept, the numeric factors as they are, and
one ``factor[T.level]`` indicator for each level after the first in sorted order, as statsmodels
names them. :data:`TRUE_FREQUENCY_COEFFICIENTS` and :data:`TRUE_SEVERITY_COEFFICIENTS` hold beta.
Insurers differ in size and in portfolio mix (young urban drivers, older rural ones, new cars...),
never in the truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ...errors import ConfigError
from .profiles import check_shares, resized

POLICY_LEVELS: dict[str, tuple[str, ...]] = {
    "region": ("capital", "coast", "north", "south"),
    "vehicle_group": ("A", "B", "C", "D"),
    "fuel": ("diesel", "electric", "petrol"),
}
"""Levels of the categorical rating factors, sorted: the first is the reference level."""

POLICY_FEATURES: dict[str, str] = {
    "driver_age": "numeric",
    "vehicle_age": "numeric",
    "bonus_malus": "numeric",
    "region": "categorical",
    "vehicle_group": "categorical",
    "fuel": "categorical",
}
"""The rating factors of :func:`generate_policies` and their kinds."""

TRUE_FREQUENCY_COEFFICIENTS: dict[str, float] = {
    "intercept": -2.4,
    "driver_age": -0.012,
    "vehicle_age": -0.015,
    "bonus_malus": 0.012,
    "region[T.coast]": -0.15,
    "region[T.north]": -0.35,
    "region[T.south]": -0.25,
    "vehicle_group[T.B]": 0.10,
    "vehicle_group[T.C]": 0.20,
    "vehicle_group[T.D]": 0.35,
    "fuel[T.electric]": -0.10,
    "fuel[T.petrol]": -0.05,
}
"""log of the expected number of claims per year of exposure: ``intercept + sum(coef * column)``."""

TRUE_SEVERITY_COEFFICIENTS: dict[str, float] = {
    "intercept": 7.6,
    "driver_age": -0.004,
    "vehicle_age": -0.03,
    "bonus_malus": 0.002,
    "region[T.coast]": -0.05,
    "region[T.north]": -0.20,
    "region[T.south]": -0.15,
    "vehicle_group[T.B]": 0.15,
    "vehicle_group[T.C]": 0.30,
    "vehicle_group[T.D]": 0.50,
    "fuel[T.electric]": 0.25,
    "fuel[T.petrol]": -0.05,
}
"""log of the expected cost of one claim."""

GAMMA_SHAPE = 2.0
"""Shape of the Gamma distribution of one claim's cost (coefficient of variation 1/sqrt(2))."""


@dataclass(frozen=True)
class InsurerProfile:
    """One insurer's portfolio.

    Parameters
    ----------
    name : str
        The value of the ``insurer`` column.
    n_policies : int
        Number of policies.
    driver_age : (mean, sd)
        Drivers' ages are normal, rounded and kept within 18-90.
    vehicle_age : float
        Mean vehicle age in years (Poisson, at most 25).
    region_mix, vehicle_group_mix, fuel_mix : tuple of floats
        Shares of the levels of :data:`POLICY_LEVELS`, in that order.
    full_year_share : float
        Share of policies in force all year (exposure 1); the others run 1-364 days.
    """

    name: str
    n_policies: int
    driver_age: tuple[float, float] = (45.0, 14.0)
    vehicle_age: float = 7.0
    region_mix: tuple[float, ...] = (0.25, 0.25, 0.25, 0.25)
    vehicle_group_mix: tuple[float, ...] = (0.35, 0.35, 0.2, 0.1)
    fuel_mix: tuple[float, ...] = (0.4, 0.1, 0.5)
    full_year_share: float = 0.7

    def __post_init__(self) -> None:
        where = f"insurer {self.name!r}"
        for name in ("driver_age", "region_mix", "vehicle_group_mix", "fuel_mix"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"insurer name: expected a non-empty string, got {self.name!r}")
        if self.n_policies < 1:
            raise ConfigError(f"{where}: n_policies must be at least 1, got {self.n_policies}")
        if len(self.driver_age) != 2 or not 18 <= self.driver_age[0] <= 90 or self.driver_age[1] <= 0:
            raise ConfigError(f"{where}: driver_age must be (mean, sd) with 18 <= mean <= 90 and sd > 0, "
                              f"got {self.driver_age}")
        if not 0 <= self.vehicle_age <= 25:
            raise ConfigError(f"{where}: vehicle_age must be in [0, 25], got {self.vehicle_age}")
        for factor, levels in POLICY_LEVELS.items():
            check_shares(getattr(self, f"{factor}_mix"), len(levels), f"{where}: {factor}_mix")
        if not 0.0 <= self.full_year_share <= 1.0:
            raise ConfigError(f"{where}: full_year_share must be in [0, 1], got {self.full_year_share}")


DEFAULT_INSURERS: tuple[InsurerProfile, ...] = (
    InsurerProfile("insurer_a", 35_000, (45.0, 14.0), 7.0, (0.30, 0.30, 0.20, 0.20), (0.35, 0.35, 0.20, 0.10),
                   (0.40, 0.10, 0.50), 0.70),
    InsurerProfile("insurer_b", 25_000, (29.0, 8.0), 9.0, (0.70, 0.15, 0.05, 0.10), (0.30, 0.30, 0.25, 0.15),
                   (0.20, 0.05, 0.75), 0.50),
    InsurerProfile("insurer_c", 20_000, (58.0, 12.0), 10.0, (0.05, 0.15, 0.45, 0.35), (0.45, 0.35, 0.15, 0.05),
                   (0.60, 0.02, 0.38), 0.80),
    InsurerProfile("insurer_d", 12_000, (48.0, 11.0), 3.0, (0.50, 0.30, 0.10, 0.10), (0.10, 0.20, 0.35, 0.35),
                   (0.10, 0.50, 0.40), 0.60),
    InsurerProfile("insurer_e", 8_000, (40.0, 15.0), 8.0, (0.20, 0.50, 0.10, 0.20), (0.30, 0.30, 0.25, 0.15),
                   (0.35, 0.10, 0.55), 0.60),
)
"""Five insurers, 100,000 policies: a general one, young urban, older rural, new premium cars, a small one."""


def generate_policies(insurers: Sequence[InsurerProfile] = DEFAULT_INSURERS, *,
                      sizes: Sequence[int] | None = None, seed: int = 7) -> pd.DataFrame:
    """Motor policies of several insurers, with claims drawn from the declared truth.

    Parameters
    ----------
    insurers : sequence of InsurerProfile
        The insurers, with distinct names.
    sizes : sequence of int, optional
        Numbers of policies that replace the insurers' ``n_policies``, in order.
    seed : int
        Same seed, same table.

    Returns
    -------
    pandas.DataFrame
        ``policy_id``, ``insurer``, the :data:`POLICY_FEATURES`, ``exposure`` (years, in (0, 1]),
        ``claim_count``, ``claim_amount`` (total cost, 0 without claims) and ``avg_severity``
        (cost per claim, missing without claims).
    """
    insurers = list(insurers)
    if not insurers:
        raise ConfigError("insurers: expected at least one insurer")
    names = [p.name for p in insurers]
    if len(set(names)) != len(names):
        raise ConfigError(f"insurers: names must be distinct, got {names}")
    if sizes is not None:
        insurers = resized(insurers, sizes, "n_policies")
    seeds = np.random.SeedSequence(seed).spawn(len(insurers))
    df = pd.concat([_portfolio(p, np.random.default_rng(s)) for p, s in zip(insurers, seeds)], ignore_index=True)
    df.insert(0, "policy_id", np.arange(len(df), dtype=np.int64))
    return df


def _portfolio(profile: InsurerProfile, rng: np.random.Generator) -> pd.DataFrame:
    """One insurer's policies and claims."""
    n = profile.n_policies
    age = np.clip(np.rint(rng.normal(*profile.driver_age, n)), 18, 90).astype(np.int64)
    # Bonus-malus falls with claim-free years: young drivers start near 100, experienced ones near 50.
    bonus_malus = np.clip(np.rint(50 + 50 * np.exp(-(age - 18) / 10) + np.abs(rng.normal(0, 15, n))), 50, 150)
    df = pd.DataFrame({
        "insurer": profile.name,
        "driver_age": age,
        "vehicle_age": np.minimum(rng.poisson(profile.vehicle_age, n), 25).astype(np.int64),
        "bonus_malus": bonus_malus.astype(np.int64),
        **{factor: np.asarray(levels)[rng.choice(len(levels), size=n, p=_shares(getattr(profile, f"{factor}_mix")))]
           for factor, levels in POLICY_LEVELS.items()},
    })
    days = np.where(rng.random(n) < profile.full_year_share, 365, rng.integers(1, 365, n))
    df["exposure"] = days / 365.0
    frequency = np.exp(_linear_predictor(df, TRUE_FREQUENCY_COEFFICIENTS))
    severity = np.exp(_linear_predictor(df, TRUE_SEVERITY_COEFFICIENTS))
    count = rng.poisson(df["exposure"].to_numpy() * frequency)
    claimed = count > 0
    amount = np.zeros(n)
    amount[claimed] = rng.gamma(GAMMA_SHAPE * count[claimed], severity[claimed] / GAMMA_SHAPE)
    df["claim_count"] = count.astype(np.int64)
    df["claim_amount"] = amount
    df["avg_severity"] = np.where(claimed, amount / np.maximum(count, 1), np.nan)
    return df


def _linear_predictor(df: pd.DataFrame, coefficients: dict[str, float]) -> np.ndarray:
    """``x'beta`` with treatment coding, from a coefficient dict named as statsmodels names them."""
    eta = np.full(len(df), coefficients["intercept"])
    for name, kind in POLICY_FEATURES.items():
        if kind == "categorical":
            for level in POLICY_LEVELS[name][1:]:
                eta += coefficients[f"{name}[T.{level}]"] * (df[name].to_numpy() == level)
        else:
            eta += coefficients[name] * df[name].to_numpy(dtype=np.float64)
    return eta


def _shares(values: Sequence[float]) -> np.ndarray:
    w = np.asarray(values, dtype=np.float64)
    return w / w.sum()
