"""``fedx run`` of a vertical config (``data.partition: vertical``) in simulation, from config to result files.

0. The run folder is planned (:mod:`fedx.run_folder`: a finished run is replaced only with ``--force``, and
   a failed run leaves nothing it created behind), and every party's table is read and checked
   (:mod:`fedx.vertical.tables`) before anything is written.
1. Subject identification: the label party intersects its ids with each feature party's by ECDH-PSI
   (:mod:`fedx.vertical.psi`); the rows of the run are those every party holds, in the common order of a
   keyed hash. ``data.test_fraction`` of them are held out, chosen by another keyed hash.
2. The vertical GLM (:mod:`fedx.vertical.glm_parties`), or with ``model.kind: gbdt`` SecureBoost
   (:mod:`fedx.vertical.run_gbdt`), is fitted on the other rows, each party holding only
   its own columns; a progress line per Newton round. The label party fits its own columns alone on the same
   rows (the lift), and the held-out rows are scored at the fitted coefficients by one more round.
3. result.json (the coefficients named ``party:column`` with standard errors and relativities, the PSI sizes,
   the lift, the privacy settings), pricing_table.csv and history.csv are written to the run folder.

Every message that leaves a party (the PSI's included) is appended to that party's audit ledger
(``institutions/<party>/ledger.jsonl``), and the in-memory relay keeps receipts of every message it forwards
(``receipts.jsonl``, each anchored to the sender's ledger head), so ``fedx audit verify`` checks a party's
ledger against them as for a horizontal run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._version import __version__
from ..aggregators.glm_families import get_family
from ..aggregators.glm_results import GLMResults
from ..aggregators.newton import GLMData, NewtonRule, newton_fit
from ..atomic import write_atomic
from ..config import Config
from ..errors import ConfigError
from ..privacy.audit import AuditLedger
from ..report import SCHEMA_VERSION, RunResult, json_ready
from ..run_folder import RunFolder, option
from .channel import route
from .glm_parties import FeatureParty, LabelParty
from .glm_protocol import VerticalGLMResult, evaluate_vertical_glm, fit_vertical_glm
from .psi import Alignment, PSIParty, PSIPolicy, run_psi, select_test_rows
from .tables import PartyTable, describe, family_of, load_party_tables

__all__ = ["SentLedger", "history_csv", "pricing_table_csv", "run_vertical"]


def run_vertical(cfg: Config, out_dir: str | Path | None = None, *, progress: bool = True, resume: bool = False,
                 force: bool = False, tables: Mapping[str, pd.DataFrame] | None = None) -> RunResult:
    """Run a vertical config in simulation and write its result (the module's docstring says how).

    Parameters
    ----------
    cfg : Config
        A config with ``data.partition: vertical``.
    out_dir : str or Path, optional
        The run folder (default ``runs/<name>-<time>``).
    progress : bool
        Print a line per step and per Newton round, and the fitted model at the end.
    resume : bool
        Continue the checkpoint in ``out_dir`` after its last finished tree (``model.kind: gbdt``,
        :mod:`fedx.vertical.run_gbdt`); refused for the vertical GLM, which keeps no checkpoint.
    force : bool
        Replace a finished run in ``out_dir`` (written beside it, swapped in once finished).
    tables : mapping of party name to DataFrame, optional
        Each party's own table, in place of its ``source``.

    Raises
    ------
    ConfigError, DataError, SchemaError, PSIError, PolicyError
        A bad config or table, a finished run without ``force``, an intersection below
        ``security.min_intersection``, or a column or cell below ``security.min_cohort``.
    """
    if not cfg.data.vertical:
        raise ConfigError("run_vertical: the config is not vertical (data.partition: vertical)")
    if cfg.model.kind == "gbdt":   # SecureBoost: a checkpoint per tree, so resume continues it
        from .run_gbdt import run_vertical_gbdt

        return run_vertical_gbdt(cfg, out_dir, progress=progress, force=force, resume=resume, tables=tables,
                                 steps=(_Audit, _default_out_dir, _intersect))
    if resume:
        raise ConfigError(f"{option('resume')}: a vertical GLM run is one fit and keeps no checkpoint; run it again "
                          f"(with {option('force')} to replace a finished run)")
    target = Path(out_dir) if out_dir is not None else _default_out_dir(cfg)
    folder = RunFolder.plan(cfg, target, "result.json", resume=False, force=force, resumable=False)
    say: Callable[[str], None] = (lambda line: print(line, flush=True)) if progress else (lambda line: None)
    parties = load_party_tables(cfg, tables)
    label_name = cfg.data.label_party
    assert label_name is not None
    say("fedx vertical: " + ", ".join(f"{n} {len(t.df):,} rows ({t.origin})" for n, t in parties.items()))
    with folder.writing() as out:
        audit = _Audit(out, list(parties)) if cfg.security.audit else None
        psi = _intersect(cfg, parties, audit, say)
        fit = _fit(cfg, parties, psi, audit, say)
        doc = _document(cfg, parties, psi, fit, out, folder, audit)
        write_atomic(out / "result.json", json.dumps(json_ready(doc), indent=2, allow_nan=False))
        write_atomic(out / "pricing_table.csv", pricing_table_csv(fit["result"].results))
        write_atomic(out / "history.csv", history_csv(fit["result"].history))
    if progress:
        _print_summary(doc, fit["result"], folder.target, say)
    return RunResult(metrics=doc["metrics"], history=doc["history"], out_dir=folder.target, baselines=doc["baselines"],
                     model=doc["model"], privacy=doc["privacy"], config=doc["config"], institutions=doc["parties"])


def _default_out_dir(cfg: Config) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(cfg.name)).strip("-") or "run"
    return Path("runs") / f"{slug}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "party"


# ---------------------------------------------------------------------- the ledgers and the relay's receipts

class SentLedger:
    """A party's audit ledger, remembering the ledger head before each message (the relay's receipt anchors it)."""

    def __init__(self, path: Path) -> None:
        self.ledger = AuditLedger(path)
        self._sent: dict[str, deque[tuple[int, str, dict[str, Any]]]] = defaultdict(deque)

    def append(self, *, round: int, kind: str, payload: bytes, checks: Mapping[str, Any] | None = None,
               anchor: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Append one message that leaves the party (as :meth:`AuditLedger.append`)."""
        head = self.ledger.head
        entry = self.ledger.append(round=round, kind=kind, payload=payload, checks=checks, anchor=anchor)
        self._sent[entry["sha256"]].append((int(round), str(kind), head))
        return entry

    def sent(self, message: bytes) -> tuple[int, str, dict[str, Any]]:
        """The round, kind and ledger head before the entry of a message appended earlier (each is told once)."""
        queue = self._sent.get(hashlib.sha256(message).hexdigest())
        if not queue:
            raise ConfigError(f"{self.ledger.path}: the relay forwarded a message that its sender's ledger does "
                              f"not hold")
        return queue.popleft()


