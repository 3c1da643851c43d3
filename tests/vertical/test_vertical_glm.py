"""The vertical GLM against statsmodels' GLM on the joined table (plaintext and CKKS), and its leaks closed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from fedx.errors import BlobError, ConfigError, PolicyError
from fedx.vertical.glm_parties import FeatureParty, LabelParty
from fedx.vertical.glm_protocol import fit_vertical_glm

HEART = Path(__file__).resolve().parents[2] / "examples" / "medical_insurance" / "data" / "heart_disease_uci.csv"
SM_FAMILIES = {"poisson": lambda: sm.families.Poisson(),
               "gamma": lambda: sm.families.Gamma(sm.families.links.Log()),
               "tweedie": lambda: sm.families.Tweedie(var_power=1.5, link=sm.families.links.Log())}


def _split_data(family: str, n: int, seed: int = 1) -> dict:
    """Label side (x_g, y, exposure) and feature side (x_h) of one simulated table with known coefficients."""
    rng = np.random.default_rng(seed)
    xg = np.column_stack([rng.normal(size=n), rng.integers(0, 2, n)])
    xh = np.column_stack([rng.normal(size=n), rng.integers(0, 2, n), rng.uniform(size=n)])
    exposure = rng.uniform(0.2, 1.5, n) if family == "poisson" else None
    mu = np.exp(-0.5 + xg @ [0.3, -0.2] + xh @ [0.4, 0.25, -0.3]) * (exposure if exposure is not None else 1.0)
    if family == "poisson":
        y = rng.poisson(mu).astype(float)
    elif family == "gamma":
        y = rng.gamma(2.0, mu / 2.0)
    else:
        counts = rng.poisson(mu * 0.8)
        y = np.array([rng.gamma(2.0, 1.0, k).sum() if k else 0.0 for k in counts])
    return {"xg": xg, "xh": xh, "y": y, "exposure": exposure}


def _reference(family: str, d: dict):
    X = np.column_stack([np.ones(len(d["y"])), d["xg"], d["xh"]])
    return sm.GLM(d["y"], X, family=SM_FAMILIES[family](), exposure=d["exposure"]).fit(tol=1e-12)


def _fit(family: str, d: dict, encryption: str, label_block: str = "two_key"):
    label = LabelParty("insurer", d["xg"], ["age", "male"], d["y"], family=family, exposure=d["exposure"],
                       encryption=encryption, label_block=label_block, seed=0)
    feature = FeatureParty("hospital", d["xh"], ["bmi", "diabetes", "score"], encryption=encryption)
    return fit_vertical_glm(label, feature)


def _assert_matches(res, ref, rel: float) -> None:
    names = ["Intercept", "insurer:age", "insurer:male", "hospital:bmi", "hospital:diabetes", "hospital:score"]
    assert list(res.params) == names
    np.testing.assert_allclose([res.params[k] for k in names], ref.params, rtol=rel)
    np.testing.assert_allclose([res.bse[k] for k in names], ref.bse, rtol=rel)
    np.testing.assert_allclose([res.deviance, res.null_deviance, res.aic, res.scale],
                               [ref.deviance, ref.null_deviance, ref.aic, ref.scale], rtol=rel)


@pytest.mark.parametrize("family", ["poisson", "gamma", "tweedie"])
def test_plaintext_matches_statsmodels(family: str) -> None:
    d = _split_data(family, 3000)
    res = _fit(family, d, "none")
    _assert_matches(res, _reference(family, d), 1e-6)
    # The lift is measured against the label party's own fit, which statsmodels reproduces too.
    own = sm.GLM(d["y"], sm.add_constant(d["xg"]), family=SM_FAMILIES[family](), exposure=d["exposure"]).fit()
    assert res.label_only_deviance == pytest.approx(own.deviance, rel=1e-6)
    assert res.lift == pytest.approx(1.0 - res.deviance / own.deviance, rel=1e-9) and res.lift > 0


@pytest.mark.slow
@pytest.mark.parametrize("label_block", ["two_key", "one_key"])
def test_ckks_poisson_matches_statsmodels(label_block: str) -> None:
    d = _split_data("poisson", 2000)
    res = _fit("poisson", d, "ckks", label_block)
    _assert_matches(res, _reference("poisson", d), 1e-4)
    assert all(h["bytes_up"] > 0 and h["bytes_down"] > 0 for h in res.history)


def test_encrypted_sums_fill_every_slot() -> None:
    from fedx.he.vectors import VectorEvaluator, VectorKey, slot_count
    rng = np.random.default_rng(3)
    key = VectorKey.generate()
    n = 5000  # two ciphertexts, the second mostly padding
    c, f1, f2 = rng.normal(size=n), rng.normal(size=n), rng.uniform(size=n)
    blob = VectorEvaluator(key.public_bytes()).inner_sums(key.encrypt(c), [f1, f2])
    slots = key.decrypt_slots(blob)
    assert slots.shape == (1, slot_count())
    # Every slot holds the same two totals (real, imaginary): no slot carries a partial sum over some rows.
    np.testing.assert_allclose(slots[0].real, c @ f1, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(slots[0].imag, c @ f2, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(key.decrypt_sums(blob), [c @ f1, c @ f2], rtol=1e-8)
    assert abs(key.scale_bias()) < 1e-9


def test_small_support_is_refused_by_its_owner() -> None:
    d = _split_data("poisson", 500)
    rare = d["xh"].copy()
    rare[:, 1] = 0.0
    rare[:7, 1] = 1.0
    with pytest.raises(PolicyError, match=r"party hospital: column 'diabetes' has 7 nonzero rows.*min_cohort = 10"):
        FeatureParty("hospital", rare, ["bmi", "diabetes", "score"], encryption="none")
    common = d["xg"].copy()
    common[:, 1] = 1.0
    common[:3, 1] = 0.0  # its complement singles out three rows
    with pytest.raises(PolicyError, match=r"party insurer: column 'male' has 3 zero rows"):
        LabelParty("insurer", common, ["age", "male"], d["y"], family="poisson", encryption="none")


def test_tampered_message_is_refused() -> None:
    d = _split_data("poisson", 300)
    label = LabelParty("insurer", d["xg"], ["age", "male"], d["y"], family="poisson", encryption="none")
    feature = FeatureParty("hospital", d["xh"], ["bmi", "diabetes", "score"], encryption="none")
    (msg,) = label.start({"hospital": feature.names}).values()
    bad = bytearray(msg)
    bad[len(bad) // 2] ^= 1
    with pytest.raises(BlobError, match="tampered"):
        feature.respond(bytes(bad))


def test_heart_table_split_by_columns() -> None:
    """One real table, split by columns between two parties: Gamma (log link) on cholesterol."""
    df = pd.read_csv(HEART)
    df = df[(df["chol"] > 0) & (df["trestbps"] > 0)].dropna(subset=["age", "sex", "trestbps", "thalch", "exang"])
    y = df["chol"].to_numpy(float)
    xg = np.column_stack([df["age"].to_numpy(float) / 10.0, (df["sex"] == "Male").to_numpy(float)])
    xh = np.column_stack([df["trestbps"].to_numpy(float) / 10.0, df["thalch"].to_numpy(float) / 10.0,
                          df["exang"].astype(str).str.upper().eq("TRUE").to_numpy(float)])
    label = LabelParty("insurer", xg, ["age", "male"], y, family="gamma", encryption="none")
    feature = FeatureParty("hospital", xh, ["trestbps", "thalch", "exang"], encryption="none")
    res = fit_vertical_glm(label, feature)
    ref = sm.GLM(y, np.column_stack([np.ones(len(y)), xg, xh]), family=SM_FAMILIES["gamma"]()).fit(tol=1e-12)
    np.testing.assert_allclose(list(res.params.values()), ref.params, rtol=1e-6)
    np.testing.assert_allclose(list(res.bse.values()), ref.bse, rtol=1e-6)
    np.testing.assert_allclose([res.deviance, res.aic], [ref.deviance, ref.aic], rtol=1e-6)
    assert res.nobs == len(y) > 600


def test_health_insurance_generator_fits_vertically() -> None:
    """The generator's insurer and hospital, on their shared people: the vertical fit equals the pooled one."""
    from fedx.data.synthetic.health_insurance import HEALTH_LEVELS, generate_health_insurance
    data = generate_health_insurance(8_000, seed=11)
    shared = data.insurer.merge(data.hospitals["hospital"], on="person_id")  # the rows a PSI would align
    dummies, names = [], []
    for factor, levels in HEALTH_LEVELS.items():
        for level in levels[1:]:
            dummies.append((shared[factor] == level).to_numpy(float))
            names.append(f"{factor}[T.{level}]")
    xg = np.column_stack(dummies)
    hosp_cols = ["diabetes", "hypertension", "heart_disease", "bmi", "systolic_bp"]
    xh = shared[hosp_cols].to_numpy(float)
    y, exposure = shared["claims"].to_numpy(float), shared["exposure"].to_numpy(float)
    label = LabelParty("insurer", xg, names, y, family="poisson", exposure=exposure, encryption="none")
    res = fit_vertical_glm(label, FeatureParty("hospital", xh, hosp_cols, encryption="none"))
    ref = sm.GLM(y, np.column_stack([np.ones(len(y)), xg, xh]), family=sm.families.Poisson(),
                 exposure=exposure).fit(tol=1e-12)
    np.testing.assert_allclose(list(res.params.values()), ref.params, rtol=1e-6)
    np.testing.assert_allclose(list(res.bse.values()), ref.bse, rtol=1e-6)
    assert res.params["hospital:heart_disease"] > 0 and res.lift > 0.0


