"""How the vertical relay ends a run: every party is told, and a party already found gone is not waited for.

The transport is a small Grid in this process that answers for the nodes that are up and never for the one
that is not (the way a dead SuperNode leaves a message unanswered).
"""

from __future__ import annotations

import time
from pathlib import Path

from flwr.app import Message, RecordDict
from local_grid import InProcessGrid

from fedx.config import config_from_dict
from fedx.flower.records import json_record, read_json
from fedx.flower.vertical_relay import VerticalRelay

PARTIES = {"insurer": 1, "hospital_a": 2, "hospital_b": 3}


class SilentNodeGrid(InProcessGrid):
    """Nodes 1..3; every message to a node in ``silent`` goes unanswered."""

    def __init__(self, silent: set[int]) -> None:
        super().__init__()
        self.silent = silent
        self.pushed: list[tuple[int, dict]] = []

    def get_node_ids(self) -> list[int]:
        return sorted(PARTIES.values())

    def _answer(self, msg: Message) -> Message | None:
        nid = msg.metadata.dst_node_id
        self.pushed.append((nid, read_json(msg.content)))
        if nid in self.silent:
            return None
        return Message(RecordDict({"fedx": json_record({"status": "ok"})}), reply_to=msg)


def relay(tmp_path: Path, grid: SilentNodeGrid, timeout: float) -> VerticalRelay:
    parties = {name: {"source": f"{name}.csv", "features": {f"x_{name}": "numeric"}} for name in PARTIES}
    parties["insurer"].update(target="claims")
    cfg = config_from_dict({"name": "relay-end", "task": "claim_frequency", "model": {"kind": "glm"},
                            "data": {"partition": "vertical", "id": "person_id", "label_party": "insurer",
                                     "parties": parties, "test_fraction": 0.0},
                            "federation": {"aggregator": "newton", "rounds": 3, "timeout": timeout},
                            "security": {"encryption": "none", "psi_reveal": "all"}}, base_dir=tmp_path)
    r = VerticalRelay(cfg, grid, tmp_path / "server-out", expected_nodes=3, wait_seconds=1)  # type: ignore[arg-type]
    r.node_of = dict(PARTIES)
    return r


def test_a_party_found_gone_is_told_but_not_waited_for(tmp_path: Path) -> None:
    grid = SilentNodeGrid(silent={3})
    r = relay(tmp_path, grid, timeout=20)
    r.gone.add("hospital_b")
    t0 = time.monotonic()
    r._end("failed", "vertical run: party 'hospital_b' did not answer")
    assert time.monotonic() - t0 < 5
    told = {nid: doc for nid, doc in grid.pushed}
    assert set(told) == {1, 2, 3}
    assert all(doc["phase"] == "v-end" and doc["status"] == "failed" for doc in told.values()), told


def test_a_party_not_known_gone_is_waited_for_up_to_the_timeout(tmp_path: Path) -> None:
    grid = SilentNodeGrid(silent={3})
    r = relay(tmp_path, grid, timeout=2)
    t0 = time.monotonic()
    r._end("ok", None)
    assert time.monotonic() - t0 >= 2
    assert {nid for nid, _ in grid.pushed} == {1, 2, 3}
