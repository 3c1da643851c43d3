"""The model of a vertical SecureBoost fit: split between the parties, and predicted by them together.

- The label party keeps the structure of every tree (:class:`TreeStructure`): which party owns each split,
  that party's feature index and bin, the default direction of missing values, the children, the gains and
  the leaf values. It never holds a threshold of another party's column.
- Each party keeps the thresholds of the splits on its own columns (:class:`PartySplits`).

Prediction is federated (:meth:`SecureBoostModel.predict_raw`): the parties first align the rows to score
(the same PSI as for training), then, level by level, the label party sends each party the nodes that the
rows have reached, and the party that owns a node's split answers left or right for each of those rows
from its own values and thresholds (:meth:`PartySplits.go_left`). The label party adds up the leaf values.
So a party never learns another's thresholds or values; the label party learns which leaf every row
reaches, as during training.

On disk a run writes each party's part to ``institutions/<party>/model.json`` (the label party's holds the
structure). :func:`load_joint` puts the parts together as one predictor (:class:`SecureBoostModel`, with
``predict_proba``), which runs the same routing in one process: each party's rows are given as a table of
its own columns, in the common row order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..trees.objectives import get_objective
from ..trees.params import GBDTParams

__all__ = ["FORMAT", "PartySplits", "SecureBoostModel", "TreeStructure", "load_joint"]

FORMAT = "fedx-secureboost"
VERSION = 1


@dataclass(frozen=True)
class TreeStructure:
    """One tree as the label party holds it; ``owner == -1`` marks a leaf.

    ``owner`` indexes :attr:`SecureBoostModel.parties`; ``feature`` is the owner's own column index.
    """

    owner: np.ndarray
    feature: np.ndarray
    bin: np.ndarray
    default_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    gain: np.ndarray
    cover: np.ndarray

    @classmethod
    def from_arrays(cls, arrays: Any, owner_of: np.ndarray, starts: np.ndarray) -> TreeStructure:
        """From the engine's :class:`~fedx.trees.engine.TreeArrays` (global feature indices)."""
        g = np.asarray(arrays.feature, dtype=np.int64)
        inner = g >= 0
        owner = np.where(inner, owner_of[np.maximum(g, 0)], -1)
        feature = np.where(inner, g - starts[np.maximum(owner, 0)], -1)
        return cls(owner=owner.astype(np.int64), feature=feature.astype(np.int64),
                   bin=np.asarray(arrays.bin, dtype=np.int64), default_left=np.asarray(arrays.default_left, dtype=bool),
                   left=np.asarray(arrays.left, dtype=np.int64), right=np.asarray(arrays.right, dtype=np.int64),
                   value=np.asarray(arrays.value, dtype=np.float64), gain=np.asarray(arrays.gain, dtype=np.float64),
                   cover=np.asarray(arrays.cover, dtype=np.float64))

    @property
    def depth(self) -> int:
        depth = np.zeros(len(self.owner), dtype=np.int64)
        for node in range(len(self.owner)):
            if self.owner[node] >= 0:
                depth[self.left[node]] = depth[self.right[node]] = depth[node] + 1
        return int(depth.max())

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k).tolist() for k in ("owner", "feature", "bin", "default_left", "left", "right",
                                                        "value", "gain", "cover")}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TreeStructure:
        ints = {k: np.asarray(d[k], dtype=np.int64) for k in ("owner", "feature", "bin", "left", "right")}
        return cls(default_left=np.asarray(d["default_left"], dtype=bool), value=np.asarray(d["value"], dtype=float),
                   gain=np.asarray(d["gain"], dtype=float), cover=np.asarray(d["cover"], dtype=float), **ints)


