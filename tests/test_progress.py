"""fedx.progress: a progress bar in a terminal; in a log file or a pipe, one plain line per round."""

from __future__ import annotations

import io

from fedx.progress import RunProgress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def feed(bar: RunProgress) -> None:
    with bar:
        bar("connected", {"institutions": ["bank_a", "bank_b", "bank_c"]})
        bar("rounds", {"start": 1, "total": 2})
        for r, (auprc, eps) in enumerate(((0.7512, 0.5), (0.80125, 0.9)), start=1):
            bar("round_start", {"round": r})
            for got in (1, 2, 3):
                bar("reply", {"what": "train", "received": got, "expected": 3})
            dropped = {"bank_c": "timed out"} if r == 2 else {}
            bar("round_end", {"round": r, "metrics": {"auprc": auprc, "loss": 0.4}, "seconds": 1.25 * r,
                              "privacy": {"epsilon": eps}, "dropped": dropped})


def test_a_log_file_gets_one_plain_line_per_round() -> None:
    out = io.StringIO()
    bar = RunProgress("auprc", file=out)
    assert not bar.live
    feed(bar)
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text
    assert text.splitlines() == [
        "3 institutions connected: bank_a, bank_b, bank_c",
        "rounds 1-2",
        "round 1/2: auprc 0.7512  ε=0.50 (1.2 s)",
        "round 2/2: auprc 0.8013  ε=0.90  dropped: bank_c (2.5 s)",
    ]


def test_a_terminal_gets_the_progress_bar() -> None:
    out = _Terminal()
    bar = RunProgress("auprc", file=out)
    assert bar.live
    feed(bar)
    text = out.getvalue()
    assert "\x1b[" in text                         # the bar redraws itself with control codes
    assert "round 1/2: auprc" not in text          # and prints no plain lines


def test_disabled_prints_nothing() -> None:
    for out in (io.StringIO(), _Terminal()):
        feed(RunProgress("auprc", enabled=False, file=out))
        assert out.getvalue() == ""


def test_a_resume_with_nothing_left_says_so_instead_of_an_empty_range() -> None:
    out = io.StringIO()
    with RunProgress("auprc", file=out) as bar:
        bar("resumed", {"round": 3, "unit": "tree"})
        bar("rounds", {"start": 4, "total": 3, "unit": "tree"})
    assert out.getvalue().splitlines() == ["resuming after tree 3 from the checkpoint",
                                           "all 3 trees were already grown; nothing to do"]
    out = io.StringIO()
    with RunProgress("auprc", file=out) as bar:
        bar("resumed", {"round": 1})
        bar("rounds", {"start": 2, "total": 1})
    assert out.getvalue().splitlines() == ["resuming after round 1 from the checkpoint",
                                           "the only round was already run; nothing to do"]
    term = _Terminal()
    with RunProgress("auprc", file=term) as bar:
        bar("rounds", {"start": 4, "total": 3, "unit": "tree"})
    assert "all 3 trees were already grown; nothing to do" in term.getvalue() and "3/3" in term.getvalue()
