"""``fedx run`` of a horizontal ``model.kind: gbdt`` config in simulation, from config to result files.

The institutions run the protocol of :mod:`fedx.trees.horizontal` in one process, each with only its own
rows; every vector that leaves an institution is encrypted under ``security.encryption`` (or sent in
plaintext with ``none``), added by the relay that plays the server (public context only), and decrypted by
the institutions:

1. levels of undeclared categorical features (names only), then the summed moments of the features: the
   shared preprocessing, as for every model (missing numeric values stay missing for the trees);
2. the federated quantile sketch (summed moments, then summed bracket counts): the bin edges;
3. the summed target and exposure totals: the base score;
4. each tree, each level: the summed g/h histograms of the level's open nodes, in one message per
   institution (one message round per level); every institution applies the same splits to its own rows.

Every message is appended to its sender's audit ledger (``institutions/NAME/ledger.jsonl``) and the relay
keeps receipts (``receipts.jsonl``), so ``fedx audit verify`` checks them as for any run. After every tree
the server's checkpoint (``checkpoint/index.json``: the trees done and the history, no model) and each
institution's own copy of the trees so far (``institutions/NAME/trees.jsonl``) are written, so
``--resume`` continues after the last finished tree (also with more ``model.trees``). Each institution saves
the final model (``institutions/NAME/model.json``, read by :func:`fedx.load_model`) and scores it on its own
test split; result.json has the same sections as for the other models.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import run_keys
from ..analytics import moments_plan
from ..atomic import json_default, write_atomic
from ..baselines import fit_preprocessor
from ..config import Config
from ..data.checks import check_levels
from ..data.local import local_split, prepare_table
from ..data.preprocess import Preprocessor, merge_levels, with_levels
from ..data.schema import column_kinds, merge_column_kinds
from ..data.spec import non_feature_columns, schema_for
from ..errors import FederationError
from ..privacy.audit import AuditLedger
from ..privacy.policy import Policy
from ..report import RunResult
from ..run_folder import RunFolder, config_digest
from ..summary import FederationSummary
from ..tasks import TabularData, get_task
from .binning import BinEdges
from .horizontal import FitReport, HorizontalParty, federated_edges, fit_horizontal
from .model import GBDTModel, Tree
from .params import GBDTParams, gbdt_params
from .saved import SavedGBDT, tree_matrix
from .summation import EncryptedSum, PlainSum

__all__ = ["gbdt_params", "run_gbdt"]


class _Site:
    """One institution's rows: its train/test split, and (after setup) its design matrices."""

    def __init__(self, name: str, df: pd.DataFrame, cfg: Config, task: Any) -> None:
        self.name = name
        self.train, self.test = local_split(df, cfg, name, task)
        self.kinds = column_kinds(prepare_table(df, cfg), non_feature_columns(cfg))

    def design(self, cfg: Config, prep: Preprocessor, df: pd.DataFrame) -> tuple[np.ndarray, TabularData]:
        """The trees' matrix (NaN kept) and the targets, offsets and weights of ``df``."""
        return tree_matrix(prep, df), TabularData.from_frame(cfg, prep, df)


class _Wire:
    """The relay between the institutions: sums their vectors (encrypted or not) and records every message."""

    def __init__(self, names: Sequence[str], keys: Any, quantum_bits: int, audit: _Audit | None) -> None:
        self.names = list(names)
        self.audit = audit
        self.round = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.messages = 0
        self.combine = (EncryptedSum(keys, quantum_bits, observe=self._observe) if keys is not None
                        else PlainSum(observe=self._observe))

    def __call__(self, vectors: Sequence[np.ndarray], exact: bool = True, what: str = "sum") -> np.ndarray:
        return self.combine(vectors, exact=exact, what=what)

    def _observe(self, what: str, blobs: Sequence[bytes], total: bytes) -> None:
        if what == "gbdt-level-1":   # every tree starts with one root histogram: its messages carry its number
            self.round += 1
        if len(blobs) != len(self.names):
            raise FederationError(f"{what}: {len(blobs)} messages for {len(self.names)} institutions")
        self.bytes_up += sum(len(b) for b in blobs)
        self.bytes_down += len(total) * len(blobs)
        self.messages += len(blobs)
        if self.audit is not None:
            for name, blob in zip(self.names, blobs):
                self.audit.send(name, self.round, what, blob)


