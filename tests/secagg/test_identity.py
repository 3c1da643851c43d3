"""Signed adverts: a server that substitutes an institution's masking keys is caught by the pinned identity."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from fedx.errors import MaskingError
from fedx.secagg import MaskingClient, RoundSetup
from fedx.secagg import identity

MEMBERS = ("bank_a", "bank_b", "bank_c")


def adverts(folder: Path):
    setup = RoundSetup.create(MEMBERS, modulus=1032193, round_=1)
    keys = {m: identity.load_or_create(folder / m) for m in MEMBERS}
    ads = {m: MaskingClient(m, setup).advertise() for m in MEMBERS}
    sigs = {m: identity.sign_advert(keys[m], ads[m]) for m in MEMBERS}
    ids = {m: identity.public_bytes(keys[m]) for m in MEMBERS}
    return ads, sigs, ids


def test_identity_keys_persist_and_the_private_key_is_private(tmp_path: Path) -> None:
    a = identity.load_or_create(tmp_path)
    b = identity.load_or_create(tmp_path)
    assert identity.public_bytes(a) == identity.public_bytes(b)
    assert (tmp_path / identity.KEY_FILE).stat().st_mode & 0o077 == 0
    assert (tmp_path / identity.PUB_FILE).read_text().strip() == identity.public_bytes(a).hex()


def test_a_substituted_mask_key_fails_the_signature(tmp_path: Path) -> None:
    ads, sigs, ids = adverts(tmp_path)
    forged = dataclasses.replace(ads["bank_b"], mask_key=ads["bank_c"].mask_key)  # the server's choice of key
    identity.Pins(tmp_path / "x").check(ids, ads, sigs)
    with pytest.raises(MaskingError, match="not signed by its identity key"):
        identity.Pins(tmp_path / "y").check(ids, {**ads, "bank_b": forged}, sigs)


def test_a_server_that_also_swaps_the_identity_is_caught_by_the_pin(tmp_path: Path) -> None:
    ads, sigs, ids = adverts(tmp_path)
    pins = tmp_path / "bank_a"
    identity.Pins(pins).check(ids, ads, sigs)  # first use pins all three
    assert set(json.loads((pins / identity.PINS_FILE).read_text())) == set(MEMBERS)
    # Next round, the server replaces bank_b's advert with its own keys, signed with an identity of its own.
    ads2, sigs2, ids2 = adverts(tmp_path / "server")
    mixed = ({**ads, "bank_b": ads2["bank_b"]}, {**sigs, "bank_b": sigs2["bank_b"]}, {**ids, "bank_b": ids2["bank_b"]})
    with pytest.raises(MaskingError, match="differs from the one pinned"):
        identity.Pins(pins).check(mixed[2], mixed[0], mixed[1])
    # Without the pin, the same forgery passes: the pin is what stops it.
    identity.Pins(tmp_path / "fresh").check(mixed[2], mixed[0], mixed[1])


def test_pins_written_out_of_band_protect_the_first_round(tmp_path: Path) -> None:
    ads, sigs, ids = adverts(tmp_path)
    folder = tmp_path / "pinned"
    folder.mkdir()
    (folder / identity.PINS_FILE).write_text(json.dumps({m: ids[m].hex() for m in MEMBERS}))
    ads2, sigs2, ids2 = adverts(tmp_path / "server")
    with pytest.raises(MaskingError, match="differs from the one pinned"):
        identity.Pins(folder).check({**ids, "bank_c": ids2["bank_c"]}, {**ads, "bank_c": ads2["bank_c"]},
                                    {**sigs, "bank_c": sigs2["bank_c"]})
    with pytest.raises(MaskingError, match="without its identity key or signature"):
        identity.Pins(folder).check(ids, ads, {m: s for m, s in sigs.items() if m != "bank_a"})
