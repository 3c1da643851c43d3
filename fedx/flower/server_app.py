"""The ServerApp: runs a fedx job over Flower's Grid, phase by phase, round by round.

:class:`Orchestrator` drives the phases of :mod:`fedx.flower.protocol`: it waits for the
institutions, sets up shared preprocessing from summed statistics, runs the local baselines when
asked, then the federated rounds through :class:`~fedx.flower.strategy.FedxStrategy`, and finally
has every institution save the model. After each round it writes a checkpoint, so a restarted
server resumes from the last completed round.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message
from flwr.serverapp import Grid

from ..aggregators import ModelState, make_rule
from ..atomic import atomic_file, json_default, write_atomic
from ..config import Config
from ..data.checks import check_levels
from ..data.preprocess import merge_levels
from ..errors import FederationError
from ..run_folder import config_digest, legacy_config_digest
from ..summary import FederationSummary
from . import protocol as P
from .coordinator import Coordinator, Event, NodeView
from .masking import add_to_message, check_masked, masked_sum, with_mask
from .records import content_bytes, payload_record, read_payload, read_stats
from .strategy import FedxStrategy, RoundFailed

log = logging.getLogger(__name__)

__all__ = ["Checkpoint", "FederationSummary", "Orchestrator"]


class Orchestrator(Coordinator):
    """Runs one fedx training job on a Flower Grid.

    Parameters
    ----------
    cfg : Config
        The run's config.
    grid : Grid
        Flower's handle to the connected nodes.
    public : he.PublicContext or None
        The public HE context when encryption is on.
    out_dir : Path
        Where checkpoints go.
    expected_nodes : int
        How many nodes to wait for before starting (at least ``federation.min_clients``).
    on_event : callable, optional
        Called with ``(kind, info)`` as the run progresses (for progress bars).
    resume : bool
        Continue from the checkpoint in ``out_dir`` when one matches this config.
    wait_seconds : float
        How long to wait for the expected nodes to connect.
    """

    def __init__(self, cfg: Config, grid: Grid, public: Any, out_dir: Path, expected_nodes: int,
                 on_event: Event | None = None, resume: bool = True, wait_seconds: float = 120.0) -> None:
        super().__init__(cfg, grid, public, expected_nodes, on_event, wait_seconds,
                         receipts=Path(out_dir) / "receipts.jsonl" if cfg.security.audit else None)
        self.out_dir = Path(out_dir)
        self.resume = resume
        self.task_name = cfg.task
        self.strategy = FedxStrategy(make_rule(cfg), self.nodes, self.job, public,
                                     cfg.federation.min_clients, cfg.federation.max_update_norm, cfg.security.dp)
        self.accountant = _client_accountant(cfg)
        self.strategy.sender = self.sender
        self.strategy.receipt_head = self.receipt_head
        self.summary = FederationSummary()
        self.checkpoint = Checkpoint(self.out_dir / "checkpoint", cfg)
        self._rng = random.Random(cfg.seed)

    def request(self, node: NodeView, phase: str, doc: Mapping[str, Any],
                records: Mapping[str, Any] | None = None) -> Message:
        """A message for one node, with what it is missing (see :meth:`FedxStrategy.request`)."""
        return self.strategy.request(node, phase, doc, records=records)

    # ------------------------------------------------------------------ the run

    def run(self) -> FederationSummary:
        """Run every phase; return what the server learned."""
        self._connect()
        restored = self.checkpoint.load(self.strategy) if self.resume else None
        if restored is None:
            self._setup()
            if "local" in self.cfg.report.baselines:
                self._local_baselines()
            start = 1
        else:
            self.summary.history = restored["history"]
            self.summary.local_baselines = restored.get("local_baselines", {})
            self.summary.local_combined = restored.get("local_combined", {})
            self.summary.resumed_from = self.strategy.round
            start = self.strategy.round + 1
            self.on_event("resumed", {"round": self.strategy.round})
        rounds = self.cfg.federation.rounds
        if self.accountant is not None and restored is not None and restored.get("accountant"):
            self.accountant.load_state_dict(restored["accountant"])
        self._check_budget(rounds - start + 1)
        self.on_event("rounds", {"start": start, "total": rounds})
        for server_round in range(start, rounds + 1):
            if self.strategy.done:
                self.on_event("converged", {"round": server_round - 1})
                break
            if self._budget_spent():
                break
            self._round(server_round)
        self._final()
        return self.summary

    def _check_budget(self, rounds_left: int) -> None:
        """Refuse to start when not even one round fits the DP budget; say how many do."""
        dp = self.cfg.security.dp
        if self.accountant is None or dp is None or dp.target_epsilon is None or rounds_left <= 0:
            return
        from ..privacy.dp import check_budget, effective_noise_multiplier

        n = len(self._sample())
        worst = effective_noise_multiplier(dp.noise_multiplier, n, min(n, self.cfg.federation.min_clients))
        fit = check_budget(self.accountant, dp.target_epsilon, rounds_left, noise_multiplier=worst)
        if fit < rounds_left:
            log.warning("the privacy budget (target epsilon %.3g) allows %d more round(s) of %d; training "
                        "stops after them", dp.target_epsilon, fit, rounds_left)

    def _budget_spent(self) -> bool:
        dp = self.cfg.security.dp
        if self.accountant is None or dp is None or dp.target_epsilon is None:
            return False
        from ..privacy.dp import effective_noise_multiplier

        n = len(self._sample())
        worst = effective_noise_multiplier(dp.noise_multiplier, n, min(n, self.cfg.federation.min_clients))
        if self.accountant.would_exceed(dp.target_epsilon, noise_multiplier=worst):
            self.on_event("budget", {"epsilon": self.accountant.epsilon(), "target": dp.target_epsilon})
            log.warning("stopping before the privacy budget is exceeded: epsilon %.3f, target %.3f",
                        self.accountant.epsilon(), dp.target_epsilon)
            self.summary.stopped_by_budget = True
            return True
        return False

    def _connect(self) -> None:
        self.connect()
        self.summary.institutions = self.institutions
        self.summary.features = self.job["data"]["features"]

    def _setup(self) -> None:
        ids = list(self.nodes)
        levels = merge_levels([doc["levels"] for doc in self.ask(P.LEVELS, {n: {} for n in ids}, "levels").values()])
        for column, found in levels.items():
            check_levels(column, len(found), None, "the federation")   # the union: no institution sees it alone
        docs: dict[int, dict[str, Any]] = {n: {"levels": levels} for n in ids}
        if self.masking is not None:
            docs = with_mask(docs, self.masking.open(ids, "moments"))
        moment_replies = self.ask(P.MOMENTS, docs, "moments", want_content=True)
        payloads = [read_payload(c.array_records["payload"]) for _, c in moment_replies.values()]
        if self.masking is not None:
            for p in payloads:
                check_masked(p, self.masking.tag)
            survivors = [self.nodes[n].name for n in moment_replies]
            (total,) = self.masking.close(survivors, [masked_sum(self.public, payloads)], "moments")
        else:
            total = self.sum_payloads(payloads)
        self.strategy.setup_payload = total
        setup_docs = {n: {"levels": levels, "send_params": not self.strategy.encrypted} for n in moment_replies}
        replies = self.ask(P.SETUP, setup_docs, "setup", want_content=True,
                            records={P.REC_SETUP: payload_record(total)})
        votes: dict[tuple[str, str], list[int]] = {}
        for nid, (doc, _) in replies.items():
            votes.setdefault((doc["preprocessor"], doc["state"]), []).append(nid)
        (prep_digest, state_digest), agree = max(votes.items(), key=lambda kv: len(kv[1]))
        for nid in set(replies) - set(agree):
            log.warning("%s fitted different preprocessing; it is left out", self.nodes[nid].name)
            self.nodes.pop(nid)
        self.strategy.setup_doc = {"levels": levels, "preprocessor": prep_digest}
        doc, content = replies[agree[0]]
        self.strategy.shapes = [tuple(s) for s in doc["shapes"]]
        self.strategy.update_shapes = [tuple(s) for s in doc["update_shapes"]]
        self.strategy.feature_names = list(doc.get("feature_names", []))
        self.strategy.reference_levels = {k: sorted(v)[0] for k, v in levels.items() if v}
        for name, declared in (self.cfg.data.levels or {}).items():
            if declared:
                self.strategy.reference_levels[name] = str(declared[0])
        if not self.strategy.encrypted:
            params = [np.asarray(a) for a in read_payload(content.array_records["payload"])]
            state = ModelState(params, {}, 0)
            if state.digest() != state_digest:
                raise FederationError("the initial model sent by an institution does not match its digest")
            self.strategy.state = state
        else:
            self.strategy.digests[0] = state_digest
        for nid in agree:
            self.nodes[nid].ready, self.nodes[nid].synced_round = True, 0
        self.checkpoint.save(self.strategy, self.summary, self.accountant)

    def _local_baselines(self) -> None:
        epochs = self.cfg.federation.rounds * self.cfg.federation.local_epochs
        replies = self.ask(P.LOCAL_BASELINE, {n: {"epochs": epochs} for n in self.nodes}, "local baselines",
                            want_content=True, required=0)
        stats = []
        for nid, (doc, content) in replies.items():
            self.summary.local_baselines[self.nodes[nid].name] = doc["metrics"]
            stats.append(read_stats(content.array_records["stats"]))
        if stats:
            self.summary.local_combined = self._combine_stats(stats)

    def _round(self, server_round: int) -> None:
        t0 = time.perf_counter()
        self.on_event("round_start", {"round": server_round})
        sampled = self._sample()
        extra: dict[int, dict[str, Any]] | None = None
        mask_bytes = (0, 0)
        if self.masking is not None:
            before = (self.masking.bytes_up, self.masking.bytes_down)
            self.strategy.round = server_round  # the masking phases' messages and ledger entries name this round
            extra = self.masking.open(sampled, f"round {server_round}")
            sampled = [n for n in sampled if n in extra]  # the others cannot send a masked update
            self.strategy.mask_tag = self.masking.tag
        msgs = list(self.strategy.configure_train(server_round, None, ConfigRecord({"nodes": sampled}),  # type: ignore[arg-type]
                                                  self.grid))
        if extra is not None:
            for m in msgs:
                add_to_message(m, extra[m.metadata.dst_node_id])
        down = sum(content_bytes(m.content) for m in msgs)
        replies = self.exchange(msgs, "train")
        up = sum(content_bytes(m.content) for m in replies if not m.has_error())
        update_bytes = [sum(len(a.data) for a in m.content.array_records["payload"].values())
                        for m in replies if not m.has_error() and "payload" in m.content.array_records]
        try:
            self.strategy.aggregate_train(server_round, replies)
        except RoundFailed as exc:
            raise FederationError(str(exc)) from None
        outcome = self.strategy.last_outcome
        if self.masking is not None:
            masked_total = self.strategy.aggregates.pop(server_round, None)
            if masked_total is not None:
                (self.strategy.aggregates[server_round],) = self.masking.close(
                    outcome.accepted, [masked_total], f"round {server_round}")
            mask_bytes = (self.masking.bytes_up - before[0], self.masking.bytes_down - before[1])
            up, down = up + mask_bytes[0], down + mask_bytes[1]
        every = self.cfg.federation.eval_every
        metrics: dict[str, Any] = {}
        per_inst: dict[str, Any] = {}
        self.strategy.eval_dropped = {}
        if (every and server_round % every == 0) or server_round == self.cfg.federation.rounds:
            e_msgs = list(self.strategy.configure_evaluate(server_round, None,  # type: ignore[arg-type]
                                                           ConfigRecord({"nodes": list(self.nodes)}), self.grid))
            down += sum(content_bytes(m.content) for m in e_msgs)
            e_replies = self.exchange(e_msgs, "evaluate")
            up += sum(content_bytes(m.content) for m in e_replies if not m.has_error())
            self.strategy.aggregate_evaluate(server_round, e_replies)
            metrics, per_inst = self._eval_metrics()
        privacy: dict[str, Any] = {}
        if self.accountant is not None:
            from ..privacy.dp import effective_noise_multiplier

            dp = self.cfg.security.dp
            assert dp is not None
            self.accountant.step(noise_multiplier=effective_noise_multiplier(dp.noise_multiplier, len(sampled),
                                                                             len(outcome.accepted)))
            privacy["epsilon"] = self.accountant.epsilon()
        sample_eps = {self.nodes[self.sender(m)].name: float(m.content.metric_records["metrics"]["dp_epsilon"])
                      for m in replies if not m.has_error() and "metrics" in m.content.metric_records
                      and "dp_epsilon" in m.content.metric_records["metrics"] and self.sender(m) in self.nodes}
        if sample_eps:
            privacy["per_institution_epsilon"] = sample_eps
        n_values = sum(int(np.prod(s)) for s in self.strategy.shapes)
        row = {
            "round": server_round,
            "metrics": metrics,
            "per_institution": per_inst,
            "train_loss": outcome.metrics.get("train_loss"),
            "clients": outcome.accepted,
            "dropped": {**outcome.dropped, **self.strategy.eval_dropped},
            "bytes_up": int(up),
            "bytes_down": int(down),
            "update_bytes_per_client": float(np.mean(update_bytes)) if update_bytes else 0.0,
            "update_bytes_per_param": float(np.mean(update_bytes)) / max(n_values, 1) if update_bytes else 0.0,
            "seconds": time.perf_counter() - t0,
        }
        if self.masking is not None:
            row["masking_bytes"] = {"up": int(mask_bytes[0]), "down": int(mask_bytes[1])}
        if privacy:
            row["privacy"] = privacy
        self.summary.history.append(row)
        self.checkpoint.save(self.strategy, self.summary, self.accountant)
        self.on_event("round_end", row)

    def _final(self) -> None:
        rounds = self.strategy.round
        msgs = list(self.strategy.configure_evaluate(rounds, None,  # type: ignore[arg-type]
                                                     ConfigRecord({"nodes": list(self.nodes), "final": True}),
                                                     self.grid))
        replies = self.exchange(msgs, "final")
        self.strategy.aggregate_evaluate(rounds, replies)
        metrics, per_inst = self._eval_metrics()
        self.summary.metrics = metrics
        self.summary.per_institution = per_inst
        self.summary.model_paths = {name: str(doc.get("model_path", ""))
                                    for name, (doc, _) in self.strategy.eval_replies.items()}
        if not self.strategy.encrypted and self.strategy.state is not None:
            self.summary.final_params = self.strategy.state.params
        if self.accountant is not None:
            self.summary.privacy = self.accountant.report()
        reports = [doc["model_report"] for doc, _ in self.strategy.eval_replies.values() if "model_report" in doc]
        self.summary.model_report = self.strategy.report or (reports[0] if reports else None)
        self.on_event("final", {"metrics": metrics})

    # ------------------------------------------------------------------ helpers

    def _sample(self) -> list[int]:
        ids = sorted(self.nodes)
        k = max(self.cfg.federation.min_clients, int(round(self.cfg.federation.fraction * len(ids))))
        k = min(k, len(ids))
        return sorted(self._rng.sample(ids, k)) if k < len(ids) else ids

    def _eval_metrics(self) -> tuple[dict[str, Any], dict[str, Any]]:
        per_inst = {name: doc["metrics"] for name, (doc, _) in self.strategy.eval_replies.items()}
        stats = [read_stats(rec) for _, rec in self.strategy.eval_replies.values() if rec is not None]
        return (self._combine_stats(stats) if stats else {}), per_inst

    def _combine_stats(self, stats: Sequence[Mapping[str, np.ndarray]]) -> dict[str, Any]:
        from ..tasks import get_task

        return get_task(self.task_name).combined_metrics(stats)


def _client_accountant(cfg: Config) -> Any:
    """Opacus' RDP accountant for client-level DP (sample rate 1: valid for any sampling of institutions)."""
    dp = cfg.security.dp
    if dp is None or dp.level != "client":
        return None
    from ..privacy.dp import ClientDPAccountant

    return ClientDPAccountant.from_config(dp, sample_rate=1.0)