def test_gamma_with_claim_count_weights() -> None:
    """Average severities weighted by claim counts (statsmodels' var_weights), Tweedie at another power."""
    d = _split_data("gamma", 2000, seed=4)
    counts = np.random.default_rng(4).integers(1, 5, 2000).astype(float)
    label = LabelParty("insurer", d["xg"], ["age", "male"], d["y"], family="gamma", weight=counts, encryption="none")
    res = fit_vertical_glm(label, FeatureParty("hospital", d["xh"], ["bmi", "diabetes", "score"], encryption="none"))
    X = np.column_stack([np.ones(2000), d["xg"], d["xh"]])
    ref = sm.GLM(d["y"], X, family=SM_FAMILIES["gamma"](), var_weights=counts).fit(tol=1e-12)
    _assert_matches(res, ref, 1e-6)
    t = _split_data("tweedie", 2000, seed=5)
    label = LabelParty("insurer", t["xg"], ["age", "male"], t["y"], family="tweedie", tweedie_power=1.3,
                       encryption="none")
    res = fit_vertical_glm(label, FeatureParty("hospital", t["xh"], ["bmi", "diabetes", "score"], encryption="none"))
    fam = sm.families.Tweedie(var_power=1.3, link=sm.families.links.Log())
    _assert_matches(res, sm.GLM(t["y"], np.column_stack([np.ones(2000), t["xg"], t["xh"]]), family=fam).fit(
        tol=1e-12), 1e-6)


