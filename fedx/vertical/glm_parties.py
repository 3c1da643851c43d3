"""The two roles of the vertical GLM: the label party, which solves, and a feature party, which only multiplies.

With a log link the mean factors over the parties: ``mu_i = a_i b_i``, ``a_i = e_i exp(z_i' beta_g)`` known
only to the label party (exposure, its features, the intercept) and ``b_i = exp(x_i' beta_h)`` known only to
the feature party. For the variance power ``p`` (1 Poisson, 2 Gamma, in (1, 2) Tweedie) every per-row
quantity of IRLS is a label-side vector times a power ``b^q`` of the feature side:

==========  ==========================  =====  ==========================================================
type        label-side vector ``L``     ``q``  enters
==========  ==========================  =====  ==========================================================
W           ``w a^(2-p)``               2-p    X'WX (every block), the score, deviance, Pearson, loglike
U           ``w y a^(1-p)``             1-p    the score, the observed information (Gamma, Tweedie)
P           ``w y^2 a^(-p)``            -p     Pearson's chi2 (the dispersion of Gamma and Tweedie)
==========  ==========================  =====  ==========================================================

so with ``D = [1, z, x]`` the label party needs, per type, ``D' diag(L b^q) D`` (or its first column, or its
corner), made of three kinds of sums over the shared rows:

- the feature party's block ``sum L (b^q x_l x_m)`` and the cross block ``sum (L z_j)(b^q x_l)``: the label
  party sends ``Enc_g(L z_j)`` under its own key, the feature party multiplies by its plaintext ``b^q x``
  and returns encrypted totals (:class:`~fedx.vertical.glm_feature.FeatureParty`);
- the label party's block ``sum (L z_j z_k) b^q``: in the *two-key* variant (default) the feature party also
  sends ``Enc_h(b^q)`` under its key, the label party computes the totals, adds random masks and has the
  feature party decrypt them; in the *one-key* variant the label party sends ``Enc_g(L z_j z_k)`` too.

A type with ``q = 0`` (U for Poisson: ``w y``; W for Gamma: ``w``) does not move with the coefficients:
its sums are taken once, at the setup. The deviance and log-likelihood need ``sum w y log b`` (Poisson) or
``sum w log b`` (Gamma), which is ``beta_h' X_h'(w y)`` (or ``beta_h' X_h' w``) from the same static sums.

With several feature parties ``b = prod_k b_k`` and every sum is a product of the label vector with one
recipe of each party (:mod:`fedx.vertical.glm_plan`): the vector travels along a path of parties, each but
the last multiplying it row by row under the label party's key, the last summing it. In the two-key
variant ``Enc_1(b_1^q)`` of the first feature party travels the chain the same way to the label party.

The label party also learns, at the setup, the support of every feature column among the shared rows and
of every cell of a pair of columns that meet in a cross block, and refuses the run when one of them holds
fewer than ``min_cohort`` rows (:func:`fedx.vertical.glm_plan.check_cells`); each feature party checks the
smallest such cell against its own ``min_cohort``.

The label party assembles the statistics vector of :func:`fedx.aggregators.newton.stats_layout` for the
joint design and runs :class:`~fedx.aggregators.newton.NewtonRule` on it: the steps, the step halving, the
convergence test and the report are those of the horizontal ``newton``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..aggregators.base import ModelState
from ..aggregators.glm_families import get_family
from ..aggregators.newton import NewtonRule, beta_to_params, params_to_beta, round_inputs, stats_layout
from ..errors import AggregationError, BlobError, ConfigError, DataError, PolicyError
from .glm_feature import FeatureParty, check_matrix, check_supports
from .glm_messages import Message, decode_message, encode_message, make_evaluator, make_owner
from .glm_plan import check_cells, check_pairs, expectations, plan

__all__ = ["FeatureParty", "LabelParty", "check_supports"]

LABEL_BLOCKS = ("two_key", "one_key")
#: Feature parties a vertical GLM takes under CKKS: a chain of k parties needs k ciphertext levels.
MAX_CKKS_FEATURE_PARTIES = 2


class _Type:
    """One label-side vector type of the module docstring: its power ``q`` and how much of D'(.)D it needs."""

    def __init__(self, name: str, q: float, order: int) -> None:
        self.name, self.q, self.order = name, q, order
        self.static = q == 0.0


