"""stats.json, stats.md, PNG histograms and the terminal tables."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from stats_support import pooled_frame, run, split

from fedx.analytics import print_stats, write_stats
from fedx.analytics.report import SCHEMA_VERSION

RESULT = run(split(pooled_frame()), min_cohort=20, columns=["x", "claim"], histograms={"age": [18, 30, 50, 70, 89]},
             quantiles={"x": [0.5, 0.9]}, correlation=["x", "y"], crosstabs=[["region", "product"]],
             frequencies=["product"], group_by="product")


def test_stats_json_has_the_documented_keys_and_no_nan(tmp_path: Path) -> None:
    paths = write_stats(RESULT, tmp_path)
    assert [p.name for p in paths] == ["stats.json", "stats.md", "hist_age.png"]
    data = json.loads((tmp_path / "stats.json").read_text())
    assert {"columns", "histograms", "quantiles", "correlation", "crosstabs", "frequencies", "groups", "suppressed",
            "privacy", "institutions"} <= set(data)
    assert set(data["columns"]["x"]) == {"count", "mean", "variance", "std"}
    assert set(data["histograms"]["age"]) == {"edges", "counts", "underflow", "overflow"}
    assert set(data["quantiles"]["x"]) == {"0.5", "0.9", "precision"}
    assert set(data["correlation"]) == {"columns", "matrix", "covariance", "n"}
    assert data["privacy"] == {"min_cohort": 20, "local_min_cohort": 1, "noise": "none"}
    assert "crosstabs.region x product[west, premium]" in data["suppressed"]
    assert data.pop("schema_version") == SCHEMA_VERSION == 1
    assert data == json.loads(json.dumps(RESULT))
    counts = [data["rows"], data["columns"]["x"]["count"], data["correlation"]["n"],
              *[c for c in data["histograms"]["age"]["counts"] if c is not None]]
    assert counts and all(type(c) is int for c in counts), counts   # JSON integers, not 1234.0
    assert (tmp_path / "hist_age.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_markdown_and_terminal_tables_show_each_statistic_and_the_suppressed_cells(tmp_path: Path) -> None:
    write_stats(RESULT, tmp_path, plots=False)
    assert not (tmp_path / "hist_age.png").exists()
    md = (tmp_path / "stats.md").read_text()
    for heading in ("## Institutions", "## Columns", "## Quantiles (numpy 'inverted_cdf')", "## Histogram of age",
                    "## Frequencies of product", "## Crosstab region x product", "## Correlation (complete cases",
                    "## Columns (product = premium)", "## Suppressed", "## Privacy"):
        assert heading in md
    assert f"| x | {RESULT['columns']['x']['count']} |" in md
    assert "| west | " in md and "–" in md
    console = Console(record=True, width=140)
    print_stats(RESULT, console)
    text = console.export_text()
    assert "Histogram of age" in text and "crosstabs.region x product[west, premium]" in text
