"""Shared helpers of the fedx.secagg tests: one driver for a masking round, and the coalition's attack."""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
from Crypto.Protocol.SecretSharing import Shamir

from fedx import he
from fedx.he import masked
from fedx.secagg import (
    MaskingClient,
    MaskingServer,
    Relay,
    RoundSetup,
    UnmaskReply,
    UnmaskRequest,
)
from fedx.secagg.channel import load_private, public_bytes
from fedx.secagg.client import pair_mask, pair_sign, self_mask

MEMBERS = ("bank_a", "bank_b", "bank_c", "bank_d", "bank_e")


@functools.cache
def keys() -> he.KeySet:
    """One bfv-compact key set for the session (key generation is not under test here)."""
    return he.keygen("bfv-compact")


@dataclass
class Round:
    """Everything one masking round produced; the server's view is every message it received or sent."""

    setup: RoundSetup
    clients: dict[str, MaskingClient]
    server: MaskingServer
    quantized: dict[str, masked.Quantized]
    blobs: dict[str, bytes]  # masked updates that arrived at the server
    relays: dict[str, Relay] = field(default_factory=dict)
    request: UnmaskRequest | None = None
    replies: list[UnmaskReply] = field(default_factory=list)
    total: bytes | None = None  # the unmasked aggregate blob

    @property
    def modulus(self) -> int:
        return self.setup.modulus


def updates(n_values: int, members: Sequence[str] = MEMBERS, seed: int = 0) -> dict[str, np.ndarray]:
    """Independent normal updates inside bfv-compact's clip range."""
    rng = np.random.default_rng(seed)
    return {m: np.clip(rng.normal(0.0, 0.3, n_values), -1.0, 1.0) for m in members}


def run_round(values: dict[str, np.ndarray], *, drop_before_shares: Collection[str] = (),
              drop_before_send: Collection[str] = (), drop_after_send: Collection[str] = (),
              threshold: int | None = None, unmask: bool = True) -> Round:
    """Drive one round among ``values``' members, with members dropping at the stated steps."""
    k = keys()
    members = tuple(values)
    setup = RoundSetup.create(members, modulus=k.preset.plain_modulus, round_=3, threshold=threshold)
    clients = {m: MaskingClient(m, setup) for m in members}
    server = MaskingServer(setup)
    roster = server.roster(c.advertise() for c in clients.values())
    relays = server.relay(clients[m].share_keys(roster) for m in members if m not in drop_before_shares)
    quantized, blobs = {}, {}
    for m, relay in relays.items():
        quantized[m] = masked.quantize(k.secret, [values[m]])
        if m not in drop_before_send:
            blobs[m] = masked.encrypt_masked(k.secret, quantized[m], clients[m].mask(relay, quantized[m].rows),
                                             setup.tag)
    rnd = Round(setup, clients, server, quantized, blobs, relays)
    if unmask:
        agg = masked.aggregate_masked(k.public, blobs.values())
        rnd.request = server.unmask_request(blobs)
        rnd.replies = [clients[m].unmask(rnd.request) for m in rnd.request.survivors if m not in drop_after_send]
        rnd.total = server.finish(k.public, agg, rnd.replies)
    return rnd


def centred(rows: np.ndarray, modulus: int) -> np.ndarray:
    """Residues mod t as signed integers."""
    return masked.centre(rows, modulus)


def attack(rnd: Round, target: str, coalition: Sequence[str]) -> np.ndarray:
    """The coalition's best estimate of ``target``'s quantized slots (signed integers).

    It holds the HE secret key, the server's whole view, and every secret of the ``coalition`` members
    (their mask keys, seeds and the shares they hold). It decrypts the target's masked update, removes
    every mask it can compute, and tries to rebuild the target's mask key from the shares it holds.
    """
    k, s = keys(), rnd.setup
    y = masked.decrypt_residues(k.secret, rnd.blobs[target]).astype(np.int64)
    n = y.size
    roster = rnd.server._roster
    assert roster is not None
    # Self-mask seeds rebuilt by the server from the survivors' replies (the server's normal view).
    seed_shares = [r.seed_shares[target] for r in rnd.replies if target in r.seed_shares]
    seed_shares += [rnd.clients[c]._held[target][0] for c in coalition]
    seed_shares = list({sh[:2]: sh for sh in seed_shares}.values())
    key_shares = list({sh[:2]: sh for sh in [rnd.clients[c]._held[target][1] for c in coalition]
                       + [r.key_shares[target] for r in rnd.replies if target in r.key_shares]}.values())
    if len(seed_shares) >= s.threshold:
        seed = _combine(seed_shares[:s.threshold])
        y = y - self_mask(seed, s, n).reshape(y.shape)
    key = None
    if len(key_shares) >= s.threshold:
        candidate = load_private(_combine(key_shares[:s.threshold]), "attack")
        key = candidate if public_bytes(candidate) == roster.mask_keys[target] else None
    for other in rnd.relays:  # every member that shared keys masked with the target
        if other == target:
            continue
        if key is not None:
            m = pair_mask(key, roster.mask_keys[other], s, target, other, n, "attack")
        elif other in coalition:
            m = pair_mask(rnd.clients[other]._mask_key, roster.mask_keys[target], s, other, target, n, "attack")
        else:
            continue  # a mask between two honest members: nothing in the coalition's hands derives it
        y = y - pair_sign(target, other) * m.reshape(y.shape)
    return centred(y, s.modulus)


def _combine(shares: Sequence[bytes]) -> bytes:
    offsets = range(0, len(shares[0]) - 2, 16)
    blocks = [[(int.from_bytes(sh[:2], "big"), sh[2 + b:18 + b]) for sh in shares] for b in offsets]
    return b"".join(Shamir.combine(block, ssss=False) for block in blocks)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two flat vectors."""
    return float(np.corrcoef(np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64))[0, 1])
