"""What every fedx server job shares: finding the institutions, and asking them things over the Grid.

:class:`Coordinator` waits for the nodes, runs the ``hello`` phase (names, sizes, key fingerprints,
column kinds), and sends a phase to many nodes at once, collecting the replies until they are all in
or ``federation.timeout`` passes. Training (:class:`~fedx.flower.server_app.Orchestrator`) and
statistics (:class:`~fedx.flower.stats_server.StatsOrchestrator`) build on it.

A reply is attributed to the node the request went to (through ``reply_to_message_id``): when a node
dies, the SuperLink answers in its place, and the error must still be charged to that node.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp import Grid

from ..config import Config
from ..data.schema import merge_column_kinds
from ..errors import FederationError, FedxError
from ..privacy.audit import AuditLedger, entries, head_from
from . import protocol as P
from .records import json_record, payload_parts, read_json

log = logging.getLogger(__name__)

Event = Callable[[str, Mapping[str, Any]], None]


@dataclass
class NodeView:
    """What the server knows of one institution's node."""

    node_id: int
    name: str = ""
    n_train: int = 0
    n_test: int = 0
    ready: bool = False          # has the shared preprocessing and the initial model
    synced_round: int = -1       # the round its copy of the global model is at (-1: unknown)


def log_event(kind: str, info: Mapping[str, Any]) -> None:
    """The default progress callback: a log line per round."""
    if kind == "round_end":
        log.info("round %d: %s (%.1f s)", info["round"], info["metrics"], info["seconds"])


#: Refusals of these kinds stop the run: its data or config is wrong, and the node is up (nodes that are
#: down are what ``federation.min_clients`` allows for).
_STOPPING_ERRORS = ("DataError", "SchemaError", "ConfigError")
#: How Ray reports a worker killed for lack of memory (its OutOfMemoryError, or the memory monitor).
_OOM_SIGNS = ("OutOfMemoryError", "out of memory", "out_of_memory", "running low on memory", "memory monitor")


def stops_the_run(phase: str, doc: Mapping[str, Any]) -> bool:
    """Whether an institution's refusal stops the run: any refusal to join (``hello``), or bad data later."""
    return phase == P.HELLO or doc.get("error_type") in _STOPPING_ERRORS


def out_of_memory(reason: str | None) -> bool:
    """Whether an error a worker reported (a Flower error reason) means that it ran out of memory."""
    text = (reason or "").lower()
    return any(sign.lower() in text for sign in _OOM_SIGNS)


def poll_seconds(pending: int) -> float:
    """How long to wait before asking again for the replies of ``pending`` messages.

    Each ask costs the link state a check of every pending message, so asking every 0.02 s would cost a
    round of N institutions N x N checks; the wait grows with N instead (0.02 s for a few, 0.22 s at
    1,000, never more than 0.25 s), which keeps the checks per round about linear.
    """
    return min(0.25, 0.02 + 2e-4 * pending)


