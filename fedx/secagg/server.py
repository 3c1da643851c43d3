"""The server's side of a masking round: it relays, counts survivors, rebuilds seeds, and removes masks.

It holds only the HE public context: the residual mask is subtracted from the *encrypted* sum, so the
server never sees the sum either. What it learns in the clear: public keys, sealed shares it cannot
open, seed commitments, who dropped, the self-mask seeds of the survivors and the mask keys of the
dropped (see docs/masking.md for why these reveal no update).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

from ..errors import MaskingError, TooFewSurvivors
from ..he import masked
from ..he.keys import PublicContext, SecretContext
from . import channel, sharing
from .client import MASK_KEY_BYTES, SELF_SEED_BYTES, pair_mask, pair_sign, seed_commitment, self_mask
from .messages import Advert, Relay, Roster, RoundSetup, ShareBundle, UnmaskReply, UnmaskRequest

log = logging.getLogger(__name__)


class MaskingServer:
    """The server in one masking round (see :mod:`fedx.secagg` for the message flow)."""

    def __init__(self, setup: RoundSetup) -> None:
        self.setup = setup
        self._roster: Roster | None = None
        self._commitments: dict[str, bytes] = {}
        self._request: UnmaskRequest | None = None

    def roster(self, adverts: Iterable[Advert]) -> Roster:
        """Step 1: collect the members' public keys (U1) and return the roster to send to each of them.

        Raises
        ------
        TooFewSurvivors
            Fewer adverts than the threshold.
        MaskingError
            An advert from outside the round, a repeated member or a repeated key.
        """
        s = self.setup
        mask_keys: dict[str, bytes] = {}
        channel_keys: dict[str, bytes] = {}
        for advert in adverts:
            advert.expect(s.run, s.round, f"advert of {advert.member}")
            if advert.member not in s.members or advert.member in mask_keys:
                raise MaskingError(f"advert of {advert.member!r}: not a member of the round, or sent twice")
            if len(advert.mask_key) != channel.KEY_BYTES or len(advert.channel_key) != channel.KEY_BYTES:
                raise MaskingError(f"advert of {advert.member}: public keys must be {channel.KEY_BYTES} bytes")
            mask_keys[advert.member] = advert.mask_key
            channel_keys[advert.member] = advert.channel_key
        keys = [*mask_keys.values(), *channel_keys.values()]
        if len(set(keys)) != len(keys):
            raise MaskingError("two adverts carry the same public key: keys must be fresh per member and purpose")
        if len(mask_keys) < s.threshold:
            raise TooFewSurvivors(f"only {len(mask_keys)} of {len(s.members)} institutions advertised keys, fewer than "
                                  f"the threshold {s.threshold}")
        self._roster = Roster(run=s.run, round=s.round, mask_keys=mask_keys, channel_keys=channel_keys)
        return self._roster

    def relay(self, bundles: Iterable[ShareBundle]) -> dict[str, Relay]:
        """Step 2: route the sealed shares; returns one relay per member that shared keys (U2).

        Raises
        ------
        TooFewSurvivors
            Fewer bundles than the threshold.
        """
        s = self.setup
        if self._roster is None:
            raise MaskingError("collect adverts (roster) before relaying shares")
        names = set(self._roster.mask_keys)
        got: dict[str, ShareBundle] = {}
        for bundle in bundles:
            bundle.expect(s.run, s.round, f"shares of {bundle.member}")
            if bundle.member not in names or bundle.member in got:
                raise MaskingError(f"shares of {bundle.member!r}: not in the roster, or sent twice")
            if set(bundle.shares) != names - {bundle.member} or len(bundle.seed_commitment) != 32:
                raise MaskingError(f"shares of {bundle.member}: need one sealed share for each other roster member "
                                   f"and a 32-byte seed commitment")
            got[bundle.member] = bundle
        if len(got) < s.threshold:
            raise TooFewSurvivors(f"only {len(got)} institutions shared keys, fewer than the threshold {s.threshold}")
        sharers = tuple(sorted(got))
        self._commitments = {m: b.seed_commitment for m, b in got.items()}
        return {r: Relay(run=s.run, round=s.round, recipient=r, sharers=sharers,
                         shares={m: got[m].shares[r] for m in sharers if m != r}) for r in sharers}

    def unmask_request(self, survivors: Iterable[str]) -> UnmaskRequest:
        """Step 4: the request to send every survivor, given whose masked updates arrived (U3).

        Raises
        ------
        TooFewSurvivors
            Fewer survivors than the threshold: no mask can be removed, so the round yields nothing.
        """
        s = self.setup
        sharers = set(self._commitments)
        alive = set(survivors)
        if not alive <= sharers:
            raise MaskingError(f"survivors {sorted(alive - sharers)} did not share keys this round")
        if len(alive) < s.threshold:
            raise TooFewSurvivors(f"only {len(alive)} masked updates arrived ({', '.join(sorted(alive)) or 'none'}), "
                                  f"fewer than the threshold {s.threshold}: their masks cannot be removed and "
                                  f"nothing is decrypted this round")
        self._request = UnmaskRequest(run=s.run, round=s.round, survivors=tuple(sorted(alive)),
                                      dropped=tuple(sorted(sharers - alive)))
        return self._request

    def residual(self, replies: Iterable[UnmaskReply], shape: tuple[int, int]) -> np.ndarray:
        """The mask left in the sum: survivors' self masks plus their pairwise masks with the dropped, mod t.

        Raises
        ------
        TooFewSurvivors
            Fewer valid replies than the threshold.
        MaskingError
            A reply from a non-survivor, a malformed one, or shares that rebuild a secret other than the committed one.
        """
        s, request, roster = self.setup, self._request, self._roster
        if request is None or roster is None:
            raise MaskingError("send the unmask request before rebuilding the residual mask")
        seeds: dict[str, list[bytes]] = {m: [] for m in request.survivors}
        keys: dict[str, list[bytes]] = {m: [] for m in request.dropped}
        seen: set[str] = set()
        for reply in replies:
            reply.expect(s.run, s.round, f"unmask reply of {reply.member}")
            if reply.member not in request.survivors or reply.member in seen:
                raise MaskingError(f"unmask reply of {reply.member!r}: not a survivor, or sent twice")
            if set(reply.seed_shares) != set(seeds) or set(reply.key_shares) != set(keys):
                raise MaskingError(f"unmask reply of {reply.member}: it must hold a seed share for each survivor and a "
                                   f"key share for each dropped member")
            seen.add(reply.member)
            for m, share in reply.seed_shares.items():
                seeds[m].append(share)
            for m, share in reply.key_shares.items():
                keys[m].append(share)
        if len(seen) < s.threshold:
            raise TooFewSurvivors(f"only {len(seen)} survivors answered the unmask request, fewer than the threshold "
                                  f"{s.threshold}: the masks cannot be removed and nothing is decrypted")
        n = int(np.prod(shape))
        total = np.zeros(n, np.int64)  # at most members^2 + members terms, each below t: reduced once, at the end
        for m, shares in seeds.items():
            seed = sharing.combine(shares, s.threshold, f"self-mask seed of {m}", SELF_SEED_BYTES)
            if seed_commitment(seed) != self._commitments[m]:
                raise MaskingError(f"the shares of {m}'s self-mask seed rebuild a seed that does not match its "
                                   f"commitment: a survivor sent a wrong share")
            total += self_mask(seed, s, n)
        for d, shares in keys.items():
            raw = sharing.combine(shares, s.threshold, f"mask key of {d}", MASK_KEY_BYTES)
            private = channel.load_private(raw, f"mask key of {d}")
            if channel.public_bytes(private) != roster.mask_keys[d]:
                raise MaskingError(f"the shares of {d}'s mask key rebuild a key that does not match its advert: a "
                                   f"survivor sent a wrong share")
            for k in request.survivors:  # k added sign(k, d) * mask(k, d); the dropped d never added its half
                m = pair_mask(private, roster.mask_keys[k], s, k, d, n, f"mask key of {k}")
                total += pair_sign(k, d) * m
        log.debug("secagg: residual mask from %d replies, %d dropped", len(seen), len(keys))
        return np.mod(total, s.modulus).reshape(shape)

    def finish(self, public: PublicContext | SecretContext, masked_aggregate: bytes,
               replies: Iterable[UnmaskReply]) -> bytes:
        """Remove the residual mask from a masked aggregate, under encryption: an ordinary aggregate blob."""
        return masked.unmask(public, masked_aggregate, self.residual(replies, masked.slot_shape(masked_aggregate)))
