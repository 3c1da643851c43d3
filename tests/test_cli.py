"""The `fedx` command with bad input and existing run folders: nothing finished is lost, a failed start leaves
nothing behind, and bad data stops the run before the federation starts with one line naming its cause.

Validation happens before Ray starts, so only the last test runs a federation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import fedx
from fedx.cli import main
from fedx.config import load_config
from fedx.errors import ConfigError
from fedx.run_folder import RESUMABLE_KEYS, RunFolder, check_resume, config_digest


def sites_table(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for name, n in (("north", 120), ("south", 80), ("east", 60)):
        x = rng.normal(0.0, 1.0, n)
        parts.append(pd.DataFrame({"site": name, "x": x, "cat": rng.choice(["a", "b"], n),
                                   "label": (rng.random(n) < 1 / (1 + np.exp(-2 * x))).astype(int)}))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture
def federation(tmp_path: Path):
    """``federation(df=None, **data)``: a CSV of three sites and a config for it; returns the config path."""
    def make(df: pd.DataFrame | None = None, name: str = "sites.csv", **data: object) -> Path:
        (sites_table() if df is None else df).to_csv(tmp_path / name, index=False)
        doc = {"name": "small", "seed": 3, "task": "disease_risk", "model": {"kind": "logistic"},
               "data": {"source": name, "split_by": "site", "target": "label", **data},
               "train": {"lr": 0.05, "batch_size": 64}, "federation": {"rounds": 2, "min_clients": 3},
               "security": {"encryption": "none"}, "report": {"plots": False}}
        path = tmp_path / "fedx.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path
    return make


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder``, by relative path, with the sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def finished_run(out: Path, cfg_path: Path, rounds_done: int = 2) -> dict[str, str]:
    """A run folder as a finished run leaves it (result.json, checkpoint, an institution's files)."""
    cfg = load_config(cfg_path)
    (out / "checkpoint").mkdir(parents=True)
    (out / "institutions" / "north").mkdir(parents=True)
    (out / "result.json").write_text(json.dumps({"config": cfg.to_dict(), "metrics": {"auprc": 0.5}}))
    (out / "checkpoint" / "index.json").write_text(json.dumps(
        {"config_digest": config_digest(cfg), "config": cfg.to_dict(), "round": rounds_done}))
    (out / "institutions" / "north" / "model.pt").write_bytes(b"\x00model")
    (out / "institutions" / "north" / "ledger.jsonl").write_text('{"round": 1}\n')
    return snapshot(out)


def last_error(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert lines, "nothing printed on stderr"
    return lines[-1]


# --------------------------------------------------------------------------- 1: --force keeps the old run

@pytest.mark.parametrize("how", ["missing data file", "bad value", "NaN label"])
def test_force_with_bad_input_leaves_the_finished_run_byte_for_byte_intact(
        federation, tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str) -> None:
    cfg_path = federation()
    _bad(_nan_label).to_csv(tmp_path / "bad.csv", index=False)
    out = tmp_path / "run"
    before = finished_run(out, cfg_path)
    siblings = sorted(p.name for p in tmp_path.iterdir())
    change = {"missing data file": "data.source=gone.csv", "bad value": "federation.min_clients=0",
              "NaN label": "data.source=bad.csv"}[how]
    assert main(["run", str(cfg_path), "--out", str(out), "--force", "--quiet", "--set", change]) == 2
    assert "fedx: error:" in last_error(capsys)
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == siblings, "no folder left beside the run"


def test_force_through_the_python_api_keeps_the_old_run_and_speaks_python(federation, tmp_path: Path) -> None:
    cfg_path = federation()
    out = tmp_path / "run"
    before = finished_run(out, cfg_path)
    with pytest.raises(fedx.errors.DataError, match="gone.csv"):
        fedx.run(load_config(cfg_path, overrides={"data.source": "gone.csv"}), out, force=True, progress=False)
    assert snapshot(out) == before
    with pytest.raises(ConfigError, match=r"pass force=True to replace it, or resume=True") as err:
        fedx.run(load_config(cfg_path), out, progress=False)
    assert "--" not in str(err.value)


def test_stats_force_with_a_missing_data_file_leaves_the_old_stats_intact(
        federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = federation()
    doc = yaml.safe_load(cfg_path.read_text())
    doc.pop("task")
    doc["data"] = {"source": "gone.csv", "split_by": "site"}
    doc["stats"] = {"columns": ["x"]}
    cfg_path.write_text(yaml.safe_dump(doc))
    out = tmp_path / "stats"
    out.mkdir()
    (out / "stats.json").write_text('{"x": 1}')
    before = snapshot(out)
    assert main(["stats", str(cfg_path), "--out", str(out), "--force", "--quiet"]) == 2
    assert "gone.csv" in last_error(capsys)
    assert snapshot(out) == before


def test_a_replacement_that_fails_after_it_started_leaves_the_old_run(tmp_path: Path, federation) -> None:
    cfg_path = federation()
    out = tmp_path / "run"
    before = finished_run(out, cfg_path)
    folder = RunFolder.plan(load_config(cfg_path), out, "result.json", resume=False, force=True)
    with pytest.raises(RuntimeError), folder.writing() as work:
        assert work != out and work.parent == out.parent
        (work / "receipts.jsonl").write_text("{}\n")
        (work / "checkpoint").mkdir()
        (work / "checkpoint" / "index.json").write_text("{}")
        raise RuntimeError("round 3 failed")
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fedx.yaml", "run", "sites.csv"]


# --------------------------------------------------------------------------- 2: --resume under the same config only

def test_resume_under_another_config_is_refused_naming_the_keys(
        federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = federation()
    out = tmp_path / "run"
    before = finished_run(out, cfg_path)
    assert main(["run", str(cfg_path), "--out", str(out), "--resume", "--set", "seed=8",
                 "--set", "train.lr=0.1", "--quiet"]) == 2
    line = last_error(capsys)
    assert "the checkpoint was made under another config: seed (3 -> 8), train.lr (0.05 -> 0.1)" in line
    assert "--force" in line
    assert snapshot(out) == before


def test_resume_allows_more_rounds_and_nothing_else(federation, tmp_path: Path) -> None:
    cfg_path = federation()
    out = tmp_path / "run"
    finished_run(out, cfg_path, rounds_done=2)
    assert RESUMABLE_KEYS == ("federation.rounds", "federation.timeout", "report.plots", "model.trees")
    check_resume(load_config(cfg_path, overrides={"federation.rounds": 5, "federation.timeout": 60,
                                                  "report.plots": True}), out)
    with pytest.raises(ConfigError, match=r"federation\.rounds: 1 is fewer than the 2 round\(s\)"):
        check_resume(load_config(cfg_path, overrides={"federation.rounds": 1}), out)
    with pytest.raises(ConfigError, match=r"federation\.min_clients \(3 -> 2\)"):
        check_resume(load_config(cfg_path, overrides={"federation.min_clients": 2}), out)


def test_resume_needs_a_checkpoint_and_excludes_force(federation, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = federation()
    assert main(["run", str(cfg_path), "--out", str(tmp_path / "new"), "--resume", "--quiet"]) == 2
    assert "holds no checkpoint to resume" in last_error(capsys)
    assert not (tmp_path / "new").exists()
    out = tmp_path / "run"
    finished_run(out, cfg_path)
    assert main(["run", str(cfg_path), "--out", str(out), "--resume", "--force", "--quiet"]) == 2
    assert "not both" in last_error(capsys)


# --------------------------------------------------------------------------- 3: a failed start leaves nothing

def test_a_run_that_fails_validation_leaves_no_folder(federation, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = federation()
    out = tmp_path / "runs" / "deep" / "new"
    assert main(["run", str(cfg_path), "--out", str(out), "--set", "data.source=gone.csv", "--quiet"]) == 2
    assert not (tmp_path / "runs").exists()
    # An existing folder keeps what it held, and gets nothing new.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["run", str(cfg_path), "--out", str(mine), "--set", "data.target=num", "--quiet"]) == 2
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert (mine / "notes.txt").read_text() == "keep me"


def test_a_new_run_that_fails_before_its_first_checkpoint_removes_what_it_wrote(tmp_path: Path, federation) -> None:
    cfg = load_config(federation())
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(RuntimeError), RunFolder.plan(cfg, mine, "result.json", resume=False, force=False).writing() as w:
        (w / "receipts.jsonl").write_text("{}\n")
        (w / "institutions" / "north").mkdir(parents=True)
        (w / "institutions" / "north" / "ledger.jsonl").write_text("{}\n")
        raise RuntimeError("hello failed")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    # After its first checkpoint a failed run is kept: --resume continues it.
    with pytest.raises(RuntimeError), RunFolder.plan(cfg, mine, "result.json", resume=False, force=False).writing() as w:
        (w / "checkpoint").mkdir()
        (w / "checkpoint" / "index.json").write_text("{}")
        raise RuntimeError("round 2 failed")
    assert (mine / "checkpoint" / "index.json").exists()


# --------------------------------------------------------------------------- 4-7: bad data, one last line

def _bad(change) -> pd.DataFrame:
    df = sites_table()
    change(df)
    return df


def _nan_label(df: pd.DataFrame) -> None:
    df["label"] = df["label"].astype(float)
    df.loc[3, "label"] = np.nan


def _inf_feature(df: pd.DataFrame) -> None:
    df.loc[130, "x"] = np.inf


def _sixty(df: pd.DataFrame) -> None:
    df["x"] = df["x"].round(3).astype(object)
    df.loc[[5, 9], "x"] = ["sixty", "seventy"]


def _ids(df: pd.DataFrame) -> None:
    df["tx_id"] = [f"tx{i:05d}" for i in range(len(df))]


@pytest.mark.parametrize("change, data, expected", [
    (_nan_label, {}, ("north (data.csv): column 'label', row 4: the label is NaN (missing); the column must be "
                      "complete")),
    (_inf_feature, {}, "south (data.csv): column 'x', row 131: the value is inf; expected a finite number"),
    (_sixty, {}, ("north (data.csv): column 'x' holds numbers except for 2 of 120 value(s): 'sixty' (row 6), "
                  "'seventy' (row 10); fix them, list them in data.na_values.x if they mean missing, or declare the "
                  "column in data.features")),
    (_sixty, {"features": {"x": "numeric", "cat": "categorical"}},
     "north (data.csv): column 'x', row 6: the value is 'sixty', not a number (1 more row(s) like it)"),
    (None, {"target": "num"}, ("east (data.csv): data.target: column 'num' is not in the data (columns: site, x, "
                               "cat, label)")),
    (None, {"na_values": {"chol": [0]}}, ("east (data.csv): data.na_values.chol: column 'chol' is not in the data "
                                          "(columns: site, x, cat, label)")),
    (_ids, {}, ("east (data.csv): column 'tx_id' is categorical with 60 levels (more than half of its 60 values): "
                "each level becomes a column of the model's input, and an identifier teaches it nothing. Add it to "
                "data.drop, or declare data.features (numeric, or categorical with data.levels)")),
])
def test_bad_data_stops_the_run_before_it_starts_with_one_line(
        federation, tmp_path: Path, capsys: pytest.CaptureFixture[str], change, data: dict, expected: str) -> None:
    cfg_path = federation(_bad(change) if change else None, name="data.csv", **data)
    out = tmp_path / "out"
    assert main(["run", str(cfg_path), "--out", str(out), "--quiet"]) == 2
    assert last_error(capsys) == f"fedx: error: {expected}"
    assert not out.exists()


def test_given_tables_name_their_rows_by_position(federation, tmp_path: Path) -> None:
    cfg = load_config(federation())
    a = sites_table().set_index(pd.Index([f"id{i}" for i in range(260)]))
    a.loc["id7", "label"] = 3
    with pytest.raises(fedx.errors.DataError, match=r"^b \(tables\['b'\]\): column 'label', row 8: the label is 3, "
                                                    r"expected 0 or 1"):
        fedx.run(cfg, tmp_path / "out", tables={"a": sites_table(1), "b": a}, progress=False)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_force_replaces_a_finished_run_only_once_the_new_one_has_finished(federation, tmp_path: Path) -> None:
    cfg_path = federation()
    out = tmp_path / "run"
    finished_run(out, cfg_path)
    (out / "stale.txt").write_text("from the old run")
    assert main(["run", str(cfg_path), "--out", str(out), "--force", "--quiet", "--set", "federation.rounds=1"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert len(result["history"]) == 1 and "roc_auc" in result["metrics"]
    assert not (out / "stale.txt").exists() and (out / "institutions" / "north" / "model.pt").read_bytes() != b"\x00model"
    for path in result["model"]["paths"].values():
        assert Path(path).is_file() and Path(path).resolve().is_relative_to(out.resolve())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fedx.yaml", "run", "sites.csv"]


def test_keygen_prints_the_fingerprint_of_the_keys_it_wrote(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from fedx import he

    shown = []
    for folder in ("keys", "other"):
        assert main(["keygen", "--preset", "bfv-compact", "--out", str(tmp_path / folder)]) == 0
        first = capsys.readouterr().out.splitlines()[0]
        keys = he.load_keys(tmp_path / folder)
        # What the institutions compare out of band: the same text as the loaded secret and public files give.
        assert first == f"fingerprint {keys.fingerprint_text} (bfv-compact)"
        assert he.load_public(tmp_path / folder / "public.fxk").fingerprint_text == keys.fingerprint_text
        shown.append(first)
    assert shown[0] != shown[1]


def test_fedx_node_prints_the_fingerprint_of_the_key_it_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    from fedx import he
    from fedx.flower import operate

    keys = he.keygen("bfv-compact")
    keys.save(tmp_path / "keys")
    (tmp_path / "data.csv").write_text("x,label\n1,0\n2,1\n")
    node = {"name": "cleveland", "data": "data.csv", "keys": "keys/secret.fxk", "out_dir": "out",
            "superlink": {"address": "127.0.0.1:9", "insecure": True}}
    (tmp_path / "node.yaml").write_text(yaml.safe_dump(node))
    monkeypatch.setattr(operate.NodeSupervisor, "run", lambda self: 0)   # no SuperNode is started
    assert main(["node", "--config", str(tmp_path / "node.yaml")]) == 0
    said = capsys.readouterr().err
    assert f"cleveland: HE keys {tmp_path / 'keys' / 'secret.fxk'} (bfv-compact), fingerprint " \
           f"{keys.fingerprint_text}" in said
    # A key file that does not load stops the node before it starts, naming the file.
    (tmp_path / "keys" / "secret.fxk").write_bytes(b"FXHK-damaged")
    assert main(["node", "--config", str(tmp_path / "node.yaml")]) == 2
    assert f"{tmp_path / 'keys' / 'secret.fxk'}" in capsys.readouterr().err


# --------------------------------------------------------------------------- the command line itself

def _walk(parser, path: str = "fedx"):
    """Every (command path, parser) of the argparse tree, the top one included."""
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                assert (helps.get(name) or "").strip(), f"`{path} {name}` has no help line in `{path} --help`"
                yield from _walk(sub, f"{path} {name}")


def test_every_command_and_option_has_a_help_text() -> None:
    import argparse

    from fedx.cli import build_parser

    seen = []
    for path, parser in _walk(build_parser()):
        seen.append(path)
        assert (parser.description or "").strip(), f"`{path} --help` has no description"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            name = "/".join(action.option_strings) or action.dest
            assert action.help is not argparse.SUPPRESS and (action.help or "").strip(), \
                f"`{path}`: {name} has no help text"
    assert {"fedx run", "fedx stats", "fedx server", "fedx node", "fedx audit", "fedx keygen"} <= set(seen)


@pytest.mark.parametrize("command", ["run", "stats", "server", "node"])
def test_the_config_is_the_first_argument_everywhere_and_config_is_an_alias(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    missing = tmp_path / "missing.yaml"
    for argv in ([command, str(missing)], [command, "--config", str(missing)],
                 [command, str(missing), "--config", str(tmp_path / "." / "missing.yaml")]):
        assert main(argv) == 2
        assert last_error(capsys) == f"fedx: error: {missing}: config file not found"
    with pytest.raises(SystemExit) as exit_:
        main([command, str(missing), "--config", str(tmp_path / "other.yaml")])
    assert exit_.value.code == 2
    assert (f"the config is given twice, as {missing} and as --config {tmp_path / 'other.yaml'}: give it once"
            in capsys.readouterr().err)
    with pytest.raises(SystemExit) as exit_:
        main([command])
    assert exit_.value.code == 2
    assert f"the config is required: fedx {command} CONFIG (or --config CONFIG)" in capsys.readouterr().err
