"""`fedx run` of a vertical config: the config's checks, the parties' data checks, and the fitted GLM against
statsmodels on the joined table (which only a simulation can build), with the PSI sizes, the lift, the
ledgers and the run folder's rules."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import yaml

from fedx.cli import main
from fedx.config import config_from_dict, load_config
from fedx.data.synthetic.health_insurance import generate_health_insurance
from fedx.errors import ConfigError

HEART = Path(__file__).resolve().parents[2] / "examples" / "medical_insurance" / "data" / "heart_disease_uci.csv"
INSURER = {"age_band": "categorical", "sex": "categorical", "region": "categorical", "plan": "categorical"}
CONDITIONS = {"diabetes": "numeric", "hypertension": "numeric", "heart_disease": "numeric"}
TESTS = {"bmi": "numeric", "systolic_bp": "numeric"}


def vertical_doc(parties: dict, **sections: object) -> dict:
    doc = {"name": "vertical-small", "task": "claim_frequency", "model": {"kind": "glm"},
           "data": {"partition": "vertical", "id": "person_id", "label_party": "insurer", "parties": parties,
                    "test_fraction": 0.0},
           "federation": {"aggregator": "newton", "rounds": 30}, "security": {"encryption": "none"}}
    for key, value in sections.items():
        doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) else value
    return doc


def write_config(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "vertical.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def one_hospital(tmp_path: Path):
    data = generate_health_insurance(5_000, seed=3)
    data.insurer.to_csv(tmp_path / "insurer.csv", index=False)
    data.hospitals["hospital"].to_parquet(tmp_path / "hospital.parquet", index=False)
    parties = {"insurer": {"source": "insurer.csv", "target": "claims", "exposure": "exposure", "features": INSURER},
               "hospital": {"source": "hospital.parquet", "features": {**CONDITIONS, **TESTS}}}
    return data, parties


def dummies(df: pd.DataFrame, features: dict, prefix: str) -> pd.DataFrame:
    """The design fedx builds: numeric columns as they are, categoricals without their first sorted level."""
    cols = {}
    for col, kind in features.items():
        if kind == "numeric":
            cols[f"{prefix}:{col}"] = df[col].to_numpy(float)
        else:
            for level in sorted(set(df[col].astype(str)))[1:]:
                cols[f"{prefix}:{col}[T.{level}]"] = (df[col].astype(str) == level).to_numpy(float)
    return pd.DataFrame(cols, index=df.index)


def joined_fit(joined: pd.DataFrame, blocks: list[tuple[dict, str]], y: str, family, exposure: str | None = None):
    X = pd.concat([dummies(joined, f, p) for f, p in blocks], axis=1)
    X.insert(0, "Intercept", 1.0)
    return sm.GLM(joined[y].to_numpy(float), X, family=family,
                  exposure=None if exposure is None else joined[exposure].to_numpy(float)).fit(tol=1e-12)


def assert_result_matches(result: dict, ref, rel: float) -> None:
    coefs = result["model"]["coefficients"]
    assert [c["name"] for c in coefs] == list(ref.params.index)
    np.testing.assert_allclose([c["estimate"] for c in coefs], ref.params.to_numpy(), rtol=rel)
    np.testing.assert_allclose([c["std_error"] for c in coefs], ref.bse.to_numpy(), rtol=rel)
    np.testing.assert_allclose([result["metrics"]["deviance"], result["metrics"]["aic"]], [ref.deviance, ref.aic],
                               rtol=rel)


# ---------------------------------------------------------------------- the config

def test_issue_shape_loads(tmp_path: Path) -> None:
    text = """
task: claim_frequency
model: {kind: glm}
data:
  partition: vertical
  id: person_id
  label_party: insurer
  parties:
    insurer:  {source: insurer.csv, target: claims, exposure: exposure,
               features: {age_band: categorical, region: categorical}}
    hospital: {source: hospital.csv, features: {diabetes: numeric, bmi: numeric}}
