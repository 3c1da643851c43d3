"""The audit ledger: its hash chain, and its anchoring in the server's receipts (no Flower run needed).

The exchange below plays both sides as fedx/flower/client_app.py and coordinator.py do: every reply
carries the institution's ledger head, which the server's receipt records; every request carries the
head of the server's receipts for that institution, which the institution's entry records.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from fedx.cli import main
from fedx.errors import AuditError
from fedx.privacy import audit
from fedx.privacy.audit import AuditLedger, _line_hash, summary, verify, verify_receipts

NAMES = ("north", "south")
PHASES = [(0, "hello"), (0, "levels"), (0, "moments"), (0, "setup"), (1, "train"), (1, "evaluate"), (2, "train"),
          (2, "evaluate"), (2, "final")]


def _run(folder: Path, receipts: AuditLedger | None = None) -> tuple[dict[str, Path], Path]:
    """Two institutions answering every phase of a small run; their ledgers and the server's receipts."""
    receipts = receipts or AuditLedger(folder / "receipts.jsonl")
    ledgers = {n: AuditLedger(folder / n / "ledger.jsonl") for n in NAMES}
    last: dict[str, dict[str, Any] | None] = {n: None for n in NAMES}
    for rnd, phase in PHASES:
        for name in NAMES:
            ledger = ledgers[name]
            head = ledger.head
            reply = json.dumps({"phase": phase, "round": rnd, "name": name, "ledger": head}).encode()
            parts = [reply, f"{name}-{phase}-{rnd}".encode() * (rnd + 3)]
            ledger.append(round=rnd, kind=phase, payload=parts, checks={"status": "ok"}, anchor=last[name])
            entry = receipts.append(round=rnd, kind=phase, payload=parts, checks={"institution": name}, anchor=head)
            last[name] = {"seq": entry["seq"], "hash": entry["hash"]}
    return {n: ledgers[n].path for n in NAMES}, receipts.path


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_rechained(path: Path, lines: list[dict[str, Any]]) -> None:
    """Write entries with every prev and hash recomputed: a chain that verifies on its own."""
    prev = "0" * 64
    for e in lines:
        e["prev"] = prev
        e["hash"] = prev = _line_hash(e)
    path.write_text("".join(json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n" for e in lines))


# ---------------------------------------------------------------------------- the chain alone


def _ledger(path: Path, n: int = 5) -> Path:
    ledger = AuditLedger(path)
    for i in range(n):
        ledger.append(round=i, kind="train" if i else "hello", payload=[b"x" * (10 + i), b"y"],
                      checks={"status": "ok", "encrypted": bool(i)})
    return path


@pytest.mark.parametrize("tamper, message", [
    (lambda lines: lines[:1] + lines[2:], r":2: sequence number 3, expected 2 \(a line was removed"),
    (lambda lines: [lines[0], lines[2], lines[1], *lines[3:]], r":2: sequence number 3, expected 2"),
    (lambda lines: [*lines[:2], lines[1], *lines[2:]], r":3: sequence number 2, expected 3"),
    (lambda lines: [*lines[:3], lines[3].replace('"bytes":14', '"bytes":15'), *lines[4:]],
     r":4: its content does not match its hash \(the line was edited\)"),
    (lambda lines: [*lines[:2], "{not json", *lines[3:]], r":3: not a JSON line"),
    (lambda lines: [*lines[:2], '{"seq": 3}', *lines[3:]], r":3: entry lacks one of seq, time"),
])
def test_chain_names_the_first_bad_line(tmp_path: Path, tamper: Any, message: str) -> None:
    path = _ledger(tmp_path / "ledger.jsonl")
    assert verify(path).entries == 5
    path.write_text("\n".join(tamper(path.read_text().splitlines())) + "\n")
    with pytest.raises(AuditError, match=message):
        verify(path)
    with pytest.raises(AuditError, match=message):
        AuditLedger(path)  # a broken ledger is never continued


def test_a_ledger_continues_its_chain_and_summarizes_what_left(tmp_path: Path) -> None:
    path = _ledger(tmp_path / "ledger.jsonl", 3)
    ledger = AuditLedger(path)
    assert ledger.head == {"seq": 3, "hash": _lines(path)[-1]["hash"]}
    ledger.append(round=3, kind="final", payload=b"z" * 7)
    report = verify(path)
    assert (report.entries, report.bytes) == (4, 11 + 12 + 13 + 7)
    doc = summary(path)
    assert doc["by_kind"] == {"final": {"messages": 1, "bytes": 7}, "hello": {"messages": 1, "bytes": 11},
                              "train": {"messages": 2, "bytes": 25}}
    assert doc["rounds"] == [0, 1, 2, 3] and doc["checks"]["encrypted=True"] == 2


# ---------------------------------------------------------------------------- anchored in the receipts


@pytest.fixture()
def run(tmp_path: Path) -> tuple[dict[str, Path], Path]:
    return _run(tmp_path)


def test_intact_ledgers_match_the_receipts(run: tuple[dict[str, Path], Path], capsys: pytest.CaptureFixture) -> None:
    ledgers, receipts = run
    for name, path in ledgers.items():
        report = verify_receipts(path, receipts)
        assert report.institution == name  # found from the ledger's anchors
        assert (report.receipted, report.unreceipted, report.ledger.entries) == (len(PHASES), (), len(PHASES))
    assert main(["audit", "verify", str(ledgers["north"]), "--receipts", str(receipts)]) == 0
    out = capsys.readouterr().out
    assert f"chain intact, {len(PHASES)} entries" in out and "matches the server's receipts" in out
    assert "for north: 9 entries receipted" in out


def test_truncated_ledger_is_detected_naming_the_first_missing_entry(run: tuple[dict[str, Path], Path],
                                                                     capsys: pytest.CaptureFixture) -> None:
    ledgers, receipts = run
    path = ledgers["south"]
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-2]))
    assert verify(path).entries == len(PHASES) - 2  # the chain alone does not show it
    with pytest.raises(AuditError, match=r"entry 8 is missing: the server's receipt \d+ \(round 2, evaluate\) "
                                         r"records a reply .*\(the ledger was truncated\)"):
        verify_receipts(path, receipts)
    assert main(["audit", "verify", str(path), "--receipts", str(receipts)]) == 2
    assert "entry 8 is missing" in capsys.readouterr().err


