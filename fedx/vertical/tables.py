"""The parties' own tables in a vertical run: where each comes from, its checks, and its part of the design.

Every error names the party, its table's origin (file or source) and the column, for example::

    party hospital (hospital.csv): column 'bmi', row 18: the value is NaN (missing) (2 more row(s) like it); ...

A party's table is checked whole, before the private set intersection: its ids (null, empty, duplicate,
mixed kinds: :func:`fedx.vertical.ids.normalise_ids`), the columns the config names, numbers that are
missing or infinite, undeclared levels, and the target, exposure and weight of the label party.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import Config, VerticalPartyConfig
from ..data.schema import numbers
from ..data.sources import check_keywords
from ..data.tables import read_table
from ..errors import ConfigError, DataError, PSIError, SchemaError
from .ids import PartyIds, normalise_ids

__all__ = ["PartyTable", "family_of", "load_party_table", "load_party_tables"]


@dataclass
class PartyTable:
    """One party's table, checked, with the encoding of its columns.

    Attributes
    ----------
    name : str
        The party.
    df : pandas.DataFrame
        Its whole table, rows in its own order.
    origin : str
        Where it came from (a file name, or ``synthetic/health_insurance``), for errors.
    spec : VerticalPartyConfig
        Its section of the config.
    ids : PartyIds
        Its normalised ids.
    levels : dict
        The levels of each categorical feature (the first is the reference).
    """

    name: str
    df: pd.DataFrame
    origin: str
    spec: VerticalPartyConfig
    ids: PartyIds
    levels: dict[str, list[str]]

    @property
    def where(self) -> str:
        """How errors name the table: ``party hospital (hospital.csv)``."""
        return f"party {self.name} ({self.origin})"

    def design(self, rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Its design columns over ``rows`` (row positions of its table): numeric features as they are,
        categoricals one-hot coded without their reference level (``region[T.north]``)."""
        part = self.df.iloc[np.asarray(rows, dtype=np.int64)]
        cols, names = [], []
        for col, kind in self.spec.features.items():
            if kind == "numeric":
                cols.append(part[col].to_numpy(dtype=np.float64))
                names.append(col)
                continue
            text = part[col].astype(str).to_numpy()
            for level in self.levels[col][1:]:
                cols.append((text == level).astype(np.float64))
                names.append(f"{col}[T.{level}]")
        X = np.column_stack(cols) if cols else np.zeros((len(part), 0))
        return X, names

    def reference_levels(self) -> dict[str, str]:
        """``party:column`` -> its reference level, for the relativities."""
        return {f"{self.name}:{col}": levels[0] for col, levels in self.levels.items()}

    def column(self, key: str, rows: np.ndarray) -> np.ndarray | None:
        """The target, exposure or weight column over ``rows`` (None when the config names none)."""
        col = getattr(self.spec, key)
        return None if col is None else self.df[col].to_numpy(dtype=np.float64)[np.asarray(rows, dtype=np.int64)]


def family_of(cfg: Config) -> str:
    """The GLM family: ``model.family``, or the task's own (poisson for claim frequency, gamma for severity)."""
    if cfg.model.family != "auto":
        return cfg.model.family
    return "poisson" if cfg.task == "claim_frequency" else "gamma"


