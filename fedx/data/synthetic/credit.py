"""``synthetic/credit``: a bank, a telecom operator and a utility that hold different columns of the same
people, with a known loan default risk that depends on all three.

- The bank has ``n_customers`` borrowers: ``customer_id``, ``default`` (the loan outcome, 0/1) and its account
  features (``age``, ``income``, ``loan_amount``, ``debt_to_income``, ``months_on_book``,
  ``num_credit_lines``, ``past_delinquencies``).
- The telecom operator has the usage and payment history of ``telecom_share`` of them (``tenure_months``,
  ``monthly_spend``, ``data_usage_gb``, ``late_payments_12m``, ``prepaid``, ``device_changes``), plus
  ``outsiders`` times as many subscribers who are not bank customers.
- The utility has the bill payment history of ``utility_share`` of them (``bills_paid_on_time``,
  ``avg_days_late``, ``disconnections``, ``autopay``, ``avg_bill``), with its own outsiders too. The two
  partners' customers overlap at random, so the rows that all three share are about
  ``telecom_share * utility_share`` of the bank's.
- A latent payment discipline ``d`` (standard normal) drives the partners' payment features. The true
  default log-odds is :func:`true_logit`: bank features, the discipline seen through the partners' late
  payments, missed bills and days late, and two interactions (high debt-to-income with late telecom
  payments; disconnections with prepaid plans) that trees find and a linear score does not.

Seeded and deterministic. Partner values exist for every bank customer in the truth; a partner's table
holds them only for its own customers, so the bank alone cannot see them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ...errors import ConfigError

__all__ = ["BANK_FEATURES", "TELECOM_FEATURES", "UTILITY_FEATURES", "CreditData", "generate_credit", "true_logit"]

BANK_FEATURES = ("age", "income", "loan_amount", "debt_to_income", "months_on_book", "num_credit_lines",
                 "past_delinquencies")
TELECOM_FEATURES = ("tenure_months", "monthly_spend", "data_usage_gb", "late_payments_12m", "prepaid",
                    "device_changes")
UTILITY_FEATURES = ("bills_paid_on_time", "avg_days_late", "disconnections", "autopay", "avg_bill")


@dataclass(frozen=True)
class CreditData:
    """The parties' tables (``bank``, ``telecom``, ``utility``) and every bank customer's true default odds."""

    bank: pd.DataFrame
    telecom: pd.DataFrame
    utility: pd.DataFrame
    truth: pd.DataFrame

    def tables(self) -> dict[str, pd.DataFrame]:
        """Party name to table."""
        return {"bank": self.bank, "telecom": self.telecom, "utility": self.utility}


def true_logit(c: pd.DataFrame) -> np.ndarray:
    """The default log-odds of customers with every column of the three parties (the known structure)."""
    return (-3.1 + 0.9 * (c["debt_to_income"] - 0.35) / 0.15 - 0.35 * np.log(c["income"] / 40_000)
            + 0.45 * c["past_delinquencies"] - 0.012 * (c["months_on_book"] - 48) / 12
            + 0.30 * c["late_payments_12m"] + 0.6 * (c["prepaid"] == 1)
            + 0.9 * (c["avg_days_late"] > 10) + 0.5 * c["disconnections"] - 1.2 * (c["bills_paid_on_time"] - 0.85)
            + 0.8 * ((c["debt_to_income"] > 0.45) & (c["late_payments_12m"] >= 2))
            + 0.7 * ((c["disconnections"] >= 1) & (c["prepaid"] == 1))).to_numpy()


def _people(rng: np.random.Generator, n: int) -> pd.DataFrame:
    d = rng.normal(size=n)     # payment discipline: low is risky
    age = rng.integers(21, 75, n)
    income = np.exp(rng.normal(10.6, 0.45, n)).round(-2)
    df = pd.DataFrame({
        "age": age,
        "income": income,
        "loan_amount": (income * rng.uniform(0.1, 0.8, n)).round(-2),
        "debt_to_income": np.clip(rng.beta(3, 6, n) + 0.05 * np.maximum(-d, 0), 0.0, 1.2).round(3),
        "months_on_book": rng.integers(3, 180, n),
        "num_credit_lines": rng.poisson(3, n),
        "past_delinquencies": rng.poisson(0.25 * np.exp(-0.4 * d)),
        "tenure_months": rng.integers(1, 200, n),
        "monthly_spend": np.exp(rng.normal(3.5, 0.5, n)).round(2),
        "data_usage_gb": rng.gamma(2.0, 6.0, n).round(1),
        "late_payments_12m": rng.poisson(0.5 * np.exp(-0.9 * d)),
        "prepaid": (rng.random(n) < 1 / (1 + np.exp(1.0 + 0.7 * d))).astype(np.int64),
        "device_changes": rng.poisson(1.0, n),
        "bills_paid_on_time": np.clip(0.9 + 0.06 * d + rng.normal(0, 0.04, n), 0.3, 1.0).round(3),
        "avg_days_late": np.maximum(rng.gamma(1.5, 3.0 * np.exp(-0.6 * d)), 0).round(1),
        "disconnections": rng.poisson(0.15 * np.exp(-1.0 * d)),
        "autopay": (rng.random(n) < 1 / (1 + np.exp(-0.5 * d))).astype(np.int64),
        "avg_bill": np.exp(rng.normal(4.3, 0.35, n)).round(2),
    })
    return df


def generate_credit(n_customers: int = 60_000, *, telecom_share: float = 0.75, utility_share: float = 0.7,
                    outsiders: float = 0.2, seed: int = 11) -> CreditData:
    """Generate the three parties' tables (module docstring).

    Parameters
    ----------
    n_customers : int
        The bank's borrowers.
    telecom_share, utility_share : float
        Share of the borrowers that the telecom operator (the utility) also serves.
    outsiders : float
        Each partner's customers who are not the bank's, as a share of the borrowers.
    seed : int
        Seed of everything.
    """
    if not isinstance(n_customers, int) or n_customers < 100:
        raise ConfigError(f"data.params.n_customers: expected an integer >= 100, got {n_customers!r}")
    for key, v in (("telecom_share", telecom_share), ("utility_share", utility_share)):
        if not 0.0 < v <= 1.0:
            raise ConfigError(f"data.params.{key}: expected a share in (0, 1], got {v!r}")
    if not 0.0 <= outsiders <= 5.0:
        raise ConfigError(f"data.params.outsiders: expected a number in [0, 5], got {outsiders!r}")
    rng = np.random.default_rng(seed)
    n_out = round(outsiders * n_customers)
    everyone = _people(rng, n_customers + 2 * n_out)
    ids = rng.permutation(10_000_000 + np.arange(len(everyone)) * 7 + 3)[: len(everyone)]
    everyone.insert(0, "customer_id", [f"C{i:09d}" for i in ids])
    borrowers = everyone.iloc[:n_customers].reset_index(drop=True)
    logit = true_logit(borrowers)
    default = (rng.random(n_customers) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    bank = borrowers[["customer_id", *BANK_FEATURES]].assign(default=default)
    in_tel = rng.random(n_customers) < telecom_share
    in_util = rng.random(n_customers) < utility_share
    tel_out = everyone.iloc[n_customers:n_customers + n_out]
    util_out = everyone.iloc[n_customers + n_out:]
    telecom = pd.concat([borrowers[in_tel], tel_out])[["customer_id", *TELECOM_FEATURES]]
    utility = pd.concat([borrowers[in_util], util_out])[["customer_id", *UTILITY_FEATURES]]
    telecom = telecom.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    utility = utility.sample(frac=1.0, random_state=seed + 1).reset_index(drop=True)
    truth = pd.DataFrame({"customer_id": borrowers["customer_id"], "logit": logit, "default": default,
                          "at_telecom": in_tel, "at_utility": in_util})
    return CreditData(bank=bank, telecom=telecom, utility=utility, truth=truth)
