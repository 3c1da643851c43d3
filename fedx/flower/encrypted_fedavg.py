"""``EncryptedFedAvg``: federated averaging of ciphertexts that the server cannot read.

A :class:`flwr.serverapp.strategy.FedAvg` whose ``aggregate_train`` adds the clients' fedx blobs with
:func:`fedx.he.aggregate` under the public context alone, and whose next round sends that encrypted
aggregate back; the clients' :func:`~fedx.flower.he_mod` decrypts it. Everything else (sampling,
``start``, the plaintext metrics, evaluation rounds) is FedAvg's.

The final model. ``strategy.start(...)`` returns a Result whose ``arrays`` is the encrypted aggregate of
the last round: the server cannot decrypt it. An institution reads it with
:func:`fedx.flower.decrypt_arrays` (save ``bytes(result.arrays["blob"].data)`` and hand it over), and
every evaluate round already gives each client's evaluate function the decrypted model. A server-side
``evaluate_fn`` receives the encrypted record, so it cannot score the model.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result

from .. import he
from ..errors import FederationError, KeyMismatchError
from .he_client_mod import KEY_TOTAL_WEIGHT
from .records import STYPE_HE, payload_record, read_payload

log = logging.getLogger(__name__)

MetricsAggr = Callable[[list[RecordDict], str], MetricRecord]


class EncryptedFedAvg(FedAvg):
    """FedAvg over fedx ciphertexts, for ClientApps that use :func:`fedx.flower.he_mod`.

    Parameters
    ----------
    public_key : he.PublicContext or path
        The server's public context: from ``keys.public``, or a key folder / ``public.fxk`` file from
        ``fedx keygen``. A secret context is refused: the server must not hold the key.
    fraction_train, fraction_evaluate, min_train_nodes, min_evaluate_nodes, min_available_nodes, \
