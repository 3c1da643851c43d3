"""Blobs that must be refused with the right error class and a readable message."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
from he_support import keys

import fedx.he as he
from fedx.errors import BlobError, CapacityError, HEError, KeyFileError, KeyMismatchError
from fedx.he import frame, seal, wire
from fedx.he.blob import MAGIC, VERSION, pack_blob, unpack_blob


@pytest.fixture(scope="module")
def blob() -> bytes:
    ks = keys("bfv-compact")
    return he.encrypt(ks.secret, {"w": np.linspace(-1, 1, 9000), "b": np.ones(3)}, weight=3.0, total_weight=10.0)


def test_public_context_cannot_decrypt_or_encrypt(blob: bytes) -> None:
    ks = keys("bfv-compact")
    agg = he.aggregate(ks.public, [blob])
    with pytest.raises(KeyFileError, match="public context cannot encrypt or decrypt"):
        he.decrypt(ks.public, agg)  # type: ignore[arg-type]
    with pytest.raises(KeyFileError, match="SecretContext"):
        he.encrypt(ks.public, [np.ones(3)])  # type: ignore[arg-type]
    # It holds the preset and the fingerprint, and nothing else.
    assert [f.name for f in dataclasses.fields(he.PublicContext)] == ["preset", "fingerprint"]
    assert not hasattr(ks.public, "decrypt") and not hasattr(ks.public, "seal_key")


def test_blob_under_other_keys_is_refused_at_aggregate_and_at_decrypt(blob: bytes) -> None:
    ks, other = keys("bfv-compact"), he.keygen("bfv-compact")
    assert other.fingerprint != ks.fingerprint
    foreign = he.encrypt(other.secret, {"w": np.zeros(9000), "b": np.zeros(3)}, weight=1.0, total_weight=10.0)
    with pytest.raises(KeyMismatchError, match=r"blob 1 is under keys [0-9a-f]{12}.*foreign or stale keys"):
        he.aggregate(ks.public, [blob, foreign])
    with pytest.raises(KeyMismatchError, match="blob 0 is under keys"):
        he.aggregate(other.public, [blob])
    with pytest.raises(KeyMismatchError, match="foreign or stale keys"):
        he.decrypt(ks.secret, he.aggregate(other.public, [foreign]))


def test_blob_from_another_preset_or_other_parameters_is_refused(blob: bytes) -> None:
    with pytest.raises(KeyMismatchError, match="under preset 'bfv-compact', the context is 'ckks'"):
        he.aggregate(keys("ckks").public, [blob])
    with pytest.raises(KeyMismatchError, match="other bfv-compact parameters"):
        he.aggregate(keys("bfv-compact", bits=14).public, [blob])


@pytest.mark.parametrize("where", ["header", "body", "digest"])
def test_one_flipped_byte_is_refused(blob: bytes, where: str) -> None:
    offset = {"header": frame.PREFIX.size + 20, "body": len(blob) // 2, "digest": len(blob) - 1}[where]
    tampered = bytearray(blob)
    tampered[offset] ^= 0x01
    with pytest.raises(BlobError, match="blob 1 is corrupted or tampered with"):
        he.aggregate(keys("bfv-compact").public, [blob, bytes(tampered)])
    with pytest.raises(BlobError, match="tampered"):
        he.inspect(bytes(tampered))


def test_truncated_blobs_are_refused_with_counts(blob: bytes) -> None:
    sizes = he.inspect(blob).chunk_sizes
    cut = frame.PREFIX.size + frame.PREFIX.unpack_from(blob)[2] + sizes[0] + sizes[1] // 2
    with pytest.raises(BlobError, match=rf"blob 0 is truncated: its header says {len(sizes)} ciphertexts .*found 1 "):
        he.aggregate(keys("bfv-compact").public, [blob[:cut]])
    with pytest.raises(BlobError, match=rf"found {len(sizes)} complete .*but no checksum"):
        he.inspect(blob[:-1])
    for cut in (3, 12, frame.PREFIX.size + 5):
        with pytest.raises(BlobError, match="truncated"):
            he.inspect(blob[:cut])
    with pytest.raises(BlobError, match="unexpected bytes after its end"):
        he.inspect(blob + b"\0")


@pytest.mark.parametrize("data, message", [
    (b"", "is empty"),
    (os.urandom(5000), "not a fedx file"),
    (b"FXHK" + bytes(40), "not a fedx file"),  # a key file's magic
    (b"FXHE" + bytes([9]) + bytes(40), "format version 9"),
])
def test_empty_garbage_and_foreign_bytes_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(BlobError, match=message):
        he.aggregate(keys("bfv-compact").public, [data])
    with pytest.raises(BlobError, match=message):
        he.decrypt(keys("bfv-compact").secret, data)


def test_non_bytes_and_empty_input_are_refused() -> None:
    with pytest.raises(BlobError, match="must be bytes, got str"):
        he.inspect("FXHE")  # type: ignore[arg-type]
    with pytest.raises(HEError, match="got no blobs"):
        he.aggregate(keys("bfv-compact").public, [])


def _repack(blob: bytes, **changes: object) -> bytes:
    """A blob with header fields changed and a valid checksum, as a malicious sender could make."""
    header, chunks = unpack_blob(blob)
    doc = {**header.to_json(), **changes}
    return frame.pack(MAGIC, VERSION, doc, [bytes(c) for c in chunks])


@pytest.mark.parametrize("changes, message", [
    ({"shapes": [[-1], [3]]}, "'shapes' is malformed"),
    ({"shapes": [[10**12, 10**12], [3]]}, "'shapes' is malformed"),
    ({"dtypes": ["object", "float64"]}, "'dtypes' is malformed"),
    ({"names": ["w", "w"]}, "'names' is malformed"),
    ({"n_summed": 0}, "'n_summed' is malformed"),
    ({"ids": []}, "'ids' is malformed"),
    ({"ids": ["not-hex"]}, "'ids' is malformed"),
    ({"weight": "3"}, "'weight' is malformed"),
    ({"chunks": [8] * 3}, "'chunks' is malformed"),
    ({"kind": "median"}, "'kind' is malformed"),
    ({"report": {"values": 1}}, r"blob 0 \(report\): header field 'values' is malformed"),
    ({"kind": "sum"}, "holds 3 ciphertexts, but 9003 values of kind 'sum' need 18"),
])
def test_crafted_headers_with_valid_checksums_are_refused(blob: bytes, changes: dict[str, object],
                                                          message: str) -> None:
    with pytest.raises(BlobError, match=message):
        he.aggregate(keys("bfv-compact").public, [_repack(blob, **changes)])


def test_the_same_update_twice_is_refused_even_re_serialized_or_inside_an_aggregate(blob: bytes) -> None:
    ks = keys("bfv-compact")
    other = he.encrypt(ks.secret, {"w": np.zeros(9000), "b": np.ones(3)}, weight=7.0, total_weight=10.0)
    with pytest.raises(BlobError, match=r"blob 1 holds an update that blob 0 already holds \(update id [0-9a-f]{12}\)"):
        he.aggregate(ks.public, [blob, blob])
    # A re-serialization (same header and ciphertexts, other bytes and digest) carries the same id.
    header, chunks = unpack_blob(blob)
    doc = dict(reversed(list(header.to_json().items())))
    copy = frame.pack(MAGIC, VERSION, doc, [bytes(c) for c in chunks])
    assert copy != blob and he.inspect(copy) == header
    with pytest.raises(BlobError, match="blob 2 holds an update that blob 0 already holds"):
        he.aggregate(ks.public, [blob, other, copy])
    agg = he.aggregate(ks.public, [blob, other])
    assert len(he.inspect(agg).ids) == 2
    with pytest.raises(BlobError, match="blob 1 holds an update that blob 0 already holds"):
        he.aggregate(ks.public, [agg, other])
    # Each encryption draws a fresh id: encrypting the same values twice gives two updates.
    again = he.encrypt(ks.secret, {"w": np.zeros(9000), "b": np.ones(3)}, weight=7.0, total_weight=10.0)
    assert he.inspect(again).ids != he.inspect(other).ids
    # A header whose ids do not account for n_summed is refused.
    with pytest.raises(BlobError, match="'ids' is malformed"):
        he.aggregate(ks.public, [_repack(agg, ids=[header.ids[0], header.ids[0]])])


def test_crafted_ciphertext_bytes_are_refused(blob: bytes) -> None:
    header, chunks = unpack_blob(blob)
    size = len(chunks[0])
    # Coefficients that are not below the prime (all bits set), and a seed of an unknown PRNG type.
    for forged_chunk in (b"\xff" * size, bytes(chunks[0][:-65]) + b"\x07" + os.urandom(64)):
        forged = [forged_chunk, *map(bytes, chunks[1:])]
        with pytest.raises(BlobError, match="blob 0, ciphertext 0 is malformed"):
            he.aggregate(keys("bfv-compact").public, [pack_blob(header, forged)])
        with pytest.raises(BlobError, match="blob, ciphertext 0 is malformed"):
            he.decrypt(keys("bfv-compact").secret, pack_blob(header, forged))
    ckks_chunk = unpack_blob(he.encrypt(keys("ckks").secret, [np.ones(3)]))[1][0]
    alien = pack_blob(dataclasses.replace(header, chunk_sizes=(len(ckks_chunk), *header.chunk_sizes[1:])),
                      [bytes(ckks_chunk), *map(bytes, chunks[1:])])
    with pytest.raises(BlobError, match=r"blob 0: its ciphertexts must be \d+ bytes each"):
        he.aggregate(keys("bfv-compact").public, [alien])


def test_blobs_that_do_not_match_the_first_are_refused(blob: bytes) -> None:
    ks = keys("bfv-compact")
    other_shape = he.encrypt(ks.secret, {"w": np.zeros(9001), "b": np.zeros(3)}, weight=1.0, total_weight=10.0)
    with pytest.raises(BlobError, match=r"blob 1 does not match blob 0: its shapes differ"):
        he.aggregate(ks.public, [blob, other_shape])
    as_list = he.encrypt(ks.secret, [np.zeros(9000), np.zeros(3)], weight=1.0, total_weight=10.0)
    with pytest.raises(BlobError, match="its names differ"):
        he.aggregate(ks.public, [blob, as_list])
    stats = he.encrypt(ks.secret, {"w": np.zeros(9000), "b": np.zeros(3)}, kind="sum")
    with pytest.raises(BlobError, match="its kind differ"):
        he.aggregate(ks.public, [blob, stats])


@pytest.mark.parametrize("arrays, kwargs, error, message", [
    ([np.array([1.0, np.nan])], {}, BlobError, "array #0 holds 1 NaN or infinite"),
    ({"x": np.array([np.inf, 2.0, -np.inf])}, {}, BlobError, "array 'x' holds 2 NaN or infinite"),
    ([np.ones(3)], {"weight": 5.0, "total_weight": 2.0}, BlobError, r"rho = 2.5 > 1"),
    ([np.ones(3)], {"weight": 0.0}, BlobError, "weight must be a positive finite number"),
    ([np.ones(3)], {"weight": float("nan")}, BlobError, "weight must be a positive finite number"),
    ([np.ones(3, complex)], {}, BlobError, "dtype complex128"),
    (np.ones(3), {}, BlobError, "list or a dict"),
    ({1: np.ones(3)}, {}, BlobError, "keys of an arrays dict must be strings"),
    ([np.ones(3)], {"kind": "max"}, HEError, "kind must be one of"),
])
def test_encrypt_refuses_bad_input(arrays: object, kwargs: dict[str, object], error: type[Exception],
                                   message: str) -> None:
    with pytest.raises(error, match=message):
        he.encrypt(keys("bfv-compact").secret, arrays, **kwargs)  # type: ignore[arg-type]


def test_inspect_reads_the_header_without_keys(blob: bytes) -> None:
    header = he.inspect(blob)
    assert (header.version, header.preset, header.stage, header.kind) == (3, "bfv-compact", "update", "mean")
    assert header.c1 == "seeds"
    assert header.fingerprint == keys("bfv-compact").fingerprint
    assert header.names == ("w", "b") and header.shapes == ((9000,), (3,)) and header.dtypes == ("float64", "float64")
    assert (header.weight, header.rho, header.n_summed, len(header.ids)) == (3.0, 0.3, 1, 1)
    assert header.chunks == 3 and header.report.values == 9003 and header.report.clipped == 0
    doc = json.loads(bytes(blob[frame.PREFIX.size:frame.PREFIX.size + frame.PREFIX.unpack_from(blob)[2]]))
    assert "chunks" in doc and doc["fingerprint"] == header.fingerprint  # plain JSON, no pickle


def test_forged_aggregate_with_exhausted_noise_is_refused_at_decrypt() -> None:
    ks = keys("bfv-compact")
    header, chunks = unpack_blob(he.encrypt(ks.secret, [np.zeros(10)]))
    engine = seal.engine(ks.preset)
    n, primes = ks.preset.poly_modulus_degree, engine.primes("mean")
    c0, seeds = wire.split_chunk(chunks[0], n, primes, "seeds", 1, "test")
    c1 = engine.expand(seeds, "mean", "test")
    # Uniform noise added to c0, as the sum of far too many ciphertexts would have, while the header claims one.
    q = primes[0]
    noisy = (c0 + np.random.default_rng(0).integers(0, q, c0.shape, dtype=np.uint64)) % np.uint64(q)
    scaled = [noisy, c1]
    chunk = wire.pack_poly(scaled[0], primes) + wire.pack_poly(scaled[1], primes)
    forged = pack_blob(dataclasses.replace(header, stage="aggregate", c1="poly", chunk_sizes=(len(chunk),)), [chunk])
    with pytest.raises(CapacityError, match="noise budget is exhausted"):
        he.decrypt(ks.secret, forged)


def test_an_old_blob_version_is_refused_clearly(blob: bytes) -> None:
    header, chunks = unpack_blob(blob)
    old = frame.pack(MAGIC, 2, header.to_json(), [bytes(c) for c in chunks])
    with pytest.raises(BlobError, match="has format version 2; this fedx reads version 3"):
        he.aggregate(keys("bfv-compact").public, [old])


def test_an_update_claiming_c1_as_a_polynomial_is_refused(blob: bytes) -> None:
    with pytest.raises(BlobError, match="'c1' is malformed"):
        he.aggregate(keys("bfv-compact").public, [_repack(blob, c1="poly")])


ODD_VALUES = [None, -1, 0, 2**70, 1e308, -0.5, "x", "", [], [[]], [[-3]], {}, True, [1.5], ["float64"] * 3]


def test_no_header_field_value_escapes_as_an_uncaught_exception(blob: bytes) -> None:
    ks = keys("bfv-compact")
    header = unpack_blob(blob)[0].to_json()
    for field in header:
        for value in ODD_VALUES:
            forged = _repack(blob, **{field: value})
            for action in (he.inspect, lambda b: he.aggregate(ks.public, [b]), lambda b: he.decrypt(ks.secret, b)):
                try:
                    action(forged)
                except HEError:
                    pass  # refused with a fedx error: fine
