"""One institution's side of a masking round: keys, shares, masks, and what it agrees to reveal.

Call order per round: :meth:`MaskingClient.advertise`, :meth:`~MaskingClient.share_keys`,
:meth:`~MaskingClient.encrypt` (or :meth:`~MaskingClient.mask` on integer slots), :meth:`~MaskingClient.unmask`.
Every key and seed is fresh per client object, so one object serves one round of one run.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from ..errors import MaskingError, MaskingRefused, TooFewSurvivors
from ..he import masked
from ..he.keys import SecretContext
from ..he.schemes import Kind
from . import channel, prg, sharing
from .messages import Advert, Relay, Roster, RoundSetup, ShareBundle, UnmaskReply, UnmaskRequest, pair_info

log = logging.getLogger(__name__)

Reveal = Literal["seed", "key"]

SELF_SEED_BYTES = 16  # one Shamir block: 128-bit security, half the server's reconstruction work
MASK_KEY_BYTES = 32  # an X25519 private key


def seed_commitment(seed: bytes) -> bytes:
    """SHA-256 commitment to a self-mask seed: lets the server check the seed it rebuilt from shares."""
    return hashlib.sha256(b"fedx-secagg/self-seed/v1\0" + seed).digest()


def pair_mask(private: Any, peer_mask_key: bytes, setup: RoundSetup, a: str, b: str, n: int, what: str) -> np.ndarray:
    """The unsigned pairwise mask of members ``a`` and ``b``, from one's mask key and the other's public key."""
    seed = channel.agree(private, peer_mask_key, pair_info("mask", setup.run, setup.round, a, b), what)
    return prg.expand(seed, n, setup.modulus, b"pair")


def self_mask(seed: bytes, setup: RoundSetup, n: int) -> np.ndarray:
    """A member's self mask, from its self-mask seed."""
    return prg.expand(seed, n, setup.modulus, b"self")


def pair_sign(member: str, other: str) -> int:
    """+1 for the member that sorts first in a pair, -1 for the other: the two masks cancel in the sum."""
    return 1 if member < other else -1


