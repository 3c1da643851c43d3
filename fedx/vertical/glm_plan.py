"""What the label party asks the feature parties for: recipes, paths through the parties, and support checks.

Every sum of the vertical GLM is ``sum_i C_i prod_k r_k(i)``: a vector ``C`` of the label party (encrypted
under its key) times one per-row *recipe* ``r_k`` of each feature party ``k``:

==================  =========================================================
``["pow", q, l, m]``  ``b^q x_l x_m`` (``l`` or ``m`` 0: no column), ``b = exp(x' beta_k)``
``["pos", l]``        ``1[x_l > 0]``
``["neg", l]``        ``1[x_l < 0]``
``["nz", l, m]``      ``1[x_l != 0] 1[x_m != 0]`` (``m`` 0: only ``l``)
==================  =========================================================

A party whose recipe is the constant 1 (``["pow", 0, 0, 0]``) takes no part in that sum. The others form
its *path*: the label party sends ``Enc(C)`` to the first, each party but the last multiplies it row by row
by its recipe and passes the product on (:meth:`fedx.he.vectors.VectorEvaluator.multiply_rows`), and the
last sums it with its own recipes and returns encrypted totals to the label party. Parties whose recipe has
no column (``b^q`` alone) come first on a path, so that the last party, which only sums, carries the
variety: one vector then costs one product per distinct recipe of the parties before the last.

The requests of one vector along one path form a tree (:class:`Job`): at the last party a list of leaf
recipes, before it a list of ``[recipe, subtree]`` branches. Every branch has an id (``J.2.0``), and the
totals come back under the id of their leaf list, in the order of its leaves.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import PolicyError

__all__ = ["ONE", "Job", "check_cells", "check_pairs", "expectations", "is_one", "plan", "scaled"]

ONE = ["pow", 0.0, 0, 0]


def is_one(recipe: Sequence[Any]) -> bool:
    """Whether a recipe is the constant 1 (the party takes no part in the sum)."""
    return recipe[0] == "pow" and float(recipe[1]) == 0.0 and recipe[2] == 0 and recipe[3] == 0


def _column_free(recipe: Sequence[Any]) -> bool:
    return recipe[0] == "pow" and recipe[2] == 0 and recipe[3] == 0


@dataclass
class Job:
    """The requests of one label vector along one path of feature parties."""

    id: str
    path: list[str]
    tree: list[Any]

    def to_dict(self, part: int) -> dict[str, Any]:
        """As sent to the first party of the path; ``part`` is the vector's index among the message's parts."""
        return {"id": self.id, "path": self.path, "tree": self.tree, "v": part}


def plan(terms: Sequence[tuple[Sequence[Sequence[Any]], Any]], parties: Sequence[str], prefix: str
         ) -> tuple[list[Job], dict[str, list[Any]], list[Any]]:
    """Group the terms of one label vector by path, and build each path's tree.

    Parameters
    ----------
    terms : sequence of (recipes, key)
        One recipe per feature party (in ``parties`` order) and the key the total is filed under.
    parties : sequence of str
        The feature parties, in the order of the recipes.
    prefix : str
        The id of the vector; jobs are ``prefix/0``, ``prefix/1``, ...

    Returns
    -------
    jobs, keys, local
        The jobs; the keys of each leaf list's id, in leaf order; the keys of terms in which no party takes
        part (the label party sums those itself).
    """
    groups: dict[tuple[str, ...], list[tuple[list[Any], Any]]] = {}
    local: list[Any] = []
    for recipes, key in terms:
        involved = [k for k, r in enumerate(recipes) if not is_one(r)]
        involved.sort(key=lambda k: (not _column_free(recipes[k]), k))
        if not involved:
            local.append(key)
            continue
        groups.setdefault(tuple(parties[k] for k in involved), []).append(([list(recipes[k]) for k in involved], key))
    jobs: list[Job] = []
    keys: dict[str, list[Any]] = {}
    for i, (path, items) in enumerate(groups.items()):
        jid = f"{prefix}/{i}"
        jobs.append(Job(jid, list(path), _tree(items, jid, keys)))
    return jobs, keys, local


def _tree(items: list[tuple[list[Any], Any]], jid: str, keys: dict[str, list[Any]]) -> list[Any]:
    if len(items[0][0]) == 1:
        keys[jid] = [key for _, key in items]
        return [recipes[0] for recipes, _ in items]
    branches: dict[str, tuple[list[Any], list[tuple[list[Any], Any]]]] = {}
    for recipes, key in items:
        branches.setdefault(json.dumps(recipes[0]), (recipes[0], []))[1].append((recipes[1:], key))
    return [[recipe, _tree(sub, f"{jid}.{b}", keys)] for b, (recipe, sub) in enumerate(branches.values())]


def expectations(paths: Sequence[Sequence[str]]) -> dict[str, dict[int, list[str]]]:
    """For each party, the parties it receives a forward from at each hop (hop ``k``: from ``path[k-1]``)."""
    out: dict[str, dict[int, set[str]]] = {}
    for path in paths:
        for hop in range(1, len(path)):
            out.setdefault(path[hop], {}).setdefault(hop, set()).add(path[hop - 1])
    return {party: {hop: sorted(senders) for hop, senders in hops.items()} for party, hops in out.items()}


def scaled(values: np.ndarray) -> tuple[np.ndarray, int]:
    """``values / 2^e`` with the smallest ``e >= 0`` that brings them within [-1, 1], and ``e``.

    In a chain the product of several parties' recipes must stay within the headroom of the encrypted sums
    (:data:`fedx.he.vectors.CHAIN_BOUND`), so each party scales its recipe and says by how much.
    """
    top = float(np.max(np.abs(values))) if values.size else 0.0
    e = max(0, int(np.ceil(np.log2(top)))) if top > 0 else 0
    return (values / 2.0 ** e if e else values), e


def _cells(c: int, n_u: int, n_v: int, n: int, binary_u: bool, binary_v: bool) -> list[tuple[str, str, int]]:
    cells = [("!= 0", "!= 0", c)]
    if binary_v:
        cells.append(("!= 0", "= 0", n_u - c))
    if binary_u:
        cells.append(("= 0", "!= 0", n_v - c))
    if binary_u and binary_v:
        cells.append(("= 0", "= 0", n - n_u - n_v + c))
    return cells


def check_cells(party: str, u: str, v: str, c: int, n_u: int, n_v: int, n: int, binary_u: bool, binary_v: bool,
                min_cohort: int) -> int | None:
    """Refuse a pair of columns whose joint support has a cell of 1 to ``min_cohort - 1`` rows.

    A sum over the rows where both columns are nonzero enters X'WX (a cross block between two parties, or
    a block of one); for 0/1 columns the sums over the complementary cells follow from it and the blocks
    of each column alone. A cell of fewer than ``min_cohort`` rows (but not empty) would single those rows
    out, so it refuses the run.

    Parameters
    ----------
    party : str
        The party that checks (named in the error).
    u, v : str
        The two columns, named ``party:column``.
    c : int
        Rows with both nonzero; ``n_u``, ``n_v`` rows with each nonzero; ``n`` the shared rows.
    binary_u, binary_v : bool
        Whether each column is 0/1.

    Returns
    -------
    int or None
        The smallest nonempty cell.

    Raises
    ------
    PolicyError
        Naming both columns, the cell and its size.
    """
    smallest = None
    for state_u, state_v, count in _cells(int(c), int(n_u), int(n_v), int(n), binary_u, binary_v):
        if count < 0:
            raise PolicyError(f"party {party}: inconsistent support counts for {u!r} and {v!r} ({count} rows where "
                              f"{u!r} {state_u} and {v!r} {state_v})")
        if 0 < count < min_cohort:
            raise PolicyError(f"party {party}: the rows where {u!r} {state_u} and {v!r} {state_v} are {count} of the "
                              f"{n} shared rows, fewer than "
                              f"min_cohort = {min_cohort}; the sums of X'WX over them would single out those rows. "
                              f"Merge a level into another or drop a column")
        if count > 0:
            smallest = count if smallest is None else min(smallest, count)
    return smallest


def check_pairs(party: str, X: np.ndarray, names: Sequence[str], min_cohort: int) -> None:
    """:func:`check_cells` for every pair of one party's own columns (the blocks of X'WX it alone holds)."""
    nz = X != 0
    counts = nz.sum(axis=0)
    binary = np.all((X == 0) | (X == 1), axis=0)
    both = nz.T.astype(np.int64) @ nz.astype(np.int64)
    n = X.shape[0]
    for a in range(X.shape[1]):
        for b in range(a + 1, X.shape[1]):
            check_cells(party, f"{party}:{names[a]}", f"{party}:{names[b]}", int(both[a, b]), int(counts[a]),
                        int(counts[b]), n, bool(binary[a]), bool(binary[b]), min_cohort)


def positions_by_party(offsets: Mapping[str, int], sizes: Mapping[str, int]) -> dict[int, tuple[str, int]]:
    """Global design column -> (party, 1-based column of that party)."""
    out = {}
    for party, start in offsets.items():
        for l in range(1, sizes[party] + 1):
            out[start + l - 1] = (party, l)
    return out
