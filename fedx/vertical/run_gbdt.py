"""``fedx run`` of a vertical config with ``model.kind: gbdt``: SecureBoost in simulation, from config to result.

0. The run folder is planned and every party's table is read and checked, as for the vertical GLM
   (:mod:`fedx.vertical.run`). A party without ``features:`` takes every column but the id and the target
   (text columns as categoricals, coded by their sorted levels).
1. Subject identification by ECDH-PSI (the same step as the GLM's); ``data.test_fraction`` of the shared rows
   are held out, chosen by a keyed hash that every party computes alike.
2. SecureBoost (:mod:`fedx.vertical.secureboost`) on the other rows: a progress line per tree. Each party's
   part of the model goes to ``institutions/<party>/model.json`` (the label party's holds the trees, the others
   only their own thresholds); every message is appended to its sender's ledger, and the relay keeps receipts.
   After every tree each party checkpoints its own part (:mod:`fedx.vertical.gbdt_checkpoint`: the label party
   the tree's structure and leaf values and its own thresholds, a partner only its own thresholds, each in
   ``institutions/<party>/checkpoint/``), then the run its index (``checkpoint/index.json``: the trees done,
   the config digest, the history and byte counts).
3. The held-out rows are scored by federated prediction (every party routes them through its own splits).
   With ``report.baselines: [local]`` the label party's own columns are boosted alone on the same rows (the
   lift of the partnership); with ``centralized`` the same engine runs on the joined table (simulation only).
4. result.json: ROC-AUC and KS (binary tasks) or Poisson deviance, the lift table of the held-out rows by score
   decile, feature importance by party and by column, the PSI sizes, bytes per tree, the privacy settings,
   one history entry per tree.
5. ``--resume`` (``resume=True``) continues after the last finished tree, also to a larger ``model.trees``
   (only :data:`~fedx.run_folder.RESUMABLE_KEYS` may change). The PSI runs again under the run secret that the
   label party kept, so it gives the same shared rows, in the same order, and the same hold-out; each party
   checks the intersection, its rows and its bin edges against its checkpoint, and the resume is refused if
   one differs. The parties load their trees and thresholds, the label party rebuilds its margins on the
   training rows by federated routing (:func:`~fedx.vertical.secureboost.route`; no threshold leaves its
   owner), and the fit grows the next tree: tree by tree the model of the uninterrupted run under the same
   secret, in plaintext and under CKKS. The ledgers and receipts are continued, so they verify across it.

``fedx.load_model(<run folder>)`` returns the joint predictor (:class:`~fedx.vertical.secureboost_model.
SecureBoostModel`): give it each party's table of the same rows, in the same order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._version import __version__
from ..atomic import write_atomic
from ..config import Config
from ..data.schema import numbers
from ..report import SCHEMA_VERSION, RunResult, json_ready
from ..run_folder import RunFolder
from ..trees.binning import BinEdges
from ..trees.horizontal import fit_pooled
from ..trees.params import gbdt_params
from .gbdt_checkpoint import VerticalCheckpoint, digest_rows
from .psi import order_digest, select_test_rows
from .secureboost import (
    SETUP_KINDS,
    FitStats,
    SecureBoostFeatureParty,
    SecureBoostLabelParty,
    fit_secureboost,
)
from .tables import PartyTable, describe, load_party_tables

__all__ = ["gbdt_params", "ks_statistic", "lift_table", "party_columns", "run_vertical_gbdt"]


def party_columns(cfg: Config, table: PartyTable) -> dict[str, str]:
    """A party's columns and their kinds: its ``features:``, or every column but the id, target and exposure."""
    if table.spec.features:
        return dict(table.spec.features)
    ids = {cfg.data.id} if isinstance(cfg.data.id, str) else set(cfg.data.id or [])
    used = ids | {c for c in (table.spec.target, table.spec.exposure, table.spec.weight) if c}
    out = {}
    for col in table.df.columns:
        if col in used:
            continue
        numeric = pd.api.types.is_numeric_dtype(table.df[col]) and not pd.api.types.is_bool_dtype(table.df[col])
        out[str(col)] = "numeric" if numeric else "categorical"
    return out