@pytest.mark.parametrize("field, value, message", [
    ("bytes", 1, (r"entry 5 does not match the server's receipt \d+ \(round 1, train\): its bytes is \d+, the "
                  r"server received \d+; the entry was edited, and the chain after it recomputed")),
    ("time", "2020-01-01T00:00:00Z", (r"entry 5 does not match the server's receipts: its hash differs from the "
                                      r"ledger head [0-9a-f]{12} that came with the next reply")),
])
def test_edited_and_rechained_ledger_is_detected_at_the_edited_entry(run: tuple[dict[str, Path], Path], field: str,
                                                                     value: Any, message: str) -> None:
    ledgers, receipts = run
    path = ledgers["north"]
    lines = _lines(path)
    lines[4][field] = lines[4][field] + value if field == "bytes" else value
    _write_rechained(path, lines)
    verify(path)  # a recomputed chain is intact
    with pytest.raises(AuditError, match=message):
        verify_receipts(path, receipts)


def test_deleted_receipts_are_detected(run: tuple[dict[str, Path], Path], capsys: pytest.CaptureFixture) -> None:
    ledgers, receipts = run
    receipts.unlink()
    with pytest.raises(AuditError, match=r"the server's receipts are not found, so .*ledger.jsonl cannot be checked "
                                         r"from entry 1 on"):
        verify_receipts(ledgers["north"], receipts)
    assert main(["audit", "verify", str(ledgers["north"]), "--receipts", str(receipts)]) == 2
    assert "cannot be checked from entry 1 on" in capsys.readouterr().err
    # Checking the chain alone is possible, and says what it cannot see.
    assert main(["audit", "verify", str(ledgers["north"]), "--chain-only"]) == 0
    assert "chain only: not checked against the server's receipts" in capsys.readouterr().out


