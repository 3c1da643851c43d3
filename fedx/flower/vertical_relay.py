"""The ServerApp of a deployed vertical run: a relay that forwards the parties' messages and reads only their headers.

Each party of ``data.parties`` is a node (``fedx node`` with the party's name and its own table). The relay:

1. waits for every party's node (``deployment.wait_seconds``) and learns which node is which party;
2. opens the run at every party (the config, and a fresh run id bound into every key and message);
3. forwards messages in waves: every party with messages waiting gets them in one Flower message, and answers
   with the messages it sends. The relay reads each message's routing header
   (:func:`fedx.vertical.channel.route`) to forward it, refuses one whose sender is not the party that sent it,
   and writes a receipt of each (``receipts.jsonl``: round, kind, bytes, sha256, anchored to the sender's ledger
   head), the counterpart of the party's ledger for ``fedx audit verify``. It sees PSI messages that are sealed
   after their ``hello`` and GLM messages sealed end to end between two parties: nothing but the headers,
   sizes and timing;
4. ends the run at every party when all are done, and writes ``result.json`` with what a relay knows (the
   parties, the messages and bytes each sent, the waves, the time). The fitted model is the label party's:
   it writes result.json and pricing_table.csv in its own ``out_dir`` (SecureBoost: every party writes its own
   part of the model, model.json, and the label party result.json).

A vertical fit needs every party: a party that does not answer within ``federation.timeout``, or answers with
an error (a refusal, a tampered or foreign message, its process gone), stops the run with an error that names
it; the others are told, and every ledger and receipt written so far stays.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp import Grid

from .._version import __version__
from ..atomic import write_atomic
from ..config import Config
from ..errors import FederationError, FedxError
from ..privacy.audit import AuditLedger, head_from
from ..report import SCHEMA_VERSION
from ..vertical.channel import route
from .records import json_record, read_json
from .vertical_client import (
    REC_MESSAGES,
    V_DELIVER,
    V_END,
    V_HELLO,
    V_START,
    messages_record,
    read_messages,
)

log = logging.getLogger(__name__)

__all__ = ["VerticalRelay"]


class VerticalRelay:
    """Relay one vertical run among the parties' nodes (the module docstring says how).

    Parameters
    ----------
    cfg : Config
        A vertical config.
    grid : Grid
        Flower's handle to the connected nodes.
    out_dir : Path
        The server's folder: ``receipts.jsonl`` and ``result.json``.
    expected_nodes : int
        Nodes to wait for (at least the number of parties).
    wait_seconds : float
        How long to wait for every party's node.
    """

    #: Empty messages kept waiting at the SuperLink for each party that is not done (see :meth:`_relay`). Off:
    #: on a busy 2-core machine two waiting messages doubled the time of a hop (every message costs the
    #: SuperLink and the SuperNode their work), more than the SuperNode's 3 s sleeps they save.
    KEEP_QUEUED = 0

    def __init__(self, cfg: Config, grid: Grid, out_dir: str | Path, *, expected_nodes: int = 0,
                 wait_seconds: float = 300.0) -> None:
        if not cfg.data.vertical or not cfg.data.parties:
            raise FederationError("VerticalRelay: the config is not vertical (data.partition: vertical)")
        self.cfg, self.grid, self.out = cfg, grid, Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.parties = list(cfg.data.parties)
        self.expected = max(int(expected_nodes), len(self.parties))
        self.wait_seconds = float(wait_seconds)
        self.timeout = float(cfg.federation.timeout)
        self.run_id = uuid.uuid4().hex
        self.receipts = AuditLedger(self.out / "receipts.jsonl") if cfg.security.audit else None
        self.node_of: dict[str, int] = {}
        self.sent = {p: {"messages": 0, "bytes": 0} for p in self.parties}
        self.waves = 0
        self.log_path = self.out / "relay.log"
        #: Parties found gone or stuck (no answer within the timeout, or unavailable by Flower's word): told that
        #: the run ended, but not waited for.
        self.gone: set[str] = set()

    def note(self, line: str) -> None:
        """A line of the relay's log (``out_dir/relay.log``, and the ServerApp's log)."""
        log.info("%s", line)
        try:
            with self.log_path.open("a") as fh:
                fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {line}\n")
        except OSError as exc:
            log.warning("cannot write %s: %s", self.log_path, exc)

    # ------------------------------------------------------------------ the run

    def run(self) -> dict[str, Any]:
        """Relay the run to its end; return (and write) the relay's result document."""
        t0 = time.monotonic()
        self._connect()
        self.note(f"vertical run {self.run_id}: parties " + ", ".join(f"{p} (node {n})"
                                                                     for p, n in self.node_of.items()))
        done: dict[str, bool] = {p: False for p in self.parties}
        try:
            replies = self._ask({p: {"config": self.cfg.to_dict()} for p in self.parties}, V_START, {})
            self._relay(self._route(replies, done), done)
        except FedxError as exc:
            self.note(f"the run stops: {exc}")
            self._end("failed", str(exc))
            self.note("the parties were told; the run ends")
            raise
        self._end("ok", None)
        doc = self._document(time.monotonic() - t0)
        write_atomic(self.out / "result.json", json.dumps(doc, indent=2))
        self.note(f"vertical run {self.run_id} finished in {self.waves} waves: {self.out / 'result.json'}")
        return doc

    def _relay(self, inbox: dict[str, list[bytes]], done: dict[str, bool]) -> None:
        """Forward messages until every party is done.

        A party has at most one message with protocol messages outstanding, so they reach it in order, and gets
        the next one as soon as it has answered (not in waves of every party). With :attr:`KEEP_QUEUED` > 0,
        every party that is not done also has that many empty messages waiting at the SuperLink: a SuperNode
        that finds no message waiting sleeps 3 s before it looks again.
        """
        outstanding: dict[str, tuple[str, bool]] = {}   # message id -> (party, carries messages)
        last_reply = {p: time.monotonic() for p in self.parties}
        pending = {p: list(inbox.get(p, [])) for p in self.parties}
        while True:
            for party in self.parties:
                mine = [carries for p, carries in outstanding.values() if p == party]
                push: list[tuple[list[bytes], bool]] = []
                if pending[party] and not any(mine):
                    push.append((pending[party], True))
                    pending[party] = []
                    self.waves += 1
                if not done[party]:
                    push += [([], False)] * max(0, self.KEEP_QUEUED - len(mine) - len(push))
                if push:
                    if not mine:
                        last_reply[party] = time.monotonic()
                    nid = self.node_of[party]
                    msgs = [self._message(nid, V_DELIVER, {}, m) for m, _ in push]
                    for mid, (_, carries) in zip(self.grid.push_messages(msgs), push):
                        if not mid:   # the SuperLink would not take a message for this node
                            self.gone.add(party)
                            raise FederationError(f"vertical run: party {party!r} cannot be reached (the server "
                                                  f"refused a message for its node); a vertical fit needs every "
                                                  f"party, so the run stops")
                        outstanding[mid] = (party, carries)
            if all(done.values()) and not any(pending.values()) and not any(c for _, c in outstanding.values()):
                return
            if not outstanding:
                unfinished = [p for p, d in done.items() if not d]
                raise FederationError(f"vertical run: the parties stopped exchanging messages before "
                                      f"{', '.join(unfinished)} finished")
            got = 0
            for reply in self.grid.pull_messages(list(outstanding)):
                party, _ = outstanding.pop(reply.metadata.reply_to_message_id)
                last_reply[party] = time.monotonic()
                got += 1
                doc, msgs = self._read(reply)
                if doc.get("status") != "ok":
                    if doc.get("flower"):
                        self.gone.add(party)
                    raise FederationError(self._failure(party, doc))
                if doc.get("messages"):
                    self.note(f"{party}: {len(doc['messages'])} message(s) "
                              f"({', '.join(sorted({m['kind'] for m in doc['messages']}))})")
                for receiver, routed in self._route({party: (doc, msgs)}, done, keep_done=True).items():
                    pending[receiver].extend(routed)
            waiting = {p for p, _ in outstanding.values()}
            late = [p for p in waiting if time.monotonic() - last_reply[p] > self.timeout]
            if late:
                self.gone.update(late)
                raise FederationError(f"vertical run: party {', '.join(repr(p) for p in late)} did not answer within "
                                      f"{self.timeout:g} s (federation.timeout); its node is gone or stuck, and a "
                                      f"vertical fit needs every party, so the run stops")
            if not got:
                time.sleep(0.02)

    def _read(self, reply: Message) -> tuple[dict[str, Any], list[bytes]]:
        if reply.has_error():   # from Flower, not from the party: its node is gone or its ClientApp failed
            return {"status": "error", "flower": True, "reason": reply.error.reason}, []
        try:
            return read_json(reply.content), read_messages(reply.content)
        except FedxError as exc:
            return {"status": "error", "reason": str(exc)}, []

    def _connect(self) -> None:
        deadline = time.monotonic() + self.wait_seconds
        ids: list[int] = []
        while time.monotonic() < deadline:
            ids = sorted(self.grid.get_node_ids())
            if len(ids) >= self.expected:
                break
            time.sleep(0.2)
        replies = self._exchange({nid: self._message(nid, V_HELLO, {}, ()) for nid in ids}, "hello")
        for nid, (doc, _) in replies.items():
            name = str(doc.get("name"))
            if doc.get("status") != "ok":
                log.warning("node %s (%s) refused hello: %s", nid, name, doc.get("reason"))
            elif name not in self.parties:
                log.warning("node %s calls itself %r, which is no party of this run (%s); it is left out", nid, name,
                            ", ".join(self.parties))
            elif name in self.node_of:
                raise FederationError(f"two nodes call themselves {name!r}; each party needs its own node")
            else:
                self.node_of[name] = nid
        missing = [p for p in self.parties if p not in self.node_of]
        if missing:
            raise FederationError(f"vertical run: no node of party {', '.join(repr(p) for p in missing)} answered "
                                  f"within {self.wait_seconds:.0f} s (deployment.wait_seconds); a vertical fit needs "
                                  f"every party ({', '.join(self.parties)})")

    # ------------------------------------------------------------------ messages

    def _message(self, nid: int, phase: str, doc: Mapping[str, Any], messages: Sequence[bytes]) -> Message:
        body = {"phase": phase, "run": self.run_id, **doc}
        content: dict[str, Any] = {"fedx": json_record(body)}
        if messages:
            content[REC_MESSAGES] = messages_record(messages)
        return Message(RecordDict(content), dst_node_id=nid, message_type=MessageType.QUERY, group_id=self.run_id)

    def _exchange(self, messages: Mapping[int, Message], what: str, timeout: float | None = None,
                  unawaited: frozenset[int] = frozenset()) -> dict[int, tuple[dict[str, Any], list[bytes]]]:
        """Push one message per node and pull the replies, until all are in or the timeout passes.

        The nodes in ``unawaited`` get their message, but the exchange does not wait for their replies.
        """
        ids = list(self.grid.push_messages(list(messages.values())))
        sent_to = {mid: nid for mid, nid in zip(ids, messages) if mid}   # no id: a node the SuperLink refuses
        pending = {mid for mid, nid in sent_to.items() if nid not in unawaited}
        out: dict[int, tuple[dict[str, Any], list[bytes]]] = {}
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while pending and time.monotonic() < deadline:
            for reply in self.grid.pull_messages(pending):
                mid = reply.metadata.reply_to_message_id
                pending.discard(mid)
                out[sent_to[mid]] = self._read(reply)
            if pending:
                time.sleep(0.02)
        return out

    def _ask(self, docs: Mapping[str, Mapping[str, Any]], phase: str,
             inbox: Mapping[str, Sequence[bytes]]) -> dict[str, tuple[dict[str, Any], list[bytes]]]:
        """One wave: a message to each party named in ``docs``; the replies by party, each checked."""
        msgs = {self.node_of[p]: self._message(self.node_of[p], phase, doc, inbox.get(p, ()))
                for p, doc in docs.items()}
        got = self._exchange(msgs, phase)
        by_node = {nid: p for p, nid in self.node_of.items()}
        replies = {by_node[nid]: r for nid, r in got.items()}
        late = [p for p in docs if p not in replies]
        if late:
            self.gone.update(late)
            raise FederationError(f"vertical run: party {', '.join(repr(p) for p in late)} did not answer within "
                                  f"{self.timeout:g} s (federation.timeout); its node is gone or stuck, and a vertical "
                                  f"fit needs every party, so the run stops")
        for party, (doc, _) in replies.items():
            if doc.get("status") != "ok":
                if doc.get("flower"):
                    self.gone.add(party)
                raise FederationError(self._failure(party, doc))
        return replies

    @staticmethod
    def _failure(party: str, doc: Mapping[str, Any]) -> str:
        if doc.get("flower"):
            return (f"vertical run: party {party!r} is unavailable ({doc.get('reason')}); a vertical fit needs every "
                    f"party, so the run stops")
        return f"vertical run: party {party!r} stopped the run: {doc.get('reason')}"

    def _route(self, replies: Mapping[str, tuple[dict[str, Any], list[bytes]]],
               done: dict[str, bool], keep_done: bool = False) -> dict[str, list[bytes]]:
        """Receipt each message the parties sent and sort them into the receivers' inboxes."""
        inbox: dict[str, list[bytes]] = {}
        for party in self.parties:
            if party not in replies:
                continue
            doc, messages = replies[party]
            done[party] = bool(doc.get("done")) or (keep_done and done[party])
            meta = doc.get("messages") or []
            if len(meta) != len(messages):
                raise FederationError(f"vertical run: party {party!r} sent {len(messages)} messages described by "
                                      f"{len(meta)} entries")
            for info, message in zip(meta, messages):
                try:
                    r = route(message)
                except FedxError as exc:
                    raise FederationError(f"vertical run: party {party!r} sent a message that is not one: {exc}") \
                        from None
                if r.sender != party or r.receiver not in self.parties or r.receiver == party \
                        or r.run_id.split("/")[0] != self.run_id:
                    raise FederationError(f"vertical run: party {party!r} sent a message from {r.sender!r} to "
                                          f"{r.receiver!r} of run {r.run_id!r}; refused")
                if self.receipts is not None:
                    self.receipts.append(round=int(info.get("round", 0)), kind=str(info.get("kind")), payload=message,
                                         checks={"institution": party, "to": r.receiver},
                                         anchor=head_from(info.get("head")))
                self.sent[party]["messages"] += 1
                self.sent[party]["bytes"] += len(message)
                inbox.setdefault(r.receiver, []).append(message)
        return inbox

    def _end(self, status: str, reason: str | None) -> None:
        """Tell every party the run is over (a failed run: why); a party that does not answer is left.

        A party already found gone or stuck (:attr:`gone`) is told too, but its answer is not awaited: it did not
        answer within ``federation.timeout`` before, and waiting again would only delay the run's error.
        """
        msgs = {nid: self._message(nid, V_END, {"status": status, "reason": reason}, ())
                for nid in self.node_of.values()}
        gone = frozenset(self.node_of[p] for p in self.gone if p in self.node_of)
        try:
            self._exchange(msgs, "end", timeout=min(self.timeout, 30.0), unawaited=gone)
        except Exception as exc:  # noqa: BLE001 - ending must not hide the run's own outcome
            log.warning("vertical run: telling the parties that the run ended failed: %s", exc)

    def _document(self, seconds: float) -> dict[str, Any]:
        label = self.cfg.data.label_party
        return {"schema_version": SCHEMA_VERSION, "fedx_version": __version__,
                "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "partition": "vertical",
                "role": "relay", "run_id": self.run_id, "status": "finished", "label_party": label,
                "parties": {p: {"node_id": self.node_of[p], "role": "label" if p == label else "feature",
                                **self.sent[p]} for p in self.parties},
                "waves": self.waves, "seconds": seconds,
                "receipts": str(self.receipts.path) if self.receipts is not None else None,
                "model": (f"in parts: each party's model.json (its own thresholds) in the out_dir of its node; "
                          f"result.json at the label party {label} (the relay sees only sealed messages)"
                          if self.cfg.model.kind == "gbdt" else
                          f"at the label party: result.json and pricing_table.csv in the out_dir of {label}'s node "
                          f"(the relay sees only sealed messages)")}