class _Audit:
    """Every party's ledger, and the receipts of the in-memory relay (the fedx server's role in deployment)."""

    def __init__(self, out: Path, names: list[str]) -> None:
        self.ledgers = {n: SentLedger(out / "institutions" / _safe(n) / "ledger.jsonl") for n in names}
        self.receipts = AuditLedger(out / "receipts.jsonl")

    def relay(self, sender: str, receiver: str, message: bytes) -> None:
        rnd, kind, head = self.ledgers[sender].sent(message)
        self.receipts.append(round=rnd, kind=kind, payload=message, checks={"institution": sender, "to": receiver},
                             anchor=head)


# ---------------------------------------------------------------------- 1. subject identification

def _intersect(cfg: Config, parties: Mapping[str, PartyTable], audit: _Audit | None,
               say: Callable[[str], None], *, secret: bytes | None = None) -> dict[str, Any]:
    """The PSI and the hold-out; ``secret``: the label party's run secret of the run that is resumed."""
    sec, label_name = cfg.security, cfg.data.label_party
    policy = PSIPolicy(reveal=sec.psi_reveal, count_to=sec.psi_count_to, min_intersection=sec.min_intersection)
    run_id = uuid.uuid4().hex
    names = list(parties)
    psi_parties = [PSIParty(n, t.ids, label_party=label_name, parties=names, run_id=run_id, policy=policy,
                            ledger=audit.ledgers[n] if audit else None,  # type: ignore[arg-type]
                            secret=secret if n == label_name else None) for n, t in parties.items()]
    sent = {"bytes": 0, "messages": 0}

    def observe(message: bytes) -> None:
        sent["bytes"] += len(message)
        sent["messages"] += 1
        if audit is not None:
            r = route(message)
            audit.relay(r.sender, r.receiver, message)

    t0 = time.perf_counter()
    alignments = run_psi(psi_parties, observe=observe)
    seconds = time.perf_counter() - t0
    label = alignments[label_name]  # type: ignore[index]
    assert label.rows is not None and label.n_shared is not None
    secrets = {p.name: p.secret for p in psi_parties}
    test = select_test_rows(parties[label_name].ids, label.rows, secrets[label_name], cfg.data.test_fraction)  # type: ignore[index]
    say(f"PSI: {label.n_shared:,} people shared by all parties ({seconds:.1f} s, {sent['bytes'] / 1e6:.1f} MB in "
        f"{sent['messages']} messages); {int((~test).sum()):,} rows to fit, {int(test.sum()):,} held out")
    return {"policy": policy, "alignments": alignments, "secrets": secrets, "test": test, "seconds": seconds,
            **sent}


