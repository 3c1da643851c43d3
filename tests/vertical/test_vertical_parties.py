"""The vertical GLM with several feature parties, with a feature party that does not know its shared rows,
and the minimum support of the cells of X'WX, against statsmodels on the joined table."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from fedx.errors import ConfigError, PolicyError
from fedx.vertical.glm_parties import FeatureParty, LabelParty
from fedx.vertical.glm_plan import check_cells, plan
from fedx.vertical.glm_protocol import fit_vertical_glm

FAMILIES = {"poisson": lambda: sm.families.Poisson(),
            "gamma": lambda: sm.families.Gamma(sm.families.links.Log()),
            "tweedie": lambda: sm.families.Tweedie(var_power=1.5, link=sm.families.links.Log())}


def _data(family: str, n: int, seed: int = 2) -> dict:
    """Three parties' columns of one table: the label party's two, then two feature parties' two each."""
    rng = np.random.default_rng(seed)
    xg = np.column_stack([rng.normal(size=n), rng.integers(0, 2, n)])
    x1 = np.column_stack([rng.normal(size=n), rng.integers(0, 2, n)])
    x2 = np.column_stack([rng.uniform(size=n) * 3, rng.integers(0, 2, n)])
    exposure = rng.uniform(0.2, 1.5, n) if family == "poisson" else None
    mu = np.exp(-0.5 + xg @ [0.3, -0.2] + x1 @ [0.4, 0.25] + x2 @ [-0.3, 0.2]) * (1.0 if exposure is None else exposure)
    if family == "poisson":
        y = rng.poisson(mu).astype(float)
    elif family == "gamma":
        y = rng.gamma(2.0, mu / 2.0)
    else:
        counts = rng.poisson(mu * 0.8)
        y = np.array([rng.gamma(2.0, 1.0, k).sum() if k else 0.0 for k in counts])
    return {"xg": xg, "x1": x1, "x2": x2, "y": y, "exposure": exposure}


def _reference(family: str, d: dict, *blocks: str):
    X = np.column_stack([np.ones(len(d["y"])), d["xg"], *(d[b] for b in blocks)])
    return sm.GLM(d["y"], X, family=FAMILIES[family](), exposure=d["exposure"]).fit(tol=1e-12)


def _assert_matches(res, ref, rel: float) -> None:
    np.testing.assert_allclose(list(res.params.values()), ref.params, rtol=rel)
    np.testing.assert_allclose(list(res.bse.values()), ref.bse, rtol=rel)
    np.testing.assert_allclose([res.deviance, res.null_deviance, res.aic, res.scale],
                               [ref.deviance, ref.null_deviance, ref.aic, ref.scale], rtol=rel)


def _two_hospitals(d: dict, encryption: str, label_block: str = "two_key"):
    label = LabelParty("insurer", d["xg"], ["age", "male"], d["y"], family="poisson", exposure=d["exposure"],
                       encryption=encryption, label_block=label_block, seed=0)
    features = {"hospital": FeatureParty("hospital", d["x1"], ["bmi", "diabetes"], encryption=encryption),
                "lab": FeatureParty("lab", d["x2"], ["hba1c", "smoker"], encryption=encryption)}
    return label, features


@pytest.mark.parametrize("family", ["poisson", "gamma", "tweedie"])
@pytest.mark.parametrize("label_block", ["two_key", "one_key"])
def test_two_feature_parties_match_statsmodels(family: str, label_block: str) -> None:
    d = _data(family, 2500)
    label = LabelParty("insurer", d["xg"], ["age", "male"], d["y"], family=family, exposure=d["exposure"],
                       encryption="none", label_block=label_block, seed=0)
    seen: list[tuple[str, str]] = []
    res = fit_vertical_glm(label, {"hospital": FeatureParty("hospital", d["x1"], ["bmi", "diabetes"],
                                                            encryption="none"),
                                   "lab": FeatureParty("lab", d["x2"], ["hba1c", "smoker"], encryption="none")},
                           relay=lambda a, b, r, m: seen.append((a, b)))
    assert list(res.params) == ["Intercept", "insurer:age", "insurer:male", "hospital:bmi", "hospital:diabetes",
                                "lab:hba1c", "lab:smoker"]
    _assert_matches(res, _reference(family, d, "x1", "x2"), 1e-6)
    # The feature parties pass row-wise products to each other: the cross blocks between them need both.
    assert ("hospital", "lab") in seen and ("lab", "hospital") in seen
    assert all(h["bytes_between"] > 0 for h in res.history)
    alone = sm.GLM(d["y"], sm.add_constant(d["xg"]), family=FAMILIES[family](), exposure=d["exposure"]).fit()
    assert res.label_only_deviance == pytest.approx(alone.deviance, rel=1e-6)


