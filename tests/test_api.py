"""The Python entry points as a bank's pipeline calls them: fedx.run and fedx.stats with their real signatures,
a config as a path, a dict or a Config, the institutions' tables as DataFrames (whose institution column is
never a feature), and errors that name the Python spelling of each option.

Every check but the last ones stops before Ray starts."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import fedx
from fedx.cli import main
from fedx.data.institutions import given_tables
from fedx.errors import ConfigError, DataError
from fedx.inprocess import federation

SITES = (("north", 120), ("south", 80), ("east", 60))


def sites_table(seed: int = 0) -> pd.DataFrame:
    """Three sites' rows in one table; the column ``site`` names the institution."""
    rng = np.random.default_rng(seed)
    parts = []
    for name, n in SITES:
        x = rng.normal(0.0, 1.0, n)
        parts.append(pd.DataFrame({"site": name, "x": x, "cat": rng.choice(["a", "b"], n),
                                   "label": (rng.random(n) < 1 / (1 + np.exp(-2 * x))).astype(int)}))
    return pd.concat(parts, ignore_index=True)


def config(**data: object) -> dict:
    return {"name": "small", "seed": 3, "task": "disease_risk", "model": {"kind": "logistic"},
            "data": {"target": "label", **data}, "train": {"lr": 0.05, "batch_size": 64},
            "federation": {"rounds": 1, "min_clients": 3}, "security": {"encryption": "none"},
            "report": {"plots": False, "baselines": []}}


def finished(out: Path, name: str = "result.json") -> Path:
    out.mkdir(parents=True)
    (out / name).write_text("{}")
    return out


# --------------------------------------------------------------------------- signatures and docstrings

def documented_parameters(func: object) -> list[str]:
    """The names that the numpy-style ``Parameters`` section of ``func``'s docstring documents."""
    doc = inspect.getdoc(func) or ""
    m = re.search(r"^Parameters\n-+\n(.*?)(?=^\w[\w ]*\n-+\n|\Z)", doc, re.DOTALL | re.MULTILINE)
    assert m, f"{func.__name__} has no numpy-style Parameters section"
    return re.findall(r"^(\w+) :", m.group(1), re.MULTILINE)


@pytest.mark.parametrize("func, expected", [
    ("run", ["config", "out_dir", "tables", "progress", "resume", "force", "verbose"]),
    ("stats", ["config", "out_dir", "tables", "progress", "force", "verbose"]),
])
def test_run_and_stats_have_real_signatures_and_document_every_parameter(func: str, expected: list[str]) -> None:
    f = getattr(fedx, func)
    params = inspect.signature(f).parameters
    assert list(params) == expected
    assert all(p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params.values())
    assert all(params[name].kind is inspect.Parameter.KEYWORD_ONLY for name in expected[2:])
    assert documented_parameters(f) == expected
    for section in ("Returns", "Raises"):
        assert re.search(rf"^{section}\n-+$", inspect.getdoc(f) or "", re.MULTILINE), f"fedx.{func} lacks {section}"
    assert func in dir(fedx) and func in fedx.__all__


def test_config_from_dict_is_public_at_the_top_level() -> None:
    assert fedx.config_from_dict is fedx.config.config_from_dict
    assert "config_from_dict" in fedx.__all__


# --------------------------------------------------------------------------- a config as a path, a dict or a Config

