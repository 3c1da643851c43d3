"""A feature party of the vertical GLM: it holds only features, multiplies and sums what it is sent.

It receives, from the label party, the setup and one message per Newton round (its own coefficient block
and encrypted vectors with their requests, :mod:`fedx.vertical.glm_plan`), and from other feature parties
the row-wise products of a chain (``forward``). For each job it either sums the vector with its recipes
(it is the last of the job's path) or multiplies it row by row and forwards the products to the next
party. Once it has everything the label party told it to expect, it answers the label party with the
encrypted totals. In the two-key variant the first feature party also encrypts ``b^q`` under its own key
(passed along the chain, each party multiplying in its own ``b^q``) and later decrypts the label party's
masked totals (``unmask``).

Its row space is the shared rows in the common order of the PSI, or, when it does not know which of its
rows are shared (``security.psi_reveal: label_party``), its whole table in its secret shuffled order: the
label party then sends vectors over that space, with zeros outside the intersection.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import AggregationError, BlobError, DataError, PolicyError
from .glm_messages import Message, decode_message, encode_message, make_evaluator, make_owner
from .glm_plan import check_pairs, scaled

__all__ = ["FeatureParty", "check_matrix", "check_supports"]


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


def check_matrix(X: np.ndarray, names: list[str], party: str) -> np.ndarray:
    """A finite 2-D float design with one column per name."""
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
    nothing else: every other value it receives is encrypted under another party's key, or masked.

    Parameters
    ----------
    name : str
        The party's name (coefficients are reported as ``name:column``).
    X : np.ndarray
        Its design columns (n, p_h), numeric (categoricals already one-hot coded), over its row space.
    feature_names : list of str
        The p_h column names.
    encryption : str
        ``ckks`` or ``none`` (plaintext simulation).
    min_cohort : int
        Minimum support of each column and of each cell of a pair of columns (:func:`check_supports`,
        :func:`fedx.vertical.glm_plan.check_cells`), here and in the label party's counts.
    pairs : bool
        Check the cells of pairs of its columns (its own block of X'WX); off for held-out rows, where only
        the deviance is computed.
    """

    def __init__(self, name: str, X: np.ndarray, feature_names: list[str], *, encryption: str = "ckks",
                 min_cohort: int = 10, pairs: bool = True) -> None:
        self.name, self.names, self.encryption = name, list(feature_names), encryption
        self.min_cohort = int(min_cohort)
        self.X = check_matrix(X, self.names, name)
        check_supports(name, self.X, self.names, min_cohort)
        if pairs:
            check_pairs(name, self.X, self.names, min_cohort)
        self.label: str | None = None
        self._label_eval: Any = None
        self._owner_eval: Any = None
        self._own: Any = None
        self._lin = np.zeros(self.X.shape[0])
        self._phase: dict[str, Any] | None = None
        self._inbox: dict[tuple[int, int], dict[str, Message]] = {}

    # ------------------------------------------------------------------ driving

    def respond(self, data: bytes) -> bytes:
        """The reply to one message of the label party, for a run with this one feature party."""
        out = self.receive(self.label or "label", data)
        if set(out) != {self.label}:
            raise BlobError(f"party {self.name}: respond() is for a run with one feature party; this message "
                            f"needs messages to {sorted(out)}")
        return out[self.label]  # type: ignore[index]

    def receive(self, sender: str, data: bytes) -> dict[str, bytes]:
        """Process one message; the messages to send in answer, by recipient."""
        msg = decode_message(data, ("setup", "round", "unmask", "forward"), f"message from {sender} to {self.name}")
        if msg.kind == "forward":
            if self.label is not None and sender == self.label:
                raise BlobError(f"party {self.name}: a forward message from the label party")
            self._inbox.setdefault((msg.round, int(msg.meta.get("hop", 0))), {})[sender] = msg
            return self._progress()
        if self.label is None:
            if msg.kind != "setup":
                raise BlobError(f"party {self.name}: a {msg.kind} message before the setup")
            self.label = sender
        elif sender != self.label:
            raise BlobError(f"party {self.name}: a {msg.kind} message from {sender}, which is not the label party")
        if msg.kind == "unmask":
            return {self.label: self._unmask(msg)}
        if self._phase is not None:
            raise BlobError(f"party {self.name}: a {msg.kind} message before the previous one was answered")
        if msg.kind == "setup":
            if self._label_eval is not None:
                raise BlobError(f"party {self.name}: a second setup message")
            parts = self._setup(msg)
        else:
            if self._label_eval is None:
                raise BlobError(f"party {self.name}: a round message before the setup")
            parts = self._start_round(msg)
        return self._hop(0, [(self.label, msg, parts)])

    # ------------------------------------------------------------------ phases

    def _setup(self, msg: Message) -> list[bytes]:
        n = self.X.shape[0]
        meta = msg.meta
        if meta.get("rows") != n:
            raise DataError(f"party {self.name}: the label party has {meta.get('rows')} rows for it, this party "
                            f"{n}; both must hold the rows of the same intersection")
        self.chain = list(meta.get("chain", [self.name]))
        self._label_eval = make_evaluator(self.encryption, msg.parts[0])
        self.two_key = bool(meta.get("two_key"))
        self.owner = meta.get("owner")
        if self.two_key and self.owner == self.name:
            self._own = make_owner(self.encryption)
        self._phase = {"round": 0, "reply": "setup_reply", "expect": _hops(meta.get("expect")), "sums": [],
                       "powers": []}
        return msg.parts[1:]

    def _start_round(self, msg: Message) -> list[bytes]:
        meta = msg.meta
        beta = np.asarray(meta.get("beta", []), dtype=np.float64)
        if beta.shape != (self.X.shape[1],) or not np.all(np.isfinite(beta)):
            raise AggregationError(f"party {self.name}: expected {self.X.shape[1]} finite coefficients")
        cells = meta.get("cells")
        if cells is not None and int(cells) < self.min_cohort:
            raise PolicyError(f"party {self.name}: the label party counts {cells} shared rows in a cell of a cross "
                              f"block with this party's columns, fewer than min_cohort = {self.min_cohort}; refusing")
        self._lin = self.X @ beta
        parts = list(msg.parts)
        if "owner_public" in meta:
            self._owner_eval = make_evaluator(self.encryption, parts[int(meta["owner_public"])])
        self._phase = {"round": msg.round, "reply": "round_reply", "expect": _hops(meta.get("expect")), "sums": [],
                       "powers": []}
        return parts

    def _progress(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        while self._phase is not None:
            hop = self._phase.get("hop", 0) + 1
            if hop > max(self._phase["expect"], default=0):
                return {**out, **self._reply()}
            want = self._phase["expect"].get(hop, [])
            got = self._inbox.get((self._phase["round"], hop), {})
            if not set(want) <= set(got):
                return out
            self._inbox.pop((self._phase["round"], hop), None)
            extra = set(got) - set(want)
            if extra:
                raise BlobError(f"party {self.name}: unexpected forward messages from {sorted(extra)}")
            out.update(self._run_hop(hop, [(s, got[s], got[s].parts) for s in want]))
        return out

    def _hop(self, hop: int, inputs: list[tuple[str, Message, list[bytes]]]) -> dict[str, bytes]:
        out = self._run_hop(hop, inputs)
        return {**out, **self._progress()}

    def _run_hop(self, hop: int, inputs: list[tuple[str, Message, list[bytes]]]) -> dict[str, bytes]:
        """Every job and power vector of one hop; the forwards of the next hop."""
        assert self._phase is not None
        self._phase["hop"] = hop
        forwards: dict[str, tuple[list[Any], list[Any], list[bytes]]] = {}
        cache: dict[str, Any] = {}
        for sender, msg, parts in inputs:
            chained = hop > 0
            for job in msg.meta.get("jobs", []):
                self._job(job, parts, chained, forwards, cache, sender)
            for power in msg.meta.get("powers", []):
                self._power(power, parts, hop, forwards, sender)
        out = {}
        for peer, (jobs, powers, fparts) in forwards.items():
            meta = {"hop": hop + 1, "jobs": jobs, "powers": powers}
            out[peer] = encode_message(Message("forward", self._phase["round"], meta, fparts))
        return out

    def _job(self, job: Any, parts: list[bytes], chained: bool, forwards: dict[str, Any], cache: dict[str, Any],
             sender: str) -> None:
        try:
            jid, path, tree, v = str(job["id"]), list(job["path"]), job["tree"], int(job["v"])
            blob = parts[v]
        except (KeyError, TypeError, ValueError, IndexError):
            raise BlobError(f"party {self.name}: a malformed job from {sender}") from None
        if not path or path[0] != self.name or not isinstance(tree, list) or not tree:
            raise BlobError(f"party {self.name}: job {jid} from {sender} is not addressed to this party")
        n = self.X.shape[0]
        ev = self._label_eval
        vec = ev.load_vector(blob, n, f"vector {jid} from {sender}", chained=chained)
        e_in = int(job.get("e", 0))
        if len(path) == 1:
            key = repr((tree, chained))
            if key not in cache:
                values = [self._recipe(r) for r in tree]
                exps = [0] * len(values)
                if chained:
                    pairs = [scaled(v) for v in values]
                    values, exps = [p[0] for p in pairs], [p[1] for p in pairs]
                cache[key] = (ev.encode(values, chained), exps)
            encoded, exps = cache[key]
            blob_out = ev.inner_sums(vec, encoded=encoded, count=len(tree))
            self._phase["sums"].append((jid, blob_out, [e_in + e for e in exps]))  # type: ignore[index]
            return
        values, exps = [], []
        for branch in tree:
            if not isinstance(branch, list) or len(branch) != 2:
                raise BlobError(f"party {self.name}: job {jid} has a malformed branch")
            value, e = scaled(self._recipe(branch[0]))
            values.append(value)
            exps.append(e)
        products = ev.multiply_rows(vec, values)
        jobs, _, fparts = forwards.setdefault(path[1], ([], [], []))
        for i, (branch, product, e) in enumerate(zip(tree, products, exps)):
            fparts.append(product)
            jobs.append({"id": f"{jid}.{i}", "path": path[1:], "tree": branch[1], "v": len(fparts) - 1,
                         "e": e_in + e})

    def _power(self, power: Any, parts: list[bytes], hop: int, forwards: dict[str, Any], sender: str) -> None:
        """A vector ``b^q`` under the first party's key, multiplied in along the chain, then for the label party."""
        try:
            pid, q, rest, e_in = str(power["id"]), float(power["q"]), list(power["path"]), int(power.get("e", 0))
        except (KeyError, TypeError, ValueError):
            raise BlobError(f"party {self.name}: a malformed power request from {sender}") from None
        chain = len(self.chain) > 1
        value = self._b_power(q)
        value, e = scaled(value) if chain else (value, 0)
        if hop == 0:
            if self._own is None:
                raise BlobError(f"party {self.name}: powers of b asked for without the two-key setup")
            blob = self._own.encrypt(value)
        else:
            if self._owner_eval is None:
                raise BlobError(f"party {self.name}: a power vector before the first party's public context")
            vec = self._owner_eval.load_vector(parts[int(power["v"])], self.X.shape[0], f"power {pid} from {sender}")
            (blob,) = self._owner_eval.multiply_rows(vec, [value])
        if rest:
            jobs, powers, fparts = forwards.setdefault(rest[0], ([], [], []))
            fparts.append(blob)
            powers.append({"id": pid, "q": q, "path": rest[1:], "v": len(fparts) - 1, "e": e_in + e})
        else:
            self._phase["powers"].append((pid, blob, e_in + e))  # type: ignore[index]

    def _reply(self) -> dict[str, bytes]:
        assert self._phase is not None and self.label is not None
        phase, self._phase = self._phase, None
        sums, powers = phase["sums"], phase["powers"]
        meta: dict[str, Any] = {"sums": [s[0] for s in sums], "exps": [s[2] for s in sums],
                                "powers": [p[0] for p in powers], "power_exps": [p[2] for p in powers]}
        parts = [s[1] for s in sums] + [p[1] for p in powers]
        if phase["reply"] == "setup_reply":
            meta["names"] = self.names
            meta["binary"] = [bool(np.all((c == 0) | (c == 1))) for c in self.X.T]
            parts = [self._own.public_bytes() if self._own is not None else b"", *parts]
        return {self.label: encode_message(Message(phase["reply"], phase["round"], meta, parts))}

    def _unmask(self, msg: Message) -> bytes:
        if self._own is None:
            raise BlobError(f"party {self.name}: an unmask message without the two-key setup")
        values = [self._own.decrypt_sums(p, f"masked sums {i} from the label party").tolist()
                  for i, p in enumerate(msg.parts)]
        return encode_message(Message("unmask_reply", msg.round, {"values": values}))

    # ------------------------------------------------------------------ per-row values

    def _b_power(self, q: float) -> np.ndarray:
        with np.errstate(over="raise"):
            try:
                return np.exp(q * self._lin)
            except FloatingPointError:
                raise AggregationError(f"party {self.name}: exp(x' beta) overflows; the fit diverged") from None

    def _recipe(self, recipe: Any) -> np.ndarray:
        p = self.X.shape[1]
        ok = lambda i, lo=0: isinstance(i, int) and not isinstance(i, bool) and lo <= i <= p
        if not isinstance(recipe, list) or not recipe:
            raise BlobError(f"party {self.name}: malformed request {recipe!r}")
        if recipe[0] == "pow" and len(recipe) == 4 and isinstance(recipe[1], (int, float)) and ok(recipe[2]) \
                and ok(recipe[3]):
            out = self._b_power(float(recipe[1]))
            for idx in recipe[2:]:
                if idx:
                    out = out * self.X[:, idx - 1]
            return out
        if recipe[0] in ("pos", "neg") and len(recipe) == 2 and ok(recipe[1], 1):
            col = self.X[:, recipe[1] - 1]
            return (col > 0 if recipe[0] == "pos" else col < 0).astype(np.float64)
        if recipe[0] == "nz" and len(recipe) == 3 and ok(recipe[1], 1) and ok(recipe[2]):
            out = (self.X[:, recipe[1] - 1] != 0).astype(np.float64)
            if recipe[2]:
                out = out * (self.X[:, recipe[2] - 1] != 0)
            return out
        raise BlobError(f"party {self.name}: unknown request {recipe!r}")


def _hops(expect: Any) -> dict[int, list[str]]:
    if expect is None:
        return {}
    if not isinstance(expect, dict):
        raise BlobError("a malformed list of expected forwards")
    return {int(hop): [str(s) for s in senders] for hop, senders in expect.items()}
