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
  and returns encrypted totals (:meth:`FeatureParty.respond`);
- the label party's block ``sum (L z_j z_k) b^q``: in the *two-key* variant (default) the feature party also
  sends ``Enc_h(b^q)`` under its key, the label party computes the totals, adds random masks and has the
  feature party decrypt them; in the *one-key* variant the label party sends ``Enc_g(L z_j z_k)`` too.

A type with ``q = 0`` (U for Poisson: ``w y``; W for Gamma: ``w``) does not move with the coefficients:
its sums are taken once, at the setup. The deviance and log-likelihood need ``sum w y log b`` (Poisson) or
``sum w log b`` (Gamma), which is ``beta_h' X_h'(w y)`` (or ``beta_h' X_h' w``) from the same static sums.

The label party assembles the statistics vector of :func:`fedx.aggregators.newton.stats_layout` for the
joint design and runs :class:`~fedx.aggregators.newton.NewtonRule` on it: the steps, the step halving, the
convergence test and the report are those of the horizontal ``newton``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..aggregators.base import ModelState
from ..aggregators.glm_families import get_family
from ..aggregators.newton import NewtonRule, beta_to_params, params_to_beta, round_inputs, stats_layout
from ..errors import AggregationError, BlobError, ConfigError, DataError, PolicyError
from .glm_messages import Message, decode_message, encode_message, make_evaluator, make_owner

__all__ = ["FeatureParty", "LabelParty", "check_supports"]

LABEL_BLOCKS = ("two_key", "one_key")


def check_supports(party: str, X: np.ndarray, names: list[str], min_cohort: int) -> None:
    """Refuse a column whose support among the shared rows is smaller than ``min_cohort`` (at its owner).

    A column enters cross blocks as ``sum_i (.) x_i``: over fewer than ``min_cohort`` nonzero rows that sum
    is nearly a per-row value. A 0/1 column is also refused when fewer than ``min_cohort`` rows are 0.
    """
    for j, name in enumerate(names):
        col = X[:, j]
        nonzero = int(np.count_nonzero(col))
        binary = bool(np.all((col == 0) | (col == 1)))
        zeros = col.size - nonzero
        if nonzero < min_cohort or (binary and 0 < zeros < min_cohort):
            what = f"{nonzero} nonzero" if nonzero < min_cohort else f"{zeros} zero"
            raise PolicyError(f"party {party}: column {name!r} has {what} rows among the {col.size} shared rows, fewer "
                              f"than min_cohort = {min_cohort}; its sums would single out those rows. Merge the "
                              f"level into another or drop the column")


