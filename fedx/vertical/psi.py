"""Subject identification by ECDH private set intersection (PSI) on X25519.

The label party intersects its ids with each feature party's; the rows of the run are those that every
party holds. Parties are plain objects that produce and consume bytes (:class:`PSIParty`), so any transport
can carry the messages, a relay only forwards them (:func:`fedx.vertical.channel.route`), and every message
that leaves a party can be written to its audit ledger.

Message flow, for the label party L and each feature party F (all bodies after ``hello`` are sealed, see
:mod:`fedx.vertical.channel`)::

    L -> F  hello     L's X25519 public key(s)
    F -> L  hello     F's public key(s)
    F -> L  spec      F's id columns and kinds, its policy
    L -> F  blinded   the run secret s, L's id spec and policy, X = X25519(a, H_s(l)) for L's ids, in row order
    F -> L  reply     Y = X25519(b, H_s(f)) for F's ids in a secret random order, Z = X25519(b, X) (16 bytes each)
    L -> F  result    ok or refused; the count and, with ``reveal: all``, which of F's rows are shared

L compares X25519(a, Y) with Z: equal values are shared ids. ``H_s`` is a keyed hash under the per-run
secret ``s``, which L draws and sends to each F sealed, so blinded values of different runs cannot be linked
and the relay never learns it. Every party orders its shared rows by another keyed hash of the id under
``s`` (:func:`common_order`), so all parties hold the shared rows in one order without exchanging ids.

What is revealed, and to whom, is :class:`PSIPolicy`; docs/vertical.md states the defaults and the table.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, PSIError
from .channel import Channel, route
from .curve import (
    POINT,
    as_rows,
    hash_to_u,
    keyed_hashes,
    new_scalar,
    scalar_mult,
    truncate,
)
from .ids import IdSpec, PartyIds, check_compatible

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from ..privacy.audit import AuditLedger

log = logging.getLogger(__name__)

REVEAL = ("label_party", "all")
MATCH_BYTES = 16  # doubly blinded values are compared on 128 bits
_ORDER_BYTES = 16


@dataclass(frozen=True)
class PSIPolicy:
    """What the intersection reveals, and to whom.

    Parameters
    ----------
    reveal : str
        ``label_party`` (default): only the label party learns which of its rows are shared (and, for each
        feature party, where those rows sit in that party's secretly shuffled order). ``all``: every party
        learns which of its own rows are shared.
    count_to : str
        Who learns the number of shared rows: ``all`` (default) or ``label_party``. Under ``reveal: all``
        every party learns it anyway.
    min_intersection : int
        A run whose intersection is smaller is refused (default 100).
    """

    reveal: str = "label_party"
    count_to: str = "all"
    min_intersection: int = 100

    def __post_init__(self) -> None:
        if self.reveal not in REVEAL:
            raise ConfigError(f"security.psi_reveal is {self.reveal!r}; expected one of {REVEAL}")
        if self.count_to not in REVEAL:
            raise ConfigError(f"security.psi_count_to is {self.count_to!r}; expected one of {REVEAL}")
        if isinstance(self.min_intersection, bool) or not isinstance(self.min_intersection, int) \
                or self.min_intersection < 1:
            raise ConfigError(f"security.min_intersection is {self.min_intersection!r}; expected an integer >= 1")

    @property
    def count_to_features(self) -> bool:
        """Whether feature parties learn the number of shared rows."""
        return self.reveal == "all" or self.count_to == "all"

    def to_dict(self) -> dict[str, Any]:
        """The settings as every party sends and compares them."""
        return {"reveal": self.reveal, "count_to": self.count_to, "min_intersection": self.min_intersection}


@dataclass(frozen=True)
class Alignment:
    """One party's outcome of the PSI.

    Attributes
    ----------
    party, role : str
        The party and its role (``label`` or ``feature``).
    n_rows : int
        Rows of the party's table.
    n_shared : int or None
        Rows shared by all parties; None where the policy hides the count from this party.
    rows : numpy.ndarray or None
        This party's row positions of the shared set, in the common order (``rows[k]`` at every party is
        the same person); None where the policy hides membership from this party.
    wire_order : numpy.ndarray or None
        Feature party: the row position at each position of its secret shuffle (the order of ``Y``).
    peer_positions : dict
        Label party: for each feature party, the shuffled positions of the shared rows in the common order.
        A vector meant for a feature party's whole table is sent in that party's shuffled order: value
        ``k`` of the common order goes to position ``peer_positions[name][k]``, and the feature party reads
        position ``j`` as its row ``wire_order[j]``.
    peer_sizes : dict
        Label party: each feature party's number of rows.
    """

    party: str
    role: str
    n_rows: int
    n_shared: int | None
    rows: np.ndarray | None
    wire_order: np.ndarray | None = None
    peer_positions: dict[str, np.ndarray] = field(default_factory=dict)
    peer_sizes: dict[str, int] = field(default_factory=dict)


def order_keys(ids: PartyIds, rows: np.ndarray, secret: bytes, purpose: str = "common-order") -> np.ndarray:
    """Keyed hashes (16 bytes, opaque items) of the given rows' ids under the run secret."""
    return as_rows(keyed_hashes([ids.keys[int(i)] for i in rows], secret, purpose, _ORDER_BYTES), _ORDER_BYTES)


