"""What one institution does with its own data: everything but the messaging.

An :class:`Institution` holds one bank's, insurer's or hospital's table and the secret key. It answers
the federation's requests (describe yourself, share feature statistics, train, evaluate, save the
final model) with plain Python values, numpy arrays and ciphertext bytes; :mod:`fedx.flower` carries
those in Flower messages. Raw rows never leave this object: what does leave is listed in
docs/security.md and recorded in the node's audit ledger.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._version import __version__
from .aggregators import ModelState, UpdateRule, make_rule
from .analytics import moments_plan
from .baselines import fit_model, fit_preprocessor
from .config import Config
from .data.local import derive_seed, prepared_cached, read_cached, split_cached
from .data.preprocess import Preprocessor, with_levels
from .data.schema import Schema, column_kinds
from .data.spec import non_feature_columns, schema_for
from .errors import ConfigError, DataError, FederationError, StateDivergedError
from .privacy.policy import Policy
from .tasks import TabularData, TrainOptions, get_task, model_config
from .tasks.params import get_arrays, set_arrays, update_delta

log = logging.getLogger(__name__)

#: What travels for an aggregate: plaintext arrays, or one ciphertext blob (under masking, the quantized
#: slots that the messaging layer masks and encrypts: a :class:`fedx.he.masked.Quantized`).
Payload = list[np.ndarray] | bytes | Any


@dataclass(frozen=True)
class LocalPolicy:
    """Rules an institution enforces on its own data, whatever the server asks."""

    require_encryption: bool = False
    min_cohort: int = 1


@dataclass(frozen=True)
class NodeSpec:
    """One institution's local settings: its name, its data, its secret key and where it writes."""

    name: str
    data: Path
    out_dir: Path
    keys: Path | None = None
    policy: LocalPolicy = field(default_factory=LocalPolicy)


@dataclass
class NodeState:
    """What an institution remembers between messages of one run."""

    preprocessor: dict[str, Any] | None = None
    model: ModelState | None = None
    report: dict[str, Any] | None = None
    dp_history: list[list[float]] = field(default_factory=list)