# ---------------------------------------------------------------------- 2. the fit

def _feature_rows(cfg: Config, table: PartyTable, alignment: Alignment, label: Alignment, secret: bytes,
                  test: np.ndarray) -> dict[str, Any]:
    """A feature party's design for the fit and the held-out rows, and where the label party sends them."""
    if alignment.rows is not None:  # it knows its shared rows (psi_reveal: all), in the common order
        own = select_test_rows(table.ids, alignment.rows, secret, cfg.data.test_fraction)
        return {"train": table.design(alignment.rows[~own]), "test": table.design(alignment.rows[own]),
                "train_rows": None, "test_rows": None}
    assert alignment.wire_order is not None
    whole = table.design(alignment.wire_order)  # its whole table, in the shuffled order of the PSI
    positions = label.peer_positions[table.name]
    n = len(alignment.wire_order)
    return {"train": whole, "test": whole, "train_rows": (n, positions[~test]), "test_rows": (n, positions[test])}


def _fit(cfg: Config, parties: Mapping[str, PartyTable], psi: dict[str, Any], audit: _Audit | None,
         say: Callable[[str], None]) -> dict[str, Any]:
    sec, fed = cfg.security, cfg.federation
    label_name = cfg.data.label_party
    assert label_name is not None
    table = parties[label_name]
    label_al = psi["alignments"][label_name]
    test = psi["test"]
    rows = {"train": label_al.rows[~test], "test": label_al.rows[test]}
    features = [n for n in parties if n != label_name]
    frows = {f: _feature_rows(cfg, parties[f], psi["alignments"][f], label_al, psi["secrets"][f], test)
             for f in features}
    references = {k: v for t in parties.values() for k, v in t.reference_levels().items()}
    fam = family_of(cfg)

    def label_party(split: str, **extra: Any) -> LabelParty:
        X, names = table.design(rows[split])
        peer_rows = {f: frows[f][f"{split}_rows"] for f in features if frows[f][f"{split}_rows"] is not None}
        return LabelParty(label_name, X, names, table.column("target", rows[split]), family=fam,
                          exposure=table.column("exposure", rows[split]), weight=table.column("weight", rows[split]),
                          tweedie_power=fed.tweedie_power, encryption=sec.encryption, label_block=sec.label_block,
                          min_cohort=sec.min_cohort, l2=fed.l2, tolerance=fed.tolerance, peer_rows=peer_rows,
                          reference_levels=references, **extra)

    def feature_parties(split: str) -> dict[str, FeatureParty]:
        return {f: FeatureParty(f, *frows[f][split], encryption=sec.encryption, min_cohort=sec.min_cohort,
                                pairs=split == "train") for f in features}

    label = label_party("train")
    fparties = feature_parties("train")
    held = feature_parties("test") if test.any() else None
    ledgers = audit.ledgers if audit else None
    relay = (lambda s, r, rnd, m: audit.relay(s, r, m)) if audit else None

    def on_round(h: dict[str, Any]) -> None:
        what = "setup" if h["round"] == 0 else f"newton round {h['round']}"
        dev = "" if h["round"] == 0 or h["deviance"] is None else f"deviance {h['deviance']:.6g}, "
        between = f", {h['bytes_between'] / 1e6:.1f} MB between feature parties" if h["bytes_between"] else ""
        say(f"{what}: {dev}{h['seconds']:.1f} s, {h['bytes_up'] / 1e6:.1f} MB up, {h['bytes_down'] / 1e6:.1f} MB "
            f"down{between}")

    t0 = time.perf_counter()
    result = fit_vertical_glm(label, fparties, max_rounds=fed.rounds, ledgers=ledgers, relay=relay, on_round=on_round)
    seconds = time.perf_counter() - t0
    out: dict[str, Any] = {"result": result, "seconds": seconds, "family": fam, "label": label, "test": None}
    if held is not None:
        beta = np.array([result.params[n] for n in result.params])
        held_label = label_party("test", evaluate=beta)
        dev = evaluate_vertical_glm(held_label, held, ledgers=ledgers, relay=relay)
        assert result.label_only is not None
        fam_obj = get_family(fam, fed.tweedie_power)
        eta = held_label.offset + held_label.Z @ result.label_only.params.to_numpy()
        alone = float(fam_obj.terms(held_label.y, eta, held_label.w).deviance.sum())
        out["test"] = {"nobs": int(held_label.Z.shape[0]), "deviance": dev, "label_only_deviance": alone,
                       "lift": 1.0 - dev / alone if alone > 0 else 0.0}
        say(f"held-out rows: deviance {dev:.6g} joint, {alone:.6g} {label_name} alone (lift {out['test']['lift']:.4f})")
    if "centralized" in cfg.report.baselines:
        out["centralized"] = _pooled(label, fparties, frows, fam, cfg)
    return out


