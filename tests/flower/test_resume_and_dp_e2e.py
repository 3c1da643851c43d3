"""A run resumes from its checkpoint (institutions catch up from the stored aggregates), and client-level
differential privacy reports an honest epsilon and stops before the budget is exceeded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import fedx
from fedx.config import config_from_dict
from fedx.model import FedxModel

pytestmark = pytest.mark.slow


def test_encrypted_run_resumes_with_more_rounds_and_matches_an_uninterrupted_run(
        small_csv: Path, small_config, tmp_path: Path) -> None:
    doc = small_config(small_csv, security={"encryption": "bfv-compact"}, report={"baselines": []})
    out = tmp_path / "resumed"
    first = fedx.run(config_from_dict(doc, overrides={"federation.rounds": 2}), out, progress=False)
    assert [h["round"] for h in first.history] == [1, 2]
    # A new process: new simulated institutions with no memory of the run. The server sends them the
    # stored aggregates of rounds 1-2, they catch up, and round 3 continues from the checkpoint.
    resumed = fedx.run(config_from_dict(doc, overrides={"federation.rounds": 3}), out, progress=False, resume=True)
    assert [h["round"] for h in resumed.history] == [1, 2, 3]
    assert resumed.history[:2] == json.loads(json.dumps(first.history))
    straight = fedx.run(config_from_dict(doc, overrides={"federation.rounds": 3}), tmp_path / "straight",
                        progress=False)
    a = FedxModel.load(out / "institutions" / "north" / "model.pt")
    b = FedxModel.load(straight.out_dir / "institutions" / "north" / "model.pt")
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        np.testing.assert_array_equal(pa.numpy(), pb.numpy())
    # The checkpoint holds ciphertexts and digests only: no plaintext model at the server.
    index = json.loads((out / "checkpoint" / "index.json").read_text())
    assert index["state_file"] is None and index["aggregates"] == [1, 2, 3]


def test_client_dp_reports_epsilon_and_stops_at_the_budget(small_csv: Path, small_config, tmp_path: Path) -> None:
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    doc = small_config(small_csv, federation={"rounds": 4}, report={"baselines": []},
                       security={"encryption": "none", "dp": {"clip": 0.5, "noise_multiplier": 1.0,
                                                               "target_epsilon": 8.0}})
    result = fedx.run(config_from_dict(doc), tmp_path / "dp", progress=False)
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))

    def eps(steps: int) -> float:
        rdp = compute_rdp(q=1.0, noise_multiplier=1.0, steps=steps, orders=orders)
        return float(get_privacy_spent(orders=orders, rdp=rdp, delta=1e-5)[0])

    # epsilon after 2 rounds is 7.08 and after 3 it would be 9.01 > 8: two rounds run, then it stops.
    assert eps(2) < 8.0 < eps(3)
    assert len(result.history) == 2
    assert result.privacy["stopped_by_budget"] is True
    assert result.privacy["epsilon"] == pytest.approx(eps(2), rel=1e-9)
    assert [h["privacy"]["epsilon"] for h in result.history] == pytest.approx([eps(1), eps(2)], rel=1e-9)
    assert result.privacy["noise_multiplier"] == 1.0 and result.privacy["delta"] == 1e-5
    # Under client-level DP the unnoised training loss stays at the institutions.
    assert all(h["train_loss"] is None for h in result.history)


def test_client_dp_under_a_clip_range_sized_for_plaintext_updates_keeps_every_update(
        small_csv: Path, small_config, tmp_path: Path) -> None:
    # security.he.clip 0.5 suits plaintext updates; the noised ones need 0.5 + 6 * 1.0 * 0.5 / sqrt(3) = 2.23.
    # The run makes its keys with that range, so no institution's update is dropped.
    doc = small_config(small_csv, federation={"rounds": 2}, report={"baselines": []},
                       security={"encryption": "bfv-compact", "he": {"clip": 0.5},
                                 "dp": {"clip": 0.5, "noise_multiplier": 1.0}})
    result = fedx.run(config_from_dict(doc), tmp_path / "dp-he", progress=False)
    assert [sorted(h["clients"]) for h in result.history] == [["east", "north", "south"]] * 2
    assert all(not h["dropped"] for h in result.history)
    assert result.privacy["preset"]["clip"] == pytest.approx(0.5 + 6 * 0.5 / np.sqrt(3))
