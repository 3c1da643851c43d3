"""Operating points: the threshold at which a bank raises fraud alerts, and what it yields.

Banks act on alerts, not on AUPRC. Each bank's investigators can review a limited number of
payments a day, so each bank picks an alert budget (the share of its payments it is ready to
flag) in ``operating_points.yaml``. The threshold is set on the bank's own training rows, never
on the rows it is judged on, and precision and recall are then measured on its test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Alerts:
    """What a threshold does on one set of payments."""

    threshold: float
    alert_rate: float  # share of payments flagged
    precision: float | None  # share of alerts that are fraud (None when nothing is flagged)
    recall: float  # share of frauds flagged
    alerts: int
    frauds_caught: int


def alert_budgets(path: str | Path = HERE / "operating_points.yaml") -> dict[str, float]:
    """Each bank's alert budget: the share of its payments its investigators can review."""
    raw = yaml.safe_load(Path(path).read_text())
    budgets = raw.get("alert_budget") if isinstance(raw, dict) else None
    if not isinstance(budgets, dict) or not budgets:
        raise ValueError(f"{path}: expected a mapping 'alert_budget: {{bank: share of payments}}'")
    out = {}
    for bank, share in budgets.items():
        if not isinstance(share, (int, float)) or not 0.0 < float(share) < 1.0:
            raise ValueError(f"{path}: alert_budget.{bank}: expected a share in (0, 1), got {share!r}")
        out[str(bank)] = float(share)
    return out


def threshold_for_budget(scores: np.ndarray, budget: float) -> float:
    """The lowest score threshold that flags at most ``budget`` of these payments."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    if scores.size == 0:
        raise ValueError("threshold_for_budget: no scores")
    k = int(np.floor(budget * scores.size))
    if k == 0:
        return float(np.nextafter(scores[0], np.inf))
    # Flag the k highest scores; ties at the k-th score would flag more, so step just above the next one.
    return float(np.nextafter(scores[k], np.inf)) if scores[k] == scores[k - 1] else float(scores[k - 1])


def alerts_at(y: np.ndarray, scores: np.ndarray, threshold: float) -> Alerts:
    """Precision and recall when every payment scoring at least ``threshold`` is flagged."""
    y = np.asarray(y).astype(bool)
    flagged = np.asarray(scores) >= threshold
    caught = int(np.sum(flagged & y))
    n_alerts = int(flagged.sum())
    return Alerts(threshold=float(threshold), alert_rate=n_alerts / max(len(y), 1),
                  precision=caught / n_alerts if n_alerts else None,
                  recall=caught / int(y.sum()) if y.any() else float("nan"),
                  alerts=n_alerts, frauds_caught=caught)
