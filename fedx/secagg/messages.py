"""The messages of one masking round, as frozen dataclasses that travel as bytes.

Every message names its run and round, and is refused in another. On the wire each is a fedx frame
(magic ``FXSA``, JSON header, SHA-256; see :mod:`fedx.he.frame`) whose fields are checked by type and
size before use; bytes fields travel as base64. No pickle: the bytes come from another party.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import secrets
from dataclasses import dataclass
from typing import Any, ClassVar, Self, get_type_hints

from ..errors import MaskingError
from ..he import frame

MAGIC = b"FXSA"
VERSION = 1
MAX_MEMBERS = 4096
MAX_NAME = 128
MAX_BYTES = 1 << 16
MIN_MEMBERS = 3

def default_threshold(n_members: int) -> int:
    """The default threshold: a strict majority, ``n // 2 + 1``."""
    return n_members // 2 + 1


def check_members(members: Any, what: str) -> tuple[str, ...]:
    """Distinct member names (non-empty strings of at most 128 characters, no NUL), sorted."""
    if not isinstance(members, (list, tuple, set, frozenset)) or not members:
        raise MaskingError(f"{what}: members must be a non-empty list of institution names, got {members!r}")
    names = tuple(sorted(members))
    bad = [n for n in names if not isinstance(n, str) or not n or len(n) > MAX_NAME or "\0" in n]
    if bad:
        raise MaskingError(f"{what}: member names must be non-empty strings of at most {MAX_NAME} characters, "
                           f"got {bad[0]!r}")
    if len(set(names)) != len(names):
        raise MaskingError(f"{what}: member names must be distinct, got {list(names)}")
    return names


@dataclass(frozen=True)
class Message:
    """Base: the run and round every message names, and its byte form."""

    run: str
    round: int

    tag_name: ClassVar[str] = "message"

    def to_bytes(self) -> bytes:
        """The message as a frame."""
        doc: dict[str, Any] = {"type": self.tag_name}
        for field in dataclasses.fields(self):
            doc[field.name] = _encode(getattr(self, field.name))
        return frame.pack(MAGIC, VERSION, doc, [])

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Self:
        """Parse and type-check a message from another party.

        Raises
        ------
        MaskingError
            Not a message of this type, or a malformed one.
        """
        what = f"masking message ({cls.tag_name})"
        fr = frame.unpack(data, magic=MAGIC, version=VERSION, error=MaskingError, what=what)
        f = frame.Fields(fr.header, MaskingError, what)
        f.text("type", (cls.tag_name,))
        hints = get_type_hints(cls)
        values = {field.name: _decode(f, field.name, hints[field.name]) for field in dataclasses.fields(cls)}
        return cls(**values)

    def expect(self, run: str, round_: int, what: str) -> None:
        """Refuse a message of another run or round."""
        if (self.run, self.round) != (run, round_):
            raise MaskingError(f"{what} belongs to run {self.run[:12]} round {self.round}, expected run {run[:12]} "
                               f"round {round_}: stale or replayed")


@dataclass(frozen=True)
class RoundSetup(Message):
    """Server to every member: who takes part, the threshold, and the plain modulus t."""

    members: tuple[str, ...]
    threshold: int
    modulus: int

    tag_name: ClassVar[str] = "setup"

    def __post_init__(self) -> None:
        members = check_members(self.members, "masking setup")
        object.__setattr__(self, "members", members)
        n = len(members)
        if n < MIN_MEMBERS:
            raise MaskingError(f"security.masking: pairwise needs at least {MIN_MEMBERS} institutions, got {n} "
                               f"({', '.join(members)}): with two, each one's update is the sum minus its own, so "
                               f"masks protect nothing; turn masking off")
        if type(self.threshold) is not int or not n // 2 < self.threshold <= n:
            raise MaskingError(f"security.threshold must be an integer in [{n // 2 + 1}, {n}] for {n} institutions "
                               f"(a strict majority at least, so that two disjoint groups can never both rebuild "
                               f"secrets), got {self.threshold!r}")
        if type(self.modulus) is not int or self.modulus < 3 or self.modulus % 2 == 0:
            raise MaskingError(f"the plain modulus must be an odd integer >= 3, got {self.modulus!r}")
        if type(self.round) is not int or self.round < 0 or not self.run:
            raise MaskingError(f"a masking round needs a run id and a round >= 0, got {self.run!r}, {self.round!r}")

    @classmethod
    def create(cls, members: Any, modulus: int, round_: int, run: str | None = None,
               threshold: int | None = None) -> RoundSetup:
        """A setup with a fresh random run id (unless given) and the default threshold (unless given)."""
        names = check_members(members, "masking setup")
        return cls(run=run or secrets.token_hex(16), round=round_, members=names,
                   threshold=default_threshold(len(names)) if threshold is None else threshold, modulus=modulus)

    @property
    def tag(self) -> str:
        """Names the round in masked blobs: ``run/round``."""
        return f"{self.run}/{self.round}"

    def index(self, member: str) -> int:
        """The member's Shamir index (1-based position in the sorted member list)."""
        return self.members.index(member) + 1


