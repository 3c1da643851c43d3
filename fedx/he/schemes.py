"""Encryption presets: parameters, capacity, precision, and how each scheme encodes values into slots.

Two kinds of blob exist. ``"mean"`` carries ``rho * update`` (``rho = weight / total_weight``, or
``rho = weight`` without a total), and the institutions divide the decrypted sum by the summed rhos.
``"sum"`` carries statistics that are summed as is.

A preset states its 128-bit security, its precision (:meth:`Preset.precision`), and the most it can sum
(:meth:`Preset.capacity`, :attr:`Preset.max_additions`). :meth:`Preset.check_capacity` refuses any sum that
could overflow or exhaust the noise budget, before a single ciphertext is added.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import hashlib
import json
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from ..errors import CapacityError, HEError
from .encoding import EncodingReport, from_limbs, quantize, to_limbs

#: How ciphertexts travel (:mod:`fedx.he.wire`); part of every parameter hash.
WIRE_FORMAT = "packed-c0+seeds/1"

Kind = Literal["mean", "sum"]
KINDS: tuple[Kind, ...] = ("mean", "sum")


@dataclass(frozen=True)
class Precision:
    """Error bound of every decrypted value: ``|decrypted - exact| <= abs + rel * |exact|``.

    It holds before the result is cast back to the input's dtype (float32 adds its own rounding).
    """

    abs: float
    rel: float


@dataclass(frozen=True)
class Encoded:
    """Values laid out for encryption: one row of slots per ciphertext."""

    rows: np.ndarray
    bound: float  # the largest |slot| the blob can hold, in the units of Preset.capacity
    scale: float  # encoded = value * scale
    report: EncodingReport


@dataclass(frozen=True, kw_only=True)
class Preset(abc.ABC):
    """Parameters of one homomorphic-encryption setting (a frozen value; see :func:`get_preset`)."""

    name: str
    poly_modulus_degree: int
    coeff_modulus: tuple[int, ...]
    max_additions: int
    security_bits: int = 128

    scheme: ClassVar[str]
    #: Settings that ``get_preset`` may change: name -> (converter, what is expected).
    overridable: ClassVar[dict[str, tuple[Callable[[Any], Any], str]]] = {}
    exact_sums: ClassVar[bool]  # integer statistics come back exactly (as int64)

    # ------------------------------------------------------------------ per scheme

    @property
    @abc.abstractmethod
    def slots(self) -> int:
        """Values per ciphertext."""

    @abc.abstractmethod
    def level_primes(self, kind: Kind) -> int:
        """How many primes of the coefficient modulus a ciphertext of ``kind`` keeps."""

    def expansion(self, kind: Kind) -> int:
        """Slots used per value."""
        return 1

    @abc.abstractmethod
    def capacity(self, kind: Kind) -> float:
        """The largest |slot| a sum of ``kind`` may reach without wrapping, in the units of blob bounds."""

    @abc.abstractmethod
    def encode(self, kind: Kind, x: np.ndarray, rho: float) -> Encoded:
        """Lay out finite float64 values ``x`` (times ``rho`` for a mean) in slots."""

    @abc.abstractmethod
    def decode(self, kind: Kind, rows: np.ndarray, n_values: int, rho_sum: float) -> np.ndarray:
        """Decrypted slots back to float64 values: the weighted mean (``"mean"``) or the sum (``"sum"``)."""

    def public_encoding(self, encoded: Encoded, kind: Kind, rho: float, value_bound: float) -> Encoded:
        """``encoded`` with a bound and report that depend only on ``value_bound``, not on the values.

        For differential privacy: a header must not reveal an update's magnitude, how many of its
        values were clipped, or how they rounded.
        """
        bound = self._public_bound(encoded, kind, rho, value_bound)
        report = EncodingReport(values=encoded.report.values, max_abs=value_bound,
                                rounding=0.5 / encoded.scale if self.scheme == "BFV" else 0.0)
        return Encoded(encoded.rows, bound, encoded.scale, report)

    def _public_bound(self, encoded: Encoded, kind: Kind, rho: float, value_bound: float) -> float:
        return encoded.bound

    @abc.abstractmethod
    def precision(self, kind: Kind, n_summed: int, rho_sum: float, bound: float) -> Precision:
        """The stated error bound of a decrypted aggregate of ``n_summed`` blobs."""

    @abc.abstractmethod
    def _overflow(self, kind: Kind, n_summed: int, bound: float, rho_sum: float) -> str:
        """Why a sum with this ``bound`` would overflow, and what to change."""

    @abc.abstractmethod
    def _additions_limit(self) -> str:
        """What bounds the number of additions."""

    @abc.abstractmethod
    def details(self) -> dict[str, Any]:
        """The scheme's own parameters, precision and capacity (:func:`fedx.he.describe` adds measured sizes)."""

    # ------------------------------------------------------------------ common

    def chunks_for(self, n_values: int, kind: Kind) -> int:
        """Ciphertexts needed for ``n_values`` values of ``kind``."""
        return -(-n_values * self.expansion(kind) // self.slots)

    def check_capacity(self, kind: Kind, n_summed: int, bound: float, rho_sum: float, where: str) -> None:
        """Refuse a sum that could overflow the modulus or exhaust the noise budget.

        Raises
        ------
        CapacityError
            Naming the limit and what to change.
        """
        if n_summed > self.max_additions:
            raise CapacityError(f"{where}: summing {n_summed} blobs exceeds the {self.max_additions} additions that "
                                f"{self.name} allows ({self._additions_limit()}); aggregate at most "
                                f"{self.max_additions} blobs at a time")
        if bound > self.capacity(kind):
            raise CapacityError(f"{where}: {self._overflow(kind, n_summed, bound, rho_sum)}")

    def with_overrides(self, **overrides: Any) -> Preset:
        """A copy with some settings changed (only those in :attr:`overridable`), validated."""
        unknown = sorted(set(overrides) - set(self.overridable))
        if unknown:
            takes = ", ".join(self.overridable) if self.overridable else \
                "none (bits, clip and max_clients apply to bfv-compact)"
            raise HEError(f"preset {self.name} has no setting {', '.join(unknown)}; it takes {takes}")
        changes = {}
        for key, value in overrides.items():
            convert, expected = self.overridable[key]
            try:
                changes[key] = convert(value)
            except (TypeError, ValueError):
                raise HEError(f"he.{key} must be {expected}, got {value!r}") from None
        return dataclasses.replace(self, **changes)

    def spec(self) -> dict[str, Any]:
        """Name and overridable settings, as key files record them (``get_preset(name, **settings)``)."""
        return {"name": self.name, **{k: getattr(self, k) for k in self.overridable}}

    @functools.cached_property
    def params_hash(self) -> str:
        """Hash of every parameter (SEAL and codec): blobs and keys of other parameters are refused."""
        doc = json.dumps({"scheme": self.scheme, "wire": WIRE_FORMAT, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(doc.encode()).hexdigest()[:32]

    def _rows(self, flat: np.ndarray) -> np.ndarray:
        """``flat`` zero-padded into rows of :attr:`slots`."""
        rows = np.zeros((-(-flat.size // self.slots), self.slots), flat.dtype)
        rows.ravel()[:flat.size] = flat
        return rows


#: Largest |noise| that one fresh symmetric BFV encryption adds to a coefficient: SEAL's error is at most 21
#: (centered binomial of width 21, or a Gaussian clipped at 6 sigma = 19.2), plus 1/2 from rounding q*m/t.
FRESH_NOISE = 21.5
#: SEAL's largest coefficient prime (bits).
MAX_PRIME_BITS = 60
MAX_CLIENTS = 1 << 20


def is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin (exact for n < 3.3e24)."""
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
    if n in small:
        return True
    if any(n % p == 0 for p in small):
        return False
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in small:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


@functools.lru_cache(maxsize=256)
def ntt_prime(at_least: int, degree: int) -> int:
    """The smallest prime ``p >= at_least`` with ``p = 1 mod 2 * degree`` (NTT-friendly; batching for t)."""
    step = 2 * degree
    p = max(at_least - 1, 0) // step * step + 1
    if p < at_least:
        p += step
    while not is_prime(p):
        p += step
    return p


@dataclass(frozen=True, kw_only=True)
class BfvPreset(Preset):
    """BFV with batching: exact integer slots modulo the plain modulus ``t``.

    ``"mean"`` blobs clip each value to ``[-clip, clip]`` and quantize ``rho * value`` to ``bits`` bits;
    ``"sum"`` blobs carry exact fixed point ``round(value * 2**frac_bits)`` in ``limbs`` signed limbs.
    Encryption is symmetric and the upload is ``c0`` plus a seed.

    The moduli follow from ``max_clients`` (the most updates one sum holds) and ``bits``: ``t`` is the
    smallest batching prime whose range holds ``max_clients`` updates at ``rho = 1``, and the coefficient
    modulus is one prime (no key switching is ever needed), the smallest that keeps the worst-case noise of
    ``max_clients`` fresh ciphertexts ``noise_margin_bits`` below the decryption limit ``q / (2 t)``.
    """

    coeff_modulus: tuple[int, ...] = ()  # derived
    max_additions: int = 0  # derived: max_clients
    plain_modulus: int = 0  # derived
    bits: int
    clip: float
    max_clients: int
    limb_bits: int
    limbs: int
    frac_bits: int
    noise_margin_bits: int

    scheme: ClassVar[str] = "bfv"
    overridable: ClassVar[dict[str, tuple[Callable[[Any], Any], str]]] = {
        "bits": (operator.index, "an integer"), "clip": (float, "a number"),
        "max_clients": (operator.index, "an integer")}
    exact_sums: ClassVar[bool] = True
    max_sum_value: ClassVar[float] = 2.0**52  # per client and value, so that sums of integers stay exact
    max_bits: ClassVar[int] = 30

    def __post_init__(self) -> None:
        if type(self.bits) is not int or self.bits < 2:
            raise HEError(f"he.bits must be an integer >= 2, got {self.bits!r}")
        if self.bits > self.max_bits:
            raise CapacityError(f"he.bits={self.bits} is more than bfv-compact quantizes to; use he.bits <= "
                                f"{self.max_bits}")
        if not (isinstance(self.clip, float) and math.isfinite(self.clip) and self.clip > 0):
            raise HEError(f"he.clip must be a positive finite number, got {self.clip!r}")
        if type(self.max_clients) is not int or not 1 <= self.max_clients <= MAX_CLIENTS:
            raise HEError(f"he.max_clients must be an integer in [1, {MAX_CLIENTS}], got {self.max_clients!r}")
        n = self.max_clients
        per_update = max(self.levels, 2 ** (self.limb_bits - 1))
        t = ntt_prime(2 * n * per_update + 1, self.poly_modulus_degree)
        q = ntt_prime(math.ceil(2 * t * n * FRESH_NOISE * 2 ** self.noise_margin_bits), self.poly_modulus_degree)
        if q.bit_length() > MAX_PRIME_BITS:
            raise CapacityError(f"he.max_clients={n} at he.bits={self.bits} needs a {q.bit_length()}-bit coefficient "
                                f"prime, and SEAL allows at most {MAX_PRIME_BITS} bits; lower he.bits or "
                                f"he.max_clients")
        object.__setattr__(self, "plain_modulus", t)
        object.__setattr__(self, "coeff_modulus", (q,))
        object.__setattr__(self, "max_additions", n)

    @property
    def half_t(self) -> int:
        """The largest |value| a slot holds: ``(t - 1) // 2``."""
        return (self.plain_modulus - 1) // 2

    @property
    def levels(self) -> int:
        """The integer that ``clip`` maps to at ``rho = 1``: ``2**(bits-1) - 1``."""
        return 2 ** (self.bits - 1) - 1

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree

    def level_primes(self, kind: Kind) -> int:
        return len(self.coeff_modulus)

    def expansion(self, kind: Kind) -> int:
        return self.limbs if kind == "sum" else 1

    def capacity(self, kind: Kind) -> float:
        return float(self.half_t)

    def encode(self, kind: Kind, x: np.ndarray, rho: float) -> Encoded:
        if kind == "mean":
            q, bound, report = quantize(x, rho, self.clip, self.levels)
            return Encoded(self._rows(q), float(bound), self.levels / self.clip, report)
        top = float(np.abs(x).max()) if x.size else 0.0
        if top >= self.max_sum_value:
            raise CapacityError(f"kind='sum' in {self.name} holds |value| < 2^52 = {self.max_sum_value:.3g} per client "
                                f"(so that integer sums stay exact); got {top:.4g}. Scale the statistic down or "
                                f"split it")
        digits, report = to_limbs(x, self.frac_bits, self.limb_bits, self.limbs)
        return Encoded(self._rows(digits.ravel()), float(2 ** (self.limb_bits - 1)), 2.0**self.frac_bits, report)

    def decode(self, kind: Kind, rows: np.ndarray, n_values: int, rho_sum: float) -> np.ndarray:
        flat = rows.ravel()
        if kind == "mean":
            return flat[:n_values].astype(np.float64) / (self.levels / self.clip) / rho_sum
        return from_limbs(flat[:self.limbs * n_values].reshape(self.limbs, n_values), self.frac_bits, self.limb_bits)

    def precision(self, kind: Kind, n_summed: int, rho_sum: float, bound: float) -> Precision:
        if kind == "mean":  # each client rounds once, by at most half a step; clipping is reported apart
            return Precision(abs=n_summed * self.clip / (2 * self.levels) / rho_sum, rel=2.0**-52)
        return Precision(abs=n_summed * 2.0 ** -(self.frac_bits + 1), rel=2.0**-52)

    def _overflow(self, kind: Kind, n_summed: int, bound: float, rho_sum: float) -> str:
        if kind == "sum":
            per = 2 ** (self.limb_bits - 1)
            return (f"plain-modulus limit: {n_summed} kind='sum' blobs have limbs summing up to {bound:.0f} > "
                    f"{self.half_t} (t={self.plain_modulus}); at most {self.half_t // per} fit. Sum them in groups "
                    f"of at most {self.half_t // per} and add the decrypted results")
        fit = int((self.half_t - n_summed / 2) / rho_sum)  # levels that these rhos leave room for
        bits = (fit + 1).bit_length()
        advice = (f"lower he.bits to {bits} to sum up to {self.half_t // (2 ** (bits - 1) - 1)} clients at equal "
                  f"weight (rho = 1), or " if bits >= 2 else "")
        return (f"plain-modulus limit: {n_summed} updates whose rho sum to {rho_sum:.4g} at he.bits={self.bits} could "
                f"reach |sum| = {bound:.0f} > {self.half_t} (t={self.plain_modulus}) and wrap; {advice}let the "
                f"federation pass total_weight (the sum of the clients' weights) so that the rhos sum to at most 1")

    def _additions_limit(self) -> str:
        return (f"noise budget: the {self.coeff_modulus[0].bit_length()}-bit coefficient modulus holds the "
                f"worst-case noise of he.max_clients={self.max_clients} fresh updates with "
                f"{self.noise_margin_bits} bits of margin; raise he.max_clients for more")

    def details(self) -> dict[str, Any]:
        step = self.clip / self.levels
        per = 2 ** (self.limb_bits - 1)
        return {
            "plain_modulus": self.plain_modulus,
            "bits": self.bits,
            "clip": self.clip,
            "quantization_step": step,
            "precision": {
                "mean": (f"|error| <= n * {step / 2:.3g} / sum(rho) per value (half a step of clip/(2^(bits-1)-1) "
                         f"per client), after clipping to [-{self.clip:g}, {self.clip:g}] (clipped values are "
                         f"counted in the header)"),
                "sum": (f"exact for integers (|value| < 2^52 per client, |sum| < 2^53); floats within "
                        f"n * 2^-{self.frac_bits + 1} absolute plus 2^-52 relative"),
            },
            "max_clients": {
                "mean_at_rho_1": min(self.max_additions, self.half_t // self.levels),
                "mean_with_total_weight": min(self.max_additions, 2 * (self.half_t - self.levels)),
                "sum": min(self.max_additions, self.half_t // per),
            },
            "noise": {"max_additions": self.max_additions, "fresh_noise_per_update": FRESH_NOISE,
                      "margin_bits": self.noise_margin_bits},
        }


@dataclass(frozen=True, kw_only=True)
class CkksPreset(Preset):
    """CKKS: approximate real slots at scale ``2**scale_bits``, no quantization.

    Mean blobs travel at the last level (one prime), which holds |sum| up to about 2**18 and is 2.5x smaller
    than the top level; sum blobs travel at the top level, which holds |sum| up to about 2**98.
    """

    scale_bits: int
    mean_primes: int
    sum_primes: int
    abs_error: float  # stated per-client absolute error (measured max about 1e-9)
    rel_error: float  # stated relative error of the encoding (measured max about 1e-15)

    scheme: ClassVar[str] = "ckks"
    exact_sums: ClassVar[bool] = False

    @property
    def scale(self) -> float:
        """The encoding scale ``2**scale_bits``."""
        return 2.0**self.scale_bits

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    def level_primes(self, kind: Kind) -> int:
        return self.mean_primes if kind == "mean" else self.sum_primes

    def capacity(self, kind: Kind) -> float:
        # A slot value v becomes polynomial coefficients of magnitude <= |v| * scale; decryption is correct
        # while they stay below q / 2. Keep a factor 2 of margin for noise and rounding.
        return math.prod(self.coeff_modulus[:self.level_primes(kind)]) / 4 / self.scale

    def _public_bound(self, encoded: Encoded, kind: Kind, rho: float, value_bound: float) -> float:
        return rho * value_bound if kind == "mean" else value_bound

    def encode(self, kind: Kind, x: np.ndarray, rho: float) -> Encoded:
        top = float(np.abs(x).max()) if x.size else 0.0
        values, bound = (x * rho, rho * top) if kind == "mean" else (x, top)
        return Encoded(self._rows(values), bound, self.scale, EncodingReport(values=x.size, max_abs=top))

    def decode(self, kind: Kind, rows: np.ndarray, n_values: int, rho_sum: float) -> np.ndarray:
        flat = rows.ravel()[:n_values]
        return flat / rho_sum if kind == "mean" else flat.copy()

    def precision(self, kind: Kind, n_summed: int, rho_sum: float, bound: float) -> Precision:
        err = n_summed * self.abs_error + self.rel_error * bound
        return Precision(abs=err / rho_sum if kind == "mean" else err, rel=2.0**-52)

    def _overflow(self, kind: Kind, n_summed: int, bound: float, rho_sum: float) -> str:
        what = "sum(rho * max|value|)" if kind == "mean" else "sum(max|value|)"
        advice = ("scale the updates down, or let the federation pass total_weight so that the rhos sum to at "
                  "most 1" if kind == "mean" else "scale the values down (for example to thousands)")
        return (f"modulus limit: {what} over {n_summed} blobs is {bound:.4g} > {self.capacity(kind):.4g}, the most "
                f"a {self.name} '{kind}' ciphertext holds at scale 2^{self.scale_bits} without wrapping; {advice}")

    def _additions_limit(self) -> str:
        return "the stated precision covers that many additions"

    def details(self) -> dict[str, Any]:
        return {
            "scale_bits": self.scale_bits,
            "level_primes": {"mean": self.mean_primes, "sum": self.sum_primes},
            "precision": {
                "mean": (f"|error| <= (n * {self.abs_error:.3g} + {self.rel_error:.3g} * sum(rho * max|value|)) "
                         f"/ sum(rho) per value; no clipping, no quantization"),
                "sum": f"|error| <= n * {self.abs_error:.3g} + {self.rel_error:.3g} * sum(max|value|) per value",
            },
            "max_clients": {"additions": self.max_additions},
            "capacity": {"mean_sum_of_rho_times_max_abs": self.capacity("mean"),
                         "sum_sum_of_max_abs": self.capacity("sum")},
        }


#: The most updates one bfv-compact sum holds when nothing says otherwise (a federation's config sets it
#: from its number of institutions).
DEFAULT_MAX_CLIENTS = 16

PRESETS: dict[str, Preset] = {
    "bfv-compact": BfvPreset(
        name="bfv-compact",
        poly_modulus_degree=4096,  # t and the one coefficient prime follow from bits and max_clients
        bits=16,
        clip=1.0,
        max_clients=DEFAULT_MAX_CLIENTS,
        limb_bits=10,
        limbs=8,
        frac_bits=24,
        noise_margin_bits=2,
    ),
    "ckks": CkksPreset(
        name="ckks",
        poly_modulus_degree=8192,
        coeff_modulus=(1152921504606748673, 1099510890497, 1099511480321, 1152921504606830593),  # [60, 40, 40, 60]
        scale_bits=40,
        mean_primes=1,
        sum_primes=3,
        abs_error=2.0**-27,
        rel_error=2.0**-44,
        max_additions=4096,
    ),
}


def get_preset(preset: str | Preset, **overrides: Any) -> Preset:
    """A preset by name (or as given), with ``overrides`` such as ``bits`` and ``clip`` validated.

    Raises
    ------
    HEError
        Unknown preset or setting, or a malformed value.
    CapacityError
        A setting that cannot hold even one update.
    """
    if isinstance(preset, Preset):
        base = preset
    elif isinstance(preset, str) and preset in PRESETS:
        base = PRESETS[preset]
    else:
        raise HEError(f"unknown HE preset {preset!r}; expected one of {', '.join(PRESETS)}")
    return base.with_overrides(**overrides) if overrides else base