def common_order(ids: PartyIds, rows: np.ndarray, secret: bytes) -> np.ndarray:
    """A party's shared row positions, sorted into the order every party uses.

    The order is that of a keyed hash of each id under the run secret, so every party that knows its own
    shared rows puts them in the same order without seeing anyone else's ids.

    Parameters
    ----------
    ids : PartyIds
        The party's normalised ids.
    rows : numpy.ndarray
        Its shared row positions, in any order.
    secret : bytes
        The run secret agreed in the PSI.
    """
    return _ordered(ids, rows, secret)[0]


def _ordered(ids: PartyIds, rows: np.ndarray, secret: bytes) -> tuple[np.ndarray, str]:
    """The rows in the common order, and a digest of that order (equal at parties holding the same people)."""
    rows = np.asarray(rows, dtype=np.int64)
    keys = order_keys(ids, rows, secret)
    perm = np.argsort(keys, kind="stable")
    return rows[perm], hashlib.sha256(keys[perm].tobytes()).hexdigest()


def order_digest(ids: PartyIds, rows: np.ndarray, secret: bytes) -> str:
    """A digest of the shared rows in the common order (``rows`` in that order): equal at every party that holds
    the same people, and between two intersections of the same tables under the same secret."""
    return hashlib.sha256(order_keys(ids, np.asarray(rows, dtype=np.int64), secret).tobytes()).hexdigest()


def select_test_rows(ids: PartyIds, rows: np.ndarray, secret: bytes, test_fraction: float) -> np.ndarray:
    """Which of the shared rows are held out for testing, identically at every party.

    Exactly ``round(test_fraction * len(rows))`` rows are chosen: those with the smallest keyed hash (a
    purpose other than the common order's) under the run secret. Every party that knows its shared rows
    computes the same choice; the label party computes it for everyone.

    Parameters
    ----------
    ids, rows, secret
        As for :func:`common_order`; ``rows`` in the common order.
    test_fraction : float
        In [0, 1).

    Returns
    -------
    numpy.ndarray
        Booleans aligned with ``rows``: True for a test row.
    """
    if not 0.0 <= float(test_fraction) < 1.0:
        raise ConfigError(f"data.test_fraction is {test_fraction!r}; expected a number in [0, 1)")
    rows = np.asarray(rows, dtype=np.int64)
    k = round(float(test_fraction) * len(rows))
    mask = np.zeros(len(rows), dtype=bool)
    if k:
        keys = order_keys(ids, rows, secret, purpose="test-split")
        mask[np.argsort(keys, kind="stable")[:k]] = True
    return mask


