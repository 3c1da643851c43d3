"""The config rejects each kind of bad input with a message naming the file, the key and what was expected."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fedx.config import config_from_dict, load_config, parse_override
from fedx.errors import ConfigError

BASE = {
    "name": "t",
    "task": "fraud",
    "data": {"source": "synthetic/transactions", "target": "is_fraud", "split_by": "bank"},
}


def write(tmp_path: Path, doc: object, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return p


def test_valid_config_has_typed_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.federation.rounds == 20 and isinstance(cfg.federation.rounds, int)
    assert cfg.security.encryption == "bfv-compact"
    assert cfg.model.hidden == [64, 32]
    assert cfg.base_dir == tmp_path.resolve()
    assert cfg.resolve_path("x.csv") == tmp_path.resolve() / "x.csv"


def test_overrides_are_parsed_as_yaml() -> None:
    cfg = config_from_dict(BASE, overrides={"federation.rounds": "3", "model.hidden": "[8, 4]",
                                            "security.dp.clip": 0.5, "security.encryption": "none"})
    assert cfg.federation.rounds == 3
    assert cfg.model.hidden == [8, 4]
    assert cfg.security.dp is not None and cfg.security.dp.clip == 0.5
    assert parse_override("federation.aggregator=fedadam") == ("federation.aggregator", "fedadam")
    with pytest.raises(ConfigError, match="expected key.path=value"):
        parse_override("federation.rounds")


@pytest.mark.parametrize("change, expected", [
    ({"federaton": {"rounds": 3}}, r"c\.yaml: federaton: unknown key \(did you mean 'federation'\?\)"),
    ({"federation": {"roundz": 3}}, r"federation\.roundz: unknown key \(did you mean 'rounds'\?\)"),
    ({"federation": {"rounds": "ten"}}, r"federation\.rounds: expected an integer >= 1, got 'ten'"),
    ({"federation": {"rounds": 0}}, r"federation\.rounds: expected an integer >= 1, got 0"),
    ({"federation": {"rounds": 2.5}}, r"federation\.rounds: expected an integer"),
    ({"federation": {"fraction": 1.5}}, r"federation\.fraction: expected a number in \(0, 1\], got 1\.5"),
    ({"federation": {"aggregator": "fedavgg"}}, r"expected one of fedavg.*got 'fedavgg' \(did you mean 'fedavg'\?\)"),
    ({"task": "frad"}, r"task: expected one of fraud.*\(did you mean 'fraud'\?\)"),
    ({"security": {"dp": {"clip": -1}}}, r"security\.dp\.clip: expected a number > 0, got -1"),
    ({"security": {"audit": "yes"}}, r"security\.audit: expected true or false, got 'yes'"),
    ({"model": {"hidden": [64, 0]}}, r"model\.hidden\[1\]: expected a positive layer width, got 0"),
    ({"model": {"hidden": 64}}, r"model\.hidden: expected a list of an integer"),
    ({"train": {"lr": float("nan")}}, r"train\.lr: expected a finite number"),
    ({"train": {"lr_decay": 1.5}}, r"train\.lr_decay: expected a number in \(0, 1\], got 1\.5"),
    ({"train": {"lr_decay": 0}}, r"train\.lr_decay: expected a number in \(0, 1\], got 0"),
    ({"name": ""}, r"name: expected a non-empty string"),
    ({"stats": {"histograms": {"age": [30, 20]}}}, r"stats\.histograms\.age: expected at least 2 strictly increasing"),
    ({"stats": {"quantiles": {"age": [1.5]}}}, r"stats\.quantiles\.age: expected probabilities strictly between 0 and 1"),
])
def test_bad_values_name_file_key_and_expectation(tmp_path: Path, change: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, {**BASE, **change}))


def test_missing_required_key(tmp_path: Path) -> None:
    doc = {k: v for k, v in BASE.items() if k != "task"}
    with pytest.raises(ConfigError, match=r"c\.yaml: task: missing required key"):
        load_config(write(tmp_path, doc))
    doc = {**BASE, "data": {"source": "x.csv"}}
    with pytest.raises(ConfigError, match=r"data\.target: missing required key \(the column to predict\)"):
        load_config(write(tmp_path, doc))


def test_missing_file_folder_empty_and_malformed_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="expected a YAML file, got a folder"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="the config file is empty"):
        load_config(write(tmp_path, ""))
    with pytest.raises(ConfigError, match=r"malformed YAML \(line \d+, column \d+\)"):
        load_config(write(tmp_path, "name: x\ntask: [fraud\n"))
    with pytest.raises(ConfigError, match="expected a mapping of sections at the top, got list"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigError, match="'median' needs to read each update in plaintext.*never downgrades"):
        config_from_dict({**BASE, "federation": {"aggregator": "median"}})
    assert config_from_dict({**BASE, "federation": {"aggregator": "median"},
                             "security": {"encryption": "none"}}).federation.aggregator == "median"
    with pytest.raises(ConfigError, match="data: give either split_by or institutions"):
        config_from_dict({**BASE, "data": {**BASE["data"], "institutions": 3}})
    plain_poisson = config_from_dict({**BASE, "task": "claim_frequency", "model": {"kind": "glm"}})
    assert plain_poisson.data.exposure is None   # a plain Poisson GLM: exposure 1, offset 0
    with pytest.raises(ConfigError, match="federation.min_clients: 5 is more than the 3 institutions"):
        config_from_dict({**BASE, "data": {"source": "x.csv", "target": "y", "institutions": 3},
                          "federation": {"min_clients": 5}})


def test_override_of_a_value_that_is_not_a_section() -> None:
    with pytest.raises(ConfigError, match="override federation.rounds.x: federation.rounds is not a section"):
        config_from_dict(BASE, overrides={"federation.rounds": 3, "federation.rounds.x": 1})


def test_to_dict_round_trips() -> None:
    cfg = config_from_dict(BASE, overrides={"security.dp.clip": 2.0})
    again = config_from_dict(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()


def test_cli_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    bad = write(tmp_path, {**BASE, "federation": {"rounds": "ten"}})
    proc = subprocess.run([sys.executable, "-m", "fedx.cli", "run", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "federation.rounds: expected an integer >= 1, got 'ten'" in lines[0]
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "fedx.cli", "run", str(bad), "--set", "federation.rounds"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "expected key.path=value" in proc.stderr


def test_numeric_bounds_are_declared_once_and_read_by_the_library() -> None:
    # The bound that the config checks is the one the model builder and the Newton rule check.
    from fedx.aggregators.glm_families import get_family
    from fedx.aggregators.newton import NewtonRule
    from fedx.config import DROPOUT, NEWTON_TOLERANCE, TWEEDIE_POWER
    from fedx.tasks import get_task

    base = {"name": "b", "task": "claim_frequency", "data": {"source": "x.csv", "target": "y"}}
    with pytest.raises(ConfigError, match=r"model\.dropout: expected a number in \[0, 0\.95\]"):
        config_from_dict({**base, "model": {"kind": "mlp", "dropout": DROPOUT["hi"] + 0.01}})
    with pytest.raises(ConfigError, match=r"model\.dropout: expected a number in \[0, 0\.95\]"):
        get_task("fraud").build_model(3, {"kind": "mlp", "dropout": DROPOUT["hi"] + 0.01}, seed=0)
    get_task("fraud").build_model(3, {"kind": "mlp", "dropout": DROPOUT["hi"]}, seed=0)
    for value in (NEWTON_TOLERANCE["hi"], 0.0):
        with pytest.raises(ConfigError, match=r"federation\.tolerance: expected a number in \(0, 1\)"):
            config_from_dict({**base, "federation": {"tolerance": value}})
        with pytest.raises(ConfigError, match=r"federation\.tolerance: expected a number in \(0, 1\)"):
            NewtonRule("poisson", tolerance=value)
    for value in (TWEEDIE_POWER["lo"], TWEEDIE_POWER["hi"]):
        with pytest.raises(ConfigError, match=r"federation\.tweedie_power: expected a number in \(1, 2\)"):
            config_from_dict({**base, "federation": {"tweedie_power": value}})
        with pytest.raises(ConfigError, match=r"federation\.tweedie_power: expected a number in \(1, 2\)"):
            get_family("tweedie", value)


@pytest.mark.parametrize("text, key, example", [
    ("target: YES", "data.target", '"YES"'),
    ("target: y\n  exposure: off", "data.exposure", '"NO"'),
    ("target: y\n  drop: [id, on]", r"data.drop\[1\]", '"YES"'),
])
def test_a_name_that_yaml_reads_as_a_boolean_says_to_quote_it(tmp_path: Path, text: str, key: str,
                                                               example: str) -> None:
    doc = f"name: t\ntask: fraud\ndata:\n  source: x.csv\n  split_by: bank\n  {text}\n"
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, doc))
    msg = str(err.value)
    assert re.search(f"{key}: expected a (non-empty )?string, got (true|false) ", msg), msg
    assert "YAML reads yes/no/on/off/true/false as booleans: quote the name" in msg and example in msg
    assert load_config(write(tmp_path, doc.replace("YES", '"YES"').replace("off", '"off"')
                             .replace("on]", '"on"]'))).data.target in ("YES", "y")


def test_a_choice_that_yaml_reads_as_a_boolean_says_to_quote_it() -> None:
    with pytest.raises(ConfigError, match=r"security.encryption: expected one of none, ckks, bfv-compact, got "
                                          r"false \(YAML reads .* as booleans: quote the value\)"):
        config_from_dict({**BASE, "security": {"encryption": False}})


@pytest.mark.parametrize("text, key, lines", [
    ("name: a\nseed: 1\nname: b\ntask: fraud\n", "name", (1, 3)),
    ("name: a\ndata:\n  source: x.csv\n  target: y\n  target: z\n", "target", (4, 5)),
    ("name: a\nfederation: {rounds: 2, rounds: 3}\n", "rounds", (2, 2)),
])
def test_a_duplicated_yaml_key_is_refused_naming_the_key_and_both_lines(tmp_path: Path, text: str, key: str,
                                                                       lines: tuple[int, int]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"c\.yaml: key '{key}' appears twice in one mapping "
                                          rf"\(lines {lines[0]} and {lines[1]}\)"):
        load_config(path)


def test_duplicated_keys_are_refused_in_node_files_and_overrides_too(tmp_path: Path) -> None:
    from fedx.config import load_node_config

    node = write(tmp_path, "name: bank_a\ndata: a.csv\nname: bank_b\nsuperlink: {insecure: true}\n", "node.yaml")
    with pytest.raises(ConfigError, match=r"node\.yaml: key 'name' appears twice in one mapping \(lines 1 and 3\)"):
        load_node_config(node)
    with pytest.raises(ConfigError, match=r"--set data\.features: key 'a' appears twice"):
        parse_override("data.features={a: numeric, a: categorical}")
    # A YAML merge key may be overridden on purpose: that is not a duplicate.
    from fedx.config import load_yaml

    assert load_yaml("a: &b {x: 1, y: 2}\nc:\n  <<: *b\n  x: 3\n", "m.yaml")["c"] == {"x": 3, "y": 2}
