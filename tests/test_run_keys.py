"""The server's public key, read and checked against the config in one place (fedx.run_keys): the same refusals in
a simulated run, in `fedx server` before its SuperLink starts, and in the deployed ServerApp (tests/test_summary.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from fedx import he
from fedx.config import config_from_dict
from fedx.errors import ConfigError, KeyFileError, KeyMismatchError
from fedx.flower import operate
from fedx.run_keys import given_keys, server_public_key

JOB = {"name": "t", "task": "fraud", "model": {"kind": "logistic"}, "data": {"target": "y"},
       "federation": {"min_clients": 2}}


def _cfg(keys: Path | None, **security: Any) -> Any:
    sec = {"encryption": "bfv-compact", **({"keys": str(keys)} if keys is not None else {}), **security}
    return config_from_dict({**JOB, "security": sec})


def _saved(folder: Path, preset: str = "bfv-compact", **overrides: Any) -> he.KeySet:
    keys = he.keygen(preset, **overrides)
    keys.save(folder)
    return keys


def test_keys_that_fit_are_read_from_the_folder_of_security_keys(tmp_path: Path) -> None:
    keys = _saved(tmp_path / "keys", bits=19, clip=2.0)
    public = server_public_key(_cfg(tmp_path / "keys", he={"bits": 19, "clip": 2.0}))
    assert public == keys.public
    assert server_public_key(_cfg(tmp_path / "keys")) == keys.public          # security.he unset: the keys' own
    assert server_public_key(_cfg(None, encryption="none")) is None


@pytest.mark.parametrize(("he_cfg", "message"), [
    ({"clip": 1.0}, r"public\.fxk: the keys clip values to 2, and security\.he\.clip is 1: make keys with "
                    r"`fedx keygen --preset bfv-compact --clip 1`, or change security\.he\.clip"),
    ({"bits": 16}, r"public\.fxk: the keys quantize to 19 bits, and security\.he\.bits is 16"),
])
def test_keys_made_with_other_settings_than_security_he_are_refused(tmp_path: Path, he_cfg: dict,
                                                                    message: str) -> None:
    _saved(tmp_path / "keys", bits=19, clip=2.0)
    with pytest.raises(ConfigError, match=r"^security\.keys: .*" + message):
        server_public_key(_cfg(tmp_path / "keys", he=he_cfg))


def test_a_setting_the_preset_does_not_take_and_missing_keys_are_named(tmp_path: Path) -> None:
    _saved(tmp_path / "keys", "ckks")
    with pytest.raises(ConfigError, match=r"^security\.he\.bits: 19 is not a setting of ckks keys"):
        server_public_key(_cfg(tmp_path / "keys", encryption="ckks", he={"bits": 19}))
    with pytest.raises(ConfigError, match=r"^security\.keys: missing \(the folder with public\.fxk"):
        server_public_key(_cfg(None))
    with pytest.raises(KeyFileError, match=r"^security\.keys: .*/nowhere does not exist \(expected public\.fxk"):
        server_public_key(_cfg(tmp_path / "nowhere"))


def test_a_simulation_s_key_folder_must_hold_the_secret_of_its_public_key(tmp_path: Path) -> None:
    keys = _saved(tmp_path / "keys")
    public, folder = given_keys(_cfg(tmp_path / "keys"))
    assert public == keys.public and folder == tmp_path / "keys"
    other = _saved(tmp_path / "other")
    os.replace(tmp_path / "other" / "public.fxk", tmp_path / "keys" / "public.fxk")
    with pytest.raises(KeyMismatchError, match="does not belong to secret.fxk"):
        given_keys(_cfg(tmp_path / "keys"))
    assert other.fingerprint != keys.fingerprint


def test_fedx_server_refuses_keys_that_do_not_fit_before_it_starts_a_superlink(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[Any] = []

    class _Started(Exception):
        pass

    def start_superlink(*args: Any, **kwargs: Any) -> None:
        started.append(kwargs)
        raise _Started

    monkeypatch.setattr(operate.deploy, "start_superlink", start_superlink)
    keys = _saved(tmp_path / "keys", bits=19, clip=2.0)
    dep = {"insecure": True, "out_dir": str(tmp_path / "server-out")}
    cfg = config_from_dict({**JOB, "security": {"encryption": "bfv-compact", "keys": str(tmp_path / "keys"),
                                                "he": {"bits": 16}}, "deployment": dep})
    with pytest.raises(ConfigError, match=r"the keys quantize to 19 bits, and security\.he\.bits is 16"):
        operate.serve(cfg, tmp_path / "server.yaml", say=lambda line: None)
    assert started == []
    # Keys that fit: the server says their fingerprint, the one that `fedx keygen` and `fedx node` print.
    said: list[str] = []
    cfg = config_from_dict({**JOB, "security": {"encryption": "bfv-compact", "keys": str(tmp_path / "keys")},
                            "deployment": dep})
    with pytest.raises(_Started):
        operate.serve(cfg, tmp_path / "server.yaml", say=said.append)
    assert f"HE public key bfv-compact, fingerprint {keys.fingerprint_text}" in "\n".join(said)


def test_max_clients_follows_the_federation_and_keys_that_hold_fewer_are_refused(tmp_path: Path) -> None:
    from fedx.run_keys import he_overrides

    def cfg(keys: Path | None, institutions: int | None = None, **security: Any) -> Any:
        data = {"target": "y", **({"institutions": institutions} if institutions is not None else {})}
        sec = {"encryption": "bfv-compact", **({"keys": str(keys)} if keys is not None else {}), **security}
        return config_from_dict({**JOB, "data": data, "security": sec})

    assert he_overrides(cfg(None, 40))["max_clients"] == 40               # data.institutions fixes the size
    assert "max_clients" not in he_overrides(cfg(None))                   # unknown: the preset's default
    assert he_overrides(cfg(None), n_institutions=7)["max_clients"] == 7  # known at run time
    assert he_overrides(cfg(None, 40, he={"max_clients": 100}))["max_clients"] == 100
    keys = _saved(tmp_path / "keys", max_clients=40)
    assert keys.preset.max_additions == 40
    assert server_public_key(cfg(tmp_path / "keys", 40)) == keys.public
    with pytest.raises(ConfigError, match=r"the keys hold sums of at most 40 updates \(he\.max_clients\), and the "
                                          r"federation has 41 institutions: make keys with `fedx keygen --preset "
                                          r"bfv-compact --max-clients 41`"):
        server_public_key(cfg(tmp_path / "keys", 41))
    with pytest.raises(ConfigError, match=r"the keys hold sums of 40 updates \(he\.max_clients\), and "
                                          r"security\.he\.max_clients is 50"):
        server_public_key(cfg(tmp_path / "keys", he={"max_clients": 50}))
    with pytest.raises(ConfigError, match=r"security\.he\.max_clients"):
        cfg(None, he={"max_clients": 0})
