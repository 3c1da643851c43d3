"""FedxStrategy: Flower's Strategy interface around fedx's aggregators and encrypted sums.

In plaintext the strategy holds the global model, validates each delta, combines the deltas with
the configured rule (:mod:`fedx.aggregators`) and steps the rule. Under encryption it holds only
ciphertext: the aggregate of every round, which it adds up from the clients' blobs with the public
context (:func:`fedx.he.aggregate`), and the digests of the state the institutions reached. It never
holds a key that decrypts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from ..aggregators import ModelState, UpdateRule
from ..aggregators.validation import check_blob_header, check_plain_update
from ..errors import FedxError
from . import protocol as P
from .coordinator import NodeView
from .records import arrays_record, blobs_record, json_record, read_json, read_payload

log = logging.getLogger(__name__)


@dataclass
class RoundOutcome:
    """What one round's replies gave."""

    accepted: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


class FedxStrategy(Strategy):
    """Flower strategy that delegates aggregation to :mod:`fedx.aggregators` and :mod:`fedx.he`.

    Parameters
    ----------
    rule : UpdateRule
        The configured aggregator.
    nodes : mapping of node id to NodeView
        The federation's nodes, kept up to date by the orchestrator.
    job : dict
        The run config sent to nodes that have not seen it.
    setup : dict
        ``{"levels": ..., "preprocessor": digest}`` and ``setup_payload``: what a node that lost its
        state needs to rebuild it.
    public : he.PublicContext or None
        The public context under encryption, None in plaintext.
    min_clients : int
        Fewest valid updates a round may complete with.
    max_update_norm : float or None
        Plaintext deltas with a larger L2 norm are refused.
    dp : DPConfig or None
        Client-level differential privacy: uniform weights, and central noise in plaintext.
    """

    def __init__(self, rule: UpdateRule, nodes: dict[int, NodeView], job: dict[str, Any], public: Any,
                 min_clients: int, max_update_norm: float | None = None, dp: Any = None) -> None:
        self.rule = rule
        self.dp = dp if dp is not None and dp.level == "client" else None
        self.nodes = nodes
        self.job = job
        self.public = public
        self.min_clients = min_clients
        self.max_update_norm = max_update_norm
        self.setup_doc: dict[str, Any] = {}
        self.setup_payload: Sequence[np.ndarray] | bytes | None = None
        self.shapes: list[tuple[int, ...]] = []         # the model's arrays
        self.update_shapes: list[tuple[int, ...]] = []  # what each institution sends per round
        self.feature_names: list[str] = []
        self.report: dict[str, Any] | None = None       # newton: the exact GLM's report
        self.done = False                               # the rule's fit is complete
        self.state: ModelState | None = None          # plaintext only
        self.aggregates: dict[int, bytes] = {}         # encrypted only: round -> aggregate blob
        self.digests: dict[int, str] = {}              # encrypted only: round -> state digest
        self.reference_levels: dict[str, str] = {}
        self.round = 0
        self.last_outcome = RoundOutcome()
        self.eval_replies: dict[str, tuple[dict[str, Any], Any]] = {}
        self.eval_dropped: dict[str, str] = {}
        self.sender: Callable[[Message], int] = lambda msg: msg.metadata.src_node_id
        self.receipt_head: Callable[[NodeView], dict[str, Any] | None] = lambda node: None
        #: Under security.masking: pairwise, the tag of this round's masked updates (set by the orchestrator).
        self.mask_tag: str | None = None

    @property
    def encrypted(self) -> bool:
        """Whether updates travel encrypted."""
        return self.public is not None

    def summary(self) -> None:
        """Log the strategy's settings."""
        log.info("FedxStrategy: rule=%s, encrypted=%s, min_clients=%d", self.rule.name, self.encrypted,
                 self.min_clients)

    # ------------------------------------------------------------------ messages

    def request(self, node: NodeView, phase: str, doc: Mapping[str, Any], target_round: int | None = None,
                records: Mapping[str, ArrayRecord] | None = None) -> Message:
        """A message for one node; adds what the node is missing (run config, setup, aggregates)."""
        body = {"phase": phase, "round": self.round, **doc}
        head = self.receipt_head(node)
        if head is not None:
            body["receipt"] = head  # the server's receipts so far: the institution's ledger records it
        content: dict[str, Any] = dict(records or {})
        if not node.ready or node.synced_round < 0:
            body["config"] = self.job
        if phase not in (P.HELLO, P.LEVELS, P.MOMENTS, P.SETUP, P.LOCAL_BASELINE, P.MASK_KEYS, P.MASK_SHARES,
                         P.MASK_UNMASK) and not node.ready:
            body["setup"] = self.setup_doc
            content[P.REC_SETUP] = _payload_record(self.setup_payload)
        if target_round is not None:
            body["target_round"] = target_round
            body["encrypted"] = self.encrypted
            if self.encrypted:
                start = node.synced_round + 1 if node.ready and node.synced_round >= 0 else 1
                needed = {r: self.aggregates[r] for r in range(max(start, 1), target_round + 1)}
                content[P.REC_GLOBAL] = blobs_record({P.aggregate_key(r): b for r, b in needed.items()})
                body["digests"] = {str(r): d for r, d in self.digests.items() if r >= start - 1}
            else:
                assert self.state is not None
                content[P.REC_GLOBAL] = arrays_record(self.state.params)
                if self.rule.clients_need_opt:
                    from .client_app import opt_record

                    content[P.REC_OPT] = opt_record(self.state.opt)
        content["fedx"] = json_record(body)
        mtype = {P.TRAIN: MessageType.TRAIN, P.EVALUATE: MessageType.EVALUATE}.get(phase, MessageType.QUERY)
        return Message(RecordDict(content), dst_node_id=node.node_id, message_type=mtype,
                       group_id=str(self.round))

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Train messages to the sampled nodes (``config['nodes']``) for ``server_round``."""
        self.round = server_round
        sampled = [self.nodes[int(n)] for n in config["nodes"]]  # type: ignore[union-attr]
        # Under client-level DP every institution weighs the same (its clipped update's sensitivity).
        total_weight = float(len(sampled)) if self.dp is not None else float(sum(n.n_train for n in sampled))
        doc = {"total_weight": total_weight, "n_clients": len(sampled)}
        return [self.request(n, P.TRAIN, doc, target_round=server_round - 1) for n in sampled]

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate each update, drop the bad ones with a logged reason, and aggregate the rest."""
        outcome = RoundOutcome()
        good: list[tuple[str, Any, float]] = []
        losses: list[tuple[float, float]] = []
        for msg in replies:
            name, doc, reason = self._open_reply(msg, server_round)
            if reason is None:
                payload = read_payload(msg.content.array_records["payload"]) \
                    if "payload" in msg.content.array_records else None
                reason = self._check_update(payload)
            if reason is not None:
                outcome.dropped[name] = reason
                log.warning("round %d: dropped the update of %s: %s", server_round, name, reason)
                continue
            node = self._node_of(msg)
            node.synced_round = server_round - 1
            weight = float(msg.content.metric_records["metrics"]["num-examples"])
            good.append((name, payload, weight))
            losses.append((weight, float(msg.content.metric_records["metrics"].get("train_loss", np.nan))))
        self.last_outcome = outcome
        if len(good) < self.min_clients:
            raise RoundFailed(server_round, len(good), self.min_clients, outcome.dropped)
        outcome.accepted = [g[0] for g in good]
        if self.encrypted:
            from .. import he

            if self.mask_tag is not None:  # still masked: the orchestrator removes the masks
                from .masking import masked_sum

                self.aggregates[server_round] = masked_sum(self.public, [g[1] for g in good])
            else:
                self.aggregates[server_round] = he.aggregate(self.public, (g[1] for g in good))
        else:
            assert self.state is not None
            weights = [1.0] * len(good) if self.dp is not None else [g[2] for g in good]
            combined = self.rule.combine([g[1] for g in good], weights)
            if self.dp is not None:
                from ..privacy.dp import central_noise

                # Plaintext DP-FedAvg: the server adds N(0, (sigma * clip)^2) to the sum of clipped updates.
                noise = central_noise([c.shape for c in combined], self.dp.clip, self.dp.noise_multiplier)
                combined = [(c.astype(np.float64) + z / len(good)).astype(c.dtype) for c, z in zip(combined, noise)]
            prev, self.state = self.state, self.rule.apply(self.state, combined)
            if self.rule.name == "newton" and self.rule.report_ready(prev):  # type: ignore[attr-defined]
                from ..aggregators.glm_results import GLMResults

                self.report = GLMResults.from_newton(combined[0], prev, self.rule, self.feature_names,  # type: ignore[arg-type]
                                                     self.reference_levels).to_dict()
                self.done = True
        known = [(w, l) for w, l in losses if np.isfinite(l)]
        outcome.metrics = {"clients": float(len(good))}
        if known:
            outcome.metrics["train_loss"] = float(np.average([l for _, l in known], weights=[w for w, _ in known]))
        return None, MetricRecord(outcome.metrics)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Evaluate (or, with ``config['final']``, final) messages to every node."""
        phase = P.FINAL if config.get("final") else P.EVALUATE
        return [self.request(self.nodes[int(n)], phase, {}, target_round=server_round)
                for n in config["nodes"]]  # type: ignore[union-attr]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Collect each node's metrics; under encryption, settle the digest of the round's state."""
        self.eval_replies: dict[str, tuple[dict[str, Any], Any]] = {}
        dropped: dict[str, str] = {}
        votes: dict[str, list[str]] = {}
        for msg in replies:
            name, doc, reason = self._open_reply(msg, server_round)
            if reason is not None:
                dropped[name] = reason
                log.warning("round %d: evaluation at %s failed: %s", server_round, name, reason)
                continue
            node = self._node_of(msg)
            node.ready, node.synced_round = True, int(doc.get("state_round", server_round))
            votes.setdefault(doc.get("state_digest", ""), []).append(name)
            stats = msg.content.array_records.get("stats")
            self.eval_replies[name] = (doc, stats)
        if self.encrypted and votes:
            digest, names = max(votes.items(), key=lambda kv: len(kv[1]))
            self.done = all(bool(self.eval_replies[n][0].get("done")) for n in names if n in self.eval_replies)
            self.digests[server_round] = digest
            for other, who in votes.items():
                if other != digest:
                    for n in who:
                        dropped[n] = "its model state diverged from the federation's; it will be stopped"
                        self.eval_replies.pop(n, None)
        self.eval_dropped = dropped
        return MetricRecord({"evaluated": float(len(self.eval_replies))})

    # ------------------------------------------------------------------ helpers

    def _node_of(self, msg: Message) -> NodeView:
        return self.nodes[self.sender(msg)]

    def _open_reply(self, msg: Message, server_round: int) -> tuple[str, dict[str, Any], str | None]:
        nid = self.sender(msg)
        node = self.nodes.get(nid)
        name = node.name if node and node.name else f"node {nid}"
        if node is None:
            return name, {}, "reply from a node that is not part of this federation"
        if msg.has_error():
            return name, {}, f"node error: {msg.error.reason}"
        try:
            doc = read_json(msg.content)
        except FedxError as exc:
            return name, {}, str(exc)
        if doc.get("status") != "ok":
            if doc.get("error_type") in ("FederationError",) and "not set up" in str(doc.get("reason")):
                node.ready = False
            return name, doc, str(doc.get("reason", "unknown error"))
        if int(doc.get("round", -1)) != server_round:
            return name, doc, f"reply is for round {doc.get('round')}, the server is at round {server_round} (replay?)"
        return name, doc, None

    def _check_update(self, payload: Any) -> str | None:
        if payload is None:
            return "reply carries no update"
        if self.encrypted:
            if not isinstance(payload, bytes):
                return "plaintext update in an encrypted run"
            from .. import he

            try:
                if self.mask_tag is not None:
                    from .masking import check_masked

                    payload = check_masked(payload, self.mask_tag)
                header = he.inspect(payload)
            except FedxError as exc:
                return str(exc)
            return check_blob_header(header, {"preset": self.public.preset.name,
                                              "params": self.public.preset.params_hash,
                                              "fingerprint": self.public.fingerprint,
                                              "shapes": self.update_shapes, "kind": self.rule.he_kind})
        if isinstance(payload, bytes):
            return "encrypted update in a plaintext run"
        return check_plain_update(payload, self.update_shapes,
                                  self.max_update_norm if self.rule.he_kind == "mean" else None)


class RoundFailed(FedxError):
    """Too few institutions sent a valid update for the round to complete."""

    def __init__(self, server_round: int, valid: int, needed: int, dropped: Mapping[str, str]) -> None:
        why = "; ".join(f"{n}: {r}" for n, r in dropped.items()) or "no replies"
        super().__init__(f"round {server_round}: only {valid} valid update(s), federation.min_clients is "
                         f"{needed} ({why})")


def _payload_record(payload: Sequence[np.ndarray] | bytes | None) -> ArrayRecord:
    from .records import payload_record

    if payload is None:
        return ArrayRecord()
    return payload_record(payload)
