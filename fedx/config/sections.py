"""The config's sections as typed dataclasses: every key, its type, default, bounds and meaning.

Each section's ``check`` holds the rules that involve several of its keys; :mod:`fedx.config.loading`
builds the sections from YAML and runs every check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


from ..errors import ConfigError
from .vertical import VerticalPartyConfig, check_vertical_data, check_vertical_run
from .rules import (
    AGGREGATORS, BASELINES, DROPOUT, ENCRYPTIONS, GBDT_BINS, GBDT_DEPTH, GBDT_OBJECTIVES, GBDT_SHARE,
    GBDT_TASK_OBJECTIVE, LABEL_BLOCKS, MASKINGS, NEWTON_L2, NEWTON_TOLERANCE, PSI_COUNT_TO, PSI_REVEAL,
    ROBUST_AGGREGATORS, TASKS, TWEEDIE_POWER, _check_edges, _check_interval, _f, _to_plain, categorical_uses,
    check_unique,
)



@dataclass
class ModelConfig:
    """``model:``: which model the task builds."""

    kind: Literal["mlp", "logistic", "glm", "gbdt"] = _f(
        "mlp", doc="the model family (gbdt: gradient-boosted trees, docs/trees.md)")
    hidden: list[int] = _f(factory=lambda: [64, 32], doc="hidden layer widths of the MLP")
    dropout: float = _f(0.0, **DROPOUT, doc="dropout between MLP layers")
    family: Literal["auto", "poisson", "gamma", "tweedie", "binomial"] = _f(
        "auto", doc="GLM family for the newton aggregator (auto: the task's own)")
    trees: int = _f(100, lo=1, doc="gbdt: number of boosting rounds, one tree each")
    depth: int = _f(6, **GBDT_DEPTH, doc="gbdt: depth of every tree (one message round per level)")
    learning_rate: float = _f(0.3, lo=0.0, lo_open=True, doc="gbdt: shrinkage of every leaf value (XGBoost's eta)")
    bins: int = _f(256, **GBDT_BINS, doc="gbdt: most bins per feature, from a federated quantile sketch "
                                         "(missing values aside)")
    l2: float = _f(1.0, lo=0.0, doc="gbdt: L2 penalty on leaf weights (XGBoost's lambda)")
    min_child_weight: float = _f(1.0, lo=0.0, doc="gbdt: least hessian sum in each child of a split")
    gamma: float = _f(0.0, lo=0.0, doc="gbdt: least loss reduction of a split (XGBoost's min_split_loss)")
    subsample: float = _f(1.0, **GBDT_SHARE, doc="gbdt: share of each institution's rows drawn for each tree")
    colsample: float = _f(1.0, **GBDT_SHARE, doc="gbdt: share of the features drawn for each tree")
    objective: Literal[GBDT_OBJECTIVES] = _f(  # type: ignore[valid-type]
        "auto", doc="gbdt: binary:logistic or count:poisson (auto: binary:logistic for fraud and disease_risk, "
                    "count:poisson for claim_frequency)")

    def check(self, path: str) -> None:
        for i, width in enumerate(self.hidden):
            if width < 1:
                raise ConfigError(f"{path}.hidden[{i}]: expected a positive layer width, got {width}")

    def gbdt_objective(self, task: str | None) -> str:
        """The boosting objective of ``model.kind: gbdt`` for ``task`` (``objective: auto`` resolved)."""
        auto = GBDT_TASK_OBJECTIVE.get(task or "")
        if auto is None:
            raise ConfigError(f"model.kind: gbdt learns {', '.join(GBDT_TASK_OBJECTIVE)}; task {task!r} needs "
                              f"another model.kind")
        if self.objective != "auto" and self.objective != auto:
            raise ConfigError(f"model.objective: {self.objective} does not fit task {task} (expected {auto} "
                              f"or auto)")
        return auto


@dataclass
class PartitionConfig:
    """``data.partition:``: how a table without an institution column is split."""

    method: Literal["iid", "dirichlet", "quantity"] = _f("iid", doc="iid, Dirichlet label skew, or quantity skew")
    alpha: float = _f(0.5, lo=0.0, lo_open=True, doc="Dirichlet concentration (dirichlet, quantity)")


@dataclass
class DataConfig:
    """``data:``: where each institution's table comes from, and its schema."""

    source: str | None = _f(None, doc="synthetic/transactions, synthetic/policies, or a CSV/Parquet path "
                                      "(simulation; in a deployment each institution names its own table)")
    target: str | None = _f(None, doc="the column to predict (required to train)")
    params: dict[str, Any] = _f(factory=dict, doc="keyword arguments of a synthetic generator")
    split_by: str | None = _f(None, doc="column that names each institution")
    institutions: int | list[float] | None = _f(
        None, doc="number of institutions, or their sizes, when there is no split_by column")
    partition: PartitionConfig | Literal["vertical"] = _f(
        factory=PartitionConfig, doc="how a table is split among institutions, or vertical: parties that hold "
                                     "different columns of the same people (data.parties)")
    exposure: str | None = _f(None, doc="column with exposure (claim_frequency; without it every row has exposure 1, offset 0)")
    weight: str | None = _f(None, doc="column with sample weights (claim counts for claim_severity)")
    features: dict[str, Literal["numeric", "categorical"]] | None = _f(
        None, doc="declared schema; inferred from the data when absent")
    levels: dict[str, list[str]] = _f(factory=dict, doc="declared levels of categorical features")
    drop: list[str] = _f(factory=list, doc="columns never used as features (ids, ground truth)")
    na_values: dict[str, list[Any]] = _f(factory=dict, doc="codes that mean missing, per column (e.g. chol: [0])")
    target_above: float | None = _f(None, doc="binary target: 1 where the target column exceeds this value")
    test_fraction: float = _f(0.2, lo=0.0, hi=0.9, doc="held out at each institution")
    standardize: bool | None = _f(None, doc="scale numeric features (default: yes, except for GLMs and gbdt)")
    missing_indicators: bool = _f(True, doc="add a was-missing column for numeric features with gaps")
    id: str | list[str] | None = _f(None, doc="vertical: the id column (or columns) that every party identifies "
                                              "people by, for the private set intersection")
    label_party: str | None = _f(None, doc="vertical: the party that holds the target")
    parties: dict[str, VerticalPartyConfig] | None = _f(
        None, doc="vertical: each party's source and columns (data.parties.<name>)")

    @property
    def vertical(self) -> bool:
        """Whether the run is vertical (``partition: vertical``)."""
        return self.partition == "vertical"

    def check(self, path: str) -> None:
        check_vertical_data(self, path)
        if self.split_by is not None and self.institutions is not None:
            raise ConfigError(f"{path}: give either split_by or institutions, not both")
        if isinstance(self.institutions, int) and self.institutions < 1:
            raise ConfigError(f"{path}.institutions: expected at least 1 institution, got {self.institutions}")
        if isinstance(self.institutions, list) and any(s <= 0 for s in self.institutions):
            raise ConfigError(f"{path}.institutions: expected positive sizes, got {self.institutions}")
        if self.split_by is not None and self.features is not None and self.split_by in self.features:
            raise ConfigError(f"{path}.features.{self.split_by}: the column {self.split_by!r} is data.split_by, which "
                              f"names each institution: it is never a feature, remove it from data.features")
        for col in self.levels:
            if self.features is not None and self.features.get(col) != "categorical":
                raise ConfigError(f"{path}.levels.{col}: levels are only for categorical features, "
                                  f"declare data.features.{col}: categorical")


