"""The horizontal driver against the same engine on the pooled rows, in plaintext and under fedx.he."""

from __future__ import annotations

import numpy as np
import pytest
from trees_support import NAMES6, classification, keys, split_rows

from fedx.errors import HEError
from fedx.trees import (
    BinEdges,
    EncryptedSum,
    FitReport,
    GBDTParams,
    HorizontalParty,
    federated_edges,
    fit_horizontal,
    fit_pooled,
)

PARAMS = GBDTParams(trees=12, max_depth=4, learning_rate=0.3, reg_lambda=1.0, min_child_weight=1.0, max_bins=32)


def _parties(X: np.ndarray, y: np.ndarray, params: GBDTParams) -> dict[str, HorizontalParty]:
    return {f"inst{i}": HorizontalParty(f"inst{i}", X[r], y[r], params) for i, r in enumerate(split_rows(len(y)))}


def _assert_same_trees(a, b, tol: float) -> None:
    assert len(a.trees) == len(b.trees)
    for k, (s, t) in enumerate(zip(a.trees, b.trees)):
        assert np.array_equal(s.feature, t.feature) and np.array_equal(s.bin, t.bin), f"tree {k} differs"
        assert np.array_equal(s.default_left[s.feature >= 0], t.default_left[t.feature >= 0]), f"tree {k}"
        assert np.max(np.abs(s.value - t.value)) <= tol, f"tree {k}: leaf values differ"


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, BinEdges]:
    X, y = classification(n=3000, missing=0.05)
    return X, y, BinEdges.from_quantiles(X, 32)


def test_federated_plaintext_equals_pooled_tree_by_tree(data) -> None:
    X, y, edges = data
    pooled = fit_pooled(X, y, PARAMS, NAMES6, edges)
    federated = fit_horizontal(_parties(X, y, PARAMS), PARAMS, NAMES6, edges=edges)
    _assert_same_trees(federated, pooled, tol=1e-12)
    assert federated.base_margin == pooled.base_margin
    assert sum(len(t.feature) for t in pooled.trees) > 12 * 7  # real trees, not stumps


def test_the_pooled_sketch_and_the_federated_sketch_give_the_same_edges(data) -> None:
    X, y, _ = data
    fed, stages = federated_edges(_parties(X, y, PARAMS), 32)
    pooled, _ = federated_edges({"all": HorizontalParty("all", X, y, PARAMS)}, 32)
    assert stages >= 2
    assert all(np.array_equal(a, b) for a, b in zip(fed.cuts, pooled.cuts))


@pytest.mark.parametrize("preset", ["bfv-compact", "ckks"])
def test_encrypted_sums_grow_the_plaintext_trees(data, preset: str) -> None:
    X, y, edges = data
    params = GBDTParams(trees=3, max_depth=3, learning_rate=0.3, max_bins=32)
    plain = fit_horizontal(_parties(X, y, params), params, NAMES6, edges=edges)
    combine = EncryptedSum(keys(preset), params.quantum_bits)
    report = FitReport()
    secure = fit_horizontal(_parties(X, y, params), params, NAMES6, combine=combine, edges=edges, report=report)
    # every summed vector is on the 2^-20 grid and the HE error stays below a quarter step: exact sums
    _assert_same_trees(secure, plain, tol=0.0)
    assert combine.max_error < 2.0**-22 and combine.bytes_up > 0
    assert report.rounds == 1 + sum(report.levels_per_tree)


def test_the_sketch_under_bfv_compact_gives_the_plaintext_edges() -> None:
    X, y = classification(n=1500)
    X = X[:, [0, 3, 5]]
    params = GBDTParams(trees=1, max_bins=16)
    plain, _ = federated_edges(_parties(X, y, params), 16)
    secure, _ = federated_edges(_parties(X, y, params), 16, EncryptedSum(keys("bfv-compact"), params.quantum_bits))
    assert all(np.array_equal(a, b) for a, b in zip(secure.cuts, plain.cuts))
    assert [len(c) for c in plain.cuts] == [15, 4, 15]     # x3 takes 0..4: a cut at 1, 2, 3 and 4