def test_three_feature_parties_in_plaintext() -> None:
    d = _data("poisson", 2000, seed=5)
    rng = np.random.default_rng(9)
    d["x3"] = np.column_stack([rng.normal(size=2000)])
    label = LabelParty("insurer", d["xg"], ["age", "male"], d["y"], family="poisson", exposure=d["exposure"],
                       encryption="none", seed=0)
    res = fit_vertical_glm(label, {"a": FeatureParty("a", d["x1"], ["u", "v"], encryption="none"),
                                   "b": FeatureParty("b", d["x2"], ["w", "x"], encryption="none"),
                                   "c": FeatureParty("c", d["x3"], ["z"], encryption="none")})
    _assert_matches(res, _reference("poisson", d, "x1", "x2", "x3"), 1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("label_block", ["two_key", "one_key"])
def test_two_feature_parties_under_ckks(label_block: str) -> None:
    d = _data("poisson", 2000)
    label, features = _two_hospitals(d, "ckks", label_block)
    res = fit_vertical_glm(label, features)
    _assert_matches(res, _reference("poisson", d, "x1", "x2"), 1e-4)


def test_feature_party_that_does_not_know_its_shared_rows() -> None:
    """``psi_reveal: label_party``: the hospital's whole table, in its own order; the label party places its
    vectors at the shared rows' positions, zeros elsewhere. The fit is that of the shared rows."""
    d = _data("gamma", 2400, seed=7)
    rng = np.random.default_rng(1)
    extra = np.column_stack([rng.normal(size=900), rng.integers(0, 2, 900)])
    table = np.vstack([d["x1"], extra])
    order = rng.permutation(len(table))          # the hospital's own (shuffled) row order
    positions = np.argsort(order)[:2400]         # where shared row k sits in that order
    label = LabelParty("insurer", d["xg"], ["age", "male"], d["y"], family="gamma", encryption="none", seed=0,
                       peer_rows={"hospital": (len(table), positions)})
    res = fit_vertical_glm(label, FeatureParty("hospital", table[order], ["bmi", "diabetes"], encryption="none"))
    _assert_matches(res, _reference("gamma", d, "x1"), 1e-6)
    with pytest.raises(ConfigError, match="psi_reveal: all"):
        LabelParty("insurer", d["xg"], ["age", "male"], d["y"], family="gamma", encryption="none",
                   peer_rows={"hospital": (len(table), positions)}).start({"hospital": ["bmi"], "lab": ["x"]})


def test_rare_cell_of_a_cross_block_is_refused_by_the_label_party() -> None:
    """Each column has enough rows, but the rows where a label column and a feature column are both 1 do not:
    their cross-block sum would nearly give the feature party's values of those rows."""
    d = _data("poisson", 1500, seed=3)
    xg, x1 = d["xg"].copy(), d["x1"].copy()
    xg[:, 1] = 0.0
    xg[:600, 1] = 1.0
    x1[:, 1] = 0.0
    x1[595:900, 1] = 1.0                      # 5 rows with both
    label = LabelParty("insurer", xg, ["age", "male"], d["y"], family="poisson", exposure=d["exposure"],
                       encryption="none")
    with pytest.raises(PolicyError, match=r"insurer:male' != 0 and 'hospital:diabetes' != 0 are 5 of the 1500"):
        fit_vertical_glm(label, FeatureParty("hospital", x1, ["bmi", "diabetes"], encryption="none"))


def test_feature_party_enforces_its_own_minimum_on_the_cells() -> None:
    """The label party's counts reach the feature party as the smallest cell; a stricter feature party refuses."""
    d = _data("poisson", 1500, seed=3)
    label = LabelParty("insurer", d["xg"], ["age", "male"], d["y"], family="poisson", exposure=d["exposure"],
                       encryption="none")
    strict = FeatureParty("hospital", d["x1"], ["bmi", "diabetes"], encryption="none", min_cohort=500)
    with pytest.raises(PolicyError, match="party hospital: the label party counts .* fewer than min_cohort = 500"):
        fit_vertical_glm(label, strict)


def test_rare_pair_of_own_columns_is_refused() -> None:
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(0, 2, 800), np.zeros(800)]).astype(float)
    X[:200, 1] = 1.0
    X[:, 0] = 0.0
    X[195:500, 0] = 1.0                      # 5 rows where both are 1
    with pytest.raises(PolicyError, match="party lab: the rows where 'lab:a' != 0 and 'lab:b' != 0 are 5"):
        FeatureParty("lab", X, ["a", "b"], encryption="none")


