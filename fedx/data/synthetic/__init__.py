"""Synthetic data with known ground truth: card transactions of several banks, motor policies of
several insurers.

Both generators are seeded and deterministic, and take a list of per-institution profiles.
"""

from __future__ import annotations

from .policies import (
    DEFAULT_INSURERS,
    GAMMA_SHAPE,
    POLICY_FEATURES,
    POLICY_LEVELS,
    TRUE_FREQUENCY_COEFFICIENTS,
    TRUE_SEVERITY_COEFFICIENTS,
    InsurerProfile,
    generate_policies,
)
from .transactions import (
    DEFAULT_BANKS,
    SCENARIOS,
    TRANSACTION_FEATURES,
    TRANSACTION_LEVELS,
    BankProfile,
    engineer_features,
    generate_transactions,
)

__all__ = [
    "DEFAULT_BANKS", "DEFAULT_INSURERS", "GAMMA_SHAPE", "POLICY_FEATURES", "POLICY_LEVELS", "SCENARIOS",
    "TRANSACTION_FEATURES", "TRANSACTION_LEVELS",
    "TRUE_FREQUENCY_COEFFICIENTS", "TRUE_SEVERITY_COEFFICIENTS", "BankProfile", "InsurerProfile",
    "engineer_features", "generate_policies", "generate_transactions",
]
