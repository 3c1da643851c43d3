"""Refusals of the masking protocol: settings, stale or tampered messages, and the wire form."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from secagg_support import MEMBERS, keys, run_round, updates

from fedx import he
from fedx.errors import BlobError, MaskingError, TooFewSurvivors
from fedx.he import masked
from fedx.secagg import (
    Advert,
    MaskingClient,
    MaskingServer,
    RoundSetup,
    UnmaskRequest,
    default_threshold,
)

T = 1032193


def test_threshold_defaults_to_a_strict_majority():
    assert [default_threshold(n) for n in (3, 4, 5, 10, 50)] == [2, 3, 3, 6, 26]
    assert RoundSetup.create(MEMBERS, modulus=T, round_=0).threshold == 3


@pytest.mark.parametrize("members", [["bank_a"], ["bank_a", "bank_b"]])
def test_fewer_than_three_members_are_refused(members):
    with pytest.raises(MaskingError, match="at least 3 institutions"):
        RoundSetup.create(members, modulus=T, round_=0)


@pytest.mark.parametrize("threshold", [2, 6, 0])
def test_threshold_outside_majority_range_is_refused(threshold):
    with pytest.raises(MaskingError, match=r"security.threshold must be an integer in \[3, 5\]"):
        RoundSetup.create(MEMBERS, modulus=T, round_=0, threshold=threshold)


def test_ckks_is_refused():
    with pytest.raises(MaskingError, match="needs bfv-compact, not ckks"):
        masked.quantize(he.keygen("ckks").secret, [np.zeros(4)])


def test_messages_round_trip_as_bytes_and_refuse_other_types():
    rnd = run_round(updates(16))
    for msg in (rnd.setup, rnd.relays["bank_a"], rnd.request, rnd.replies[0], rnd.clients["bank_a"].advertise()):
        assert type(msg).from_bytes(msg.to_bytes()) == msg
    with pytest.raises(MaskingError, match="expected one of \\('advert',\\)"):
        Advert.from_bytes(rnd.request.to_bytes())
    raw = bytearray(rnd.request.to_bytes())
    raw[-40] ^= 1
    with pytest.raises(MaskingError, match="corrupted or tampered"):
        UnmaskRequest.from_bytes(bytes(raw))


def _setup_to_relays():
    setup = RoundSetup.create(MEMBERS, modulus=T, round_=1)
    clients = {m: MaskingClient(m, setup) for m in MEMBERS}
    server = MaskingServer(setup)
    roster = server.roster(c.advertise() for c in clients.values())
    bundles = [c.share_keys(roster) for c in clients.values()]
    return clients, server, bundles


def test_a_share_moved_to_another_recipient_fails_authentication():
    clients, server, bundles = _setup_to_relays()
    relays = server.relay(bundles)
    relay = relays["bank_a"]
    swapped = dict(relay.shares, bank_b=bundles[2].shares["bank_b"])  # bank_c's share for bank_b, sent to bank_a
    with pytest.raises(MaskingError, match="shares from bank_b to bank_a fails authentication"):
        clients["bank_a"].mask(dataclasses.replace(relay, shares=swapped), np.zeros((1, 8), np.int64))


def test_messages_of_another_round_are_refused():
    clients, server, bundles = _setup_to_relays()
    stale = dataclasses.replace(server.relay(bundles)["bank_a"], round=0)
    with pytest.raises(MaskingError, match="stale or replayed"):
        clients["bank_a"].mask(stale, np.zeros((1, 8), np.int64))


def test_a_roster_that_alters_a_members_keys_is_refused():
    setup = RoundSetup.create(MEMBERS, modulus=T, round_=1)
    clients = {m: MaskingClient(m, setup) for m in MEMBERS}
    roster = MaskingServer(setup).roster(c.advertise() for c in clients.values())
    forged = dataclasses.replace(roster, mask_keys=dict(roster.mask_keys, bank_a=roster.mask_keys["bank_b"]))
    with pytest.raises(MaskingError, match="own public keys"):
        clients["bank_a"].share_keys(forged)


def test_masking_twice_in_one_round_is_refused():
    clients, server, bundles = _setup_to_relays()
    relay = server.relay(bundles)["bank_a"]
    clients["bank_a"].mask(relay, np.zeros((1, 8), np.int64))
    with pytest.raises(MaskingError, match="already masked"):
        clients["bank_a"].mask(relay, np.ones((1, 8), np.int64))


def test_too_few_adverts_or_replies_are_refused():
    setup = RoundSetup.create(MEMBERS, modulus=T, round_=1)
    clients = [MaskingClient(m, setup) for m in MEMBERS[:2]]
    with pytest.raises(TooFewSurvivors, match="only 2 of 5 institutions advertised"):
        MaskingServer(setup).roster(c.advertise() for c in clients)
    rnd = run_round(updates(16), unmask=False)
    rnd.server.unmask_request(rnd.blobs)
    replies = [rnd.clients[m].unmask(rnd.server._request) for m in MEMBERS[:2]]
    with pytest.raises(TooFewSurvivors, match="only 2 survivors answered"):
        rnd.server.residual(replies, (1, 4096))


def test_a_wrong_share_is_caught_by_the_commitment():
    rnd = run_round(updates(16), unmask=False)
    request = rnd.server.unmask_request(rnd.blobs)
    replies = [rnd.clients[m].unmask(request) for m in MEMBERS]
    bad = replies[0].seed_shares["bank_c"]
    replies[0] = dataclasses.replace(replies[0], seed_shares=dict(replies[0].seed_shares,
                                                                  bank_c=bad[:2] + bytes(16)))
    with pytest.raises(MaskingError, match="bank_c's self-mask seed .* does not match its commitment"):
        rnd.server.residual(replies, (1, 4096))


def test_masked_blobs_of_two_rounds_do_not_mix():
    a, b = run_round(updates(16), unmask=False), run_round(updates(16), unmask=False)
    with pytest.raises(MaskingError, match="masks of different rounds never cancel"):
        masked.aggregate_masked(keys().public, [a.blobs["bank_a"], b.blobs["bank_b"]])
    with pytest.raises(BlobError, match="not a fedx file"):
        he.aggregate(keys().public, [a.blobs["bank_a"]])
