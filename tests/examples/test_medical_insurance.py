"""The medical-insurance example, run with its configs as shipped (only the output folder is redirected).

- disease_warning.yaml: the federated early-warning model is as good as the pooled-data one.
- the pricing configs: the federated frequency and severity GLMs recover the generator's coefficients,
  and equal a plain statsmodels GLM on the pooled training policies (the independent oracle).
- the report scripts run on those results and write their tables and plots.

Each config runs once (module-scoped fixtures); the runs take about 35-60 s each on two cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats as scipy_stats

import fedx
from fedx.config import config_from_dict
from fedx.data.institutions import institution_tables
from fedx.data.local import local_split
from fedx.data.synthetic.policies import (
    TRUE_FREQUENCY_COEFFICIENTS,
    TRUE_SEVERITY_COEFFICIENTS,
)
from fedx.tasks import get_task

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "medical_insurance"
ENV = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runs folder, laid out as run.sh lays it out."""
    os.environ.update(FLWR_TELEMETRY_ENABLED="0", RAY_USAGE_STATS_ENABLED="0")
    return tmp_path_factory.mktemp("medical_insurance")


def _run(config: str, runs: Path) -> dict:
    cfg = fedx.load_config(EXAMPLE / f"{config}.yaml")
    fedx.run(cfg, runs / config, progress=False)
    return json.loads((runs / config / "result.json").read_text())


@pytest.fixture(scope="module")
def disease(runs: Path) -> dict:
    return _run("disease_warning", runs)


@pytest.fixture(scope="module")
def frequency(runs: Path) -> dict:
    return _run("pricing_frequency", runs)


@pytest.fixture(scope="module")
def severity(runs: Path) -> dict:
    return _run("pricing_severity", runs)


# --------------------------------------------------------------------------- disease warning


def test_disease_warning_federated_is_as_good_as_pooled(disease: dict) -> None:
    fed, pooled = disease["metrics"], disease["baselines"]["centralized"]
    print(f"\n{'hospital':<14} {'n':>4} {'model':<10} {'roc_auc':>8} {'accuracy':>8} {'brier':>7}")
    for name, by_model in disease["comparison"].items():
        for model, m in by_model.items():
            print(f"{name:<14} {int(m['n']):>4} {model:<10} {m['roc_auc']:>8.4f} {m['accuracy']:>8.4f} "
                  f"{m['brier']:>7.4f}")
    for model, m in (("federated", fed), ("pooled", pooled), ("local (all)", disease["baselines"]["local_combined"])):
        print(f"{'all':<14} {int(m['n']):>4} {model:<10} {m['roc_auc']:>8.4f} {m['accuracy']:>8.4f} {m['brier']:>7.4f}")
    assert disease["config"]["federation"]["aggregator"] == "newton"
    assert disease["privacy"]["encryption"] == "ckks"
    assert set(disease["per_institution"]) == {"Cleveland", "Hungary", "Switzerland", "VA Long Beach"}
    assert fed["n"] == 276 and pooled["n"] == 276
    assert fed["roc_auc"] >= pooled["roc_auc"] - 0.02
    assert fed["accuracy"] >= 0.75
    assert disease["model"]["converged"]


# --------------------------------------------------------------------------- pricing


def _pooled_training_rows(doc: dict) -> pd.DataFrame:
    """Every insurer's training split, regenerated from the run's config, in one table."""
    cfg = config_from_dict(doc["config"], base_dir=EXAMPLE)
    task = get_task(cfg.task)
    parts = [local_split(df, cfg, name, task)[0] for name, df in institution_tables(cfg).items()]
    return pd.concat(parts, ignore_index=True)