def _check_matrix(X: np.ndarray, names: list[str], party: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(names):
        raise DataError(f"party {party}: expected a 2-D design with {len(names)} columns ({names}), got shape "
                        f"{X.shape}")
    if not np.all(np.isfinite(X)):
        bad = names[int(np.flatnonzero(~np.all(np.isfinite(X), axis=0))[0])]
        raise DataError(f"party {party}: column {bad!r} holds NaN or Inf")
    return X


class FeatureParty:
    """A party that holds only features ``X_h`` of the shared rows (in the common order of the PSI).

    It learns its own coefficient block each round (the label party sends it, to compute ``b``), and
    nothing else: every other value it receives is encrypted under the label party's key, or masked.

    Parameters
    ----------
    name : str
        The party's name (coefficients are reported as ``name:column``).
    X : np.ndarray
        Its design columns (n, p_h), numeric (categoricals already one-hot coded).
    feature_names : list of str
        The p_h column names.
    encryption : str
        ``ckks`` or ``none`` (plaintext simulation).
    min_cohort : int
        Minimum support of each column (:func:`check_supports`).
    """

    def __init__(self, name: str, X: np.ndarray, feature_names: list[str], *, encryption: str = "ckks",
                 min_cohort: int = 10) -> None:
        self.name, self.names, self.encryption = name, list(feature_names), encryption
        self.X = _check_matrix(X, self.names, name)
        check_supports(name, self.X, self.names, min_cohort)
        self._label_eval: Any = None
        self._own: Any = None
        self._lin = np.zeros(self.X.shape[0])

    def respond(self, data: bytes) -> bytes:
        """The reply to one message of the label party (setup, round or unmask)."""
        msg = decode_message(data, ("setup", "round", "unmask"), f"message from the label party to {self.name}")
        if msg.kind == "setup":
            return self._setup(msg)
        if self._label_eval is None:
            raise BlobError(f"party {self.name}: a {msg.kind} message before the setup")
        if msg.kind == "round":
            return self._round(msg)
        return self._unmask(msg)

    def _setup(self, msg: Message) -> bytes:
        n = self.X.shape[0]
        if msg.meta.get("rows") != n:
            raise DataError(f"party {self.name}: the label party has {msg.meta.get('rows')} shared rows, this party "
                            f"{n}; both must hold the rows of the same intersection")
        self._label_eval = make_evaluator(self.encryption, msg.parts[0])
        public = b""
        if msg.meta.get("two_key"):
            self._own = make_owner(self.encryption)
            public = self._own.public_bytes()
        sums = self._sums(msg.meta.get("requests", []), msg.parts[1:])
        meta = {"names": self.names, "positive": (self.X > 0).sum(axis=0).tolist(),
                "negative": (self.X < 0).sum(axis=0).tolist()}
        return encode_message(Message("setup_reply", 0, meta, [public, *sums]))

    def _round(self, msg: Message) -> bytes:
        beta = np.asarray(msg.meta.get("beta", []), dtype=np.float64)
        if beta.shape != (self.X.shape[1],) or not np.all(np.isfinite(beta)):
            raise AggregationError(f"party {self.name}: expected {self.X.shape[1]} finite coefficients")
        self._lin = self.X @ beta
        parts = self._sums(msg.meta.get("requests", []), msg.parts)
        for q in msg.meta.get("powers", []):
            if self._own is None:
                raise BlobError(f"party {self.name}: powers of b asked for without the two-key setup")
            parts.append(self._own.encrypt(self._power(float(q))))
        return encode_message(Message("round_reply", msg.round, {"sums": len(parts)}, parts))

    def _unmask(self, msg: Message) -> bytes:
        if self._own is None:
            raise BlobError(f"party {self.name}: an unmask message without the two-key setup")
        values = [self._own.decrypt_sums(p, f"masked sums {i} from the label party").tolist()
                  for i, p in enumerate(msg.parts)]
        return encode_message(Message("unmask_reply", msg.round, {"values": values}))

    def _power(self, q: float) -> np.ndarray:
        with np.errstate(over="raise"):
            try:
                return np.exp(q * self._lin)
            except FloatingPointError:
                raise AggregationError(f"party {self.name}: exp(x' beta) overflows; the fit diverged") from None

    def _recipe(self, recipe: Any) -> np.ndarray:
        p = self.X.shape[1]
        if not isinstance(recipe, list) or not recipe:
            raise BlobError(f"party {self.name}: malformed request {recipe!r}")
        if recipe[0] == "pow" and len(recipe) == 4 and all(isinstance(i, int) and 0 <= i <= p for i in recipe[2:]):
            out = self._power(float(recipe[1]))
            for idx in recipe[2:]:
                if idx:
                    out = out * self.X[:, idx - 1]
            return out
        if recipe[0] in ("pos", "neg") and len(recipe) == 2 and isinstance(recipe[1], int) and 1 <= recipe[1] <= p:
            col = self.X[:, recipe[1] - 1]
            return (col > 0 if recipe[0] == "pos" else col < 0).astype(np.float64)
        raise BlobError(f"party {self.name}: unknown request {recipe!r}")

    def _sums(self, requests: list[Any], vectors: list[bytes]) -> list[bytes]:
        if len(requests) != len(vectors):
            raise BlobError(f"party {self.name}: {len(requests)} requests for {len(vectors)} vectors")
        n = self.X.shape[0]
        out = []
        encoded: dict[str, Any] = {}  # the same recipes for several vectors (the cross block) are encoded once
        for i, (recipes, blob) in enumerate(zip(requests, vectors)):
            vec = self._label_eval.load_vector(blob, n, f"vector {i} from the label party")
            key = repr(recipes)
            if key not in encoded:
                encoded[key] = self._label_eval.encode([self._recipe(r) for r in recipes])
            out.append(self._label_eval.inner_sums(vec, encoded=encoded[key], count=len(recipes)))
        return out


class _Type:
    """One label-side vector type of the module docstring: its power ``q`` and how much of D'(.)D it needs."""

    def __init__(self, name: str, q: float, order: int) -> None:
        self.name, self.q, self.order = name, q, order
        self.static = q == 0.0


class LabelParty:
    """The party with the target: it holds y, exposure, weights and its own features, and solves each step.

    It learns every coefficient, the aggregates of the module docstring (X'WX blocks, score, deviance), and
    nothing per row of the feature party. Drive it with :func:`fedx.vertical.glm_protocol.fit_vertical_glm`
    or by hand: :meth:`start`, then :meth:`receive` with each reply until :attr:`done`.

    Parameters
    ----------
    name : str
        Its name (``insurer``).
    X : np.ndarray
        Its design columns (n, p_g), without intercept.
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
        Support floor of its columns; the ridge penalty and convergence tolerance of the Newton rule.
    """

    def __init__(self, name: str, X: np.ndarray, feature_names: list[str], y: np.ndarray, *, family: str,
                 exposure: np.ndarray | None = None, weight: np.ndarray | None = None, tweedie_power: float = 1.5,
                 encryption: str = "ckks", label_block: str = "two_key", mask_bits: int = 16, min_cohort: int = 10,
                 l2: float = 0.0, tolerance: float = 1e-8, seed: int | None = None) -> None:
        self.name, self.names, self.encryption = name, list(feature_names), encryption
        self.fam = get_family(family, tweedie_power)
        if self.fam.link != "log":
            raise ConfigError(f"model: a vertical GLM needs a log link (poisson, gamma, tweedie), got {family!r}")
        if label_block not in LABEL_BLOCKS:
            raise ConfigError(f"label_block: expected one of {LABEL_BLOCKS}, got {label_block!r}")
        self.label_block, self.mask_bits = label_block, int(mask_bits)
        self.X = _check_matrix(X, self.names, name)
        n = self.X.shape[0]
        self.y = self._column(y, "target", n)
        self.fam.check_y(self.y)
        self.offset = np.zeros(n) if exposure is None else np.log(self._column(exposure, "exposure", n, positive=True))
        self.w = np.ones(n) if weight is None else self._column(weight, "weight", n, positive=True)
        check_supports(name, self.X, self.names, min_cohort)
        self.Z = np.hstack([np.ones((n, 1)), self.X])
        self.tweedie_power, self.l2, self.tolerance = tweedie_power, l2, tolerance
        p = self.fam.power
        self.types = [_Type("W", 2.0 - p, 2), _Type("U", 1.0 - p, 1 if self.fam.canonical else 2), _Type("P", -p, 0)]
        self._rng = np.random.default_rng(seed)
        self._owner = make_owner(encryption)
        self.peer: str | None = None
        self.done = False
        self.state: ModelState | None = None
        self.total: np.ndarray | None = None
        self.rule: NewtonRule | None = None
        self._static: dict[str, Any] = {}
        self._pending: dict[str, Any] = {}

    def _column(self, values: Any, what: str, n: int, positive: bool = False) -> np.ndarray:
        arr = np.asarray(values, dtype=np.float64)
        if arr.shape != (n,) or not np.all(np.isfinite(arr)) or (positive and np.any(arr <= 0)):
            raise DataError(f"party {self.name}: {what} must be {'positive ' if positive else ''}finite numbers, one "
                            f"per shared row ({n})")
        return arr

    # ------------------------------------------------------------------ the message flow

    def start(self, peers: dict[str, list[str]]) -> dict[str, bytes]:
        """The setup message to the feature party, given its column names (public: they are in the config).

        Only one feature party is supported so far.
        """
        if len(peers) != 1:
            raise ConfigError(f"data.parties: the vertical GLM takes one feature party besides {self.name}, got "
                              f"{len(peers)} ({', '.join(peers)})")
        (self.peer, peer_names), = peers.items()
        self.peer_names = list(peer_names)
        self.ph = len(self.peer_names)
        self.k = self.Z.shape[1] + self.ph
        self._grams: dict[str, np.ndarray] = {}
        vectors, requests, keys = [], [], []
        for t in self.types:
            if t.static and t.order:
                L = self._label_vector(t, np.zeros(self.Z.shape[1]))
                self._grams[t.name] = self._local_block(t, L)
                self._add_cross(t, L, vectors, requests, keys)
        if self.fam.boundary_zero:
            blob, r = self._encrypt((self.y > 0).astype(np.float64))
            vectors.append(blob)
            requests.append([[kind, l] for kind in ("pos", "neg") for l in range(1, self.ph + 1)])
            keys.append([("above", kind, l, r) for kind in ("pos", "neg") for l in range(1, self.ph + 1)])
        self._pending = {"keys": keys}
        meta = {"rows": int(self.Z.shape[0]), "two_key": self.label_block == "two_key", "requests": requests,
                "family": self.fam.name}
        return {self.peer: encode_message(Message("setup", 0, meta, [self._owner.public_bytes(), *vectors]))}

    def receive(self, replies: dict[str, bytes]) -> dict[str, bytes]:
        """Consume the feature party's reply; the next messages (empty once :attr:`done`)."""
        data = replies[self.peer]
        if self.state is None:
            return self._on_setup(decode_message(data, "setup_reply", f"setup reply of {self.peer}"))
        if "unmask" in self._pending:
            msg = decode_message(data, "unmask_reply", f"unmask reply of {self.peer}")
            values = msg.meta.get("values")
            if not isinstance(values, list) or len(values) != len(self._pending["unmask"]):
                raise BlobError(f"unmask reply of {self.peer}: expected {len(self._pending['unmask'])} lists of totals")
            for (keys, masks), vals in zip(self._pending.pop("unmask"), values):
                self._fill(keys, np.asarray(vals, dtype=np.float64)[:len(keys)] - masks[:len(keys)])
            return self._advance()
        msg = decode_message(data, "round_reply", f"round reply of {self.peer}")
        return self._on_round(msg)

    # ------------------------------------------------------------------ building requests

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

    def _encrypt(self, v: np.ndarray) -> tuple[bytes, float]:
        """Encrypt ``v / r`` (r = sum |v|, so totals stay near the feature side's values); return r too."""
        r = float(np.sum(np.abs(v)))
        r = r if r > 0 else 1.0
        return self._owner.encrypt(v / r), r

    def _add_cross(self, t: _Type, L: np.ndarray, vectors: list[bytes], requests: list[Any], keys: list[Any]) -> None:
        """Vectors ``Enc(L z_j)`` with the recipes of their cross (and, for j = 0, feature-block) totals."""
        ph = self.ph
        for j in range(self.Z.shape[1] if t.order == 2 else 1):
            blob, r = self._encrypt(L * self.Z[:, j])
            rec = [["pow", t.q, l, 0] for l in range(1, ph + 1)]
            key = [(t.name, j, self.Z.shape[1] - 1 + l, r) for l in range(1, ph + 1)]
            if j == 0 and t.order == 2:
                pairs = [(l, m) for l in range(1, ph + 1) for m in range(l, ph + 1)]
                rec += [["pow", t.q, l, m] for l, m in pairs]
                key += [(t.name, self.Z.shape[1] - 1 + l, self.Z.shape[1] - 1 + m, r) for l, m in pairs]
            vectors.append(blob)
            requests.append(rec)
            keys.append(key)

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

    def _fill(self, keys: list[Any], totals: np.ndarray) -> None:
        for key, value in zip(keys, totals):
            if key[0] == "above":
                _, kind, l, r = key
                self._static[f"{kind}_above"][self.Z.shape[1] - 1 + l] = round(value * r)
                continue
            name, a, b, r = key
            gram = self._grams[name]
            gram[a, b] = gram[b, a] = value * r

    # ------------------------------------------------------------------ the rounds

    def _on_setup(self, msg: Message) -> dict[str, bytes]:
        meta = msg.meta
        if meta.get("names") != self.peer_names:
            raise DataError(f"setup reply of {self.peer}: its columns are {meta.get('names')}, the config says "
                            f"{self.peer_names}")
        self._peer_eval = make_evaluator(self.encryption, msg.parts[0]) if self.label_block == "two_key" else None
        pos = np.concatenate([(self.Z > 0).sum(axis=0), np.asarray(meta["positive"], dtype=np.float64)])
        neg = np.concatenate([(self.Z < 0).sum(axis=0), np.asarray(meta["negative"], dtype=np.float64)])
        above = (self.y > 0)[:, None]
        self._static.update(positive=pos, negative=neg,
                            pos_above=np.concatenate([((self.Z > 0) & above).sum(axis=0), np.zeros(self.ph)]),
                            neg_above=np.concatenate([((self.Z < 0) & above).sum(axis=0), np.zeros(self.ph)]))
        self._read_sums(self._pending.pop("keys"), msg.parts[1:])
        self.rule = NewtonRule(self.fam.name, l2=self.l2, tweedie_power=self.tweedie_power, tolerance=self.tolerance,
                               feature_names=self.coefficient_names()[1:])
        start = ModelState(beta_to_params(np.zeros(self.k)))
        self.state = self.rule.apply(start, [self._stats_vector(start, started=False)])
        return self._round_messages()

    def _read_sums(self, keys: list[Any], parts: list[bytes]) -> None:
        if len(parts) < len(keys):
            raise BlobError(f"reply of {self.peer}: {len(parts)} sums for {len(keys)} requests")
        for i, (key, part) in enumerate(zip(keys, parts)):
            totals = self._owner.decrypt_sums(part, f"sums {i} from {self.peer}")
            if totals.shape != (len(key),):
                raise BlobError(f"sums {i} from {self.peer}: {totals.size} totals for {len(key)} requests")
            self._fill(key, totals)

    def _round_messages(self) -> dict[str, bytes]:
        assert self.state is not None
        beta = params_to_beta(self.state.params)
        pg1 = self.Z.shape[1]
        vectors: list[bytes] = []
        requests: list[Any] = []
        keys: list[Any] = []
        powers, local = [], []
        for t in self.types:
            if t.static:
                continue
            L = self._label_vector(t, beta[:pg1])
            self._grams[t.name] = np.zeros((self.k, self.k))
            if t.order:
                self._add_cross(t, L, vectors, requests, keys)
            block = [(t.name, j, k) for j, k in self._block_pairs(t)]
            if self.label_block == "one_key":
                for name, j, k in block:
                    blob, r = self._encrypt(L * self.Z[:, j] * self.Z[:, k])
                    vectors.append(blob)
                    requests.append([["pow", t.q, 0, 0]])
                    keys.append([(name, j, k, r)])
            else:
                powers.append(t.q)
                local.append((t, L, block))
        self._pending = {"keys": keys, "local": local}
        meta = {"beta": beta[pg1:].tolist(), "requests": requests, "powers": powers}
        return {self.peer: encode_message(Message("round", self.state.round, meta, vectors))}

    def _on_round(self, msg: Message) -> dict[str, bytes]:
        keys, local = self._pending.pop("keys"), self._pending.pop("local")
        if len(msg.parts) != len(keys) + len(local):
            raise BlobError(f"round reply of {self.peer}: {len(msg.parts)} parts, expected {len(keys) + len(local)}")
        self._read_sums(keys, msg.parts[:len(keys)])
        if not local:
            return self._advance()
        masked, pending = [], []
        for (t, L, block), enc_b in zip(local, msg.parts[len(keys):]):
            vec = self._peer_eval.load_vector(enc_b, self.Z.shape[0], f"Enc(b^q) from {self.peer}")
            plains, block_keys = [], []
            for name, j, k in block:
                c = L * self.Z[:, j] * self.Z[:, k]
                r = float(np.sum(np.abs(c))) or 1.0
                plains.append(c / r)
                block_keys.append((name, j, k, r))
            masks = self._rng.uniform(-1.0, 1.0, size=len(plains) + 1) * 2.0 ** self.mask_bits
            masked.append(self._peer_eval.inner_sums(vec, plains, masks=masks))
            pending.append((block_keys, masks))
        self._pending["unmask"] = pending
        return {self.peer: encode_message(Message("unmask", self.state.round, {}, masked))}

    def _advance(self) -> dict[str, bytes]:
        assert self.state is not None and self.rule is not None
        total = self._stats_vector(self.state, started=True)
        if self.rule.report_ready(self.state):
            self.total, self.done = total, True
            return {}
        self.state = self.rule.apply(self.state, [total])
        return self._round_messages()

    # ------------------------------------------------------------------ the statistics vector

    def coefficient_names(self) -> list[str]:
        """``Intercept``, then ``label:column`` and ``feature:column`` in the design's order."""
        return ["Intercept", *[f"{self.name}:{c}" for c in self.names], *[f"{self.peer}:{c}" for c in self.peer_names]]

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