@dataclass
class TrainConfig:
    """``train:``: local training at each institution."""

    lr: float = _f(0.01, lo=0.0, lo_open=True, doc="learning rate of the local optimizer")
    lr_decay: float = _f(1.0, lo=0.0, lo_open=True, hi=1.0,
                         doc="multiplies the learning rate after every round (every local_epochs epochs in the "
                             "baselines); 1 keeps it constant")
    batch_size: int = _f(256, lo=1, doc="minibatch size")
    optimizer: Literal["adam", "sgd"] = _f("adam", doc="the local optimizer")
    weight_decay: float = _f(0.0, lo=0.0, doc="L2 weight decay")
    loss: Literal["auto", "bce", "focal", "poisson", "gamma"] = _f("auto", doc="loss (auto picks the task's)")
    pos_weight: float | Literal["auto"] | None = _f("auto", doc="positive-class weight for imbalanced data")
    full_batch: bool = _f(False, doc="one gradient step per epoch on all local rows")


@dataclass
class ServerOptimizerConfig:
    """``federation.server_optimizer:``: FedAdam/FedYogi/FedAvgM settings (Reddi et al.)."""

    lr: float | None = _f(None, lo=0.0, lo_open=True,
                          doc="server learning rate (default: 0.01 for fedadam/fedyogi, 1.0 for fedavgm)")
    beta1: float = _f(0.9, lo=0.0, hi=1.0, doc="first-moment decay (or FedAvgM momentum)")
    beta2: float = _f(0.99, lo=0.0, hi=1.0, doc="second-moment decay")
    tau: float = _f(1e-3, lo=0.0, lo_open=True, doc="adaptivity (epsilon)")


