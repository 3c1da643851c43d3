"""Client-level DP with bfv-compact: the HE clip range is sized for the noised update from the config, before
anything runs, so a clip chosen for plaintext updates (the anti-fraud example's 2.0) no longer drops every
update after the federation has started."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import fedx
from fedx import he
from fedx.config import load_config
from fedx.errors import ConfigError
from fedx.privacy.dp import noised_value_bound
from fedx.run_keys import he_overrides

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "finance_antifraud" / "fedx.yaml"
DP = {"security.dp.noise_multiplier": 1.1, "security.dp.clip": 1.0}


def test_the_example_with_dp_gets_keys_wide_enough_for_every_round(caplog: pytest.LogCaptureFixture) -> None:
    cfg = load_config(EXAMPLE, overrides=DP)
    assert cfg.security.he.clip == 2.0
    with caplog.at_level(logging.WARNING, logger="fedx.run_keys"):
        overrides = he_overrides(cfg)
    need = noised_value_bound(1.0, 1.1, cfg.federation.min_clients)       # 4.81 at 3 institutions
    assert overrides == {"bits": 19, "clip": pytest.approx(need)}
    assert "security.he.clip 2 is too narrow for the DP noise" in caplog.text
    # Each institution checks its noised update against the keys' range in every round: with any number of
    # institutions from min_clients up to the example's five, the range now holds it.
    preset = he.get_preset("bfv-compact", **overrides)
    assert all(noised_value_bound(1.0, 1.1, n) <= preset.clip for n in range(cfg.federation.min_clients, 6))
    # Without DP the example's own range is kept.
    assert he_overrides(load_config(EXAMPLE)) == {"bits": 19, "clip": 2.0}


def test_given_keys_too_narrow_for_dp_are_refused_before_the_run(tmp_path: Path) -> None:
    keys = he.keygen("bfv-compact", clip=2.0)
    keys.save(tmp_path / "keys")
    cfg = load_config(EXAMPLE, overrides={**DP, "security.keys": str(tmp_path / "keys")})
    with pytest.raises(ConfigError, match=r"security\.keys: .*public\.fxk: the keys clip values to 2, and client-level DP "
                                          r"\(security\.dp\.clip 1, noise_multiplier 1\.1, federation\.min_clients 3\) "
                                          r"needs at least 4\.81: make keys with `fedx keygen --preset bfv-compact "
                                          r"--clip 4\.82"):
        fedx.run(cfg, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