class LabelParty:
    """The party with the target: it holds y, exposure, weights and its own features, and solves each step.

    It learns every coefficient, the aggregates of the module docstring (X'WX blocks, score, deviance), the
    support counts of the feature columns, and nothing per row of the feature parties. Drive it with
    :func:`fedx.vertical.glm_protocol.fit_vertical_glm`, or by hand: :meth:`start`, then
    :meth:`receive_from` with each message until :attr:`done`.

    Parameters
    ----------
    name : str
        Its name (``insurer``).
    X : np.ndarray
        Its design columns (n, p_g), without intercept, over the shared rows in the common order.
    feature_names : list of str
        Their names.
    y : np.ndarray
        The target of the shared rows.
    family : str
        ``poisson``, ``gamma`` or ``tweedie`` (log link).
    exposure : np.ndarray, optional
        Exposure (offset ``log exposure``).
    weight : np.ndarray, optional
        ``var_weights``.
    tweedie_power : float
        Variance power of ``tweedie``.
    encryption : str
        ``ckks`` or ``none``.
    label_block : str
        ``two_key`` (default) or ``one_key``: how its own block of X'WX is computed (module docstring).
    mask_bits : int
        Two-key masks are uniform in +-2^mask_bits times the normalised total's bound.
    min_cohort, l2, tolerance
        Support floor of every column and pair of columns; the ridge penalty and convergence tolerance.
    peer_rows : mapping, optional
        For a feature party that does not know which of its rows are shared: its number of rows and, in
        the common order, the position of each shared row among them (the PSI's ``peer_positions`` in its
        shuffled order). Vectors for it are then sent over all its rows, with zeros elsewhere. Only with one
        feature party.
    reference_levels : mapping, optional
        The reference level of each categorical coefficient group (``insurer:region``), for the report.
    evaluate : sequence of float, optional
        Fit nothing: compute the statistics once at these joint coefficients (intercept, the label party's,
        then each feature party's), for the deviance of held-out rows (:attr:`last_deviance`).
    """

    def __init__(self, name: str, X: np.ndarray, feature_names: list[str], y: np.ndarray, *, family: str,
                 exposure: np.ndarray | None = None, weight: np.ndarray | None = None, tweedie_power: float = 1.5,
                 encryption: str = "ckks", label_block: str = "two_key", mask_bits: int = 16, min_cohort: int = 10,
                 l2: float = 0.0, tolerance: float = 1e-8, seed: int | None = None,
                 peer_rows: Mapping[str, tuple[int, np.ndarray]] | None = None,
                 reference_levels: Mapping[str, str] | None = None, evaluate: Any = None) -> None:
        self.name, self.names, self.encryption = name, list(feature_names), encryption
        self.fam = get_family(family, tweedie_power)
        if self.fam.link != "log":
            raise ConfigError(f"model: a vertical GLM needs a log link (poisson, gamma, tweedie), got {family!r}")
        if label_block not in LABEL_BLOCKS:
            raise ConfigError(f"label_block: expected one of {LABEL_BLOCKS}, got {label_block!r}")
        self.label_block, self.mask_bits, self.min_cohort = label_block, int(mask_bits), int(min_cohort)
        self.X = check_matrix(X, self.names, name)
        n = self.X.shape[0]
        self.y = self._column(y, "target", n)
        self.fam.check_y(self.y)
        self.offset = np.zeros(n) if exposure is None else np.log(self._column(exposure, "exposure", n, positive=True))
        self.w = np.ones(n) if weight is None else self._column(weight, "weight", n, positive=True)
        check_supports(name, self.X, self.names, min_cohort)
        check_pairs(name, self.X, self.names, min_cohort)
        self.Z = np.hstack([np.ones((n, 1)), self.X])
        self.tweedie_power, self.l2, self.tolerance = tweedie_power, l2, tolerance
        p = self.fam.power
        self.types = [_Type("W", 2.0 - p, 2), _Type("U", 1.0 - p, 1 if self.fam.canonical else 2), _Type("P", -p, 0)]
        self._rng = np.random.default_rng(seed)
        self._owner = make_owner(encryption)
        self.peer_rows = {k: (int(v[0]), np.asarray(v[1], dtype=np.int64)) for k, v in (peer_rows or {}).items()}
        self.reference_levels = dict(reference_levels or {})
        self._evaluate = None if evaluate is None else np.asarray(evaluate, dtype=np.float64)
        self.peers: list[str] = []
        self.done = False
        self.state: ModelState | None = None
        self.total: np.ndarray | None = None
        self.rule: NewtonRule | None = None
        self._static: dict[str, Any] = {}
        self._grams: dict[str, np.ndarray] = {}
        self._phase = "new"
        self._awaiting: set[str] = set()
        self.last_deviance: float | None = None

    def _column(self, values: Any, what: str, n: int, positive: bool = False) -> np.ndarray:
        arr = np.asarray(values, dtype=np.float64)
        if arr.shape != (n,) or not np.all(np.isfinite(arr)) or (positive and np.any(arr <= 0)):
            raise DataError(f"party {self.name}: {what} must be {'positive ' if positive else ''}finite numbers, one "
                            f"per shared row ({n})")
        return arr

    @property
    def round(self) -> int:
        """The Newton round under way (0 during the setup)."""
        return 0 if self.state is None else int(self.state.round)

    # ------------------------------------------------------------------ the message flow

    def start(self, peers: Mapping[str, list[str]]) -> dict[str, bytes]:
        """The setup messages to the feature parties, given their column names (public: they are in the config).

        The order of ``peers`` is the order of the coefficients and of the chain (the first feature party
        holds the key of the two-key variant).
        """
        if self._phase != "new":
            raise AggregationError(f"party {self.name}: the fit has already started")
        if not peers:
            raise ConfigError(f"data.parties: a vertical GLM needs at least one feature party besides {self.name}")
        self.peers = list(peers)
        if self.encryption == "ckks" and len(self.peers) > MAX_CKKS_FEATURE_PARTIES:
            raise ConfigError(f"data.parties: under CKKS a vertical GLM takes at most {MAX_CKKS_FEATURE_PARTIES} "
                              f"feature parties (a product over k parties' rows needs k ciphertext levels), got "
                              f"{len(self.peers)} ({', '.join(self.peers)})")
        unknown = sorted(set(self.peer_rows) - set(self.peers))
        if unknown:
            raise ConfigError(f"peer_rows: {unknown} are not feature parties of this fit")
        if len(self.peers) > 1 and self.peer_rows:
            raise ConfigError("security.psi_reveal: with more than one feature party every party must hold the shared "
                              "rows in the common order (their row-wise products pass from party to party), so the "
                              "run needs psi_reveal: all")
        self.peer_names = {p: list(cols) for p, cols in peers.items()}
        pg1 = self.Z.shape[1]
        self.offsets: dict[str, int] = {}
        start = pg1
        for p in self.peers:
            self.offsets[p] = start
            start += len(self.peer_names[p])
        self.k = start
        self._features = [(u, p, l) for p in self.peers for l, u in
                          enumerate(range(self.offsets[p], self.offsets[p] + len(self.peer_names[p])), start=1)]
        self.owner = self.peers[0] if self.label_block == "two_key" else None
        self._binary: dict[int, bool] = {}
        self._counts: dict[tuple[Any, ...], int] = {}
        self._pending_powers: set[str] = set()
        self._powers: dict[str, tuple[bytes, int]] = {}
        self._begin_phase()
        evaluating = self._evaluate is not None
        for t in self.types:
            if t.static and t.order:
                L = self._label_vector(t, np.zeros(pg1))
                self._grams[t.name] = self._local_block(t, L)
                self._cross(t, L, first_column=evaluating)
        if not evaluating:  # the deviance at given coefficients needs no block of X'WX, so no supports
            self._support_requests()
        expect = expectations(self._paths)
        out = {}
        for p in self.peers:
            box = self._boxes[p]
            meta = {"rows": self._rows(p), "two_key": self.label_block == "two_key", "family": self.fam.name,
                    "chain": self.peers, "owner": self.owner, "jobs": box["jobs"], "expect": expect.get(p, {})}
            out[p] = encode_message(Message("setup", 0, meta, [self._owner.public_bytes(), *box["parts"]]))
        self._phase, self._awaiting = "setup", set(self.peers)
        return out

    def receive(self, replies: Mapping[str, bytes]) -> dict[str, bytes]:
        """Consume the feature parties' messages; the next messages (empty once :attr:`done`)."""
        out: dict[str, bytes] = {}
        for sender, data in replies.items():
            out.update(self.receive_from(sender, data))
        return out

    def receive_from(self, sender: str, data: bytes) -> dict[str, bytes]:
        """Consume one feature party's message; the next messages, by recipient, once every awaited one is in."""
        if sender not in self._awaiting:
            raise BlobError(f"party {self.name}: an unexpected message from {sender!r} (awaiting "
                            f"{sorted(self._awaiting) or 'nothing'})")
        if self._phase == "setup":
            self._on_setup_reply(sender, decode_message(data, "setup_reply", f"setup reply of {sender}"))
        elif self._phase == "round":
            msg = decode_message(data, "round_reply", f"round reply of {sender}")
            self._read_reply(sender, msg, list(msg.parts))
        else:
            msg = decode_message(data, "unmask_reply", f"unmask reply of {sender}")
            values = msg.meta.get("values")
            pending = self._pending_unmask
            if not isinstance(values, list) or len(values) != len(pending):
                raise BlobError(f"unmask reply of {sender}: expected {len(pending)} lists of totals")
            for (keys, masks, e), vals in zip(pending, values):
                totals = np.asarray(vals, dtype=np.float64)[:len(keys)] - masks[:len(keys)]
                for (name, j, k, r), value in zip(keys, totals):
                    self._grams[name][j, k] = self._grams[name][k, j] = value * r * 2.0 ** e
        self._awaiting.discard(sender)
        if self._awaiting:
            return {}
        return self._phase_done()

    def _phase_done(self) -> dict[str, bytes]:
        if self._ids:
            raise BlobError(f"party {self.name}: no totals came back for {sorted(self._ids)[:3]}")
        if self._phase == "setup":
            self._after_setup()
            return self._round_messages()
        if self._phase == "round" and self._pending_local:
            return self._unmask_messages()
        return self._advance()

    # ------------------------------------------------------------------ building requests

    def _begin_phase(self) -> None:
        self._boxes: dict[str, dict[str, Any]] = {p: {"jobs": [], "parts": [], "index": {}} for p in self.peers}
        self._paths: list[list[str]] = []
        self._ids: dict[str, list[Any]] = {}
        self._scale: dict[str, float] = {}
        self._vectors = 0

    def _rows(self, peer: str) -> int:
        return self.peer_rows[peer][0] if peer in self.peer_rows else int(self.Z.shape[0])

    def _space(self, v: np.ndarray, peer: str) -> np.ndarray:
        """``v`` over the shared rows, laid out over ``peer``'s rows (zeros outside the intersection)."""
        if peer not in self.peer_rows:
            return v
        n_peer, positions = self.peer_rows[peer]
        out = np.zeros(n_peer)
        out[positions] = v
        return out

    def _label_vector(self, t: _Type, beta_g: np.ndarray) -> np.ndarray:
        eta = self.offset + self.Z @ beta_g
        with np.errstate(over="raise"):
            try:
                if t.name == "W":
                    return self.w * np.exp((2.0 - self.fam.power) * eta)
                if t.name == "U":
                    return self.w * self.y * np.exp((1.0 - self.fam.power) * eta)
                return self.w * self.y ** 2 * np.exp(-self.fam.power * eta)
            except FloatingPointError:
                raise AggregationError(f"party {self.name}: exp(z' beta) overflows; the fit diverged") from None

    def _term(self, assign: Mapping[str, list[Any]], q: float) -> list[list[Any]]:
        """One recipe per feature party: ``assign``'s, and ``b^q`` alone for the others."""
        return [assign.get(p, ["pow", q, 0, 0]) for p in self.peers]

    def _request(self, vector: np.ndarray, terms: list[tuple[list[list[Any]], Any]]) -> None:
        """Encrypt ``vector / sum|vector|`` once and ask for its totals along every path its terms need."""
        vid = f"v{self._vectors}"
        self._vectors += 1
        jobs, keys, local = plan(terms, self.peers, vid)
        if local:
            raise AggregationError(f"party {self.name}: a request that no feature party takes part in")
        r = float(np.sum(np.abs(vector)))
        r = r if r > 0 else 1.0
        blobs: dict[str, bytes] = {}
        for job in jobs:
            first = job.path[0]
            box = self._boxes[first]
            if vid not in box["index"]:
                if first not in blobs:
                    blobs[first] = self._owner.encrypt(self._space(vector / r, first))
                box["parts"].append(blobs[first])
                box["index"][vid] = len(box["parts"]) - 1
            box["jobs"].append(job.to_dict(box["index"][vid]))
            self._paths.append(job.path)
        self._scale[vid] = r
        self._ids.update(keys)

    def _cross(self, t: _Type, L: np.ndarray, first_column: bool = False) -> None:
        """Vectors ``Enc(L z_j)`` with the recipes of their cross (and, for j = 0, feature-block) totals;
        ``first_column``: only the totals against the intercept (``X_h' L``)."""
        q, feats = t.q, self._features
        order = 1 if first_column else t.order
        for j in range(self.Z.shape[1] if order == 2 else 1):
            terms = [(self._term({p: ["pow", q, l, 0]}, q), ("gram", t.name, j, u)) for u, p, l in feats]
            if j == 0 and order == 2:
                for a, (u, p, l) in enumerate(feats):
                    for w, p2, m in feats[a:]:
                        assign = {p: ["pow", q, l, m]} if p == p2 else {p: ["pow", q, l, 0], p2: ["pow", q, m, 0]}
                        terms.append((self._term(assign, q), ("gram", t.name, u, w)))
            self._request(L * self.Z[:, j], terms)

    def _support_requests(self) -> None:
        """The supports among the shared rows: of each feature column, and of each pair that meets in a block."""
        feats, n = self._features, self.Z.shape[0]
        terms = []
        for u, p, l in feats:
            terms.append((self._term({p: ["pos", l]}, 0.0), ("count", "pos", u)))
            terms.append((self._term({p: ["neg", l]}, 0.0), ("count", "neg", u)))
        for a, (u, p, l) in enumerate(feats):
            for w, p2, m in feats[a + 1:]:
                if p2 != p:
                    terms.append((self._term({p: ["nz", l, 0], p2: ["nz", m, 0]}, 0.0), ("count", "cross", u, w)))
        self._request(np.ones(n), terms)
        for j in range(1, self.Z.shape[1]):
            nz = (self.Z[:, j] != 0).astype(np.float64)
            self._request(nz, [(self._term({p: ["nz", l, 0]}, 0.0), ("count", "cross", j, u)) for u, p, l in feats])
        if self.fam.boundary_zero:
            above = (self.y > 0).astype(np.float64)
            if above.any():
                self._request(above, [(self._term({p: [kind, l]}, 0.0), ("count", f"{kind}_above", u))
                                      for u, p, l in feats for kind in ("pos", "neg")])

    def _block_pairs(self, t: _Type) -> list[tuple[int, int]]:
        pg1 = self.Z.shape[1]
        if t.order == 2:
            return [(j, k) for j in range(pg1) for k in range(j, pg1)]
        return [(j, 0) for j in range(pg1)] if t.order == 1 else [(0, 0)]

    def _local_block(self, t: _Type, L: np.ndarray) -> np.ndarray:
        gram = np.zeros((self.k, self.k))
        for j, k in self._block_pairs(t):
            gram[j, k] = gram[k, j] = float(np.sum(L * self.Z[:, j] * self.Z[:, k]))
        return gram

    def _read_reply(self, sender: str, msg: Message, parts: list[bytes]) -> None:
        ids, exps = msg.meta.get("sums", []), msg.meta.get("exps", [])
        pids, pexps = msg.meta.get("powers", []), msg.meta.get("power_exps", [])
        if not (isinstance(ids, list) and isinstance(exps, list) and isinstance(pids, list)
                and isinstance(pexps, list)) or len(exps) != len(ids) or len(pexps) != len(pids) \
                or len(parts) != len(ids) + len(pids):
            raise BlobError(f"reply of {sender}: {len(parts)} parts for {len(ids)} sums and {len(pids)} powers")
        for i, (sid, e, part) in enumerate(zip(ids, exps, parts)):
            keys = self._ids.pop(str(sid), None)
            if keys is None:
                raise BlobError(f"reply of {sender}: totals {sid!r} were not asked of it")
            totals = self._owner.decrypt_sums(part, f"sums {i} from {sender}")
            if totals.shape != (len(keys),) or not isinstance(e, list) or len(e) != len(keys):
                raise BlobError(f"sums {sid} from {sender}: {totals.size} totals for {len(keys)} requests")
            r = self._scale[str(sid).split("/")[0]]
            for key, total, ex in zip(keys, totals, e):
                self._file(key, float(total) * r * 2.0 ** int(ex))
        for pid, e, part in zip(pids, pexps, parts[len(ids):]):
            if pid not in self._pending_powers or pid in self._powers:
                raise BlobError(f"reply of {sender}: a power vector {pid!r} that was not asked for")
            self._powers[pid] = (part, int(e))

    def _file(self, key: tuple[Any, ...], value: float) -> None:
        if key[0] == "gram":
            _, name, a, b = key
            self._grams[name][a, b] = self._grams[name][b, a] = value
        else:
            self._counts[key[1:]] = int(round(value))

    # ------------------------------------------------------------------ the setup's outcome

    def _on_setup_reply(self, sender: str, msg: Message) -> None:
        meta = msg.meta
        if meta.get("names") != self.peer_names[sender]:
            raise DataError(f"setup reply of {sender}: its columns are {meta.get('names')}, the config says "
                            f"{self.peer_names[sender]}")
        binary = meta.get("binary")
        if not isinstance(binary, list) or len(binary) != len(self.peer_names[sender]):
            raise BlobError(f"setup reply of {sender}: malformed column flags")
        for l, flag in enumerate(binary, start=1):
            self._binary[self.offsets[sender] + l - 1] = bool(flag)
        if sender == self.owner:
            self._peer_eval = make_evaluator(self.encryption, msg.parts[0])
            self._owner_public = msg.parts[0]
        self._read_reply(sender, msg, list(msg.parts[1:]))

    def _after_setup(self) -> None:
        n, pg1, c = self.Z.shape[0], self.Z.shape[1], self._counts
        names = self.coefficient_names()
        self.rule = NewtonRule(self.fam.name, l2=self.l2, tweedie_power=self.tweedie_power, tolerance=self.tolerance,
                               feature_names=names[1:])
        if self._evaluate is not None:
            if self._evaluate.shape != (self.k,) or not np.all(np.isfinite(self._evaluate)):
                raise AggregationError(f"party {self.name}: evaluate needs {self.k} finite coefficients")
            zeros = np.zeros(self.k)
            self._static.update(positive=zeros, negative=zeros, pos_above=zeros, neg_above=zeros)
            self.state = ModelState(beta_to_params(self._evaluate), {}, 1)
            self._cells = {p: None for p in self.peers}
            self._first_round = True
            return
        nonzero = {u: c[("pos", u)] + c[("neg", u)] for u, _, _ in self._features}
        binary = dict(self._binary)
        for j in range(1, pg1):
            nonzero[j] = int(np.count_nonzero(self.Z[:, j]))
            binary[j] = bool(np.all((self.Z[:, j] == 0) | (self.Z[:, j] == 1)))
        for u, p, _ in self._features:
            zeros = n - nonzero[u]
            if nonzero[u] < self.min_cohort or (binary[u] and 0 < zeros < self.min_cohort):
                what = f"{nonzero[u]} nonzero" if nonzero[u] < self.min_cohort else f"{zeros} zero"
                raise PolicyError(f"party {self.name}: column {names[u]!r} has {what} rows among the {n} shared rows, "
                                  f"fewer than min_cohort = {self.min_cohort}; its sums would single out those rows. "
                                  f"Merge the level into another or drop the column")
        self._cells: dict[str, int | None] = {p: None for p in self.peers}
        owner_of = {u: p for u, p, _ in self._features}
        for key, count in c.items():
            if key[0] != "cross":
                continue
            _, a, b = key
            smallest = check_cells(self.name, names[a], names[b], count, nonzero[a], nonzero[b], n, binary[a],
                                   binary[b], self.min_cohort)
            for col in (a, b):
                p = owner_of.get(col)
                if p is not None and smallest is not None:
                    self._cells[p] = smallest if self._cells[p] is None else min(self._cells[p], smallest)
        pos = np.concatenate([(self.Z > 0).sum(axis=0), [c[("pos", u)] for u, _, _ in self._features]])
        neg = np.concatenate([(self.Z < 0).sum(axis=0), [c[("neg", u)] for u, _, _ in self._features]])
        above = (self.y > 0)[:, None]
        pos_above = [c.get(("pos_above", u), 0) for u, _, _ in self._features]
        neg_above = [c.get(("neg_above", u), 0) for u, _, _ in self._features]
        self._static.update(
            positive=pos.astype(np.float64), negative=neg.astype(np.float64),
            pos_above=np.concatenate([((self.Z > 0) & above).sum(axis=0), pos_above]),
            neg_above=np.concatenate([((self.Z < 0) & above).sum(axis=0), neg_above]))
        self._first_round = True
        start = ModelState(beta_to_params(np.zeros(self.k)))
        self.state = self.rule.apply(start, [self._stats_vector(start, started=False)])

    # ------------------------------------------------------------------ the rounds

    def _round_messages(self) -> dict[str, bytes]:
        assert self.state is not None
        beta = params_to_beta(self.state.params)
        pg1 = self.Z.shape[1]
        self._begin_phase()
        self._pending_local: list[Any] = []
        self._pending_powers, self._powers = set(), {}
        powers = []
        evaluating = self._evaluate is not None
        for t in self.types:
            if t.static:
                continue
            L = self._label_vector(t, beta[:pg1])
            self._grams[t.name] = np.zeros((self.k, self.k))
            if evaluating and t.name == "P":
                continue  # the deviance needs sum W and sum U alone
            if t.order and not evaluating:
                self._cross(t, L)
            block = [(0, 0)] if evaluating else self._block_pairs(t)
            if self.label_block == "one_key":
                for j, k in block:
                    self._request(L * self.Z[:, j] * self.Z[:, k], [(self._term({}, t.q), ("gram", t.name, j, k))])
            else:
                pid = f"pow:{t.name}"
                powers.append({"id": pid, "q": t.q, "path": self.peers[1:]})
                self._pending_powers.add(pid)
                self._pending_local.append((t, L, block, pid))
        if powers:
            self._paths.append(list(self.peers))
        expect = expectations(self._paths)
        out = {}
        for p in self.peers:
            box = self._boxes[p]
            start = self.offsets[p]
            meta: dict[str, Any] = {"beta": beta[start:start + len(self.peer_names[p])].tolist(), "jobs": box["jobs"],
                                    "expect": expect.get(p, {})}
            parts = list(box["parts"])
            if p == self.owner and powers:
                meta["powers"] = powers
            if self._first_round:
                meta["cells"] = self._cells[p]
                if self.owner is not None and p != self.owner:
                    parts.append(self._owner_public)
                    meta["owner_public"] = len(parts) - 1
            out[p] = encode_message(Message("round", self.state.round, meta, parts))
        self._first_round = False
        self._phase, self._awaiting = "round", set(self.peers)
        return out

    def _unmask_messages(self) -> dict[str, bytes]:
        assert self.state is not None and self.owner is not None
        chained = len(self.peers) > 1
        masked, pending = [], []
        n_space = self._rows(self.owner)
        for t, L, block, pid in self._pending_local:
            if pid not in self._powers:
                raise BlobError(f"party {self.name}: the power vector {pid} did not come back")
            blob, e = self._powers[pid]
            vec = self._peer_eval.load_vector(blob, n_space, f"Enc(b^q) of {pid}", chained=chained)
            plains, keys = [], []
            for j, k in block:
                c = L * self.Z[:, j] * self.Z[:, k]
                r = float(np.sum(np.abs(c))) or 1.0
                plains.append(self._space(c / r, self.owner))
                keys.append((t.name, j, k, r))
            masks = self._rng.uniform(-1.0, 1.0, size=len(plains) + 1) * 2.0 ** self.mask_bits
            masked.append(self._peer_eval.inner_sums(vec, plains, masks=masks))
            pending.append((keys, masks, e))
        self._pending_unmask = pending
        self._phase, self._awaiting = "unmask", {self.owner}
        return {self.owner: encode_message(Message("unmask", self.state.round, {}, masked))}

    def _advance(self) -> dict[str, bytes]:
        assert self.state is not None and self.rule is not None
        total = self._stats_vector(self.state, started=True)
        if self._evaluate is not None or self.rule.report_ready(self.state):
            self.total, self.done = total, True
            self._phase, self._awaiting = "done", set()
            return {}
        self.state = self.rule.apply(self.state, [total])
        return self._round_messages()

    # ------------------------------------------------------------------ the statistics vector

    def coefficient_names(self) -> list[str]:
        """``Intercept``, then ``label:column`` and each feature party's ``party:column``, in the design's order."""
        return ["Intercept", *[f"{self.name}:{c}" for c in self.names],
                *[f"{p}:{c}" for p in self.peers for c in self.peer_names[p]]]

    def _stats_vector(self, state: ModelState, started: bool) -> np.ndarray:
        """The :func:`stats_layout` vector of the joint design at ``state``, from the sums of this round."""
        fam, k, n = self.fam, self.k, float(self.Z.shape[0])
        layout = stats_layout(k - 1, fam.name)
        vec = np.zeros(next(reversed(layout.values())).stop)
        put = lambda name, value: vec.__setitem__(layout[name], value)
        st = self._static
        put("count", n)
        put("sum_weight", float(np.sum(self.w)))
        a, b = fam.null_sums(self.y, self.offset, self.w)
        put("null_numerator", a)
        put("null_denominator", b)
        put("positive", st["positive"])
        put("negative", st["negative"])
        if fam.boundary_zero:
            put("positive_above", st["pos_above"])
            put("negative_above", st["neg_above"])
        if not started:
            return vec
        beta = params_to_beta(state.params)
        inputs = round_inputs(state)
        b0, scale = inputs["null_intercept"], inputs["scale"]
        put("inputs", n * np.concatenate([beta, [0.0 if b0 is None else b0, scale]]))
        upper = np.triu_indices(k)
        gw, gu, gp = self._grams["W"], self._grams["U"], self._grams["P"]
        put("xtwx", gw[upper])
        p = fam.power
        if not fam.canonical:
            put("hessian", ((2.0 - p) * gw + (p - 1.0) * gu)[upper])
        put("score", gu[:, 0] - gw[:, 0])
        pg1 = self.Z.shape[1]
        eta_g = self.offset + self.Z @ beta[:pg1]
        s_w, s_u, s_p = gw[0, 0], gu[0, 0], gp[0, 0]
        w, y = self.w, self.y
        if fam.name == "poisson":
            wy_eta = float(np.sum(w * y * eta_g) + beta[pg1:] @ gu[pg1:, 0])
            dev = 2.0 * (float(np.sum(w * (_xlogy(y) - y))) - wy_eta + s_w)
            pearson = s_p - 2.0 * float(np.sum(w * y)) + s_w
            llf = fam.loglike(y, np.zeros_like(y), w, 1.0) + float(np.sum(w)) + wy_eta - s_w
        elif fam.name == "gamma":
            w_eta = float(np.sum(w * eta_g) + beta[pg1:] @ gw[pg1:, 0])
            dev = 2.0 * (w_eta - float(np.sum(w * np.log(y))) + s_u - float(np.sum(w)))
            pearson = s_p - 2.0 * s_u + float(np.sum(w))
            llf = fam.loglike(y, np.zeros_like(y), w, scale) + float(np.sum(w * y)) / scale - (w_eta + s_u) / scale
        else:
            dev = 2.0 * (float(np.sum(w * y ** (2.0 - p))) / ((1.0 - p) * (2.0 - p)) - s_u / (1.0 - p)
                         + s_w / (2.0 - p))
            pearson = s_p - 2.0 * s_u + s_w
            at0 = float(np.sum(w * (y / (1.0 - p) - 1.0 / (2.0 - p)))) / scale
            llf = fam.loglike(y, np.zeros_like(y), w, scale) - at0 + (s_u / (1.0 - p) - s_w / (2.0 - p)) / scale
        put("deviance", dev)
        self.last_deviance = float(dev)
        put("pearson_chi2", pearson)
        put("loglike", llf)
        if b0 is not None:
            null = fam.terms(y, b0 + self.offset, w)
            put("null_deviance", float(null.deviance.sum()))
            put("null_score", float(null.score_weight.sum()))
            put("null_information", float(null.working_weight.sum()))
        if not np.all(np.isfinite(vec)):
            raise AggregationError("vertical newton: the statistics overflow at the current coefficients")
        return vec


def _xlogy(y: np.ndarray) -> np.ndarray:
    out = np.zeros_like(y)
    pos = y > 0
    out[pos] = y[pos] * np.log(y[pos])
    return out

