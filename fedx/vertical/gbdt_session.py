"""One party's side of a deployed vertical SecureBoost run (``model.kind: gbdt``), message by message.

The same plumbing as the deployed vertical GLM (:class:`~fedx.vertical.session.PartySession`: the PSI, then a
sealed channel between every pair of parties, a ledger entry for every message sent), with the SecureBoost
protocol of :mod:`fedx.vertical.secureboost` in the channel:

1. After the PSI, each feature party bins its columns over its shared training rows (``data.test_fraction``
   held out by the keyed hash, as in simulation) and sends the label party ``sb_describe`` (its column names
   and the number of bins of each).
2. The label party drives the fit (:func:`~fedx.vertical.secureboost.boost`, the same code as ``fedx run``):
   the feature parties answer its histogram requests (``sb_nodes``) and partition requests (``sb_split``)
   (:func:`~fedx.vertical.secureboost.answer`). Each keeps the thresholds of its own splits.
3. With held-out rows, the label party scores them by federated prediction
   (:func:`~fedx.vertical.secureboost.route`): each party routes them through its own splits (``sb_route``).
4. The label party writes ``model.json`` (the tree structures, leaf values and its own thresholds),
   ``result.json`` and ``predictions.csv`` (the score of each held-out row, by id) to its ``out_dir``, then tells the feature parties the run is done (``sb_done``); each writes
   its own ``model.json`` (its thresholds only). ``fedx.load_model`` of the parts is the joint predictor.

The relay sees only the routing headers, sizes and timing of these messages.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..atomic import write_atomic
from ..config import Config
from ..errors import PSIError
from ..report import SCHEMA_VERSION, json_ready
from ..trees.params import gbdt_params
from .psi import select_test_rows
from .run_gbdt import _matrix, _scores, lift_table, party_columns
from .secureboost import (
    Driver,
    FitStats,
    SecureBoostFeatureParty,
    SecureBoostLabelParty,
    answer,
    boost,
    route,
)
from .secureboost_model import FORMAT, VERSION, SecureBoostModel
from .session import Outgoing, PartySession
from .tables import PartyTable

__all__ = ["GBDTSession"]

#: What a feature party's side of the fit is asked (the label party's requests).
FEATURE_KINDS = ("sb_public_key", "sb_gradients", "sb_nodes", "sb_split", "sb_route")


class GBDTSession(PartySession):
    """One party of one deployed vertical SecureBoost run (the module docstring says what it does)."""

    def __init__(self, cfg: Config, table: PartyTable, run_id: str, out_dir: str | Path, *,
                 say: Callable[[str], None] | None = None) -> None:
        super().__init__(cfg, table, run_id, out_dir, say=say)
        self.params = gbdt_params(cfg)
        self._described: dict[str, bytes] = {}
        self._sent_describe = False
        self._party: SecureBoostFeatureParty | None = None
        self._held: np.ndarray | None = None
        self._sb: SecureBoostLabelParty | None = None
        self._driver: Driver | None = None
        self._then: Callable[[Any], list[Outgoing]] | None = None
        self._pending: dict[str, str] = {}
        self._wave = 0  # the label party's requests, numbered: a reply names the one it answers
        self._replies: dict[str, bytes] = {}
        self._stats = FitStats()
        self._rows: dict[str, np.ndarray] = {}
        self.model: SecureBoostModel | None = None
        self._fit_seconds = 0.0

    # ------------------------------------------------------------------ the channel

    def _on_glm(self, sender: str, kind: str, message: bytes) -> list[Outgoing]:
        ch = self._channels.get(sender)
        if ch is None:
            raise PSIError(f"party {self.name!r} got a message from {sender!r}, which is no party of this run")
        if kind == "hello":
            ch.accept_hello(message)
            return self._maybe_describe()
        kind, meta, payload = ch.open(message)
        self._stats.count(kind, payload)
        if self.is_label:
            if sender not in self.features:
                raise PSIError(f"party {self.name!r}: a {kind!r} message from {sender!r}, which is no feature party")
            if kind == "sb_describe":
                if sender in self._described:
                    raise PSIError(f"party {self.name!r}: party {sender!r} described its columns twice")
                self._described[sender] = payload
                return self._maybe_fit()
            return self._reply(sender, kind, meta, payload)
        if sender != self.label_name:
            raise PSIError(f"party {self.name!r}: a {kind!r} message from {sender!r}; only the label party "
                           f"{self.label_name!r} asks")
        if kind == "sb_done":
            self._write_part()
            self._stage, self.done = "done", True
            self._say(f"{self.name}: the label party {sender} reports the run done; wrote {self.out / 'model.json'}")
            return []
        if kind not in FEATURE_KINDS or self._party is None:
            raise PSIError(f"party {self.name!r}: an unexpected {kind!r} message from {sender!r} (stage "
                           f"{self._stage})")
        if kind == "sb_route":
            self._stage = "test"
        got = answer(self._party, kind, payload, self._held)
        if got is None:
            return []
        return [self._seal(self.label_name, got[0], {"stage": self._stage, "wave": meta.get("wave")}, got[1],
                           int(meta.get("round", 0)))]

    # ------------------------------------------------------------------ after the PSI

    def _after_psi(self) -> list[Outgoing]:
        al = self.alignment
        assert al is not None
        if al.rows is None:
            raise PSIError(f"party {self.name!r}: vertical gradient-boosted trees need every party to know its "
                           f"shared rows (security.psi_reveal: all)")
        own = select_test_rows(self.table.ids, al.rows, self.psi.secret, self.cfg.data.test_fraction)
        self._test = own
        self._rows = {"train": al.rows[~own], "test": al.rows[own]}
        self._stage = "fit"
        if self.is_label:
            return self._maybe_fit()
        X, names = _matrix(self.cfg, self.table, self._rows["train"])
        self._party = SecureBoostFeatureParty(self.name, X, names, self.params.max_bins)
        self._held = _matrix(self.cfg, self.table, self._rows["test"])[0]
        return self._maybe_describe()

    def _maybe_describe(self) -> list[Outgoing]:
        if self.is_label or self._sent_describe or self._party is None or not self._channels[self.label_name].ready:
            return []
        self._sent_describe = True
        return [self._seal(self.label_name, "sb_describe", {"stage": "fit"}, self._party.describe(), 0)]

    # ------------------------------------------------------------------ the label party drives

    def _maybe_fit(self) -> list[Outgoing]:
        if not self.is_label or self._sb is not None or self.alignment is None \
                or set(self._described) != set(self.features):
            return []
        cfg, table, rows = self.cfg, self.table, self._rows["train"]
        X, names = _matrix(cfg, table, rows)
        exposure = table.column("exposure", rows)
        self._sb = SecureBoostLabelParty(self.name, X, names, table.column("target", rows), self.params,
                                         encryption=cfg.security.encryption,
                                         offset=None if exposure is None else np.log(exposure))
        self._say(f"{self.name}: secureboost on {len(rows):,} shared rows, {self.params.trees} trees")
        self._t_fit = time.perf_counter()
        return self._drive(boost(self._sb, {f: self._described[f] for f in self.features}, stats=self._stats,
                                 progress=self._progress), self._fitted)

    def _progress(self, tree: int, level: int) -> None:
        every = max(1, self.params.trees // 10)
        if level == 1 and ((tree + 1) % every == 0 or tree + 1 == self.params.trees):
            self._say(f"{self.name}: tree {tree + 1}/{self.params.trees}, {self._stats.total_bytes / 1e6:.1f} MB")

    def _drive(self, driver: Driver, then: Callable[[Any], list[Outgoing]]) -> list[Outgoing]:
        self._driver, self._then = driver, then
        return self._advance(None)

    def _advance(self, replies: Mapping[str, bytes] | None) -> list[Outgoing]:
        """Run the driver until it waits for replies (or ends), sealing what it sends."""
        assert self._driver is not None and self._then is not None
        out: list[Outgoing] = []
        try:
            step = next(self._driver) if replies is None else self._driver.send(replies)
            while True:
                rnd = len(self._stats.levels_per_tree)
                self._wave += 1
                for to, kind, payload in step.out:
                    self._stats.count(kind, payload)
                    out.append(self._seal(to, kind, {"stage": self._stage, "wave": self._wave}, payload, rnd))
                if step.expect:
                    self._pending, self._replies = step.expect, {}
                    return out
                step = self._driver.send({})
        except StopIteration as stop:
            self._driver = None
            return out + self._then(stop.value)

    def _reply(self, sender: str, kind: str, meta: Mapping[str, Any], payload: bytes) -> list[Outgoing]:
        if self._pending.get(sender) != kind:
            raise PSIError(f"party {self.name!r}: an unexpected {kind!r} message from {sender!r} (stage "
                           f"{self._stage}; awaited {self._pending.get(sender) or 'nothing'})")
        if meta.get("wave") != self._wave:  # a reply to an earlier request (a stale or repeated one) is refused
            raise PSIError(f"party {self.name!r}: an unexpected {kind!r} message from {sender!r}: it answers "
                           f"request {meta.get('wave')!r}, and the request awaiting a reply is {self._wave}")
        del self._pending[sender]
        self._replies[sender] = payload
        return [] if self._pending else self._advance(self._replies)

    def _fitted(self, model: SecureBoostModel) -> list[Outgoing]:
        self.model = model
        self._fit_seconds = time.perf_counter() - self._t_fit
        self._say(f"{self.name}: {len(model.trees)} trees in {self._fit_seconds:.1f} s")
        write_atomic(self.out / "model.json", json.dumps(model.label_part(), allow_nan=False))
        if not len(self._rows["test"]):
            return self._finish_gbdt(np.zeros((0, len(model.trees)), dtype=np.int64))
        self._stage = "test"
        held = _matrix(self.cfg, self.table, self._rows["test"])[0]
        return self._drive(route(model, held), self._finish_gbdt)

    def _finish_gbdt(self, leaves: np.ndarray) -> list[Outgoing]:
        model = self.model
        assert model is not None
        rows = self._rows["test"]
        exposure = self.table.column("exposure", rows)
        margin = np.full(leaves.shape[0], model.base_margin) + (0.0 if exposure is None else np.log(exposure))
        for t, tree in enumerate(model.trees):
            margin = margin + tree.value[leaves[:, t]]
        score = model.objective.transform(margin)
        doc = self._gbdt_document(model, self.table.column("target", rows), score)
        if len(rows):
            ids = [self.cfg.data.id] if isinstance(self.cfg.data.id, str) else list(self.cfg.data.id or [])
            frame = self.table.df.iloc[rows][ids].reset_index(drop=True).assign(score=score)
            write_atomic(self.out / "predictions.csv", frame.to_csv(index=False, float_format="%.17g"))
        write_atomic(self.out / "result.json", json.dumps(json_ready(doc), indent=2, allow_nan=False))
        self._say(f"{self.name}: wrote {self.out / 'result.json'} and {self.out / 'model.json'}")
        self._stage, self.done = "done", True
        return [self._seal(f, "sb_done", {"status": "ok"}, b"", len(model.trees)) for f in self.features]

    def _write_part(self) -> None:
        """A feature party's part of the model: the thresholds of its own splits, nothing else."""
        assert self._party is not None
        part = {"format": FORMAT, "version": VERSION, "role": "feature", "party": self.name,
                "splits": self._party.splits.to_dict()}
        write_atomic(self.out / "model.json", json.dumps(part, allow_nan=False))

    def _gbdt_document(self, model: SecureBoostModel, y: np.ndarray, score: np.ndarray) -> dict[str, Any]:
        """result.json at the label party: what it knows (no feature party's table or threshold)."""
        cfg, al = self.cfg, self.alignment
        assert al is not None
        binary = self.params.objective == "binary:logistic"
        metrics = {"test": _scores(y, score, binary) if len(y) else None, "fit_rows": len(self._rows["train"]),
                   "test_rows": len(y)}
        parties: dict[str, Any] = {p: {"role": "feature", "rows": al.peer_sizes.get(p),
                                       "model_part": f"model.json in the out_dir of {p}'s node"} for p in self.features}
        parties[self.name] = {"role": "label", "rows": len(self.table.df), "features": party_columns(cfg, self.table),
                              "model_part": str(self.out / "model.json"),
                              "ledger": str(self.out / "ledger.jsonl") if self.ledger is not None else None}
        stats = {("phase_seconds" if k == "seconds" else k): v for k, v in self._stats.to_dict().items()}
        return {
            "schema_version": SCHEMA_VERSION, "fedx_version": __version__,
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "partition": "vertical",
            "deployment": {"run_id": self.run_id, "party": self.name}, "config": cfg.to_dict(), "metrics": metrics,
            "model": {"task": cfg.task, "kind": "gbdt", "partition": "vertical", "protocol": "secureboost",
                      "label_party": self.name, "params": self.params.to_dict(), "trees": len(model.trees),
                      "seconds": self._fit_seconds, "feature_importance": model.feature_importances("gain"),
                      "importance_by_party": model.importance_by_party("gain"),
                      "splits_by_party": model.importance_by_party("split"), **stats},
            "lift": {"joint": lift_table(y, score) if binary and len(y) else None},
            "predictions": str(self.out / "predictions.csv") if len(y) else None,
            "psi": {"shared": al.n_shared, "fit_rows": metrics["fit_rows"], "test_rows": metrics["test_rows"],
                    "seconds": self._psi_seconds, **self._psi_bytes, "policy": self.policy.to_dict()},
            "parties": parties, "history": [],
            "privacy": {"encryption": cfg.security.encryption, "model": "semi-honest, parties that do not collude",
                        "psi": self.policy.to_dict(), "min_intersection": cfg.security.min_intersection,
                        "per_row_values_sent_in_plaintext": cfg.security.encryption == "none",
                        "transport": "deployment: every message after its hello sealed end to end between two "
                                     "parties (ChaCha20-Poly1305); the relay reads only routing headers"},
        }