def test_cells_and_paths() -> None:
    # 2x2 cells of two 0/1 columns: a zero cell is allowed, a small one is not.
    assert check_cells("p", "a", "b", c=0, n_u=50, n_v=40, n=200, binary_u=True, binary_v=True, min_cohort=10) == 40
    with pytest.raises(PolicyError, match="'a' = 0 and 'b' = 0 are 3"):
        check_cells("p", "a", "b", c=20, n_u=120, n_v=97, n=200, binary_u=True, binary_v=True, min_cohort=10)
    # A term's path: the party with b^q alone first, the one with a column last (it only sums).
    jobs, keys, local = plan([([["pow", 1.0, 2, 0], ["pow", 1.0, 0, 0]], "k1"),
                              ([["pow", 1.0, 0, 0], ["pow", 1.0, 3, 0]], "k2"),
                              ([["pow", 0.0, 0, 0], ["pos", 1]], "k3"),
                              ([["pow", 0.0, 0, 0], ["pow", 0.0, 0, 0]], "k4")], ["a", "b"], "v")
    assert [j.path for j in jobs] == [["b", "a"], ["a", "b"], ["b"]]
    assert jobs[0].tree == [[["pow", 1.0, 0, 0], [["pow", 1.0, 2, 0]]]]
    assert keys == {"v/0.0": ["k1"], "v/1.0": ["k2"], "v/2": ["k3"]} and local == ["k4"]


def test_held_out_deviance_at_given_coefficients() -> None:
    """``evaluate``: one round at fixed coefficients gives the deviance of other rows, as statsmodels has it."""
    from fedx.vertical.glm_protocol import evaluate_vertical_glm
    d = _data("gamma", 3000, seed=8)
    train, test = slice(0, 2000), slice(2000, 3000)
    label = LabelParty("insurer", d["xg"][train], ["age", "male"], d["y"][train], family="gamma", encryption="none")
    res = fit_vertical_glm(label, {"hospital": FeatureParty("hospital", d["x1"][train], ["a", "b"], encryption="none"),
                                   "lab": FeatureParty("lab", d["x2"][train], ["c", "d"], encryption="none")})
    beta = np.array(list(res.params.values()))
    held = LabelParty("insurer", d["xg"][test], ["age", "male"], d["y"][test], family="gamma", encryption="none",
                      evaluate=beta)
    dev = evaluate_vertical_glm(held, {"hospital": FeatureParty("hospital", d["x1"][test], ["a", "b"],
                                                                encryption="none"),
                                       "lab": FeatureParty("lab", d["x2"][test], ["c", "d"], encryption="none")})
    X = np.column_stack([np.ones(1000), d["xg"][test], d["x1"][test], d["x2"][test]])
    want = sm.families.Gamma(sm.families.links.Log()).deviance(d["y"][test], np.exp(X @ beta))
    assert dev == pytest.approx(want, rel=1e-9)
