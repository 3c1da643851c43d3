"""Subject ids: one column or several, normalised to one canonical byte string per row.

Every party of a vertical run must turn the same person into the same bytes, so the normalisation is fixed:

- **integers** (an integer column, an integral float column, or Python/NumPy ints in an object column) are
  written in canonical decimal: no sign for positives, no leading zeros, no ``.0`` (``00123`` read as a
  number, ``123`` and ``123.0`` are all ``123``). Floats above 2**53 are refused: they have lost digits.
- **strings** are Unicode-normalised (NFKC), stripped of leading and trailing white space and case-folded
  (``" Ab-12 "`` is ``ab-12``). A string is never read as a number: ``"00123"`` keeps its zeros, so a column
  read as text at one party and as numbers at another is refused, not silently matched.
- **dates** (datetime columns, ``datetime.date`` values) are written ``YYYY-MM-DD``, or in full ISO 8601 when
  a value has a time of day; time-zone-aware values are converted to UTC first.

Several columns (national id plus birth date, say) are combined part by part, each as ``kind``, length,
``:`` and the text, so that no two different tuples give the same bytes. Empty or null ids, duplicate ids,
a column that mixes kinds, and columns whose kinds differ between parties are refused with a
:class:`~fedx.errors.PSIError` that names the party and the column. Errors name row positions, never the ids.
"""

from __future__ import annotations

import datetime as _dt
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import PSIError

KINDS = ("int", "str", "date")
_TAG = {"int": "i", "str": "s", "date": "d"}
_MAX_EXACT_FLOAT = 2**53


@dataclass(frozen=True)
class IdSpec:
    """The shape of a party's id: its column names and the kind of each (``int``, ``str`` or ``date``)."""

    party: str
    columns: tuple[str, ...]
    kinds: tuple[str, ...]

    def to_dict(self) -> dict[str, list[str]]:
        """The spec as sent to the other parties (column names and kinds, no values)."""
        return {"columns": list(self.columns), "kinds": list(self.kinds)}

    @classmethod
    def from_dict(cls, party: str, doc: dict) -> IdSpec:
        """Rebuild a peer's spec from its message."""
        return cls(party, tuple(doc["columns"]), tuple(doc["kinds"]))


@dataclass(frozen=True)
class PartyIds:
    """A party's normalised ids: ``keys[i]`` is the canonical bytes of row ``i`` of its table."""

    spec: IdSpec
    keys: list[bytes]

    def __len__(self) -> int:
        return len(self.keys)


def _where(party: str, column: str) -> str:
    return f"party {party!r}, id column {column!r}"


def _first_rows(mask: np.ndarray, k: int = 3) -> str:
    rows = np.flatnonzero(mask)[:k]
    return ", ".join(str(int(r)) for r in rows)


def _null_check(values: pd.Series, party: str, column: str) -> None:
    nulls = values.isna().to_numpy()
    if nulls.any():
        raise PSIError(f"{_where(party, column)}: {int(nulls.sum())} null id(s) (row positions "
                       f"{_first_rows(nulls)}, counted from 0); every row needs an id")


def _int_text(values: pd.Series, party: str, column: str) -> pd.Series:
    if pd.api.types.is_float_dtype(values.dtype):
        arr = values.to_numpy(dtype=np.float64)
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            raise PSIError(f"{_where(party, column)}: non-integral number(s) at row positions "
                           f"{_first_rows(bad)}; expected whole-number ids or strings")
        if (np.abs(arr) > _MAX_EXACT_FLOAT).any():
            raise PSIError(f"{_where(party, column)}: float ids above 2**53 have lost digits; read the "
                           "column as integers or as strings")
        values = pd.Series(arr.astype(np.int64), index=values.index)
    return values.astype(np.int64).astype(str)


def _date_text(values: pd.Series) -> pd.Series:
    stamps = pd.to_datetime(values)
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    if (stamps == stamps.dt.normalize()).all():
        return stamps.dt.strftime("%Y-%m-%d")
    return stamps.dt.strftime("%Y-%m-%dT%H:%M:%S.%f")


def _str_text(values: pd.Series, party: str, column: str) -> pd.Series:
    text = values.astype(str).str.normalize("NFKC").str.strip().str.casefold()
    empty = (text == "").to_numpy()
    if empty.any():
        raise PSIError(f"{_where(party, column)}: {int(empty.sum())} empty id(s) (row positions "
                       f"{_first_rows(empty)}, counted from 0); every row needs an id")
    return text