class _Audit:
    """Each institution's ledger of what it sends, and the relay's receipts anchored to them."""

    def __init__(self, out: Path, names: Sequence[str], encrypted: bool) -> None:
        self.ledgers = {n: AuditLedger(out / "institutions" / _safe(n) / "ledger.jsonl") for n in names}
        self.receipts = AuditLedger(out / "receipts.jsonl")
        self.encrypted = encrypted

    def send(self, name: str, rnd: int, kind: str, payload: bytes) -> None:
        ledger = self.ledgers[name]
        head = ledger.head
        ledger.append(round=rnd, kind=kind, payload=payload, checks={"status": "ok", "encrypted": self.encrypted})
        self.receipts.append(round=rnd, kind=kind, payload=payload, checks={"institution": name}, anchor=head)


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "institution"


# ---------------------------------------------------------------------- the run

def run_gbdt(cfg: Config, folder: RunFolder, tables: Mapping[str, pd.DataFrame], given_keys: tuple[Any, Path] | None,
             *, progress: bool = True) -> RunResult:
    """Run a horizontal gbdt config (the module's docstring says how); called by :func:`fedx.run`.

    Parameters
    ----------
    cfg : Config
        A config with ``model.kind: gbdt`` and horizontal data.
    folder : RunFolder
        The planned run folder (``resume`` when continuing a checkpoint).
    tables : mapping of str to DataFrame
        Each institution's checked table.
    given_keys : (public context, folder) or None
        Keys from ``security.keys``; otherwise generated into the run folder (or those of the run resumed).
    progress : bool
        Show progress (trees and levels) and print the final table.
    """
    from .. import he
    from ..progress import RunProgress
    from ..report import print_run_summary

    task = get_task(cfg.task)  # type: ignore[arg-type]
    params = gbdt_params(cfg)
    names = list(tables)
    summary = FederationSummary()
    with folder.writing() as out, RunProgress(task.primary_metric, enabled=progress) as bar:
        public, keys_dir = given_keys if given_keys is not None else \
            run_keys.run_folder_keys(cfg, out, len(tables))
        keys = he.load_keys(keys_dir) if keys_dir is not None else None
        audit = _Audit(out, names, keys is not None) if cfg.security.audit else None
        wire = _Wire(names, keys, params.quantum_bits, audit)
        sites = {n: _Site(n, df, cfg, task) for n, df in tables.items()}
        bar("connected", {"institutions": names})
        summary.institutions = {n: {"n_train": len(s.train), "n_test": len(s.test), "n_rows": len(tables[n])}
                                for n, s in sites.items()}
        run_cfg = _with_features(cfg, sites)
        summary.features = dict(run_cfg.data.features or {})
        bar("phase", {"what": "shared preprocessing from summed moments"})
        prep = _shared_preprocessor(run_cfg, sites, wire)
        data = {n: (s.design(run_cfg, prep, s.train), s.design(run_cfg, prep, s.test)) for n, s in sites.items()}
        parties = {n: HorizontalParty(n, X, d.y, params, offset=d.offset) for n, ((X, d), _) in data.items()}
        feature_names = list(prep.feature_names)
        checkpoint = _Checkpoint(out, cfg, names)
        start = checkpoint.load(params, feature_names) if folder.mode == "resume" else None
        if start is not None:
            summary.history = start["history"]
            summary.local_baselines = start["local_baselines"]
            summary.local_combined = start["local_combined"]
            summary.resumed_from = len(start["model"].trees)
            bar("resumed", {"round": summary.resumed_from, "unit": "tree"})
        elif "local" in cfg.report.baselines:
            bar("phase", {"what": "local baselines (each institution's own GBDT)"})
            summary.local_baselines, summary.local_combined = _local_baselines(run_cfg, task, params, sites)
        scorer = _Scorer(task, {n: test for n, (_, test) in data.items()}, params)
        model_so_far = start["model"] if start is not None else None
        if model_so_far is not None:
            scorer.add(model_so_far.base_margin, model_so_far.trees)
        bar("rounds", {"start": len(model_so_far.trees) + 1 if model_so_far else 1, "total": params.trees,
                       "unit": "tree"})
        clock = {"t": time.perf_counter(), "up": wire.bytes_up, "down": wire.bytes_down}
        report = FitReport()

        def on_level(tree: int, level: int) -> None:
            bar("level", {"tree": tree + 1, "trees": params.trees, "level": level, "depth": params.max_depth})

        def on_tree(model: GBDTModel) -> None:
            t = len(model.trees)
            scorer.add(model.base_margin, model.trees[len(scorer.trees):])
            every = cfg.federation.eval_every
            metrics, per_inst = scorer.metrics() if (every and t % every == 0) or t == params.trees else ({}, {})
            now = time.perf_counter()
            row = {"round": t, "tree": t, "levels": report.levels_per_tree[-1] if report.levels_per_tree else 0,
                   "leaves": int((model.trees[-1].feature < 0).sum()), "metrics": metrics, "per_institution": per_inst,
                   "clients": names, "dropped": {}, "bytes_up": wire.bytes_up - clock["up"],
                   "bytes_down": wire.bytes_down - clock["down"], "seconds": now - clock["t"]}
            clock.update(t=now, up=wire.bytes_up, down=wire.bytes_down)
            summary.history.append(row)
            checkpoint.save(model, summary)
            bar("round_end", row)

        wire.round = len(model_so_far.trees) if model_so_far else 0
        t0 = time.perf_counter()
        model = fit_horizontal(parties, params, feature_names, combine=wire, progress=on_level, report=report,
                               start=model_so_far, on_tree=on_tree)
        seconds = time.perf_counter() - t0
        if model_so_far is not None and len(model.trees) == len(model_so_far.trees):
            checkpoint.save(model, summary)   # nothing left to grow: the checkpoint already holds every tree
        summary.metrics, summary.per_institution = scorer.metrics()
        for n in names:
            path = SavedGBDT(cfg.task, cfg.to_dict()["model"], prep, model, cfg.data.na_values).save(  # type: ignore[arg-type]
                out / "institutions" / _safe(n) / "model.json")
            summary.model_paths[n] = str(path)
        summary.model_report = _model_report(model, report, wire, seconds, params)
        centralized = central_per_inst = None
        if "centralized" in cfg.report.baselines:
            bar("phase", {"what": "centralized baseline (the same engine on the pooled rows, simulation only)"})
            centralized, central_per_inst = _centralized(run_cfg, task, params, sites)
        bar("final", {"metrics": summary.metrics})
        result = summary.write_result(cfg, out, public, centralized=centralized,
                                      centralized_per_institution=central_per_inst, final_path=folder.final_path)
    result.out_dir = folder.target
    if progress:
        print_run_summary(result, task)
    return result