def _statsmodels_fit(doc: dict, rows: pd.DataFrame):
    """The oracle: statsmodels' GLM with the same treatment coding, on the pooled training rows."""
    d = doc["config"]["data"]
    names = [c["name"] for c in doc["model"]["coefficients"]]
    cols = []
    for name in names:
        if name == "Intercept":
            cols.append(np.ones(len(rows)))
        elif "[T." in name:
            factor, level = name[:-1].split("[T.", 1)
            cols.append((rows[factor] == level).to_numpy(dtype=float))
        else:
            cols.append(rows[name].to_numpy(dtype=float))
    X = np.column_stack(cols)
    y = rows[d["target"]].to_numpy(dtype=float)
    if doc["model"]["family"] == "poisson":
        model = sm.GLM(y, X, family=sm.families.Poisson(), offset=np.log(rows[d["exposure"]].to_numpy(dtype=float)))
    else:
        model = sm.GLM(y, X, family=sm.families.Gamma(link=sm.families.links.Log()),
                       var_weights=rows[d["weight"]].to_numpy(dtype=float))
    return names, model.fit(tol=1e-12, maxiter=100)


def _check_pricing_fit(doc: dict, truth: dict[str, float], family: str) -> None:
    assert doc["model"]["family"] == family and doc["model"]["converged"]
    assert doc["privacy"]["encryption"] == "ckks"
    assert len(doc["per_institution"]) >= 5
    rows = _pooled_training_rows(doc)
    names, oracle = _statsmodels_fit(doc, rows)
    est = np.array([c["estimate"] for c in doc["model"]["coefficients"]])
    se = np.array([c["std_error"] for c in doc["model"]["coefficients"]])
    true = np.array([truth["intercept" if n == "Intercept" else n] for n in names])
    assert set(names) == {"Intercept", *(k for k in truth if k != "intercept")}
    print(f"\n{family}: {len(rows)} pooled training rows")
    for n, e, s, t, o in zip(names, est, se, true, oracle.params):
        print(f"  {n:<20} federated {e:+.5f} (se {s:.5f})  statsmodels {o:+.5f}  true {t:+.4f}  z {(e - t) / s:+.2f}")
    # Equal to the pooled fit: coefficients, standard errors, deviance.
    assert doc["model"]["nobs"] == len(rows)
    np.testing.assert_allclose(est, oracle.params, rtol=1e-4, atol=1e-4 * se.min())
    np.testing.assert_allclose(se, oracle.bse, rtol=1e-4)
    np.testing.assert_allclose(doc["model"]["deviance"], oracle.deviance, rtol=1e-4)
    np.testing.assert_allclose(doc["model"]["null_deviance"], oracle.null_deviance, rtol=1e-4)
    # The truth: each coefficient within 4 standard errors, and jointly plausible (Wald test).
    assert np.all(np.abs(est - true) < 4 * se), (est - true) / se
    diff = oracle.params - true
    wald = float(diff @ np.linalg.solve(oracle.cov_params(), diff))
    assert scipy_stats.chi2.sf(wald, len(true)) > 1e-3, wald
    # The pooled-data baseline of the run scores the same as the federated fit.
    for key in ("deviance", "gini"):
        np.testing.assert_allclose(doc["metrics"][key], doc["baselines"]["centralized"][key], rtol=1e-5)


def test_frequency_glm_equals_the_pooled_fit_and_recovers_the_truth(frequency: dict, runs: Path) -> None:
    _check_pricing_fit(frequency, TRUE_FREQUENCY_COEFFICIENTS, "poisson")
    # Each institution's saved model carries the same GLM results object as result.json.
    name = next(iter(frequency["per_institution"]))
    res = fedx.load_model(runs / "pricing_frequency" / "institutions" / name / "model.pt").glm_results
    assert res.to_dict() == {key: frequency["model"][key] for key in res.to_dict()}
    assert res.params["Intercept"] == frequency["model"]["coefficients"][0]["estimate"]
    assert res.conf_int(0.1).shape == (len(frequency["model"]["coefficients"]), 2)


def test_severity_glm_equals_the_pooled_fit_and_recovers_the_truth(severity: dict) -> None:
    _check_pricing_fit(severity, TRUE_SEVERITY_COEFFICIENTS, "gamma")
    assert abs(severity["model"]["dispersion"] - 0.5) < 0.05   # 1 / the generator's Gamma shape of 2