def load_party_tables(cfg: Config, tables: Mapping[str, pd.DataFrame] | None = None) -> dict[str, PartyTable]:
    """Every party's table, read and checked (the label party first).

    Parameters
    ----------
    cfg : Config
        A vertical config.
    tables : mapping of party name to DataFrame, optional
        The parties' own tables, in place of their ``source`` (which is then not read).

    Raises
    ------
    ConfigError, DataError, SchemaError, PSIError
        Naming the party, the table's origin and the column.
    """
    parties = cfg.data.parties
    assert parties is not None and cfg.data.label_party is not None
    if tables is not None:
        unknown = sorted(set(tables) - set(parties))
        missing = sorted(set(parties) - set(tables))
        if unknown or missing:
            raise ConfigError(f"tables: expected one table for each of data.parties ({', '.join(parties)}); "
                              f"{'unknown: ' + ', '.join(unknown) if unknown else 'missing: ' + ', '.join(missing)}")
    order = [cfg.data.label_party, *[p for p in parties if p != cfg.data.label_party]]
    out = {}
    for name in order:
        spec = parties[name]
        if tables is not None:
            df, origin = tables[name], f"tables[{name!r}]"
            if not isinstance(df, pd.DataFrame) or df.empty:
                raise ConfigError(f"tables[{name!r}]: expected a non-empty pandas DataFrame")
            df = df.reset_index(drop=True)
        else:
            df, origin = _read(cfg, name, spec)
        out[name] = _checked(cfg, name, df, origin, spec, is_label=name == cfg.data.label_party)
    return out


def load_party_table(cfg: Config, name: str, df: pd.DataFrame | None = None, origin: str | None = None) -> PartyTable:
    """One party's table, read from its ``source`` (or given as ``df``, from ``origin``) and checked.

    A deployed party reads only its own table (its node file's ``data``), with its section of the config.

    Raises
    ------
    ConfigError, DataError, SchemaError, PSIError
        Naming the party, the table's origin and the column.
    """
    parties = cfg.data.parties
    if not cfg.data.vertical or parties is None:
        raise ConfigError("load_party_table: the config is not vertical (data.partition: vertical)")
    if name not in parties:
        raise ConfigError(f"party {name!r} is not one of data.parties ({', '.join(parties)}): check the node's name")
    spec = parties[name]
    if df is None:
        df, origin = _read(cfg, name, spec)
    elif not isinstance(df, pd.DataFrame) or df.empty:
        raise DataError(f"party {name} ({origin or 'its table'}): expected a non-empty table")
    return _checked(cfg, name, df.reset_index(drop=True), origin or f"tables[{name!r}]", spec,
                    is_label=name == cfg.data.label_party)


def _read(cfg: Config, name: str, spec: VerticalPartyConfig) -> tuple[pd.DataFrame, str]:
    if spec.source.startswith("synthetic/"):
        generated = _generate(spec.source, json.dumps(cfg.data.params, sort_keys=True, default=str), cfg.seed)
        table = spec.table or name
        if table not in generated:
            raise ConfigError(f"data.parties.{name}: {spec.source} with these params has the tables "
                              f"{', '.join(generated)}; name the party after one of them or set "
                              f"data.parties.{name}.table")
        return generated[table].copy(), f"{spec.source}:{table}"
    if cfg.data.params:
        raise ConfigError(f"data.params: only a synthetic source takes parameters, and party {name}'s source is "
                          f"the file {spec.source!r}")
    try:
        return read_table(cfg.resolve_path(spec.source)), Path(spec.source).name
    except DataError as exc:
        raise DataError(f"data.parties.{name}.source: {exc}") from None


@functools.lru_cache(maxsize=2)
def _generate(source: str, params: str, seed: int) -> dict[str, pd.DataFrame]:
    """The tables of a synthetic source (each party takes its own; generated once per process and params)."""
    from ..data.synthetic.credit import generate_credit
    from ..data.synthetic.health_insurance import VERTICAL_SOURCES

    generator = {**VERTICAL_SOURCES, "synthetic/credit": generate_credit}[source]
    kwargs = json.loads(params)
    check_keywords(generator, kwargs, f"data.params of {source}", skip=("seed",))
    data = generator(**kwargs, seed=seed)
    if hasattr(data, "tables"):
        return data.tables()
    return {"insurer": data.insurer, **data.hospitals}