def _with_features(cfg: Config, sites: Mapping[str, _Site]) -> Config:
    """The config with one schema for all (the kinds every institution reports), when it declares none."""
    if cfg.data.features is not None:
        return cfg
    kinds = merge_column_kinds([s.kinds for s in sites.values()])
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, features=kinds))  # type: ignore[arg-type]


def _shared_preprocessor(cfg: Config, sites: Mapping[str, _Site], wire: _Wire) -> Preprocessor:
    """The preprocessing fitted from summed statistics (levels by name, then moments), as the federation fits it."""
    first = next(iter(sites.values()))
    schema = schema_for(cfg, first.train)
    levels = merge_levels([moments_plan(schema).local_levels(s.train, source=s.name) for s in sites.values()])
    for column, found in levels.items():
        check_levels(column, len(found), None, "the federation")
    schema = with_levels(schema, levels)
    plan = moments_plan(schema)
    stage = plan.first_stage()
    vectors = [plan.local_vector(s.train, stage, Policy(), source=s.name) for s in sites.values()]
    total = wire(vectors, exact=False, what="moments")
    return Preprocessor.fit(schema, plan.sufficient_statistics(np.asarray(total, dtype=np.float64), stage),
                            standardize=cfg.standardize, missing_indicators=cfg.data.missing_indicators)