def test_unsummed_ciphertext_is_refused_by_the_owner() -> None:
    """A product returned without the rotation sum (its slots hold partial sums) is refused, not decrypted."""
    from tenseal import sealapi

    from fedx.he import vectors
    key = vectors.VectorKey.generate()
    evaluator = vectors.VectorEvaluator(key.public_bytes())
    n = 3000
    cts = evaluator.load_vector(key.encrypt(np.arange(n, dtype=float)), n)
    eng = vectors._engine()
    (pts,) = evaluator.encode([np.ones(n)])
    prod = sealapi.Ciphertext()
    eng.evaluator.multiply_plain(cts[0], pts[0], prod)
    eng.evaluator.rescale_to_next_inplace(prod)
    blob = vectors._pack_parts("sums", [vectors._scratch.save(prod)], count=1)
    with pytest.raises(BlobError, match="not summed over all rows"):
        key.decrypt_sums(blob)


def test_three_feature_parties_under_ckks_are_refused() -> None:
    d = _split_data("poisson", 300)
    label = LabelParty("insurer", d["xg"], ["age", "male"], d["y"], family="poisson", encryption="ckks")
    with pytest.raises(ConfigError, match="at most 2 feature parties"):
        label.start({"hospital_a": ["bmi"], "hospital_b": ["bmi"], "lab": ["hba1c"]})
