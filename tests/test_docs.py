"""The docs stay in agreement with the code."""

from __future__ import annotations

import re
from pathlib import Path

from fedx.config import NODE_SECTIONS, reference_markdown

ROOT = Path(__file__).resolve().parents[1]


def _block(text: str, name: str) -> str:
    m = re.search(rf"<!-- BEGIN GENERATED: {name} -->\n(.*?)<!-- END GENERATED: {name} -->", text, re.S)
    assert m, f"docs/configuration.md lacks the generated block '{name}'"
    return m.group(1)


def test_configuration_reference_matches_the_code() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert _block(text, "run config") == reference_markdown(), "regenerate docs/configuration.md"
    assert _block(text, "node file") == reference_markdown(NODE_SECTIONS), "regenerate docs/configuration.md"


def test_docs_link_to_pages_that_exist() -> None:
    for page in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+\.md)\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
