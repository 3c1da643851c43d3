"""The anti-fraud example ships with ``security.masking: pairwise``; masking leaves its AUPRC unchanged, to the bit.

A reduced config (4,000 payments per bank, 2 rounds of 1 epoch) runs twice, with and without masking:
the masks cancel exactly in every sum, so the two federated models, and so their AUPRC, are the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import fedx

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "finance_antifraud"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REDUCED = {"data.params": {"sizes": [4000] * 5}, "federation.rounds": 2, "federation.local_epochs": 1,
           "report.baselines": [], "report.plots": False}


def test_the_example_masks_and_its_auprc_is_unchanged_to_the_bit(tmp_path: Path) -> None:
    shipped = fedx.load_config(EXAMPLE / "fedx.yaml")
    assert shipped.security.masking == "pairwise" and shipped.security.encryption == "bfv-compact"
    results = {}
    for masking in ("pairwise", "none"):
        cfg = fedx.load_config(EXAMPLE / "fedx.yaml", overrides={**REDUCED, "security.masking": masking})
        fedx.run(cfg, tmp_path / masking, progress=False)
        results[masking] = json.loads((tmp_path / masking / "result.json").read_text())
    masked, plain = results["pairwise"], results["none"]
    assert masked["metrics"]["auprc"] == plain["metrics"]["auprc"]
    assert masked["per_institution"] == plain["per_institution"]
    assert all("masking_bytes" in h for h in masked["history"]) and not any("masking_bytes" in h
                                                                          for h in plain["history"])
