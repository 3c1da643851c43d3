"""``synthetic/health_insurance``: an insurer and one or two hospitals that hold different columns of the
same people, with a known claim frequency that depends on both sides.

- The insurer has ``n_policies`` policies: ``person_id``, ``exposure`` (years, (0, 1]), ``claims``,
  ``age_band``, ``sex``, ``region`` and ``plan``.
- Every insured person has chronic conditions (``diabetes``, ``hypertension``, ``heart_disease``, more
  likely with age) and test results (``bmi``, ``systolic_bp``). A hospital has recorded them for a subset:
  about ``overlap`` of the insured people in all (split between the hospitals when there are two), plus
  ``hospital_only`` times as many patients who are not insured there.
- With two hospitals, ``hospital_split`` says how they divide the records: ``patients`` (default: disjoint
  patients, the same columns) or ``columns`` (a vertical split: ``hospital_a`` holds the chronic conditions of
  the patients, ``hospital_b`` the test results of about 85% of the same insured patients, each with patients
  of its own who are not insured here), so that a vertical run with two feature parties needs all three.
- ``claims ~ Poisson(exposure * exp(x' beta))`` with ``x`` in treatment coding (statsmodels' names,
  ``age_band[T.35-49]``) over both sides' columns, and beta :data:`TRUE_HEALTH_COEFFICIENTS`.

A pooled Poisson GLM on the insurer's table joined with a hospital's recovers beta (the hospital's values
are the true ones for the people it holds). Seeded and deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ...errors import ConfigError

__all__ = ["HOSPITAL_SPLITS", "SPLIT_COLUMNS", "HEALTH_HOSPITAL_FEATURES", "HEALTH_INSURER_FEATURES", "HEALTH_LEVELS", "TRUE_HEALTH_COEFFICIENTS",
           "VERTICAL_SOURCES", "HealthInsuranceData", "generate_health_insurance"]

HEALTH_LEVELS: dict[str, tuple[str, ...]] = {
    "age_band": ("18-34", "35-49", "50-64", "65+"),
    "sex": ("F", "M"),
    "region": ("capital", "east", "north", "west"),
    "plan": ("basic", "premium", "standard"),
}
"""Levels of the insurer's categorical columns, sorted: the first is the reference."""

HEALTH_INSURER_FEATURES: dict[str, str] = {name: "categorical" for name in HEALTH_LEVELS}
HEALTH_HOSPITAL_FEATURES: dict[str, str] = {"diabetes": "numeric", "hypertension": "numeric",
                                            "heart_disease": "numeric", "bmi": "numeric", "systolic_bp": "numeric"}

TRUE_HEALTH_COEFFICIENTS: dict[str, float] = {
    "intercept": -3.2,
    "age_band[T.35-49]": 0.15,
    "age_band[T.50-64]": 0.30,
    "age_band[T.65+]": 0.50,
    "sex[T.M]": -0.10,
    "region[T.east]": -0.10,
    "region[T.north]": -0.20,
    "region[T.west]": 0.05,
    "plan[T.premium]": 0.25,
    "plan[T.standard]": 0.10,
    "diabetes": 0.40,
    "hypertension": 0.25,
    "heart_disease": 0.50,
    "bmi": 0.03,
    "systolic_bp": 0.004,
}
"""log of the expected claims per year of exposure: ``intercept + sum(coef * column)``."""


@dataclass(frozen=True)
class HealthInsuranceData:
    """The parties' tables: ``insurer`` and ``hospitals`` (name to table), and the truth."""

    insurer: pd.DataFrame
    hospitals: dict[str, pd.DataFrame]
    coefficients: dict[str, float]


HOSPITAL_SPLITS = ("patients", "columns")
#: With ``hospital_split: columns``: the columns of each hospital.
SPLIT_COLUMNS = {"hospital_a": ("diabetes", "hypertension", "heart_disease"), "hospital_b": ("bmi", "systolic_bp")}