class _Scorer:
    """Each institution's test margins, kept up to date tree by tree, and the metrics they give."""

    def __init__(self, task: Any, tests: Mapping[str, tuple[np.ndarray, TabularData]], params: GBDTParams) -> None:
        from .objectives import get_objective

        self.task = task
        self.tests = dict(tests)
        self.objective = get_objective(params.objective)
        self.trees: list[Tree] = []
        self.margins: dict[str, np.ndarray] | None = None

    def add(self, base_margin: float, trees: Sequence[Tree]) -> None:
        if self.margins is None:
            self.margins = {n: base_margin + (d.offset.astype(np.float64) if d.offset is not None else 0.0)
                            + np.zeros(len(d)) for n, (_, d) in self.tests.items()}
        for tree in trees:
            for n, (X, _) in self.tests.items():
                self.margins[n] = self.margins[n] + tree.predict(X)
            self.trees.append(tree)

    def metrics(self) -> tuple[dict[str, Any], dict[str, Any]]:
        assert self.margins is not None
        per, stats = {}, []
        for n, (_, d) in self.tests.items():
            if len(d) == 0:
                continue
            pred = self.objective.transform(self.margins[n])
            per[n] = self.task.metrics(d, pred)
            stats.append(self.task.eval_stats(d, pred))
        return (self.task.combined_metrics(stats) if stats else {}), per


def _score(task: Any, model: GBDTModel, tests: Mapping[str, tuple[np.ndarray, TabularData]]
           ) -> tuple[dict[str, Any], dict[str, Any]]:
    per, stats = {}, []
    for n, (X, d) in tests.items():
        if len(d) == 0:
            continue
        margin = model.predict_raw(X, offset=d.offset.astype(np.float64) if d.offset is not None else None)
        pred = model.objective.transform(margin)
        per[n] = task.metrics(d, pred)
        stats.append(task.eval_stats(d, pred))
    return (task.combined_metrics(stats) if stats else {}), per


def _fit_alone(cfg: Config, params: GBDTParams, prep: Preprocessor, name: str, train: pd.DataFrame) -> GBDTModel:
    """The engine on one table: its own sketch (the same rule, on its rows alone) and its own trees."""
    X, d = tree_matrix(prep, train), TabularData.from_frame(cfg, prep, train)
    party = HorizontalParty(name, X, d.y, params, offset=d.offset)
    edges, _ = federated_edges({name: party}, params.max_bins)
    return fit_horizontal({name: party}, params, list(prep.feature_names), edges=edges)