@dataclass
class FederationConfig:
    """``federation:``: rounds, clients and the aggregator."""

    rounds: int = _f(20, lo=1, doc="number of federated rounds")
    local_epochs: int = _f(1, lo=1, doc="epochs of local training per round")
    aggregator: Literal[AGGREGATORS] = _f("fedavg", doc="how updates combine (docs/aggregators.md)")  # type: ignore[valid-type]
    min_clients: int = _f(2, lo=1, doc="fewest institutions a round may complete with")
    fraction: float = _f(1.0, lo=0.0, hi=1.0, lo_open=True, doc="share of institutions sampled per round")
    mu: float = _f(0.0, lo=0.0, doc="FedProx proximal weight (any aggregator)")
    server_optimizer: ServerOptimizerConfig = _f(factory=ServerOptimizerConfig)
    trim: float = _f(0.1, lo=0.0, hi=0.49, doc="share trimmed at each end (trimmed_mean)")
    byzantine: int = _f(1, lo=0, doc="assumed number of malicious clients (krum, multi_krum)")
    max_update_norm: float | None = _f(None, lo=0.0, lo_open=True,
                                       doc="refuse plaintext updates with a larger L2 norm")
    timeout: float = _f(600.0, lo=1.0, doc="seconds to wait for replies in a round")
    eval_every: int = _f(1, lo=0, doc="evaluate every N rounds (0: only after the last round)")
    l2: float = _f(0.0, **NEWTON_L2, doc="L2 penalty of the newton GLM solver")
    tolerance: float = _f(1e-8, **NEWTON_TOLERANCE, doc="newton: stop when the deviance change is below")
    tweedie_power: float = _f(1.5, **TWEEDIE_POWER, doc="power of the Tweedie family")


@dataclass
class HEConfig:
    """``security.he:``: overrides of the encryption preset."""

    bits: int | None = _f(None, lo=2, hi=30, doc="quantization bits (bfv-compact)")
    clip: float | None = _f(None, lo=0.0, lo_open=True, doc="clip range [-clip, clip] (bfv-compact)")
    max_clients: int | None = _f(None, lo=1, hi=1 << 20,
                                 doc="most updates one sum holds at full precision; sets t and the modulus "
                                     "(bfv-compact; default: the number of institutions when the config fixes it, "
                                     "else 16)")

    def overrides(self) -> dict[str, Any]:
        """The settings given, as keyword arguments of :func:`fedx.he.keygen` / :func:`fedx.he.get_preset`."""
        return {k: v for k, v in (("bits", self.bits), ("clip", self.clip), ("max_clients", self.max_clients))
                if v is not None}


