"""The anti-fraud example's operating points (examples/finance_antifraud/alerts.py) against a direct count."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "finance_antifraud"))

from alerts import alert_budgets, alerts_at, threshold_for_budget


@pytest.mark.parametrize("budget", [0.001, 0.01, 0.05, 0.3])
def test_the_threshold_flags_at_most_the_budget_and_misses_no_room(budget: float) -> None:
    scores = np.round(np.random.default_rng(1).random(2_000), 2)        # many ties
    thr = threshold_for_budget(scores, budget)
    flagged = int((scores >= thr).sum())
    assert flagged <= budget * scores.size
    lower = scores[scores < thr]                                         # the next score down would exceed it
    if lower.size:
        assert int((scores >= lower.max()).sum()) > budget * scores.size


def test_precision_and_recall_at_a_threshold_are_direct_counts() -> None:
    y = np.array([1, 0, 1, 0, 0, 1])
    p = np.array([0.9, 0.8, 0.4, 0.3, 0.95, 0.1])
    a = alerts_at(y, p, 0.35)
    assert (a.alerts, a.frauds_caught) == (4, 2)
    assert a.precision == pytest.approx(0.5) and a.recall == pytest.approx(2 / 3)
    assert alerts_at(y, p, 0.99).precision is None


def test_shipped_budgets_cover_every_bank_and_bad_files_are_refused(tmp_path: Path) -> None:
    assert set(alert_budgets()) == {"bank_a", "bank_b", "bank_c", "bank_d", "bank_e"}
    bad = tmp_path / "ops.yaml"
    bad.write_text("alert_budget: {bank_a: 1.5}\n")
    with pytest.raises(ValueError, match="bank_a"):
        alert_budgets(bad)
