"""Model building, configs, and the weights as arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedx.errors import ConfigError, DataError
from fedx.tasks import TabularData, array_names, get_arrays, get_task, set_arrays


def test_mlp_shape_and_names() -> None:
    model = get_task("fraud").build_model(7, {"kind": "mlp", "hidden": [5, 3], "dropout": 0.1}, seed=1)
    assert array_names(model) == ["net.0.weight", "net.0.bias", "net.3.weight", "net.3.bias",
                                  "net.6.weight", "net.6.bias"]
    assert [a.shape for a in get_arrays(model)] == [(5, 7), (5,), (3, 5), (3,), (1, 3), (1,)]
    assert all(a.dtype == np.float32 for a in get_arrays(model))


def test_building_is_deterministic_for_a_seed() -> None:
    task = get_task("disease_risk")
    a = get_arrays(task.build_model(4, {"kind": "mlp", "hidden": [8]}, seed=3))
    b = get_arrays(task.build_model(4, {"kind": "mlp", "hidden": [8]}, seed=3))
    c = get_arrays(task.build_model(4, {"kind": "mlp", "hidden": [8]}, seed=4))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_building_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    get_task("fraud").build_model(4, {"kind": "mlp", "hidden": [8]}, seed=99)
    assert torch.equal(torch.rand(3), expected)


def test_logistic_model_is_one_linear_layer_returning_the_logit() -> None:
    model = get_task("fraud").build_model(3, {"kind": "logistic"}, seed=0)
    w, b = np.array([[0.5, -1.0, 2.0]], np.float32), np.array([0.25], np.float32)
    set_arrays(model, [w, b])
    x = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    data = TabularData(x, np.zeros(6))
    expected = 1 / (1 + np.exp(-(x @ w[0] + b[0])))
    np.testing.assert_allclose(get_task("fraud").predict(model, data), expected, rtol=1e-6)


def test_glm_outputs_exp_of_eta_plus_offset() -> None:
    task = get_task("claim_frequency")
    model = task.build_model(2, {"kind": "glm", "hidden": [64, 32], "dropout": 0.0}, seed=0)
    assert array_names(model) == ["score.linear.weight", "score.linear.bias"]
    assert all(not a.any() for a in get_arrays(model))  # GLMs start at zero
    set_arrays(model, [np.array([[0.3, -0.2]], np.float32), np.array([-1.5], np.float32)])
    rng = np.random.default_rng(1)
    x, exposure = rng.normal(size=(5, 2)).astype(np.float32), rng.uniform(0.1, 2, 5)
    data = TabularData(x, np.zeros(5), offset=np.log(exposure))
    expected = np.exp(x @ np.array([0.3, -0.2]) - 1.5) * exposure
    np.testing.assert_allclose(task.predict(model, data), expected, rtol=1e-5)
    out = model(torch.from_numpy(x), torch.from_numpy(np.log(exposure).astype(np.float32)))
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-5)


def test_glm_tasks_accept_an_mlp_with_log_link() -> None:
    task = get_task("claim_severity")
    model = task.build_model(3, {"kind": "mlp", "hidden": [4]}, seed=0)
    pred = task.predict(model, TabularData(np.ones((2, 3)), np.ones(2)))
    assert pred.shape == (2,) and (pred > 0).all()


def test_default_kind_is_the_tasks_first() -> None:
    assert array_names(get_task("claim_frequency").build_model(2, {}, seed=0))[0] == "score.linear.weight"
    assert array_names(get_task("fraud").build_model(2, {}, seed=0))[0] == "net.0.weight"


@pytest.mark.parametrize(("task", "cfg", "match"), [
    ("fraud", {"kind": "glm"}, r"model\.kind: task 'fraud' takes mlp or logistic, got 'glm'"),
    ("claim_frequency", {"kind": "logistic"}, r"model\.kind: task 'claim_frequency' takes glm or mlp"),
    ("fraud", {"kind": "tree"}, r"model\.kind"),
    ("fraud", {"kind": "mlp", "hidden": []}, r"model\.hidden: expected a non-empty list"),
    ("fraud", {"kind": "mlp", "hidden": [64, 0]}, r"model\.hidden"),
    ("fraud", {"kind": "mlp", "hidden": "64"}, r"model\.hidden"),
    ("fraud", {"kind": "mlp", "hidden": [64.5]}, r"model\.hidden"),
    ("fraud", {"kind": "mlp", "dropout": 0.96}, r"model\.dropout: expected a number in \[0, 0\.95\]"),
    ("fraud", {"kind": "mlp", "hiden": [3]}, r"model\.hiden: unknown key"),
])
def test_bad_model_configs_are_rejected(task: str, cfg: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        get_task(task).build_model(3, cfg, seed=0)


def test_bad_feature_count_is_rejected() -> None:
    with pytest.raises(DataError, match="n_features"):
        get_task("fraud").build_model(0, {"kind": "logistic"}, seed=0)


def test_arrays_round_trip_and_are_copies() -> None:
    task = get_task("fraud")
    src = task.build_model(5, {"kind": "mlp", "hidden": [4, 3]}, seed=1)
    dst = task.build_model(5, {"kind": "mlp", "hidden": [4, 3]}, seed=2)
    arrays = get_arrays(src)
    set_arrays(dst, arrays)
    assert all(np.array_equal(a, b) for a, b in zip(get_arrays(dst), arrays))
    arrays[0][:] = 7.0  # a copy: changing it leaves both models alone
    assert not (get_arrays(src)[0] == 7.0).any() and not (get_arrays(dst)[0] == 7.0).any()
    x = TabularData(np.random.default_rng(0).normal(size=(4, 5)), np.zeros(4))
    np.testing.assert_array_equal(task.predict(src, x), task.predict(dst, x))


def test_wrong_arrays_are_rejected_with_a_clear_message() -> None:
    model = get_task("fraud").build_model(5, {"kind": "mlp", "hidden": [4]}, seed=1)
    arrays = get_arrays(model)
    with pytest.raises(DataError, match=r"expected 4 arrays for this model \(net.0.weight, .*\), got 3"):
        set_arrays(model, arrays[:3])
    bad = [np.zeros((4, 6), np.float32), *arrays[1:]]
    with pytest.raises(DataError, match=r"arrays\[0\] \(net.0.weight\): expected shape \(4, 5\), got \(4, 6\)"):
        set_arrays(model, bad)
    nan = [*arrays[:3], np.array([np.nan], np.float32)]
    with pytest.raises(DataError, match=r"arrays\[3\] \(net.2.bias\): expected finite numbers"):
        set_arrays(model, nan)
    assert all(np.array_equal(a, b) for a, b in zip(get_arrays(model), arrays))  # untouched on failure
