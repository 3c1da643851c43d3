"""Key files: round trip, modes, a public file without the secret, and refusals."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import numpy as np
import pytest

import fedx.he as he
from fedx.errors import HEError, KeyFileError, KeyMismatchError
from fedx.he import frame


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[he.KeySet, Path]:
    keys = he.keygen("bfv-compact", bits=14, clip=0.25)
    keys.save(tmp_path / "keys")
    return keys, tmp_path / "keys"


def test_save_load_round_trip_and_modes(saved: tuple[he.KeySet, Path]) -> None:
    keys, folder = saved
    assert stat.S_IMODE((folder / "secret.fxk").stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "public.fxk").stat().st_mode) == 0o644
    loaded = he.load_keys(folder)
    assert loaded.fingerprint == keys.fingerprint == loaded.public.fingerprint == keys.secret.public.fingerprint
    assert loaded.preset == keys.preset and loaded.preset.bits == 14 and loaded.preset.clip == 0.25
    assert he.load_public(folder / "public.fxk") == keys.public
    # The loaded secret key is the same key: blobs cross between the two contexts.
    x = np.linspace(-0.2, 0.2, 50)
    got, _ = he.decrypt(keys.secret, he.aggregate(loaded.public, [he.encrypt(loaded.secret, [x])]))
    np.testing.assert_allclose(got[0], x, atol=keys.preset.precision("mean", 1, 1.0, 0.0).abs)


def test_public_file_holds_no_secret_and_cannot_stand_in_for_it(saved: tuple[he.KeySet, Path]) -> None:
    keys, folder = saved
    public_bytes = (folder / "public.fxk").read_bytes()
    key_bytes = keys.secret.seal_key.data
    assert len(key_bytes) > 1000 and len(public_bytes) < 1000
    assert key_bytes[16:80] not in public_bytes and key_bytes[16:80] in (folder / "secret.fxk").read_bytes()
    with pytest.raises(KeyFileError, match="is a public key file, expected a secret one"):
        he.load_secret(folder / "public.fxk")
    with pytest.raises(KeyFileError, match="the server must only get public.fxk"):
        he.load_public(folder / "secret.fxk")


def test_readable_secret_file_warns(saved: tuple[he.KeySet, Path], caplog: pytest.LogCaptureFixture) -> None:
    _, folder = saved
    path = folder / "secret.fxk"
    os.chmod(path, 0o640)
    with caplog.at_level(logging.WARNING, logger="fedx.he"), pytest.warns(UserWarning, match="chmod 600"):
        he.load_secret(path)
    assert any("group/other users can access it" in r.getMessage() for r in caplog.records)


def test_save_never_overwrites_silently(saved: tuple[he.KeySet, Path]) -> None:
    keys, folder = saved
    other = he.keygen("bfv-compact")
    with pytest.raises(KeyFileError, match="exists; keys are never overwritten silently"):
        other.save(folder)
    assert he.load_keys(folder).fingerprint == keys.fingerprint
    other.save(folder, overwrite=True)
    assert he.load_keys(folder).fingerprint == other.fingerprint


def test_mismatched_public_file_is_refused(saved: tuple[he.KeySet, Path], tmp_path: Path) -> None:
    _, folder = saved
    he.keygen("bfv-compact", bits=14, clip=0.25).save(tmp_path / "other")
    os.replace(tmp_path / "other" / "public.fxk", folder / "public.fxk")
    with pytest.raises(KeyMismatchError, match="does not belong to secret.fxk"):
        he.load_keys(folder)


def test_damaged_or_missing_key_files_are_refused(saved: tuple[he.KeySet, Path]) -> None:
    _, folder = saved
    path = folder / "secret.fxk"
    data = path.read_bytes()
    path.write_bytes(data[:-40])
    with pytest.raises(KeyFileError, match="truncated"):
        he.load_secret(path)
    flipped = bytearray(data)
    flipped[-100] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(KeyFileError, match="corrupted or tampered"):
        he.load_secret(path)
    with pytest.raises(KeyFileError, match="no such key file"):
        he.load_secret(folder / "absent.fxk")
    with pytest.raises(KeyFileError, match="not a fedx file"):
        he.load_public(Path(__file__))


def test_keygen_accepts_a_preset_and_fingerprints_differ_per_key() -> None:
    preset = he.get_preset("ckks")
    a, b = he.keygen(preset), he.keygen("ckks")
    assert a.preset == b.preset == preset
    assert len(a.fingerprint) == 64 and a.fingerprint != b.fingerprint
    assert "hidden" in repr(a.secret.seal_key) and a.fingerprint[:12] in repr(a.secret)


def test_secret_key_that_does_not_match_its_fingerprint_is_refused(saved: tuple[he.KeySet, Path]) -> None:
    keys, folder = saved
    other = he.keygen(keys.preset)
    fr = frame.unpack((folder / "secret.fxk").read_bytes(), magic=b"FXHK", version=1, error=KeyFileError, what="t")
    (folder / "secret.fxk").write_bytes(frame.pack(b"FXHK", 1, fr.header, [other.secret.seal_key.data]))
    with pytest.raises(KeyFileError, match="does not match the fingerprint recorded with it"):
        he.load_secret(folder / "secret.fxk")


def test_the_fingerprint_is_the_documented_hash_and_the_same_at_every_party(saved: tuple[he.KeySet, Path]) -> None:
    import hashlib

    keys, folder = saved
    # SHA-256(parameter hash, SHA-256(secret key)), with their domain tags (docs/he-presets.md).
    commitment = hashlib.sha256(b"fedx-he/secret-key-commitment/v1\0" + keys.secret.seal_key.data).digest()
    want = hashlib.sha256(b"fedx-he/fingerprint/v1\0" + keys.preset.params_hash.encode() + commitment).hexdigest()
    assert keys.fingerprint == want
    text = keys.fingerprint_text
    groups = text.split(" ")
    assert len(groups) == 8 and all(len(g) == 4 for g in groups) and "".join(groups) == want[:32]
    # The same text from every copy: the institutions' secret.fxk (file or folder), the server's public.fxk.
    assert he.secret_context(folder).fingerprint_text == he.secret_context(folder / "secret.fxk").fingerprint_text \
        == he.load_public(folder / "public.fxk").fingerprint_text == he.load_keys(folder).fingerprint_text == text
    assert he.keygen("bfv-compact", bits=14, clip=0.25).fingerprint_text != text   # new keys, same parameters
    with pytest.raises(HEError, match="64 lowercase hex digits"):
        he.fingerprint_text("abc")


def test_public_context_reads_a_folder_or_a_file_and_refuses_the_secret(saved: tuple[he.KeySet, Path],
                                                                        tmp_path: Path) -> None:
    keys, folder = saved
    assert he.public_context(folder) == he.public_context(folder / "public.fxk") == keys.public
    public = keys.public
    assert he.public_context(public) is public
    for secret in (keys, keys.secret):
        with pytest.raises(KeyFileError, match="security.keys: the server takes the public context only"):
            he.public_context(secret, what="security.keys")  # type: ignore[arg-type]
    (tmp_path / "only-secret").mkdir()
    os.replace(folder / "secret.fxk", tmp_path / "only-secret" / "secret.fxk")
    with pytest.raises(KeyFileError, match=r"security.keys: .*only-secret/public.fxk does not exist .*never needs "
                                           r"secret.fxk"):
        he.public_context(tmp_path / "only-secret", what="security.keys")
    with pytest.raises(KeyFileError, match="the server must only get public.fxk"):
        he.public_context(tmp_path / "only-secret" / "secret.fxk")
