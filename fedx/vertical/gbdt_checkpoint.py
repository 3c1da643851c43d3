"""Per-tree checkpoints of a simulated vertical SecureBoost run: each party keeps its own part in its own folder.

After every tree, in this order, each file replaced atomically (:func:`fedx.atomic.write_atomic`):

1. ``institutions/<party>/checkpoint/tree-NNNNN.json`` of every party. The label party's holds the tree's
   structure (for each node: the owning party, that party's column index and bin, the default direction of
   missing values, the children, gain, cover and leaf value) and its own thresholds of it; a feature party's
   holds only the thresholds of its own splits of that tree (node, its column, threshold, default direction).
   One file per tree, so that a checkpoint costs the same at tree 400 as at tree 1.
2. ``checkpoint/index.json``, the run's: the trees done, the config and its digest (:func:`fedx.run_folder.
   config_digest`), the history and the byte and message counts so far. No model, no party's value.

A crash between the two leaves a party's file of one tree that the index does not count; a resume reads the
index's count only, and grows that tree again. ``institutions/<party>/checkpoint/party.json`` (written before
the first tree of a run) holds what that party checks when the run resumes: digests of its columns of the
shared training rows (the label party's target and offset too) and of its bin edges, the number of shared
rows and a digest of their common order (:func:`fedx.vertical.psi.order_digest`). The label party's also holds
the run secret of the PSI: resumed under the same secret, the PSI gives the same shared rows in the same order
and the same held-out rows (a fresh secret would draw another hold-out, so other training rows). Every file
under ``checkpoint/`` of a party is written with mode 0600 and never leaves the party; none holds a row.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import json_default, write_atomic
from ..config import Config
from ..errors import DataError, FederationError, PSIError
from ..run_folder import config_digest, option
from .secureboost import FitStats
from .secureboost_model import PartySplits, TreeStructure

__all__ = ["FORMAT", "VerticalCheckpoint", "digest_rows"]

FORMAT = "fedx-secureboost-checkpoint"
VERSION = 1


def digest_rows(*arrays: np.ndarray | None, names: Sequence[str] = ()) -> str:
    """sha256 of a party's matrices (float64, row order kept) and column names: equal only for the same values."""
    h = hashlib.sha256(json.dumps([str(n) for n in names]).encode())
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(np.asarray(a, dtype=np.float64))
        h.update(json.dumps(list(a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "party"


class VerticalCheckpoint:
    """The run's index and every party's own checkpoint folder (module docstring).

    Parameters
    ----------
    out : Path
        The run folder.
    cfg : Config
        The run's config (its digest and keys go to the index).
    label : str
        The label party.
    parties : sequence of str
        Every party, the label party included.
    """

    def __init__(self, out: Path, cfg: Config, label: str, parties: Sequence[str]) -> None:
        self.out = out
        self.index = out / "checkpoint" / "index.json"
        self.cfg = cfg
        self.label = label
        self.folders = {p: out / "institutions" / _safe(p) / "checkpoint" for p in parties}
        self._heads_written = False

    # ------------------------------------------------------------------ each party's head

    def stored_secret(self) -> bytes:
        """The label party's PSI run secret, kept in its own ``party.json``."""
        head = self._head(self.label)
        try:
            return bytes.fromhex(str(head["secret"]))
        except (KeyError, ValueError):
            raise FederationError(f"{self.folders[self.label] / 'party.json'}: cannot resume: the label party's "
                                  f"checkpoint holds no PSI run secret") from None

    def check_heads(self, heads: Mapping[str, Mapping[str, Any]]) -> None:
        """Refuse to resume when a party's rows, bins or the intersection differ from the checkpoint's.

        Raises
        ------
        PSIError
            The PSI gives other shared rows (or another order) than when the checkpoint was made.
        DataError
            A party's columns of the shared training rows, or its bin edges, differ.
        """
        stored = {p: self._head(p) for p in heads}
        for p, head in heads.items():
            old = stored[p]["psi"]
            if old != head["psi"]:
                what = (f"{old['shared']:,} shared rows then, {head['psi']['shared']:,} now"
                        if old["shared"] != head["psi"]["shared"] else
                        f"the same number of shared rows ({old['shared']:,}) but other people")
                raise PSIError(f"party {p}: cannot resume: the private set intersection differs from the one the "
                               f"checkpoint was grown on ({what}); a party's table changed. Pass {option('force')} "
                               f"to start the run over")
        for p, head in heads.items():
            for key, what in (("rows", "its columns of the shared training rows"), ("edges", "its bin edges")):
                if stored[p][key] != head[key]:
                    raise DataError(f"party {p}: cannot resume: {what} differ from those the checkpoint was grown on "
                                    f"(its table changed since); pass {option('force')} to start the run over")
        self._heads_written = True

    def write_heads(self, heads: Mapping[str, Mapping[str, Any]]) -> None:
        """Each party's ``party.json`` (once, before the first tree of a new run)."""
        for p, head in heads.items():
            self.folders[p].mkdir(parents=True, exist_ok=True)
            doc = {"format": FORMAT, "version": VERSION, "party": p,
                   "role": "label" if p == self.label else "feature", **head}
            write_atomic(self.folders[p] / "party.json", json.dumps(doc, allow_nan=False), mode=0o600)
        self._heads_written = True

    def _head(self, party: str) -> dict[str, Any]:
        path = self.folders[party] / "party.json"
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise FederationError(f"{path}: cannot resume: party {party}'s checkpoint cannot be read ({exc})") from None
        if doc.get("format") != FORMAT or doc.get("version") != VERSION or doc.get("party") != party:
            raise FederationError(f"{path}: cannot resume: not a fedx SecureBoost checkpoint of party {party}")
        return doc

    # ------------------------------------------------------------------ per tree

    def save(self, tree: int, structure: TreeStructure, shares: Mapping[str, PartySplits],
             history: list[dict[str, Any]], stats: FitStats) -> None:
        """After tree ``tree`` (0-based): every party's file of it, then the index."""
        if not self._heads_written:
            raise FederationError("checkpoint: the parties' heads are written before the first tree")
        for p, folder in self.folders.items():
            doc: dict[str, Any] = {"tree": int(tree), "splits": shares[p].of_tree(tree)}
            if p == self.label:
                doc["structure"] = structure.to_dict()
            write_atomic(folder / f"tree-{int(tree):05d}.json", json.dumps(doc, allow_nan=False), mode=0o600)
        doc = {"kind": "gbdt", "partition": "vertical", "label_party": self.label,
               "config_digest": config_digest(self.cfg), "config": self.cfg.to_dict(), "round": int(tree) + 1,
               "history": history,
               "stats": {"bytes": stats.bytes, "messages": stats.messages, "seconds": stats.seconds,
                         "levels_per_tree": stats.levels_per_tree, "max_error": stats.max_error}}
        self.index.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.index, json.dumps(doc, allow_nan=False, default=json_default))

    def load(self, shares: Mapping[str, PartySplits]) -> dict[str, Any]:
        """The trees done, with every party's thresholds of them put back into ``shares``; history and stats.

        Raises
        ------
        FederationError
            An index of another kind of run, or a party's file of a counted tree missing or not matching.
        """
        try:
            doc = json.loads(self.index.read_text())
        except (OSError, ValueError) as exc:
            raise FederationError(f"{self.index}: cannot resume: the run's checkpoint cannot be read ({exc})") from None
        if doc.get("kind") != "gbdt" or doc.get("partition") != "vertical":
            raise FederationError(f"{self.index}: cannot resume: a checkpoint of another kind of run (kind "
                                  f"{doc.get('kind')!r}, partition {doc.get('partition', 'horizontal')!r}); pass "
                                  f"{option('force')} to replace it")
        done = int(doc["round"])
        trees: list[TreeStructure] = []
        parties = list(self.folders)
        for t in range(done):
            files = {}
            for p in parties:
                path = self.folders[p] / f"tree-{t:05d}.json"
                try:
                    files[p] = json.loads(path.read_text())
                except (OSError, ValueError) as exc:
                    raise FederationError(f"{path}: cannot resume: party {p}'s checkpoint of tree {t + 1} of {done} "
                                          f"cannot be read ({exc})") from None
                if int(files[p].get("tree", -1)) != t:
                    raise FederationError(f"{path}: cannot resume: it holds tree {files[p].get('tree')}, not {t}")
            structure = TreeStructure.from_dict(files[self.label]["structure"])
            for p in parties:
                shares[p].add_tree(t, files[p]["splits"])
            order = [self.label, *[p for p in parties if p != self.label]]
            for node in np.flatnonzero(structure.owner >= 0):
                owner = order[int(structure.owner[node])]
                if (t, int(node)) not in shares[owner].table:
                    raise FederationError(f"{self.folders[owner]}: cannot resume: party {owner} holds no threshold "
                                          f"of its split at tree {t + 1}, node {int(node)}")
            trees.append(structure)
        s = doc.get("stats", {})
        stats = FitStats(seconds=dict(s.get("seconds", {})), bytes=dict(s.get("bytes", {})),
                         messages=dict(s.get("messages", {})), levels_per_tree=list(s.get("levels_per_tree", [])),
                         max_error=float(s.get("max_error", 0.0)))
        return {"trees": trees, "history": list(doc.get("history", [])), "stats": stats}