class MaskingClient:
    """One institution in one masking round.

    Parameters
    ----------
    member : str
        This institution's name, one of ``setup.members``.
    setup : RoundSetup
        From the server.
    """

    def __init__(self, member: str, setup: RoundSetup) -> None:
        if member not in setup.members:
            raise MaskingError(f"institution {member!r} is not among the round's members {list(setup.members)}")
        self.member = member
        self.setup = setup
        self._mask_key = channel.new_private()
        self._channel_key = channel.new_private()
        self._seed = os.urandom(SELF_SEED_BYTES)
        self._roster: Roster | None = None
        self._sharers: tuple[str, ...] | None = None
        self._held: dict[str, tuple[bytes, bytes]] = {}  # owner -> (share of its seed, share of its mask key)
        self._masked = False
        self._revealed: dict[str, Reveal] = {}

    def __repr__(self) -> str:
        return f"MaskingClient({self.member!r}, round {self.setup.round})"

    # ------------------------------------------------------------------ messages

    def advertise(self) -> Advert:
        """Step 1: this round's two public keys."""
        return Advert(run=self.setup.run, round=self.setup.round, member=self.member,
                      mask_key=channel.public_bytes(self._mask_key),
                      channel_key=channel.public_bytes(self._channel_key))

    def share_keys(self, roster: Roster) -> ShareBundle:
        """Step 2: Shamir-share the self-mask seed and the mask key among the roster, sealed pairwise.

        Raises
        ------
        MaskingError
            A roster of another round, one that lacks or alters this member's keys, or one below the threshold.
        """
        s = self.setup
        roster.expect(s.run, s.round, "roster")
        if self._roster is not None:
            raise MaskingError(f"{self.member}: keys were already shared this round")
        names = set(roster.mask_keys)
        if names != set(roster.channel_keys) or not names <= set(s.members):
            raise MaskingError(f"{self.member}: the roster names members outside the round or lacks keys")
        own = self.advertise()
        if roster.mask_keys.get(self.member) != own.mask_key or roster.channel_keys.get(self.member) != own.channel_key:
            raise MaskingError(f"{self.member}: the roster does not carry this member's own public keys")
        if len(names) < s.threshold:
            raise TooFewSurvivors(f"{self.member}: only {len(names)} members advertised keys, fewer than the "
                                  f"threshold {s.threshold}")
        self._roster = roster
        others = sorted(names - {self.member})
        indices = [s.index(m) for m in sorted(names)]
        seed_shares = sharing.split(self._seed, s.threshold, indices)
        key_shares = sharing.split(channel.private_bytes(self._mask_key), s.threshold, indices)
        me = s.index(self.member)
        self._held[self.member] = (seed_shares[me], key_shares[me])
        sealed = {}
        for other in others:
            key = self._channel(other)
            plaintext = seed_shares[s.index(other)] + key_shares[s.index(other)]
            sealed[other] = channel.seal(key, plaintext, self._aad(self.member, other))
        return ShareBundle(run=s.run, round=s.round, member=self.member, seed_commitment=seed_commitment(self._seed),
                           shares=sealed)

    def mask(self, relay: Relay, rows: np.ndarray) -> np.ndarray:
        """Step 3: ``rows`` (integer slots) plus the self mask and the signed pairwise masks with every sharer, mod t.

        Raises
        ------
        MaskingError
            A relay of another round or member, or one whose shares are missing or fail authentication.
        """
        s = self.setup
        relay.expect(s.run, s.round, "relay")
        if self._roster is None:
            raise MaskingError(f"{self.member}: share keys before masking")
        if self._masked:
            raise MaskingError(f"{self.member}: this round's update was already masked; a second masked update "
                               f"with the same masks would reveal the difference of the two")
        sharers = tuple(sorted(relay.sharers))
        outside = set(sharers) - set(self._roster.mask_keys)
        if relay.recipient != self.member or self.member not in sharers or outside:
            raise MaskingError(f"{self.member}: the relay is not addressed to this member, or names sharers outside "
                               f"the roster")
        if len(sharers) < s.threshold:
            raise TooFewSurvivors(f"{self.member}: only {len(sharers)} members shared keys, fewer than the threshold "
                                  f"{s.threshold}")
        if set(relay.shares) != set(sharers) - {self.member}:
            raise MaskingError(f"{self.member}: the relay lacks the shares of some sharers, or carries others")
        for sender, data in relay.shares.items():
            plain = channel.open_sealed(self._channel(sender), data, self._aad(sender, self.member),
                                        f"shares from {sender} to {self.member}")
            cut = sharing.share_bytes(SELF_SEED_BYTES)
            if len(plain) != cut + sharing.share_bytes(MASK_KEY_BYTES):
                raise MaskingError(f"shares from {sender} to {self.member} have the wrong length")
            seed_share, key_share = plain[:cut], plain[cut:]
            if int.from_bytes(seed_share[:2], "big") != s.index(self.member):
                raise MaskingError(f"shares from {sender} to {self.member} carry another member's index")
            self._held[sender] = (seed_share, key_share)
        values = np.asarray(rows)
        if values.dtype.kind not in "iu":
            raise MaskingError(f"{self.member}: masks apply to integer slots, got {values.dtype}")
        n = values.size
        total = self_mask(self._seed, s, n)
        for other in sharers:
            if other != self.member:
                m = pair_mask(self._mask_key, self._roster.mask_keys[other], s, self.member, other, n,
                              f"mask key of {other}")
                total = total + m if pair_sign(self.member, other) > 0 else total - m
        self._sharers = sharers
        self._masked = True
        return np.mod(values.astype(np.int64).ravel() + total, s.modulus).reshape(values.shape)

    def encrypt(self, secret: SecretContext, relay: Relay, arrays: Sequence[Any] | Mapping[str, Any],
                weight: float = 1.0, total_weight: float | None = None, kind: Kind = "mean") -> bytes:
        """Step 3 on arrays: quantize as :func:`fedx.he.encrypt` does, mask, and encrypt a masked update blob."""
        q = masked.quantize(secret, arrays, weight=weight, total_weight=total_weight, kind=kind)
        if q.modulus != self.setup.modulus:
            raise MaskingError(f"{self.member}: the keys' plain modulus {q.modulus} is not the round's "
                               f"{self.setup.modulus}")
        return masked.encrypt_masked(secret, q, self.mask(relay, q.rows), self.setup.tag)

    def unmask(self, request: UnmaskRequest) -> UnmaskReply:
        """Step 4: shares of each survivor's self-mask seed and of each dropped member's mask key.

        Never both kinds for the same member, over every request of the round: a server that claims a live
        member dropped gets its mask key, and then never its self-mask seed, so its update stays masked.

        Raises
        ------
        MaskingRefused
            The request would reveal both kinds of share for one member, or lists this member as dropped.
        TooFewSurvivors
            Fewer survivors than the threshold: nothing is revealed.
        MaskingError
            A request of another round, or one inconsistent with who shared keys.
        """
        s = self.setup
        request.expect(s.run, s.round, "unmask request")
        if not self._masked or self._sharers is None:
            raise MaskingRefused(f"{self.member}: no masked update was sent this round, so nothing is revealed")
        survivors, dropped = set(request.survivors), set(request.dropped)
        if self.member in dropped:
            raise MaskingRefused(f"{self.member}: the server lists this member as dropped; it is live and refuses to "
                                 f"reveal anything")
        if self.member not in survivors:
            raise MaskingError(f"{self.member}: the unmask request does not list this member among the survivors")
        if survivors & dropped or survivors | dropped != set(self._sharers):
            raise MaskingError(f"{self.member}: survivors and dropped members must split the {len(self._sharers)} "
                               f"members that shared keys ({', '.join(self._sharers)}) exactly")
        if len(survivors) < s.threshold:
            raise TooFewSurvivors(f"{self.member}: {len(survivors)} survivors ({', '.join(sorted(survivors))}) are "
                                  f"fewer than the threshold {s.threshold}; no share is revealed")
        asks: dict[str, Reveal] = {m: "seed" for m in survivors} | {m: "key" for m in dropped}
        clash = sorted(m for m, kind in asks.items() if self._revealed.get(m, kind) != kind)
        if clash:
            raise MaskingRefused(f"{self.member}: refuses to reveal both the self-mask seed and the mask key of "
                                 f"{', '.join(clash)} (together they unmask that member's update); the server "
                                 f"changed its account of who dropped")
        self._revealed.update(asks)
        return UnmaskReply(run=s.run, round=s.round, member=self.member,
                           seed_shares={m: self._held[m][0] for m in sorted(survivors)},
                           key_shares={m: self._held[m][1] for m in sorted(dropped)})

    # ------------------------------------------------------------------ between messages

    def to_state(self) -> dict[str, Any]:
        """Everything this client holds, as JSON-ready text, so that it survives between two messages.

        It holds the round's private keys, seed and the shares of others: it stays at the institution
        (Flower's node state) and never travels.
        """
        return {"member": self.member, "setup": self.setup.to_bytes().hex(),
                "mask_key": channel.private_bytes(self._mask_key).hex(),
                "channel_key": channel.private_bytes(self._channel_key).hex(), "seed": self._seed.hex(),
                "roster": self._roster.to_bytes().hex() if self._roster is not None else None,
                "sharers": list(self._sharers) if self._sharers is not None else None,
                "held": {m: [a.hex(), b.hex()] for m, (a, b) in self._held.items()},
                "masked": self._masked, "revealed": dict(self._revealed)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> MaskingClient:
        """The client that :meth:`to_state` saved.

        Raises
        ------
        MaskingError
            A state that is not one :meth:`to_state` wrote.
        """
        try:
            setup = RoundSetup.from_bytes(bytes.fromhex(state["setup"]))
            self = cls(str(state["member"]), setup)
            self._mask_key = channel.load_private(bytes.fromhex(state["mask_key"]), "saved mask key")
            self._channel_key = channel.load_private(bytes.fromhex(state["channel_key"]), "saved channel key")
            self._seed = bytes.fromhex(state["seed"])
            roster = state.get("roster")
            self._roster = Roster.from_bytes(bytes.fromhex(roster)) if roster else None
            sharers = state.get("sharers")
            self._sharers = tuple(sharers) if sharers is not None else None
            self._held = {m: (bytes.fromhex(a), bytes.fromhex(b)) for m, (a, b) in state["held"].items()}
            self._masked = bool(state["masked"])
            self._revealed = {m: k for m, k in state["revealed"].items() if k in ("seed", "key")}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MaskingError(f"the saved masking state is damaged ({type(exc).__name__}: {exc})") from None
        return self

    # ------------------------------------------------------------------ helpers

    def _channel(self, other: str) -> bytes:
        assert self._roster is not None
        return channel.agree(self._channel_key, self._roster.channel_keys[other],
                             pair_info("channel", self.setup.run, self.setup.round, self.member, other),
                             f"channel key of {other}")

    def _aad(self, sender: str, recipient: str) -> bytes:
        info = pair_info("shares", self.setup.run, self.setup.round, sender, recipient)
        return info + f"|{sender}>{recipient}".encode()