def _pooled(label: LabelParty, fparties: Mapping[str, FeatureParty], frows: Mapping[str, Any], fam: str,
            cfg: Config) -> GLMResults:
    """The same GLM on the joined table (possible only in simulation): the baseline the fit must equal."""
    blocks = [label.X]
    for name, party in fparties.items():
        place = frows[name]["train_rows"]
        blocks.append(party.X if place is None else party.X[place[1]])
    names = label.coefficient_names()[1:]
    rule = NewtonRule(fam, l2=cfg.federation.l2, tweedie_power=cfg.federation.tweedie_power,
                      tolerance=cfg.federation.tolerance, feature_names=names)
    fit = newton_fit([GLMData(np.hstack(blocks), label.y, label.offset, label.w)], rule,
                     max_rounds=cfg.federation.rounds)
    return GLMResults.from_newton(fit.total, fit.state, rule, names, label.reference_levels)


# ---------------------------------------------------------------------- 3. the result

def _document(cfg: Config, parties: Mapping[str, PartyTable], psi: dict[str, Any], fit: dict[str, Any], out: Path,
              folder: RunFolder, audit: _Audit | None) -> dict[str, Any]:
    res: VerticalGLMResult = fit["result"]
    label_name = cfg.data.label_party
    label_al = psi["alignments"][label_name]
    policy: PSIPolicy = psi["policy"]
    report = dict(res.report)
    metrics = {"deviance": res.deviance, "null_deviance": res.null_deviance, "aic": res.aic, "d2": report.get("d2"),
               "nobs": res.nobs, "lift": res.lift, "label_only_deviance": res.label_only_deviance}
    if fit["test"] is not None:
        metrics.update({f"test_{k}": v for k, v in fit["test"].items()})
    columns = {name: [c for c in res.params if c.startswith(f"{name}:")] for name in parties}
    described = describe(parties)
    for name, info in described.items():
        info["role"] = "label" if name == label_name else "feature"
        info["coefficients"] = columns[name]
        if audit is not None:
            info["ledger"] = folder.final_path(audit.ledgers[name].ledger.path)
    baselines: dict[str, Any] = {}
    if "local" in cfg.report.baselines and res.label_only is not None:
        baselines["local"] = {label_name: res.label_only.to_dict()}
    if "centralized" in fit:
        pooled: GLMResults = fit["centralized"]
        mine = np.array(list(res.params.values()))
        baselines["centralized"] = {**pooled.to_dict(), "max_rel_diff_coefficients": float(
            np.max(np.abs(mine - pooled.params.to_numpy()) / np.maximum(np.abs(pooled.params.to_numpy()), 1e-300)))}
    shared = {"shared": label_al.n_shared, "rows": {n: len(t.df) for n, t in parties.items()},
              "fit_rows": res.nobs, "test_rows": int(psi["test"].sum()), "seconds": psi["seconds"],
              "bytes": psi["bytes"], "messages": psi["messages"], "policy": policy.to_dict(),
              "count_known_to": [label_name] + ([n for n in parties if n != label_name] if policy.count_to_features
                                               else []),
              "membership_known_to": list(parties) if policy.reveal == "all" else [label_name]}
    privacy: dict[str, Any] = {
        "encryption": cfg.security.encryption, "label_block": cfg.security.label_block,
        "min_cohort": cfg.security.min_cohort, "min_intersection": cfg.security.min_intersection,
        "psi": policy.to_dict(), "model": "semi-honest, parties that do not collude",
        "label_party_learns": "every coefficient and the aggregates over the shared rows of every round (blocks of "
                              "X'WX, score, deviance), the support counts of the feature columns",
        "feature_parties_learn": "their own coefficients each round" + (
            ", the number of shared rows" if policy.count_to_features else ""),
        "per_row_values_sent_in_plaintext": cfg.security.encryption == "none",
    }
    if cfg.security.encryption == "ckks":
        from ..he.vectors import VECTOR_BITS, VECTOR_DEGREE
        privacy["scheme"] = f"CKKS, N={VECTOR_DEGREE}, coefficient modulus {list(VECTOR_BITS)}, scale 2^49"
    if audit is not None:
        privacy["receipts"] = folder.final_path(audit.receipts.path)
    model = {"task": cfg.task, "kind": "glm", "partition": "vertical", "label_party": label_name,
             "party_of": {c: c.split(":", 1)[0] for c in res.params if ":" in c}, **report,
             "seconds": fit["seconds"]}
    lift = {"lift": res.lift, "joint_deviance": res.deviance, "joint_aic": res.aic,
            "label_only_deviance": res.label_only_deviance, "label_only_aic": res.label_only_aic,
            "label_only_coefficients": [] if res.label_only is None else res.label_only.to_dict()["coefficients"],
            "test": fit["test"]}
    return {"schema_version": SCHEMA_VERSION, "fedx_version": __version__,
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "partition": "vertical",
            "config": cfg.to_dict(), "metrics": metrics, "model": model, "lift": lift, "psi": shared,
            "parties": described, "baselines": baselines, "privacy": privacy, "history": res.history}


