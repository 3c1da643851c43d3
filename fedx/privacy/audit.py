"""A hash-chained ledger of everything that leaves an institution, anchored in the server's receipts.

Each line is one JSON object: ``seq``, ``time`` (UTC), ``round``, ``kind`` (what was sent), ``bytes``,
``sha256`` of the payload, ``checks`` (the policy checks applied), ``prev`` (the previous line's
hash), optionally ``anchor`` (the other side's head, below) and ``hash``, the sha256 of the line's
canonical JSON without ``hash``. Editing, deleting, inserting or reordering a line breaks the chain,
and :func:`verify` says where.

A chain alone cannot show that its last lines were removed, or that a line was edited and every hash
after it recomputed. So each side keeps the other's head. Every reply of an institution carries its
ledger head (``seq`` and ``hash`` of its latest entry), and the server's receipt of that reply
(``receipts.jsonl``, a ledger of the same format) records it as its ``anchor``; every request of the
server carries the hash of its latest receipt for that institution, and the institution's entry for
its answer records it as its ``anchor``. :func:`verify_receipts` checks a ledger against the server's
receipts: an institution cannot rewrite its past without a mismatch against the receipts, and the
server cannot rewrite the receipts without a mismatch against the institution's ledger.

An interrupted append. Every entry is written and flushed to disk (``fsync``) before the message it
records is handed on: the institution's Flower app appends the entry of its reply before it returns
the reply (``fedx/flower/client_app.py``), and the in-process runs and the vertical parties append
each message before the relay or its receiver gets it (``trees/run.py``, ``vertical/run.py``,
``vertical/run_gbdt.py``, ``vertical/glm_protocol.py``, ``vertical/psi.py``, ``vertical/session.py``).
So a process killed, or a machine that lost power, in the middle of an append leaves a torn last line
whose message was not sent. :class:`AuditLedger` then moves the torn bytes aside (``<name>.torn-<UTC
time>`` beside the ledger), cuts the ledger back to its last complete line and continues the chain
from there, with a warning; :func:`verify` reports the torn line (:attr:`VerifyReport.torn`) instead
of refusing the ledger. When the ledger cannot be written at all (a full disk, an I/O error), the
Flower app sends an error reply without payload in place of the reply, so nothing leaves that the
ledger does not hold. The server's receipts are
written when a reply arrives: a torn receipt is a reply received but not recorded, and the
institution's entry of it is listed as not receipted.

Only what an interrupted append can leave is taken for a torn line: bytes after the last newline
that do not parse, printable ASCII beginning as every entry does (``{"``), possibly followed by NUL
bytes (a file system can leave those after a power loss). Anything else, a torn line before the last
one and every edit, is refused as before. Dropping a torn last line removes no more than a last entry,
which the chain alone cannot show anyway and the server's receipts do; and its bytes are kept.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
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
_OPTIONAL = ("anchor",)  # hashed when present, so that older ledgers still verify

log = logging.getLogger(__name__)


def _line_hash(entry: Mapping[str, Any]) -> str:
    body = {k: entry[k] for k in (*_FIELDS, *(k for k in _OPTIONAL if k in entry))}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class AuditLedger:
    """Append-only ledger file of one institution.

    Parameters
    ----------
    path : str or Path
        The ledger file (JSON lines). Created with its folder when absent; an existing ledger is
        continued, after checking its chain. A torn last line (an append was interrupted; see the
        module docstring) is moved to ``<name>.torn-<UTC time>`` beside it, and the ledger cut back to
        its last complete line, with a warning.

    Raises
    ------
    AuditError
        When the existing ledger's chain is broken (it is then left as it is).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open()

    def _open(self) -> None:
        self._seq, self._prev, self._newline, self._stale = 0, GENESIS, False, False
        if not (self.path.exists() and self.path.stat().st_size > 0):
            return
        report = verify(self.path)
        if report.torn is not None:
            self._set_aside(report.torn)
        else:
            with self.path.open("rb") as fh:
                fh.seek(-1, os.SEEK_END)
                self._newline = fh.read(1) != b"\n"  # a complete last line without its newline: add it first
        self._seq, self._prev = report.entries, report.head

    def _set_aside(self, torn: TornLine) -> None:
        """Move the torn last line to a new side file, durably, then cut the ledger before it."""
        fd = os.open(self.path, os.O_RDWR)
        try:
            os.lseek(fd, torn.offset, os.SEEK_SET)
            data = b""
            while chunk := os.read(fd, 1 << 16):
                data += chunk
            if len(data) != torn.size:
                raise AuditError(f"{self.path}: changed while it was opened (its torn last line was "
                                 f"{torn.size} bytes, now {len(data)})")
            side = _side_file(self.path, data)
            os.ftruncate(fd, torn.offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        log.warning("%s: its last line was torn (an append was interrupted): moved its %d bytes to %s and cut "
                    "the ledger back to its last complete line (entry %d), from which the chain continues",
                    self.path, torn.size, side, torn.entries)

    @property
    def head(self) -> dict[str, Any]:
        """``{"seq", "hash"}`` of the latest entry (``seq`` 0 and the genesis hash when empty)."""
        return {"seq": self._seq, "hash": self._prev}

    def append(self, *, round: int, kind: str, payload: bytes | Sequence[bytes],
               checks: Mapping[str, Any] | None = None, anchor: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Record one message that leaves the institution; return the written entry.

        ``payload`` is the bytes that left (or the list of its parts, hashed in order). ``anchor`` is the
        other side's head (see the module docstring), recorded and hashed with the entry.
        """
        if self._stale:
            self._open()
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
        if anchor is not None:
            entry["anchor"] = {"seq": int(anchor["seq"]), "hash": str(anchor["hash"])}
        entry["hash"] = _line_hash(entry)
        line = ("\n" if self._newline else "") + json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
        data = memoryview(line.encode())
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            while data:  # a write may take fewer bytes than it was given (a full disk): the rest, or an error
                data = data[os.write(fd, data):]
            os.fsync(fd)
        except BaseException:
            self._stale = True  # the file may end in a torn line now: the next append opens it again
            raise
        finally:
            os.close(fd)
        self._seq, self._prev, self._newline = entry["seq"], entry["hash"], False
        return entry


@dataclass(frozen=True)
class TornLine:
    """The torn last line of a ledger: an append that was interrupted (see the module docstring)."""

    line: int                  # its line number
    offset: int                # where it starts: the size of the ledger's complete lines
    size: int                  # its bytes
    entries: int | None = None  # the complete entries before it (set by :func:`verify`)

    def describe(self) -> str:
        """One line for a person: what the torn line is, and what fedx does with it."""
        return (f"torn final line (an append was interrupted): line {self.line}, {self.size} bytes after entry "
                f"{self.entries}, not part of the chain (continuing the ledger moves them to a .torn-<time> file "
                f"beside it)")


@dataclass(frozen=True)
class VerifyReport:
    """The result of checking a ledger. ``torn`` is its torn last line, or None: the chain is that before it."""

    path: Path
    entries: int
    head: str
    bytes: int
    torn: TornLine | None = None


def _torn(data: bytes) -> TornLine | None:
    """The last line of ``data`` when an interrupted append can have left it (module docstring), else None."""
    start = data.rfind(b"\n") + 1
    tail = data[start:]
    text = tail.rstrip(b"\0")
    if not tail.strip() or not (text.startswith(b'{"') or b'{"'.startswith(text)) \
            or any(c < 0x20 or c > 0x7e for c in text):
        return None
    try:
        json.loads(tail)
    except ValueError:
        return TornLine(line=data.count(b"\n", 0, start) + 1, offset=start, size=len(tail))
    return None  # it parses: a complete line without its newline


def _scan(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], TornLine | None]:
    """The entries of a ledger's complete lines, and its torn last line (or None)."""
    if not path.exists():
        raise AuditError(f"{path}: ledger not found")
    data = path.read_bytes()
    torn = _torn(data)
    if torn is not None:
        data = data[:torn.offset]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = data.count(b"\n", 0, exc.start) + 1
        raise AuditError(f"{path}:{lineno}: not a JSON line (not UTF-8)") from None
    out = []
    for lineno, line in enumerate(io.StringIO(text, newline=None), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AuditError(f"{path}:{lineno}: not a JSON line ({exc.msg})") from None
        if not isinstance(entry, dict) or any(k not in entry for k in (*_FIELDS, "hash")):
            raise AuditError(f"{path}:{lineno}: entry lacks one of {', '.join((*_FIELDS, 'hash'))}")
        out.append((lineno, entry))
    return out, torn


def _read(path: Path) -> list[tuple[int, dict[str, Any]]]:
    return _scan(path)[0]


def _side_file(path: Path, data: bytes) -> Path:
    """Write ``data`` durably to a new ``<name>.torn-<UTC time>[-n]`` beside ``path`` (mode 0600); its path."""
    stem = f"{path.name}.torn-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    for n in range(1, 1000):
        side = path.with_name(stem if n == 1 else f"{stem}-{n}")
        try:
            fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            side.unlink(missing_ok=True)
            raise
        os.close(fd)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return side
    raise AuditError(f"{path}: cannot find a free name for its torn last line beside it ({stem}-n)")


def verify(path: str | Path) -> VerifyReport:
    """Check the whole chain; raise :class:`AuditError` naming the first broken line.

    A torn last line (an append was interrupted; see the module docstring) is not refused but reported,
    as the report's ``torn``; the chain checked is that of the complete lines before it.
    """
    p = Path(path)
    prev, total, seq = GENESIS, 0, 0
    lines, torn = _scan(p)
    for lineno, entry in lines:
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
    if torn is not None:
        torn = TornLine(line=torn.line, offset=torn.offset, size=torn.size, entries=seq)
    return VerifyReport(path=p, entries=seq, head=prev, bytes=total, torn=torn)


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
        "torn": report.torn.describe() if report.torn is not None else None,
    }


def head_from(value: Any) -> dict[str, Any] | None:
    """A head received from the other side (``{"seq": int >= 0, "hash": 64 hex}``), or None when malformed."""
    if not isinstance(value, Mapping):
        return None
    seq, digest = value.get("seq"), value.get("hash")
    if type(seq) is not int or seq < 0 or not isinstance(digest, str) or len(digest) != 64 \
            or any(c not in "0123456789abcdef" for c in digest):
        return None
    return {"seq": seq, "hash": digest}


def entries(path: str | Path) -> list[dict[str, Any]]:
    """The entries of a ledger, in order, after checking its chain."""
    verify(path)
    return [e for _, e in _read(Path(path))]


@dataclass(frozen=True)
class ReceiptsReport:
    """The result of checking a ledger against the server's receipts."""

    ledger: VerifyReport
    receipts: Path
    institution: str
    receipted: int              # entries whose message the server's receipts record
    unreceipted: tuple[int, ...]  # entries the server never received (covered by later heads when not last)


def verify_receipts(path: str | Path, receipts: str | Path, institution: str | None = None) -> ReceiptsReport:
    """Check a ledger's chain, the receipts' chain, and the ledger against the receipts.

    Each receipt of the institution's replies records the ledger head that came with the reply: entry
    ``seq`` must exist with that hash, and entry ``seq + 1`` must be the reply (same round, kind, bytes
    and sha256). Each ledger entry's ``anchor`` must be a receipt with that hash. So removing the last
    entries, or editing one and recomputing the chain, shows against the receipts; and so does a rewrite
    of the receipts against the ledger.

    Parameters
    ----------
    path : str or Path
        The institution's ledger.
    receipts : str or Path
        The server's ``receipts.jsonl`` of the same run(s).
    institution : str, optional
        The institution's name in the receipts; found from the ledger when not given.

    Raises
    ------
    AuditError
        Naming the first ledger entry that does not match (or the broken line of either chain).
    """
    p, r = Path(path), Path(receipts)
    if not r.exists():
        raise AuditError(f"{r}: the server's receipts are not found, so {p} cannot be checked from entry 1 on "
                         f"(a chain alone does not show removed last entries or a recomputed chain); pass the "
                         f"server's receipts.jsonl with --receipts, or --chain-only to check the chain alone")
    report = verify(p)
    mine = [e for _, e in _read(p)]
    theirs = entries(r)
    name = institution if institution is not None else _institution_of(mine, theirs, r)
    got = [x for x in theirs if x["checks"].get("institution") == name]
    if not got:
        known = sorted({str(x["checks"].get("institution")) for x in theirs})
        raise AuditError(f"{r}: no receipt for {name!r} (the receipts name {', '.join(known) or 'nobody'}); entry 1 "
                         f"of {p} cannot be checked")
    n = len(mine)
    faults: list[tuple[int, str]] = []
    receipted: set[int] = set()
    for rec in got:
        where = f"the server's receipt {rec['seq']} (round {rec['round']}, {rec['kind']})"
        head = head_from(rec.get("anchor"))
        if head is None:
            raise AuditError(f"{r}: receipt {rec['seq']} records no ledger head (receipts of an older fedx?); "
                             f"check {p} with --chain-only")
        s = head["seq"]
        if s > n:
            faults.append((n + 1, (f"entry {n + 1} is missing: {where} records a ledger of {s} entries before that "
                                  f"reply, this one ends at entry {n} (the ledger was truncated)")))
            continue
        if (mine[s - 1]["hash"] if s else GENESIS) != head["hash"]:
            bad = max(s, 1)
            faults.append((bad, (f"entry {bad} does not match the server's receipts: its hash differs from the ledger "
                                 f"head {head['hash'][:12]} that came with the next reply ({where}); the entry was "
                                 f"edited, and the chain after it recomputed")))
        k = s + 1
        if k > n:
            faults.append((k, (f"entry {k} is missing: {where} records a reply of {rec['bytes']} bytes (sha256 "
                              f"{rec['sha256'][:12]}) that this ledger does not hold (the ledger was truncated)")))
            continue
        entry = mine[k - 1]
        for field in ("round", "kind", "bytes", "sha256"):
            if entry[field] != rec[field]:
                faults.append((k, (f"entry {k} does not match {where}: its {field} is {entry[field]!r}, the server "
                                  f"received {rec[field]!r}; the entry was edited, and the chain after it recomputed")))
                break
        receipted.add(k)
    # This run's entries: from the first receipted one to the next that answers a run's first request
    # (it carries no receipt head); those before and after belong to other runs, with other receipts.
    first, last = min(receipted | {n + 1}), max(receipted | {0})
    for k, entry in enumerate(mine[first - 1:], start=first):
        anchor = entry.get("anchor")
        if anchor is None:
            if k > last:
                break
            continue
        head = head_from(anchor)
        if head is None or head["seq"] < 1:
            faults.append((k, f"entry {k} holds a malformed receipt anchor {anchor!r}"))
        elif head["seq"] > len(theirs):
            faults.append((k, (f"entry {k} records the server's receipt {head['seq']}, but {r} ends at receipt "
                              f"{len(theirs)}: the receipts were truncated, or are not those of this ledger's run")))
        elif theirs[head["seq"] - 1]["hash"] != head["hash"]:
            faults.append((k, (f"entry {k} records the server's receipt {head['seq']} as {head['hash'][:12]}, but {r} "
                              f"holds another receipt there: the receipts were rewritten, or are not those of this "
                              f"ledger's run")))
    if faults:
        k, message = min(faults, key=lambda f: f[0])
        if k == n + 1 and report.torn is not None:
            message += f"; its {report.torn.describe()}"
        more = len({f[0] for f in faults}) - 1
        raise AuditError(f"{p}: {message}" + (f" ({more} later entr{'y' if more == 1 else 'ies'} mismatch too)"
                                               if more else ""))
    return ReceiptsReport(ledger=report, receipts=r, institution=name, receipted=len(receipted),
                          unreceipted=tuple(k for k in range(1, n + 1) if k not in receipted))


def _institution_of(mine: list[dict[str, Any]], theirs: list[dict[str, Any]], receipts: Path) -> str:
    """The institution whose receipts a ledger is checked against: from its anchors, or what it sent."""
    for entry in mine:
        head = head_from(entry.get("anchor"))
        if head is not None and 1 <= head["seq"] <= len(theirs) and theirs[head["seq"] - 1]["hash"] == head["hash"]:
            return str(theirs[head["seq"] - 1]["checks"].get("institution"))
    sent = {e["sha256"] for e in mine}
    for rec in theirs:
        if rec["sha256"] in sent:
            return str(rec["checks"].get("institution"))
    names = sorted({str(x["checks"].get("institution")) for x in theirs})
    if len(names) == 1:
        return names[0]
    raise AuditError(f"{receipts}: cannot tell which institution's receipts to check the ledger against; name it "
                     f"with --institution (one of {', '.join(names)})")