def test_an_off_grid_ckks_sum_is_refused_not_rounded() -> None:
    combine = EncryptedSum(keys("ckks"), quantum_bits=24)
    v = np.full(8, 1e7 + 2.0**-25)
    with pytest.raises(HEError, match="grid"):
        combine([v, v, v])
    assert np.allclose(combine([v, v], exact=False), 2 * v)


def test_model_routes_raw_rows_as_the_institutions_routed_their_bins(data) -> None:
    X, y, edges = data
    parties = _parties(X, y, PARAMS)
    model = fit_horizontal(parties, PARAMS, NAMES6, edges=edges)
    for p in parties.values():
        np.testing.assert_allclose(model.predict_raw(p.X), p.margin, rtol=0, atol=1e-12)


def test_row_and_column_sampling(data) -> None:
    X, y, edges = data
    params = GBDTParams(trees=6, max_depth=3, learning_rate=0.3, max_bins=32, subsample=0.5, colsample=0.5, seed=4)
    model = fit_horizontal(_parties(X, y, params), params, NAMES6, edges=edges)
    again = fit_horizontal(_parties(X, y, params), params, NAMES6, edges=edges)
    _assert_same_trees(model, again, tol=0.0)                       # seeded: reproducible
    full = fit_horizontal(_parties(X, y, PARAMS), PARAMS, NAMES6, edges=edges)
    assert any(not np.array_equal(a.value, b.value) for a, b in zip(model.trees, full.trees))
    for t in model.trees:                                          # at most 3 of the 6 features per tree
        assert len(set(t.feature[t.feature >= 0].tolist())) <= 3


def test_ties_go_to_the_lowest_feature() -> None:
    X, y = classification(n=2000)
    X = np.column_stack([X[:, 0], X[:, 0], X[:, 1]])               # features 0 and 1 are identical
    params = GBDTParams(trees=3, max_depth=3, max_bins=16)
    model = fit_pooled(X, y, params, ["a", "b", "c"], BinEdges.from_quantiles(X, 16))
    used = np.concatenate([t.feature[t.feature >= 0] for t in model.trees])
    assert 0 in used and 1 not in used


def test_missing_values_learn_their_direction() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=4000)
    y = (x > 0.5).astype(np.float64)
    y[:400] = 1.0
    x[:400] = np.nan                                                # the missing rows are all positive
    X = x[:, None]
    model = fit_pooled(X, y, GBDTParams(trees=5, max_depth=2, max_bins=16), ["x"], BinEdges.from_quantiles(X, 16))
    p = model.predict_proba(np.array([[np.nan], [-1.0], [2.0]]))[:, 1]
    assert p[0] > 0.8 and p[1] < 0.2 and p[2] > 0.8


def test_sketch_edge_cases_split_the_rows_as_the_pooled_rule() -> None:
    """A constant, an all-missing, a two-value and a one-outlier column: 0, 0, 1 and 1 cuts, as on pooled rows."""
    rng = np.random.default_rng(4)
    n = 900
    X = np.column_stack([np.full(n, 3.0), np.full(n, np.nan), rng.integers(0, 2, n) * 5.0 - 1e6,
                         np.r_[np.zeros(n - 1), 7.0], np.where(rng.random(n) < 0.5, np.nan, rng.integers(0, 9, n))])
    y = (rng.random(n) < 0.3).astype(np.float64)
    params = GBDTParams(trees=1, max_bins=16)
    edges, _ = federated_edges(_parties(X, y, params), 16)
    pooled = BinEdges.from_quantiles(X, 16)
    assert [len(c) for c in edges.cuts] == [len(c) for c in pooled.cuts] == [0, 0, 1, 1, 8]
    assert np.array_equal(edges.bin(X), pooled.bin(X))
    assert edges.cuts[3][0] <= 7.0 and edges.bin(X)[-1, 3] == 1 and not edges.bin(X)[:-1, 3].any()
