"""Server-side update checks: each bad update gets a reason, good ones pass."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from fedx.aggregators.validation import check_blob_header, check_plain_update

SHAPES = [(3, 2), (2,)]


def good() -> list[np.ndarray]:
    return [np.ones((3, 2), np.float32) * 0.1, np.zeros(2, np.float32)]


def test_plain_update_checks() -> None:
    assert check_plain_update(good(), SHAPES) is None
    assert check_plain_update(good()[:1], SHAPES) == "update has 1 arrays, the model has 2"
    bad = good()
    bad[0] = np.ones((2, 3), np.float32)
    assert check_plain_update(bad, SHAPES) == "array 0 has shape (2, 3), expected (3, 2)"
    bad = good()
    bad[1] = np.array([np.nan, 0], np.float32)
    assert check_plain_update(bad, SHAPES) == "array 1 holds NaN or Inf"
    bad = good()
    bad[1] = np.array([np.inf, 0], np.float32)
    assert check_plain_update(bad, SHAPES) == "array 1 holds NaN or Inf"
    bad = good()
    bad[1] = np.array([1, 2], np.int64)
    assert "dtype int64" in check_plain_update(bad, SHAPES)
    big = [a * 1e6 for a in good()]
    assert "exceeds federation.max_update_norm" in check_plain_update(big, SHAPES, max_norm=10.0)
    assert check_plain_update(big, SHAPES) is None


def test_blob_header_checks() -> None:
    expected = {"preset": "bfv-compact", "params": "p" * 64, "fingerprint": "f" * 64, "shapes": SHAPES, "kind": "mean"}
    hdr = SimpleNamespace(stage="update", preset="bfv-compact", params="p" * 64, fingerprint="f" * 64,
                          shapes=((3, 2), (2,)), kind="mean")
    assert check_blob_header(hdr, expected) is None
    for change, words in [({"stage": "aggregate"}, "expected one client's update"),
                          ({"preset": "ckks"}, "under preset 'ckks'"),
                          ({"params": "q" * 64}, "under preset"),
                          ({"fingerprint": "0" * 64}, "wrong or foreign keys"),
                          ({"shapes": ((2, 3), (2,))}, "the model has"),
                          ({"kind": "sum"}, "expected 'mean'")]:
        bad = SimpleNamespace(**{**vars(hdr), **change})
        assert words in check_blob_header(bad, expected)
