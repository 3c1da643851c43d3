"""A deployed party's long-lived side: the party service that ``fedx node`` runs beside its SuperNode.

Flower starts a fresh ClientApp process for every message, but a party of a vertical run keeps its state
across messages (its PSI scalar, its channel keys, its CKKS secret key, the Newton state). So the node's
``fedx node`` process holds each run's :class:`~fedx.vertical.session.PartySession` in memory, and the
ClientApp hands it the messages the relay delivered and takes back the messages to send, over a local
connection: 127.0.0.1, on a port picked at start, authenticated by a random key (HMAC challenge of
:mod:`multiprocessing.connection`). Port and key are in ``out_dir/party-service.json``, mode 0600, readable only
by the node's own user. The session reads the party's table from the node file (``data``), never from the
request, and writes its ledger and results to the node's ``out_dir``.

Requests (a JSON header, then the raw messages): ``start`` (a run's config; the session's opening messages),
``deliver`` (messages from the relay; the answers), ``end`` (the server ends the run, ``ok`` or failed; the
session is dropped). Every answer names the party, its stage, and for each message to send: the receiver,
the round, the kind and the ledger head before its entry.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

from ..errors import DeploymentError, FedxError

log = logging.getLogger(__name__)

__all__ = ["SERVICE_FILE", "PartyService", "call_party"]

#: The file in a node's ``out_dir`` that says where its party service listens (mode 0600).
SERVICE_FILE = "party-service.json"


class PartyService:
    """The party service of one node (the module docstring says what it does).

    Parameters
    ----------
    name : str
        The node's party name (its node file's ``name``).
    data : Path
        Its own table (the node file's ``data``).
    out_dir : Path
        Its folder: the service file, the ledger, the label party's results.
    say : callable, optional
        Called with a line per step of a run.
    """

    def __init__(self, name: str, data: Path, out_dir: Path, *, say: Callable[[str], None] | None = None) -> None:
        self.name, self.data, self.out = name, Path(data), Path(out_dir)
        self.say = say or (lambda line: log.info("%s", line))
        self._key = os.urandom(32)
        self._listener: Listener | None = None
        self._thread: threading.Thread | None = None
        self._sessions: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    @property
    def path(self) -> Path:
        """The service file."""
        return self.out / SERVICE_FILE

    def start(self) -> PartyService:
        """Listen on 127.0.0.1 and write the service file; serve in a background thread."""
        self.out.mkdir(parents=True, exist_ok=True)
        self._listener = Listener(("127.0.0.1", 0), authkey=self._key)
        host, port = self._listener.address
        doc = {"name": self.name, "address": [host, port], "authkey": self._key.hex(), "pid": os.getpid()}
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(doc))
        os.replace(tmp, self.path)
        self._thread = threading.Thread(target=self._serve, name=f"fedx-party-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and remove the service file (the sessions are dropped)."""
        self._stopped.set()
        try:
            self.path.unlink()
        except OSError:
            pass
        if self._listener is not None:
            # Wake the accepting thread with a bare connection that closes at once: its accept() fails the key
            # challenge and the loop sees the stop. An authenticated Client would wait for a challenge without
            # end when the thread has already left its loop (a stop that lands just after a request).
            try:
                socket.create_connection(self._listener.address, timeout=2).close()
            except OSError:
                pass
            self._listener.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _serve(self) -> None:
        assert self._listener is not None
        while not self._stopped.is_set():
            try:
                conn = self._listener.accept()
            except Exception:  # noqa: BLE001 - closed, or a client that failed the key challenge
                if self._stopped.is_set():
                    return
                continue
            with conn:
                if self._stopped.is_set():
                    return
                try:
                    header, blobs = _receive(conn)
                except (EOFError, OSError, ValueError, TypeError):
                    continue
                with self._lock:
                    answer, out = self.handle(header, blobs)
                try:
                    _send(conn, answer, out)
                except OSError:
                    log.warning("%s: the ClientApp went away before the answer to %s", self.name, header.get("op"))

    # ------------------------------------------------------------------ requests

    def handle(self, header: dict[str, Any], blobs: Sequence[bytes]) -> tuple[dict[str, Any], list[bytes]]:
        """One request; the answer (an error names the party and the reason, and drops the run's session)."""
        op, run = header.get("op"), str(header.get("run", ""))
        try:
            if op == "start":
                return self._start(run, header)
            if op == "deliver":
                session = self._sessions.get(run)
                if session is None:
                    raise DeploymentError(f"party {self.name}: no session of run {run} at this node (was its "
                                          f"`fedx node` restarted mid-run? a vertical run cannot resume)")
                out = []
                for message in blobs:
                    out.extend(session.receive(message))
                return self._answer(session, out)
            if op == "end":
                session = self._sessions.pop(run, None)
                status = header.get("status", "ok")
                if status != "ok":
                    self.say(f"{self.name}: the server ended run {run}: {header.get('reason')}")
                return {"status": "ok", "party": self.name, "ended": session is not None}, []
            raise DeploymentError(f"party {self.name}: unknown request {op!r}")
        except Exception as exc:  # noqa: BLE001 - the answer carries the reason to the server
            if not isinstance(exc, FedxError):
                log.error("%s: unexpected error:\n%s", self.name, traceback.format_exc())
            self._sessions.pop(run, None)
            reason = str(exc) if isinstance(exc, FedxError) else f"{type(exc).__name__}: {exc}"
            self.say(f"{self.name}: run {run} stops: {reason}")
            return {"status": "error", "party": self.name, "reason": reason, "error_type": type(exc).__name__}, []

    def _start(self, run: str, header: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
        from ..config import config_from_dict
        from ..data.tables import read_table
        from .session import PartySession
        from .tables import load_party_table

        if run in self._sessions:
            raise DeploymentError(f"party {self.name}: run {run} was started twice")
        cfg = config_from_dict(header["config"], source="the run config sent by the server")
        try:
            df = read_table(self.data)
        except FedxError as exc:
            raise DeploymentError(f"party {self.name}: data: {exc}") from None
        table = load_party_table(cfg, self.name, df, origin=self.data.name)
        if cfg.model.kind == "gbdt":
            from .gbdt_session import GBDTSession

            session: PartySession = GBDTSession(cfg, table, run, self.out, say=self.say)
        else:
            session = PartySession(cfg, table, run, self.out, say=self.say)
        self._sessions[run] = session
        self.say(f"{self.name}: run {run} started ({len(table.df):,} rows, role "
                 f"{'label' if session.is_label else 'feature'} party)")
        return self._answer(session, session.start())

    def _answer(self, session: Any, out: Sequence[Any]) -> tuple[dict[str, Any], list[bytes]]:
        if session.done:
            self.say(f"{self.name}: its part of the run is done")
        doc = {"status": "ok", **session.status(),
               "messages": [{"to": m.to, "round": m.round, "kind": m.kind, "head": m.head} for m in out]}
        return doc, [m.message for m in out]


def call_party(out_dir: str | Path, header: dict[str, Any], blobs: Sequence[bytes] = (),
               name: str = "this party") -> tuple[dict[str, Any], list[bytes]]:
    """Send one request to the party service of the node whose ``out_dir`` this is; its answer.

    Raises
    ------
    DeploymentError
        No service (the node was not started by ``fedx node``, or its process is gone).
    """
    path = Path(out_dir) / SERVICE_FILE
    try:
        doc = json.loads(path.read_text())
        address = (str(doc["address"][0]), int(doc["address"][1]))
        key = bytes.fromhex(doc["authkey"])
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        raise DeploymentError(f"party {name}: no party service at {path}: a vertical run needs the party's node "
                              f"started by `fedx node`, which keeps the party's state between messages") from None
    try:
        with Client(address, authkey=key) as conn:
            _send(conn, header, blobs)
            return _receive(conn)
    except (OSError, EOFError) as exc:
        raise DeploymentError(f"party {name}: its `fedx node` process does not answer at {address[0]}:{address[1]} "
                              f"({exc}); is it still running?") from None


def _send(conn: Connection, header: dict[str, Any], blobs: Sequence[bytes]) -> None:
    conn.send_bytes(json.dumps({**header, "blobs": len(blobs)}).encode())
    for b in blobs:
        conn.send_bytes(b)


def _receive(conn: Connection) -> tuple[dict[str, Any], list[bytes]]:
    header = json.loads(conn.recv_bytes())
    if not isinstance(header, dict):
        raise TypeError("a party service request is not a JSON object")
    return header, [conn.recv_bytes() for _ in range(int(header.pop("blobs", 0)))]