def _matrix(cfg: Config, table: PartyTable, rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The party's columns over ``rows`` as floats (categoricals as the index of their sorted level, NaN missing)."""
    part = table.df.iloc[np.asarray(rows, dtype=np.int64)]
    cols, names = [], []
    for col, kind in party_columns(cfg, table).items():
        if kind == "numeric":
            cols.append(numbers(part[col], table.where, allow_missing=True))
        else:
            levels = table.levels.get(col) or sorted(set(table.df[col].dropna().astype(str)))
            text = part[col].astype(str).where(part[col].notna(), None)
            codes = pd.Categorical(text, categories=levels).codes.astype(np.float64)
            cols.append(np.where(codes < 0, np.nan, codes))
        names.append(col)
    X = np.column_stack(cols) if cols else np.zeros((len(part), 0))
    return X, names


def ks_statistic(y: np.ndarray, score: np.ndarray) -> float:
    """Kolmogorov-Smirnov: the largest gap between the score distributions of the two classes."""
    order = np.argsort(-score, kind="stable")
    ys = y[order]
    pos, neg = max(ys.sum(), 1.0), max((1 - ys).sum(), 1.0)
    return float(np.max(np.abs(np.cumsum(ys) / pos - np.cumsum(1 - ys) / neg)))


def lift_table(y: np.ndarray, score: np.ndarray, groups: int = 10) -> list[dict[str, Any]]:
    """Rows, events, event rate, cumulative capture and lift per score decile (riskiest first)."""
    order = np.argsort(-score, kind="stable")
    parts = np.array_split(order, groups)
    total, rate = float(y.sum()), float(y.mean()) if len(y) else 0.0
    out, seen = [], 0.0
    for k, idx in enumerate(parts, start=1):
        events = float(y[idx].sum())
        seen += events
        r = events / len(idx) if len(idx) else 0.0
        out.append({"decile": k, "rows": len(idx), "events": int(events), "event_rate": r,
                    "min_score": float(score[idx].min()) if len(idx) else None,
                    "cumulative_capture": seen / total if total else 0.0, "lift": r / rate if rate else 0.0})
    return out


def _scores(y: np.ndarray, p: np.ndarray, binary: bool) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    if binary:
        auc = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None
        return {"roc_auc": auc, "ks": ks_statistic(y, p), "rows": len(y), "event_rate": float(y.mean())}
    mu = np.maximum(p, 1e-300)
    dev = 2.0 * np.sum(np.where(y > 0, y * np.log(np.maximum(y, 1e-300) / mu), 0.0) - (y - mu))
    return {"poisson_deviance": float(dev), "rows": len(y)}


def _heads(psi: Mapping[str, Any], parties: Mapping[str, PartyTable], label: SecureBoostLabelParty,
           features: Mapping[str, SecureBoostFeatureParty], order: list[str]) -> dict[str, dict[str, Any]]:
    """What each party checks when the run resumes (:mod:`fedx.vertical.gbdt_checkpoint`), each from its own
    state: its rows and bins, the intersection it took part in; the label party's PSI run secret too."""
    out = {}
    for name in order:
        t, secret = parties[name], psi["secrets"][name]
        shared = psi["alignments"][name].rows
        party = label if name == label.name else features[name]
        extra = (label.y, label.offset) if name == label.name else ()
        out[name] = {"psi": {"shared": len(shared), "order": order_digest(t.ids, shared, secret)},
                     "rows": digest_rows(party.X, *extra, names=party.feature_names),
                     "edges": digest_rows(*party.edges.cuts, names=[str(len(c)) for c in party.edges.cuts])}
        if name == label.name:
            out[name].update(parties=order, secret=secret.hex())
    return out


def run_vertical_gbdt(cfg: Config, out_dir: str | Path | None = None, *, progress: bool = True, force: bool = False,
                      resume: bool = False, tables: Mapping[str, pd.DataFrame] | None = None,
                      steps: tuple[Any, Any, Any] = ()) -> RunResult:
    """Run a vertical ``model.kind: gbdt`` config in simulation (the module docstring says how).

    ``steps`` are the vertical run's shared steps (:mod:`fedx.vertical.run`, which calls this): the ledgers
    and relay receipts, the default run folder, and the private set intersection with the hold-out.
    ``resume`` continues the checkpoint in ``out_dir`` after its last finished tree (step 5 of the module
    docstring).
    """
    _Audit, _default_out_dir, _intersect = steps

    target = Path(out_dir) if out_dir is not None else _default_out_dir(cfg)
    folder = RunFolder.plan(cfg, target, "result.json", resume=resume, force=force)
    say: Callable[[str], None] = (lambda line: print(line, flush=True)) if progress else (lambda line: None)
    parties = load_party_tables(cfg, tables)
    label_name = cfg.data.label_party
    assert label_name is not None
    params = gbdt_params(cfg)
    binary = params.objective == "binary:logistic"
    order = [label_name, *[n for n in parties if n != label_name]]
    say("fedx vertical gbdt: " + ", ".join(f"{n} {len(t.df):,} rows ({t.origin})" for n, t in parties.items()))
    with folder.writing() as out:
        checkpoint = VerticalCheckpoint(out, cfg, label_name, order)
        resuming = folder.mode == "resume"
        secret = checkpoint.stored_secret() if resuming else None
        audit = _Audit(out, list(parties)) if cfg.security.audit else None
        psi = _intersect(cfg, parties, audit, say, secret=secret)
        test = psi["test"]
        rows: dict[str, dict[str, np.ndarray]] = {}
        for name, t in parties.items():
            al = psi["alignments"][name]
            own = select_test_rows(t.ids, al.rows, psi["secrets"][name], cfg.data.test_fraction)
            rows[name] = {"train": al.rows[~own], "test": al.rows[own]}
        lab = parties[label_name]
        Xl, lnames = _matrix(cfg, lab, rows[label_name]["train"])
        y = lab.column("target", rows[label_name]["train"])
        exposure = lab.column("exposure", rows[label_name]["train"])
        offset = None if exposure is None else np.log(exposure)
        label = SecureBoostLabelParty(label_name, Xl, lnames, y, params, encryption=cfg.security.encryption,
                                      offset=offset)
        features = {}
        for name, t in parties.items():
            if name != label_name:
                X, names = _matrix(cfg, t, rows[name]["train"])
                features[name] = SecureBoostFeatureParty(name, X, names, params.max_bins)
        heads = _heads(psi, parties, label, features, order)
        shares = {label_name: label.splits, **{n: p.splits for n, p in features.items()}}
        start: list[Any] = []
        history: list[dict[str, Any]] = []
        stats = FitStats()
        if resuming:
            checkpoint.check_heads(heads)
            loaded = checkpoint.load(shares)
            start, history, stats = loaded["trees"], loaded["history"], loaded["stats"]
            left = params.trees - len(start)
            say(f"resuming after tree {len(start)} from the checkpoint: "
                + (f"{left} tree(s) to grow" if left else f"all {params.trees} trees are grown, nothing left to grow"))
        else:
            checkpoint.write_heads(heads)
        sequence = {"n": len(start) + 1}   # the ledger's round of a message: its tree (1, 2, ...), 0 for the setup
        clock = {"t": time.perf_counter(), "bytes": stats.total_bytes, "messages": sum(stats.messages.values())}

        def observe(sender: str, receiver: str, kind: str, payload: bytes) -> None:
            if audit is not None:
                rnd = 0 if kind in SETUP_KINDS and kind != "sb_public_key" else sequence["n"]
                audit.ledgers[sender].append(round=rnd, kind=kind, payload=payload)
                audit.relay(sender, receiver, payload)

        def on_level(tree: int, level: int) -> None:
            if progress and level == 1 and ((tree + 1) % max(1, params.trees // 10) == 0 or tree + 1 == params.trees):
                say(f"tree {tree + 1}/{params.trees}: {stats.total_bytes / 1e6:.1f} MB so far")

        def on_tree(tree: int, structure: Any) -> None:
            now, sent = time.perf_counter(), sum(stats.messages.values())
            history.append({"round": tree + 1, "tree": tree + 1, "levels": stats.levels_per_tree[-1],
                            "leaves": int((structure.owner < 0).sum()), "bytes": stats.total_bytes - clock["bytes"],
                            "messages": sent - clock["messages"], "seconds": now - clock["t"]})
            clock.update(t=now, bytes=stats.total_bytes, messages=sent)
            checkpoint.save(tree, structure, shares, history, stats)
            sequence["n"] = tree + 2

        t0 = time.perf_counter()
        model = fit_secureboost(label, features, observe=observe, progress=on_level, stats=stats, start=start,
                                on_tree=on_tree)
        seconds = time.perf_counter() - t0
        grown = params.trees - len(start)
        say(f"secureboost: {grown} trees in {seconds:.1f} s" + (f" (after {len(start)} from the checkpoint)"
                                                               if start else "")
            + f", {stats.to_dict()['bytes_per_tree'] / 1e6:.2f} MB per tree")
        paths = model.save(out / "institutions")
        held = {name: _matrix(cfg, t, rows[name]["test"])[0] for name, t in parties.items()}
        y_test = lab.column("target", rows[label_name]["test"])
        e_test = lab.column("exposure", rows[label_name]["test"])
        off_test = None if e_test is None else np.log(e_test)
        p_test = (model.predict_proba(held)[:, 1] if binary else model.predict(held, offset=off_test)) \
            if len(y_test) else np.zeros(0)
        metrics: dict[str, Any] = {"test": _scores(y_test, p_test, binary) if len(y_test) else None, "fit_rows": len(y),
                   "test_rows": len(y_test)}
        baselines: dict[str, Any] = {}
        lift = {"joint": lift_table(y_test, p_test) if binary and len(y_test) else None}
        if "local" in cfg.report.baselines and len(y_test):
            alone = fit_pooled(Xl, y, params, lnames, label.edges, offset=offset)
            pa = alone.predict_proba(held[label_name])[:, 1] if binary else alone.predict(held[label_name], off_test)
            baselines["local"] = {label_name: _scores(y_test, pa, binary)}
            if binary:
                lift[label_name] = lift_table(y_test, pa)
        if "centralized" in cfg.report.baselines:
            edges = BinEdges(tuple(label.edges.cuts) + tuple(c for p in features.values() for c in p.edges.cuts))
            joined = np.hstack([Xl, *[p.X for p in features.values()]])
            pooled = fit_pooled(joined, y, params, list(model.feature_names_in_), edges, offset=offset)
            held_joined = np.hstack([held[n] for n in model.parties])
            pc = pooled.predict_proba(held_joined)[:, 1] if binary else pooled.predict(held_joined, off_test)
            same = all(np.array_equal(a.value, b.value) for a, b in zip(model.trees, pooled.trees))
            baselines["centralized"] = {**(_scores(y_test, pc, binary) if len(y_test) else {}),
                                        "same_trees": bool(same)}
        importance = model.feature_importances("gain")
        described = describe(parties)
        for name, info in described.items():
            info["role"] = "label" if name == label_name else "feature"
            info["features"] = party_columns(cfg, parties[name])
            info["model_part"] = folder.final_path(paths[name])
            if audit is not None:
                info["ledger"] = folder.final_path(audit.ledgers[name].ledger.path)
        label_al = psi["alignments"][label_name]
        doc = {
            "schema_version": SCHEMA_VERSION, "fedx_version": __version__,
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "partition": "vertical",
            "config": cfg.to_dict(), "metrics": metrics,
            "model": {"task": cfg.task, "kind": "gbdt", "partition": "vertical", "protocol": "secureboost",
                      "label_party": label_name, "params": params.to_dict(), "trees": len(model.trees),
                      "resumed_from": len(start), "seconds": seconds, "feature_importance": importance,
                      "importance_by_party": model.importance_by_party("gain"),
                      "splits_by_party": model.importance_by_party("split"),
                      **{("phase_seconds" if k == "seconds" else k): v for k, v in stats.to_dict().items()}},
            "lift": lift,
            "psi": {"shared": label_al.n_shared, "rows": {n: len(t.df) for n, t in parties.items()},
                    "fit_rows": len(y), "test_rows": int(test.sum()), "seconds": psi["seconds"],
                    "bytes": psi["bytes"], "messages": psi["messages"], "policy": psi["policy"].to_dict()},
            "parties": described, "baselines": baselines, "history": history,
            "privacy": {
                "encryption": cfg.security.encryption, "model": "semi-honest, parties that do not collude",
                "psi": psi["policy"].to_dict(), "min_intersection": cfg.security.min_intersection,
                "label_party_learns": "the summed g/h of every bin of every party's features per node, the bin "
                                      "and feature index of each split, which rows go left or right at every node",
                "feature_parties_learn": "the rows of every node at each level (the tree's partition), the thresholds "
                                         "of their own splits only; g and h only encrypted",
                "per_row_values_sent_in_plaintext": cfg.security.encryption == "none",
                **({"receipts": folder.final_path(audit.receipts.path)} if audit is not None else {}),
            },
        }
        write_atomic(out / "result.json", json.dumps(json_ready(doc), indent=2, allow_nan=False))
    if progress:
        t = metrics["test"]
        if t and binary:
            say(f"held-out rows: ROC-AUC {t['roc_auc']:.4f}, KS {t['ks']:.4f}")
            if "local" in baselines:
                b = baselines["local"][label_name]
                say(f"{label_name} alone: ROC-AUC {b['roc_auc']:.4f}, KS {b['ks']:.4f}")
        say("importance by party: " + ", ".join(f"{p} {v:.1%}" for p, v in doc["model"]["importance_by_party"].items()))
        say(f"wrote {folder.target / 'result.json'}")
    return RunResult(metrics=doc["metrics"], history=history, out_dir=folder.target, baselines=baselines,
                     model=doc["model"], privacy=doc["privacy"], config=doc["config"], institutions=doc["parties"])
