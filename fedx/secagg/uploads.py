"""Several encrypted sums under one set of masks: what a fedx phase sends when it sends more than one blob.

A statistics stage sends two blobs (whole numbers, and the rest); most phases send one. One masking
round masks each institution once (a second update under the same masks would reveal the difference
of the two), so the blobs' slot rows are masked together, as one long vector, and split again.
The server removes the residual mask of that long vector from the encrypted aggregates in the same
order. Numpy arrays and bytes only: no flwr.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import MaskingError
from ..he import masked
from ..he.keys import PublicContext, SecretContext
from .client import MaskingClient
from .messages import Relay, UnmaskReply
from .server import MaskingServer


def sum_tag(base: str, index: int) -> str:
    """The masking tag of the ``index``-th sum of one round."""
    return f"{base}#{index}"


def mask_blobs(client: MaskingClient, secret: SecretContext, relay: Relay,
               updates: Sequence[masked.Quantized]) -> list[bytes]:
    """Mask ``updates`` together (one masking of this round) and encrypt each as a masked update blob."""
    if not updates:
        raise MaskingError(f"{client.member}: nothing to mask")
    for q in updates:
        if q.modulus != client.setup.modulus:
            raise MaskingError(f"{client.member}: the keys' plain modulus {q.modulus} is not the round's "
                               f"{client.setup.modulus}")
    rows = client.mask(relay, np.concatenate([q.rows for q in updates], axis=0))
    out, start = [], 0
    for i, q in enumerate(updates):
        n = q.rows.shape[0]
        out.append(masked.encrypt_masked(secret, q, rows[start:start + n], sum_tag(client.setup.tag, i)))
        start += n
    return out


def unmask_blobs(server: MaskingServer, public: PublicContext | SecretContext, aggregates: Sequence[bytes],
                 replies: Iterable[UnmaskReply]) -> list[bytes]:
    """Remove the residual mask from masked aggregates (in the order they were masked): ordinary aggregates."""
    shapes = [masked.slot_shape(a) for a in aggregates]
    if not shapes or len({s[1] for s in shapes}) != 1:
        raise MaskingError("unmask_blobs: needs masked aggregates of one preset")
    residual = server.residual(replies, (sum(s[0] for s in shapes), shapes[0][1]))
    out, start = [], 0
    for agg, (n, _) in zip(aggregates, shapes):
        out.append(masked.unmask(public, agg, residual[start:start + n]))
        start += n
    return out
