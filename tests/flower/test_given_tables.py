"""fedx.run(..., tables=...): each simulated institution's table given in memory, not read from data.source."""

from __future__ import annotations

import pandas as pd
import pytest

from fedx.config import config_from_dict
from fedx.errors import ConfigError
from fedx.runner import _checked_tables, _given_tables, _simulated_sites


def _cfg(tmp_path):
    return config_from_dict({"name": "t", "task": "disease_risk", "model": {"kind": "logistic"},
                             "data": {"target": "label"}, "security": {"encryption": "none"}}, base_dir=tmp_path)


def test_each_institution_gets_its_own_table_in_a_file_of_its_own(tmp_path) -> None:
    a = pd.DataFrame({"x": [1.0, 2.0, 3.0], "label": [0, 1, 0]})
    b = pd.DataFrame({"x": [4.0, 5.0], "label": [1, 1]})
    cfg = _cfg(tmp_path)
    cfg, given = _given_tables(cfg, {"bank a": a, "b": b})
    tables = _checked_tables(cfg, given, "binary")
    with _simulated_sites(cfg, tmp_path, tables, None) as sites:
        assert set(sites.tables) == {"bank a", "b"}
        files = {s.name: s.data for s in sites.specs}
        assert files["bank a"] != files["b"]
        pd.testing.assert_frame_equal(pd.read_parquet(files["bank a"]), a)
        pd.testing.assert_frame_equal(pd.read_parquet(files["b"]), b)
        kept = list(files.values())
    assert not any(p.exists() for p in kept), "the per-institution files are removed after the run"


@pytest.mark.parametrize("tables, match", [
    ({}, "at least one"),
    ({"a": pd.DataFrame()}, "non-empty pandas DataFrame"),
    ({"a": [1, 2]}, "non-empty pandas DataFrame"),
    ({"": pd.DataFrame({"x": [1]})}, "non-empty strings"),
])
def test_bad_tables_are_refused(tmp_path, tables, match) -> None:
    with pytest.raises(ConfigError, match=match):
        cfg, given = _given_tables(_cfg(tmp_path), tables)
        _checked_tables(cfg, given, "binary")
