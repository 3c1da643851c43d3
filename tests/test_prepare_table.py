"""Cleaning an institution's raw table as the config says: missing-value codes and a thresholded target."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedx.baselines import fit_preprocessor
from fedx.config import config_from_dict
from fedx.data.local import prepare_table
from fedx.errors import DataError


def _cfg(**data):
    base = {"source": "x.csv", "split_by": "site", "target": "num"}
    base.update(data)
    return config_from_dict({"name": "t", "task": "disease_risk", "model": {"kind": "logistic"}, "data": base})


def _df():
    return pd.DataFrame({"site": ["a"] * 5, "chol": [0.0, 200.0, 250.0, 0.0, 180.0],
                         "age": [50, 60, 70, 40, 55], "num": [0, 1, 3, 0, 2]})


def test_na_codes_become_missing_and_target_is_thresholded() -> None:
    raw = _df()
    out = prepare_table(raw, _cfg(na_values={"chol": [0]}, target_above=0))
    assert out["chol"].isna().tolist() == [True, False, False, True, False]
    assert out["num"].tolist() == [0, 1, 1, 0, 1]
    only_target = prepare_table(raw, _cfg(target_above=0))
    assert only_target["num"].tolist() == [0, 1, 1, 0, 1]
    pd.testing.assert_frame_equal(raw, _df())  # the caller's frame is not modified


def test_without_cleaning_options_the_table_is_unchanged() -> None:
    df = _df()
    assert prepare_table(df, _cfg()) is df


def test_unknown_na_column_and_non_numeric_target_are_clear_errors() -> None:
    with pytest.raises(DataError, match="na_values.*'nope'"):
        prepare_table(_df(), _cfg(na_values={"nope": [0]}))
    df = _df().assign(num=["x", "1", "0", "1", "2"])
    with pytest.raises(DataError, match="target_above"):
        prepare_table(df, _cfg(target_above=0))


def test_a_feature_absent_at_an_institution_is_left_out_of_its_own_model() -> None:
    from fedx.data.spec import schema_for

    cfg = _cfg(na_values={"chol": [0]}, target_above=0)
    df = prepare_table(_df(), cfg).assign(chol=np.nan)
    prep = fit_preprocessor(cfg, schema_for(cfg, df), df)
    assert not any(n.startswith("chol") for n in prep.feature_names)
    assert any(n.startswith("age") for n in prep.feature_names)


def test_the_saved_model_scores_missing_value_codes_as_missing(tmp_path) -> None:
    from fedx.data.spec import schema_for
    from fedx.model import FedxModel
    from fedx.tasks import get_task
    from fedx.tasks.params import get_arrays

    cfg = _cfg(na_values={"chol": [0]}, target_above=0)
    df = prepare_table(_df(), cfg)
    prep = fit_preprocessor(cfg, schema_for(cfg, df), df)
    net = get_task("disease_risk").build_model(len(prep.feature_names), {"kind": "logistic"}, seed=1)
    rng = np.random.default_rng(0)
    params = [rng.normal(size=a.shape).astype(a.dtype) for a in get_arrays(net)]   # every feature counts
    path = FedxModel.build("disease_risk", {"kind": "logistic"}, prep, params,
                           cfg.data.na_values).save(tmp_path / "m.pt")
    model = FedxModel.load(path)
    raw = _df()                                    # chol 0 in rows 0 and 3, as the hospital's file has it
    np.testing.assert_array_equal(model.predict(raw), model.predict(raw.assign(chol=raw["chol"].replace(0.0, np.nan))))
    plain = FedxModel.build("disease_risk", {"kind": "logistic"}, prep, params)
    assert not np.allclose(plain.predict(raw), model.predict(raw)), "without the codes, 0 is scored as a value"