@dataclass
class DPConfig:
    """``security.dp:``: differential privacy."""

    clip: float = _f(1.0, lo=0.0, lo_open=True, doc="L2 bound of each client's update")
    noise_multiplier: float = _f(1.0, lo=0.0, doc="noise std / clip")
    delta: float = _f(1e-5, lo=0.0, hi=1.0, lo_open=True, doc="the delta of (epsilon, delta)-DP")
    target_epsilon: float | None = _f(None, lo=0.0, lo_open=True, doc="stop before epsilon exceeds this")
    level: Literal["client", "sample"] = _f("client", doc="client-level (DP-FedAvg) or sample-level (DP-SGD with Opacus)")


@dataclass
class SecurityConfig:
    """``security:``: encryption, keys, differential privacy and audit."""

    encryption: Literal[ENCRYPTIONS] = _f("bfv-compact", doc="HE preset for updates and statistics (docs/security.md)")  # type: ignore[valid-type]
    keys: str | None = _f(None, doc="folder from `fedx keygen`; generated into the run folder when absent")
    he: HEConfig = _f(factory=HEConfig)
    dp: DPConfig | None = _f(None)
    audit: bool = _f(True, doc="keep a hash-chained ledger of what leaves each institution")
    masking: Literal[MASKINGS] = _f(  # type: ignore[valid-type]
        "none", doc="pairwise: cover every encrypted sum with pairwise masks, so that no coalition of the server "
                    "with fewer than threshold institutions reads one institution's values (bfv-compact, 3 or "
                    "more institutions; docs/masking.md)")
    threshold: int | None = _f(None, lo=2, doc="masking: the institutions needed to remove the masks of a round; "
                                               "at most threshold-1 colluders are tolerated (default: a strict "
                                               "majority of each round's institutions)")
    min_intersection: int = _f(100, lo=1, doc="vertical: refuse a run whose parties share fewer people")
    psi_reveal: Literal[PSI_REVEAL] = _f(  # type: ignore[valid-type]
        "label_party", doc="vertical: who learns which of its rows are shared: the label party only, or every party "
                           "(needed for more than one feature party)")
    psi_count_to: Literal[PSI_COUNT_TO] = _f(  # type: ignore[valid-type]
        "all", doc="vertical: who learns the number of shared rows")
    min_cohort: int = _f(10, lo=1, doc="vertical: a column, or a cell of two columns, that enters X'WX needs at "
                                       "least this many shared rows (0 rows is allowed)")
    label_block: Literal[LABEL_BLOCKS] = _f(  # type: ignore[valid-type]
        "two_key", doc="vertical: how the label party's own block of X'WX is summed (docs/vertical_glm.md)")


@dataclass
class ReportConfig:
    """``report:``: what a run leaves behind."""

    baselines: list[Literal[BASELINES]] = _f(factory=list, doc="local and/or centralized")  # type: ignore[valid-type]
    plots: bool = _f(True, doc="write PNG plots")


