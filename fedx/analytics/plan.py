"""The federated statistics engine: a query plan, its stages, local vectors and the shared release.

The federation runs in stages. At each stage every institution turns its own rows into one float64
vector of additive statistics (:meth:`StatsPlan.local_vector`); the vectors are summed, in plaintext or
encrypted (``he.encrypt(secret, [vector], kind="sum")``) by a server that cannot read them; every
institution decrypts the same sum and runs the same deterministic :meth:`StatsPlan.release`, which
applies the policy and returns either the released statistics or the next stage (quantile refinement).

>>> plan = StatsPlan.from_config(cfg.stats, seed=cfg.seed)          # doctest: +SKIP
>>> if plan.needs_levels():                                          # doctest: +SKIP
...     plan = plan.with_levels(union of plan.local_levels(df) over institutions)
>>> stage = plan.first_stage()                                       # doctest: +SKIP
>>> total = sum(plan.local_vector(df, stage, policy) for df in institutions)   # doctest: +SKIP
>>> out = plan.release(total, stage, policy)                         # doctest: +SKIP

The stage is a JSON-serializable dict: ``version`` (1), ``step`` (1, 2, ...), ``seed``, ``levels``
({column: [level, ...]} of every categorical column in use), ``searches`` (the state of each quantile
search, :class:`~fedx.analytics.quantiles.Target` as a dict) and ``released`` (null at step 1, then the
statistics released at step 1, carried to the last step).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..config import StatsConfig, categorical_uses, check_unique
from ..errors import ConfigError, DataError, FederationError
from ..privacy.policy import Mechanism, Policy
from .columns import bin_index, bin_labels, number_label
from .quantiles import Target, derived_range, inverted_cdf_rank
from .release import Releaser, moments, noise_generator
from .segments import NONCE_RANGE, NONCE_SLOTS, LocalTable, Segment

STAGE_VERSION = 1
#: A quantile search that has not converged after this many stages is stopped with an error.
MAX_STAGES = 64


@dataclass(frozen=True)
class Release:
    """What :meth:`StatsPlan.release` returns.

    Attributes
    ----------
    done : bool
        Whether ``result`` holds the final statistics.
    next_stage : dict or None
        The stage to run next, when not done.
    result : dict or None
        The released statistics (the body of stats.json, without ``institutions``), when done.
    suppressed : list of str
        The cells withheld so far, by name.
    """

    done: bool
    next_stage: dict[str, Any] | None
    result: dict[str, Any] | None
    suppressed: list[str]


@dataclass(frozen=True)
class StatsPlan:
    """A validated statistics query: which statistics of which columns, in which groups.

    Build it with :meth:`from_config`; the fields mirror :class:`~fedx.config.StatsConfig`. ``levels``
    holds the levels known so far (declared, or filled in by :meth:`with_levels`).
    """

    columns: tuple[str, ...] = ()
    histograms: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    quantiles: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    quantile_precision: float | None = None
    quantile_range: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    correlation: tuple[str, ...] = ()
    frequencies: tuple[str, ...] = ()
    crosstabs: tuple[tuple[str, str], ...] = ()
    levels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    group_by: str | None = None
    group_bins: tuple[float, ...] | None = None
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    noise: Mechanism = "none"
    seed: int = 0

    # ------------------------------------------------------------------ building

    @classmethod
    def from_config(cls, cfg: StatsConfig, *, seed: int = 0, path: str = "stats") -> StatsPlan:
        """Validate a ``stats:`` section into a plan (no data needed).

        Parameters
        ----------
        cfg : StatsConfig
            The section.
        seed : int
            The run's seed (one input of the noise seed).
        path : str
            The section's key path, for messages.

        Raises
        ------
        ConfigError
            Naming the key at fault and what was expected.
        """
        cfg.check(path)
        return cls(
            columns=tuple(cfg.columns),
            histograms={c: tuple(float(x) for x in e) for c, e in cfg.histograms.items()},
            quantiles={c: tuple(p) for c, p in cfg.quantiles.items()},
            quantile_precision=cfg.quantile_precision,
            quantile_range={c: (float(r[0]), float(r[1])) for c, r in cfg.quantile_range.items()},
            correlation=tuple(cfg.correlation),
            frequencies=tuple(cfg.frequencies),
            crosstabs=tuple((a, b) for a, b in cfg.crosstabs),
            levels={c: tuple(v) for c, v in cfg.levels.items()},
            group_by=cfg.group_by,
            group_bins=None if cfg.group_bins is None else tuple(float(e) for e in cfg.group_bins),
            bounds={c: (float(b[0]), float(b[1])) for c, b in cfg.bounds.items()},
            noise=cfg.noise,
            seed=seed,
        )

    def _numeric_uses(self) -> dict[str, str]:
        uses: dict[str, str] = {}
        for col in self.columns:
            uses.setdefault(col, "stats.columns")
        for col in self.histograms:
            uses.setdefault(col, f"stats.histograms.{col}")
        for col in self.quantiles:
            uses.setdefault(col, f"stats.quantiles.{col}")
        for col in self.correlation:
            uses.setdefault(col, "stats.correlation")
        if self.group_by is not None and self.group_bins is not None:
            uses.setdefault(self.group_by, "stats.group_by with group_bins")
        return uses

    def _categorical_uses(self) -> dict[str, str]:
        return categorical_uses(self.frequencies, self.crosstabs, self.group_by, self.group_bins)

    # ------------------------------------------------------------------ levels

    def needs_levels(self) -> list[str]:
        """The categorical columns whose levels are neither declared nor discovered yet."""
        return [c for c in self._categorical_uses() if c not in self.levels]

    def local_levels(self, df: pd.DataFrame, source: str = "this institution") -> dict[str, list[str]]:
        """The level names this institution holds of each column in :meth:`needs_levels` (sent in plaintext)."""
        table = self._table(df, source)
        return {c: sorted({v for v in table.labels(c) if v is not None}) for c in self.needs_levels()}

    def with_levels(self, levels: Mapping[str, Sequence[str]]) -> StatsPlan:
        """This plan with discovered levels (the union over institutions) filled in.

        Raises
        ------
        ConfigError
            A column of :meth:`needs_levels` is not in ``levels``.
        """
        missing = [c for c in self.needs_levels() if c not in levels]
        if missing:
            raise ConfigError(f"stats: no levels given for {missing}; pass the union of every institution's "
                              f"local_levels")
        found = {}
        for c in self.needs_levels():
            check_unique(f"levels of {c}", [str(v) for v in levels[c]])
            found[c] = tuple(str(v) for v in levels[c])
        return dataclasses.replace(self, levels={**self.levels, **found})

    # ------------------------------------------------------------------ stages

    def check_columns(self, df: pd.DataFrame, source: str) -> None:
        """Check that an institution's table holds every column asked for, of the right type.

        Raises
        ------
        SchemaError
            Naming the institution, the column and what was expected: a missing column, text where
            numbers are needed, a numeric column with too many distinct values used as categorical, or
            a level outside the declared ones.
        """
        table = self._table(df, source)
        for col in self._numeric_uses():
            table.numbers(col)
        for col in self._categorical_uses():
            if col in self.levels:
                table.codes(col, self.levels[col])
            else:
                table.labels(col)

    def first_stage(self) -> dict[str, Any]:
        """Stage 1: every statistic, and the first histogram of quantile searches with a declared range.

        Raises
        ------
        ConfigError
            Levels are still unknown (see :meth:`needs_levels`).
        """
        if self.needs_levels():
            raise ConfigError(f"stats: the levels of {self.needs_levels()} are not known yet; call with_levels with "
                              f"the union of every institution's local_levels first")
        targets = []
        for block in self._blocks():
            for col, probs in self.quantiles.items():
                for p in probs:
                    target = Target(block=block, column=col, p=p)
                    if col in self.quantile_range:
                        target = target.start(*self.quantile_range[col], self.quantile_precision)
                    targets.append(dataclasses.asdict(target))
        return {"version": STAGE_VERSION, "step": 1, "seed": self.seed,
                "levels": {c: list(self.levels[c]) for c in self._categorical_uses()},
                "searches": targets, "released": None}

    def layout(self, stage: Mapping[str, Any]) -> list[Segment]:
        """The segments of a stage's vector, in order (the same at every institution)."""
        step, levels, targets = self._read_stage(stage)
        segments: list[Segment] = []
        if step == 1:
            for block in self._blocks(levels):
                segments += self._block_segments(block, levels)
        brackets = dict.fromkeys((t.block, t.column, t.lo, t.hi) for t in targets if t.counting)
        segments += [Segment("search", block, (col,), edges=(lo, hi)) for block, col, lo, hi in brackets]
        if step == 1 and self.noise != "none":
            segments.append(Segment("nonce", None))
        return segments

    def whole_numbers(self, stage: Mapping[str, Any]) -> np.ndarray:
        """Boolean mask of the entries of a stage vector that are whole numbers (every count, and the nonce).

        Under CKKS the error of every decrypted value grows with the largest |value| of its blob; encrypt
        ``vector[mask]`` and ``vector[~mask]`` as two blobs to keep counts exact beside large sums of squares.
        """
        return np.concatenate([np.full(s.size, s.role != "sum") for s in self.layout(stage)])

    def local_vector(self, df: pd.DataFrame, stage: Mapping[str, Any], policy: Policy, *,
                     source: str = "this institution", rng: np.random.Generator | None = None) -> np.ndarray:
        """This institution's float64 vector of additive statistics for ``stage``.

        An institution with zero rows gives zeros (and, with noise, its random nonce).

        Parameters
        ----------
        df : pandas.DataFrame
            The institution's own rows.
        stage : dict
            The stage (from :meth:`first_stage` or a :class:`Release`).
        policy : Policy
            The run's policy with this institution's own ``local_min_cohort``.
        source : str
            The institution's name, for messages.
        rng : numpy.random.Generator, optional
            Source of the nonce (with noise); fresh OS entropy by default.

        Raises
        ------
        PolicyError
            A non-empty cell of this answer holds fewer than ``policy.local_min_cohort`` own records.
        SchemaError
            A column is missing or of the wrong type.
        """
        self._check_policy(policy)
        layout = self.layout(stage)
        levels = self._read_stage(stage)[1]
        table = self._table(df, source)
        masks = self._block_masks(table, levels)
        parts = []
        for seg in layout:
            if seg.kind == "nonce":
                generator = rng if rng is not None else np.random.default_rng()
                parts.append(generator.integers(0, NONCE_RANGE, NONCE_SLOTS).astype(np.float64))
            else:
                parts.append(table.values(seg, masks[seg.block]))
        policy.check_local(((name, float(v)) for seg, values in zip(layout, parts) if seg.checked_locally
                            for name, v in zip(seg.names, values)), source)
        return np.concatenate(parts) if parts else np.zeros(0)

    def release(self, total: np.ndarray, stage: Mapping[str, Any], policy: Policy) -> Release:
        """The deterministic release of a summed stage vector: final statistics, or the next stage.

        Raises
        ------
        DataError
            The sum has the wrong length, holds NaN/Inf, or counts that are not whole numbers.
        """
        self._check_policy(policy)
        step, levels, targets = self._read_stage(stage)
        layout = self.layout(stage)
        values = self._split(total, layout)
        if step == 1:
            released, targets = self._release_first(layout, values, levels, targets, policy)
        else:
            released = dict(stage["released"])
            counts = {(s.block, s.columns[0], s.edges): v for s, v in zip(layout, values) if s.kind == "search"}
            targets = [t.advance(counts[(t.block, t.column, (t.lo, t.hi))]) if t.counting else t for t in targets]
        suppressed = list(released["suppressed"])
        if all(t.status != "open" for t in targets):
            return Release(done=True, next_stage=None, result=self._with_quantiles(released, targets),
                           suppressed=suppressed)
        if step >= MAX_STAGES:
            raise DataError(f"the quantile search did not converge in {MAX_STAGES} stages; declare "
                            f"stats.quantile_range or a coarser stats.quantile_precision")
        next_stage = {**stage, "step": step + 1, "searches": [dataclasses.asdict(t) for t in targets],
                      "released": released}
        return Release(done=False, next_stage=next_stage, result=None, suppressed=suppressed)

    def sufficient_statistics(self, total: np.ndarray, stage: Mapping[str, Any]) -> dict[str, Any]:
        """The raw sums of stage 1 over all rows, before any policy: for internal use such as preprocessing.

        Returns
        -------
        dict
            ``rows``; ``moments`` {column: {"count", "sum", "sumsq"}} (``columns``); ``frequencies``
            {column: {"counts": {level: count}, "missing": count}}.
        """
        layout = self.layout(stage)
        parts = {(s.kind, s.columns): (s, v) for s, v in zip(layout, self._split(total, layout)) if s.block is None}
        out: dict[str, Any] = {"rows": float(parts[("rows", ())][1][0]), "moments": {}, "frequencies": {}}
        for c in self.columns:
            sums = parts[("sums", (c,))][1]
            out["moments"][c] = {"count": float(parts[("count", (c,))][1][0]), "sum": float(sums[0]),
                                 "sumsq": float(sums[1])}
        for c in self.frequencies:
            seg, v = parts[("freq", (c,))]
            out["frequencies"][c] = {"counts": dict(zip(seg.levels[0], v[:-1].tolist())), "missing": float(v[-1])}
        return out

    # ------------------------------------------------------------------ internals

    def _check_policy(self, policy: Policy) -> None:
        if policy.noise != self.noise:
            raise ConfigError(f"the policy's noise '{policy.noise}' differs from the plan's '{self.noise}'; build "
                              f"both from the same stats section")

    def _table(self, df: pd.DataFrame, source: str) -> LocalTable:
        return LocalTable(df, source, self._numeric_uses(), self._categorical_uses())

    def _read_stage(self, stage: Mapping[str, Any]) -> tuple[int, dict[str, tuple[str, ...]], list[Target]]:
        try:
            if stage["version"] != STAGE_VERSION:
                raise FederationError(f"stage version {stage['version']!r} is not {STAGE_VERSION}")
            step = int(stage["step"])
            levels = {c: tuple(stage["levels"][c]) for c in self._categorical_uses()}
            targets = [Target.from_dict(t) for t in stage["searches"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise FederationError(f"malformed stage: {exc!r}") from None
        if step < 1 or (step > 1 and not isinstance(stage.get("released"), Mapping)):
            raise FederationError(f"malformed stage: step {step} without the released statistics of step 1")
        return step, levels, targets

    def _blocks(self, levels: Mapping[str, tuple[str, ...]] | None = None) -> list[str | None]:
        """None (all rows), then one label per group."""
        if self.group_by is None:
            return [None]
        if self.group_bins is not None:
            return [None, *bin_labels(self.group_bins)]
        return [None, *(levels if levels is not None else self.levels)[self.group_by]]

    def _block_masks(self, table: LocalTable, levels: Mapping[str, tuple[str, ...]]) -> dict[str | None, np.ndarray]:
        masks: dict[str | None, np.ndarray] = {None: np.ones(len(table), dtype=bool)}
        if self.group_by is None:
            return masks
        if self.group_bins is not None:
            x = table.numbers(self.group_by)
            codes = np.full(x.shape, -1)
            present = ~np.isnan(x)
            codes[present] = bin_index(x[present], np.asarray(self.group_bins), closed_last=True)
        else:
            codes = table.codes(self.group_by, levels[self.group_by])
        for j, label in enumerate(self._blocks(levels)[1:]):
            masks[label] = codes == j
        return masks

    def _block_segments(self, block: str | None, levels: Mapping[str, tuple[str, ...]]) -> list[Segment]:
        sfx = "" if block is None else f" (group {self.group_by}={block})"
        clip = self.bounds if self.noise != "none" else {}
        moment_cols = tuple(dict.fromkeys(self.columns + tuple(self.quantiles)))
        segs = [Segment("rows", block, names=("rows" if block is None else f"groups.{self.group_by}={block}",))]
        for c in moment_cols:
            where = "columns" if c in self.columns else "quantiles"
            segs += [Segment("count", block, (c,), names=(f"{where}.{c}{sfx}",)),
                     Segment("sums", block, (c,), clip=(clip.get(c),))]
        for c, edges in self.histograms.items():
            lo, hi = number_label(edges[0]), number_label(edges[-1])
            names = [f"histograms.{c}[-inf,{lo})", *(f"histograms.{c}{b}" for b in bin_labels(edges)),
                     f"histograms.{c}({hi},inf]"]
            segs.append(Segment("hist", block, (c,), edges=edges, names=tuple(n + sfx for n in names)))
        for c in self.frequencies:
            names = [f"frequencies.{c}[{lvl}]{sfx}" for lvl in levels[c]] + [f"frequencies.{c}[missing]{sfx}"]
            segs.append(Segment("freq", block, (c,), levels=(levels[c],), names=tuple(names)))
        for a, b in self.crosstabs:
            names = [f"crosstabs.{a} x {b}[{la}, {lb}]{sfx}" for la in levels[a] for lb in levels[b]]
            segs.append(Segment("xtab", block, (a, b), levels=(levels[a], levels[b]), names=tuple(names)))
        if self.correlation:
            segs += [Segment("corr_n", block, self.correlation, names=(f"correlation{sfx}",)),
                     Segment("corr_sums", block, self.correlation,
                             clip=tuple(clip.get(c) for c in self.correlation))]
        return segs

    def _split(self, total: np.ndarray, layout: Sequence[Segment]) -> list[np.ndarray]:
        """The sum cut into segments, with every count rounded to the whole number it must be."""
        v = np.asarray(total, dtype=np.float64)
        size = sum(s.size for s in layout)
        if v.shape != (size,):
            raise DataError(f"the summed stage vector has shape {v.shape}; this stage's layout needs ({size},)")
        if not np.all(np.isfinite(v)):
            raise DataError("the summed stage vector holds NaN or infinite values")
        bounds = np.cumsum([0] + [s.size for s in layout])
        out = []
        for seg, a, b in zip(layout, bounds[:-1], bounds[1:]):
            part = v[a:b]
            if seg.role != "sum":
                whole = np.rint(part)
                if np.any(np.abs(part - whole) > 0.25):
                    raise DataError(f"summed counts of {seg.kind} {list(seg.columns)} are not whole numbers "
                                    f"(off by up to {np.abs(part - whole).max():.3g}): the encrypted sum lost "
                                    f"precision, or an institution sent a malformed vector")
                part = whole
            out.append(part)
        return out

    def _release_first(self, layout: Sequence[Segment], values: Sequence[np.ndarray],
                       levels: Mapping[str, tuple[str, ...]], targets: list[Target],
                       policy: Policy) -> tuple[dict[str, Any], list[Target]]:
        rng = None
        if policy.noisy:
            whole = np.concatenate([v for s, v in zip(layout, values) if s.role != "sum"])
            rng = noise_generator(self.seed, 1, whole)
        releaser = Releaser(policy, self.bounds, rng)
        parts: dict[str | None, dict[Any, tuple[Segment, np.ndarray]]] = {}
        for seg, v in zip(layout, values):
            parts.setdefault(seg.block, {})[(seg.kind, seg.columns)] = (seg, v)
        blocks = {b: releaser.block(parts[b], b is None, self.columns, list(self.histograms), self.frequencies,
                                    self.crosstabs, self.correlation) for b in self._blocks(levels)}
        top = blocks[None]
        assert top is not None  # only groups are withheld whole
        released: dict[str, Any] = dict(top)
        if self.group_by is not None:
            released["groups"] = {"by": self.group_by, "bins": list(self.group_bins) if self.group_bins else None,
                                  "levels": {b: blocks[b] for b in self._blocks(levels)[1:]}}
        else:
            released["groups"] = None
        searches = {(s.block, s.columns[0], s.edges): v for s, v in zip(layout, values) if s.kind == "search"}
        updated = [self._first_step(t, parts[t.block], blocks[t.block] is None, searches, releaser.suppressed, policy)
                   for t in targets]
        released["suppressed"] = releaser.suppressed
        released["privacy"] = releaser.privacy(self.group_by is not None)
        return released, updated

    def _first_step(self, t: Target, block: Mapping[Any, tuple[Segment, np.ndarray]], withheld: bool,
                    searches: Mapping[Any, np.ndarray], suppressed: list[str], policy: Policy) -> Target:
        """A quantile search after stage 1: withheld, empty, started, or advanced over its declared range."""
        count = int(block[("count", (t.column,))][1][0])
        if withheld:
            return dataclasses.replace(t, status="suppressed")
        if count == 0:
            return dataclasses.replace(t, status="empty")
        if policy.suppresses(count):
            name = f"quantiles.{t.column}" + ("" if t.block is None else f" (group {self.group_by}={t.block})")
            if name not in suppressed:
                suppressed.append(name)
            return dataclasses.replace(t, status="suppressed")
        t = dataclasses.replace(t, rank=inverted_cdf_rank(count, t.p))
        if t.lo is not None:
            return t.advance(searches[(t.block, t.column, (t.lo, t.hi))])
        s, ss = block[("sums", (t.column,))][1]
        m = moments(count, float(s), float(ss))
        return t.start(*derived_range(m["mean"], m["std"] or 0.0), self.quantile_precision)

    def _with_quantiles(self, released: Mapping[str, Any], targets: Sequence[Target]) -> dict[str, Any]:
        result = json.loads(json.dumps(released))  # a deep copy of plain data
        found: dict[tuple[str | None, str], list[Target]] = {}
        for t in targets:
            found.setdefault((t.block, t.column), []).append(t)
        for (block, column), column_targets in found.items():
            holder = result if block is None else result["groups"]["levels"][block]
            if holder is not None:
                widths = [t.width for t in column_targets if t.width is not None]
                holder["quantiles"][column] = {**{repr(t.p): t.value for t in column_targets},
                                               "precision": max(widths) if widths else None}
        return result


def stage_digest(stage: Mapping[str, Any]) -> str:
    """sha256 of a stage's canonical JSON: an institution compares it with the stage it computed itself."""
    return hashlib.sha256(json.dumps(stage, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
