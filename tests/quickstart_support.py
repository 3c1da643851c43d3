"""docs/quickstart.md runs top to bottom, as a reader who follows it on a fresh checkout would run it.

Its code blocks are taken in order: ``bash`` blocks and the ``$`` lines of ``console`` blocks run in a shell,
with this checkout's ``fedx`` command, and ``python`` blocks in a fresh interpreter. Each must succeed. A
python block followed directly by an output block must print that output: the same words, and numbers
equal to 3 significant digits (or within 1e-6, for differences that CKKS's noise sets). Whole numbers of
four digits or more are byte counts, which vary by a few per cent with what a message carries besides the
model (timings, ledger heads): they are equal to 5%. Everything runs in
a temporary folder that holds a copy of the repository's examples/, so the runs/ it writes stay there.

The page runs in two parts, each in a test file of its own so that two test workers run them side by side:
sections 1 to 5 (tests/test_quickstart.py: the plaintext and encrypted runs, then what reads them) and sections
6 to the end (tests/test_quickstart_later.py: statistics, the Python API, a DataFrame), which read nothing
that the first part writes. tests/test_quickstart.py checks that the two parts are the whole page.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "docs" / "quickstart.md"
# What §1 installs is the environment that runs this test: it is not installed again.
SETUP = ["make setup"]
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```\n", re.DOTALL | re.MULTILINE)
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
HEADING = re.compile(r"^## (\d+)\. ", re.MULTILINE)
#: The first section of the second part.
SECOND_PART = 6


def blocks(text: str) -> list[tuple[str, str, bool]]:
    """Each fenced block: (language, body, whether the next block starts right after it)."""
    found = list(FENCE.finditer(text))
    return [(m.group(1), m.group(2), i + 1 < len(found) and found[i + 1].start() == m.end())
            for i, m in enumerate(found)]


def steps(text: str) -> list[tuple[str, str, str | None]]:
    """What a reader runs, in order: ("shell" or "python", code, the output the doc shows, if any)."""
    found = blocks(text)
    out: list[tuple[str, str, str | None]] = []
    for i, (lang, body, adjacent) in enumerate(found):
        if lang == "bash":
            out.append(("shell", body, None))
        elif lang == "console":
            for line in body.splitlines():
                if line.startswith("$ "):
                    out.append(("shell", line[2:], None))
        elif lang == "python":
            shown = found[i + 1][1] if adjacent and found[i + 1][0] == "" else None
            out.append(("python", body, shown))
    return out


def part(text: str, first: bool) -> str:
    """The page before section SECOND_PART (``first``), or from it to the end."""
    start = next((m.start() for m in HEADING.finditer(text) if int(m.group(1)) == SECOND_PART), None)
    assert start is not None, f"docs/quickstart.md has no section {SECOND_PART}"
    return text[:start] if first else text[start:]


def same_output(shown: str, printed: str) -> str | None:
    """None when ``printed`` is ``shown``, numbers compared loosely; otherwise the first line that differs."""
    want, got = shown.strip().splitlines(), printed.strip().splitlines()
    if len(want) != len(got):
        return f"{len(got)} line(s) printed, the doc shows {len(want)}:\n{printed}"
    for w, g in zip(want, got):
        wn, gn = NUMBER.findall(w), NUMBER.findall(g)
        if NUMBER.sub("#", w).split() != NUMBER.sub("#", g).split() or len(wn) != len(gn) or not all(
                close(a, b) for a, b in zip(wn, gn)):
            return f"the doc shows\n  {w}\nand it printed\n  {g}"
    return None


def close(shown: str, printed: str) -> bool:
    rel = 0.05 if re.fullmatch(r"\d{4,}", shown) else 1e-3
    return math.isclose(float(shown), float(printed), rel_tol=rel, abs_tol=1e-6)


def run_steps(found: list[tuple[str, str, str | None]], tmp_path: Path) -> None:
    """Run the steps in a temporary folder holding a copy of examples/; each must succeed and print what is shown."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "fedx").exists(), f"no fedx command beside {sys.executable}"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    for kind, code, shown in found:
        if kind == "shell" and code.strip() in SETUP:
            continue
        argv = ["bash", "-e", "-c", code] if kind == "shell" else [sys.executable, "-c", code]
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False)
        assert done.returncode == 0, f"{code}\nfailed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        if shown is not None:
            differs = same_output(shown, done.stdout)
            assert differs is None, f"{code}\n{differs}"