@dataclass
class StatsConfig:
    """``stats:``: federated statistics for `fedx stats`."""

    columns: list[str] = _f(factory=list, doc="count, mean, variance, std of each")
    histograms: dict[str, list[float]] = _f(factory=dict, doc="bin edges per column")
    quantiles: dict[str, list[float]] = _f(factory=dict, doc="probabilities per column")
    quantile_precision: float | None = _f(None, lo=0.0, lo_open=True,
                                          doc="absolute precision of quantiles (default: range/10^4)")
    quantile_range: dict[str, list[float]] = _f(
        factory=dict, doc="[lo, hi] where the quantile search starts (default: mean +/- 4 std)")
    correlation: list[str] = _f(factory=list, doc="columns of the correlation and covariance matrix")
    frequencies: list[str] = _f(factory=list, doc="level counts of each categorical column")
    crosstabs: list[list[str]] = _f(factory=list, doc="pairs of categorical columns")
    levels: dict[str, list[str]] = _f(factory=dict, doc="declared levels of categorical columns "
                                                        "(discovered from the data when absent)")
    group_by: str | None = _f(None, doc="a categorical column to compute the statistics per level of")
    group_bins: list[float] | None = _f(None, doc="bin edges that group a numeric group_by column "
                                                   "(for example age bands)")
    bounds: dict[str, list[float]] = _f(factory=dict, doc="[lo, hi] per column: values are clipped to it "
                                                          "and it sets the sensitivity of noisy sums")
    min_cohort: int = _f(10, lo=1, doc="a released cell needs at least this many records")
    local_min_cohort: int = _f(1, lo=1, doc="an institution refuses a cell it holds fewer records of")
    noise: Literal["none", "laplace", "gaussian"] = _f("none", doc="noise on released values")
    epsilon: float | None = _f(None, lo=0.0, lo_open=True, doc="per-release epsilon of the noise")
    delta: float = _f(1e-6, lo=0.0, hi=1.0, lo_open=True, doc="delta of Gaussian noise")

    def check(self, path: str) -> None:
        """Every rule of a statistics query that needs no data (``fedx.analytics`` relies on it)."""
        if not (self.columns or self.histograms or self.quantiles or self.correlation or self.frequencies
                or self.crosstabs):
            raise ConfigError(f"{path}: asks for no statistic; give columns, histograms, quantiles, correlation, "
                              f"frequencies or crosstabs")
        for key in ("columns", "correlation", "frequencies"):
            check_unique(f"{path}.{key}", getattr(self, key))
        for col, edges in self.histograms.items():
            _check_edges(f"{path}.histograms.{col}", edges)
        for col, probs in self.quantiles.items():
            check_unique(f"{path}.quantiles.{col}", probs)
            if not probs or any(not 0.0 < p < 1.0 for p in probs):
                raise ConfigError(f"{path}.quantiles.{col}: expected probabilities strictly between 0 "
                                  f"and 1, got {probs}")
        for col, pair in self.quantile_range.items():
            _check_interval(f"{path}.quantile_range.{col}", pair)
            if col not in self.quantiles:
                raise ConfigError(f"{path}.quantile_range.{col}: no quantiles of {col} are asked for "
                                  f"({path}.quantiles)")
        for col, pair in self.bounds.items():
            _check_interval(f"{path}.bounds.{col}", pair)
        if len(self.correlation) == 1:
            raise ConfigError(f"{path}.correlation: expected at least 2 columns, got {list(self.correlation)}")
        for i, pair in enumerate(self.crosstabs):
            if len(pair) != 2:
                raise ConfigError(f"{path}.crosstabs[{i}]: expected a pair of columns, got {pair}")
            if pair[0] == pair[1]:
                raise ConfigError(f"{path}.crosstabs[{i}]: expected two different columns, got {list(pair)}")
        if self.group_bins is not None:
            _check_edges(f"{path}.group_bins", self.group_bins)
            if self.group_by is None:
                raise ConfigError(f"{path}.group_bins: bins need a group_by column to apply to")
        categorical = self.categorical_columns()
        for col, levels in self.levels.items():
            check_unique(f"{path}.levels.{col}", levels)
            if not levels:
                raise ConfigError(f"{path}.levels.{col}: expected at least one entry")
            if col not in categorical:
                raise ConfigError(f"{path}.levels.{col}: levels are only for columns used as categorical "
                                  f"(frequencies, crosstabs, group_by without group_bins)")
        if self.noise != "none":
            if self.epsilon is None:
                raise ConfigError(f"{path}.epsilon: noise '{self.noise}' needs an epsilon")
            if self.quantiles:
                raise ConfigError(f"{path}.quantiles: quantiles cannot be released with noise "
                                  f"'{self.noise}' (their search counts are exact); remove them or set "
                                  f"{path}.noise: none")
            for col in dict.fromkeys(self.columns + self.correlation):
                if col not in self.bounds:
                    raise ConfigError(f"{path}.bounds.{col}: noise '{self.noise}' on the sums of {col} needs "
                                      f"bounds [lo, hi] (values are clipped to them, and they set the noise)")

    def categorical_columns(self) -> dict[str, str]:
        """Each column the query uses as categorical, with the first key that uses it."""
        return categorical_uses(self.frequencies, self.crosstabs, self.group_by, self.group_bins)


