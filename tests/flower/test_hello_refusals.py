"""At the server: an institution that refuses the run because of its data stops the run with its name and its
reason (``federation.min_clients`` is for nodes that are down), and a worker that ran out of memory is one
clear error. The node side: an institution refuses at ``hello`` with the line that names its file and row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flwr.app import Error, Message, RecordDict

from fedx.config import config_from_dict
from fedx.errors import DataError, FederationError
from fedx.flower.coordinator import Coordinator
from fedx.flower.records import json_record
from fedx.institution import Institution, NodeSpec

CFG = {"name": "t", "task": "fraud", "model": {"kind": "logistic"}, "data": {"target": "y"},
       "federation": {"min_clients": 2}, "security": {"encryption": "none"}}


@pytest.fixture(autouse=True)
def _message_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.supercore.task_identity import TaskIdentity

    for attr, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", 0)):
        monkeypatch.setattr(TaskIdentity, attr, value)


class _Grid:
    def get_node_ids(self) -> list[int]:
        return [1, 2, 3]


def coordinator(replies: dict[int, Message]) -> Coordinator:
    c = Coordinator(config_from_dict(CFG), _Grid(), None, expected_nodes=3, wait_seconds=1.0)  # type: ignore[arg-type]
    owner = {id(msg): node for node, msg in replies.items()}
    c._exchange = lambda msgs, what: [replies[m.metadata.dst_node_id] for m in msgs]  # type: ignore[method-assign]
    c.sender = lambda msg: owner[id(msg)]  # type: ignore[method-assign]
    return c


def ok(node: int) -> Message:
    doc = {"phase": "hello", "status": "ok", "name": f"bank_{node}", "n_train": 10, "n_test": 2, "fingerprint": ""}
    return Message(RecordDict({"fedx": json_record(doc)}), dst_node_id=node, message_type="query")


def failed(node: int, reason: str) -> Message:
    """What Flower answers in place of a node whose ClientApp did not reply (a node down, a worker killed)."""
    return Message(Error(code=0, reason=reason), reply_to=Message(RecordDict(), dst_node_id=node, message_type="query"))


def refused(node: int, reason: str, error_type: str = "SchemaError") -> Message:
    doc = {"phase": "hello", "status": "error", "name": f"bank_{node}", "reason": reason, "error_type": error_type}
    return Message(RecordDict({"fedx": json_record(doc)}), dst_node_id=node, message_type="query")


def test_an_institution_refusing_its_data_stops_the_run_with_its_name_and_reason() -> None:
    reason = "bank_3 (cards.csv): column 'y', row 4: the label is NaN (missing); the column must be complete"
    c = coordinator({1: ok(1), 2: ok(2), 3: refused(3, reason)})
    # Two institutions answered, min_clients is 2: before, the run went on without bank_3.
    with pytest.raises(FederationError) as err:
        c.connect()
    assert str(err.value) == f"institution 'bank_3' refused the run (hello): {reason}"


def test_a_node_that_is_down_is_still_left_out_within_min_clients() -> None:
    c = coordinator({1: ok(1), 2: ok(2), 3: failed(3, "node unreachable")})
    c.connect()
    assert sorted(n.name for n in c.nodes.values()) == ["bank_1", "bank_2"]


def test_a_worker_out_of_memory_is_one_clear_error() -> None:
    oom = failed(2, "<class 'ray.exceptions.OutOfMemoryError'>:<'Task was killed due to the node running low on "
                    "memory.'>")
    c = coordinator({1: ok(1), 2: oom, 3: ok(3)})
    with pytest.raises(FederationError, match=r"^node 2: the worker that runs this institution ran out of memory "
                                              r"during hello\. .*data\.drop"):
        c.connect()


def test_the_node_refuses_at_hello_naming_its_file_and_row(tmp_path: Path) -> None:
    df = pd.DataFrame({"x": np.arange(10.0), "y": [0, 1] * 5})
    df.loc[6, "x"] = np.inf
    path = tmp_path / "cards.csv"
    df.to_csv(path, index=False)
    inst = Institution(NodeSpec(name="bank_a", data=path, out_dir=tmp_path / "out"), config_from_dict(CFG))
    with pytest.raises(DataError, match=r"^bank_a \(cards\.csv\): column 'x', row 7: the value is inf"):
        inst.hello()


def _reply_doc(msg: Any) -> dict[str, Any]:
    from fedx.flower.records import read_json

    return read_json(msg)


def test_a_refusal_reply_carries_the_institution_name(tmp_path: Path) -> None:
    from fedx.flower.client_app import _error

    content = _error({"phase": "hello"}, DataError("bad"), NodeSpec(name="bank_a", data=tmp_path, out_dir=tmp_path))
    doc = _reply_doc(content)
    assert doc["name"] == "bank_a" and doc["status"] == "error" and doc["error_type"] == "DataError"


def test_a_deployed_node_table_needs_no_institution_column(tmp_path: Path) -> None:
    # data.split_by names the column that splits a pooled source; a node's own file holds one institution and
    # does not carry it. Its table is checked, and a real fault in it is still found.
    cfg = config_from_dict({**CFG, "data": {"target": "y", "split_by": "bank"}})
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=40), "y": rng.integers(0, 2, 40)})
    path = tmp_path / "own.csv"
    df.to_csv(path, index=False)
    Institution(NodeSpec(name="bank_a", data=path, out_dir=tmp_path / "out"), cfg).check_data()
    df.loc[3, "x"] = np.inf
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"bank_a \(own.csv\): column 'x', row 4"):
        Institution(NodeSpec(name="bank_a", data=path, out_dir=tmp_path / "out2"), cfg).check_data()


def test_hello_names_the_kind_of_each_undeclared_column_and_refuses_numbers_with_typos(tmp_path: Path) -> None:
    # The server settles one schema from these kinds; a text column of numbers with a typo is refused first.
    df = pd.DataFrame({"age": np.arange(20.0), "region": ["n", "s"] * 10, "note": [None] * 20, "y": [0, 1] * 10,
                       "id": np.arange(20)})
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    cfg = config_from_dict({**CFG, "data": {"target": "y", "drop": ["id"]}})
    doc = Institution(NodeSpec(name="bank_a", data=path, out_dir=tmp_path / "out"), cfg).hello()
    assert doc["features"] == {"age": "numeric", "region": "categorical", "note": "empty"}
    df["age"] = df["age"].astype(object)
    df.loc[4, "age"] = "sixty"
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"^bank_a \(t\.csv\): column 'age' holds numbers except for 1 of 20"):
        Institution(NodeSpec(name="bank_a", data=path, out_dir=tmp_path / "out2"), cfg).hello()


ENCRYPTED = {**CFG, "security": {"encryption": "bfv-compact"}}


def _hello(inst: Institution, node: int) -> Message:
    doc = {"phase": "hello", "status": "ok", **inst.hello()}
    return Message(RecordDict({"fedx": json_record(doc)}), dst_node_id=node, message_type="query")


def test_an_institution_with_other_he_keys_stops_the_run_naming_it_and_both_fingerprints(tmp_path: Path) -> None:
    from fedx import he

    rng = np.random.default_rng(1)
    (tmp_path / "own.csv").write_text(pd.DataFrame({"x": rng.normal(size=30), "y": [0, 1, 1] * 10}).to_csv(index=False))
    shared, stray = he.keygen("bfv-compact"), he.keygen("bfv-compact")   # the same parameters, other keys
    shared.save(tmp_path / "shared")
    stray.save(tmp_path / "stray")
    cfg = config_from_dict(ENCRYPTED)
    insts = {node: Institution(NodeSpec(name=f"bank_{node}", data=tmp_path / "own.csv", out_dir=tmp_path / str(node),
                                        keys=tmp_path / ("stray" if node == 2 else "shared") / "secret.fxk"), cfg)
             for node in (1, 2, 3)}

    def coordinator_of(public: he.PublicContext) -> Coordinator:
        replies = {node: _hello(inst, node) for node, inst in insts.items()}
        c = Coordinator(cfg, _Grid(), public, expected_nodes=3, wait_seconds=1.0)  # type: ignore[arg-type]
        owner = {id(msg): node for node, msg in replies.items()}
        c._exchange = lambda msgs, what: [replies[m.metadata.dst_node_id] for m in msgs]  # type: ignore[method-assign]
        c.sender = lambda msg: owner[id(msg)]  # type: ignore[method-assign]
        return c

    # Two institutions would still make min_clients: before, bank_2 was left out with a warning.
    with pytest.raises(FederationError) as err:
        coordinator_of(he.load_public(tmp_path / "shared" / "public.fxk")).connect()
    assert str(err.value).startswith(
        f"institution 'bank_2' holds HE keys with fingerprint {stray.fingerprint_text}, and the server's public key "
        f"has fingerprint {shared.fingerprint_text}: every institution needs the secret.fxk")
    # Against the stray public key, the two others are named: the first in the error, the count of the rest.
    with pytest.raises(FederationError, match=rf"^institution 'bank_1' holds HE keys with fingerprint "
                                              rf"{shared.fingerprint_text}, .* \(and 1 more institution\(s\): see the "
                                              rf"log\)"):
        coordinator_of(stray.public).connect()
    # When every institution holds the server's keys, all three join.
    insts[2] = Institution(NodeSpec(name="bank_2", data=tmp_path / "own.csv", out_dir=tmp_path / "2b",
                                    keys=tmp_path / "shared"), cfg)
    c = coordinator_of(shared.public)
    c.connect()
    assert sorted(n.name for n in c.nodes.values()) == ["bank_1", "bank_2", "bank_3"]