class Coordinator:
    """Finds the institutions and exchanges phases with them.

    Parameters
    ----------
    cfg : Config
        The job's config; ``federation.min_clients`` and ``federation.timeout`` apply.
    grid : Grid
        Flower's handle to the connected nodes.
    public : he.PublicContext or None
        The public HE context when encryption is on.
    expected_nodes : int
        How many nodes to wait for before starting (at least ``federation.min_clients``).
    on_event : callable, optional
        Called with ``(kind, info)`` as the job progresses.
    wait_seconds : float
        How long to wait for the expected nodes to connect.
    receipts : Path, optional
        A hash-chained ledger (:class:`~fedx.privacy.audit.AuditLedger`) of every reply received: round,
        phase, institution, bytes and sha256, the counterpart of each institution's own ledger. Each
        receipt records the ledger head that came with the reply, and each request carries the head of
        the receipts for its institution (:meth:`receipt_head`): the two files anchor each other.
    """

    def __init__(self, cfg: Config, grid: Grid, public: Any, expected_nodes: int,
                 on_event: Event | None = None, wait_seconds: float = 120.0, receipts: Path | None = None) -> None:
        self.cfg = cfg
        self.grid = grid
        self.public = public
        self.expected_nodes = max(expected_nodes, cfg.federation.min_clients)
        self.on_event = on_event or log_event
        self.wait_seconds = wait_seconds
        self.nodes: dict[int, NodeView] = {}
        self.job = cfg.to_dict()
        self.institutions: dict[str, dict[str, Any]] = {}
        self._sent_to: dict[str, int] = {}
        self._receipts = AuditLedger(receipts) if receipts is not None else None
        self._last_receipt: dict[str, dict[str, Any]] = {}  # institution -> seq and hash of its latest receipt
        self.masking: Any = None
        if cfg.security.masking == "pairwise" and self.encrypted:
            from .masking import ServerMasking

            self.masking = ServerMasking(self, cfg.security.threshold)
        if self._receipts is not None and self._receipts.head["seq"]:
            for e in entries(self._receipts.path):  # a resumed run continues its receipts
                self._last_receipt[str(e["checks"].get("institution"))] = {"seq": e["seq"], "hash": e["hash"]}

    @property
    def encrypted(self) -> bool:
        """Whether the job runs under encryption."""
        return self.public is not None

    # ------------------------------------------------------------------ finding the institutions

    def connect(self) -> dict[int, dict[str, Any]]:
        """Wait for the nodes, and learn who they are (``hello``); return each node's answer."""
        deadline = time.monotonic() + self.wait_seconds
        ids: list[int] = []
        while time.monotonic() < deadline:
            ids = sorted(self.grid.get_node_ids())
            if len(ids) >= self.expected_nodes:
                break
            time.sleep(0.2)
        if len(ids) < self.cfg.federation.min_clients:
            raise FederationError(f"only {len(ids)} institution(s) connected within {self.wait_seconds:.0f} s; "
                                  f"federation.min_clients is {self.cfg.federation.min_clients}")
        for nid in ids:
            self.nodes.setdefault(nid, NodeView(node_id=nid))
        replies = self.ask(P.HELLO, {nid: {} for nid in ids}, "hello")
        self._check_fingerprints(replies)
        names: dict[str, int] = {}
        for nid, doc in replies.items():
            name = str(doc["name"])
            if name in names:
                raise FederationError(f"two nodes call themselves {name!r}; each institution needs its own name")
            names[name] = nid
            node = self.nodes[nid]
            node.name, node.n_train, node.n_test = name, int(doc.get("n_train", 0)), int(doc.get("n_test", 0))
            self.institutions[name] = {k: doc[k] for k in ("n_train", "n_test", "n_rows") if k in doc}
        for nid in set(self.nodes) - set(replies):
            self.nodes.pop(nid)
        if self.cfg.data.features is None and any("features" in d for d in replies.values()):
            # Settle one schema for all from the kinds each institution sees; later phases use it.
            self.job["data"]["features"] = merge_column_kinds([doc.get("features", {}) for doc in replies.values()])
        if len(self.nodes) < self.cfg.federation.min_clients:
            raise FederationError(f"only {len(self.nodes)} institution(s) answered; federation.min_clients is "
                                  f"{self.cfg.federation.min_clients}")
        if self.masking is not None:
            self.cfg.check_masking(len(self.nodes))  # the count is known now: refuse fewer than 3
        self.on_event("connected", {"institutions": sorted(names)})
        return replies

    def _check_fingerprints(self, replies: Mapping[int, Mapping[str, Any]]) -> None:
        """Stop the run when an institution holds other HE keys than the server's public key belongs to.

        Its updates could not be added to the others', and leaving it out would hide a key handover that
        went wrong: the error names the institution and both fingerprints (docs/deploy.md).
        """
        if not self.encrypted:
            return
        from .. import he

        ours = self.public.fingerprint
        wrong = []
        for doc in replies.values():
            theirs = str(doc.get("fingerprint") or "")
            if theirs != ours:
                try:
                    shown = he.fingerprint_text(theirs)
                except FedxError:
                    shown = f"none ({theirs!r})" if theirs else "none (no keys)"
                wrong.append(f"institution {doc['name']!r} holds HE keys with fingerprint {shown}, and the "
                             f"server's public key has fingerprint {self.public.fingerprint_text}")
        if wrong:
            more = f" (and {len(wrong) - 1} more institution(s): see the log)" if len(wrong) > 1 else ""
            for line in wrong[1:]:
                log.error("%s", line)
            raise FederationError(f"{wrong[0]}{more}: every institution needs the secret.fxk made with the "
                                  f"server's public.fxk by `fedx keygen`; compare the fingerprints that "
                                  f"`fedx keygen` and `fedx node` print (docs/deploy.md)")

    # ------------------------------------------------------------------ messages

    def request(self, node: NodeView, phase: str, doc: Mapping[str, Any],
                records: Mapping[str, Any] | None = None) -> Message:
        """A message for one node; the run config goes along until the node is set up."""
        body = {"phase": phase, "round": 0, **doc}
        if not node.ready:
            body["config"] = self.job
        head = self.receipt_head(node)
        if head is not None:
            body["receipt"] = head
        content = {**(records or {}), "fedx": json_record(body)}
        return Message(RecordDict(content), dst_node_id=node.node_id, message_type=MessageType.QUERY, group_id="0")

    def receipt_head(self, node: NodeView) -> dict[str, Any] | None:
        """``{"seq", "hash"}`` of the latest receipt of ``node``'s replies, which its next request carries."""
        return self._last_receipt.get(node.name) if node.name else None

    def sender(self, msg: Message) -> int:
        """The node a reply answers for: the one its request went to."""
        return self._sent_to.get(msg.metadata.reply_to_message_id, msg.metadata.src_node_id)

    def ask(self, phase: str, docs: Mapping[int, Mapping[str, Any]], what: str, want_content: bool = False,
            records: Mapping[str, Any] | None = None, required: int | None = None) -> dict[int, Any]:
        """Send one phase to several nodes; return the answers of those that succeeded.

        Fewer than ``required`` answers (default ``federation.min_clients``) stop the job.
        """
        msgs = [self.request(self.nodes[nid], phase, doc, records=records) for nid, doc in docs.items()]
        out: dict[int, Any] = {}
        refusals: list[str] = []
        for msg in self.exchange(msgs, what):
            nid = self.sender(msg)
            name = (self.nodes[nid].name if nid in self.nodes else "") or f"node {nid}"
            if msg.has_error():
                log.warning("%s: %s failed: %s", name, what, msg.error.reason)
                continue
            try:
                doc = read_json(msg.content)
            except FedxError as exc:
                log.warning("%s: %s: %s", name, what, exc)
                continue
            if doc.get("status") != "ok":
                log.warning("%s: %s refused: %s", name, what, doc.get("reason"))
                if stops_the_run(phase, doc):
                    refusals.append(f"institution {doc.get('name') or name!r} refused the run ({what}): "
                                    f"{doc.get('reason')}")
                continue
            out[nid] = (doc, msg.content) if want_content else doc
        if refusals:
            more = f" (and {len(refusals) - 1} more institution(s) refused: see the log)" if len(refusals) > 1 else ""
            raise FederationError(refusals[0] + more)
        needed = self.cfg.federation.min_clients if required is None else required
        if len(out) < needed:
            raise FederationError(f"{what}: only {len(out)} institution(s) answered; federation.min_clients is "
                                  f"{self.cfg.federation.min_clients}")
        return out

    def exchange(self, messages: Sequence[Message], what: str) -> list[Message]:
        """Push messages and pull replies until all arrive or ``federation.timeout`` passes.

        Raises
        ------
        FederationError
            When a node's worker ran out of memory (:func:`out_of_memory`): the federation cannot go on
            as configured, and waiting for the others would only repeat it.
        """
        replies = self._exchange(messages, what)
        for msg in replies:
            if msg.has_error() and out_of_memory(msg.error.reason):
                nid = self.sender(msg)
                name = (self.nodes[nid].name if nid in self.nodes else "") or f"node {nid}"
                raise FederationError(
                    f"{name}: the worker that runs this institution ran out of memory during {what}. Its table or "
                    f"model is too large for this machine: drop identifier columns (data.drop), declare "
                    f"data.features, or use fewer rows or institutions")
        return replies

    def _exchange(self, messages: Sequence[Message], what: str) -> list[Message]:
        messages = self.largest_first(messages)
        ids = list(self.grid.push_messages(messages))
        for mid, msg in zip(ids, messages):
            self._sent_to[mid] = msg.metadata.dst_node_id
        pending = set(ids)
        replies: list[Message] = []
        deadline = time.monotonic() + self.cfg.federation.timeout
        def pull() -> None:
            for msg in self.grid.pull_messages(pending):
                pending.discard(msg.metadata.reply_to_message_id)
                replies.append(msg)
                self._receipt(msg)
                self.on_event("reply", {"what": what, "received": len(replies), "expected": len(ids)})

        while pending and time.monotonic() < deadline:
            pull()
            if pending:
                time.sleep(poll_seconds(len(pending)))
        if pending:
            # One pull can outlast the deadline: Flower's Grid retries the objects of a reply that its sender
            # never finished uploading (a node that died mid-upload) for minutes. Replies that arrived
            # meanwhile are collected here, not dropped as late.
            pull()
        if pending:
            late = sorted(self.nodes[self._sent_to[m]].name or str(self._sent_to[m]) for m in pending
                          if self._sent_to.get(m) in self.nodes)
            log.warning("%s: no answer from %s within %.0f s (federation.timeout)", what, ", ".join(late),
                        self.cfg.federation.timeout)
        return replies

    def largest_first(self, messages: Sequence[Message]) -> list[Message]:
        """``messages`` with those to the institutions of the most rows first (stable otherwise).

        In a simulation the institutions share a few workers, which take the messages in the order they
        were pushed: the largest institution, last in the queue, would start alone after the others and
        leave the other workers idle. Largest first, the round ends when the total work is done, about
        (longest-processing-time-first scheduling). A deployment is indifferent to the order.
        """
        def rows(msg: Message) -> int:
            node = self.nodes.get(msg.metadata.dst_node_id)
            return -(node.n_train + node.n_test) if node is not None else 0

        return sorted(messages, key=rows)

    def _receipt(self, msg: Message) -> None:
        if self._receipts is None or msg.has_error():
            return
        try:
            doc = read_json(msg.content)
        except FedxError:
            return
        nid = self.sender(msg)
        name = self.nodes[nid].name if nid in self.nodes and self.nodes[nid].name else str(doc.get("name", nid))
        entry = self._receipts.append(round=int(doc.get("round", 0)), kind=str(doc.get("phase")),
                                      payload=payload_parts(msg.content), checks={"institution": name},
                                      anchor=head_from(doc.get("ledger")))
        self._last_receipt[name] = {"seq": entry["seq"], "hash": entry["hash"]}

    def sum_payloads(self, payloads: Sequence[Any]) -> Any:
        """The sum of several institutions' payloads: ciphertexts added under the public context, or arrays."""
        if self.encrypted:
            from .. import he

            return he.aggregate(self.public, payloads)
        return [np.sum([np.asarray(p[i], dtype=np.float64) for p in payloads], axis=0)
                for i in range(len(payloads[0]))]
