"""The audit ledger: its hash chain, and its anchoring in the server's receipts (no Flower run needed).

The exchange below plays both sides as fedx/flower/client_app.py and coordinator.py do: every reply
carries the institution's ledger head, which the server's receipt records; every request carries the
head of the server's receipts for that institution, which the institution's entry records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedx.cli import main
from fedx.errors import AuditError
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