federation: {aggregator: newton, rounds: 30}
security: {encryption: ckks}
"""
    path = tmp_path / "pricing.yaml"
    path.write_text(text)
    cfg = load_config(path)
    assert cfg.data.vertical and cfg.name == "pricing" and cfg.data.label_party == "insurer"
    assert cfg.data.parties["hospital"].features == {"diabetes": "numeric", "bmi": "numeric"}
    assert cfg.security.min_intersection == 100 and cfg.security.psi_reveal == "label_party"
    assert load_config(path, {"security.encryption": "none"}).security.encryption == "none"


@pytest.mark.parametrize("change, expected", [
    ({"data": {"parties": {"insurer": {"source": "i.csv", "exposure": "exposure", "features": {}},
                           "hospital": {"source": "h.csv", "features": {"bmi": "numeric"}}}}},
     r"data\.parties\.insurer\.target: missing required key"),
    ({"data": {"parties": {"insurer": {"source": "i.csv", "target": "claims"},
                           "hospital": {"features": {"bmi": "numeric"}}}}},
     r"data\.parties\.hospital\.source: missing required key"),
    ({"data": {"parties": {"insurer": {"source": "i.csv", "target": "claims"},
                           "hospital": {"source": "h.csv", "target": "y", "features": {"bmi": "numeric"}}}}},
     r"data\.parties\.hospital\.target: only the label party \(insurer\) holds the target"),
    ({"data": {"parties": {"insurer": {"source": "i.csv", "target": "claims"},
                           "hospital": {"source": "h.csv", "features": {"bmi": "number"}}}}},
     r"data\.parties\.hospital\.features\.bmi: expected one of numeric, categorical, got 'number'"),
    ({"data": {"parties": {"insurer": {"source": "i.csv", "target": "claims"},
                           "hospital": {"source": "h.csv", "features": {}}}}},
     r"data\.parties\.hospital\.features: a feature party needs at least one feature"),
    ({"data": {"parties": {"insurer": {"source": "i.csv", "target": "claims", "features": {"person_id": "numeric"}},
                           "hospital": {"source": "h.csv", "features": {"bmi": "numeric"}}}}},
     r"data\.parties\.insurer: the id column 'person_id' cannot also be a feature"),
    ({"data": {"parties": {"insurer": {"source": "i.csv", "target": "claims", "features": {"r": "numeric"},
                                       "levels": {"r": ["a", "b"]}},
                           "hospital": {"source": "h.csv", "features": {"bmi": "numeric"}}}}},
     r"data\.parties\.insurer\.levels\.r: levels are only for categorical features"),
    ({"data": {"label_party": "bank"}}, r"data\.label_party: 'bank' is not one of data\.parties"),
    ({"data": {"id": None}}, r"data\.id: missing required key"),
    ({"data": {"source": "x.csv"}}, r"data\.source: not used by a vertical run.*data\.parties\.<name>\.source"),
    ({"data": {"split_by": "site"}}, r"data\.split_by: not used by a vertical run"),
    ({"data": {"partition": "vertcal"}}, r"data\.partition: expected .*one of vertical.*did you mean 'vertical'"),
    ({"security": {"encryption": "bfv-compact"}}, r"security\.encryption: a vertical run takes ckks or none"),
    ({"security": {"psi_reveal": "nobody"}}, r"security\.psi_reveal: expected one of label_party, all"),
    ({"security": {"min_intersection": 0}}, r"security\.min_intersection: expected an integer >= 1, got 0"),
    ({"security": {"keys": "keys/"}}, r"security\.keys: every party of a vertical run makes its own key"),
    ({"task": "fraud"}, r"task: a vertical run fits a GLM for claim_frequency or claim_severity"),
    ({"federation": {"aggregator": "fedavg"}}, r"federation\.aggregator: a vertical GLM is fitted by newton"),
    ({"data": {"parties": {"insurer": {"source": "synthetic/health", "target": "claims"},
                           "hospital": {"source": "h.csv", "features": {"bmi": "numeric"}}}}},
     r"data\.parties\.insurer\.source: unknown synthetic source 'synthetic/health'"),
])
def test_bad_vertical_configs_name_the_key(tmp_path: Path, change: dict, expected: str) -> None:
    base = vertical_doc({"insurer": {"source": "i.csv", "target": "claims", "features": {"age": "numeric"}},
                         "hospital": {"source": "h.csv", "features": {"bmi": "numeric"}}})
    doc = {**base, **{k: ({**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v)
                      for k, v in change.items()}}
    with pytest.raises(ConfigError, match=expected):
        load_config(write_config(tmp_path, doc))


def test_two_feature_parties_need_every_party_to_know_its_rows() -> None:
    parties = {"insurer": {"source": "i.csv", "target": "claims"},
               "hospital_a": {"source": "a.csv", "features": {"x": "numeric"}},
               "hospital_b": {"source": "b.csv", "features": {"y": "numeric"}}}
    with pytest.raises(ConfigError,
                       match=r"security\.psi_reveal: with 2 feature parties .*set security\.psi_reveal: all"):
        config_from_dict(vertical_doc(parties))
    assert config_from_dict(vertical_doc(parties, security={"psi_reveal": "all"})).security.psi_reveal == "all"


def test_horizontal_configs_refuse_vertical_keys() -> None:
    doc = {"name": "h", "task": "claim_frequency", "model": {"kind": "glm"},
           "data": {"source": "synthetic/policies", "split_by": "insurer", "target": "claim_count",
                    "label_party": "insurer"}, "federation": {"aggregator": "newton"}}
    with pytest.raises(ConfigError, match=r"data\.label_party: only for a vertical run"):
        config_from_dict(doc)
    del doc["data"]["label_party"]
    assert config_from_dict(doc).data.partition.method == "iid"


# ---------------------------------------------------------------------- fedx run

def test_run_matches_statsmodels_on_the_joined_table(tmp_path: Path, one_hospital, capsys) -> None:
    data, parties = one_hospital
    cfg = write_config(tmp_path, vertical_doc(parties, report={"baselines": ["local", "centralized"]}))
    assert main(["run", str(cfg), "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    assert "PSI:" in printed and "newton round 3: deviance" in printed
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    joined = data.insurer.merge(data.hospitals["hospital"], on="person_id")
    ref = joined_fit(joined, [(INSURER, "insurer"), ({**CONDITIONS, **TESTS}, "hospital")], "claims",
                     sm.families.Poisson(), "exposure")
    assert_result_matches(result, ref, 1e-6)
    assert result["schema_version"] == 1 and result["partition"] == "vertical"
    assert result["psi"]["rows"] == {"insurer": 5000, "hospital": len(data.hospitals["hospital"])}
    assert result["psi"]["shared"] == len(joined) == result["metrics"]["nobs"]
    # The lift: the insurer's own columns alone, on the same rows, as statsmodels fits them.
    alone = joined_fit(joined, [(INSURER, "insurer")], "claims", sm.families.Poisson(), "exposure")
    assert result["lift"]["label_only_deviance"] == pytest.approx(alone.deviance, rel=1e-6)
    assert result["lift"]["lift"] == pytest.approx(1 - ref.deviance / alone.deviance, rel=1e-6)
    assert result["baselines"]["centralized"]["max_rel_diff_coefficients"] < 1e-6
    # Relativities with intervals, as GLMResults reports them, and the pricing table.
    rel = {(r["feature"], r["level"]): r for r in result["model"]["relativities"]}
    se = ref.bse["insurer:region[T.north]"]
    assert rel[("insurer:region", "north")]["ci_low"] == pytest.approx(
        np.exp(ref.params["insurer:region[T.north]"] - 1.959963984540054 * se), rel=1e-6)
    table = pd.read_csv(tmp_path / "run" / "pricing_table.csv")
    row = table[(table["party"] == "hospital") & (table["feature"] == "diabetes")].iloc[0]
    assert row["relativity"] == pytest.approx(np.exp(ref.params["hospital:diabetes"]), rel=1e-6)
    assert table.iloc[0]["feature"] == "base rate"
    # Every message that left a party is in its ledger, and the relay's receipts anchor each ledger.
    for party in ("insurer", "hospital"):
        assert main(["audit", "verify", str(tmp_path / "run" / "institutions" / party / "ledger.jsonl")]) == 0
    kinds = {json.loads(line)["kind"] for line in (tmp_path / "run" / "institutions" / "hospital" / "ledger.jsonl")
             .read_text().splitlines()}
    assert {"psi-hello", "psi-spec", "psi-reply", "glm-setup_reply", "glm-round_reply", "glm-unmask_reply"} <= kinds
    # A finished run is never overwritten without --force.
    before = (tmp_path / "run" / "result.json").read_bytes()
    assert main(["run", str(cfg), "--out", str(tmp_path / "run")]) == 2
    said = capsys.readouterr().err
    assert "holds a finished run" in said and "--force" in said and "--resume" not in said
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "checkpoint").mkdir()   # an unfinished horizontal run: a vertical one cannot continue it
    assert main(["run", str(cfg), "--out", str(tmp_path / "other")]) == 2
    said = capsys.readouterr().err
    assert "holds an unfinished run" in said and "--force" in said and "--resume" not in said
    assert (tmp_path / "run" / "result.json").read_bytes() == before
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--force", "--quiet"]) == 0
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--resume"]) == 2
    assert "keeps no checkpoint" in capsys.readouterr().err


def test_run_under_ckks_matches_statsmodels(tmp_path: Path, one_hospital) -> None:
    data, parties = one_hospital
    cfg = write_config(tmp_path, vertical_doc(parties, security={"encryption": "ckks"}))
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    joined = data.insurer.merge(data.hospitals["hospital"], on="person_id")
    ref = joined_fit(joined, [(INSURER, "insurer"), ({**CONDITIONS, **TESTS}, "hospital")], "claims",
                     sm.families.Poisson(), "exposure")
    assert_result_matches(result, ref, 1e-4)
    assert result["privacy"]["encryption"] == "ckks" and all(h["bytes_up"] > 0 for h in result["history"])


def test_two_hospitals_with_different_columns(tmp_path: Path) -> None:
    data = generate_health_insurance(6_000, hospitals=2, hospital_split="columns", seed=5)
    data.insurer.to_csv(tmp_path / "insurer.csv", index=False)
    for name, df in data.hospitals.items():
        df.to_csv(tmp_path / f"{name}.csv", index=False)
    parties = {"insurer": {"source": "insurer.csv", "target": "claims", "exposure": "exposure", "features": INSURER},
               "hospital_a": {"source": "hospital_a.csv", "features": CONDITIONS},
               "hospital_b": {"source": "hospital_b.csv", "features": TESTS}}
    cfg = write_config(tmp_path, vertical_doc(parties, security={"psi_reveal": "all"}))
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    joined = data.insurer.merge(data.hospitals["hospital_a"], on="person_id").merge(data.hospitals["hospital_b"],
                                                                                   on="person_id")
    ref = joined_fit(joined, [(INSURER, "insurer"), (CONDITIONS, "hospital_a"), (TESTS, "hospital_b")], "claims",
                     sm.families.Poisson(), "exposure")
    assert_result_matches(result, ref, 1e-6)
    assert result["psi"]["shared"] == len(joined)
    assert result["psi"]["membership_known_to"] == ["insurer", "hospital_a", "hospital_b"]
    assert any(h["bytes_between"] > 0 for h in result["history"])


def _heart_tables(tmp_path: Path) -> pd.DataFrame:
    """The UCI heart table split by columns: a clinic (age, sex, cholesterol) and a lab (blood pressure, maximum
    heart rate, exercise angina), each with patients that the other does not have, rows in its own order."""
    df = pd.read_csv(HEART)
    clinic = df[(df["chol"] > 0) & df["age"].notna() & df["sex"].notna()][["id", "age", "sex", "chol"]]
    lab = df[(df["trestbps"] > 0) & df["thalch"].notna() & df["exang"].notna()][["id", "trestbps", "thalch", "exang"]]
    clinic.sample(frac=1.0, random_state=1).to_csv(tmp_path / "clinic.csv", index=False)
    lab.sample(frac=1.0, random_state=2).to_csv(tmp_path / "lab.csv", index=False)
    return clinic.merge(lab, on="id")


@pytest.mark.parametrize("reveal", ["label_party", "all"])
def test_real_table_split_by_columns(tmp_path: Path, reveal: str) -> None:
    joined = _heart_tables(tmp_path)
    parties = {"clinic": {"source": "clinic.csv", "target": "chol",
                          "features": {"age": "numeric", "sex": "categorical"}},
               "lab": {"source": "lab.csv", "features": {"trestbps": "numeric", "thalch": "numeric",
                                                         "exang": "categorical"}}}
    doc = vertical_doc(parties, task="claim_severity", security={"psi_reveal": reveal})
    doc["data"]["id"], doc["data"]["label_party"] = "id", "clinic"
    assert main(["run", str(write_config(tmp_path, doc)), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    ref = joined_fit(joined, [({"age": "numeric", "sex": "categorical"}, "clinic"),
                              ({"trestbps": "numeric", "thalch": "numeric", "exang": "categorical"}, "lab")],
                     "chol", sm.families.Gamma(sm.families.links.Log()))
    assert_result_matches(result, ref, 1e-6)
    assert result["model"]["family"] == "gamma" and result["psi"]["shared"] == len(joined) > 600


def test_held_out_rows_are_scored(tmp_path: Path, one_hospital) -> None:
    data, parties = one_hospital
    doc = vertical_doc(parties)
    doc["data"]["test_fraction"] = 0.25
    assert main(["run", str(write_config(tmp_path, doc)), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    shared = len(data.insurer.merge(data.hospitals["hospital"], on="person_id"))
    assert result["psi"]["test_rows"] == round(0.25 * shared) == result["metrics"]["test_nobs"]
    assert result["metrics"]["nobs"] == shared - result["psi"]["test_rows"]
    assert result["metrics"]["test_deviance"] > 0 and result["metrics"]["test_label_only_deviance"] > 0


def test_example_config_at_reduced_size(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "medical_insurance" / "vertical_pricing.yaml"
    assert main(["run", str(example), "--out", str(tmp_path / "run"), "--quiet", "--set", "security.encryption=none",
                 "--set", "data.params.n_policies=6000"]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["psi"]["rows"]["insurer"] == 6000 and 0.5 < result["psi"]["shared"] / 6000 < 0.7
    names = [c["name"] for c in result["model"]["coefficients"]]
    assert "hospital:heart_disease" in names and "insurer:plan[T.premium]" in names
    assert result["lift"]["lift"] > 0
    # The example's report reads the run, refits the joined table with statsmodels and writes the README block.
    import subprocess
    import sys
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- BEGIN GENERATED vertical_report -->\n<!-- END GENERATED vertical_report -->\n")
    proc = subprocess.run([sys.executable, str(example.parent / "vertical_report.py"), "--runs", str(tmp_path),
                           "--run", str(tmp_path / "run"), "--readme", str(readme)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    block = readme.read_text()
    assert "Shared by all parties: **" in block and "hospital | diabetes | per unit" in block
    within = re.search(r"coefficients within (\S+), standard errors within (\S+), deviance within (\S+) ", block)
    assert within and max(float(x) for x in within.groups()) < 1e-4, block


# ---------------------------------------------------------------------- bad data

@pytest.mark.parametrize("party, spoil, expected", [
    ("hospital", lambda df: df.assign(person_id=df["person_id"].where(df.index != 4, df["person_id"][0])),
     r"party hospital \(hospital\.csv\).*id column 'person_id'.*share an id"),
    ("hospital", lambda df: df.assign(person_id=df["person_id"].where(df.index != 6, None)),
     r"party hospital \(hospital\.csv\).*id column 'person_id': 1 null id"),
    ("hospital", lambda df: df.assign(bmi=df["bmi"].where(df.index != 9, np.nan)),
     r"party hospital \(hospital\.csv\): column 'bmi', row 10: the value is NaN"),
    ("insurer", lambda df: df.assign(exposure=df["exposure"].where(df.index != 2, 0.0)),
     r"party insurer \(insurer\.csv\): column 'exposure', row 3: the exposure is 0"),
    ("insurer", lambda df: df.drop(columns="region"),
     r"party insurer \(insurer\.csv\): no column 'region' \(its feature in data\.parties\.insurer\)"),
    ("hospital", lambda df: df.assign(person_id=np.arange(len(df))),
     r"id column 'person_id' holds str ids at party 'insurer' but .* int ids at party 'hospital'"),
])
def test_bad_data_names_party_file_and_column(tmp_path: Path, party: str, spoil, expected: str, capsys) -> None:
    data = generate_health_insurance(1_000, seed=2)
    tables = {"insurer": data.insurer, "hospital": data.hospitals["hospital"]}
    tables[party] = spoil(tables[party].copy())
    for name, df in tables.items():
        df.to_csv(tmp_path / f"{name}.csv", index=False)
    parties = {"insurer": {"source": "insurer.csv", "target": "claims", "exposure": "exposure",
                           "features": {"age_band": "categorical", "region": "categorical"}},
               "hospital": {"source": "hospital.csv", "features": {"diabetes": "numeric", "bmi": "numeric"}}}
    assert main(["run", str(write_config(tmp_path, vertical_doc(parties))), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert re.search(expected, err), err
    assert not (tmp_path / "run").exists()


def test_small_intersection_is_refused(tmp_path: Path, capsys) -> None:
    data = generate_health_insurance(1_000, seed=2)
    data.insurer.to_csv(tmp_path / "insurer.csv", index=False)
    data.hospitals["hospital"].head(150).to_csv(tmp_path / "hospital.csv", index=False)
    parties = {"insurer": {"source": "insurer.csv", "target": "claims", "features": {"age_band": "categorical"}},
               "hospital": {"source": "hospital.csv", "features": {"bmi": "numeric"}}}
    doc = vertical_doc(parties, security={"min_intersection": 200})
    assert main(["run", str(write_config(tmp_path, doc)), "--out", str(tmp_path / "run")]) == 2
    assert "fewer than security.min_intersection=200" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_tweedie_family_from_the_config(tmp_path: Path, one_hospital) -> None:
    data, parties = one_hospital
    cfg = write_config(tmp_path, vertical_doc(parties, model={"kind": "glm", "family": "tweedie"},
                                              federation={"tweedie_power": 1.3}))
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    joined = data.insurer.merge(data.hospitals["hospital"], on="person_id")
    family = sm.families.Tweedie(var_power=1.3, link=sm.families.links.Log())
    ref = joined_fit(joined, [(INSURER, "insurer"), ({**CONDITIONS, **TESTS}, "hospital")], "claims", family,
                     "exposure")
    assert result["model"]["family"] == "tweedie" and result["model"]["tweedie_power"] == 1.3
    assert_result_matches(result, ref, 1e-6)