def generate_health_insurance(n_policies: int = 200_000, *, hospitals: int = 1, overlap: float = 0.6,
                              hospital_only: float = 0.25, hospital_split: str = "patients",
                              seed: int = 7) -> HealthInsuranceData:
    """Generate the insurer's policies and the hospitals' records (module docstring).

    Parameters
    ----------
    n_policies : int
        Policies (people) at the insurer.
    hospitals : int
        1 (``hospital``) or 2 (``hospital_a``, ``hospital_b``).
    hospital_split : str
        With two hospitals: ``patients`` (disjoint patients, the same columns) or ``columns`` (the same
        people, different columns: :data:`SPLIT_COLUMNS`).
    overlap : float
        Share of the insured people that some hospital holds, in (0, 1].
    hospital_only : float
        Patients not insured here, as a share of the hospitals' insured patients.
    seed : int
        Seed of the generator.

    Raises
    ------
    ConfigError
        Parameters out of range.
    """
    if isinstance(n_policies, bool) or not isinstance(n_policies, int) or n_policies < 100:
        raise ConfigError(f"params.n_policies: expected a whole number >= 100, got {n_policies!r}")
    if hospitals not in (1, 2):
        raise ConfigError(f"params.hospitals: expected 1 or 2, got {hospitals!r}")
    if hospital_split not in HOSPITAL_SPLITS:
        raise ConfigError(f"params.hospital_split: expected one of {', '.join(HOSPITAL_SPLITS)}, got {hospital_split!r}")
    if not 0.0 < overlap <= 1.0 or not 0.0 <= hospital_only <= 10.0:
        raise ConfigError(f"params.overlap must be in (0, 1] and params.hospital_only in [0, 10], got {overlap!r}, "
                          f"{hospital_only!r}")
    rng = np.random.default_rng(seed)
    n_extra = round(hospital_only * overlap * n_policies)
    people = _people(rng, n_policies + n_extra)
    ids = np.array([f"P{i:07d}" for i in rng.permutation(n_policies + n_extra)])
    people.insert(0, "person_id", ids)
    insured = people.iloc[:n_policies].copy()
    exposure = np.where(rng.random(n_policies) < 0.7, 1.0, rng.uniform(0.05, 1.0, n_policies))
    eta = _linear_predictor(insured, TRUE_HEALTH_COEFFICIENTS)
    insurer = insured[["person_id", *HEALTH_LEVELS]].reset_index(drop=True)
    insurer.insert(1, "exposure", np.round(exposure, 4))
    insurer["claims"] = rng.poisson(insurer["exposure"].to_numpy() * np.exp(eta)).astype(np.int64)
    seen = np.flatnonzero(rng.random(n_policies) < overlap)
    patients = pd.concat([insured.iloc[seen], people.iloc[n_policies:]])
    patients = patients.iloc[rng.permutation(len(patients))][["person_id", *HEALTH_HOSPITAL_FEATURES]]
    if hospitals == 1:
        tables = {"hospital": patients.reset_index(drop=True)}
    elif hospital_split == "columns":
        insured_seen, extra = insured.iloc[seen], people.iloc[n_policies:]
        half = rng.random(len(extra)) < 0.5
        keep = rng.random(len(insured_seen)) < 0.85
        parts = {"hospital_a": pd.concat([insured_seen, extra[half]]),
                 "hospital_b": pd.concat([insured_seen[keep], extra[~half]])}
        tables = {}
        for name, part in parts.items():
            part = part.iloc[rng.permutation(len(part))]
            tables[name] = part[["person_id", *SPLIT_COLUMNS[name]]].reset_index(drop=True)
    else:
        first = rng.random(len(patients)) < 0.5
        tables = {"hospital_a": patients[first].reset_index(drop=True),
                  "hospital_b": patients[~first].reset_index(drop=True)}
    return HealthInsuranceData(insurer, tables, dict(TRUE_HEALTH_COEFFICIENTS))


def _people(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Everyone's demographics and health (conditions more likely with age, BMI and blood pressure)."""
    age_idx = rng.choice(4, size=n, p=[0.30, 0.30, 0.25, 0.15])
    age = age_idx.astype(float)
    bmi = np.round(np.clip(rng.normal(25.0 + 0.8 * age, 4.0, n), 15.0, 50.0), 1)
    sbp = np.round(np.clip(rng.normal(118.0 + 6.0 * age + 0.5 * (bmi - 25.0), 14.0, n), 85.0, 210.0))
    logistic = lambda z: 1.0 / (1.0 + np.exp(-z))
    diabetes = rng.random(n) < logistic(-4.0 + 0.6 * age + 0.12 * (bmi - 25.0))
    hypertension = rng.random(n) < logistic(-2.5 + 0.7 * age + 0.04 * (sbp - 120.0))
    heart = rng.random(n) < logistic(-4.5 + 0.8 * age + 0.8 * diabetes)
    return pd.DataFrame({
        "age_band": np.asarray(HEALTH_LEVELS["age_band"])[age_idx],
        "sex": np.asarray(HEALTH_LEVELS["sex"])[rng.integers(0, 2, n)],
        "region": np.asarray(HEALTH_LEVELS["region"])[rng.choice(4, size=n, p=[0.35, 0.25, 0.2, 0.2])],
        "plan": np.asarray(HEALTH_LEVELS["plan"])[rng.choice(3, size=n, p=[0.5, 0.15, 0.35])],
        "diabetes": diabetes.astype(np.int64), "hypertension": hypertension.astype(np.int64),
        "heart_disease": heart.astype(np.int64), "bmi": bmi, "systolic_bp": sbp,
    })


def _linear_predictor(df: pd.DataFrame, coefficients: dict[str, float]) -> np.ndarray:
    eta = np.full(len(df), coefficients["intercept"])
    for name, coef in coefficients.items():
        if name == "intercept":
            continue
        if "[T." in name:
            factor, level = name[:-1].split("[T.", 1)
            eta += coef * (df[factor].to_numpy() == level)
        else:
            eta += coef * df[name].to_numpy(dtype=float)
    return eta


VERTICAL_SOURCES = {"synthetic/health_insurance": generate_health_insurance}
"""The vertical synthetic sources: name to generator (each returns the parties' tables)."""
