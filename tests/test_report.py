"""result.json and the CSV tables that fedx.report writes from a run's results."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from fedx.report import (
    COUNT_KEYS,
    SCHEMA_VERSION,
    RunResult,
    comparison_table,
    write_result,
)


def _metrics(n: float, auc: float) -> dict:
    # As they come back from Flower's MetricRecord: every value a float, numpy scalars among them.
    return {"n": float(n), "base_rate": 0.25, "roc_auc": np.float64(auc), "ece": float("nan")}


def _result(out: Path) -> RunResult:
    per = {"north": _metrics(180, 0.83), "south": _metrics(100, 1.0)}
    baselines = {"centralized": _metrics(280, 0.86), "local": {"north": _metrics(180, 0.8)}}
    history = [{"round": r, "metrics": _metrics(280, 0.8 + r / 100), "per_institution": per,
                "bytes_up": float(1000 * r), "bytes_down": 2000.0 * r, "seconds": 0.5, "clients": ["north", "south"]}
               for r in (1, 2)]
    return RunResult(metrics=_metrics(280, 0.85), history=history, out_dir=out, per_institution=per,
                     baselines=baselines, comparison=comparison_table(per, baselines),
                     model={"nobs": 280.0, "iterations": 7, "deviance": 300.0},
                     institutions={"north": {"n_train": 720.0, "n_test": 180, "n_rows": 900.0}})


def test_result_json_has_a_schema_version_and_writes_counts_as_integers(tmp_path: Path) -> None:
    path = write_result(_result(tmp_path), plots=False)
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == SCHEMA_VERSION == 1
    counts = [doc["metrics"]["n"], doc["per_institution"]["south"]["n"], doc["baselines"]["centralized"]["n"],
              doc["baselines"]["local"]["north"]["n"], doc["comparison"]["north"]["local"]["n"],
              doc["history"][1]["metrics"]["n"], doc["history"][1]["per_institution"]["north"]["n"],
              doc["history"][1]["round"], doc["history"][1]["bytes_up"], doc["model"]["nobs"],
              doc["institutions"]["north"]["n_train"], doc["institutions"]["north"]["n_rows"]]
    assert all(type(c) is int for c in counts), counts
    assert doc["metrics"]["n"] == 280 and doc["history"][1]["bytes_up"] == 2000
    assert '"n": 280,' in path.read_text()              # not 280.0
    # Only the declared counts: a whole-valued metric stays a float, NaN becomes null.
    assert type(doc["per_institution"]["south"]["roc_auc"]) is float and doc["metrics"]["ece"] is None
    assert type(doc["model"]["deviance"]) is float and type(doc["history"][0]["seconds"]) is float
    assert {"n", "n_train", "nobs", "round", "bytes_up"} <= COUNT_KEYS and "roc_auc" not in COUNT_KEYS


def test_a_count_that_is_not_whole_is_written_as_it_is(tmp_path: Path) -> None:
    r = _result(tmp_path)
    r.metrics["n"] = 279.6                                 # e.g. a noisy count: never rounded into the report
    doc = json.loads(write_result(r, plots=False).read_text())
    assert doc["metrics"]["n"] == 279.6


def test_run_result_load_reads_back_what_was_written(tmp_path: Path) -> None:
    r = _result(tmp_path)
    write_result(r, plots=False)
    for where in (tmp_path, tmp_path / "result.json"):
        back = RunResult.load(where)
        assert back.out_dir == tmp_path
        assert back.metrics["n"] == 280 and back.metrics["roc_auc"] == 0.85 and back.metrics["ece"] is None
        assert back.per_institution["south"]["roc_auc"] == 1.0
        assert [h["round"] for h in back.history] == [1, 2]
        assert back.model["nobs"] == 280 and back.institutions["north"]["n_test"] == 180


def test_comparison_table_puts_local_federated_and_centralized_side_by_side() -> None:
    per = {"north": {"auc": 0.8}, "south": {"auc": 0.7}}
    table = comparison_table(per, {"local": {"north": {"auc": 0.6}, "east": {"auc": 0.5}}},
                             {"south": {"auc": 0.9}})
    assert list(table) == ["east", "north", "south"]
    assert table["north"] == {"local": {"auc": 0.6}, "federated": {"auc": 0.8}}
    assert table["south"] == {"federated": {"auc": 0.7}, "centralized": {"auc": 0.9}}
    assert table["east"] == {"local": {"auc": 0.5}}


def test_history_and_institutions_csv(tmp_path: Path) -> None:
    write_result(_result(tmp_path), plots=False)
    with (tmp_path / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["round"] for r in rows] == ["1", "2"]
    assert rows[1]["n"] == "280" and rows[1]["roc_auc"] == "0.82" and rows[1]["clients"] == "2"
    with (tmp_path / "institutions.csv").open() as fh:
        inst = [(r["institution"], r["model"], r["roc_auc"]) for r in csv.DictReader(fh)]
    assert inst == [("north", "local", "0.8"), ("north", "federated", "0.83"), ("south", "federated", "1")]