@dataclass
class DeploymentConfig:
    """``deployment:``: the server side of a real deployment (`fedx server`)."""

    host: str = _f("127.0.0.1", doc="address the SuperLink binds (0.0.0.0 for every interface)")
    port: int = _f(9092, lo=1, hi=65535, doc="the SuperLink's one port (Fleet, Control and ServerAppIo APIs)")
    certificates: str | None = _f(None, doc="folder from `fedx certs` (ca.crt, server.pem, server.key)")
    nodes: str | None = _f(None, doc="folder of the institutions' NAME.pub keys from `fedx node-keys`")
    out_dir: str = _f("fedx-server", doc="checkpoint, result.json, SuperLink state and logs")
    insecure: bool = _f(False, doc="no TLS and no node authentication: localhost demos only")
    expected_nodes: int | None = _f(None, lo=1, doc="institutions to wait for (default: the registered keys)")
    wait_seconds: float = _f(300.0, lo=1.0, doc="how long to wait for the institutions to connect")
    max_seconds: float = _f(86400.0, lo=1.0, doc="give up on a run that lasts longer")

    def check(self, path: str) -> None:
        if not self.insecure and (self.certificates is None or self.nodes is None):
            raise ConfigError(f"{path}: give certificates and nodes (TLS with node authentication), or "
                              f"insecure: true for a localhost demo")