def pricing_table_csv(results: GLMResults) -> str:
    """The pricing table: the base rate, then each relativity with its 95% interval, by party and feature."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["party", "feature", "level", "reference", "relativity", "ci_low", "ci_high", "estimate", "std_error"])
    ci = results.conf_int(0.05)
    b0, se0 = float(results.params.iloc[0]), float(results.bse.iloc[0])
    w.writerow(["", "base rate", "", "", _g(np.exp(b0)), _g(np.exp(ci.iloc[0, 0])), _g(np.exp(ci.iloc[0, 1])),
                _g(b0), _g(se0)])
    for row in results.relativities(0.05):
        party, _, feature = str(row["feature"]).rpartition(":")
        w.writerow([party, feature, "" if row["level"] is None else row["level"],
                    "" if row.get("reference") is None else row["reference"], _g(row["relativity"]),
                    _g(row.get("ci_low")), _g(row.get("ci_high")), _g(row.get("estimate")), _g(row.get("std_error"))])
    return buf.getvalue()


def _g(x: Any) -> str:
    return "" if x is None else f"{float(x):.10g}"


def history_csv(history: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    keys = ["round", "seconds", "cpu_seconds", "bytes_up", "bytes_down", "bytes_between", "messages"]
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(keys)
    for h in history:
        w.writerow([h[k] for k in keys])
    return buf.getvalue()


def _print_summary(doc: dict[str, Any], res: VerticalGLMResult, out: Path, say: Callable[[str], None]) -> None:
    say(res.results.summary())
    lift = doc["lift"]
    say(f"lift over {doc['model']['label_party']} alone: {lift['lift']:.4f} (deviance {lift['joint_deviance']:.6g} "
        f"joint, {lift['label_only_deviance']:.6g} alone)")
    say(f"wrote {out / 'result.json'} and {out / 'pricing_table.csv'}")
