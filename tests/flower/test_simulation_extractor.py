"""The simulation's message loop (one pass per tick, the oldest undelivered message of each node; woken by a
store; short queue waits) and the server's side of an exchange (largest institutions first; no reply dropped
because one pull outlasted the deadline)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import flwr
import pytest

from fedx.flower import simulation


class _State:
    """What the extractor reads of Flower's in-memory link state: its lock, its stored messages, its check."""

    def __init__(self, messages: dict[str, SimpleNamespace], expired: set[str]) -> None:
        self.lock = threading.RLock()
        self.message_ins_store = dict(messages)
        self.expired = expired
        self.checked: list[set[str]] = []

    def _check_stored_messages(self, ids: set[str]) -> None:
        self.checked.append(set(ids))
        for msg_id in ids & self.expired:
            del self.message_ins_store[msg_id]


def _msg(node: int, delivered: str = "") -> SimpleNamespace:
    return SimpleNamespace(metadata=SimpleNamespace(dst_node_id=node, delivered_at=delivered))


def test_each_node_gets_its_oldest_undelivered_message_once() -> None:
    msgs = {"a1": _msg(1), "b1": _msg(2, delivered="earlier"), "a2": _msg(1), "b2": _msg(2), "c1": _msg(3),
            "x1": _msg(9)}
    state = _State(msgs, expired={"c1"})
    first = simulation._undelivered(state, {1, 2, 3})
    assert first == [msgs["a1"], msgs["b2"]]  # node 3's only message expired; node 9 is not simulated
    assert all(m.metadata.delivered_at for m in first) and msgs["a2"].metadata.delivered_at == ""
    assert state.checked == [set(msgs)] and "c1" not in state.message_ins_store
    assert simulation._undelivered(state, {1, 2, 3}) == [msgs["a2"]]
    assert simulation._undelivered(state, {1, 2, 3}) == []
    assert msgs["x1"].metadata.delivered_at == ""


def test_installed_on_the_flower_it_was_written_for() -> None:
    from flwr.server.superlink.fleet.vce import vce_api

    installed = simulation._install_extractor()
    assert installed == flwr.__version__.startswith(simulation.EXTRACTOR_FLWR)
    if installed:
        assert getattr(vce_api.add_messages_to_queue, "_fedx", False)
        assert simulation._install_extractor()  # a second call keeps the one installed