def _local_baselines(cfg: Config, task: Any, params: GBDTParams, sites: Mapping[str, _Site]
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each institution's own GBDT (its own preprocessing and bins), scored on its own test split."""
    per, stats = {}, []
    for n, s in sites.items():
        prep = fit_preprocessor(cfg, schema_for(cfg, s.train), s.train)
        model = _fit_alone(cfg, params, prep, n, s.train)
        _, one = _score(task, model, {n: s.design(cfg, prep, s.test)})
        if n in one:
            per[n] = one[n]
            X, d = s.design(cfg, prep, s.test)
            margin = model.predict_raw(X, offset=d.offset.astype(np.float64) if d.offset is not None else None)
            stats.append(task.eval_stats(d, model.objective.transform(margin)))
    return per, (task.combined_metrics(stats) if stats else {})


def _centralized(cfg: Config, task: Any, params: GBDTParams, sites: Mapping[str, _Site]
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The same engine on the pooled training rows (simulation only), scored on each institution's test split."""
    pooled = pd.concat([s.train for s in sites.values()], ignore_index=True)
    prep = fit_preprocessor(cfg, schema_for(cfg, pooled), pooled)
    model = _fit_alone(cfg, params, prep, "pooled", pooled)
    return _score(task, model, {n: s.design(cfg, prep, s.test) for n, s in sites.items()})


def _model_report(model: GBDTModel, report: FitReport, wire: _Wire, seconds: float, params: GBDTParams
                  ) -> dict[str, Any]:
    edges = model.edges
    assert edges is not None
    importance = model.feature_importances("gain")
    top = sorted(importance.items(), key=lambda kv: -kv[1])[:20]
    return {"partition": "horizontal", "objective": params.objective, "trees": len(model.trees),
            "depth": params.max_depth, "base_margin": model.base_margin,
            "bins_per_feature": {"min": int(edges.n_bins.min()) - 1, "max": int(edges.n_bins.max()) - 1},
            "message_rounds": report.rounds, "sketch_stages": report.sketch_stages,
            "bytes_up": wire.bytes_up, "bytes_down": wire.bytes_down, "fit_seconds": seconds,
            "importance_gain": dict(top)}


# ---------------------------------------------------------------------- checkpoint and resume

class _Checkpoint:
    """The server's index (trees done, history; no model) and each institution's own trees so far.

    Each institution appends one line per tree to ``institutions/NAME/trees.jsonl`` (after a header with the
    bin edges and the base margin); the index is replaced atomically after all of them, so a crash between
    the two leaves at most one tree more in a file than the index counts, and loading keeps the index's
    count. Every institution's copy must agree (the same digest), or the resume is refused.
    """

    def __init__(self, out: Path, cfg: Config, names: Sequence[str]) -> None:
        self.index = out / "checkpoint" / "index.json"
        self.cfg = cfg
        self.files = {n: out / "institutions" / _safe(n) / "trees.jsonl" for n in names}
        self._written = 0

    def save(self, model: GBDTModel, summary: FederationSummary) -> None:
        edges = model.edges
        assert edges is not None
        for path in self.files.values():
            path.parent.mkdir(parents=True, exist_ok=True)
            if self._written == 0 or not path.exists():
                head = {"base_margin": model.base_margin, "edges": edges.to_dict()}
                lines = [json.dumps(head)] + [json.dumps(_tree_doc(t)) for t in model.trees]
                write_atomic(path, "\n".join(lines) + "\n")
            else:
                with open(path, "a") as fh:
                    for t in model.trees[self._written:]:
                        fh.write(json.dumps(_tree_doc(t)) + "\n")
        self._written = len(model.trees)
        doc = {"kind": "gbdt", "config_digest": config_digest(self.cfg), "config": self.cfg.to_dict(),
               "round": len(model.trees), "history": summary.history, "local_baselines": summary.local_baselines,
               "local_combined": summary.local_combined}
        self.index.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.index, json.dumps(doc, allow_nan=False, default=json_default))

    def load(self, params: GBDTParams, feature_names: list[str]) -> dict[str, Any] | None:
        if not self.index.exists():
            return None
        doc = json.loads(self.index.read_text())
        done = int(doc.get("round", 0))
        if done == 0:
            return None
        copies = {}
        for n, path in self.files.items():
            if not path.exists():
                raise FederationError(f"{n}: cannot resume: its trees so far ({path}) are missing")
            lines = path.read_text().splitlines()
            if len(lines) < done + 1:
                raise FederationError(f"{n}: cannot resume: {path} holds {len(lines) - 1} trees, the checkpoint "
                                      f"{done}")
            copies[n] = lines[:done + 1]
        digests = {n: hashlib.sha256("\n".join(c).encode()).hexdigest() for n, c in copies.items()}
        if len(set(digests.values())) != 1:
            raise FederationError(f"cannot resume: the institutions' trees so far differ ({sorted(digests)})")
        lines = next(iter(copies.values()))
        head = json.loads(lines[0])
        trees = [Tree.from_dict(json.loads(line)) for line in lines[1:]]
        self._written = done
        model = GBDTModel(trees, head["base_margin"], params, feature_names, BinEdges.from_dict(head["edges"]))
        return {"model": model, "history": doc.get("history", []), "local_baselines": doc.get("local_baselines", {}),
                "local_combined": doc.get("local_combined", {})}


def _tree_doc(tree: Tree) -> dict[str, Any]:
    return tree.to_dict()
