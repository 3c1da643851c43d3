"""``security.masking: pairwise`` over Flower's Message API: the extra phases around every encrypted sum.

For each sum (the moments of setup, each training round's updates or Newton statistics, each stage of
``fedx stats``) the server runs, with the :mod:`fedx.secagg` library:

1. ``mask-keys``: a fresh :class:`~fedx.secagg.RoundSetup` to the institutions; each answers with its
   advert, signed by its long-term identity key (:mod:`fedx.secagg.identity`);
2. ``mask-shares``: the roster, with every advert, signature and identity; each institution checks every
   advert against the identity it pinned, and answers with its sealed Shamir shares;
3. the phase itself (``moments``, ``train``, ``stats``), whose request carries the relayed shares
   (``mask.relay``); the institution masks its quantized slots and encrypts them;
4. ``mask-unmask``: the survivors (whose masked update the server accepted) reveal the shares that
   remove the rest of the masks, which the server subtracts from the encrypted sum. The result is an
   ordinary aggregate, exactly the one plain bfv-compact gives.

:class:`ServerMasking` is the server's side, :func:`client_phase` and :func:`seal` the institution's.
The institution's masking state (this sum's private keys, seed and the shares it holds) stays in its
Flower node state between messages; it never travels.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from flwr.app import Context

from ..errors import FederationError, MaskingError
from ..he import masked
from ..institution import Institution, NodeSpec
from ..secagg import (Advert, MaskingClient, MaskingServer, Relay, Roster, RoundSetup, ShareBundle, UnmaskReply,
                      UnmaskRequest, default_threshold)
from ..secagg import identity
from ..secagg.uploads import mask_blobs, sum_tag, unmask_blobs
from . import protocol as P
from .records import json_record, read_json

log = logging.getLogger(__name__)

#: Where an institution's masking state for the current sum lives in its node state.
_MASK_STATE = "fedx-mask"


def _hex(data: bytes) -> str:
    return bytes(data).hex()


def _unhex(doc: Mapping[str, Any], key: str, what: str) -> bytes:
    value = doc.get(key)
    try:
        return bytes.fromhex(str(value))
    except ValueError:
        raise MaskingError(f"{what}: '{key}' is not hex bytes") from None


# ---------------------------------------------------------------------- the server


class ServerMasking:
    """The server's side of masking for one run: opens a masked sum, and removes its masks after.

    Parameters
    ----------
    coordinator : Coordinator
        Sends the phases (its ``ask``) and knows the nodes.
    threshold : int or None
        ``security.threshold``; None gives a strict majority of each sum's institutions.
    """

    def __init__(self, coordinator: Any, threshold: int | None) -> None:
        self.coordinator = coordinator
        self.threshold = threshold
        self.run = secrets.token_hex(16)  # fresh per run (and per resumed server), so seeds never repeat
        self._count = 0
        self._server: MaskingServer | None = None
        self._nodes: dict[str, int] = {}
        self.messages = 0  # extra message exchanges so far (for the benchmark and the logs)
        self.bytes_up = 0  # JSON bytes of the masking phases' replies and requests, summed over the nodes
        self.bytes_down = 0

    @property
    def tag(self) -> str:
        """The tag of the current sum's masked blobs (the first of them)."""
        assert self._server is not None
        return sum_tag(self._server.setup.tag, 0)

    def open(self, nids: Sequence[int], what: str) -> dict[int, dict[str, Any]]:
        """Steps 1 and 2 among ``nids``: return, for each node that shared keys, what its request must carry.

        Raises
        ------
        FederationError
            Fewer than the threshold answered a step (the message names it).
        """
        c = self.coordinator
        names = {c.nodes[n].name: n for n in nids}
        t = self.threshold if self.threshold is not None else default_threshold(len(names))
        if len(names) < 3 or not len(names) // 2 < t <= len(names):
            raise FederationError(f"{what}: security.masking: pairwise needs at least 3 institutions and "
                                  f"security.threshold in [{len(names) // 2 + 1}, {len(names)}] for {len(names)} "
                                  f"institutions; this sum has {len(names)} and threshold {t}")
        public = c.public
        setup = RoundSetup(run=self.run, round=self._count, members=tuple(names), threshold=t,
                           modulus=public.preset.plain_modulus)
        self._count += 1
        server = self._server = MaskingServer(setup)
        self._nodes = names
        doc = {"mask_setup": _hex(setup.to_bytes())}
        keys = c.ask(P.MASK_KEYS, {n: doc for n in names.values()}, f"{what}: masking keys", required=t)
        self._count_bytes([doc] * len(names), keys.values())
        adverts: dict[str, Advert] = {}
        signed: dict[str, dict[str, str]] = {}
        for nid, reply in keys.items():
            name = c.nodes[nid].name
            try:
                advert = Advert.from_bytes(_unhex(reply, "advert", f"advert of {name}"))
                identity.verify_advert(_unhex(reply, "identity", name), advert, _unhex(reply, "signature", name))
            except MaskingError as exc:
                log.warning("%s: %s: %s", name, what, exc)
                continue
            if advert.member != name:
                log.warning("%s: its advert names %r; left out of %s", name, advert.member, what)
                continue
            adverts[name] = advert
            signed[name] = {"advert": reply["advert"], "signature": reply["signature"], "identity": reply["identity"]}
        roster = server.roster(adverts.values())
        doc = {"roster": _hex(roster.to_bytes()), "signed": signed}
        shares = c.ask(P.MASK_SHARES, {names[m]: doc for m in adverts}, f"{what}: masking shares", required=t)
        self._count_bytes([doc] * len(adverts), shares.values())
        bundles = [ShareBundle.from_bytes(_unhex(r, "shares", c.nodes[nid].name)) for nid, r in shares.items()]
        relays = server.relay(bundles)
        self.messages += 2
        out = {names[m]: {"mask": {"relay": _hex(r.to_bytes())}} for m, r in relays.items()}
        self._count_bytes(out.values(), ())
        return out

    def close(self, survivors: Sequence[str], aggregates: Sequence[bytes], what: str) -> list[bytes]:
        """Step 4: the survivors' shares, and the sums of ``aggregates`` with their masks removed.

        Raises
        ------
        FederationError
            Fewer survivors, or answers, than the threshold: nothing can be decrypted this time.
        """
        c, server = self.coordinator, self._server
        if server is None:
            raise FederationError(f"{what}: no masked sum is open")
        self._server = None
        request = server.unmask_request(survivors)
        doc = {"request": _hex(request.to_bytes())}
        answers = c.ask(P.MASK_UNMASK, {self._nodes[m]: doc for m in request.survivors}, f"{what}: unmasking",
                        required=server.setup.threshold)
        self._count_bytes([doc] * len(request.survivors), answers.values())
        replies = [UnmaskReply.from_bytes(_unhex(a, "reply", c.nodes[nid].name)) for nid, a in answers.items()]
        self.messages += 1
        log.info("%s: masks removed (%d survivors, %d dropped, %d replies)", what, len(request.survivors),
                 len(request.dropped), len(replies))
        return unmask_blobs(server, c.public, aggregates, replies)


    def _count_bytes(self, sent: Any, received: Any) -> None:
        self.bytes_down += sum(len(json.dumps(d, separators=(",", ":"))) for d in sent)
        self.bytes_up += sum(len(json.dumps(d, separators=(",", ":"))) for d in received)


