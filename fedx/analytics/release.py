"""From summed statistics to released ones: the policy's suppression, then its noise.

Every institution runs this on the same decrypted sum, so it must be deterministic: suppression
depends on exact counts, and the noise generator is seeded from the sum itself (see
:func:`noise_generator`). Released values are computed from the noisy sums (post-processing).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..privacy.policy import Policy
from .segments import Kind, Segment

#: A block's segments and their summed values, keyed by (kind, columns).
Parts = Mapping[tuple[Kind, tuple[str, ...]], tuple[Segment, np.ndarray]]
MOMENTS = ("count", "mean", "variance", "std")


def noise_generator(seed: int, step: int, counts: np.ndarray) -> np.random.Generator:
    """The generator of a stage's noise: seeded by the run seed, the stage and the summed whole numbers.

    ``counts`` holds every count of the sum and the institutions' summed random nonce; under encryption
    the server never sees that nonce, so it cannot recompute the noise and subtract it.
    """
    digest = hashlib.sha256(f"fedx-stats/{seed}/{step}/".encode() + counts.astype("<i8").tobytes()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def moments(count: int, total: float, total_sq: float) -> dict[str, Any]:
    """Count, mean, variance (ddof=1, as pandas) and std from a count, a sum and a sum of squares."""
    mean = total / count if count > 0 else None
    variance = max((total_sq - total * total / count) / (count - 1), 0.0) if count > 1 else None
    return {"count": count, "mean": mean, "variance": variance,
            "std": math.sqrt(variance) if variance is not None else None}


def covariance(count: int, sums: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """The covariance (ddof=1) and correlation matrices from ``[sum x_i] + [sum x_i x_j, i <= j]``.

    Correlations are clipped to [-1, 1] (noise can push them out); a column without spread gets NaN.
    """
    s = sums[:p]
    cross = np.zeros((p, p))
    cross[np.triu_indices(p)] = sums[p:]
    cross = cross + np.triu(cross, 1).T
    cov = (cross - np.outer(s, s) / count) / (count - 1)
    sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.clip(cov / np.outer(sd, sd), -1.0, 1.0)
    np.fill_diagonal(corr, 1.0)
    corr[np.outer(sd, sd) == 0] = np.nan
    return cov, corr


class Releaser:
    """Releases the statistics of each block of one stage-1 sum under a policy.

    Parameters
    ----------
    policy : Policy
        Suppression and noise.
    bounds : mapping of str to (lo, hi)
        Declared bounds (they set the sensitivity of noisy sums).
    rng : numpy.random.Generator, optional
        The noise generator (:func:`noise_generator`), required when the policy adds noise.
    """

    def __init__(self, policy: Policy, bounds: Mapping[str, tuple[float, float]],
                 rng: np.random.Generator | None) -> None:
        self.policy, self.bounds, self.rng = policy, bounds, rng
        self.suppressed: list[str] = []
        self.statistics: list[dict[str, Any]] = []  # the noisy statistics of one block (all rows)

    def block(self, parts: Parts, top: bool, columns: Sequence[str], histograms: Sequence[str],
              frequencies: Sequence[str], crosstabs: Sequence[tuple[str, str]],
              correlation: Sequence[str]) -> dict[str, Any] | None:
        """The released statistics of one block; None for a group that the policy withholds."""
        rows = self._cells(parts[("rows", ())], "rows", top)[0]
        if rows is None and not top:
            return None
        out: dict[str, Any] = {"rows": rows}
        out["columns"] = {c: self._moments(parts, c, top) for c in columns}
        out["histograms"] = {c: self._histogram(parts[("hist", (c,))], top) for c in histograms}
        out["frequencies"] = {c: self._frequencies(parts[("freq", (c,))], top) for c in frequencies}
        out["crosstabs"] = {f"{a} x {b}": self._crosstab(parts[("xtab", (a, b))], top) for a, b in crosstabs}
        out["correlation"] = self._correlation(parts, tuple(correlation), top) if correlation else None
        out["quantiles"] = {}  # filled in when the searches end
        return out

    def privacy(self, groups: bool) -> dict[str, Any]:
        """The policy and, with noise, every noisy statistic and the composed budget."""
        out = self.policy.describe()
        if self.policy.noisy:
            assert self.policy.epsilon is not None
            per_row = len(self.statistics) * (2 if groups else 1)
            out |= {"statistics": self.statistics, "total_epsilon": per_row * self.policy.epsilon,
                    "composition": ("basic: each statistic is released at epsilon and they add up; a record is "
                                    "in one group at most, so the groups add one group's statistics")}
            if self.policy.noise == "gaussian":
                out["total_delta"] = per_row * self.policy.delta
        return out

    # ------------------------------------------------------------------ statistics

    def _noisy(self, name: str, values: np.ndarray, sensitivity: float, top: bool) -> np.ndarray:
        if not self.policy.noisy:
            return values
        assert self.rng is not None
        if top:
            self.statistics.append({"statistic": name, "sensitivity": sensitivity,
                                    "scale": self.policy.scale(sensitivity)})
        return values + self.policy.sample(self.rng, sensitivity, values.size)

    def _cells(self, part: tuple[Segment, np.ndarray], stat: str, top: bool) -> list[int | None]:
        """Released counts: noisy when the policy says so, None where the exact count is too small."""
        seg, exact = part
        noisy = np.maximum(np.rint(self._noisy(stat, exact, 1.0, top)), 0.0)
        out: list[int | None] = []
        for name, e, r in zip(seg.names, exact.tolist(), noisy.tolist()):
            if self.policy.suppresses(e):
                self.suppressed.append(name)
                out.append(None)
            else:
                out.append(int(r))
        return out

    def _moments(self, parts: Parts, column: str, top: bool) -> dict[str, Any]:
        count = self._cells(parts[("count", (column,))], f"columns.{column}.count", top)[0]
        sums = parts[("sums", (column,))][1]
        if self.policy.noisy:
            bound = max(abs(b) for b in self.bounds[column])
            sums = np.concatenate([self._noisy(f"columns.{column}.sum", sums[:1], bound, top),
                                   self._noisy(f"columns.{column}.sumsq", sums[1:], bound * bound, top)])
        if count is None:
            return dict.fromkeys(MOMENTS)
        return moments(count, float(sums[0]), float(sums[1]))

    def _histogram(self, part: tuple[Segment, np.ndarray], top: bool) -> dict[str, Any]:
        seg = part[0]
        cells = self._cells(part, f"histograms.{seg.columns[0]}", top)
        return {"edges": list(seg.edges), "counts": cells[1:-1], "underflow": cells[0], "overflow": cells[-1]}

    def _frequencies(self, part: tuple[Segment, np.ndarray], top: bool) -> dict[str, Any]:
        seg = part[0]
        cells = self._cells(part, f"frequencies.{seg.columns[0]}", top)
        return {"levels": list(seg.levels[0]), "counts": cells[:-1], "missing": cells[-1]}

    def _crosstab(self, part: tuple[Segment, np.ndarray], top: bool) -> dict[str, Any]:
        seg = part[0]
        a, b = seg.columns
        cells = self._cells(part, f"crosstabs.{a} x {b}", top)
        width = len(seg.levels[1])
        return {"rows": a, "columns": b, "row_levels": list(seg.levels[0]), "column_levels": list(seg.levels[1]),
                "counts": [cells[i:i + width] for i in range(0, len(cells), width)]}

    def _correlation(self, parts: Parts, columns: tuple[str, ...], top: bool) -> dict[str, Any]:
        n = self._cells(parts[("corr_n", columns)], "correlation.n", top)[0]
        sums = parts[("corr_sums", columns)][1]
        p = len(columns)
        if self.policy.noisy:
            bound = [max(abs(b) for b in self.bounds[c]) for c in columns]
            labels = list(columns) + [f"{columns[i]}*{columns[j]}" for i, j in zip(*np.triu_indices(p))]
            scales = bound + [bound[i] * bound[j] for i, j in zip(*np.triu_indices(p))]
            sums = np.concatenate([self._noisy(f"correlation.sum.{label}", sums[k:k + 1], scales[k], top)
                                   for k, label in enumerate(labels)])
        out: dict[str, Any] = {"columns": list(columns), "n": n, "matrix": None, "covariance": None}
        if n is not None and n > 1:
            cov, corr = covariance(n, sums, p)
            out["matrix"] = _nulls(corr)
            out["covariance"] = _nulls(cov)
        return out


def _nulls(matrix: np.ndarray) -> list[list[float | None]]:
    """A matrix as nested lists, with None for NaN (JSON has no NaN)."""
    return [[None if math.isnan(v) else v for v in row] for row in matrix.tolist()]
