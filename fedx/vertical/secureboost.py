"""Vertical SecureBoost: gradient-boosted trees over parties that hold different columns of the same rows.

The label party holds the target (and some features); each feature party holds only features. Every party
bins its own columns (:class:`~fedx.trees.binning.BinEdges` from the quantiles of its own shared training
rows); the tree engine (:class:`~fedx.trees.engine.TreeBuilder`) runs at the label party alone. Per tree:

1. The label party computes each row's gradient ``g`` and hessian ``h``, rounds them to the engine's grid
   (``2**-quantum_bits``) and encrypts them once, under its own CKKS key (:mod:`fedx.he.vectors`: rows in
   the slots of N=8192 ciphertexts, padded to full ciphertexts). Every feature party receives the same two
   encrypted vectors.
2. Per level, the label party tells the feature parties which rows lie in each node whose histograms the
   engine asks for (the node partition; the engine's histogram subtraction asks for the smaller child of
   each split only). Each feature party multiplies the encrypted ``g`` and ``h`` by the 0/1 indicator of
   every (node, feature, bin) and sums over every slot: it returns only those sums, two per ciphertext
   (real and imaginary part). Indicators of an empty bin cost nothing (an encryption of zero).
3. The label party decrypts, snaps the sums back to the grid (the CKKS error is far below a quarter step,
   and is checked), adds its own plaintext histograms and grows the level. For each split on a feature
   party's column it sends that party only ``(node, feature, bin, default direction)``; the owner keeps the
   threshold to itself and returns which of the node's rows go left.
4. After the last level every row sits in a leaf, and the label party adds the leaf values to its margins.

A fit can start from the trees of a checkpoint (``start``): the label party first rebuilds its margins on the
training rows by federated routing through those trees, then grows the next one (:func:`boost`).

With ``encryption="none"`` the same protocol sends ``g`` and ``h`` in plaintext (the reference of the tests:
tree by tree it equals the engine run on the joined table with the same bin edges).

Nothing here imports flwr; the HE lives in :mod:`fedx.he.vectors`. Every message goes through ``observe``
(sender, receiver, kind, payload bytes), so a run can write it to the sender's ledger and count its bytes.
What each party learns is in docs/security.md.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DataError, HEError
from ..trees.binning import BinEdges
from ..trees.engine import (
    HistogramLayout,
    Split,
    TreeBuilder,
    node_histograms,
    quantize,
)
from ..trees.horizontal import tree_features
from ..trees.model import Tree
from ..trees.objectives import get_objective
from ..trees.params import GBDTParams
from .secureboost_model import PartySplits, SecureBoostModel, TreeStructure

__all__ = ["ENCRYPTIONS", "REPLY", "FitStats", "SecureBoostFeatureParty", "SecureBoostLabelParty", "Step", "answer", "boost",
           "fit_secureboost", "route", "route_answer", "run_driver"]

log = logging.getLogger(__name__)

ENCRYPTIONS = ("ckks", "none")

Observe = Callable[[str, str, str, bytes], None]
#: Messages that grow no tree: the setup (once per run, and again when a run resumes) and, when a run resumes,
#: the routing of the training rows through the trees so far (the rest are per tree).
SETUP_KINDS = ("sb_describe", "sb_public_key", "sb_route", "sb_routed")


def _pack(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> bytes:
    """A plaintext message: a JSON header and numpy arrays (no pickle)."""
    buf = io.BytesIO()
    np.savez(buf, **(arrays or {}))
    head = json.dumps(dict(header), sort_keys=True).encode()
    return len(head).to_bytes(4, "big") + head + buf.getvalue()


def _unpack(message: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    n = int.from_bytes(message[:4], "big")
    head = json.loads(message[4:4 + n])
    with np.load(io.BytesIO(message[4 + n:]), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return head, arrays


def _join(blobs: Sequence[bytes]) -> bytes:
    return b"".join(len(b).to_bytes(8, "big") + b for b in blobs)


def _split(data: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = int.from_bytes(data[i:i + 8], "big")
        out.append(data[i + 8:i + 8 + n])
        i += 8 + n
    return out


def _check_matrix(name: str, X: np.ndarray, names: Sequence[str]) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(names):
        raise DataError(f"party {name}: expected a matrix of its {len(names)} feature columns, got shape {X.shape}")
    if np.isinf(X).any():
        col = names[int(np.flatnonzero(np.isinf(X).any(axis=0))[0])]
        raise DataError(f"party {name}: column {col!r} holds infinite values")
    return X


class SecureBoostFeatureParty:
    """A feature party: its columns and bins, its share of the model's thresholds, and its side of each level.

    Parameters
    ----------
    name : str
        The party.
    X : np.ndarray
        ``(n, F)`` its features of the shared training rows, in the common row order (NaN where missing).
    feature_names : sequence of str
        Its column names.
    max_bins : int
        Most bins per feature.
    edges : BinEdges, optional
        Its bin edges (default: from the quantiles of its own rows).
    """

    def __init__(self, name: str, X: np.ndarray, feature_names: Sequence[str], max_bins: int,
                 edges: BinEdges | None = None) -> None:
        self.name = name
        self.feature_names = [str(c) for c in feature_names]
        self.X = _check_matrix(name, X, self.feature_names)
        self.edges = edges if edges is not None else BinEdges.from_quantiles(self.X, max_bins)
        self.bins = self.edges.bin(self.X)
        self.splits = PartySplits(name, self.feature_names)
        self._evaluator: Any = None
        self._pair: Any = None
        self._plain: tuple[np.ndarray, np.ndarray] | None = None
        self._tree = -1
        self._node = np.zeros(0, dtype=np.int64)

    def describe(self) -> bytes:
        """Setup message to the label party: its column names and the number of bins of each."""
        return _pack({"party": self.name, "features": self.feature_names},
                     {"n_bins": self.edges.n_bins, "rows": np.array([self.X.shape[0]])})

    def receive_key(self, public: bytes) -> None:
        """The label party's public vector context (once per run)."""
        from ..he.vectors import VectorEvaluator

        self._evaluator = VectorEvaluator(public)

    def receive_gradients(self, message: bytes) -> None:
        """A tree's encrypted (or, without encryption, plaintext) gradients and hessians."""
        if head_is_plain(message):
            head, arrays = _unpack(message[:-8])
            self._tree = int(head["tree"])
            self._plain = (arrays["g"], arrays["h"])
            return
        parts = _split(message)
        meta = json.loads(parts[0])
        self._tree = int(meta["tree"])
        if self._evaluator is None:
            raise HEError(f"party {self.name}: encrypted gradients before the label party's public context")
        from ..he.histograms import HistogramEvaluator

        self._pair = HistogramEvaluator(self._evaluator, parts[1], self.X.shape[0], f"{self.name}: encrypted g/h")
        self._plain = None

    def histograms(self, message: bytes) -> bytes:
        """The sums of g and h per (requested node, sampled feature, bin) of its columns.

        ``message`` (from the label party) holds the node of every row, the requested nodes and this party's
        features in the tree's column sample.
        """
        head, arrays = _unpack(message)
        node_of_row, nodes, features = arrays["node"].astype(np.int64), [int(n) for n in arrays["nodes"]], \
            arrays["features"]
        self._node = node_of_row
        layout = HistogramLayout(features=features.astype(np.int64), n_bins=self.edges.n_bins[features])
        if self._plain is not None:
            slot = _slots(node_of_row, nodes)
            hist = node_histograms(layout.flat_bins(self.bins), *self._plain, slot, len(nodes), layout.size)
            return _pack({"level": head["level"]}, {"hist": hist})
        from ..he.histograms import block_width

        slot = _slots(node_of_row, nodes)
        rows = np.flatnonzero(slot >= 0)
        total = len(nodes) * layout.size
        width = block_width(total)
        flat = (slot[rows, None] * layout.size + layout.flat_bins(self.bins[rows])).ravel()
        rows = np.repeat(rows, len(layout.features))
        block = flat // width
        blocks = [(rows[block == k], flat[block == k] - k * width) for k in range(-(-total // width))]
        blob = self._pair.block_sums(blocks, width)
        return _join([json.dumps({"level": head["level"], "count": total, "width": width}).encode(), blob])

    def split(self, message: bytes) -> bytes:
        """Keep the threshold of each split on its columns; return which of the node's rows go left."""
        head, _ = _unpack(message)
        node_of_row = self._node        # the rows of each node at this level, from the level's request
        bits = []
        for s in head["splits"]:
            f, b, dleft = int(s["feature"]), int(s["bin"]), bool(s["default_left"])
            if not 0 <= f < len(self.feature_names) or not -1 <= b < int(self.edges.n_bins[f]) - 1:
                raise DataError(f"party {self.name}: a split on feature {f}, bin {b} that it does not have")
            rows = node_of_row == int(s["node"])
            binned = self.bins[rows, f].astype(np.int64)
            missing = binned == int(self.edges.n_bins[f]) - 1
            bits.append(np.packbits(np.where(missing, dleft, binned <= b)))
            self.splits.add(int(head["tree"]), int(s["node"]), f, self.edges.threshold(f, b), dleft)
        return _pack({"tree": head["tree"]}, {f"s{i}": v for i, v in enumerate(bits)})


def head_is_plain(message: bytes) -> bool:
    """Whether a gradients message is the plaintext variant (it ends with its own length)."""
    return len(message) >= 8 and int.from_bytes(message[-8:], "big") == len(message) - 8


def _slots(node_of_row: np.ndarray, nodes: Sequence[int]) -> np.ndarray:
    lookup = np.full(int(max([*nodes, int(node_of_row.max()) if node_of_row.size else 0])) + 1, -1, dtype=np.int64)
    for i, n in enumerate(nodes):
        lookup[n] = i
    return lookup[node_of_row]


@dataclass
class FitStats:
    """What a fit measured: seconds per phase, bytes and messages per kind, levels per tree."""

    seconds: dict[str, float] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    messages: dict[str, int] = field(default_factory=dict)
    levels_per_tree: list[int] = field(default_factory=list)
    max_error: float = 0.0

    def count(self, kind: str, payload: bytes) -> None:
        self.bytes[kind] = self.bytes.get(kind, 0) + len(payload)
        self.messages[kind] = self.messages.get(kind, 0) + 1

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())

    def to_dict(self) -> dict[str, Any]:
        trees = max(len(self.levels_per_tree), 1)
        setup = sum(v for k, v in self.bytes.items() if k in SETUP_KINDS)
        return {"seconds": dict(self.seconds), "bytes": dict(self.bytes), "messages": dict(self.messages),
                "bytes_setup": setup, "bytes_per_tree": (self.total_bytes - setup) / trees, "levels_per_tree": list(self.levels_per_tree),
                "max_decryption_error": self.max_error}


class SecureBoostLabelParty:
    """The label party: the target, its own columns, the key, the tree engine and the margins.

    Parameters
    ----------
    name : str
        The party.
    X : np.ndarray
        ``(n, F)`` its own features of the shared training rows (may have no column).
    feature_names : sequence of str
        Its column names.
    y : np.ndarray
        The target of the shared training rows.
    params : GBDTParams
        The run's settings.
    encryption : str
        ``ckks`` (g and h under its own CKKS key) or ``none`` (plaintext; tests and baselines only).
    offset : np.ndarray, optional
        Per-row margin offset (log exposure for Poisson).
    edges : BinEdges, optional
        Its bin edges (default: from the quantiles of its own rows).
    """

    def __init__(self, name: str, X: np.ndarray, feature_names: Sequence[str], y: np.ndarray, params: GBDTParams,
                 encryption: str = "ckks", offset: np.ndarray | None = None, edges: BinEdges | None = None) -> None:
        if encryption not in ENCRYPTIONS:
            raise DataError(f"secureboost: encryption must be one of {', '.join(ENCRYPTIONS)}, got {encryption!r}")
        self.name = name
        self.feature_names = [str(c) for c in feature_names]
        self.y = np.asarray(y, dtype=np.float64).reshape(-1)
        X = np.asarray(X, dtype=np.float64).reshape(self.y.shape[0], -1)
        self.X = _check_matrix(name, X, self.feature_names)
        self.params = params
        self.objective = get_objective(params.objective)
        self.objective.check_target(self.y, f"party {name}")
        self.offset = np.zeros(len(self.y)) if offset is None else np.asarray(offset, dtype=np.float64).reshape(-1)
        self.encryption = encryption
        self.edges = edges if edges is not None else BinEdges.from_quantiles(self.X, params.max_bins)
        self.bins = self.edges.bin(self.X)
        self.splits = PartySplits(name, self.feature_names)
        self.key: Any = None
        if encryption == "ckks":
            from ..he.vectors import VectorKey

            self.key = VectorKey.generate()

    def public_key(self) -> bytes:
        """The public vector context for the feature parties (Galois keys, no decryption key)."""
        return self.key.public_bytes() if self.key is not None else b""

    def gradients(self, tree: int, margin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """g and h of a tree, on the grid, undrawn rows (``subsample``) zeroed."""
        g, h = self.objective.gradients(self.y, margin)
        bits = self.params.quantum_bits
        g, h = quantize(g, bits), quantize(h, bits)
        if self.params.subsample < 1.0:
            rng = np.random.default_rng([self.params.seed, tree, *self.name.encode()])
            keep = rng.random(len(g)) < self.params.subsample
            g, h = np.where(keep, g, 0.0), np.where(keep, h, 0.0)
        return g, h

    def gradients_message(self, tree: int, g: np.ndarray, h: np.ndarray) -> bytes:
        """g and h encrypted once for the tree (or in plaintext without encryption)."""
        if self.key is None:
            body = _pack({"tree": tree}, {"g": g, "h": h})
            return body + len(body).to_bytes(8, "big")
        from ..he.histograms import encrypt_pair

        return _join([json.dumps({"tree": tree}).encode(), encrypt_pair(self.key, g, h)])

    def decrypt_histograms(self, message: bytes, shape: tuple[int, int], stats: FitStats, party: str) -> np.ndarray:
        """A feature party's sums as ``(nodes, size, 2)`` on the grid (the CKKS error checked)."""
        if self.key is None:
            _, arrays = _unpack(message)
            hist = arrays["hist"]
            if hist.shape != (*shape, 2):
                raise DataError(f"party {party}: histograms of shape {hist.shape}, expected {(*shape, 2)}")
            return hist
        from ..he.histograms import block_width, decrypt_blocks

        parts = _split(message)
        head = json.loads(parts[0])
        total = shape[0] * shape[1]
        width = block_width(total)
        if int(head["count"]) != total or int(head["width"]) != width or len(parts) != 2:
            raise HEError(f"party {party}: {head.get('count')} encrypted sums, expected {total}")
        counts = [min(width, total - k) for k in range(0, total, width)]
        out = decrypt_blocks(self.key, parts[1], counts, width, f"histograms from {party}")
        snapped = quantize(out, self.params.quantum_bits)
        error = float(np.max(np.abs(out - snapped))) if out.size else 0.0
        stats.max_error = max(stats.max_error, error)
        if error > 2.0 ** -(self.params.quantum_bits + 2):
            raise HEError(f"sums from {party}: a decrypted value lies {error:.3g} from the 2^-"
                          f"{self.params.quantum_bits} grid, so the exact sum cannot be recovered; lower quantum_bits")
        return snapped.reshape(*shape, 2)


#: The reply each request of the label party waits for (the others need none).
REPLY = {"sb_nodes": "sb_histograms", "sb_split": "sb_partition", "sb_route": "sb_routed"}


@dataclass
class Step:
    """Messages the label party sends at once, ``(receiver, kind, payload)``, and the replies it then waits for."""

    out: list[tuple[str, str, bytes]]

    @property
    def expect(self) -> dict[str, str]:
        """The reply kind awaited from each party."""
        return {to: REPLY[kind] for to, kind, _ in self.out if kind in REPLY}


#: A label party's side of a protocol: yields the messages to send, is sent the replies (party -> payload).
Driver = Generator[Step, Mapping[str, bytes], Any]


def answer(party: SecureBoostFeatureParty, kind: str, payload: bytes,
           held: np.ndarray | None = None) -> tuple[str, bytes] | None:
    """A feature party's answer to one message of the label party: ``(kind, payload)``, or None if it needs none.

    ``held``: its columns of the rows to score (``sb_route``, federated prediction).
    """
    if kind == "sb_public_key":
        party.receive_key(payload)
        return None
    if kind == "sb_gradients":
        party.receive_gradients(payload)
        return None
    if kind == "sb_nodes":
        return REPLY[kind], party.histograms(payload)
    if kind == "sb_split":
        return REPLY[kind], party.split(payload)
    if kind == "sb_route":
        if held is None:
            raise DataError(f"party {party.name}: asked to route rows, but it holds no rows to score")
        return REPLY[kind], route_answer(party.splits, held, payload)
    raise DataError(f"party {party.name}: an unexpected {kind!r} message from the label party")


def fit_secureboost(label: SecureBoostLabelParty, parties: Mapping[str, SecureBoostFeatureParty], *,
                    observe: Observe | None = None, progress: Callable[[int, int], None] | None = None,
                    stats: FitStats | None = None, start: Sequence[TreeStructure] = (),
                    on_tree: Callable[[int, TreeStructure], None] | None = None) -> SecureBoostModel:
    """Boost ``label.params.trees`` trees over the label party and the feature parties (module docstring).

    The parties run in this process: :func:`boost` (the label party's side) with :func:`answer` (each feature
    party's), as a deployment runs them message by message (:mod:`fedx.vertical.gbdt_session`).

    Parameters
    ----------
    label : SecureBoostLabelParty
        The label party.
    parties : mapping of str to SecureBoostFeatureParty
        The feature parties, each with the same shared rows in the same order.
    observe : callable, optional
        ``observe(sender, receiver, kind, payload)`` for every message (ledgers, byte counts).
    progress : callable, optional
        ``progress(tree, level)`` after every level.
    stats : FitStats, optional
        Filled with timings and bytes.
    start : sequence of TreeStructure
        The trees of a checkpoint, to continue from (:func:`boost`); every party's ``splits`` must already
        hold its thresholds of them. The feature parties route their training rows through them.
    on_tree : callable, optional
        ``on_tree(tree, structure)`` after every tree (a checkpoint).

    Returns
    -------
    SecureBoostModel
        The joint model: the label party's tree structure and every party's own thresholds.
    """
    stats = stats if stats is not None else FitStats()

    def send(sender: str, receiver: str, kind: str, payload: bytes) -> bytes:
        stats.count(kind, payload)
        if observe is not None:
            observe(sender, receiver, kind, payload)
        return payload

    described = {name: send(name, label.name, "sb_describe", p.describe()) for name, p in parties.items()}
    held = {name: p.X for name, p in parties.items()} if start else None   # resuming: route the training rows
    model = run_driver(boost(label, described, stats=stats, progress=progress, start=start, on_tree=on_tree),
                       label.name, parties, send, held)
    model.shares.update({name: p.splits for name, p in parties.items()})
    return model


def run_driver(driver: Driver, label_name: str, parties: Mapping[str, SecureBoostFeatureParty],
               send: Callable[[str, str, str, bytes], bytes], held: Mapping[str, np.ndarray] | None = None) -> Any:
    """Run a label party's driver against feature parties in this process; the driver's result."""
    try:
        step = next(driver)
        while True:
            replies = {}
            for to, kind, payload in step.out:
                got = answer(parties[to], kind, send(label_name, to, kind, payload), (held or {}).get(to))
                if got is not None:
                    replies[to] = send(to, label_name, *got)
            step = driver.send(replies)
    except StopIteration as stop:
        return stop.value


def boost(label: SecureBoostLabelParty, described: Mapping[str, bytes], *, stats: FitStats | None = None,
          progress: Callable[[int, int], None] | None = None, start: Sequence[TreeStructure] = (),
          on_tree: Callable[[int, TreeStructure], None] | None = None) -> Driver:
    """The label party's side of the fit, from each feature party's ``sb_describe``: a :data:`Driver` whose result
    is the :class:`SecureBoostModel` (the feature parties' shares hold their column names, no threshold).

    ``start``: the trees of a checkpoint (``label.splits`` holding its thresholds of them). Before growing tree
    ``len(start)``, the label party rebuilds its margins on the training rows by federated routing
    (:func:`route`: each party answers left or right at its own splits, ``sb_route``), as the fit left them:
    the same leaf of every row, the same sums in the same order, so the trees that follow are those of the
    uninterrupted fit. ``on_tree(tree, structure)`` is called after every tree grown.
    """
    params = label.params
    stats = stats if stats is not None else FitStats()
    n = label.y.shape[0]
    t0 = time.perf_counter()
    owners = [label.name]
    names = [label.feature_names]
    n_bins = [label.edges.n_bins]
    public = label.public_key()
    for name, message in described.items():
        head, arrays = _unpack(message)
        rows = int(arrays["rows"][0])
        if rows != n:
            raise DataError(f"party {name}: {rows} shared rows, the label party {label.name} has {n}")
        owners.append(name)
        names.append(list(head["features"]))
        n_bins.append(arrays["n_bins"].astype(np.int64))
    setup = [(name, "sb_public_key", public) for name in described] if public else []
    widths = [len(x) for x in names]
    starts = np.concatenate([[0], np.cumsum(widths)]).astype(np.int64)
    all_bins = np.concatenate(n_bins).astype(np.int64)
    owner_of = np.repeat(np.arange(len(owners)), widths)
    if params.base_score is not None:
        score = params.base_score
    else:
        score = label.objective.base_score(float(label.y.sum()), float(np.exp(label.offset).sum()))
    base_margin = label.objective.base_margin(score)
    margin = base_margin + label.offset
    structures: list[TreeStructure] = list(start)
    if structures and len(structures) < params.trees:
        partial = SecureBoostModel(structures, base_margin, params, owners,
                                   [f"{o}:{c}" for o, cols in zip(owners, names) for c in cols], label.name,
                                   {label.name: label.splits})
        leaves = yield from route(partial, label.X)
        for k, done in enumerate(structures):
            margin = margin + done.value[leaves[:, k]]
    stats.seconds["setup"] = stats.seconds.get("setup", 0.0) + time.perf_counter() - t0
    t1 = time.perf_counter()
    for t in range(len(structures), params.trees):
        features = tree_features(params, len(all_bins), t)
        layout = HistogramLayout(features=features, n_bins=all_bins[features])
        offsets = layout.offsets
        local = [features[owner_of[features] == i] - starts[i] for i in range(len(owners))]
        g, h = label.gradients(t, margin)
        message = label.gradients_message(t, g, h)
        opening = setup + [(name, "sb_gradients", message) for name in described]
        setup = []
        own_layout = HistogramLayout(features=local[0], n_bins=n_bins[0][local[0]])
        own_flat = own_layout.flat_bins(label.bins)
        node = np.zeros(n, dtype=np.int64)
        builder = TreeBuilder(layout, params)
        level = 0
        while not builder.done:
            nodes = builder.request()
            sizes = [int(all_bins[starts[i] + local[i]].sum()) for i in range(len(owners))]
            asks = [(owners[i], "sb_nodes", _pack({"tree": t, "level": level},
                                                  {"node": _compact(node), "nodes": np.asarray(nodes),
                                                   "features": local[i]}))
                    for i in range(1, len(owners)) if sizes[i]]
            replies = (yield Step(opening + asks)) if asks or opening else {}
            opening = []
            hist = np.zeros((len(nodes), layout.size, 2))
            pos = 0
            for i, owner in enumerate(owners):
                if sizes[i] == 0:
                    continue
                if i == 0:
                    part = node_histograms(own_flat, g, h, _slots(node, nodes), len(nodes), sizes[i])
                else:
                    part = label.decrypt_histograms(replies[owner], (len(nodes), sizes[i]), stats, owner)
                hist[:, pos:pos + sizes[i]] = part
                pos += sizes[i]
            assert pos == offsets[-1]
            splits = builder.grow(hist)
            node = yield from _apply(label, owners, starts, owner_of, t, node, splits)
            level += 1
            if progress is not None:
                progress(t, level)
        if opening:   # a tree that split nothing still sends its gradients (the parties keep in step)
            yield Step(opening)
        arrays = builder.arrays
        tree = Tree.from_arrays(arrays, _no_edges(all_bins))
        margin = margin + tree.value[node]
        structures.append(TreeStructure.from_arrays(arrays, owner_of, starts))
        stats.levels_per_tree.append(level)
        now = time.perf_counter()
        stats.seconds["trees"] = stats.seconds.get("trees", 0.0) + now - t1
        t1 = now
        if on_tree is not None:
            on_tree(t, structures[-1])
    feature_names = [f"{o}:{c}" for o, cols in zip(owners, names) for c in cols]
    shares = {label.name: label.splits, **{o: PartySplits(o, cols) for o, cols in zip(owners[1:], names[1:])}}
    log.info("secureboost: %d trees, %.1f s, %.1f MB", len(structures), time.perf_counter() - t0,
             stats.total_bytes / 1e6)
    return SecureBoostModel(structures, base_margin, params, owners, feature_names, label.name, shares)


def _compact(node: np.ndarray) -> np.ndarray:
    """Node ids in the smallest unsigned type that holds them (a tree of depth D has < 2^(D+1) nodes)."""
    top = int(node.max()) if node.size else 0
    return node.astype(np.uint8 if top < 256 else np.uint16 if top < 65536 else np.uint32)


def _no_edges(all_bins: np.ndarray) -> BinEdges:
    """Edges of the right shape for :meth:`Tree.from_arrays` (the label party knows bins, not thresholds)."""
    return BinEdges(tuple(np.arange(int(b) - 2, dtype=np.float64) for b in all_bins))


def _apply(label: SecureBoostLabelParty, owners: list[str], starts: np.ndarray, owner_of: np.ndarray, tree: int,
           node: np.ndarray, splits: list[Split]) -> Generator[Step, Mapping[str, bytes], np.ndarray]:
    """Move every row of each split node to its child: the owner of the split's column says which."""
    node = node.copy()
    by_owner: dict[int, list[Split]] = {}
    for s in splits:
        by_owner.setdefault(int(owner_of[s.feature]), []).append(s)
    for s in by_owner.pop(0, []):
        f = s.feature - int(starts[0])
        rows = node == s.node
        b = label.bins[rows, f].astype(np.int64)
        missing = b == int(label.edges.n_bins[f]) - 1
        go_left = np.where(missing, s.default_left, b <= s.bin)
        label.splits.add(tree, s.node, f, label.edges.threshold(f, s.bin), s.default_left)
        node[np.flatnonzero(rows)] = np.where(go_left, s.left, s.right)
    if not by_owner:
        return node
    asks = [(owners[i], "sb_split", _pack({"tree": tree, "splits": [
        {"node": s.node, "feature": s.feature - int(starts[i]), "bin": s.bin, "default_left": s.default_left}
        for s in group]})) for i, group in by_owner.items()]
    replies = yield Step(asks)
    moved = node.copy()
    for i, group in by_owner.items():
        _, bits = _unpack(replies[owners[i]])
        for k, s in enumerate(group):
            rows = np.flatnonzero(node == s.node)
            go_left = np.unpackbits(bits[f"s{k}"], count=rows.size).astype(bool)
            moved[rows] = np.where(go_left, s.left, s.right)
    return moved


# ---------------------------------------------------------------------- federated prediction, message by message

def route(model: SecureBoostModel, X_label: np.ndarray) -> Driver:
    """The label party's side of federated prediction over ``len(X_label)`` rows (its own columns of them, in the
    common order): level by level over every tree, each party is sent ``(row, tree, node)`` of the rows at its
    splits and answers left or right (:func:`route_answer`). The result is the leaf of every row in every tree,
    ``(n, trees)``, as :meth:`SecureBoostModel.leaves`."""
    X_label = np.asarray(X_label, dtype=np.float64)
    n, trees = X_label.shape[0], model.trees
    node = np.zeros((n, len(trees)), dtype=np.int64)
    for _ in range(max([t.depth for t in trees if (t.owner >= 0).any()] or [0])):
        owner = np.column_stack([t.owner[node[:, k]] for k, t in enumerate(trees)])
        go = np.zeros(node.shape, dtype=bool)
        asks, where = [], {}
        for i, p in enumerate(model.parties):
            rows, cols = np.nonzero(owner == i)
            if rows.size == 0:
                continue
            if p == model.label_party:
                for k in np.unique(cols):
                    sel = cols == k
                    go[rows[sel], k] = model.shares[p].go_left(int(k), node[rows[sel], k], X_label[rows[sel]])
                continue
            where[p] = (rows, cols)
            asks.append((p, "sb_route", _pack({}, {"row": rows.astype(np.int64), "tree": cols.astype(np.int64),
                                                   "node": node[rows, cols]})))
        replies = (yield Step(asks)) if asks else {}
        for p, (rows, cols) in where.items():
            _, arrays = _unpack(replies[p])
            go[rows, cols] = np.unpackbits(arrays["left"], count=rows.size).astype(bool)
        inner = owner >= 0
        for k, t in enumerate(trees):
            m = inner[:, k]
            node[m, k] = np.where(go[m, k], t.left[node[m, k]], t.right[node[m, k]])
    return node


def route_answer(splits: PartySplits, X: np.ndarray, message: bytes) -> bytes:
    """A party's answer to ``sb_route``: for each (row, tree, node) at one of its splits, whether the row goes left
    (from its own values ``X`` of the rows to score and its own thresholds)."""
    _, arrays = _unpack(message)
    rows, trees, nodes = (arrays[k].astype(np.int64) for k in ("row", "tree", "node"))
    if rows.size and (rows.min() < 0 or rows.max() >= X.shape[0]):
        raise DataError(f"party {splits.party}: asked to route row {int(rows.max())} of {X.shape[0]} rows to score")
    left = np.zeros(rows.size, dtype=bool)
    for t in np.unique(trees):
        sel = trees == t
        left[sel] = splits.go_left(int(t), nodes[sel], X[rows[sel]])
    return _pack({}, {"left": np.packbits(left)})