def _checked(cfg: Config, name: str, df: pd.DataFrame, origin: str, spec: VerticalPartyConfig,
             is_label: bool) -> PartyTable:
    where = f"party {name} ({origin})"
    id_cols = [cfg.data.id] if isinstance(cfg.data.id, str) else list(cfg.data.id or [])
    named = {**{c: "id" for c in id_cols}, **{c: "feature" for c in spec.features},
             **{getattr(spec, k): k for k in ("target", "exposure", "weight") if getattr(spec, k)}}
    missing = [c for c in named if c not in df.columns]
    if missing:
        raise DataError(f"{where}: no column {missing[0]!r} (its {named[missing[0]]} in data.parties.{name}); the "
                        f"table has {', '.join(map(str, df.columns[:12]))}{' ...' if len(df.columns) > 12 else ''}")
    try:
        ids = normalise_ids(df, id_cols, party=name)
    except PSIError as exc:
        raise PSIError(f"{where}: {exc}") from None
    levels: dict[str, list[str]] = {}
    for col, kind in spec.features.items():
        if kind == "numeric":
            numbers(df[col], where, allow_missing=cfg.model.kind == "gbdt")  # trees route missing values
            continue
        levels[col] = _levels(df[col], where, spec.levels.get(col))
    if is_label and cfg.model.kind == "gbdt":
        y = numbers(df[spec.target], where, "the target", allow_missing=False)
        binary = cfg.model.gbdt_objective(cfg.task) == "binary:logistic"
        bad = ~np.isin(y, (0.0, 1.0)) if binary else y < 0
        if bad.any():
            i = int(np.argmax(bad))
            raise SchemaError(f"{where}: column {spec.target!r}, row {i + 1}: the target is {y[i]:g}; task {cfg.task} "
                              f"needs {'0/1 targets' if binary else 'counts >= 0'} ({int(bad.sum())} row(s) like it)")
    elif is_label:
        fam = family_of(cfg)
        y = numbers(df[spec.target], where, "the target", allow_missing=False)
        bad = y <= 0 if fam == "gamma" else y < 0
        if bad.any():
            i = int(np.argmax(bad))
            raise SchemaError(f"{where}: column {spec.target!r}, row {i + 1}: the target is {y[i]:g}; a {fam} GLM "
                              f"needs {'positive' if fam == 'gamma' else 'non-negative'} targets "
                              f"({int(bad.sum())} row(s) like it)")
        for key in ("exposure", "weight"):
            col = getattr(spec, key)
            if col is None:
                continue
            x = numbers(df[col], where, f"the {key}", allow_missing=False)
            if (x <= 0).any():
                i = int(np.argmax(x <= 0))
                raise SchemaError(f"{where}: column {col!r}, row {i + 1}: the {key} is {x[i]:g}; expected a positive "
                                  f"number ({int((x <= 0).sum())} row(s) like it)")
    return PartyTable(name, df, origin, spec, ids, levels)


def _levels(col: pd.Series, where: str, declared: list[str] | None) -> list[str]:
    gaps = col.isna().to_numpy()
    if gaps.any():
        i = int(np.argmax(gaps))
        raise SchemaError(f"{where}: column {str(col.name)!r}, row {i + 1}: the level is missing "
                          f"({int(gaps.sum())} row(s) like it); a categorical feature must be complete")
    text = col.astype(str)
    present = sorted(set(text))
    if declared is None:
        if len(present) < 2:
            raise SchemaError(f"{where}: column {str(col.name)!r} has one level ({present[0]!r}); a categorical "
                              f"feature needs two or more")
        return present
    unknown = [v for v in present if v not in declared]
    if unknown:
        i = int(np.argmax(text.isin(unknown).to_numpy()))
        raise SchemaError(f"{where}: column {str(col.name)!r}, row {i + 1}: level {text.iloc[i]!r} is not declared "
                          f"(declared: {', '.join(declared)})")
    return list(declared)


def describe(tables: Mapping[str, PartyTable]) -> dict[str, Any]:
    """Each party's rows, origin and columns, for result.json."""
    return {name: {"rows": len(t.df), "source": t.origin, "features": dict(t.spec.features),
                   **({"target": t.spec.target} if t.spec.target else {}),
                   **({"exposure": t.spec.exposure} if t.spec.exposure else {})} for name, t in tables.items()}
