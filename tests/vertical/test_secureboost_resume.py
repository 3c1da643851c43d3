"""Per-tree checkpoints of a simulated vertical SecureBoost run, and `fedx run --resume` continuing them.

An interrupted run (an error in the middle of a tree, or a subprocess killed once its checkpoint counts some
trees) resumed with --resume grows the trees, thresholds and predictions of the uninterrupted run, in plaintext
and under CKKS, also to a larger model.trees; every party's checkpoint holds only its own values; the ledgers
still verify against the relay's receipts; and a resume that cannot give the same model is refused.

Two runs of one config draw two PSI run secrets, hence two hold-outs: the uninterrupted run that a resumed one
is compared with uses the resumed run's secret (pinned here, or read from its label party's checkpoint).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

import fedx
import fedx.vertical.run as vertical_run
from fedx.cli import main
from fedx.data.synthetic.credit import generate_credit
from fedx.errors import ConfigError, DataError, PSIError
from fedx.vertical import secureboost
from fedx.vertical.psi import PSIParty
from fedx.vertical.secureboost_model import SecureBoostModel, load_joint

from test_secureboost_run import credit_doc

REPO = Path(__file__).resolve().parents[2]
PARTIES = ("bank", "telecom", "utility")


def small_doc(trees: int = 5, encryption: str = "none", **model: object) -> dict:
    """A few hundred shared rows (323 of 600 customers; 226 to fit), shallow trees, row and column sampling."""
    base = credit_doc()
    return credit_doc(model={"kind": "gbdt", "trees": trees, "depth": 3, "learning_rate": 0.3, "bins": 16,
                             "subsample": 0.8, "colsample": 0.7, **model},
                      data={**base["data"], "params": {"n_customers": 600}},
                      security={"encryption": encryption, "psi_reveal": "all"}, report={"baselines": []})


def pin_secret(monkeypatch: pytest.MonkeyPatch, secret: bytes) -> None:
    """The label party's PSI draws ``secret`` (unless a resume brings its own)."""
    def pinned(name: str, *args: object, secret_: bytes = secret, **kw: object) -> PSIParty:
        if kw.get("secret") is None and name == kw["label_party"]:
            kw["secret"] = secret_
        return PSIParty(name, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(vertical_run, "PSIParty", pinned)


@pytest.fixture
def interrupt(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Raise in the middle of a tree: the feature party's answer to the first split of tree ``at`` (0-based)."""
    where = {"at": -1}
    split = secureboost.SecureBoostFeatureParty.split

    def failing(self: secureboost.SecureBoostFeatureParty, message: bytes) -> bytes:
        head, _ = secureboost._unpack(message)
        if int(head["tree"]) == where["at"]:
            raise RuntimeError(f"interrupted in tree {where['at'] + 1}")
        return split(self, message)

    monkeypatch.setattr(secureboost.SecureBoostFeatureParty, "split", failing)
    yield where


def same_model(a: SecureBoostModel, b: SecureBoostModel) -> None:
    assert len(a.trees) == len(b.trees)
    for k, (x, y) in enumerate(zip(a.trees, b.trees)):
        for field in ("owner", "feature", "bin", "default_left", "left", "right", "value", "gain", "cover"):
            assert np.array_equal(getattr(x, field), getattr(y, field)), f"tree {k + 1}: {field} differs"
    assert a.base_margin == b.base_margin
    for p in PARTIES:
        assert a.shares[p].table == b.shares[p].table, f"the thresholds of {p} differ"


def held_out(n: int = 600) -> dict[str, object]:
    """Every party's columns of the same customers (those all three hold), for the joint predictor."""
    data = generate_credit(n, seed=3)
    ids = sorted(set(data.bank.customer_id) & set(data.telecom.customer_id) & set(data.utility.customer_id))
    return {p: getattr(data, p).set_index("customer_id").loc[ids] for p in PARTIES}


def verify_ledgers(run: Path) -> None:
    for p in PARTIES:
        assert main(["audit", "verify", str(run / "institutions" / p / "ledger.jsonl"), "--receipts",
                     str(run / "receipts.jsonl"), "--institution", p]) == 0


def test_a_run_interrupted_in_a_tree_resumes_to_the_uninterrupted_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interrupt: dict[str, int]) -> None:
    pin_secret(monkeypatch, bytes(range(32)))
    doc = small_doc(trees=5)
    straight = fedx.run(doc, tmp_path / "straight", progress=False)
    interrupt["at"] = 3
    with pytest.raises(RuntimeError, match="interrupted in tree 4"):
        fedx.run(doc, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    index = json.loads((run / "checkpoint" / "index.json").read_text())
    assert index["round"] == 3 and index["partition"] == "vertical" and [h["tree"] for h in index["history"]] == [1, 2, 3]
    assert not (run / "result.json").exists()
    interrupt["at"] = -1
    monkeypatch.setattr(vertical_run, "PSIParty", PSIParty)   # the resume brings the secret it kept, no pin
    resumed = fedx.run(doc, run, progress=False, resume=True)
    assert resumed.model["resumed_from"] == 3 and [h["tree"] for h in resumed.history] == [1, 2, 3, 4, 5]
    a, b = load_joint(tmp_path / "straight"), load_joint(run)
    same_model(a, b)
    assert resumed.metrics["test"] == straight.metrics["test"] and resumed.metrics["test_rows"] > 50
    tables = held_out()
    np.testing.assert_array_equal(a.predict_proba(tables), b.predict_proba(tables))
    # the messages of the interrupted tree, and those of the resume, are in the ledgers, which still verify
    verify_ledgers(run)
    kinds = [json.loads(line)["kind"] for line in (run / "institutions" / "telecom" / "ledger.jsonl")
             .read_text().splitlines()]
    assert kinds.count("psi-hello") == 2 and "sb_routed" in kinds


def test_each_party_checkpoints_only_its_own_part(tmp_path: Path, interrupt: dict[str, int]) -> None:
    interrupt["at"] = 2
    with pytest.raises(RuntimeError):
        fedx.run(small_doc(trees=4), tmp_path / "run", progress=False)
    inst = tmp_path / "run" / "institutions"
    label = [json.loads((inst / "bank" / "checkpoint" / f"tree-{t:05d}.json").read_text()) for t in range(2)]
    heads = {p: json.loads((inst / p / "checkpoint" / "party.json").read_text()) for p in PARTIES}
    assert heads["bank"]["parties"] == list(PARTIES) and len(bytes.fromhex(heads["bank"]["secret"])) == 32
    for p in PARTIES:
        assert heads[p]["psi"] == heads["bank"]["psi"]            # one intersection, one order at every party
        files = sorted((inst / p / "checkpoint").iterdir())
        assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
        for t in range(2):
            doc = json.loads((inst / p / "checkpoint" / f"tree-{t:05d}.json").read_text())
            owner = np.asarray(label[t]["structure"]["owner"])
            mine = sorted(int(n) for n in np.flatnonzero(owner == PARTIES.index(p)))
            # exactly its own splits of the tree, with their thresholds; nobody else's
            assert sorted(s[0] for s in doc["splits"]) == mine
            assert ("structure" in doc) == (p == "bank")
        if p != "bank":
            assert "secret" not in heads[p] and "parties" not in heads[p]
    assert all(len(label[t]["structure"]["owner"]) > 1 for t in range(2))
    assert set(label[0]["structure"]) == {"owner", "feature", "bin", "default_left", "left", "right", "value",
                                          "gain", "cover"}   # the label party holds bins, never a partner's threshold


def test_a_resume_under_ckks_grows_the_uninterrupted_trees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           interrupt: dict[str, int]) -> None:
    """Each run (and each resume) makes its own CKKS key, so the noise differs; the sums snapped to the grid and
    the trees do not."""
    pin_secret(monkeypatch, bytes(range(1, 33)))
    doc = small_doc(trees=3, encryption="ckks", depth=2)
    fedx.run(doc, tmp_path / "straight", progress=False)
    interrupt["at"] = 2
    with pytest.raises(RuntimeError):
        fedx.run(doc, tmp_path / "run", progress=False)
    interrupt["at"] = -1
    monkeypatch.setattr(vertical_run, "PSIParty", PSIParty)
    fedx.run(doc, tmp_path / "run", progress=False, resume=True)
    a, b = load_joint(tmp_path / "straight"), load_joint(tmp_path / "run")
    same_model(a, b)
    tables = held_out()
    np.testing.assert_array_equal(a.predict_proba(tables), b.predict_proba(tables))
    verify_ledgers(tmp_path / "run")


def test_resume_with_more_trees_and_the_finished_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    pin_secret(monkeypatch, bytes(range(2, 34)))
    fedx.run(small_doc(trees=5), tmp_path / "straight", progress=False)
    path = tmp_path / "credit.yaml"
    path.write_text(yaml.safe_dump(small_doc(trees=3), sort_keys=False))
    run = tmp_path / "run"
    assert main(["run", str(path), "--out", str(run), "--quiet"]) == 0
    monkeypatch.setattr(vertical_run, "PSIParty", PSIParty)
    capsys.readouterr()
    # a finished run is not run again without --resume or --force
    assert main(["run", str(path), "--out", str(run)]) == 2
    said = capsys.readouterr().err
    assert "holds a finished run" in said and "--force" in said and "--resume" in said
    # --resume with the same trees: nothing left to grow, the same model
    before = load_joint(run)
    assert main(["run", str(path), "--out", str(run), "--resume"]) == 0
    assert "all 3 trees are grown, nothing left to grow" in capsys.readouterr().out
    same_model(before, load_joint(run))
    # more trees: continues to the new count, as the run of 5 trees grows them
    path.write_text(yaml.safe_dump(small_doc(trees=5), sort_keys=False))
    assert main(["run", str(path), "--out", str(run), "--resume", "--quiet"]) == 0
    same_model(load_joint(tmp_path / "straight"), load_joint(run))
    result = json.loads((run / "result.json").read_text())
    assert result["model"]["trees"] == 5 and result["model"]["resumed_from"] == 3
    assert [h["tree"] for h in result["history"]] == [1, 2, 3, 4, 5]
    verify_ledgers(run)
    # fewer trees than grown, or another setting, is refused
    path.write_text(yaml.safe_dump(small_doc(trees=4), sort_keys=False))
    assert main(["run", str(path), "--out", str(run), "--resume"]) == 2
    assert "model.trees: 4 is fewer than the 5 tree(s)" in capsys.readouterr().err
    path.write_text(yaml.safe_dump(small_doc(trees=6, learning_rate=0.2), sort_keys=False))
    assert main(["run", str(path), "--out", str(run), "--resume"]) == 2
    said = capsys.readouterr().err
    assert "the checkpoint was made under another config: model.learning_rate (0.3 -> 0.2)" in said
    assert "only federation.rounds, federation.timeout, report.plots, model.trees may change" in said


def test_a_resume_over_other_rows_is_refused(tmp_path: Path) -> None:
    data = generate_credit(600, seed=3)
    tables = {p: getattr(data, p) for p in PARTIES}
    doc = small_doc(trees=2)
    fedx.run(doc, tmp_path / "run", tables=tables, progress=False)
    with pytest.raises(ConfigError, match="holds no checkpoint to resume"):
        fedx.run(doc, tmp_path / "none", tables=tables, progress=False, resume=True)
    shared = set(data.bank.customer_id) & set(data.telecom.customer_id) & set(data.utility.customer_id)
    gone = data.telecom[~data.telecom.customer_id.isin(sorted(shared)[:3])]
    with pytest.raises(PSIError, match=r"party bank: cannot resume: the private set intersection differs .*323 shared "
                                       r"rows then, 320 now"):
        fedx.run(doc, tmp_path / "run", tables={**tables, "telecom": gone}, progress=False, resume=True)
    changed = data.utility.copy()
    changed.loc[changed.index[:40], "avg_days_late"] += 1.0
    with pytest.raises(DataError, match="party utility: cannot resume: its columns of the shared training rows differ"):
        fedx.run(doc, tmp_path / "run", tables={**tables, "utility": changed}, progress=False, resume=True)
    fedx.run(small_doc(trees=3), tmp_path / "run", tables=tables, progress=False, resume=True)   # unchanged: goes on
    assert len(load_joint(tmp_path / "run").trees) == 3


def test_a_killed_run_loses_at_most_the_tree_in_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`fedx run` in a subprocess, each tree slowed down (timing only), killed once its checkpoint counts 2 trees."""
    path = tmp_path / "credit.yaml"
    path.write_text(yaml.safe_dump(small_doc(trees=6), sort_keys=False))
    run = tmp_path / "run"
    slow = ("import sys, time\n"
            "from fedx.vertical import secureboost as sb\n"
            "grad = sb.SecureBoostLabelParty.gradients\n"
            "def slow(self, tree, margin):\n"
            "    time.sleep(0.4)\n"
            "    return grad(self, tree, margin)\n"
            "sb.SecureBoostLabelParty.gradients = slow\n"
            "from fedx.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen([sys.executable, "-c", slow, "run", str(path), "--out", str(run), "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    index = run / "checkpoint" / "index.json"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if index.exists() and json.loads(index.read_text())["round"] >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()
    done = json.loads(index.read_text())["round"]
    assert 2 <= done < 6 and not (run / "result.json").exists()
    assert main(["run", str(path), "--out", str(run), "--resume", "--quiet"]) == 0
    resumed = load_joint(run)
    # the uninterrupted run under the killed run's PSI secret (kept by its label party)
    secret = bytes.fromhex(json.loads((run / "institutions" / "bank" / "checkpoint" / "party.json").read_text())
                           ["secret"])
    pin_secret(monkeypatch, secret)
    fedx.run(small_doc(trees=6), tmp_path / "straight", progress=False)
    same_model(load_joint(tmp_path / "straight"), resumed)
    result = json.loads((run / "result.json").read_text())
    assert result["model"]["resumed_from"] == done and len(result["history"]) == 6
    verify_ledgers(run)
