"""Messages between two parties of a vertical run, sealed so that a relay only forwards them.

A message is bytes: a magic tag, a small plaintext routing header (run id, sender, receiver, kind,
sequence number) and a body. The relay (the fedx server in deployment) reads the header to forward the
message and learns nothing else: every body after the opening ``hello`` is sealed with ChaCha20-Poly1305
under a key that only the two parties hold, with the header as associated data.

The key is agreed by X25519. Each party makes a fresh (ephemeral) key pair per run and sends its public
half in ``hello``. Against a relay that only forwards (honest-but-curious) that is enough. Against a relay
that could substitute keys, give each party a long-term identity key and pin the peers' public keys
(``trusted``): the static keys are then mixed into the key agreement, and a party that does not hold the
pinned key cannot open or forge a sealed message. Sequence numbers are part of the nonce and must arrive in
order, so a replayed, dropped or reordered message is refused.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import PSIError

MAGIC = b"FXVM1\0"
_LEN = struct.Struct(">I")


@dataclass(frozen=True)
class Route:
    """The plaintext header of a message: all that a relay reads."""

    run_id: str
    sender: str
    receiver: str
    kind: str
    seq: int
    sealed: bool


def route(message: bytes) -> Route:
    """Read a message's routing header (what a relay needs to forward it).

    Raises
    ------
    PSIError
        The bytes are not a fedx vertical message.
    """
    if not message.startswith(MAGIC) or len(message) < len(MAGIC) + _LEN.size:
        raise PSIError("not a fedx vertical message (bad magic tag)")
    (n,) = _LEN.unpack_from(message, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    try:
        h = json.loads(message[start:start + n])
        return Route(str(h["run"]), str(h["from"]), str(h["to"]), str(h["kind"]), int(h["seq"]), bool(h["sealed"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise PSIError("a vertical message has a malformed header") from exc


def _split(message: bytes) -> tuple[Route, bytes, bytes]:
    r = route(message)
    (n,) = _LEN.unpack_from(message, len(MAGIC))
    cut = len(MAGIC) + _LEN.size + n
    return r, message[:cut], message[cut:]


def _frame(header: Mapping[str, Any], body: bytes) -> tuple[bytes, bytes]:
    head = json.dumps(dict(header), sort_keys=True, separators=(",", ":")).encode()
    prefix = MAGIC + _LEN.pack(len(head)) + head
    return prefix, body


def pack_body(meta: Mapping[str, Any], payload: bytes = b"") -> bytes:
    """A body: length-prefixed JSON metadata, then raw payload bytes."""
    doc = json.dumps(dict(meta), sort_keys=True, separators=(",", ":")).encode()
    return _LEN.pack(len(doc)) + doc + payload


def unpack_body(body: bytes) -> tuple[dict[str, Any], bytes]:
    """Inverse of :func:`pack_body`."""
    try:
        (n,) = _LEN.unpack_from(body, 0)
        return json.loads(body[_LEN.size:_LEN.size + n]), body[_LEN.size + n:]
    except (ValueError, struct.error) as exc:
        raise PSIError("a vertical message has a malformed body") from exc


def _raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class Channel:
    """One party's end of the sealed channel with one peer, for one run.

    Parameters
    ----------
    own, peer : str
        The two parties' names.
    run_id : str
        The run; bound into the key, so a message of one run cannot be opened in another.
    identity : X25519PrivateKey, optional
        This party's long-term key, mixed into the key agreement when given.
    trusted : bytes, optional
        The peer's pinned long-term public key (32 raw bytes). A ``hello`` without it is refused.
    """

    def __init__(self, own: str, peer: str, run_id: str, *, identity: X25519PrivateKey | None = None,
                 trusted: bytes | None = None) -> None:
        self.own, self.peer, self.run_id = own, peer, run_id
        self._eph = X25519PrivateKey.generate()
        self._static = identity
        self._trusted = trusted
        self._aead: ChaCha20Poly1305 | None = None
        self._sent = 0
        self._received = 0

    @property
    def ready(self) -> bool:
        """Whether the key is agreed (the peer's ``hello`` was read)."""
        return self._aead is not None

    def hello(self) -> bytes:
        """The opening message: this party's public keys, in plaintext."""
        meta = {"eph": _raw(self._eph.public_key()).hex(),
                "static": _raw(self._static.public_key()).hex() if self._static else None}
        return self._emit("hello", pack_body(meta), sealed=False)

    def accept_hello(self, message: bytes) -> None:
        """Agree the key from the peer's ``hello``."""
        r, _, body = self._check(message)
        if r.kind != "hello" or r.sealed:
            raise PSIError(f"expected a hello from party {self.peer!r}, got {r.kind!r}")
        meta, _ = unpack_body(body)
        try:
            peer_eph = X25519PublicKey.from_public_bytes(bytes.fromhex(meta["eph"]))
            peer_static = (X25519PublicKey.from_public_bytes(bytes.fromhex(meta["static"]))
                           if meta.get("static") else None)
        except (KeyError, ValueError, TypeError) as exc:
            raise PSIError(f"the hello of party {self.peer!r} holds no valid X25519 key") from exc
        if self._trusted is not None and (peer_static is None or _raw(peer_static) != self._trusted):
            raise PSIError(f"party {self.peer!r} did not present its pinned identity key; refusing to talk to it")
        first = self.own < self.peer
        ikm = self._eph.exchange(peer_eph)
        # Static keys, in a fixed order of the two names: DH(e_low, S_high), then DH(S_low, e_high).
        mine_static = self._static.exchange(peer_eph) if self._static else b""
        theirs_static = self._eph.exchange(peer_static) if peer_static else b""
        ikm += (theirs_static + mine_static) if first else (mine_static + theirs_static)
        pubs = [_raw(self._eph.public_key()), _raw(peer_eph)]
        names = [self.own, self.peer]
        if not first:
            pubs.reverse()
            names.reverse()
        info = b"fedx-vertical/channel/v1\0" + "\0".join(names).encode() + b"\0" + b"".join(pubs)
        salt = hashlib.sha256(self.run_id.encode()).digest()
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)
        self._aead = ChaCha20Poly1305(key)

    def seal(self, kind: str, meta: Mapping[str, Any], payload: bytes = b"") -> bytes:
        """A sealed message to the peer."""
        if self._aead is None:
            raise PSIError(f"no key agreed with party {self.peer!r} yet (its hello has not arrived)")
        return self._emit(kind, pack_body(meta, payload), sealed=True)

    def open(self, message: bytes) -> tuple[str, dict[str, Any], bytes]:
        """Check and open a sealed message from the peer: its kind, metadata and payload."""
        if self._aead is None:
            raise PSIError(f"a sealed message from party {self.peer!r} arrived before its hello")
        r, head, body = self._check(message)
        if not r.sealed:
            raise PSIError(f"party {self.peer!r} sent {r.kind!r} unsealed; expected it sealed")
        try:
            plain = self._aead.decrypt(self._nonce(self.peer, r.seq), body, head)
        except InvalidTag as exc:
            raise PSIError(f"a {r.kind!r} message from party {self.peer!r} fails authentication "
                           "(tampered, replayed, or sealed under another key)") from exc
        meta, payload = unpack_body(plain)
        return r.kind, meta, payload

    def _emit(self, kind: str, body: bytes, *, sealed: bool) -> bytes:
        header = {"run": self.run_id, "from": self.own, "to": self.peer, "kind": kind, "seq": self._sent,
                  "sealed": sealed}
        head, _ = _frame(header, b"")
        if sealed:
            assert self._aead is not None
            body = self._aead.encrypt(self._nonce(self.own, self._sent), body, head)
        self._sent += 1
        return head + body

    def _check(self, message: bytes) -> tuple[Route, bytes, bytes]:
        r, head, body = _split(message)
        if r.run_id != self.run_id or r.sender != self.peer or r.receiver != self.own:
            raise PSIError(f"a message for run {r.run_id!r} from {r.sender!r} to {r.receiver!r} reached party "
                           f"{self.own!r}'s channel with {self.peer!r} in run {self.run_id!r}")
        if r.seq != self._received:
            raise PSIError(f"message {r.seq} from party {self.peer!r} arrived out of order; expected message "
                           f"{self._received} (a replayed, dropped or reordered message)")
        self._received += 1
        return r, head, body

    def _nonce(self, sender: str, seq: int) -> bytes:
        direction = 0 if sender < (self.peer if sender == self.own else self.own) else 1
        return struct.pack(">I", direction) + struct.pack(">Q", seq)
