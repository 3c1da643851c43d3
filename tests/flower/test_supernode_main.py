"""The SuperNode entry point that shortens Flower's waits (fedx.flower.deploy.supernode_main)."""

from __future__ import annotations

import time

import flwr
import pytest
from flwr.supernode import start_client_internal as loop

from fedx.errors import DeploymentError
from fedx.flower import deploy
from fedx.flower.deploy import supernode_main


def test_the_installed_loop_waits_are_shortened_and_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "time", time)   # restored after the test
    assert supernode_main.shorten_waits(0.05) is None
    waits = loop.time
    assert isinstance(waits, supernode_main._Waits) and (waits.idle, waits.reply) == (0.05, 0.005)
    t0 = time.monotonic()
    waits.sleep(3)      # Flower's idle wait
    waits.sleep(0.5)    # its wait for the ClientApp's reply
    assert time.monotonic() - t0 < 0.5
    t0 = time.monotonic()
    waits.sleep(0.2)    # any other duration is slept as asked
    assert 0.2 <= time.monotonic() - t0 < 1.0
    assert abs(waits.time() - time.time()) < 1.0 and waits.monotonic is time.monotonic


def test_another_flower_release_keeps_flowers_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "time", time)
    monkeypatch.setattr(flwr, "__version__", "1.99.0")
    why = supernode_main.shorten_waits(0.05)
    assert why is not None and "flwr 1.99.0" in why and loop.time is time


def test_the_poll_is_read_from_the_environment_with_clear_errors() -> None:
    assert supernode_main.poll_from_env({}) == supernode_main.DEFAULT_POLL
    assert supernode_main.poll_from_env({"FEDX_SUPERNODE_POLL": "0.5"}) == 0.5
    for bad in ("fast", "0", "10"):
        with pytest.raises(SystemExit, match="FEDX_SUPERNODE_POLL"):
            supernode_main.poll_from_env({"FEDX_SUPERNODE_POLL": bad})


def test_start_supernode_refuses_a_poll_out_of_range(tmp_path) -> None:
    with pytest.raises(DeploymentError, match="poll"):
        deploy.start_supernode("127.0.0.1:1", node_config={}, insecure=True, flwr_home=tmp_path,
                               log_path=tmp_path / "n.log", poll=0)