def test_load_config_takes_a_path_a_dict_or_a_config(tmp_path: Path) -> None:
    doc = config(source="sites.csv", split_by="site")
    path = tmp_path / "fedx.yaml"
    path.write_text(yaml.safe_dump(doc))
    from_file = fedx.load_config(path)
    from_str = fedx.load_config(str(path))
    from_dict = fedx.load_config(doc)
    assert from_file.to_dict() == from_str.to_dict() == from_dict.to_dict()
    assert from_dict.base_dir == Path(".") and from_file.base_dir == tmp_path.resolve()
    assert fedx.load_config(from_file) is from_file
    more = fedx.load_config(from_file, overrides={"federation.rounds": 4})
    assert more.federation.rounds == 4 and from_file.federation.rounds == 1
    assert more.base_dir == from_file.base_dir and more.source == from_file.source
    assert fedx.load_config(doc, overrides={"federation.rounds": "5"}).federation.rounds == 5
    assert doc["federation"]["rounds"] == 1, "the caller's dict is not modified"
    with pytest.raises(ConfigError, match=r"^<dict>: federation\.rounds: expected an integer >= 1, got 0$"):
        fedx.load_config({**doc, "federation": {"rounds": 0}})
    with pytest.raises(TypeError, match=r"expected the path of a YAML file, a dict or a fedx\.Config, got 3$"):
        fedx.load_config(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("func, name", [("run", "result.json"), ("stats", "stats.json")])
def test_run_and_stats_take_a_dict_a_path_or_a_config(tmp_path: Path, func: str, name: str) -> None:
    doc = config(source="sites.csv", split_by="site")
    if func == "stats":
        doc.pop("task")
        doc["data"].pop("target")
        doc["stats"] = {"columns": ["x"]}
    path = tmp_path / "fedx.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = finished(tmp_path / "out", name)
    # Each form of the config gets as far as the run folder, which holds a finished run.
    for given in (doc, path, str(path), fedx.load_config(path)):
        with pytest.raises(ConfigError, match=r"holds a finished run; choose another out_dir, or pass force=True"):
            getattr(fedx, func)(given, out, progress=False)
    with pytest.raises(TypeError, match="load_config: expected the path of a YAML file"):
        getattr(fedx, func)(["not", "a", "config"], out, progress=False)


# --------------------------------------------------------------------------- a DataFrame where a path belongs

def test_a_dataframe_as_data_source_is_named_in_one_line_pointing_to_tables(tmp_path: Path) -> None:
    df = sites_table()
    for call in (lambda: fedx.load_config(config(source=df, split_by="site")),
                 lambda: fedx.run(config(source=df, split_by="site"), tmp_path / "out", progress=False),
                 lambda: fedx.stats({"name": "s", "data": {"source": df}, "stats": {"columns": ["x"]}},
                                    tmp_path / "out", progress=False)):
        with pytest.raises(ConfigError) as err:
            call()
        text = str(err.value)
        assert text.startswith("<dict>: data.source: expected a string, got a pandas DataFrame (260 rows, "
                               "4 columns); a DataFrame goes to fedx.run(config, tables=...)"), text
        assert "\n" not in text and len(text) < 300
        assert "north" not in text and "label" not in text, "nothing of the frame's content"
    assert not (tmp_path / "out").exists()
    with pytest.raises(TypeError, match=r"got a pandas DataFrame \(260 rows, 4 columns\); a DataFrame goes to "
                                        r"fedx\.run\(config, tables=\.\.\.\)") as err:
        fedx.run(df, tmp_path / "out")  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- Python's spelling of the options

def test_errors_reached_through_python_name_python_options(tmp_path: Path) -> None:
    doc = config(source="sites.csv", split_by="site")
    sites_table().to_csv(tmp_path / "sites.csv", index=False)
    cfg = fedx.load_config(doc, overrides={"data.source": str(tmp_path / "sites.csv")})
    out = finished(tmp_path / "run")
    messages = []
    for call, expected in [
        (lambda: fedx.run(cfg, progress=False, resume=True), r"^resume=True needs out_dir: the folder of the run"),
        (lambda: fedx.run(cfg, out, resume=True, force=True, progress=False),
         r"give resume=True \(continue the run in .*\) or force=True \(replace it\), not both"),
        (lambda: fedx.run(cfg, tmp_path / "new", resume=True, progress=False),
         r"holds no checkpoint to resume .* run without resume=True"),
        (lambda: fedx.run(cfg, out, progress=False), r"pass force=True to replace it, or resume=True to continue"),
        (lambda: fedx.run(cfg, tmp_path / "sites.csv", progress=False), r"is a file; out_dir names the folder"),
        (lambda: fedx.run({**doc, "task": None, "data": {"source": "sites.csv"}, "stats": {"columns": ["x"]}}, out,
                          progress=False),
         r"a config with only a stats: section runs with fedx\.stats$"),
    ]:
        with pytest.raises(ConfigError, match=expected) as err:
            call()
        messages.append(str(err.value))
    stats_doc = {"name": "s", "data": {"source": str(tmp_path / "sites.csv"), "split_by": "site"},
                 "stats": {"columns": ["x"]}, "security": {"encryption": "none"}}
    with pytest.raises(ConfigError, match=r"holds a finished run; choose another out_dir, or pass force=True to "
                                          r"replace it$") as err:
        fedx.stats(stats_doc, finished(tmp_path / "stats", "stats.json"), progress=False)
    messages.append(str(err.value))
    assert not any("--" in m for m in messages), messages
    assert not (tmp_path / "new").exists()


def test_the_command_line_names_its_own_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sites_table().to_csv(tmp_path / "sites.csv", index=False)
    path = tmp_path / "fedx.yaml"
    path.write_text(yaml.safe_dump(config(source="sites.csv", split_by="site")))
    out = finished(tmp_path / "run")
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "choose another --out, or pass --force to replace it, or --resume to continue it" in line
    assert "=True" not in line


def test_a_missing_data_file_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "fedx.yaml"
    path.write_text(yaml.safe_dump(config(source="gone.csv", split_by="site")))
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: data\.source: data file not found: "
                                        rf"{re.escape(str(tmp_path.resolve() / 'gone.csv'))}$"):
        fedx.run(path, tmp_path / "out", progress=False)
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "data.source: data file not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- the institution column is no feature

