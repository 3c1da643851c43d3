"""Hostile input at the server: each bad update is refused with a logged reason, and the round goes on when
enough valid ones remain (otherwise it fails with a message naming who was dropped and why)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.app import Message, MetricRecord, RecordDict

import fedx.he as he
from fedx.aggregators import FedAvgRule, ModelState
from fedx.flower.coordinator import NodeView
from fedx.flower.records import json_record, payload_record
from fedx.flower.strategy import FedxStrategy, RoundFailed

SHAPES = [(3, 2), (2,)]


@pytest.fixture(autouse=True)
def _message_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.supercore.task_identity import TaskIdentity

    for attr, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", 0)):
        monkeypatch.setattr(TaskIdentity, attr, value)


def strategy(public=None, min_clients: int = 2) -> FedxStrategy:
    nodes = {i: NodeView(node_id=i, name=f"bank_{i}", n_train=100, ready=True, synced_round=0) for i in (1, 2, 3, 4)}
    s = FedxStrategy(FedAvgRule(), nodes, job={}, public=public, min_clients=min_clients, max_update_norm=10.0)
    s.shapes = s.update_shapes = list(SHAPES)
    s.state = ModelState([np.zeros(sh, np.float32) for sh in SHAPES], {}, 0)
    s.sender = lambda msg: msg.metadata.dst_node_id   # the test's replies name their node here
    return s


def reply(node: int, payload, server_round: int = 1, n: float = 100.0) -> Message:
    content = RecordDict({"fedx": json_record({"phase": "train", "round": server_round, "status": "ok"}),
                          "payload": payload_record(payload),
                          "metrics": MetricRecord({"num-examples": n, "train_loss": 0.5})})
    return Message(content, dst_node_id=node, message_type="train")


def good(scale: float = 0.1) -> list[np.ndarray]:
    return [np.full(SHAPES[0], scale, np.float32), np.full(SHAPES[1], scale, np.float32)]


def test_plaintext_bad_updates_are_dropped_with_reasons(caplog: pytest.LogCaptureFixture) -> None:
    s = strategy()
    nan = good()
    nan[1][0] = np.nan
    replies = [reply(1, good(0.1)), reply(2, good(0.3)),
               reply(3, [np.zeros((2, 3), np.float32), np.zeros(2, np.float32)]),   # misshapen
               reply(4, nan),                                                        # NaN
               reply(99, good(5.0)),                                                 # not in the federation
               reply(2, good(9.0), server_round=0)]                                  # replayed from round 0
    with caplog.at_level(logging.WARNING):
        s.aggregate_train(1, replies)
    dropped = s.last_outcome.dropped
    assert "shape (2, 3)" in dropped["bank_3"]
    assert "NaN" in dropped["bank_4"]
    assert "not part of this federation" in dropped["node 99"]
    assert sorted(s.last_outcome.accepted) == ["bank_1", "bank_2"]
    assert "replay" in caplog.text
    # The model moved by the mean of the two valid deltas only.
    np.testing.assert_allclose(s.state.params[0], np.full(SHAPES[0], 0.2), rtol=1e-6)


def test_oversized_update_is_refused() -> None:
    s = strategy()
    s.aggregate_train(1, [reply(1, good()), reply(2, good()), reply(3, good(1e3))])
    assert "exceeds federation.max_update_norm" in s.last_outcome.dropped["bank_3"]


def test_too_few_valid_updates_fail_the_round_with_the_reasons() -> None:
    s = strategy(min_clients=3)
    with pytest.raises(RoundFailed, match=r"round 1: only 2 valid update\(s\), federation.min_clients is 3.*bank_3"):
        s.aggregate_train(1, [reply(1, good()), reply(2, good()), reply(3, [np.zeros(3, np.float32)])])


def test_encrypted_updates_under_other_keys_or_tampered_are_refused() -> None:
    keys, other = he.keygen("bfv-compact"), he.keygen("bfv-compact")
    s = strategy(public=keys.public)

    def blob(k, update) -> bytes:
        return he.encrypt(k.secret, update, weight=100.0, total_weight=400.0)

    tampered = bytearray(blob(keys, good()))
    tampered[-10] ^= 0xFF
    replies = [reply(1, blob(keys, good(0.1))), reply(2, blob(keys, good(0.3))),
               reply(3, blob(other, good())),                                   # foreign keys
               reply(4, bytes(tampered))]                                       # tampered body
    s.aggregate_train(1, replies)
    assert "wrong or foreign keys" in s.last_outcome.dropped["bank_3"]
    assert "bank_4" in s.last_outcome.dropped
    assert sorted(s.last_outcome.accepted) == ["bank_1", "bank_2"]
    mean, weight = he.decrypt(keys.secret, s.aggregates[1])
    np.testing.assert_allclose(mean[0], np.full(SHAPES[0], 0.2), atol=1e-4)
    assert weight == 200.0


def test_plaintext_update_in_an_encrypted_run_is_refused() -> None:
    keys = he.keygen("bfv-compact")
    s = strategy(public=keys.public)
    with pytest.raises(RoundFailed, match="plaintext update in an encrypted run"):
        s.aggregate_train(1, [reply(1, good()), reply(2, good())])
