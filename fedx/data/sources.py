"""Where a run's table comes from: a synthetic generator, or a CSV/Parquet file."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import ConfigError
from .synthetic import (
    BankProfile,
    InsurerProfile,
    generate_policies,
    generate_transactions,
)
from .tables import read_table

_GENERATORS: dict[str, Callable[..., pd.DataFrame]] = {
    "synthetic/transactions": generate_transactions,
    "synthetic/policies": generate_policies,
}
# Parameters that hold lists of profiles, which a YAML file gives as lists of mappings.
_PROFILE_PARAMS: dict[str, type] = {"banks": BankProfile, "insurers": InsurerProfile}

SYNTHETIC_SOURCES: tuple[str, ...] = tuple(_GENERATORS)
"""The names of the synthetic sources."""


def load_source(source: str, *, params: Mapping[str, Any] | None = None, seed: int = 7,
                base_dir: Path | None = None) -> pd.DataFrame:
    """The table that ``source`` names.

    Parameters
    ----------
    source : str
        One of :data:`SYNTHETIC_SOURCES`, or the path of a CSV/Parquet file.
    params : mapping, optional
        Keyword arguments of the synthetic generator (for example ``{"n_days": 90}``); profile lists
        (``banks``, ``insurers``) may be given as mappings of the profile's fields.
    seed : int
        Seed of the generator.
    base_dir : Path, optional
        The folder that a relative path is relative to (the config file's folder).

    Raises
    ------
    ConfigError
        For an unknown synthetic source or parameter, or parameters given for a file.
    DataError
        When the file cannot be read.
    """
    params = dict(params or {})
    if source in _GENERATORS:
        generator = _GENERATORS[source]
        check_keywords(generator, params, f"params of {source}", skip=("seed",))
        for key, cls in _PROFILE_PARAMS.items():
            if key in params:
                params[key] = _profiles(params[key], cls, f"params.{key}")
        return generator(**params, seed=seed)
    if source.startswith("synthetic/"):
        raise ConfigError(f"source: unknown synthetic source {source!r}; expected one of "
                          f"{', '.join(SYNTHETIC_SOURCES)} or a file path")
    if params:
        raise ConfigError(f"params: only synthetic sources take parameters, and {source!r} is a file "
                          f"(got {', '.join(params)})")
    path = Path(source).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return read_table(path)


def check_keywords(func: Callable[..., Any], kwargs: Mapping[str, Any], what: str,
                   skip: Sequence[str] = ()) -> None:
    """Raise ConfigError naming any key of ``kwargs`` that ``func`` does not take (or that is in ``skip``)."""
    valid = [name for name, p in inspect.signature(func).parameters.items()
             if name not in skip and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [key for key in kwargs if key not in valid]
    if unknown:
        raise ConfigError(f"{what}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(valid)}")


def _profiles(items: Any, cls: type, what: str) -> list[Any]:
    """Profiles from a list whose entries are profiles or mappings of their fields."""
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise ConfigError(f"{what}: expected a list of {cls.__name__} entries, got {items!r}")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, Mapping):
            check_keywords(cls, item, f"{what}[{i}]")
            try:
                item = cls(**item)
            except TypeError as exc:
                raise ConfigError(f"{what}[{i}]: {exc}") from None
        elif not isinstance(item, cls):
            raise ConfigError(f"{what}[{i}]: expected a mapping of {cls.__name__} fields, got {item!r}")
        out.append(item)
    return out
