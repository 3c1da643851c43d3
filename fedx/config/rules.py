"""The building blocks of config checking: allowed values, numeric bounds, and how values are named in errors.

Numeric bounds are declared once here: the config checks them, and the library code that takes the
same values from Python (not from YAML) checks them with :func:`check_number`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import field
from pathlib import Path
from typing import Any, Literal


from ..errors import ConfigError


TASKS = ("fraud", "claim_frequency", "claim_severity", "disease_risk")


AGGREGATORS = ("fedavg", "fedprox", "fedadam", "fedyogi", "fedavgm", "trimmed_mean", "median", "krum",
               "multi_krum", "newton")


ROBUST_AGGREGATORS = ("trimmed_mean", "median", "krum", "multi_krum")


ENCRYPTIONS = ("none", "ckks", "bfv-compact")


BASELINES = ("local", "centralized")


#: Numeric bounds declared once: the config checks them, and the library code that takes the same
#: values from Python (not from YAML) checks them with :func:`check_number`.
DROPOUT: dict[str, Any] = {"lo": 0.0, "hi": 0.95}


NEWTON_L2: dict[str, Any] = {"lo": 0.0}


NEWTON_TOLERANCE: dict[str, Any] = {"lo": 0.0, "hi": 1.0, "lo_open": True, "hi_open": True}


TWEEDIE_POWER: dict[str, Any] = {"lo": 1.0, "hi": 2.0, "lo_open": True, "hi_open": True}


#: Gradient-boosted trees (``model.kind: gbdt``): bounds of the settings, and the objective each task takes.
GBDT_DEPTH: dict[str, Any] = {"lo": 1, "hi": 16}


GBDT_BINS: dict[str, Any] = {"lo": 2, "hi": 256}


GBDT_SHARE: dict[str, Any] = {"lo": 0.0, "hi": 1.0, "lo_open": True}


GBDT_OBJECTIVES = ("auto", "binary:logistic", "count:poisson")


#: The objective that ``model.objective: auto`` picks for each task a GBDT can learn.
GBDT_TASK_OBJECTIVE = {"fraud": "binary:logistic", "disease_risk": "binary:logistic",
                       "claim_frequency": "count:poisson"}


def check_number(value: Any, path: str, bound: Mapping[str, Any]) -> float:
    """``value`` as a float if it is a finite number within ``bound``; else ConfigError naming ``path``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{path}: expected a number{_range(bound)}, got {value!r}")
    _check_range(value, path, bound, "a number")
    return float(value)


def _meta(*, lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
          doc: str = "") -> dict[str, Any]:
    return {"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open, "doc": doc}


def _f(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **meta: Any) -> Any:
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=_meta(**meta))
    return field(default=default, metadata=_meta(**meta))


def categorical_uses(frequencies: Sequence[str], crosstabs: Sequence[Sequence[str]], group_by: str | None,
                     group_bins: Sequence[float] | None) -> dict[str, str]:
    """The columns that a ``stats:`` query uses as categorical, each with the first key that uses it."""
    uses: dict[str, str] = {}
    for col in frequencies:
        uses.setdefault(col, "stats.frequencies")
    for i, pair in enumerate(crosstabs):
        for col in pair:
            uses.setdefault(col, f"stats.crosstabs[{i}]")
    if group_by is not None and group_bins is None:
        uses.setdefault(group_by, "stats.group_by")
    return uses


def _check_range(value: float, path: str, meta: Mapping[str, Any], what: str) -> None:
    lo, hi, lo_open, hi_open = meta.get("lo"), meta.get("hi"), meta.get("lo_open"), meta.get("hi_open")
    if (lo is not None and (value < lo or (lo_open and value == lo))) or \
            (hi is not None and (value > hi or (hi_open and value == hi))):
        raise ConfigError(f"{path}: expected {what}{_range(meta)}, got {value}")


def _range(meta: Mapping[str, Any]) -> str:
    lo, hi, lo_open = meta.get("lo"), meta.get("hi"), meta.get("lo_open")
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if meta.get('hi_open') else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {_num(lo)}"
    if hi is not None:
        return f" {'<' if meta.get('hi_open') else '<='} {_num(hi)}"
    return ""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is list:
        inner = {int: "integers", float: "numbers", str: "strings"}.get(args[0])
        return f"a list of {inner or _describe(args[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _bool_hint(value: Any, what: str = "name") -> str:
    """For a boolean where a string was expected: YAML 1.1 reads unquoted yes/no/on/off as booleans."""
    if not isinstance(value, bool):
        return ""
    example = f', e.g. "{"YES" if value else "NO"}"' if what == "name" else ""
    return f" (YAML reads yes/no/on/off/true/false as booleans: quote the {what}{example})"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"   # as YAML spells it
    if value is None:
        return "nothing (null)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return f"a list {value!r}" if len(repr(value)) < 60 else "a list"
    if _is_table(value):
        rows, cols = value.shape
        return f"a pandas DataFrame ({rows} rows, {cols} columns)"
    if isinstance(value, (int, float)) or len(repr(value)) < 60:
        return repr(value)
    return f"a {type(value).__module__.split('.')[0]} {type(value).__name__}"   # never a long repr in one line


def _is_table(value: Any) -> bool:
    """A pandas DataFrame, recognized without importing pandas."""
    return type(value).__name__ == "DataFrame" and type(value).__module__.startswith("pandas")


def _table_hint(value: Any) -> str:
    """For a DataFrame where a config value was expected: tables go to fedx.run, not into the config."""
    if not _is_table(value):
        return ""
    return ("; a DataFrame goes to fedx.run(config, tables=...), not into the config: one table split by "
            "data.split_by, or {institution: table}, and data.source left out")


def check_unique(path: str, items: Sequence[Any]) -> None:
    """Raise ConfigError naming ``path`` if an item of ``items`` appears twice."""
    seen: set[Any] = set()
    for item in items:
        if item in seen:
            raise ConfigError(f"{path}: {item!r} appears twice")
        seen.add(item)


def _check_interval(path: str, pair: Sequence[float]) -> None:
    if len(pair) != 2 or not pair[0] < pair[1]:
        raise ConfigError(f"{path}: expected [lo, hi] with lo < hi, got {list(pair)}")


def _check_edges(path: str, edges: Sequence[float]) -> None:
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ConfigError(f"{path}: expected at least 2 strictly increasing bin edges, got {list(edges)}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


#: Vertical runs (``data.partition: vertical``): the tasks, encryptions and PSI settings they take.
VERTICAL_TASKS = ("claim_frequency", "claim_severity")


VERTICAL_ENCRYPTIONS = ("ckks", "none")


PSI_REVEAL = ("label_party", "all")


PSI_COUNT_TO = ("all", "label_party")


LABEL_BLOCKS = ("two_key", "one_key")


#: The synthetic sources of a vertical run (one table per party; fedx.data.synthetic.health_insurance).
VERTICAL_SYNTHETIC = ("synthetic/health_insurance",)