class PSIParty:
    """One party of a private set intersection; produces and consumes bytes messages.

    Parameters
    ----------
    name : str
        This party.
    ids : PartyIds
        Its normalised ids (:func:`fedx.vertical.ids.normalise_ids`).
    label_party : str
        The party that holds the target; it intersects with every other party.
    parties : sequence of str
        Every party of the run, the label party included.
    run_id : str
        The run, bound into every message and key.
    policy : PSIPolicy
        Must be the same at every party (checked).
    backend : str
        X25519 implementation: ``auto`` (the fastest installed), ``nacl`` or ``cryptography``.
    workers : int
        Processes for blinding large batches.
    identity : X25519PrivateKey, optional
        This party's long-term key; pins are checked against it by peers.
    trusted : mapping, optional
        Pinned long-term public keys (32 raw bytes) of peers, by party name.
    ledger : AuditLedger, optional
        Every message that leaves this party is appended to it (round 0, kind ``psi-<kind>``).
    secret : bytes, optional
        Label party only: the run secret to use instead of a fresh one, when a run resumes (the secret it drew
        and kept the first time). With the same tables it gives the same shared rows in the same order and
        the same held-out rows; the blinding scalars are fresh all the same.

    Use :meth:`start` for the first messages, feed each arriving message to :meth:`receive` (which returns
    the messages to send in answer), and read :meth:`alignment` once :attr:`done`.
    """

    def __init__(self, name: str, ids: PartyIds, *, label_party: str, parties: Sequence[str], run_id: str,
                 policy: PSIPolicy | None = None, backend: str = "auto", workers: int = 1,
                 identity: X25519PrivateKey | None = None, trusted: Mapping[str, bytes] | None = None,
                 ledger: AuditLedger | None = None, secret: bytes | None = None) -> None:
        names = list(dict.fromkeys(parties))
        if label_party not in names:
            raise ConfigError(f"data.label_party {label_party!r} is not one of the parties {names}")
        if name not in names:
            raise ConfigError(f"party {name!r} is not one of the parties {names}")
        if len(names) < 2:
            raise ConfigError(f"a vertical run needs at least two parties; got {names}")
        if ids.spec.party != name:
            raise PSIError(f"party {name!r} was given the ids of party {ids.spec.party!r}")
        self.name, self.ids, self.label_party, self.run_id = name, ids, label_party, run_id
        self.policy = policy or PSIPolicy()
        self.backend, self.workers, self.ledger = backend, workers, ledger
        self.is_label = name == label_party
        if secret is not None and (not self.is_label or len(secret) != 32):
            raise PSIError(f"party {name!r}: only the label party brings a run secret, of 32 bytes")
        self.features = [p for p in names if p != label_party]
        peers = self.features if self.is_label else [label_party]
        trusted = dict(trusted or {})
        self._channels = {p: Channel(name, p, run_id, identity=identity, trusted=trusted.get(p)) for p in peers}
        self._scalar = new_scalar()
        self._secret: bytes | None = (secret or os.urandom(32)) if self.is_label else None
        self._peer_specs: dict[str, IdSpec] = {}
        self._replies: dict[str, np.ndarray] = {}
        self._peer_sizes: dict[str, int] = {}
        self._wire_order: np.ndarray | None = None
        self._alignment: Alignment | None = None
        self._error: PSIError | None = None
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ driving
    @property
    def done(self) -> bool:
        """Whether this party has its outcome (an alignment or a refusal)."""
        return self._alignment is not None or self._error is not None

    @property
    def secret(self) -> bytes:
        """The run secret (for the keyed hashes of :func:`common_order` and :func:`select_test_rows`). Never send it."""
        if self._secret is None:
            raise PSIError(f"party {self.name!r} has not received the run secret yet")
        return self._secret

    def alignment(self) -> Alignment:
        """This party's outcome; raises the refusal if the run was refused."""
        if self._error is not None:
            raise self._error
        if self._alignment is None:
            raise PSIError(f"the private set intersection of party {self.name!r} has not finished")
        return self._alignment

    def start(self) -> list[bytes]:
        """The opening messages: the label party greets every feature party."""
        if not self.is_label:
            return []
        return self._send([ch.hello() for ch in self._channels.values()])

    def receive(self, message: bytes) -> list[bytes]:
        """Process one message addressed to this party; return the messages to send in answer."""
        r = route(message)
        if r.receiver != self.name:
            raise PSIError(f"a message for party {r.receiver!r} reached party {self.name!r}")
        ch = self._channels.get(r.sender)
        if ch is None:
            raise PSIError(f"party {self.name!r} got a message from {r.sender!r}, which is no peer of it")
        if r.kind == "hello":
            ch.accept_hello(message)
            if self.is_label:
                return []
            spec = {"ids": self.ids.spec.to_dict(), "policy": self.policy.to_dict(), "rows": len(self.ids)}
            return self._send([ch.hello(), ch.seal("spec", spec)])
        kind, meta, payload = ch.open(message)
        handler: Callable[[str, dict[str, Any], bytes], list[bytes]] = {
            ("label", "spec"): self._on_spec, ("label", "reply"): self._on_reply,
            ("feature", "blinded"): self._on_blinded, ("feature", "result"): self._on_result,
        }.get(("label" if self.is_label else "feature", kind))  # type: ignore[assignment]
        if handler is None:
            raise PSIError(f"party {self.name!r} does not expect a {kind!r} message from {r.sender!r}")
        return handler(r.sender, meta, payload)

    def _send(self, messages: list[bytes]) -> list[bytes]:
        if self.ledger is not None:
            for m in messages:
                self.ledger.append(round=0, kind=f"psi-{route(m).kind}", payload=m)
        return messages

    def _timed(self, key: str, t0: float) -> None:
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0

    def _check_peer(self, peer: str, meta: dict[str, Any]) -> IdSpec:
        spec = IdSpec.from_dict(peer, meta["ids"])
        check_compatible(self.ids.spec, spec)
        if meta["policy"] != self.policy.to_dict():
            theirs, ours = meta["policy"], self.policy.to_dict()
            key = next(k for k in ours if theirs.get(k) != ours[k])
            raise PSIError(f"party {peer!r} runs the intersection with {key}={theirs.get(key)!r}, party "
                           f"{self.name!r} with {key}={ours[key]!r}; every party needs the same security settings")
        return spec

    # ------------------------------------------------------------------ label party
    def _on_spec(self, peer: str, meta: dict[str, Any], payload: bytes) -> list[bytes]:
        if peer in self._peer_specs:
            raise PSIError(f"party {peer!r} sent its spec twice")
        self._peer_specs[peer] = self._check_peer(peer, meta)
        self._peer_sizes[peer] = int(meta["rows"])
        if len(self._peer_specs) < len(self.features):
            return []
        t0 = time.perf_counter()
        u = hash_to_u(self.ids.keys, self.secret)
        self._timed("hash", t0)
        t0 = time.perf_counter()
        x = scalar_mult(self._scalar, u, backend=self.backend, workers=self.workers)
        self._timed("blind", t0)
        body = {"secret": self.secret.hex(), "ids": self.ids.spec.to_dict(), "policy": self.policy.to_dict()}
        return self._send([self._channels[p].seal("blinded", body, x) for p in self.features])

    def _on_reply(self, peer: str, meta: dict[str, Any], payload: bytes) -> list[bytes]:
        if peer in self._replies or peer not in self._peer_sizes:
            raise PSIError(f"party {peer!r} sent a reply out of turn")
        n_l, n_f = len(self.ids), self._peer_sizes[peer]
        if int(meta["rows"]) != n_f or len(payload) != n_f * POINT + n_l * MATCH_BYTES:
            raise PSIError(f"the reply of party {peer!r} has {len(payload)} bytes; expected "
                           f"{n_f * POINT + n_l * MATCH_BYTES} for {n_f} and {n_l} ids")
        y, z = payload[:n_f * POINT], payload[n_f * POINT:]
        t0 = time.perf_counter()
        w = truncate(scalar_mult(self._scalar, y, backend=self.backend, workers=self.workers), MATCH_BYTES)
        self._timed("blind", t0)
        t0 = time.perf_counter()
        _, mine, theirs = np.intersect1d(as_rows(z, MATCH_BYTES), as_rows(w, MATCH_BYTES),
                                         assume_unique=True, return_indices=True)
        pos = np.full(n_l, -1, dtype=np.int64)
        pos[mine] = theirs
        self._replies[peer] = pos
        self._timed("match", t0)
        if len(self._replies) < len(self.features):
            return []
        return self._finish_label()

    def _finish_label(self) -> list[bytes]:
        t0 = time.perf_counter()
        shared = np.flatnonzero(np.all(np.stack([self._replies[p] >= 0 for p in self.features]), axis=0))
        n, pol = len(shared), self.policy
        if n < pol.min_intersection:
            self._error = PSIError(
                f"the parties share {n} ids, fewer than security.min_intersection={pol.min_intersection}; "
                "the run is refused (a small intersection says too much about the people in it)")
            meta: dict[str, Any] = {"status": "refused", "min_intersection": pol.min_intersection}
            if pol.count_to_features:
                meta["shared"] = n
            log.warning("party %s: intersection of %d rows is below min_intersection=%d; refused",
                        self.name, n, pol.min_intersection)
            return self._send([self._channels[p].seal("result", meta) for p in self.features])
        rows, digest = _ordered(self.ids, shared, self.secret)
        peer_positions = {p: self._replies[p][rows] for p in self.features}
        out = []
        for p in self.features:
            meta = {"status": "ok"}
            payload = b""
            if pol.count_to_features:
                meta["shared"] = n
            if pol.reveal == "all":
                bits = np.zeros(self._peer_sizes[p], dtype=bool)
                bits[peer_positions[p]] = True
                payload = np.packbits(bits).tobytes()
                meta["digest"] = digest
            out.append(self._channels[p].seal("result", meta, payload))
        self._alignment = Alignment(self.name, "label", len(self.ids), n, rows, None, peer_positions,
                                    dict(self._peer_sizes))
        self._timed("align", t0)
        log.info("party %s: %d of %d rows shared with %s", self.name, n, len(self.ids), self.features)
        return self._send(out)

    # ------------------------------------------------------------------ feature party
    def _on_blinded(self, peer: str, meta: dict[str, Any], payload: bytes) -> list[bytes]:
        if self._secret is not None:
            raise PSIError(f"party {peer!r} sent its blinded ids twice")
        self._check_peer(peer, meta)
        self._secret = bytes.fromhex(meta["secret"])
        n_f = len(self.ids)
        if len(payload) % POINT:
            raise PSIError(f"the blinded ids of party {peer!r} have {len(payload)} bytes; expected a multiple "
                           f"of {POINT}")
        n_l = len(payload) // POINT
        t0 = time.perf_counter()
        u = np.frombuffer(hash_to_u(self.ids.keys, self.secret), dtype=np.uint8).reshape(n_f, POINT)
        self._wire_order = np.random.default_rng(int.from_bytes(os.urandom(16), "big")).permutation(n_f)
        u_wire = u[self._wire_order].tobytes()
        self._timed("hash", t0)
        t0 = time.perf_counter()
        out = scalar_mult(self._scalar, u_wire + payload, backend=self.backend, workers=self.workers)
        self._timed("blind", t0)
        y, z = out[:n_f * POINT], truncate(out[n_f * POINT:], MATCH_BYTES)
        return self._send([self._channels[peer].seal("reply", {"rows": n_f, "peer_rows": n_l}, y + z)])

    def _on_result(self, peer: str, meta: dict[str, Any], payload: bytes) -> list[bytes]:
        n = meta.get("shared")
        pol = self.policy
        if meta.get("status") != "ok":
            told = f"share {n} ids" if n is not None else "share too few ids"
            self._error = PSIError(f"the label party {peer!r} refused the run: the parties {told}, fewer than "
                                   f"security.min_intersection={pol.min_intersection}")
            return []
        if n is not None and int(n) < pol.min_intersection:
            self._error = PSIError(f"the label party {peer!r} reports {n} shared ids, fewer than "
                                   f"security.min_intersection={pol.min_intersection}; refusing")
            return []
        rows = None
        if pol.reveal == "all":
            assert self._wire_order is not None
            n_f = len(self.ids)
            bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8), count=n_f).astype(bool)
            rows, digest = _ordered(self.ids, self._wire_order[bits], self.secret)
            if len(rows) != int(n) or digest != meta.get("digest"):
                self._error = PSIError(f"party {self.name!r}: the shared rows told by {peer!r} do not give the "
                                       "label party's common order (a different id normalisation, or a bad message)")
                return []
        self._alignment = Alignment(self.name, "feature", len(self.ids), None if n is None else int(n), rows,
                                    self._wire_order)
        return []


def run_psi(parties: Sequence[PSIParty], *, observe: Callable[[bytes], None] | None = None) -> dict[str, Alignment]:
    """Run a PSI among parties in this process, through an in-memory relay that only forwards.

    Parameters
    ----------
    parties : sequence of PSIParty
        Every party of the run.
    observe : callable, optional
        Called with every message the relay forwards (what a relay sees).

    Returns
    -------
    dict
        Each party's :class:`Alignment`, by name.

    Raises
    ------
    PSIError
        Any party's refusal (the label party's first).
    """
    by_name = {p.name: p for p in parties}
    queue: list[bytes] = [m for p in parties for m in p.start()]
    while queue:
        message = queue.pop(0)
        if observe is not None:
            observe(message)
        queue.extend(by_name[route(message).receiver].receive(message))
    ordered = sorted(parties, key=lambda p: not p.is_label)
    return {p.name: p.alignment() for p in ordered}