def test_a_mapping_from_groupby_names_its_institution_column() -> None:
    df = sites_table()
    cfg, tables = given_tables(fedx.load_config(config()), dict(tuple(df.groupby("site"))))
    assert cfg.data.split_by == "site"
    assert sorted(tables) == ["east", "north", "south"]
    assert [len(tables[n]) for n, _ in SITES] == [n for _, n in SITES]
    assert all(list(t.index) == list(range(len(t))) for t in tables.values())
    # Tables whose names the column does not hold keep the config as it is.
    renamed = {f"site_{i}": t for i, (_, t) in enumerate(df.groupby("site"))}
    assert given_tables(fedx.load_config(config()), renamed)[0].data.split_by is None
    # A column that is the target is never taken for the institution's name.
    same = {"0": df[df.label == 0].assign(label=0), "1": df[df.label == 1].assign(label=1)}
    assert given_tables(fedx.load_config(config()), same)[0].data.split_by is None


def test_one_dataframe_is_split_by_data_split_by() -> None:
    df = sites_table().sample(frac=1.0, random_state=1).set_index(pd.Index([f"id{i}" for i in range(260)]))
    _, tables = given_tables(fedx.load_config(config(split_by="site")), df)
    assert sorted(tables) == ["east", "north", "south"]
    for name, part in tables.items():
        positions = np.flatnonzero(df["site"].to_numpy() == name)
        assert list(part.index) == list(positions), "rows keep their position in the caller's frame"
        pd.testing.assert_frame_equal(part.reset_index(drop=True), df.iloc[positions].reset_index(drop=True))
    with pytest.raises(ConfigError, match=r"data\.split_by: missing; one table passed as tables= is split by"):
        given_tables(fedx.load_config(config()), df)
    with pytest.raises(ConfigError, match=r"data\.split_by: column 'bank' is not in tables \(columns: site, x, cat"):
        given_tables(fedx.load_config(config(split_by="bank")), df)
    with pytest.raises(ConfigError, match=r"tables: expected a pandas DataFrame, or a mapping"):
        given_tables(fedx.load_config(config(split_by="site")), [df])  # type: ignore[arg-type]


def test_the_institution_column_cannot_be_declared_a_feature() -> None:
    with pytest.raises(ConfigError, match=r"data\.features\.site: the column 'site' is data\.split_by, which names "
                                          r"each institution: it is never a feature"):
        fedx.load_config(config(split_by="site", features={"site": "categorical", "x": "numeric"}))


@pytest.mark.parametrize("split_by, how", [(None, "groupby"), ("site", "groupby"), ("site", "one table")])
def test_the_institution_column_is_not_a_feature_in_process(split_by: str | None, how: str) -> None:
    df = sites_table()
    tables = df if how == "one table" else dict(tuple(df.groupby("site")))
    fed = federation(fedx.load_config(config(**({"split_by": split_by} if split_by else {}))), tables)
    # The features are the table's columns but the target and the institution's name.
    assert list(fed.preprocessor.feature_names) == ["x", "cat[T.b]"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["groupby, no split_by", "one table"])
def test_a_run_on_given_tables_never_uses_the_institution_column(tmp_path: Path, how: str) -> None:
    df = sites_table()
    if how == "one table":
        result = fedx.run(config(split_by="site"), tmp_path / "out", tables=df, progress=False)
    else:
        result = fedx.run(config(), tmp_path / "out", tables=dict(tuple(df.groupby("site"))), progress=False)
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    assert saved["config"]["data"]["split_by"] == "site"
    assert sorted(result.per_institution) == ["east", "north", "south"]
    for name, _ in SITES:
        model = fedx.load_model(tmp_path / "out" / "institutions" / name / "model.pt")
        assert list(model.feature_names_in_) == ["x", "cat"]
        assert list(model.feature_names) == ["x", "cat[T.b]"]
        # Scoring a frame that still holds the column gives the same as without it.
        rows = df[df.site == name]
        np.testing.assert_array_equal(model.predict_proba(rows), model.predict_proba(rows.drop(columns="site")))


def test_rows_of_one_given_table_are_named_by_their_position_in_it(tmp_path: Path) -> None:
    df = sites_table().set_index(pd.Index([f"id{i}" for i in range(260)]))
    df.iloc[130, df.columns.get_loc("label")] = 3   # the 11th row of south, the 131st of the table
    with pytest.raises(DataError, match=r"^south \(tables\): column 'label', row 131: the label is 3, expected 0 "
                                        r"or 1"):
        fedx.run(config(split_by="site"), tmp_path / "out", tables=df, progress=False)
    assert not (tmp_path / "out").exists()
