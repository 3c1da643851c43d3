"""docs/quickstart.md, sections 6 to the end, run top to bottom as a reader would (how: quickstart_support.py).

Sections 1 to 5 run in tests/test_quickstart.py, which also checks that the two parts are the whole page.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from quickstart_support import QUICKSTART, part, run_steps, steps


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_quickstart_runs_top_to_bottom_from_section_6(tmp_path: Path) -> None:
    run_steps(steps(part(QUICKSTART.read_text(), first=False)), tmp_path)