def with_mask(docs: Mapping[int, Mapping[str, Any]], extra: Mapping[int, Mapping[str, Any]]) -> dict[int, dict]:
    """The phase's documents of the nodes that shared keys, each with its relay."""
    return {n: {**docs[n], **extra[n]} for n in docs if n in extra}


def add_to_message(msg: Any, extra: Mapping[str, Any]) -> None:
    """Add ``extra`` (a node's relay) to a request message built elsewhere."""
    msg.content["fedx"] = json_record({**read_json(msg.content), **extra})


def masked_sum(public: Any, blobs: Sequence[bytes]) -> bytes:
    """The server's sum of masked blobs (public context only): still masked."""
    return masked.aggregate_masked(public, blobs)


def check_masked(blob: bytes, tag: str) -> bytes:
    """The inner blob of a masked update of the sum ``tag`` (for header checks).

    Raises
    ------
    MaskingError
        Not a masked update, or one of another sum.
    """
    stage, got, inner = masked.unwrap(blob, "masked update")
    if stage != "update" or got != tag:
        raise MaskingError(f"expected a masked update of masking round {tag}, got a masked {stage} of {got}")
    return bytes(inner)


# ---------------------------------------------------------------------- the institution


def client_phase(phase: str, req: Mapping[str, Any], context: Context, inst: Institution) -> dict[str, Any]:
    """Answer ``mask-keys``, ``mask-shares`` or ``mask-unmask`` at an institution; return the reply's fields."""
    spec = inst.spec
    if not inst.masking:
        raise MaskingError(f"{spec.name}: the server asks for masking, and this run has security.masking: none or "
                           f"no encryption")
    if phase == P.MASK_KEYS:
        setup = RoundSetup.from_bytes(_unhex(req, "mask_setup", "masking setup"))
        _check_setup(setup, inst)
        client = MaskingClient(spec.name, setup)
        key = identity.load_or_create(spec.out_dir)
        advert = client.advertise()
        _save(context, client)
        return {"advert": _hex(advert.to_bytes()), "signature": _hex(identity.sign_advert(key, advert)),
                "identity": _hex(identity.public_bytes(key))}
    client = _load(context, spec)
    if phase == P.MASK_SHARES:
        roster = Roster.from_bytes(_unhex(req, "roster", "roster"))
        _check_roster(roster, req.get("signed"), spec)
        bundle = client.share_keys(roster)
        _save(context, client)
        return {"shares": _hex(bundle.to_bytes())}
    if phase == P.MASK_UNMASK:
        reply = client.unmask(UnmaskRequest.from_bytes(_unhex(req, "request", "unmask request")))
        _save(context, client)
        return {"reply": _hex(reply.to_bytes())}
    raise MaskingError(f"unknown masking phase {phase!r}")