class Checkpoint:
    """The server's state after the last completed round, written atomically.

    Holds the round, the history, the setup (levels, summed statistics) and, in plaintext, the model
    and optimizer state; under encryption, every round's aggregate ciphertext and state digest. It
    holds nothing that decrypts.
    """

    def __init__(self, folder: Path, cfg: Config) -> None:
        self.folder = Path(folder)
        self.config = cfg.to_dict()
        self.config_digest = config_digest(cfg)
        self._accepted = {self.config_digest, legacy_config_digest(cfg)}

    def save(self, strategy: FedxStrategy, summary: FederationSummary, accountant: Any = None) -> None:
        """Write the checkpoint (a new file set, then an atomic rename of its index)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        blobs = self.folder / "blobs"
        blobs.mkdir(exist_ok=True)
        for r, blob in strategy.aggregates.items():
            path = blobs / f"agg_{r:06d}.bin"
            if not path.exists():
                write_atomic(path, blob)
        setup = strategy.setup_payload
        if isinstance(setup, bytes):
            write_atomic(blobs / "setup.bin", setup)
            setup_ref: Any = "blobs/setup.bin"
        else:
            setup_ref = [np.asarray(a).tolist() for a in (setup or [])]
        arrays: dict[str, np.ndarray] = {}
        if strategy.state is not None:
            arrays = {f"p/{i:04d}": p for i, p in enumerate(strategy.state.params)}
            arrays.update({f"o/{k}/{i:04d}": a for k, v in strategy.state.opt.items() for i, a in enumerate(v)})
            with atomic_file(self.folder / f"state_{strategy.round:06d}.npz") as fh:
                np.savez(fh, **arrays)
        index = {
            "config_digest": self.config_digest,
            "config": self.config,
            "round": strategy.round,
            "setup": strategy.setup_doc,
            "setup_payload": setup_ref,
            "shapes": [list(s) for s in strategy.shapes],
            "update_shapes": [list(s) for s in strategy.update_shapes],
            "feature_names": strategy.feature_names,
            "reference_levels": strategy.reference_levels,
            "report": strategy.report,
            "done": strategy.done,
            "digests": {str(k): v for k, v in strategy.digests.items()},
            "aggregates": sorted(strategy.aggregates),
            "state_file": f"state_{strategy.round:06d}.npz" if strategy.state is not None else None,
            "history": summary.history,
            "local_baselines": summary.local_baselines,
            "local_combined": summary.local_combined,
            "accountant": accountant.state_dict() if accountant is not None else None,
        }
        write_atomic(self.folder / "index.json", json.dumps(index, default=json_default).encode())
        for old in self.folder.glob("state_*.npz"):
            if old.name != index["state_file"]:
                old.unlink(missing_ok=True)

    def load(self, strategy: FedxStrategy) -> dict[str, Any] | None:
        """Restore ``strategy`` from the checkpoint; None when there is none for this config."""
        path = self.folder / "index.json"
        if not path.exists():
            return None
        index = json.loads(path.read_text())
        if index.get("config_digest") not in self._accepted:
            log.warning("checkpoint %s belongs to another config; starting afresh", self.folder)
            return None
        if index["round"] < 0 or not index.get("setup"):
            return None
        strategy.round = int(index["round"])
        strategy.setup_doc = index["setup"]
        ref = index["setup_payload"]
        strategy.setup_payload = (self.folder / ref).read_bytes() if isinstance(ref, str) else \
            [np.asarray(a, dtype=np.float64) for a in ref]
        strategy.shapes = [tuple(s) for s in index["shapes"]]
        strategy.update_shapes = [tuple(s) for s in index["update_shapes"]]
        strategy.feature_names = list(index["feature_names"])
        strategy.reference_levels = dict(index["reference_levels"])
        strategy.report = index["report"]
        strategy.done = bool(index["done"])
        strategy.digests = {int(k): v for k, v in index["digests"].items()}
        strategy.aggregates = {int(r): (self.folder / "blobs" / f"agg_{int(r):06d}.bin").read_bytes()
                               for r in index["aggregates"]}
        if index.get("state_file"):
            with np.load(self.folder / index["state_file"]) as z:
                params = [z[k] for k in sorted(k for k in z.files if k.startswith("p/"))]
                opt: dict[str, list[np.ndarray]] = {}
                for k in sorted(k for k in z.files if k.startswith("o/")):
                    opt.setdefault(k.split("/")[1], []).append(z[k])
            strategy.state = ModelState(params, opt, strategy.round)
        return index