# --------------------------------------------------------------------------- reports


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(EXAMPLE / name), *args], check=False, capture_output=True, text=True, env=ENV,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _readme_copy(tmp: Path) -> Path:
    readme = tmp / "README.md"
    shutil.copy(EXAMPLE / "README.md", readme)
    return readme


def test_pricing_report_writes_tables_and_lorenz_plot(runs: Path, frequency: dict, severity: dict,
                                                      tmp_path: Path) -> None:
    readme = _readme_copy(tmp_path)
    _script("pricing_report.py", "--runs", str(runs), "--readme", str(readme), "--figures", str(tmp_path / "fig"))
    png = (tmp_path / "fig" / "pricing_lorenz.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    md = (runs / "pricing_report.md").read_text()
    text = readme.read_text()
    begin = text.index("<!-- BEGIN GENERATED pricing_report -->")
    end = text.index("<!-- END GENERATED pricing_report -->")
    assert md.strip() in text[begin:end]
    # The relativities are the run's, with intervals from its standard errors.
    for c in frequency["model"]["coefficients"][1:] + severity["model"]["coefficients"][1:]:
        lo, hi = np.exp(c["estimate"] - 1.96 * c["std_error"]), np.exp(c["estimate"] + 1.96 * c["std_error"])
        assert f"{np.exp(c['estimate']):.4f} | {lo:.4f} – {hi:.4f}" in md, c["name"]
    for name in frequency["per_institution"]:
        local = frequency["baselines"]["local"][name]["deviance"]
        assert f"| {name} | {local:.4f} | {frequency['per_institution'][name]['deviance']:.4f} |" in md
    assert "pricing_lorenz.png" in md


def test_disease_report_writes_calibration_tables(runs: Path, disease: dict, tmp_path: Path) -> None:
    readme = _readme_copy(tmp_path)
    proc = _script("disease_report.py", "--runs", str(runs), "--only", "disease_warning", "--readme", str(readme))
    md = (runs / "disease_report.md").read_text()
    assert md.strip() in readme.read_text()
    print(proc.stdout)
    for name, m in disease["per_institution"].items():
        assert f"**{name}** | {int(m['n'])} | {m['base_rate']:.3f} | local |" in md
        assert f"| federated | {m['roc_auc']:.3f} | {m['accuracy']:.3f} | {m['brier']:.3f} |" in md
    # Calibration in the large over every test patient: the logistic fit's mean predicted risk is close to the
    # observed rate (the pooled-data maximum-likelihood fit matches the training rate exactly, up to the ridge).
    rows: dict[tuple[str, str], list[str]] = {}
    hospital = ""
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 9 and cells[3] in ("local", "federated", "pooled"):
            hospital = cells[0].strip("*") or hospital
            rows[hospital, cells[3]] = cells
    assert len(rows) == 3 * 5
    fed_all = rows["all", "federated"]
    observed, mean_pred = float(rows["all", "local"][2]), float(fed_all[7])
    assert observed == pytest.approx(disease["metrics"]["base_rate"], abs=5e-4)
    assert abs(mean_pred - observed) < 0.05
    assert float(fed_all[8]) == pytest.approx(mean_pred - observed, abs=1.5e-3)


def test_reports_leave_the_committed_copies_alone_unless_asked(runs: Path, frequency: dict, severity: dict,
                                                               disease: dict) -> None:
    committed = [EXAMPLE / "README.md", EXAMPLE / "figures" / "pricing_lorenz.png"]
    before = [p.read_bytes() for p in committed]
    _script("pricing_report.py", "--runs", str(runs))
    _script("disease_report.py", "--runs", str(runs), "--only", "disease_warning")
    assert [p.read_bytes() for p in committed] == before
    assert (runs / "figures" / "pricing_lorenz.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (runs / "pricing_report.md").read_text()
    assert "](figures/pricing_lorenz.png)" in md          # linked from the report beside it
    assert (runs / "disease_report.md").read_text().strip()
