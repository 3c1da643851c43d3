"""TabularData validation and target checks."""

from __future__ import annotations

import numpy as np
import pytest

from fedx.errors import DataError
from fedx.tasks import TabularData, get_task
from fedx.tasks.data import check_target


def test_valid_data_is_stored_as_float32() -> None:
    data = TabularData(np.ones((3, 2)), np.array([0, 1, 0]), offset=np.zeros(3), weight=np.array([1, 2, 3]),
                       feature_names=("a", "b"))
    assert len(data) == 3 and data.n_features == 2
    assert {a.dtype for a in (data.X, data.y, data.offset, data.weight)} == {np.dtype(np.float32)}


def test_empty_data_is_allowed() -> None:
    assert len(TabularData(np.zeros((0, 4)), np.zeros(0))) == 0


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"X": np.ones(3)}, r"TabularData\.X: expected a 2-D array"),
    ({"y": np.ones((3, 1))}, r"TabularData\.y: expected shape \(3,\)"),
    ({"y": np.ones(4)}, r"TabularData\.y: expected shape \(3,\)"),
    ({"offset": np.ones(2)}, r"TabularData\.offset: expected shape \(3,\)"),
    ({"weight": np.array([1.0, -1.0, 1.0])}, r"TabularData\.weight: expected non-negative"),
    ({"X": np.array([[1.0, np.nan], [0, 0], [0, 0]])}, r"TabularData\.X: .*1 NaN or infinite .*\(0, 1\)"),
    ({"y": np.array([0, np.inf, 1])}, r"TabularData\.y: .*first at index 1"),
    ({"feature_names": ("a",)}, r"TabularData\.feature_names: expected 2 names"),
    ({"X": np.array([["a", "b"]] * 3)}, r"TabularData\.X: expected numbers"),
])
def test_bad_data_is_rejected_with_the_field_named(kwargs: dict, match: str) -> None:
    args = {"X": np.ones((3, 2)), "y": np.zeros(3), **kwargs}
    with pytest.raises(DataError, match=match):
        TabularData(**args)


def test_target_kinds() -> None:
    check_target(np.array([0.0, 1.0]), "binary")
    check_target(np.array([0.0, 3.0]), "count")
    check_target(np.array([0.5, 3.0]), "positive")
    with pytest.raises(DataError, match=r"0 or 1; 1 rows do not \(first: row 1, value 2\)"):
        check_target(np.array([0.0, 2.0]), "binary")
    with pytest.raises(DataError, match="non-negative"):
        check_target(np.array([-1.0]), "count")
    with pytest.raises(DataError, match="positive values"):
        check_target(np.array([0.0]), "positive")


def test_tasks_check_their_target_before_training() -> None:
    task = get_task("claim_severity")
    with pytest.raises(DataError, match="target of task 'claim_severity'"):
        task.check_data(TabularData(np.ones((2, 1)), np.array([0.0, 1.0])))
    with pytest.raises(DataError, match="offset"):
        task.check_data(TabularData(np.ones((2, 1)), np.array([1.0, 1.0]), offset=np.zeros(2)))


def test_from_frame_reads_the_target_exposure_and_weight_columns_the_config_names() -> None:
    import pandas as pd

    from fedx.baselines import fit_preprocessor
    from fedx.config import config_from_dict
    from fedx.data.spec import schema_for

    df = pd.DataFrame({"age": [20.0, 40.0, 60.0], "region": ["a", "b", "a"], "claims": [0, 2, 1],
                       "years": [0.5, 1.0, 2.0], "n": [1.0, 3.0, 0.0]})
    cfg = config_from_dict({"name": "t", "task": "claim_frequency",
                            "data": {"target": "claims", "exposure": "years", "weight": "n", "standardize": False}})
    prep = fit_preprocessor(cfg, schema_for(cfg, df), df)
    data = TabularData.from_frame(cfg, prep, df)
    np.testing.assert_array_equal(data.X, prep.transform(df))
    np.testing.assert_array_equal(data.y, [0, 2, 1])
    np.testing.assert_allclose(data.offset, np.log([0.5, 1.0, 2.0]), rtol=1e-7)
    np.testing.assert_array_equal(data.weight, [1.0, 3.0, 0.0])
    assert data.feature_names == prep.feature_names == ("age", "region[T.b]")
    # Rows to score: no target or weights, and the offset as given.
    scoring = TabularData.from_frame(None, prep, df.drop(columns=["claims", "n"]), offset=np.zeros(3))
    np.testing.assert_array_equal(scoring.y, np.zeros(3))
    assert scoring.weight is None and np.array_equal(scoring.offset, np.zeros(3))