def test_the_resolver_pickles_as_a_path_whatever_the_number_of_institutions(tmp_path) -> None:
    """Flower's Ray backend pickles the ClientApp with every message: its resolver must not carry all N specs."""
    import shutil

    from ray import cloudpickle  # what Flower's Ray backend pickles with

    from fedx.institution import NodeSpec

    sizes = {}
    for n in (5, 1000):
        specs = [NodeSpec(f"inst_{i}", tmp_path / f"inst_{i}.csv", tmp_path / "out" / f"inst_{i}") for i in range(n)]
        resolve, folder = simulation.spec_resolver(specs)
        try:
            sizes[n] = len(cloudpickle.dumps(resolve))
            again = cloudpickle.loads(cloudpickle.dumps(resolve))
            for i in (0, n // 2, n - 1):
                assert again(SimpleNamespace(node_config={"partition-id": i})) == specs[i]
            assert (folder.stat().st_mode & 0o777) == 0o700
        finally:
            shutil.rmtree(folder)
    assert sizes[1000] < sizes[5] + 64  # only the path's length differs


def test_a_stored_message_wakes_the_extractor() -> None:
    """The extractor's loop waits on an event set by every store: a message is not held for the 0.1 s tick."""
    calls: list[tuple] = []

    class _Linked:
        def store_message_ins(self, *args, **kwargs):
            calls.append((args, kwargs))
            if kwargs.get("fail"):
                raise ValueError("refused")
            return "msg-id"

    state = _Linked()
    event = simulation._wake_on_store(state)
    assert not event.is_set()
    assert state.store_message_ins("m", x=1) == "msg-id" and calls == [(("m",), {"x": 1})]
    assert event.is_set()
    event.clear()
    try:
        state.store_message_ins("bad", fail=True)
    except ValueError:
        pass
    assert event.is_set()  # a refused store still wakes the loop (which then finds nothing new)
    assert simulation._wake_on_store(state) is event  # installed once per state: no wrapper around a wrapper
    event.clear()
    state.store_message_ins("again")
    assert len(calls) == 3 and event.is_set()


@pytest.fixture
def coordinator(monkeypatch: pytest.MonkeyPatch):
    """A server-side Coordinator of a plaintext run, on no Grid yet, able to build messages outside a ServerApp."""
    from flwr.supercore.task_identity import TaskIdentity

    from fedx.config import config_from_dict
    from fedx.flower.coordinator import Coordinator

    for attr, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", 0)):
        monkeypatch.setattr(TaskIdentity, attr, value)
    cfg = config_from_dict({"name": "t", "task": "fraud", "model": {"kind": "logistic"}, "data": {"target": "y"},
                            "security": {"encryption": "none"}})
    return Coordinator(cfg, SimpleNamespace(), None, expected_nodes=2)  # type: ignore[arg-type]


def test_the_largest_institutions_get_their_messages_first(coordinator) -> None:
    """On a simulation's few workers the largest institution must not start last (it would run alone)."""
    from flwr.app import Message, RecordDict

    from fedx.flower.coordinator import NodeView

    c = coordinator
    rows = {1: (100, 20), 2: (9_000, 1_000), 3: (100, 20), 4: (2_000, 500)}
    c.nodes = {nid: NodeView(node_id=nid, name=f"b{nid}", n_train=tr, n_test=te) for nid, (tr, te) in rows.items()}
    msgs = [Message(RecordDict(), dst_node_id=nid, message_type="query") for nid in (1, 2, 3, 4, 7)]
    order = [m.metadata.dst_node_id for m in c.largest_first(msgs)]
    assert order == [2, 4, 1, 3, 7]  # ties keep their order; a node not yet known (7) goes last
    pushed: list[int] = []

    class _Grid:
        def push_messages(self, messages):
            pushed.extend(m.metadata.dst_node_id for m in messages)
            return [f"id{i}" for i, _ in enumerate(messages)]

        def pull_messages(self, ids):
            return []

    c.grid = _Grid()
    c.cfg.federation.timeout = 0.01
    c._exchange(msgs, "train")
    assert pushed == [2, 4, 1, 3, 7]


def test_the_simulation_threads_wait_briefly_on_their_queues() -> None:
    """Flower's workers wait up to 1 s on their queue before they look at the stop event: a run ended up to
    1 s after its server job. The waits are cut to QUEUE_WAIT; messages still go through at once."""
    import queue
    import time

    q: queue.Queue = queue.Queue()
    simulation._prompt(q)
    simulation._prompt(q)  # once per queue
    t0 = time.monotonic()
    try:
        q.get(timeout=1.0)
    except queue.Empty:
        pass
    else:
        raise AssertionError("an empty queue gave a message")
    assert time.monotonic() - t0 < 0.5  # QUEUE_WAIT (0.05 s), far from Flower's 1 s
    q.put("m")
    assert q.get(timeout=1.0) == "m"
    q.put("n")
    assert q.get(block=False) == "n"


def test_both_simulation_loops_are_replaced_and_keep_flowers_own() -> None:
    from flwr.server.superlink.fleet.vce import vce_api

    if not simulation._install_extractor():
        return
    for name in ("add_messages_to_queue", "put_message_into_state"):
        fn = getattr(vce_api, name)
        assert getattr(fn, "_stock", None) is not None and getattr(fn._stock, "__module__", "") == vce_api.__name__


def test_replies_that_arrived_while_one_pull_outlasted_the_deadline_are_collected(coordinator) -> None:
    """Flower's deployment Grid can spend minutes in one pull, retrying the objects of a reply whose sender died
    mid-upload; the replies that arrived meanwhile must be taken, not reported late."""
    import time

    from flwr.app import Message, RecordDict

    c = coordinator
    c.cfg.federation.timeout = 0.3

    def reply(mid: str) -> SimpleNamespace:
        return SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=mid))

    class _Grid:
        pulls = 0

        def push_messages(self, messages):
            return ["dead", "alive"]

        def pull_messages(self, ids):
            self.pulls += 1
            if self.pulls == 1:
                time.sleep(0.5)  # past the deadline, then only the dead node's error
                return [reply("dead")]
            return [reply(m) for m in sorted(ids)]

    c.grid = _Grid()
    msgs = [Message(RecordDict(), dst_node_id=nid, message_type="query") for nid in (1, 2)]
    got = c._exchange(msgs, "train")
    assert sorted(m.metadata.reply_to_message_id for m in got) == ["alive", "dead"]