@dataclass(kw_only=True)
class Config:
    """A whole fedx config. Build it with :func:`load_config` or :func:`config_from_dict`."""

    name: str | None = _f(None, doc="name of the run (default: the config file's name)")
    data: DataConfig = _f()
    task: Literal[TASKS] | None = _f(None, doc="what to learn (required to train; a stats-only config has none)")  # type: ignore[valid-type]
    seed: int = _f(7, doc="seed of every random choice")
    model: ModelConfig = _f(factory=ModelConfig)
    train: TrainConfig = _f(factory=TrainConfig)
    federation: FederationConfig = _f(factory=FederationConfig)
    security: SecurityConfig = _f(factory=SecurityConfig)
    report: ReportConfig = _f(factory=ReportConfig)
    stats: StatsConfig | None = _f(None)
    deployment: DeploymentConfig | None = _f(None)
    base_dir: Path = field(default=Path("."), metadata={"internal": True})
    source: str = field(default="<dict>", metadata={"internal": True})

    def check(self, path: str) -> None:
        if self.task is None and self.stats is None:
            raise ConfigError("task: missing required key (what to learn), or give a stats: section (for "
                              "`fedx stats`, or fedx.stats in Python)")
        if self.data.vertical:
            if self.security.masking != "none":
                raise ConfigError("security.masking: pairwise masks sums of horizontal runs; a vertical run has no "
                                  "such sum (its messages are listed in docs/security.md): set security.masking: none")
            check_vertical_run(self)
            return
        if self.task is not None and self.data.target is None:
            raise ConfigError("data.target: missing required key (the column to predict)")
        agg, enc = self.federation.aggregator, self.security.encryption
        if agg in ROBUST_AGGREGATORS and enc != "none":
            raise ConfigError(
                f"federation.aggregator: '{agg}' needs to read each update in plaintext, and "
                f"security.encryption is '{enc}', which hides them from the server. Use fedavg, "
                f"fedprox, fedadam, fedyogi or fedavgm with encryption, or set security.encryption: "
                f"none to use '{agg}' (fedx never downgrades silently)")
        if agg == "newton" and self.task not in ("claim_frequency", "claim_severity", "disease_risk"):
            raise ConfigError(f"federation.aggregator: newton fits GLMs; task '{self.task}' "
                              f"needs fedavg, fedprox, fedadam, fedyogi or fedavgm")
        if agg == "newton" and self.model.kind not in ("glm", "logistic"):
            raise ConfigError(f"model.kind: the newton aggregator fits a GLM, expected glm or "
                              f"logistic, got '{self.model.kind}'")
        if agg == "newton" and self.federation.fraction < 1.0:
            raise ConfigError("federation.fraction: the newton aggregator sums every institution's statistics "
                              "in every round, so it needs fraction 1.0")
        dp = self.security.dp
        if dp is not None and agg not in ("fedavg", "fedprox", "fedadam", "fedyogi", "fedavgm"):
            raise ConfigError(f"security.dp: differential privacy works with the averaging aggregators "
                              f"(fedavg, fedprox, fedadam, fedyogi, fedavgm), not '{agg}'")
        if dp is not None and dp.level == "sample" and self.federation.mu > 0:
            raise ConfigError("federation.mu: the FedProx term would escape DP-SGD's per-sample clipping; "
                              "use mu: 0 with security.dp.level: sample")
        if self.model.family != "auto" and agg != "newton":
            raise ConfigError(f"model.family: a GLM family is chosen with federation.aggregator: newton, "
                              f"got aggregator '{agg}'")
        if self.model.family == "binomial" and self.task != "disease_risk" or \
                self.model.family in ("poisson", "gamma", "tweedie") and self.task == "disease_risk":
            raise ConfigError(f"model.family: {self.model.family} does not fit task {self.task}")
        if self.model.kind == "gbdt":
            self._check_gbdt()
        elif self.model.objective != "auto":
            raise ConfigError(f"model.objective: a boosting objective is for model.kind: gbdt, got kind "
                              f"'{self.model.kind}'")
        if self.model.kind == "glm" and self.task in ("fraud", "disease_risk"):
            raise ConfigError(f"model.kind: glm is for claim_frequency/claim_severity; use "
                              f"logistic for task '{self.task}'")
        if self.federation.min_clients > self.n_institutions_hint():
            raise ConfigError(f"federation.min_clients: {self.federation.min_clients} is more than "
                              f"the {self.n_institutions_hint()} institutions in data.institutions")
        self.check_masking()

    def check_masking(self, n_institutions: int | None = None) -> None:
        """Refuse ``security.masking: pairwise`` where it cannot work or protects nothing.

        ``n_institutions`` is the number of institutions once known (at run time); before that, the
        number that ``data.institutions`` fixes, if any.
        """
        sec = self.security
        if sec.masking == "none":
            if sec.threshold is not None:
                raise ConfigError("security.threshold: applies to security.masking: pairwise, and masking is none")
            return
        if sec.encryption != "bfv-compact":
            raise ConfigError(f"security.masking: pairwise needs security.encryption: bfv-compact, got "
                              f"'{sec.encryption}': masks must cancel exactly, which needs integer plaintext slots "
                              f"mod t; ckks slots are approximate reals, and without encryption there is nothing "
                              f"to mask inside (set security.encryption: bfv-compact, or security.masking: none)")
        n = n_institutions if n_institutions is not None else self.n_institutions_hint()
        if n < 3:
            raise ConfigError(f"security.masking: pairwise needs at least 3 institutions, got {n}: with two, each "
                              f"one's update is the sum minus its own, so masks protect nothing (set "
                              f"security.masking: none)")
        t = sec.threshold
        if t is not None and n < (1 << 30) and not n // 2 < t <= n:
            raise ConfigError(f"security.threshold: must lie in [{n // 2 + 1}, {n}] for {n} institutions (a strict "
                              f"majority at least, so that two disjoint groups can never both remove masks), got {t}")

    def _check_gbdt(self) -> None:
        if self.task is not None:
            self.model.gbdt_objective(self.task)
        agg = self.federation.aggregator
        if agg != "fedavg":
            raise ConfigError(f"federation.aggregator: model.kind: gbdt sums histograms of gradients, it uses no "
                              f"aggregator; remove federation.aggregator (got '{agg}')")
        if self.security.dp is not None:
            raise ConfigError("security.dp: differential privacy is not available for model.kind: gbdt; "
                              "remove security.dp")
        if self.federation.fraction < 1.0:
            raise ConfigError("federation.fraction: model.kind: gbdt sums every institution's histograms at "
                              "every level, so it needs fraction 1.0")
        if self.security.masking != "none":
            raise ConfigError("security.masking: model.kind: gbdt sums its histograms under encryption without "
                              "pairwise masks (masks cover model updates, the Newton GLM statistics and fedx "
                              "stats); set security.masking: none")

    def n_institutions_hint(self) -> int:
        """Number of institutions when the config fixes it (sizes given), else a large number."""
        inst = self.data.institutions
        if isinstance(inst, int):
            return inst
        if isinstance(inst, list):
            return len(inst)
        return 1 << 30

    @property
    def standardize(self) -> bool:
        """Whether numeric features are scaled (default: yes, except for GLMs and trees)."""
        if self.data.standardize is not None:
            return self.data.standardize
        return self.model.kind not in ("glm", "gbdt") and self.federation.aggregator != "newton"

    def resolve_path(self, value: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (what result.json records)."""
        out = _to_plain(self)
        out.pop("base_dir", None)
        out.pop("source", None)
        return out


@dataclass
class NodePolicyConfig:
    """``policy:`` of a node file: rules the institution enforces whatever the server asks."""

    require_encryption: bool = _f(True, doc="refuse any run with security.encryption: none")
    min_cohort: int = _f(10, lo=1, doc="refuse statistics that single out fewer of its own records")


@dataclass
class SuperLinkConfig:
    """``superlink:`` of a node file: how this node reaches the server."""

    address: str = _f("127.0.0.1:9092", doc="the SuperLink's Fleet API, host:port")
    root_certificates: str | None = _f(None, doc="the CA certificate that signed the server's certificate")
    auth_key: str | None = _f(None, doc="this node's private key from `fedx node-keys`")
    insecure: bool = _f(False, doc="no TLS and no node authentication: localhost demos only")
    clientappio_port: int | None = _f(None, lo=1, hi=65535, doc="local port for the ClientApp (default: free)")
    poll_seconds: float = _f(0.25, lo=0.01, hi=3.0, doc="seconds the SuperNode waits before asking the server "
                             "again when no message was waiting (Flower's own SuperNode waits 3)")


@dataclass
class NodeConfig:
    """A node file: one institution's local settings for `fedx node`."""

    name: str = _f(doc="the institution's name in the federation")
    data: str = _f(doc="its own table (CSV or Parquet), relative to this file")
    keys: str | None = _f(None, doc="HE secret context (secret.fxk) or the folder that holds it")
    out_dir: str = _f("fedx-node", doc="where the model and the audit ledger go, relative to this file")
    policy: NodePolicyConfig = _f(factory=NodePolicyConfig)
    superlink: SuperLinkConfig = _f(factory=SuperLinkConfig)
    base_dir: Path = field(default=Path("."), metadata={"internal": True})

    def check(self, path: str) -> None:
        sl = self.superlink
        if not sl.insecure and (sl.root_certificates is None or sl.auth_key is None):
            raise ConfigError("superlink: give root_certificates and auth_key (TLS with node authentication), "
                              "or insecure: true for a localhost demo")

    def _path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    @property
    def data_path(self) -> Path:
        """The institution's table."""
        return self._path(self.data)

    @property
    def keys_path(self) -> Path | None:
        """The secret context, or None."""
        return self._path(self.keys) if self.keys else None

    @property
    def out_path(self) -> Path:
        """The node's output folder."""
        return self._path(self.out_dir)

    def resolve(self, value: str | None) -> Path | None:
        """A path from the node file, relative to its folder."""
        return self._path(value) if value else None