def test_default_receipts_of_a_simulation_run_and_a_missing_one(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    ledgers, receipts = _run(tmp_path / "institutions")
    receipts.rename(tmp_path / "receipts.jsonl")  # a simulation: RUN/receipts.jsonl, RUN/institutions/NAME/
    assert main(["audit", "verify", str(ledgers["south"])]) == 0
    assert "for south" in capsys.readouterr().out
    (tmp_path / "receipts.jsonl").unlink()
    assert main(["audit", "verify", str(ledgers["south"])]) == 2
    assert f"{tmp_path / 'receipts.jsonl'}: the server's receipts are not found" in capsys.readouterr().err


def test_rewritten_or_truncated_receipts_are_detected_against_the_ledger(run: tuple[dict[str, Path],
                                                                                 Path]) -> None:
    """The server cannot rewrite its receipts either: the institution's entries hold their hashes."""
    ledgers, receipts = run
    original = receipts.read_text()
    lines = _lines(receipts)
    lines[6]["checks"] = {"institution": lines[6]["checks"]["institution"], "note": "rewritten"}
    _write_rechained(receipts, lines)
    verify(receipts)
    with pytest.raises(AuditError, match=r"entry \d+ records the server's receipt 7 as [0-9a-f]{12}, but .* holds "
                                         r"another receipt there: the receipts were rewritten"):
        verify_receipts(ledgers["north"], receipts)
    receipts.write_text("".join(original.splitlines(keepends=True)[:-4]))
    with pytest.raises(AuditError, match=r"entry 9 records the server's receipt 15, but .* ends at receipt 14: the "
                                         r"receipts were truncated"):
        verify_receipts(ledgers["north"], receipts)


def test_a_ledger_that_spans_several_runs_checks_against_each_runs_receipts(tmp_path: Path) -> None:
    first, _ = _run(tmp_path, AuditLedger(tmp_path / "run1" / "receipts.jsonl"))
    second, receipts = _run(tmp_path, AuditLedger(tmp_path / "run2" / "receipts.jsonl"))
    assert first == second  # the institutions' ledgers continued
    report = verify_receipts(second["north"], receipts)
    assert report.ledger.entries == 2 * len(PHASES)
    assert report.unreceipted == tuple(range(1, len(PHASES) + 1))  # the first run's, anchored by later heads
    assert verify_receipts(second["north"], tmp_path / "run1" / "receipts.jsonl", institution="north").receipted == 9


def test_the_receipts_file_itself_verifies_as_a_chain(run: tuple[dict[str, Path], Path],
                                                      capsys: pytest.CaptureFixture) -> None:
    _, receipts = run
    assert main(["audit", "verify", str(receipts)]) == 0
    assert "the server's receipts" in capsys.readouterr().out
    lines = receipts.read_text().splitlines()
    entry = json.loads(lines[3])
    entry["bytes"] += 1
    lines[3] = json.dumps(entry, sort_keys=True, separators=(",", ":"))
    receipts.write_text("\n".join(lines) + "\n")
    assert main(["audit", "verify", str(receipts)]) == 2
    assert ":4: its content does not match its hash" in capsys.readouterr().err


# ---------------------------------------------------------------------------- an interrupted append


def _torn(path: Path, n: int, keep: float, pad: int = 0) -> tuple[bytes, bytes]:
    """A ledger of ``n`` entries whose last line an interrupted append tore; its complete part and torn bytes."""
    data = _ledger(path, n).read_bytes()
    lines = data.splitlines(keepends=True)
    whole, last = b"".join(lines[:-1]), lines[-1]
    fragment = last[:keep if isinstance(keep, int) else int(len(last) * keep)] + b"\0" * pad
    path.write_bytes(whole + fragment)
    return whole, fragment


def _side_files(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.torn-*"))


@pytest.mark.parametrize("keep, pad", [(1, 0), (0.5, 0), (-2, 0), (0.3, 300), (0, 64)],
                         ids=["one-byte", "half", "all-but-brace", "half-then-NULs", "only-NULs"])
def test_a_torn_last_line_is_set_aside_and_the_chain_continues(tmp_path: Path, keep: Any, pad: int,
                                                               caplog: pytest.LogCaptureFixture,
                                                               capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "ledger.jsonl"
    whole, fragment = _torn(path, 6, keep, pad)
    report = verify(path)  # reported, not refused, and told apart from tampering
    assert (report.entries, report.head) == (5, json.loads(whole.splitlines()[-1])["hash"])
    assert report.torn is not None and (report.torn.line, report.torn.size, report.torn.entries) == (6, len(fragment), 5)
    assert main(["audit", "verify", str(path), "--chain-only"]) == 0
    out = capsys.readouterr().out
    assert "torn final line (an append was interrupted): line 6" in out and "chain intact, 5 entries" in out
    assert summary(path)["torn"].startswith("torn final line")
    assert path.read_bytes() == whole + fragment and not _side_files(path)  # checking changes nothing

    with caplog.at_level("WARNING", logger="fedx.privacy.audit"):
        ledger = AuditLedger(path)
    (side,) = _side_files(path)
    assert side.read_bytes() == fragment and side.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes() == whole
    assert str(path) in caplog.text and str(side) in caplog.text and "interrupted" in caplog.text
    assert ledger.head == {"seq": 5, "hash": report.head}
    ledger.append(round=9, kind="final", payload=b"after the crash")
    report = verify(path)
    assert (report.entries, report.torn) == (6, None)
    assert AuditLedger(path).head["seq"] == 6 and _side_files(path) == [side]


def test_torn_lines_never_overwrite_an_earlier_side_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frozen = audit.time.gmtime(0)
    monkeypatch.setattr(audit.time, "gmtime", lambda *_: frozen)
    path = tmp_path / "ledger.jsonl"
    _, first = _torn(path, 3, 0.5)
    AuditLedger(path).append(round=3, kind="train", payload=b"a")
    data = path.read_bytes()
    second = data.splitlines(keepends=True)[-1][:-7]
    path.write_bytes(b"".join(data.splitlines(keepends=True)[:-1]) + second)
    assert AuditLedger(path).head["seq"] == 2
    sides = _side_files(path)
    assert [p.name for p in sides] == ["ledger.jsonl.torn-19700101T000000Z", "ledger.jsonl.torn-19700101T000000Z-2"]
    assert [p.read_bytes() for p in sides] == [first, second]


@pytest.mark.parametrize("tamper, message", [
    (lambda lines: [*lines[:2], lines[2].replace('"bytes":13', '"bytes":14'), *lines[3:]],
     r":3: its content does not match its hash \(the line was edited\)"),
    (lambda lines: [*lines[:4], lines[4].replace('"round":4', '"round":5')],
     r":5: its content does not match its hash \(the line was edited\)"),
    (lambda lines: lines[:1] + lines[2:], r":2: sequence number 3, expected 2"),
])
def test_tampering_is_refused_even_with_a_torn_last_line(tmp_path: Path, tamper: Any, message: str) -> None:
    path = tmp_path / "ledger.jsonl"
    whole, fragment = _torn(path, 6, 0.5)
    path.write_bytes(("\n".join(tamper(whole.decode().splitlines())) + "\n").encode() + fragment)
    before = path.read_bytes()
    with pytest.raises(AuditError, match=message):
        verify(path)
    with pytest.raises(AuditError, match=message):
        AuditLedger(path)
    assert path.read_bytes() == before and not _side_files(path)  # a refused ledger is left as it is


@pytest.mark.parametrize("tail", [b"not an entry", b'{"bytes":1\r', "{\"kind\":\"trai\u00e9".encode(), b'[{"seq":6'],
                         ids=["text", "carriage-return", "non-ascii", "not-an-object"])
def test_a_last_line_that_no_append_could_leave_is_still_refused(tmp_path: Path, tail: bytes) -> None:
    path = tmp_path / "ledger.jsonl"
    whole = _ledger(path, 3).read_bytes()
    path.write_bytes(whole + tail)
    with pytest.raises(AuditError, match=r":4: not a JSON line"):
        AuditLedger(path)
    assert path.read_bytes() == whole + tail and not _side_files(path)
    # The same torn bytes in the middle of the ledger are refused too: only a last line is an interrupted append.
    path.write_bytes(whole + b'{"bytes":1' + b"\n" + whole.splitlines(keepends=True)[-1])
    with pytest.raises(AuditError, match=r":4: not a JSON line"):
        AuditLedger(path)
    # A torn line of an append that could be one is recovered (the test's control).
    path.write_bytes(whole + b'{"bytes":1')
    assert AuditLedger(path).head["seq"] == 3


def test_a_complete_last_line_without_its_newline_is_continued_on_a_new_line(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    whole = _ledger(path, 4).read_bytes()
    path.write_bytes(whole[:-1])
    ledger = AuditLedger(path)
    assert ledger.head["seq"] == 4 and path.read_bytes() == whole[:-1] and not _side_files(path)
    ledger.append(round=4, kind="final", payload=b"z")
    report = verify(path)
    assert (report.entries, report.torn) == (5, None) and path.read_bytes().startswith(whole)
    # Edited, it is refused as before.
    path.write_bytes(whole[:-1].replace(b'"round":3', b'"round":2'))
    with pytest.raises(AuditError, match=r":4: its content does not match its hash"):
        AuditLedger(path)


@pytest.mark.parametrize("content", [b'{"by', b"\0" * 512], ids=["first-append-torn", "only-NULs"])
def test_a_ledger_whose_only_line_is_torn_starts_again_from_the_genesis(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(content)
    assert verify(path).entries == 0 and verify(path).torn is not None
    ledger = AuditLedger(path)
    assert ledger.head == {"seq": 0, "hash": "0" * 64} and path.read_bytes() == b""
    assert [p.read_bytes() for p in _side_files(path)] == [content]
    ledger.append(round=0, kind="hello", payload=b"h")
    assert verify(path).entries == 1


def test_an_empty_last_fragment_is_no_torn_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _ledger(tmp_path / "ledger.jsonl", 3)
    whole = path.read_bytes()
    assert whole.endswith(b"\n")
    report = verify(path)
    assert (report.entries, report.torn) == (3, None) and summary(path)["torn"] is None
    with caplog.at_level("WARNING", logger="fedx.privacy.audit"):
        AuditLedger(path).append(round=3, kind="final", payload=b"z")
    assert not caplog.text and not _side_files(path) and path.read_bytes().startswith(whole)
    assert verify(path).entries == 4


def test_an_append_cut_short_by_a_full_disk_fails_and_the_next_one_recovers(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = _ledger(tmp_path / "ledger.jsonl", 3)
    whole = path.read_bytes()
    ledger = AuditLedger(path)
    calls: list[int] = []

    def full_disk(fd: int, data: Any) -> int:  # the first write takes 20 bytes; then the disk is full
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, bytes(data[:20]))

    class _Os:
        write = staticmethod(full_disk)

        def __getattr__(self, name: str) -> Any:
            return getattr(os, name)

    monkeypatch.setattr(audit, "os", _Os())
    with pytest.raises(OSError, match="No space left"):
        ledger.append(round=3, kind="final", payload=b"z")  # never taken for written
    monkeypatch.undo()
    assert ledger.head["seq"] == 3 and path.read_bytes() == whole + b'{"bytes":1,"checks":'[:20]
    ledger.append(round=3, kind="final", payload=b"z")
    report = verify(path)
    assert (report.entries, report.torn) == (4, None)
    assert [p.read_bytes() for p in _side_files(path)] == [b'{"bytes":1,"checks":'[:20]]