class PartySplits:
    """The thresholds of one party's splits, by (tree, node): what it alone holds of the model."""

    def __init__(self, party: str, feature_names: Sequence[str]) -> None:
        self.party = party
        self.feature_names = [str(c) for c in feature_names]
        self.table: dict[tuple[int, int], tuple[int, float, bool]] = {}

    def add(self, tree: int, node: int, feature: int, threshold: float, default_left: bool) -> None:
        self.table[(int(tree), int(node))] = (int(feature), float(threshold), bool(default_left))

    def go_left(self, tree: int, nodes: np.ndarray, X: np.ndarray) -> np.ndarray:
        """For rows at ``nodes`` (splits of this party) with values ``X`` (its columns): whether each goes left."""
        out = np.zeros(len(nodes), dtype=bool)
        for node in np.unique(nodes):
            key = (int(tree), int(node))
            if key not in self.table:
                raise DataError(f"party {self.party}: holds no split at tree {tree}, node {int(node)}")
            f, threshold, dleft = self.table[key]
            rows = nodes == node
            x = X[rows, f]
            out[rows] = np.where(np.isnan(x), dleft, x < threshold)
        return out

    def to_dict(self) -> dict[str, Any]:
        items = sorted(self.table.items())
        return {"party": self.party, "features": self.feature_names,
                "splits": [[t, n, f, _number(th), d] for (t, n), (f, th, d) in items]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PartySplits:
        out = cls(str(d["party"]), d["features"])
        for t, n, f, th, dleft in d["splits"]:
            out.add(t, n, f, float(th), dleft)
        return out

    def of_tree(self, tree: int) -> list[list[Any]]:
        """Its splits of one tree, ``[node, feature, threshold, default_left]`` each (a checkpoint's entry)."""
        mine = sorted((n, v) for (t, n), v in self.table.items() if t == int(tree))
        return [[n, f, _number(th), d] for n, (f, th, d) in mine]

    def add_tree(self, tree: int, splits: Sequence[Sequence[Any]]) -> None:
        """Put back the splits of one tree from :meth:`of_tree`."""
        for n, f, th, dleft in splits:
            self.add(tree, n, f, float(th), dleft)


class SecureBoostModel:
    """A vertical GBDT: the label party's tree structures and every party's thresholds (module docstring).

    Attributes
    ----------
    parties : list of str
        The parties, the label party first (``TreeStructure.owner`` indexes it).
    feature_names_in_ : ndarray of str
        Every party's columns as ``party:column``.
    """

    def __init__(self, trees: Sequence[TreeStructure], base_margin: float, params: GBDTParams,
                 parties: Sequence[str], feature_names: Sequence[str], label_party: str,
                 shares: Mapping[str, PartySplits]) -> None:
        self.trees = list(trees)
        self.base_margin = float(base_margin)
        self.params = params
        self.objective = get_objective(params.objective)
        self.parties = list(parties)
        self.label_party = label_party
        self.shares = dict(shares)
        self.feature_names_in_ = np.asarray(list(feature_names), dtype=object)
        self.classes_ = np.array([0, 1]) if params.objective == "binary:logistic" else None

    def columns(self, party: str) -> list[str]:
        """The columns of ``party`` that its table must hold, in order."""
        return list(self.shares[party].feature_names)

    def _tables(self, tables: Mapping[str, Any]) -> dict[str, np.ndarray]:
        out, n = {}, None
        for p in self.parties:
            if p not in tables:
                raise DataError(f"secureboost predict: no table of party {p} (every party routes rows through its "
                                f"own splits)")
            X = tables[p]
            cols = self.columns(p)
            if hasattr(X, "columns"):
                missing = [c for c in cols if c not in X.columns]
                if missing:
                    raise DataError(f"secureboost predict: the table of party {p} lacks column(s) {missing[:5]}")
                X = X[cols].to_numpy(dtype=np.float64, na_value=np.nan)
            X = np.asarray(X, dtype=np.float64).reshape(-1, len(cols)) if cols else np.zeros((len(X), 0))
            if n is not None and X.shape[0] != n:
                raise DataError(f"secureboost predict: party {p} gives {X.shape[0]} rows, the others {n}")
            n = X.shape[0]
            out[p] = X
        return out

    def leaves(self, tables: Mapping[str, Any]) -> np.ndarray:
        """The leaf of every row in every tree, ``(n, trees)``: the federated routing, level by level."""
        X = self._tables(tables)
        n = next(iter(X.values())).shape[0]
        out = np.zeros((n, len(self.trees)), dtype=np.int64)
        for t, tree in enumerate(self.trees):
            node = np.zeros(n, dtype=np.int64)
            for _ in range(tree.depth):
                owner = tree.owner[node]
                for i, p in enumerate(self.parties):
                    rows = np.flatnonzero(owner == i)
                    if rows.size == 0:
                        continue
                    go = self.shares[p].go_left(t, node[rows], X[p][rows])
                    node[rows] = np.where(go, tree.left[node[rows]], tree.right[node[rows]])
            out[:, t] = node
        return out

    def predict_raw(self, tables: Mapping[str, Any], offset: np.ndarray | None = None) -> np.ndarray:
        """The margin of each row (``tables``: each party's own columns of the same rows, in the same order)."""
        leaves = self.leaves(tables)
        margin = np.full(leaves.shape[0], self.base_margin)
        if offset is not None:
            margin = margin + np.asarray(offset, dtype=np.float64)
        for t, tree in enumerate(self.trees):
            margin += tree.value[leaves[:, t]]
        return margin

    def predict_proba(self, tables: Mapping[str, Any]) -> np.ndarray:
        """Class probabilities ``(n, 2)`` (binary:logistic)."""
        if self.classes_ is None:
            raise DataError(f"predict_proba needs a classifier; this model's objective is {self.params.objective}")
        p = self.objective.transform(self.predict_raw(tables))
        return np.column_stack([1.0 - p, p])

    def predict(self, tables: Mapping[str, Any], offset: np.ndarray | None = None) -> np.ndarray:
        """Labels for binary:logistic; expected counts for count:poisson."""
        if self.classes_ is not None:
            return self.classes_[(self.predict_proba(tables)[:, 1] >= 0.5).astype(np.int64)]
        return self.objective.transform(self.predict_raw(tables, offset))

    def feature_importances(self, kind: str = "gain") -> dict[str, float]:
        """Total split gain (``gain``) or number of splits (``split``) per ``party:column``."""
        if kind not in ("gain", "split"):
            raise DataError(f"feature_importances: kind must be 'gain' or 'split', got {kind!r}")
        total = dict.fromkeys(map(str, self.feature_names_in_), 0.0)
        for tree in self.trees:
            for node in np.flatnonzero(tree.owner >= 0):
                party = self.parties[int(tree.owner[node])]
                name = f"{party}:{self.shares[party].feature_names[int(tree.feature[node])]}" \
                    if party in self.shares else f"{party}:#{int(tree.feature[node])}"
                total[name] = total.get(name, 0.0) + (float(tree.gain[node]) if kind == "gain" else 1.0)
        return total

    def importance_by_party(self, kind: str = "gain") -> dict[str, float]:
        """Each party's share of the total gain (or of the splits)."""
        imp = self.feature_importances(kind)
        by = dict.fromkeys(self.parties, 0.0)
        for name, v in imp.items():
            by[name.split(":", 1)[0]] += v
        total = sum(by.values())
        return {p: v / total if total > 0 else 0.0 for p, v in by.items()}

    # ------------------------------------------------------------------ saving, in parts

    def label_part(self) -> dict[str, Any]:
        """What the label party keeps: the structures, leaf values and its own thresholds."""
        return {"format": FORMAT, "version": VERSION, "role": "label", "party": self.label_party,
                "parties": self.parties, "params": self.params.to_dict(), "base_margin": self.base_margin,
                "feature_names": [str(c) for c in self.feature_names_in_],
                "trees": [t.to_dict() for t in self.trees], "splits": self.shares[self.label_party].to_dict()}

    def party_part(self, party: str) -> dict[str, Any]:
        """What a feature party keeps: the thresholds of its own splits."""
        return {"format": FORMAT, "version": VERSION, "role": "feature", "party": party,
                "splits": self.shares[party].to_dict()}

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Write each party's part to ``folder/<party>/model.json``; returns the paths."""
        out = {}
        for p in self.parties:
            path = Path(folder) / _safe(p) / "model.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            part = self.label_part() if p == self.label_party else self.party_part(p)
            path.write_text(json.dumps(part, allow_nan=False))
            out[p] = path
        return out


def load_joint(where: str | Path | Sequence[str | Path]) -> SecureBoostModel:
    """The joint predictor from the parts: a run folder (its ``institutions/*/model.json``) or the part files.

    Raises
    ------
    DataError
        No label part, a part missing for a party, or files that are not SecureBoost parts.
    """
    if isinstance(where, (str, Path)):
        root = Path(where)
        if root.is_dir():
            base = root / "institutions" if (root / "institutions").is_dir() else root
            paths = sorted(base.glob("*/model.json"))
        else:
            paths = [root]
    else:
        paths = [Path(p) for p in where]
    parts = []
    for path in paths:
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read a SecureBoost model part ({exc})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT or d.get("version") != VERSION:
            raise DataError(f"{path}: not a fedx SecureBoost model part (format {FORMAT!r}, version {VERSION})")
        parts.append(d)
    labels = [d for d in parts if d.get("role") == "label"]
    if len(labels) != 1:
        raise DataError(f"secureboost model: expected one label party's part among {[str(p) for p in paths]}, "
                        f"found {len(labels)}")
    lab = labels[0]
    shares = {d["party"]: PartySplits.from_dict(d["splits"]) for d in parts}
    missing = [p for p in lab["parties"] if p not in shares]
    if missing:
        raise DataError(f"secureboost model: no part of party {missing[0]} (each party routes rows through its own "
                        f"splits; give every party's model.json)")
    return SecureBoostModel([TreeStructure.from_dict(t) for t in lab["trees"]], lab["base_margin"],
                            GBDTParams.from_dict(lab["params"]), lab["parties"], lab["feature_names"], lab["party"],
                            shares)


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "party"


def _number(t: float) -> float | str:
    return ("inf" if t > 0 else "-inf") if np.isinf(t) else float(t)
