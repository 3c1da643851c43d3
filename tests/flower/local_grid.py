"""A Grid that delivers every message to fedx's own ClientApp handler in this process (no Ray, no network).

The server side (Orchestrator, StatsOrchestrator) and the institution side (``client_app._handle``, with
a Flower Context per node that keeps its state between messages) are the real ones; only the transport
is replaced, so that a federation of five institutions runs in seconds. ``down`` makes a node fail from
a given message on, the way the SuperLink answers for a node that died: an error reply.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterable, Sequence

from flwr.app import Context, Error, Message, RecordDict

from fedx.flower import client_app
from fedx.flower.records import read_json
from fedx.institution import NodeSpec

#: ``(institution, phase, round) -> True`` once the node is down.
Down = Callable[[str, str, int], bool]


class InProcessGrid:
    """The transport of a Grid in this process: ``_answer`` gives each pushed message its reply, or None for none.

    It sets Flower's task identity as a ServerApp process would, so that messages can be built outside one.
    """

    def __init__(self) -> None:
        from flwr.supercore.task_identity import TaskIdentity

        for attr, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 0)):
            if getattr(TaskIdentity, attr) is None:  # what a ServerApp process has set when it builds messages
                setattr(TaskIdentity, attr, value)
        self._replies: dict[str, Message] = {}

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for msg in messages:
            mid = uuid.uuid4().hex
            msg.metadata.__dict__["_message_id"] = mid
            ids.append(mid)
            reply = self._answer(msg)
            if reply is not None:
                self._replies[mid] = reply
        return ids

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        return [self._replies.pop(m) for m in list(ids) if m in self._replies]

    def _answer(self, msg: Message) -> Message | None:
        raise NotImplementedError


class LocalGrid(InProcessGrid):
    """Nodes 1..n, one per spec, answered by ``client_app._handle`` in this process."""

    def __init__(self, specs: Sequence[NodeSpec], down: Down | None = None) -> None:
        super().__init__()
        self.specs = {i + 1: s for i, s in enumerate(specs)}
        self.contexts = {nid: Context(run_id=1, node_id=nid, node_config={}, state=RecordDict(), run_config={})
                         for nid in self.specs}
        self.down = down or (lambda name, phase, rnd: False)
        self.dead: set[int] = set()
        self.seen: dict[str, list[str]] = {s.name: [] for s in specs}  # phases each node answered, in order
        #: Every reply the server received, by (institution, phase, round): the server's whole view.
        self.log: dict[tuple[str, str, int], Message] = {}

    def get_node_ids(self) -> list[int]:
        return sorted(self.specs)

    def _answer(self, msg: Message) -> Message:
        msg = copy.deepcopy(msg)
        nid = msg.metadata.dst_node_id
        spec = self.specs[nid]
        req = read_json(msg.content)
        if nid in self.dead or self.down(spec.name, str(req.get("phase")), int(req.get("round", 0))):
            self.dead.add(nid)
            return Message(Error(code=0, reason="node unreachable (it died)"), reply_to=msg)
        self.seen[spec.name].append(str(req.get("phase")))
        reply = client_app._handle(msg, self.contexts[nid], lambda ctx: spec)
        self.log[(spec.name, str(req.get("phase")), int(req.get("round", 0)))] = reply
        return reply