def seal(payloads: Mapping[str, Any], req: Mapping[str, Any], context: Context, inst: Institution) -> dict[str, bytes]:
    """Mask and encrypt an institution's quantized sums (by name, masked in name order) with this sum's relay.

    Raises
    ------
    MaskingError
        The request carries no relay (the server skipped the key steps), or the relay is not for this sum.
    """
    mask = req.get("mask")
    if not isinstance(mask, Mapping) or "relay" not in mask:
        raise MaskingError(f"{inst.spec.name}: this run masks every sum, and the request carries no relay of "
                           f"shares (the server skipped the masking steps); refusing to send the values")
    client = _load(context, inst.spec)
    relay = Relay.from_bytes(_unhex(mask, "relay", "relay"))
    names = sorted(payloads)
    blobs = mask_blobs(client, inst._require_secret(), relay, [payloads[n] for n in names])
    _save(context, client)
    return dict(zip(names, blobs))


def _check_setup(setup: RoundSetup, inst: Institution) -> None:
    want = inst.cfg.security.threshold
    if want is not None and setup.threshold < want:
        raise MaskingError(f"{inst.spec.name}: the server proposes threshold {setup.threshold}, below this run's "
                           f"security.threshold {want}; refusing")
    modulus = inst._require_secret().preset.plain_modulus
    if setup.modulus != modulus:
        raise MaskingError(f"{inst.spec.name}: the masking setup's modulus {setup.modulus} is not the keys' {modulus}")


def _check_roster(roster: Roster, signed: Any, spec: NodeSpec) -> None:
    if not isinstance(signed, Mapping) or set(signed) != set(roster.mask_keys):
        raise MaskingError(f"{spec.name}: the roster must come with the signed advert of each of its members")
    adverts, identities, signatures = {}, {}, {}
    for name, entry in signed.items():
        if not isinstance(entry, Mapping):
            raise MaskingError(f"{spec.name}: the signed advert of {name!r} is malformed")
        advert = Advert.from_bytes(_unhex(entry, "advert", f"advert of {name}"))
        advert.expect(roster.run, roster.round, f"advert of {name}")
        if advert.member != name or roster.mask_keys[name] != advert.mask_key or \
                roster.channel_keys.get(name) != advert.channel_key:
            raise MaskingError(f"{spec.name}: the roster's keys for {name!r} are not those of its signed advert: "
                               f"substituted on the way (refusing the round)")
        adverts[name], identities[name] = advert, _unhex(entry, "identity", name)
        signatures[name] = _unhex(entry, "signature", name)
    identity.Pins(spec.out_dir).check(identities, adverts, signatures)


def _save(context: Context, client: MaskingClient) -> None:
    context.state.config_records[_MASK_STATE] = json_record(client.to_state())


def _load(context: Context, spec: NodeSpec) -> MaskingClient:
    if _MASK_STATE not in context.state.config_records:
        raise MaskingError(f"{spec.name}: no masking keys were made for this sum (mask-keys came first?)")
    client = MaskingClient.from_state(read_json(context.state, _MASK_STATE))
    if client.member != spec.name:
        raise MaskingError(f"{spec.name}: the saved masking state belongs to {client.member!r}")
    return client
