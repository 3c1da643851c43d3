"""synthetic/health_insurance: a pooled GLM on the joined tables recovers the generator's coefficients."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from fedx.data.synthetic.health_insurance import HEALTH_LEVELS, TRUE_HEALTH_COEFFICIENTS, generate_health_insurance
from fedx.errors import ConfigError


def _design(df: pd.DataFrame) -> pd.DataFrame:
    cols = {}
    for name in TRUE_HEALTH_COEFFICIENTS:
        if name == "intercept":
            cols[name] = np.ones(len(df))
        elif "[T." in name:
            factor, level = name[:-1].split("[T.", 1)
            cols[name] = (df[factor] == level).to_numpy(float)
        else:
            cols[name] = df[name].to_numpy(float)
    return pd.DataFrame(cols)


def test_joined_fit_recovers_truth() -> None:
    data = generate_health_insurance(40_000, seed=3)
    ins, hosp = data.insurer, data.hospitals["hospital"]
    shared = ins.merge(hosp, on="person_id")
    assert 0.55 < len(shared) / len(ins) < 0.65                 # about 60% of the insured are patients
    assert len(hosp) - len(shared) > 0.2 * len(shared)          # and the hospital has patients not insured here
    assert set(ins.columns) == {"person_id", "exposure", "claims", *HEALTH_LEVELS}
    fit = sm.GLM(shared["claims"], _design(shared), family=sm.families.Poisson(), exposure=shared["exposure"]).fit()
    truth = pd.Series(TRUE_HEALTH_COEFFICIENTS)
    z = (fit.params - truth) / fit.bse
    assert np.all(np.abs(z) < 4.0), z.to_dict()


def test_two_hospitals_are_disjoint_and_deterministic() -> None:
    a = generate_health_insurance(2_000, hospitals=2, seed=5)
    b = generate_health_insurance(2_000, hospitals=2, seed=5)
    pd.testing.assert_frame_equal(a.insurer, b.insurer)
    ha, hb = a.hospitals["hospital_a"], a.hospitals["hospital_b"]
    assert not set(ha["person_id"]) & set(hb["person_id"])
    with pytest.raises(ConfigError, match="params.hospitals"):
        generate_health_insurance(2_000, hospitals=3)


def test_two_hospitals_split_by_columns_recover_truth_when_joined() -> None:
    data = generate_health_insurance(30_000, hospitals=2, hospital_split="columns", seed=4)
    ha, hb = data.hospitals["hospital_a"], data.hospitals["hospital_b"]
    assert set(ha.columns) == {"person_id", "diabetes", "hypertension", "heart_disease"}
    assert set(hb.columns) == {"person_id", "bmi", "systolic_bp"}
    shared = data.insurer.merge(ha, on="person_id").merge(hb, on="person_id")
    assert 0.45 < len(shared) / len(data.insurer) < 0.56       # 60% at hospital_a, 85% of those at hospital_b
    fit = sm.GLM(shared["claims"], _design(shared), family=sm.families.Poisson(), exposure=shared["exposure"]).fit()
    z = (fit.params - pd.Series(TRUE_HEALTH_COEFFICIENTS)) / fit.bse
    assert np.all(np.abs(z) < 4.0), z.to_dict()
    with pytest.raises(ConfigError, match="params.hospital_split"):
        generate_health_insurance(2_000, hospitals=2, hospital_split="rows")
