"""The plan: config validation, clear errors for bad queries, the stage format, and local vectors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from stats_support import pooled_frame, split

from fedx.analytics import StatsPlan, stage_digest
from fedx.config import StatsConfig, config_from_dict
from fedx.errors import ConfigError, DataError, FederationError, SchemaError
from fedx.privacy.policy import Policy

POOLED = pooled_frame()
NONE = Policy()


def plan_of(**stats: object) -> StatsPlan:
    return StatsPlan.from_config(StatsConfig(**stats))  # type: ignore[arg-type]


@pytest.mark.parametrize(("stats", "message"), [
    ({}, r"stats: asks for no statistic"),
    ({"correlation": ["x"]}, r"stats\.correlation: expected at least 2 columns"),
    ({"columns": ["x", "x"]}, r"stats\.columns: 'x' appears twice"),
    ({"crosstabs": [["a", "a"]]}, r"stats\.crosstabs\[0\]: expected two different columns"),
    ({"crosstabs": [["a", "b", "c"]]}, r"stats\.crosstabs\[0\]: expected a pair of columns"),
    ({"columns": ["x"], "group_bins": [0, 1]}, r"stats\.group_bins: bins need a group_by column"),
    ({"columns": ["x"], "group_by": "age", "group_bins": [3, 1]}, r"stats\.group_bins: expected at least 2 strictly"),
    ({"quantiles": {"x": [0.5]}, "quantile_range": {"y": [0, 1]}}, r"stats\.quantile_range\.y: no quantiles of y"),
    ({"quantiles": {"x": [0.5]}, "quantile_range": {"x": [1, 0]}}, r"stats\.quantile_range\.x: expected \[lo, hi\]"),
    ({"columns": ["x"], "bounds": {"x": [5]}}, r"stats\.bounds\.x: expected \[lo, hi\]"),
    ({"columns": ["x"], "levels": {"x": ["a"]}}, r"stats\.levels\.x: levels are only for columns used as categorical"),
    ({"frequencies": ["g"], "levels": {"g": []}}, r"stats\.levels\.g: expected at least one entry"),
    ({"histograms": {"x": [1, 1]}}, r"stats\.histograms\.x: expected at least 2 strictly increasing"),
])
def test_bad_queries_are_config_errors_naming_the_key(stats: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_of(**stats)
    # ... and they are caught when the config loads, before anything runs.
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"name": "s", "data": {"source": "x.csv"}, "stats": stats})


def test_the_new_stats_keys_load_from_yaml_dicts() -> None:
    cfg = config_from_dict({"name": "s", "task": "fraud", "data": {"source": "x.csv", "target": "y"},
                            "stats": {"columns": ["age"], "group_by": "age", "group_bins": [20, 40, 60],
                                      "bounds": {"age": [0, 120]}, "quantile_range": {}, "frequencies": ["cp"],
                                      "levels": {"cp": ["a", "b"]}}})
    assert cfg.stats is not None
    plan = StatsPlan.from_config(cfg.stats, seed=cfg.seed)
    assert plan.group_bins == (20.0, 40.0, 60.0) and plan.seed == 7 and plan.needs_levels() == []


@pytest.mark.parametrize(("stats", "message"), [
    ({"columns": ["nope"]}, r"inst1: column 'nope' does not exist \(stats\.columns asks for it\); the table has: x, y"),
    ({"columns": ["note"]}, r"inst1: column 'note' must be numeric for stats\.columns, found text such as '[ab]'"),
    ({"histograms": {"region": [0, 1]}}, r"column 'region' must be numeric for stats\.histograms\.region"),
    ({"correlation": ["x", "product"]}, r"column 'product' must be numeric for stats\.correlation"),
    ({"crosstabs": [["region", "x"]]}, r"inst1: column 'x' is numeric with \d+ distinct values; stats\.crosstabs\[0\] "
                                       r"needs a categorical column .* stats\.group_bins"),
    ({"columns": ["x"], "group_by": "claim"}, r"column 'claim' is numeric with \d+ distinct values; stats\.group_by"),
    ({"columns": ["x"], "group_by": "note", "group_bins": [0, 1]}, r"'note' must be numeric for stats\.group_by with"),
    ({"frequencies": ["region"], "levels": {"region": ["north", "south"]}},
     r"inst1: column 'region' holds levels \['east', 'west'\] outside the known levels"),
])
def test_bad_columns_are_schema_errors_naming_the_column(stats: dict, message: str) -> None:
    plan = plan_of(**stats)
    frames = split(POOLED)
    with pytest.raises(SchemaError, match=message):
        plan.check_columns(frames["inst1"], "inst1")


def test_integer_codes_can_be_categorical() -> None:
    frame = pd.DataFrame({"ca": [0.0, 1.0, np.nan, 3.0, 1.0], "sex": ["m", "f", "f", "m", "m"]})
    plan = plan_of(crosstabs=[["ca", "sex"]])
    plan.check_columns(frame, "a")
    assert plan.local_levels(frame) == {"ca": ["0", "1", "3"], "sex": ["f", "m"]}
    as_int = pd.DataFrame({"ca": [2, 2], "sex": ["f", "m"]})
    assert plan.local_levels(as_int)["ca"] == ["2"]  # the same label with or without gaps


def test_levels_are_discovered_before_the_first_stage() -> None:
    plan = plan_of(frequencies=["region"], group_by="product")
    assert plan.needs_levels() == ["region", "product"]
    with pytest.raises(ConfigError, match=r"the levels of \['region', 'product'\] are not known yet"):
        plan.first_stage()
    with pytest.raises(ConfigError, match=r"no levels given for \['product'\]"):
        plan.with_levels({"region": ["north"]})
    full = plan.with_levels({"region": ["east", "north"], "product": ["basic"]})
    assert full.first_stage()["levels"] == {"region": ["east", "north"], "product": ["basic"]}


def test_the_stage_is_json_and_an_empty_institution_sends_zeros() -> None:
    plan = plan_of(columns=["x"], histograms={"age": [18, 50, 89]}, quantiles={"x": [0.5]},
                   quantile_range={"x": [0, 100]}, levels={"product": ["basic", "plus", "premium"]},
                   crosstabs=[["product", "flag"]], correlation=["x", "y"]).with_levels({"flag": ["False", "True"]})
    stage = plan.first_stage()
    assert json.loads(json.dumps(stage)) == stage
    assert set(stage) == {"version", "step", "seed", "levels", "searches", "released"}
    assert stage["searches"][0]["lo"] == 0.0 and stage["searches"][0]["rank"] is None
    sizes = [s.size for s in plan.layout(stage)]
    empty = plan.local_vector(POOLED.iloc[:0], stage, NONE)
    assert empty.shape == (sum(sizes),) and not empty.any()
    full = plan.local_vector(POOLED, stage, NONE)
    assert full.dtype == np.float64 and full.shape == empty.shape
    assert stage_digest(stage) == stage_digest(json.loads(json.dumps(stage)))


def test_release_refuses_malformed_sums_and_stages() -> None:
    plan = plan_of(columns=["x"])
    stage = plan.first_stage()
    total = plan.local_vector(POOLED, stage, NONE)
    with pytest.raises(DataError, match=r"has shape \(2,\); this stage's layout needs \(4,\)"):
        plan.release(total[:2], stage, NONE)
    with pytest.raises(DataError, match="NaN or infinite"):
        plan.release(np.full_like(total, np.nan), stage, NONE)
    bad = total.copy()
    bad[1] += 0.5  # a count that is not a whole number: the encrypted sum lost precision
    with pytest.raises(DataError, match="not whole numbers"):
        plan.release(bad, stage, NONE)
    with pytest.raises(FederationError, match="stage version 2 is not 1"):
        plan.release(total, {**stage, "version": 2}, NONE)
    with pytest.raises(FederationError, match="malformed stage"):
        plan.local_vector(POOLED, {"version": 1}, NONE)