class Institution:
    """One institution's side of a federated run.

    Parameters
    ----------
    spec : NodeSpec
        Local settings.
    cfg : Config
        The run's config, as the server sent it (its data source is ignored: the node uses its own).
    state : NodeState
        What this institution remembers from earlier messages of the run.
    """

    def __init__(self, spec: NodeSpec, cfg: Config, state: NodeState | None = None) -> None:
        self.spec = spec
        self.cfg = cfg
        self.state = state or NodeState()
        # A stats-only config has no task: the institution then only answers statistics queries.
        self.task: Any = get_task(cfg.task) if cfg.task else None
        self.rule: UpdateRule = make_rule(cfg) if cfg.task else None  # type: ignore[assignment]
        self._newton: Any = self.rule if self.rule is not None and self.rule.name == "newton" else None
        encryption = cfg.security.encryption
        if spec.policy.require_encryption and encryption == "none":
            raise FederationError(f"{spec.name}: local policy requires encryption, and the run has "
                                  f"security.encryption: none")
        self._secret = None
        if encryption != "none":
            self._secret = _load_secret(spec)
        #: Under ``security.masking: pairwise`` the sums leave as quantized slots, which the messaging
        #: layer masks and encrypts (:mod:`fedx.secagg`); the slots are those that he.encrypt would encrypt.
        self.masking = cfg.security.masking == "pairwise" and self._secret is not None

    # ------------------------------------------------------------------ data

    @property
    def schema(self) -> Schema:
        """The run's schema, as declared in the config (levels may still be undiscovered)."""
        return schema_for(self.cfg, self.table)

    @property
    def table(self) -> pd.DataFrame:
        """This institution's full table, cleaned as the config says (``data.na_values``, ``data.target_above``)."""
        return prepared_cached(self._path(), self.cfg)

    def split(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The local train/test split: deterministic for the run's seed and this institution's name."""
        return split_cached(self._path(), self.cfg, self.spec.name, self.task)

    def _path(self) -> Path:
        p = Path(self.spec.data)
        if not p.exists():
            raise DataError(f"{self.spec.name}: data file not found: {p}")
        return p

    def tabular(self, prep: Preprocessor, df: pd.DataFrame) -> TabularData:
        """The design matrix and targets of ``df`` under ``prep``."""
        return TabularData.from_frame(self.cfg, prep, df)

    def split_data(self, prep: Preprocessor, which: str) -> TabularData:
        """The design matrix of the local ``"train"`` or ``"test"`` split under ``prep``, once per process.

        Every round trains and evaluates on the same split under the same preprocessing: building the
        matrix again each round would cost as much as a round's transfers (0.1 s at 40,000 rows). The
        cache is keyed by the data file (path and modification time), the config's data section and
        seed, the institution and the preprocessing's digest, so any change builds it anew.
        """
        p = self._path()
        key = json.dumps({"data": self.cfg.to_dict().get("data"), "seed": self.cfg.seed, "task": self.task.name},
                         sort_keys=True, default=str)
        return _split_data_cached(self, str(p.resolve()), p.stat().st_mtime, key, self.spec.name, prep.digest, which,
                                  prep)

    # ------------------------------------------------------------------ phases

    def hello(self) -> dict[str, Any]:
        """Who this institution is and how much data it trains on (counts leave; rows never do).

        When the config declares no features, it also names the kind of each candidate column as
        seen here (numeric, categorical, or empty when every cell is missing), so that the server
        can settle one schema for all.
        """
        out: dict[str, Any] = {"name": self.spec.name, "n_rows": len(self.table),
                               "fingerprint": self._secret.fingerprint if self._secret is not None else "",
                               "version": __version__}
        self.check_data()
        if self.task is None:
            return out
        train, test = self.split()
        out.update(n_train=len(train), n_test=len(test))
        if self.cfg.data.features is None:
            out["features"] = column_kinds(self.table, non_feature_columns(self.cfg))
        else:
            self.schema.validate(self.table, source=str(self.spec.data), target_kind=self.task.target_kind)
        return out

    def check_data(self) -> None:
        """Check this institution's table against the run's config (:func:`fedx.data.checks.check_table`).

        Raises
        ------
        DataError
            Naming this institution, its file, the column, the row and the value.
        """
        import dataclasses

        from .data.checks import check_table, table_label

        table = read_cached(self._path())
        cfg = self.cfg
        if cfg.data.split_by is not None and cfg.data.split_by not in table.columns:
            # A node's own table holds this institution alone: the column that names the institution is
            # needed to split a pooled source, not here.
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, split_by=None))
        check_table(table, cfg, table_label(self.spec.name, Path(self.spec.data).name),
                    self.task.target_kind if self.task is not None else None)

    def levels(self) -> dict[str, list[str]]:
        """The names (no counts) of the levels of undeclared categorical features in the training rows."""
        train, _ = self.split()
        return moments_plan(self.schema).local_levels(train, source=self.spec.name)

    def moments(self, levels: Mapping[str, list[str]]) -> Payload:
        """Additive feature statistics of the training rows (encrypted when encryption is on)."""
        train, _ = self.split()
        plan = moments_plan(with_levels(self.schema, levels))
        vec = plan.local_vector(train, plan.first_stage(), Policy(), source=self.spec.name)
        return self._seal_sum([vec])

    def setup(self, levels: Mapping[str, list[str]], moments_total: Payload) -> dict[str, str]:
        """Fit the shared preprocessor from the summed statistics, and build the initial model."""
        (total,) = self._open(moments_total)
        schema = with_levels(self.schema, levels)
        plan = moments_plan(schema)
        prep = Preprocessor.fit(schema, plan.sufficient_statistics(np.asarray(total, dtype=np.float64),
                                                                   plan.first_stage()),
                                standardize=self.cfg.standardize, missing_indicators=self.cfg.data.missing_indicators)
        model = self.task.build_model(len(prep.feature_names), model_config(self.cfg), seed=self.cfg.seed)
        params = get_arrays(model)
        if self._newton is not None:
            params = [p.astype(np.float64) for p in params]   # the exact solver keeps float64 coefficients
        self.state.preprocessor = prep.to_dict()
        self.state.model = ModelState(params, {}, 0)
        self.state.report = None
        return {"preprocessor": prep.digest, "state": self.state.model.digest(),
                "n_features": str(len(prep.feature_names)), "feature_names": list(prep.feature_names)}

    def update_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of what :meth:`train` sends: the model's deltas, or the GLM statistics vector."""
        state = self._require_setup()
        if self._newton is not None:
            from .aggregators.newton import stats_layout

            p = int(np.prod(state.params[0].shape))
            return [(max(sl.stop for sl in stats_layout(p, self._newton.family.name).values()),)]
        return [tuple(p.shape) for p in state.params]

    def sync(self, target_round: int, *, params: list[np.ndarray] | None = None,
             opt: Mapping[str, list[np.ndarray]] | None = None,
             aggregates: Mapping[int, bytes] | None = None, digests: Mapping[int, str] | None = None) -> None:
        """Bring the local copy of the global model to ``target_round``.

        In plaintext the server sends the model itself (``params``). Under encryption it sends the
        aggregates this institution has not applied yet; each is decrypted and applied with the
        deterministic update rule, and the result is checked against the federation's digest.
        """
        state = self._require_setup()
        if params is not None:
            self.state.model = ModelState([np.asarray(p) for p in params], dict(opt or {}), target_round)
            return
        aggregates = aggregates or {}
        self._check_digest(state, digests)
        while state.round < target_round:
            nxt = state.round + 1
            if nxt not in aggregates:
                raise FederationError(f"{self.spec.name}: the aggregate of round {nxt} is needed to reach "
                                      f"round {target_round} and was not sent")
            aggregate = self._open(aggregates[nxt])
            prev, state = state, self.rule.apply(state, aggregate)
            self._check_digest(state, digests)
            if self._newton is not None and self._newton.report_ready(prev):
                self.state.report = self.glm_report(aggregate[0], prev)
        self.state.model = state

    def glm_report(self, total: np.ndarray, state: ModelState) -> dict[str, Any]:
        """The exact GLM's coefficients, standard errors and deviances, from statistics summed at ``state``."""
        from .aggregators.glm_results import GLMResults

        assert self._newton is not None
        prep = Preprocessor.from_dict(self.state.preprocessor or {})
        return GLMResults.from_newton(np.asarray(total, dtype=np.float64), state, self._newton, prep.feature_names, {
            s.name: s.levels[0] for s in prep.schema.features if s.kind == "categorical" and s.levels}).to_dict()

    def _check_digest(self, state: ModelState, digests: Mapping[int, str] | None) -> None:
        want = (digests or {}).get(state.round)
        if want and want != state.digest():
            raise StateDivergedError(
                f"{self.spec.name}: at round {state.round} the local model and optimizer state (digest "
                f"{state.digest()[:12]}) differ from the federation's ({want[:12]}); this institution "
                f"stops. Check that every institution runs the same fedx version and keys")

    def train(self, server_round: int, total_weight: float, n_clients: int = 1) -> tuple[Payload, dict[str, float]]:
        """Train locally from the current global model; return the delta (encrypted) and metrics.

        With the newton aggregator, "training" is computing the GLM's sufficient statistics at the
        current coefficients; they are summed, not averaged. With client-level differential privacy
        the delta is clipped, this institution's share of the noise is added before encryption (in
        plaintext the server adds the noise), and every institution weighs the same; ``n_clients``
        is the number of institutions in the round.
        """
        state = self._require_setup()
        prep = Preprocessor.from_dict(self.state.preprocessor or {})
        data = self.split_data(prep, "train")
        if self._newton is not None:
            from .aggregators.newton import local_stats, round_inputs

            t0 = time.perf_counter()
            vec = local_stats(data.X, data.y, state.params, self._newton.family.name, offset=data.offset,
                              weight=data.weight, tweedie_power=self._newton.tweedie_power, **round_inputs(state))
            return self._seal_sum([vec]), {"num-examples": float(len(data)),
                                           "train_seconds": time.perf_counter() - t0}
        model = self.task.build_model(len(prep.feature_names), model_config(self.cfg), seed=self.cfg.seed)
        set_arrays(model, state.params)
        t0 = time.perf_counter()
        dp = self.cfg.security.dp
        sample_dp = self._sample_dp() if dp is not None and dp.level == "sample" else None
        options = TrainOptions.from_config(self.cfg, self.spec.name, server_round, self.cfg.federation.local_epochs)
        report = self.task.train(model, data, options,
                                 global_arrays=state.params if self.cfg.federation.mu > 0 else None,
                                 privacy=sample_dp)
        new = get_arrays(model)
        delta = update_delta(new, state.params)
        metrics = {"num-examples": float(len(data)), "train_seconds": time.perf_counter() - t0}
        if report.privacy is not None:
            self.state.dp_history = [list(h) for h in report.privacy.history]
            metrics["dp_epsilon"] = float(report.privacy.epsilon)
        if dp is not None and dp.level == "client":
            from .privacy.dp import noised_value_bound, privatize_update

            # The training loss would leave without noise: under client-level DP it stays here.
            delta, norms = privatize_update(delta, dp.clip, dp.noise_multiplier, n_clients,
                                            distributed=self._secret is not None)
            log.info("%s: round %d update norm %.4g (clipped: %s)", self.spec.name, server_round, norms["norm"],
                     norms["clipped"])
            bound = noised_value_bound(dp.clip, dp.noise_multiplier, n_clients)
            if self._secret is not None and hasattr(self._secret.preset, "clip") and bound > self._secret.preset.clip:
                raise ConfigError(f"security.he.clip: the keys clip values to {self._secret.preset.clip:g}, which "
                                  f"would cut the DP noise; make keys with clip >= {bound:.3g} "
                                  f"(fedx keygen --clip {bound:.3g})")
            return self._seal_mean(delta, weight=1.0, total_weight=float(n_clients), value_bound=bound), metrics
        metrics["train_loss"] = float(report.loss_after)
        return self._seal_mean(delta, weight=float(len(data)), total_weight=total_weight), metrics

    def _sample_dp(self) -> Any:
        from .tasks.training import SampleDP

        dp = self.cfg.security.dp
        assert dp is not None
        return SampleDP(dp.noise_multiplier, dp.clip, dp.delta, dp.target_epsilon,
                        history=tuple(tuple(h) for h in self.state.dp_history))

    def evaluate(self) -> tuple[dict[str, float | None], dict[str, np.ndarray]]:
        """Exact metrics of the current global model on the local test split, and additive statistics."""
        state = self._require_setup()
        prep = Preprocessor.from_dict(self.state.preprocessor or {})
        data = self.split_data(prep, "test")
        model = self.task.build_model(len(prep.feature_names), model_config(self.cfg), seed=self.cfg.seed)
        set_arrays(model, state.params)
        pred = self.task.predict(model, data)
        return self.task.metrics(data, pred), self.task.eval_stats(data, pred)

    def local_baseline(self, epochs: int) -> tuple[dict[str, float | None], dict[str, np.ndarray]]:
        """Train a model on this institution's data alone, and score it on the local test split.

        Its preprocessing is fitted on local statistics only, as the institution would do alone. With
        the newton aggregator the local model is the institution's own exact GLM fit.
        """
        train, test = self.split()
        prep = fit_preprocessor(self.cfg, self.schema, train)
        model = fit_model(self.cfg, self.task, self.rule, prep, self.tabular(prep, train), epochs,
                          seed=derive_seed(self.cfg.seed, self.spec.name, "local"))
        data = self.tabular(prep, test)
        pred = self.task.predict(model, data)
        return self.task.metrics(data, pred), self.task.eval_stats(data, pred)

    # ------------------------------------------------------------------ statistics (fedx stats)

    def stats_plan(self, levels: Mapping[str, list[str]] | None = None) -> Any:
        """The run's statistics query, checked against this institution's table."""
        from .analytics import StatsPlan

        if self.cfg.stats is None:
            raise FederationError("the run config has no stats: section")
        plan = StatsPlan.from_config(self.cfg.stats, seed=self.cfg.seed)
        plan.check_columns(self.table, self.spec.name)
        return plan.with_levels(levels) if levels else plan

    def stats_levels(self) -> dict[str, list[str]]:
        """Names (no counts) of the levels of the query's undeclared categorical columns held here."""
        return self.stats_plan().local_levels(self.table, source=self.spec.name)

    def stats_step(self, levels: Mapping[str, list[str]], stage: Mapping[str, Any] | None,
                   total: Mapping[str, Payload] | None) -> tuple[dict[str, Any], dict[str, Payload]]:
        """One stage of a statistics query.

        With the summed vectors of the last stage (``total``), release them under the policy: the
        final statistics, or the next stage. For the next stage, compute this institution's vector.
        Every institution runs the same deterministic release on the same sum, so they agree.

        Returns
        -------
        (doc, payloads)
            ``doc`` has ``done`` and the ``result``, or the next ``stage`` and its digest; ``payloads``
            holds this institution's vector for that stage, split into its whole-number entries and
            the rest (under CKKS a blob's error grows with its largest value, so counts travel apart
            from large sums).
        """
        from .analytics import stage_digest
        from .privacy.policy import Policy as StatsPolicy

        plan = self.stats_plan(levels)
        policy = StatsPolicy.from_config(self.cfg.stats, local_min_cohort=self.spec.policy.min_cohort)
        if stage is None:
            stage = plan.first_stage()
        else:
            assert total is not None
            layout_whole = plan.whole_numbers(stage)
            vec = np.zeros(layout_whole.shape, dtype=np.float64)
            vec[layout_whole] = self._open(total["whole"])[0]
            if "rest" in total:
                vec[~layout_whole] = self._open(total["rest"])[0]
            release = plan.release(vec, stage, policy)
            if release.done:
                return {"done": True, "result": release.result, "suppressed": release.suppressed}, {}
            stage = release.next_stage
        assert stage is not None
        vec = plan.local_vector(self.table, stage, policy, source=self.spec.name)
        whole = plan.whole_numbers(stage)
        payloads = {"whole": self._seal_sum([vec[whole]])}
        if (~whole).any():
            payloads["rest"] = self._seal_sum([vec[~whole]])
        return {"done": False, "stage": stage, "stage_digest": stage_digest(stage)}, payloads

    def save_model(self, path: Path | None = None) -> Path:
        """Write the current global model, with its preprocessing, for local scoring."""
        from .model import FedxModel

        state = self._require_setup()
        prep = Preprocessor.from_dict(self.state.preprocessor or {})
        fm = FedxModel.build(self.cfg.task, model_config(self.cfg), prep, state.params, self.cfg.data.na_values,
                             self.state.report)
        path = path or (self.spec.out_dir / "model.pt")
        fm.save(path)
        return path

    # ------------------------------------------------------------------ helpers

    def _require_setup(self) -> ModelState:
        if self.state.model is None or self.state.preprocessor is None:
            raise FederationError(f"{self.spec.name}: the federation has not set up this institution yet "
                                  f"(no shared preprocessing and initial model)")
        return self.state.model

    def _seal_mean(self, arrays: list[np.ndarray], weight: float, total_weight: float,
                   value_bound: float | None = None) -> Payload:
        if self._secret is None:
            return arrays
        from . import he

        if self.masking:
            from .he import masked

            return masked.quantize(self._secret, arrays, weight=weight, total_weight=max(total_weight, weight),
                                   value_bound=value_bound)
        return he.encrypt(self._secret, arrays, weight=weight, total_weight=max(total_weight, weight),
                          value_bound=value_bound)

    def _seal_sum(self, arrays: list[np.ndarray]) -> Payload:
        if self._secret is None:
            return arrays
        from . import he

        if self.masking:
            from .he import masked

            return masked.quantize(self._secret, arrays, kind="sum")
        return he.encrypt(self._secret, arrays, kind="sum")

    def _open(self, payload: Payload) -> list[np.ndarray]:
        """Plaintext arrays, or the decrypted content of an aggregate (a weighted mean or a sum)."""
        if isinstance(payload, (bytes, bytearray)):
            from . import he

            arrays, _ = he.decrypt(self._require_secret(), bytes(payload))
            return list(arrays)
        return list(payload)

    def _require_secret(self) -> Any:
        if self._secret is None:
            raise FederationError(f"{self.spec.name}: received ciphertext, but this run has no encryption "
                                  f"configured at this institution")
        return self._secret


def _load_secret(spec: NodeSpec) -> Any:
    if spec.keys is None:
        raise FederationError(f"{spec.name}: encryption is on, and this node has no keys configured")
    p = Path(spec.keys)
    p = p / "secret.fxk" if p.is_dir() else p
    if not p.exists():
        raise FederationError(f"{spec.name}: secret key file not found: {p} (create keys with `fedx keygen`)")
    return _secret_cached(str(p.resolve()), p.stat().st_mtime)


@lru_cache(maxsize=4)
def _secret_cached(path: str, mtime: float) -> Any:
    from . import he

    return he.load_secret(path)


_SPLIT_DATA: dict[tuple[Any, ...], TabularData] = {}
#: The matrices kept per process, by their bytes: a simulation worker serves many institutions in turn
#: (200 institutions on 2 workers: 100 each), and building a matrix again at every message would cost each
#: institution's round more than its training.
_SPLIT_DATA_BYTES = 512 << 20


def _nbytes(data: TabularData) -> int:
    return sum(a.nbytes for a in (data.X, data.y, data.offset, data.weight) if a is not None)


def _split_data_cached(inst: Institution, path: str, mtime: float, key: str, name: str, digest: str, which: str,
                       prep: Preprocessor) -> TabularData:
    """:meth:`Institution.split_data`, remembered for the latest keys of this process, up to ``_SPLIT_DATA_BYTES``."""
    k = (path, mtime, key, name, digest, which)
    hit = _SPLIT_DATA.pop(k, None)
    if hit is None:
        train, test = inst.split()
        hit = inst.tabular(prep, train if which == "train" else test)
        kept = sum(map(_nbytes, _SPLIT_DATA.values())) + _nbytes(hit)
        while _SPLIT_DATA and kept > _SPLIT_DATA_BYTES:
            kept -= _nbytes(_SPLIT_DATA.pop(next(iter(_SPLIT_DATA))))
    _SPLIT_DATA[k] = hit  # newest last: the oldest goes first
    return hit
