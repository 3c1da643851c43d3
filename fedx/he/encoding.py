"""Numeric encodings of float vectors into integer or real slots, and back (pure NumPy, no keys).

- :func:`quantize`: clip to ``[-clip, clip]``, scale by ``rho * levels / clip`` and round (BFV model updates).
- :func:`to_limbs` / :func:`from_limbs`: exact fixed point ``round(x * 2**frac_bits)`` split into balanced
  signed limbs, summed limb by limb and recombined exactly (BFV statistics).
Every lossy step is counted in an :class:`EncodingReport`, which travels in the blob header.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CapacityError


@dataclass(frozen=True)
class EncodingReport:
    """What encoding did to the values: never hidden, summed over clients in an aggregate.

    Attributes
    ----------
    values : int
        Number of values in the blob.
    clipped : int
        Values whose magnitude exceeded the clip range and were clipped (summed over clients).
    max_abs : float
        Largest magnitude seen before clipping (maximum over clients).
    zeroed : int
        Non-zero values that rounded to zero, so they contributed nothing (summed over clients).
    rounding : float
        Largest rounding error of one value's contribution, in value units (summed over clients,
        so it bounds the rounding error of the sum).
    """

    values: int
    clipped: int = 0
    max_abs: float = 0.0
    zeroed: int = 0
    rounding: float = 0.0

    def merge(self, other: EncodingReport) -> EncodingReport:
        """The report of the sum of two blobs."""
        return EncodingReport(values=self.values, clipped=self.clipped + other.clipped,
                              max_abs=max(self.max_abs, other.max_abs), zeroed=self.zeroed + other.zeroed,
                              rounding=self.rounding + other.rounding)


def _max(a: np.ndarray) -> float:
    return float(a.max()) if a.size else 0.0


def quantize(x: np.ndarray, rho: float, clip: float, levels: int) -> tuple[np.ndarray, int, EncodingReport]:
    """Clip ``x`` to ``[-clip, clip]`` and quantize ``rho * x`` to integers of magnitude at most ``bound``.

    Parameters
    ----------
    x : np.ndarray
        Finite float64 values.
    rho : float
        The client's share of the total weight, in ``[0, 1]``.
    clip : float
        Clip range.
    levels : int
        ``2**(bits-1) - 1``: the integer that ``clip`` maps to at ``rho = 1``.

    Returns
    -------
    q, bound, report
        int64 values, the largest magnitude they can take (``round(rho * levels)``), and the report.
    """
    scale = levels / clip
    bound = int(np.rint(rho * levels))
    y = np.clip(x, -clip, clip) * (rho * scale)
    q = np.rint(y)
    report = EncodingReport(values=x.size, clipped=int(np.count_nonzero(np.abs(x) > clip)), max_abs=_max(np.abs(x)),
                            zeroed=int(np.count_nonzero((q == 0) & (x != 0))), rounding=_max(np.abs(y - q)) / scale)
    # rint is monotone, so |q| <= bound already; the clamp only guards a one-ulp excess of rho * scale * clip.
    return np.clip(q, -bound, bound).astype(np.int64), bound, report


def to_limbs(x: np.ndarray, frac_bits: int, limb_bits: int, limbs: int) -> tuple[np.ndarray, EncodingReport]:
    """Exact fixed point ``round(x * 2**frac_bits)`` as ``limbs`` balanced digits of ``limb_bits`` bits each.

    The arithmetic is exact in float64: scaling by powers of two, ``rint`` and ``t - base * rint(t / base)``
    produce integers that floats represent exactly. Digits lie in ``[-2**(limb_bits-1), 2**(limb_bits-1)]``.

    Returns
    -------
    digits, report
        int64 array of shape ``(limbs, x.size)``, least significant first, and the report.
    """
    scaled = np.ldexp(x, frac_bits)
    t = np.rint(scaled)
    report = EncodingReport(values=x.size, max_abs=_max(np.abs(x)), zeroed=int(np.count_nonzero((t == 0) & (x != 0))),
                            rounding=_max(np.abs(scaled - t)) / 2.0**frac_bits)
    base = 2.0**limb_bits
    digits = np.empty((limbs, x.size), np.int64)
    for j in range(limbs):
        q = np.rint(t / base)
        digits[j] = t - q * base
        t = q
    if np.any(t != 0):  # callers refuse such magnitudes first, with advice
        raise CapacityError(f"a value needs more than {limbs} limbs of {limb_bits} bits")
    return digits, report


def from_limbs(sums: np.ndarray, frac_bits: int, limb_bits: int) -> np.ndarray:
    """Recombine summed digits (shape ``(limbs, n)``) into float64 values, rounding once.

    The digits split into a low and a high half, each an exact int64 below 2**53 as long as every digit
    sum stays below 2**(52 - limb_bits * (ceil(limbs / 2) - 1)); each half is then an exact float, and their
    sum is correctly rounded. Integer sums below 2**53 come back exactly.
    """
    half = sums.shape[0] // 2
    weights = np.left_shift(np.int64(1), limb_bits * np.arange(sums.shape[0] - half, dtype=np.int64))
    lo = (sums[:half] * weights[:half, None]).sum(axis=0)
    hi = (sums[half:] * weights[:, None]).sum(axis=0)
    return np.ldexp(hi.astype(np.float64), limb_bits * half - frac_bits) + np.ldexp(lo.astype(np.float64), -frac_bits)
