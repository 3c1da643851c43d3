"""A hash-chained ledger of everything that leaves an institution.

Each line is one JSON object: ``seq``, ``time`` (UTC), ``round``, ``kind`` (what was sent), ``bytes``,
``sha256`` of the payload, ``checks`` (the policy checks applied), ``prev`` (the previous line's
hash) and ``hash``, the sha256 of the line's canonical JSON without ``hash``. Editing, deleting,
inserting or reordering a line breaks the chain, and :func:`verify` says where.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AuditError

GENESIS = "0" * 64
_FIELDS = ("seq", "time", "round", "kind", "bytes", "sha256", "checks", "prev")


def _line_hash(entry: Mapping[str, Any]) -> str:
    body = {k: entry[k] for k in _FIELDS}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class AuditLedger:
    """Append-only ledger file of one institution.

    Parameters
    ----------
    path : str or Path
        The ledger file (JSON lines). Created with its folder when absent; an existing ledger is
        continued, after checking its chain.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._seq, self._prev = 0, GENESIS
        if self.path.exists() and self.path.stat().st_size > 0:
            report = verify(self.path)
            self._seq, self._prev = report.entries, report.head

    def append(self, *, round: int, kind: str, payload: bytes | Sequence[bytes],
               checks: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Record one message that leaves the institution; return the written entry.

        ``payload`` is the bytes that left (or the list of its parts, hashed in order).
        """
        parts = [payload] if isinstance(payload, (bytes, bytearray)) else list(payload)
        h = hashlib.sha256()
        for part in parts:
            h.update(part)
        entry: dict[str, Any] = {
            "seq": self._seq + 1,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "round": int(round),
            "kind": str(kind),
            "bytes": int(sum(len(p) for p in parts)),
            "sha256": h.hexdigest(),
            "checks": dict(checks or {}),
            "prev": self._prev,
        }
        entry["hash"] = _line_hash(entry)
        line = json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self._seq, self._prev = entry["seq"], entry["hash"]
        return entry


@dataclass(frozen=True)
class VerifyReport:
    """The result of checking a ledger."""

    path: Path
    entries: int
    head: str
    bytes: int


def _read(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if not path.exists():
        raise AuditError(f"{path}: ledger not found")
    out = []
    with path.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise AuditError(f"{path}:{lineno}: not a JSON line ({exc.msg})") from None
            if not isinstance(entry, dict) or any(k not in entry for k in (*_FIELDS, "hash")):
                raise AuditError(f"{path}:{lineno}: entry lacks one of {', '.join((*_FIELDS, 'hash'))}")
            out.append((lineno, entry))
    return out


def verify(path: str | Path) -> VerifyReport:
    """Check the whole chain; raise :class:`AuditError` naming the first broken line."""
    p = Path(path)
    prev, total, seq = GENESIS, 0, 0
    for lineno, entry in _read(p):
        seq += 1
        if entry["seq"] != seq:
            raise AuditError(f"{p}:{lineno}: sequence number {entry['seq']}, expected {seq} "
                             f"(a line was removed, inserted or reordered)")
        if entry["prev"] != prev:
            raise AuditError(f"{p}:{lineno}: does not chain to the line before it "
                             f"(a line was removed, inserted or edited)")
        if _line_hash(entry) != entry["hash"]:
            raise AuditError(f"{p}:{lineno}: its content does not match its hash (the line was edited)")
        prev = entry["hash"]
        total += int(entry["bytes"])
    return VerifyReport(path=p, entries=seq, head=prev, bytes=total)


def summary(path: str | Path) -> dict[str, Any]:
    """What left the institution, and when: for a data-protection officer. Verifies first."""
    report = verify(path)
    entries = [e for _, e in _read(Path(path))]
    by_kind: Counter[str] = Counter()
    bytes_by_kind: Counter[str] = Counter()
    checks: Counter[str] = Counter()
    for e in entries:
        by_kind[e["kind"]] += 1
        bytes_by_kind[e["kind"]] += int(e["bytes"])
        for name, value in e["checks"].items():
            checks[f"{name}={value}"] += 1
    return {
        "ledger": str(report.path),
        "verified": True,
        "entries": report.entries,
        "bytes": report.bytes,
        "first": entries[0]["time"] if entries else None,
        "last": entries[-1]["time"] if entries else None,
        "rounds": sorted({int(e["round"]) for e in entries}),
        "by_kind": {k: {"messages": by_kind[k], "bytes": bytes_by_kind[k]} for k in sorted(by_kind)},
        "checks": dict(sorted(checks.items())),
    }
