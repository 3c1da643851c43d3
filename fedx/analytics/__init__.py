"""Federated statistics from summed, optionally encrypted, per-institution statistics (docs/analytics.md).

Count, mean, variance and standard deviation; histograms; quantiles by histogram refinement; the
correlation and covariance matrices; frequencies and crosstabs of categorical columns; and all of these per
group. Every statistic is computed from sums of per-institution vectors, never from pooled rows, and
released under the data owners' policy (:mod:`fedx.privacy.policy`).
"""

from __future__ import annotations

from .moments import moments_plan
from .plan import Release, StatsPlan, stage_digest
from .report import format_markdown, print_stats, write_stats
from .simulate import simulate_stats

__all__ = ["Release", "StatsPlan", "format_markdown", "moments_plan", "print_stats", "simulate_stats",
           "stage_digest", "write_stats"]
