"""Dropouts under real bfv-compact encryption: the unmasked sum is exact, equal to numpy on the quantized values."""

from __future__ import annotations

import numpy as np
import pytest
from secagg_support import MEMBERS, centred, keys, run_round, updates

from fedx import he
from fedx.he import masked

N_VALUES = 5000  # two ciphertexts, the second partly padding


def _numpy_sum(rnd, members):
    return centred(sum(rnd.quantized[m].rows for m in members), rnd.modulus)


@pytest.mark.parametrize("when", ["none", "after_send", "before_send", "before_shares"])
def test_sum_is_exact_with_one_of_five_dropped(when):
    values = updates(N_VALUES, seed=11)
    gone = "bank_b"
    rnd = run_round(values, **({} if when == "none" else {f"drop_{when}": [gone]}))
    arrived = list(rnd.blobs)
    # an update that arrived before its sender dropped is in the sum; one never sent is not
    assert (gone in arrived) == (when in ("none", "after_send"))
    got = centred(masked.decrypt_residues(keys().secret, rnd.total), rnd.modulus)
    np.testing.assert_array_equal(got, _numpy_sum(rnd, arrived))
    # and fedx.he.decrypt reads the unmasked aggregate as any other: the mean of the arrived updates
    (mean,), weight = he.decrypt(keys().secret, rnd.total)
    step = keys().preset.clip / keys().preset.levels
    want = sum(rnd.quantized[m].rows.ravel()[:N_VALUES] for m in arrived) * step / len(arrived)
    assert weight == len(arrived)
    np.testing.assert_allclose(mean, want, rtol=0, atol=1e-12)
    assert np.abs(mean - np.mean([values[m] for m in arrived], axis=0)).max() <= step / 2 + 1e-12


def test_replies_missing_from_a_survivor_that_dropped_in_unmask_still_suffice():
    rnd = run_round(updates(64), drop_after_send=["bank_a", "bank_e"])  # 3 replies = t
    assert len(rnd.replies) == rnd.setup.threshold
    got = centred(masked.decrypt_residues(keys().secret, rnd.total), rnd.modulus)
    np.testing.assert_array_equal(got, _numpy_sum(rnd, MEMBERS))


def test_masked_updates_look_uniform_and_differ_from_the_update():
    rnd = run_round(updates(3 * 4096), unmask=False)
    y = masked.decrypt_residues(keys().secret, rnd.blobs["bank_a"]).ravel()
    counts = np.bincount((y * 16 // rnd.modulus).astype(int), minlength=16)
    expected = y.size / 16
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 45.0  # 15 degrees of freedom: p < 1e-4 for a uniform vector to exceed it


def test_statistics_sum_exactly_through_the_client_api_with_a_dropout():
    # kind="sum" (GLM statistics, federated analytics): integer sums come back exact, as numpy gives them
    from fedx.secagg import MaskingClient, MaskingServer, RoundSetup

    k = keys()
    rng = np.random.default_rng(5)
    stats = {m: {"counts": rng.integers(0, 10_000, 300), "sums": rng.normal(0, 1e3, (4, 5))} for m in MEMBERS}
    setup = RoundSetup.create(MEMBERS, modulus=k.preset.plain_modulus, round_=0)
    clients = {m: MaskingClient(m, setup) for m in MEMBERS}
    server = MaskingServer(setup)
    roster = server.roster(c.advertise() for c in clients.values())
    relays = server.relay(c.share_keys(roster) for c in clients.values())
    sent = [m for m in MEMBERS if m != "bank_d"]
    blobs = [clients[m].encrypt(k.secret, relays[m], stats[m], kind="sum") for m in sent]
    request = server.unmask_request(sent)
    replies = [clients[m].unmask(request) for m in sent]
    total = server.finish(k.public, masked.aggregate_masked(k.public, blobs), replies)
    got, weight = he.decrypt(k.secret, total)
    np.testing.assert_array_equal(got["counts"], np.sum([stats[m]["counts"] for m in sent], axis=0))
    np.testing.assert_allclose(got["sums"], np.sum([stats[m]["sums"] for m in sent], axis=0), rtol=0, atol=1e-6)
    assert weight == len(sent)