weighted_by_key, arrayrecord_key, configrecord_key, train_metrics_aggr_fn, evaluate_metrics_aggr_fn
        As for :class:`flwr.serverapp.strategy.FedAvg`. The metrics stay in plaintext and are averaged as
        FedAvg averages them.

    Notes
    -----
    Each train message carries ``KEY_TOTAL_WEIGHT`` (``"fedx.he.total-weight"``) once every sampled node
    has reported its weight in an earlier round: the sum of those weights, so that the clients send compact
    ``kind="mean"`` blobs. Before that (round 1) the clients send ``kind="sum"`` blobs, which need no
    shared total. Either way the decrypted aggregate is the weighted mean.

    A reply with plaintext arrays, or a blob under other keys, raises: encryption is never silently dropped.
    """

    # pylint: disable=too-many-arguments
    def __init__(self, public_key: he.PublicContext | str | os.PathLike[str], *, fraction_train: float = 1.0,
                 fraction_evaluate: float = 1.0, min_train_nodes: int = 2, min_evaluate_nodes: int = 2,
                 min_available_nodes: int = 2, weighted_by_key: str = "num-examples", arrayrecord_key: str = "arrays",
                 configrecord_key: str = "config", train_metrics_aggr_fn: MetricsAggr | None = None,
                 evaluate_metrics_aggr_fn: MetricsAggr | None = None) -> None:
        super().__init__(fraction_train=fraction_train, fraction_evaluate=fraction_evaluate,
                         min_train_nodes=min_train_nodes, min_evaluate_nodes=min_evaluate_nodes,
                         min_available_nodes=min_available_nodes, weighted_by_key=weighted_by_key,
                         arrayrecord_key=arrayrecord_key, configrecord_key=configrecord_key,
                         train_metrics_aggr_fn=train_metrics_aggr_fn, evaluate_metrics_aggr_fn=evaluate_metrics_aggr_fn)
        self.public = he.public_context(public_key, what="EncryptedFedAvg public_key")
        self._weights: dict[int, float] = {}  # node id -> its last reported weight

    def summary(self) -> None:
        """Log the configuration, with the encryption."""
        log.info("EncryptedFedAvg: %s, key fingerprint %s", self.public.preset.name, self.public.fingerprint[:16])
        super().summary()

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, timeout: float = 3600,
              train_config: ConfigRecord | None = None, evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None) -> Result:
        """FedAvg's ``start``; the returned ``arrays`` are the encrypted aggregate of the last round."""
        if evaluate_fn is not None:
            log.warning("EncryptedFedAvg: evaluate_fn runs on the server, which holds only the encrypted "
                        "aggregate; it receives ciphertext, not a model (evaluate at the clients instead)")
        return super().start(grid=grid, initial_arrays=initial_arrays, num_rounds=num_rounds, timeout=timeout,
                             train_config=train_config, evaluate_config=evaluate_config, evaluate_fn=evaluate_fn)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """FedAvg's train messages, with the round's total weight when every sampled node's weight is known."""
        config.pop(KEY_TOTAL_WEIGHT, None)  # the same record is passed every round
        messages = list(super().configure_train(server_round, arrays, config, grid))
        nodes = [m.metadata.dst_node_id for m in messages]
        if nodes and all(n in self._weights for n in nodes):
            total = float(sum(self._weights[n] for n in nodes))
            for m in messages:
                m.content[self.configrecord_key][KEY_TOTAL_WEIGHT] = total  # type: ignore[index]
            log.debug("configure_train: round %d total weight %g over %d nodes", server_round, total, len(nodes))
        return messages

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Add the replies' blobs under the public context; the result is the encrypted aggregate.

        Raises
        ------
        FederationError
            A reply holds plaintext arrays (its ClientApp lacks ``he_mod``).
        KeyMismatchError
            A blob was made under other keys or parameters (the message names the node).
        """
        valid, _ = self._check_and_log_replies(list(replies), is_train=True)
        if not valid:
            return None, None
        blobs = [self._blob(msg) for msg in valid]
        total = he.aggregate(self.public, blobs)
        for msg in valid:
            self._weights[msg.metadata.src_node_id] = self._weight(msg)
        log.info("aggregate_train: round %d, %d encrypted updates summed (%s, %d bytes)", server_round, len(blobs),
                 he.inspect(total).kind, len(total))
        contents = [msg.content for msg in valid]
        return payload_record(total), self.train_metrics_aggr_fn(contents, self.weighted_by_key)

    def _blob(self, msg: Message) -> bytes:
        node = msg.metadata.src_node_id
        record = next(iter(msg.content.array_records.values()))
        if not any(arr.stype == STYPE_HE for arr in record.values()):
            raise FederationError(f"node {node} replied with plaintext arrays; EncryptedFedAvg aggregates only fedx "
                                  f"ciphertexts: add fedx.flower.he_mod(keys) to that ClientApp's mods")
        try:
            blob = read_payload(record)
        except FederationError as exc:
            raise FederationError(f"node {node}: {exc}") from None
        assert isinstance(blob, bytes)
        header = he.inspect(blob)
        weight = self._weight(msg)
        if not math.isclose(header.weight, weight, rel_tol=1e-9):
            raise FederationError(f"node {node}: its blob is weighted {header.weight:g} but its metric "
                                  f"'{self.weighted_by_key}' says {weight:g}")
        if header.fingerprint != self.public.fingerprint or header.params != self.public.preset.params_hash:
            raise KeyMismatchError(f"node {node} encrypted under other keys (fingerprint {header.fingerprint[:16]}, "
                                   f"preset {header.preset}) than the server's public key "
                                   f"({self.public.fingerprint[:16]}, {self.public.preset.name})")
        return blob


    def _weight(self, msg: Message) -> float:
        metrics = next(iter(msg.content.metric_records.values()))
        return float(metrics[self.weighted_by_key])  # type: ignore[arg-type]
