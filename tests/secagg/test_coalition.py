"""Threat row "server colluding with up to t-1 members": what such a coalition reads, and what it does not."""

from __future__ import annotations

import numpy as np
import pytest
from secagg_support import (
    MEMBERS,
    attack,
    centred,
    correlation,
    keys,
    run_round,
    updates,
)

from fedx import he
from fedx.errors import BlobError, MaskingRefused, TooFewSurvivors
from fedx.he import masked
from fedx.secagg import MaskingClient, MaskingServer, RoundSetup, UnmaskRequest

N_VALUES = 3 * 4096  # three ciphertexts; a correlation of pure noise has sd 1/sqrt(N) = 0.009


@pytest.fixture(scope="module")
def full_round():
    return run_round(updates(N_VALUES))


def test_coalition_below_threshold_learns_nothing(full_round):
    rnd, target = full_round, "bank_e"
    coalition = ["bank_a", "bank_b"]  # t - 1 = 2 of 5
    assert rnd.setup.threshold == 3
    truth = rnd.quantized[target].rows
    estimate = attack(rnd, target, coalition)
    assert abs(correlation(estimate, truth)) < 0.05
    # the estimate is no better than knowing nothing: its error is as large as the modulus allows
    assert np.abs(estimate - truth).mean() > rnd.modulus / 8


def test_without_masks_the_same_attacker_reads_the_update(full_round):
    rnd, target = full_round, "bank_e"
    plain = he.encrypt(keys().secret, [updates(N_VALUES)[target]])
    got = centred(masked.decrypt_residues(keys().secret, plain), rnd.modulus)
    np.testing.assert_array_equal(got, rnd.quantized[target].rows)


def test_coalition_of_threshold_size_reads_the_update(full_round):
    # what t members and the server can do: rebuild the target's mask key from t shares
    rnd, target = full_round, "bank_e"
    estimate = attack(rnd, target, ["bank_a", "bank_b", "bank_c"])
    np.testing.assert_array_equal(estimate, rnd.quantized[target].rows)


def test_server_claiming_a_live_member_dropped_learns_nothing():
    rnd = run_round(updates(N_VALUES), unmask=False)
    live = "bank_c"  # its masked update arrived; the server says it dropped
    others = [m for m in MEMBERS if m != live]
    lie = UnmaskRequest(run=rnd.setup.run, round=rnd.setup.round, survivors=tuple(others), dropped=(live,))
    with pytest.raises(MaskingRefused, match="lists this member as dropped"):
        rnd.clients[live].unmask(lie)
    rnd.replies = [rnd.clients[m].unmask(lie) for m in others]  # they reveal bank_c's mask key...
    # ...so every pairwise mask of bank_c comes off, but its self mask stays: the update is still hidden
    estimate = attack(rnd, live, coalition=["bank_a", "bank_b"])
    assert abs(correlation(estimate, rnd.quantized[live].rows)) < 0.05
    # asked next for bank_c's self-mask seed, every survivor refuses
    honest = UnmaskRequest(run=rnd.setup.run, round=rnd.setup.round, survivors=MEMBERS, dropped=())
    for m in others:
        with pytest.raises(MaskingRefused, match="bank_c"):
            rnd.clients[m].unmask(honest)
    # the refusal is what stands between: one more share of the seed would give the update away
    rnd.replies.append(_seed_reply(rnd, "bank_d", live))
    estimate = attack(rnd, live, coalition=["bank_a", "bank_b"])
    np.testing.assert_array_equal(estimate, rnd.quantized[live].rows)


def _seed_reply(rnd, holder, owner):
    from fedx.secagg import UnmaskReply

    return UnmaskReply(run=rnd.setup.run, round=rnd.setup.round, member=holder,
                       seed_shares={owner: rnd.clients[holder]._held[owner][0]}, key_shares={})


def test_fewer_survivors_than_threshold_is_refused_and_nothing_decrypts():
    values = updates(64)
    rnd = run_round(values, drop_before_send=["bank_c", "bank_d", "bank_e"], unmask=False)
    agg = masked.aggregate_masked(keys().public, rnd.blobs.values())
    with pytest.raises(TooFewSurvivors, match="fewer than the threshold 3"):
        rnd.server.unmask_request(rnd.blobs)
    forged = UnmaskRequest(run=rnd.setup.run, round=rnd.setup.round, survivors=("bank_a", "bank_b"),
                           dropped=("bank_c", "bank_d", "bank_e"))
    for m in ("bank_a", "bank_b"):
        with pytest.raises(TooFewSurvivors, match="no share is revealed"):
            rnd.clients[m].unmask(forged)
    with pytest.raises(BlobError, match="not a fedx file of this kind"):  # the masked sum never decrypts
        he.decrypt(keys().secret, agg)


def test_a_lying_server_alone_never_collects_both_share_kinds_even_telling_each_survivor_another_story():
    # With t > n/2 each of the five holders gives one kind of share of bank_c's secrets, so at most
    # five shares in all: never t = 3 of both kinds, however the server splits its story.
    import itertools

    live = "bank_c"
    others = [m for m in MEMBERS if m != live]
    for k in range(len(others) + 1):
        for told_dropped in itertools.combinations(others, k):
            s = RoundSetup.create(MEMBERS, modulus=keys().preset.plain_modulus, round_=1)
            clients = {m: MaskingClient(m, s) for m in MEMBERS}
            server = MaskingServer(s)
            roster = server.roster(c.advertise() for c in clients.values())
            for m, relay in server.relay(c.share_keys(roster) for c in clients.values()).items():
                clients[m].mask(relay, np.zeros((1, 8), np.int64))
            lie = UnmaskRequest(run=s.run, round=s.round, survivors=tuple(others), dropped=(live,))
            truth = UnmaskRequest(run=s.run, round=s.round, survivors=MEMBERS, dropped=())
            replies = [clients[m].unmask(lie if m in told_dropped else truth) for m in MEMBERS]
            seed_shares = sum(live in r.seed_shares for r in replies)
            key_shares = sum(live in r.key_shares for r in replies)
            assert seed_shares + key_shares == len(MEMBERS)
            assert min(seed_shares, key_shares) < s.threshold


def test_documented_limit_a_lying_server_with_2t_minus_n_colluders_reads_a_live_update():
    # docs/masking.md: lying and colluding together breaks through when c >= 2t - n (here 1 of 5 at t = 3)
    rnd = run_round(updates(N_VALUES), unmask=False)
    s, live = rnd.setup, "bank_c"
    lie = UnmaskRequest(run=s.run, round=s.round, survivors=tuple(m for m in MEMBERS if m != live), dropped=(live,))
    truth = UnmaskRequest(run=s.run, round=s.round, survivors=MEMBERS, dropped=())
    rnd.replies = [rnd.clients[m].unmask(lie) for m in ("bank_b", "bank_d")]
    rnd.replies += [rnd.clients[m].unmask(truth) for m in ("bank_c", "bank_e")]
    estimate = attack(rnd, live, coalition=["bank_a"])
    np.testing.assert_array_equal(estimate, rnd.quantized[live].rows)
