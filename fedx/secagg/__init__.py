"""Pairwise masks inside the HE plaintexts (SecAgg with double masking, Bell et al. 2020 / Bonawitz et al. 2017).

No coalition of the server with fewer than ``threshold`` institutions reads one institution's update, even
holding the shared HE secret key, and the server alone learns not even the sum. This package takes and
returns numpy arrays and bytes and imports no flwr; its HE side is :mod:`fedx.he.masked`.

One round (``S`` the server, ``i`` each institution; every message also has a ``to_bytes``/``from_bytes``)::

    setup   = RoundSetup.create(members, modulus=keys.preset.plain_modulus, round_=r)   # S -> all
    clients = {m: MaskingClient(m, setup) for m in members}
    server  = MaskingServer(setup)
    roster  = server.roster(c.advertise() for c in clients.values())                   # i -> S -> all
    relays  = server.relay(c.share_keys(roster) for c in clients.values())            # i -> S -> j
    blobs   = [clients[m].encrypt(secret, relays[m], arrays, weight=n, total_weight=N) for m in relays]
    agg     = he.masked.aggregate_masked(public, blobs)                                # S
    request = server.unmask_request(survivors)                                         # S -> survivors
    total   = server.finish(public, agg, [clients[m].unmask(request) for m in survivors])
    mean, weight = he.decrypt(secret, total)                                           # at each institution

See docs/masking.md.
"""

from __future__ import annotations

from .client import MaskingClient
from .messages import (MIN_MEMBERS, Advert, Relay, Roster, RoundSetup, ShareBundle, UnmaskReply, UnmaskRequest,
                       default_threshold)
from .server import MaskingServer

__all__ = [
    "MIN_MEMBERS", "Advert", "MaskingClient", "MaskingServer", "Relay", "Roster", "RoundSetup", "ShareBundle",
    "UnmaskReply", "UnmaskRequest", "default_threshold",
]
