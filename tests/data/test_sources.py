"""load_source: synthetic generators with validated params, files relative to the config's folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fedx.data import SYNTHETIC_SOURCES, load_source
from fedx.data.synthetic import DEFAULT_INSURERS
from fedx.errors import ConfigError, DataError


def test_synthetic_sources_pass_params_and_seed() -> None:
    assert SYNTHETIC_SOURCES == ("synthetic/transactions", "synthetic/policies")
    tx = load_source("synthetic/transactions", params={"sizes": [3000, 2000, 1500, 1000, 800], "n_days": 45}, seed=2)
    assert len(tx) == 8300 and tx["day"].max() <= 44
    pol = load_source("synthetic/policies", params={"insurers": [{"name": "solo", "n_policies": 300}]}, seed=2)
    assert len(pol) == 300 and set(pol["insurer"]) == {"solo"}
    pd.testing.assert_frame_equal(pol, load_source("synthetic/policies", params={
        "insurers": [{"name": "solo", "n_policies": 300}]}, seed=2))
    assert not pol.equals(load_source("synthetic/policies", params={"insurers": [
        {"name": "solo", "n_policies": 300}]}, seed=3))
    both = load_source("synthetic/policies", params={"insurers": [DEFAULT_INSURERS[0], {"name": "b", "n_policies": 10}],
                                                     "sizes": [20, 10]})
    assert both["insurer"].value_counts().to_dict() == {"insurer_a": 20, "b": 10}


@pytest.mark.parametrize("source, params, message", [
    ("synthetic/transactions", {"n_day": 90},
     r"params of synthetic/transactions: unknown key\(s\) 'n_day'; valid keys: banks, sizes, n_days, n_terminals"),
    ("synthetic/policies", {"seed": 3}, r"unknown key\(s\) 'seed'"),
    ("synthetic/policies", {"insurers": [{"name": "x", "n_policy": 3}]},
     r"params.insurers\[0\]: unknown key\(s\) 'n_policy'"),
    ("synthetic/policies", {"insurers": [{"n_policies": 3}]}, r"params.insurers\[0\]: .*name"),
    ("synthetic/policies", {"insurers": "all"}, r"params.insurers: expected a list"),
    ("synthetic/claims", None, r"unknown synthetic source 'synthetic/claims'; expected one of"),
    ("data.csv", {"n_days": 3}, r"only synthetic sources take parameters"),
])
def test_bad_sources_and_params(source: str, params: dict | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_source(source, params=params)


def test_paths_are_relative_to_base_dir(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    pd.DataFrame({"a": [1, 2]}).to_csv(tmp_path / "site" / "t.csv", index=False)
    assert list(load_source("site/t.csv", base_dir=tmp_path)["a"]) == [1, 2]
    assert list(load_source(str(tmp_path / "site" / "t.csv"), base_dir=Path("/nowhere"))["a"]) == [1, 2]
    with pytest.raises(DataError, match="data file not found: .*site/missing.csv"):
        load_source("site/missing.csv", base_dir=tmp_path)


def test_data_package_imports_no_torch_flower_or_tenseal() -> None:
    code = ("import sys, fedx.data, fedx.data.synthetic; "
            "print(sorted(m for m in ('torch', 'flwr', 'tenseal') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