def _object_kind(values: pd.Series, party: str, column: str) -> str:
    """The one kind of an object column's values; refuse a mix."""

    def kind(v: object) -> str:
        if isinstance(v, str):
            return "str"
        if isinstance(v, (bool, np.bool_)):
            return "bool"
        if isinstance(v, numbers.Integral):
            return "int"
        if isinstance(v, numbers.Real):
            return "float"
        if isinstance(v, (_dt.date, pd.Timestamp, np.datetime64)):
            return "date"
        return type(v).__name__

    kinds = np.array([kind(v) for v in values.to_numpy()], dtype=object)
    found = list(dict.fromkeys(kinds.tolist()))
    if len(found) > 1:
        a, b = found[:2]
        raise PSIError(f"{_where(party, column)}: mixes kinds of id ({a} at row position "
                       f"{_first_rows(kinds == a, 1)}, {b} at row position {_first_rows(kinds == b, 1)}); "
                       "expected one kind (all integers, all strings or all dates)")
    k = found[0]
    if k not in ("str", "int", "float", "date"):
        raise PSIError(f"{_where(party, column)}: ids of type {k}; expected integers, strings or dates")
    return "int" if k == "float" else k


def _column_text(values: pd.Series, party: str, column: str) -> tuple[str, pd.Series]:
    _null_check(values, party, column)
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        raise PSIError(f"{_where(party, column)}: boolean values are not ids; expected integers, "
                       "strings or dates")
    if pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_float_dtype(dtype):
        return "int", _int_text(values, party, column)
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "date", _date_text(values)
    kind = _object_kind(values, party, column)
    if kind == "int":
        numeric = pd.to_numeric(values)
        return "int", _int_text(numeric, party, column)
    if kind == "date":
        return "date", _date_text(values)
    return "str", _str_text(values, party, column)


def normalise_ids(table: pd.DataFrame, columns: str | Sequence[str], *, party: str) -> PartyIds:
    """Normalise a party's id column(s) into one canonical byte string per row.

    Parameters
    ----------
    table : pandas.DataFrame
        The party's table; row ``i`` of the result is row position ``i`` of the table.
    columns : str or sequence of str
        The id column (``data.id``), or several columns combined into one id.
    party : str
        The party's name, used in error messages.

    Returns
    -------
    PartyIds
        The spec (columns and kinds) and the canonical bytes of every row.

    Raises
    ------
    PSIError
        A column is missing, a row has a null or empty id, a column mixes kinds, or two rows share an id.
    """
    cols = (columns,) if isinstance(columns, str) else tuple(columns)
    if not cols:
        raise PSIError(f"party {party!r}: no id column given; expected data.id to name one or more columns")
    if len(table) == 0:
        raise PSIError(f"party {party!r}: the table has no rows")
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise PSIError(f"party {party!r}: id column {missing[0]!r} is not in the table; columns are "
                       f"{sorted(map(str, table.columns))}")
    kinds: list[str] = []
    combined: pd.Series | None = None
    for col in cols:
        kind, text = _column_text(table[col].reset_index(drop=True), party, col)
        kinds.append(kind)
        part = _TAG[kind] + text.str.len().astype(str) + ":" + text
        combined = part if combined is None else combined + part
    assert combined is not None
    dup = combined.duplicated(keep=False).to_numpy()
    if dup.any():
        first = combined[dup].iloc[0]
        rows = np.flatnonzero((combined == first).to_numpy())[:2]
        label = " + ".join(repr(c) for c in cols)
        raise PSIError(f"party {party!r}, id column {label}: {int(dup.sum())} rows share an id with another "
                       f"row (for example row positions {int(rows[0])} and {int(rows[1])}, counted from 0, "
                       "after normalisation); ids must be unique at each party")
    keys = [s.encode("utf-8") for s in combined.tolist()]
    return PartyIds(IdSpec(party, cols, tuple(kinds)), keys)


def check_compatible(own: IdSpec, peer: IdSpec) -> None:
    """Refuse two parties whose ids cannot match: a different number of columns, or kinds that differ.

    Raises
    ------
    PSIError
        Naming both parties and the column at fault.
    """
    if len(own.columns) != len(peer.columns):
        raise PSIError(f"party {own.party!r} identifies people by {len(own.columns)} column(s) "
                       f"{list(own.columns)}, party {peer.party!r} by {len(peer.columns)} {list(peer.columns)}; "
                       "expected the same id columns at every party")
    for a, b, ka, kb in zip(own.columns, peer.columns, own.kinds, peer.kinds):
        if ka != kb:
            raise PSIError(f"id column {a!r} holds {ka} ids at party {own.party!r} but column {b!r} holds "
                           f"{kb} ids at party {peer.party!r}; expected the same kind at every party "
                           "(read the column the same way, e.g. as strings, at both)")
