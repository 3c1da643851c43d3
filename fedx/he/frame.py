"""The framing shared by blobs and key files, and defensive readers of its JSON header.

::

    magic (4) | version (1) | header length (4, LE) | total length (8, LE) | header (JSON) | payload | SHA-256 (32)

The digest covers every byte before it, so truncation and flipped bytes are refused before anything in
the header is trusted. It is a checksum, not a signature: authenticity comes from the transport (TLS and
node authentication). No pickle is involved: the bytes come from another party.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from ..errors import HEError

PREFIX = struct.Struct("<4sBIQ")
DIGEST_SIZE = 32
MAX_HEADER = 64 << 20
MAX_TOTAL = 1 << 40


@dataclass(frozen=True)
class Frame:
    """A checked frame: its format version, parsed JSON header and payload."""

    version: int
    header: dict[str, Any]
    payload: memoryview


def pack(magic: bytes, version: int, header: Mapping[str, Any], payload: Iterable[bytes]) -> bytes:
    """Frame ``header`` (JSON) and ``payload`` parts, with their SHA-256 at the end."""
    head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    parts = list(payload)
    total = PREFIX.size + len(head) + sum(len(p) for p in parts) + DIGEST_SIZE
    pieces = [PREFIX.pack(magic, version, len(head), total), head, *parts]
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece)
    return b"".join([*pieces, digest.digest()])


def unpack(data: bytes | bytearray | memoryview, *, magic: bytes, version: int, error: type[HEError], what: str,
           truncated: Callable[[dict[str, Any], int], str] | None = None) -> Frame:
    """Check and split a frame; every failure raises ``error`` with a message that starts with ``what``.

    ``truncated(header, payload_bytes_found)`` may phrase the message for a truncated frame whose header
    is intact.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise error(f"{what} must be bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B")
    n = len(view)
    if n == 0:
        raise error(f"{what} is empty (0 bytes)")
    if bytes(view[:len(magic)]) != magic[:n]:
        raise error(f"{what} is not a fedx file of this kind: it starts with {bytes(view[:8])!r}, expected {magic!r}")
    if n < PREFIX.size:
        raise error(f"{what} is truncated: {n} bytes, shorter than its {PREFIX.size}-byte prefix")
    _, got_version, head_len, total = PREFIX.unpack_from(view)
    if got_version != version:
        raise error(f"{what} has format version {got_version}; this fedx reads version {version}")
    if head_len > MAX_HEADER or total > MAX_TOTAL or total < PREFIX.size + head_len + DIGEST_SIZE:
        raise error(f"{what} has an impossible header length ({head_len}) or total length ({total})")
    body = PREFIX.size + head_len
    if n < total:
        message = None
        if truncated is not None and n >= body:
            try:
                message = truncated(_json(view[PREFIX.size:body], error, what), n - body)
            except HEError:
                message = None
        raise error(message or f"{what} is truncated: {total} bytes expected, {n} found")
    if n > total:
        raise error(f"{what} has {n - total} unexpected bytes after its end")
    if hashlib.sha256(view[:-DIGEST_SIZE]).digest() != bytes(view[-DIGEST_SIZE:]):
        raise error(f"{what} is corrupted or tampered with: its SHA-256 does not match its content")
    return Frame(got_version, _json(view[PREFIX.size:body], error, what), view[body:-DIGEST_SIZE])


def _json(raw: memoryview, error: type[HEError], what: str) -> dict[str, Any]:
    def reject(token: str) -> NoReturn:
        raise ValueError(f"non-finite number {token}")

    try:
        doc = json.loads(bytes(raw), parse_constant=reject)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise error(f"{what}: its header is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise error(f"{what}: its header is not a JSON object")
    return doc


class Fields:
    """Typed, bounded access to a JSON header, raising ``error`` with a message that names the field."""

    def __init__(self, doc: Mapping[str, Any], error: type[HEError], what: str) -> None:
        self.doc, self.error, self.what = doc, error, what

    def fail(self, key: str, expected: str) -> NoReturn:
        """Raise the error for a malformed field."""
        raise self.error(f"{self.what}: header field '{key}' is malformed: expected {expected}, "
                         f"got {_short(self.doc.get(key))}")

    def get(self, key: str) -> Any:
        """The raw value (the field must be present)."""
        if key not in self.doc:
            raise self.error(f"{self.what}: header lacks the field '{key}'")
        return self.doc[key]

    def text(self, key: str, choices: Iterable[str] | None = None, max_len: int = 256) -> str:
        """A string, optionally one of ``choices``."""
        value = self.get(key)
        allowed = None if choices is None else tuple(choices)
        if not isinstance(value, str) or len(value) > max_len or (allowed is not None and value not in allowed):
            self.fail(key, f"one of {allowed}" if allowed else f"a string of at most {max_len} characters")
        return value

    def hexdigits(self, key: str, length: int) -> str:
        """A lowercase hex string of ``length`` characters."""
        value = self.get(key)
        if not (isinstance(value, str) and len(value) == length and all(c in "0123456789abcdef" for c in value)):
            self.fail(key, f"{length} hex digits")
        return value

    def integer(self, key: str, lo: int, hi: int) -> int:
        """An integer in ``[lo, hi]``."""
        return self.check_int(key, self.get(key), lo, hi)

    def check_int(self, key: str, value: Any, lo: int, hi: int) -> int:
        """``value`` (from field ``key``) as an integer in ``[lo, hi]``."""
        if type(value) is not int or not lo <= value <= hi:
            self.fail(key, f"an integer in [{lo}, {hi}]")
        return value

    def number(self, key: str, lo: float, hi: float = math.inf) -> float:
        """A finite number in ``[lo, hi]``."""
        value = self.get(key)
        if type(value) not in (int, float) or not math.isfinite(value) or not lo <= value <= hi:
            self.fail(key, f"a finite number in [{lo}, {hi}]")
        return float(value)

    def items(self, key: str, max_len: int) -> list[Any]:
        """A list of at most ``max_len`` items."""
        value = self.get(key)
        if not isinstance(value, list) or len(value) > max_len:
            self.fail(key, f"a list of at most {max_len} items")
        return value

    def sub(self, key: str) -> Fields:
        """The nested object ``key``."""
        value = self.get(key)
        if not isinstance(value, dict):
            self.fail(key, "an object")
        return Fields(value, self.error, f"{self.what} ({key})")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