@dataclass(frozen=True)
class Advert(Message):
    """Member to server: its fresh public keys for this round (mask agreement, share channel)."""

    member: str
    mask_key: bytes
    channel_key: bytes

    tag_name: ClassVar[str] = "advert"


@dataclass(frozen=True)
class Roster(Message):
    """Server to every member: the public keys of the members that advertised (U1)."""

    mask_keys: dict[str, bytes]
    channel_keys: dict[str, bytes]

    tag_name: ClassVar[str] = "roster"


@dataclass(frozen=True)
class ShareBundle(Message):
    """Member to server: a commitment to its self-mask seed, and one sealed share pair per other member."""

    member: str
    seed_commitment: bytes
    shares: dict[str, bytes]

    tag_name: ClassVar[str] = "shares"


@dataclass(frozen=True)
class Relay(Message):
    """Server to one member: who shared keys (U2), and the sealed shares addressed to that member."""

    recipient: str
    sharers: tuple[str, ...]
    shares: dict[str, bytes]

    tag_name: ClassVar[str] = "relay"


@dataclass(frozen=True)
class UnmaskRequest(Message):
    """Server to each survivor: whose masked update arrived (survivors, U3) and who dropped (U2 - U3)."""

    survivors: tuple[str, ...]
    dropped: tuple[str, ...]

    tag_name: ClassVar[str] = "unmask"


@dataclass(frozen=True)
class UnmaskReply(Message):
    """Survivor to server: its shares of each survivor's self-mask seed and of each dropped member's mask key."""

    member: str
    seed_shares: dict[str, bytes]
    key_shares: dict[str, bytes]

    tag_name: ClassVar[str] = "reply"


def _encode(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _decode(f: frame.Fields, key: str, hint: Any) -> Any:
    raw = f.get(key)
    if hint is str:
        return f.text(key, max_len=MAX_NAME)
    if hint is int:
        return f.integer(key, 0, 2**62)
    if hint is bytes:
        return _b64(f, key, raw)
    if hint == tuple[str, ...]:
        items = f.items(key, MAX_MEMBERS)
        if not all(isinstance(i, str) and 0 < len(i) <= MAX_NAME for i in items):
            f.fail(key, "a list of member names")
        return tuple(items)
    if hint == dict[str, bytes]:
        if not isinstance(raw, dict) or len(raw) > MAX_MEMBERS or not all(
                isinstance(k, str) and 0 < len(k) <= MAX_NAME for k in raw):
            f.fail(key, "an object of member name -> base64 bytes")
        return {k: _b64(f, key, v) for k, v in raw.items()}
    raise TypeError(f"no wire form for {hint}")  # a programming error, not bad input


def _b64(f: frame.Fields, key: str, raw: Any) -> bytes:
    if not isinstance(raw, str) or len(raw) > math.ceil(MAX_BYTES / 3) * 4:
        f.fail(key, f"base64 of at most {MAX_BYTES} bytes")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        f.fail(key, "base64")


def pair_info(purpose: str, run: str, round_: int, a: str, b: str) -> bytes:
    """The HKDF info that binds a pairwise key to its purpose, run, round and (unordered) pair."""
    lo, hi = sorted((a, b))
    return json.dumps(["fedx-secagg/v1", purpose, run, round_, lo, hi]).encode()
