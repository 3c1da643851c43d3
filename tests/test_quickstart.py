"""docs/quickstart.md, sections 1 to 5, run top to bottom as a reader would (how: quickstart_support.py).

Sections 6 to the end run in tests/test_quickstart_later.py, beside this file on another test worker.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from quickstart_support import QUICKSTART, SETUP, part, run_steps, same_output, steps


def test_the_steps_are_found_in_the_doc() -> None:
    text = QUICKSTART.read_text()
    found = steps(text)
    shell = [code.strip() for kind, code, _ in found if kind == "shell"]
    assert shell[0] == SETUP[0]
    assert any(c.startswith("fedx run ") for c in shell) and any(c.startswith("fedx stats ") for c in shell)
    python = [(code, shown) for kind, code, shown in found if kind == "python"]
    assert len(python) >= 5 and all(shown is not None for _, shown in python)
    assert any("tables=" in code for code, _ in python), "the quickstart shows a run from a DataFrame"
    assert same_output("a 0.8961 [0.493 0.989]\n", "a 0.89612 [0.4931 0.989]") is None
    assert same_output("a 0.8961\n", "a 0.8861") is not None
    assert same_output("a 1\n", "b 1") is not None
    assert same_output("39548 bytes, 920 rows\n", "40295 bytes, 920 rows") is None
    assert same_output("39548 bytes, 920 rows\n", "39548 bytes, 921 rows") is not None
    # The two parts that the two test files run are the whole page, each step once, in order.
    first, later = steps(part(text, first=True)), steps(part(text, first=False))
    assert first and later and first + later == found


def test_the_later_steps_read_nothing_the_first_part_writes() -> None:
    """The second part runs in a folder of its own: none of its steps names a run folder of the first part."""
    text = QUICKSTART.read_text()
    first_code = "\n".join(code for _, code, _ in steps(part(text, first=True)))
    written = set(re.findall(r"runs/[\w.-]+", first_code))
    assert written, "the first part writes run folders"
    later_code = "\n".join(code for _, code, _ in steps(part(text, first=False)))
    assert not [w for w in written if w in later_code], written


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_quickstart_runs_top_to_bottom(tmp_path: Path) -> None:
    run_steps(steps(part(QUICKSTART.read_text(), first=True)), tmp_path)
