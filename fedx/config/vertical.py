"""The keys of a vertical run (``data.partition: vertical``) and the rules that involve several of them.

A vertical run names its parties under ``data.parties``, each with its own table, and one of them, the label
party, holds the target::

    data:
      partition: vertical
      id: person_id
      label_party: insurer
      parties:
        insurer:  {source: insurer.csv, target: claims, exposure: exposure, features: {age_band: categorical}}
        hospital: {source: hospital.csv, features: {diabetes: numeric, bmi: numeric}}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ConfigError
from .rules import GBDT_TASK_OBJECTIVE, VERTICAL_ENCRYPTIONS, VERTICAL_SYNTHETIC, VERTICAL_TASKS, _f

#: What vertical gradient-boosted trees learn (model.kind: gbdt).
VERTICAL_GBDT_TASKS = tuple(GBDT_TASK_OBJECTIVE)

__all__ = ["VerticalPartyConfig", "check_vertical_data", "check_vertical_run"]


@dataclass
class VerticalPartyConfig:
    """``data.parties.<name>:``: one party of a vertical run, its table and its columns."""

    source: str = _f(doc="its table: a CSV/Parquet path (relative to the config), or synthetic/health_insurance")
    table: str | None = _f(None, doc="which table of a synthetic source (default: the party's name)")
    target: str | None = _f(None, doc="the column to predict (the label party only)")
    exposure: str | None = _f(None, doc="column with exposure (the label party; claim_frequency)")
    weight: str | None = _f(None, doc="column with weights (the label party; claim counts for claim_severity)")
    features: dict[str, Literal["numeric", "categorical"]] = _f(
        factory=dict, doc="its columns in the model (categoricals are one-hot coded, first level the reference; "
                          "model.kind gbdt: optional, every column but the id and the target by default)")
    levels: dict[str, list[str]] = _f(factory=dict, doc="declared levels of its categorical features (the first "
                                                        "is the reference; default: the sorted levels of its table)")

    def check(self, path: str) -> None:
        for col, levels in self.levels.items():
            if self.features.get(col) != "categorical":
                raise ConfigError(f"{path}.levels.{col}: levels are only for categorical features, declare "
                                  f"{path}.features.{col}: categorical")
            if not levels or len(set(levels)) != len(levels):
                raise ConfigError(f"{path}.levels.{col}: expected distinct levels, got {levels}")
        if self.source.startswith("synthetic/") and self.source not in VERTICAL_SYNTHETIC:
            raise ConfigError(f"{path}.source: unknown synthetic source {self.source!r} for a vertical run; expected "
                              f"{', '.join(VERTICAL_SYNTHETIC)} or a CSV/Parquet path")
        if self.table is not None and not self.source.startswith("synthetic/"):
            raise ConfigError(f"{path}.table: only a synthetic source holds several tables; {self.source!r} is a file")


#: The horizontal keys of ``data:`` that a vertical run gives per party, or not at all.
_HORIZONTAL_KEYS = {"source": "data.parties.<name>.source", "target": "data.parties.<label party>.target",
                    "exposure": "data.parties.<label party>.exposure", "weight": "data.parties.<label party>.weight",
                    "features": "data.parties.<name>.features", "levels": "data.parties.<name>.levels",
                    "split_by": None, "institutions": None, "drop": None, "na_values": None, "target_above": None}


def check_vertical_data(data: Any, path: str) -> None:
    """The rules of ``data:`` for a vertical run, or the refusal of vertical keys in a horizontal one."""
    if data.partition != "vertical":
        for key in ("id", "label_party", "parties"):
            if getattr(data, key) is not None:
                raise ConfigError(f"{path}.{key}: only for a vertical run (data.partition: vertical)")
        return
    for key, where in _HORIZONTAL_KEYS.items():
        value = getattr(data, key)
        if value is not None and value != {} and value != []:
            hint = f"; give it as {where}" if where else ""
            raise ConfigError(f"{path}.{key}: not used by a vertical run (data.partition: vertical){hint}")
    if data.id is None:
        raise ConfigError(f"{path}.id: missing required key (the id column(s) that every party identifies people by)")
    ids = [data.id] if isinstance(data.id, str) else list(data.id)
    if not ids or len(set(ids)) != len(ids):
        raise ConfigError(f"{path}.id: expected one column or a list of distinct columns, got {data.id!r}")
    parties = data.parties
    if not parties:
        raise ConfigError(f"{path}.parties: missing required key (each party with its source and features)")
    if len(parties) < 2:
        raise ConfigError(f"{path}.parties: a vertical run needs at least two parties, got {list(parties)}")
    if data.label_party is None:
        raise ConfigError(f"{path}.label_party: missing required key (the party that holds the target)")
    if data.label_party not in parties:
        raise ConfigError(f"{path}.label_party: {data.label_party!r} is not one of data.parties ({', '.join(parties)})")
    for name, party in parties.items():
        where = f"{path}.parties.{name}"
        if not name or ":" in name or "/" in name:
            raise ConfigError(f"{where}: a party's name may not be empty or hold ':' or '/'")
        party.check(where)
        if name == data.label_party:
            if party.target is None:
                raise ConfigError(f"{where}.target: missing required key (the label party holds the column to predict)")
        else:
            for key in ("target", "exposure", "weight"):
                if getattr(party, key) is not None:
                    raise ConfigError(f"{where}.{key}: only the label party ({data.label_party}) holds the {key}")
        used = {key: getattr(party, key) for key in ("target", "exposure", "weight") if getattr(party, key)}
        for col in ids:
            if col in party.features or col in used.values():
                raise ConfigError(f"{where}: the id column {col!r} cannot also be a feature, target, exposure or "
                                  f"weight")
        for key, col in used.items():
            if col in party.features:
                raise ConfigError(f"{where}.features.{col}: the {key} column cannot also be a feature")
        if len(set(used.values())) != len(used):
            raise ConfigError(f"{where}: target, exposure and weight must be different columns, got {used}")
    if data.test_fraction >= 1.0:
        raise ConfigError(f"{path}.test_fraction: expected a number in [0, 1) for a vertical run")


def check_vertical_run(cfg: Any) -> None:
    """The rules of a whole vertical run that involve other sections than ``data:``."""
    if cfg.model.kind == "gbdt":
        _check_vertical_gbdt(cfg)
        return
    for name, party in cfg.data.parties.items():
        if name != cfg.data.label_party and not party.features:
            raise ConfigError(f"data.parties.{name}.features: a feature party needs at least one feature")
    if cfg.task not in VERTICAL_TASKS:
        raise ConfigError(f"task: a vertical run fits a GLM for {' or '.join(VERTICAL_TASKS)}, got {cfg.task!r}")
    if cfg.model.kind != "glm":
        raise ConfigError(f"model.kind: a vertical run fits a GLM (model: {{kind: glm}}) or gradient-boosted trees "
                          f"(model: {{kind: gbdt}}), got {cfg.model.kind!r}")
    if cfg.federation.aggregator != "newton":
        raise ConfigError(f"federation.aggregator: a vertical GLM is fitted by newton, got "
                          f"{cfg.federation.aggregator!r}")
    if cfg.model.family == "binomial":
        raise ConfigError("model.family: a vertical GLM takes a log link (poisson, gamma, tweedie), got binomial")
    sec = cfg.security
    if sec.encryption not in VERTICAL_ENCRYPTIONS:
        raise ConfigError(f"security.encryption: a vertical run takes {' or '.join(VERTICAL_ENCRYPTIONS)} (each "
                          f"party's own CKKS key), got {sec.encryption!r}; set security.encryption: ckks")
    if sec.keys is not None:
        raise ConfigError("security.keys: every party of a vertical run makes its own key for the run; remove "
                          "security.keys")
    if sec.dp is not None:
        raise ConfigError("security.dp: differential privacy is not offered for vertical runs")
    features = len(cfg.data.parties) - 1
    if features > 1 and sec.psi_reveal != "all":
        raise ConfigError(f"security.psi_reveal: with {features} feature parties every party must know its shared rows "
                          f"(their row-wise products pass from one feature party to the next, in the common order); "
                          f"set security.psi_reveal: all")
    if features > 2 and sec.encryption == "ckks":
        raise ConfigError(f"data.parties: under CKKS a vertical GLM takes at most two feature parties (a product over "
                          f"k parties' rows needs k ciphertext levels), got {features}")
    label = cfg.data.parties[cfg.data.label_party]
    if label.exposure is not None and cfg.task != "claim_frequency":
        raise ConfigError(f"data.parties.{cfg.data.label_party}.exposure: exposure is for claim_frequency, the task "
                          f"is {cfg.task}")


def _check_vertical_gbdt(cfg: Any) -> None:
    """The rules of a vertical SecureBoost run (``model.kind: gbdt``)."""
    sec = cfg.security
    if cfg.task not in VERTICAL_GBDT_TASKS:
        raise ConfigError(f"task: vertical gradient-boosted trees learn {' or '.join(VERTICAL_GBDT_TASKS)}, got "
                          f"{cfg.task!r}")
    if sec.encryption not in VERTICAL_ENCRYPTIONS:
        raise ConfigError(f"security.encryption: a vertical run takes {' or '.join(VERTICAL_ENCRYPTIONS)} (the label "
                          f"party's own CKKS key), got {sec.encryption!r}; set security.encryption: ckks")
    if sec.keys is not None:
        raise ConfigError("security.keys: the label party of a vertical run makes its own key for the run; remove "
                          "security.keys")
    if sec.psi_reveal != "all":
        raise ConfigError("security.psi_reveal: vertical gradient-boosted trees need every party to know its shared "
                          "rows (each bins and splits its own columns over them); set security.psi_reveal: all")
    label = cfg.data.parties[cfg.data.label_party]
    if label.weight is not None:
        raise ConfigError(f"data.parties.{cfg.data.label_party}.weight: row weights are not taken by model.kind: gbdt")
    if label.exposure is not None and cfg.task != "claim_frequency":
        raise ConfigError(f"data.parties.{cfg.data.label_party}.exposure: exposure is for claim_frequency, the task "
                          f"is {cfg.task}")
