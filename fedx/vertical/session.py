"""One party's side of a deployed vertical run, message by message: what a ``fedx node`` runs for its party.

In ``fedx run`` one process holds every party and passes their messages to each other
(:func:`fedx.vertical.psi.run_psi`, :func:`fedx.vertical.glm_protocol.fit_vertical_glm`). In deployment each
party is a node with its own table, and the fedx server relays bytes between them. A
:class:`PartySession` is one party's end of that: the same protocol objects
(:class:`~fedx.vertical.psi.PSIParty`, :class:`~fedx.vertical.glm_parties.LabelParty`,
:class:`~fedx.vertical.glm_feature.FeatureParty`), fed with the messages the relay delivers, returning the
messages to send. The relay reads only their routing headers (:func:`fedx.vertical.channel.route`).

1. Subject identification: the PSI's own messages, sealed after their ``hello``.
2. Beside it, every pair of parties agrees a second sealed channel (run id ``<run>/glm``); each feature party
   sends the label party its column names over it (``glm-columns``: the coefficient names, and its reference
   levels for the pricing table). Every GLM message then travels sealed in it, so the relay sees neither the
   coefficients sent to a feature party, nor the masked totals, nor the counts.
3. The fit, then (``data.test_fraction``) the deviance of the held-out rows, as in simulation.
4. The label party writes result.json, pricing_table.csv and history.csv to its own folder, then tells the
   feature parties that the fit is done (``glm-done``).

Every message that leaves the party is appended to its ledger first (``out_dir/ledger.jsonl``); each outgoing
message comes with the ledger head before its entry, which the relay's receipt records
(:func:`fedx.privacy.audit.verify_receipts`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..atomic import write_atomic
from ..config import Config
from ..errors import AggregationError, ConfigError, PSIError
from ..report import SCHEMA_VERSION, json_ready
from .channel import Channel, route
from .glm_feature import FeatureParty
from .glm_messages import message_kind
from .glm_parties import LabelParty
from .glm_protocol import VerticalGLMResult, vertical_result
from .psi import Alignment, PSIParty, PSIPolicy, select_test_rows
from .run import SentLedger, history_csv, pricing_table_csv
from .tables import PartyTable, family_of

__all__ = ["Outgoing", "PartySession", "run_sessions"]


@dataclass(frozen=True)
class Outgoing:
    """A message for the relay to forward: to whom, the bytes, and the sender's ledger head before it."""

    to: str
    message: bytes
    round: int
    kind: str
    head: dict[str, Any] | None


class PartySession:
    """One party of one deployed vertical run (the module docstring says what it does).

    Parameters
    ----------
    cfg : Config
        The run's config (the server sends it), with ``data.partition: vertical``.
    table : PartyTable
        This party's own table, checked (:func:`fedx.vertical.tables.load_party_table`).
    run_id : str
        The run, bound into every channel key and message header.
    out_dir : Path
        This party's folder: its ledger, and at the label party the result files.
    say : callable, optional
        Called with a line per step and Newton round.

    Use :meth:`start` for the first messages, then :meth:`receive` with each message the relay delivers,
    until :attr:`done`.
    """

    def __init__(self, cfg: Config, table: PartyTable, run_id: str, out_dir: str | Path, *,
                 say: Callable[[str], None] | None = None) -> None:
        if not cfg.data.vertical or cfg.data.parties is None or cfg.data.label_party is None:
            raise ConfigError("a vertical session needs a vertical config (data.partition: vertical)")
        if table.name not in cfg.data.parties:
            raise ConfigError(f"party {table.name!r} is not one of data.parties ({', '.join(cfg.data.parties)})")
        self.cfg, self.table, self.run_id = cfg, table, str(run_id)
        self.name = table.name
        self.label_name = cfg.data.label_party
        self.is_label = self.name == self.label_name
        self.features = [p for p in cfg.data.parties if p != self.label_name]
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self._say = say or (lambda line: None)
        self.ledger = SentLedger(self.out / "ledger.jsonl") if cfg.security.audit else None
        sec = cfg.security
        self.policy = PSIPolicy(reveal=sec.psi_reveal, count_to=sec.psi_count_to, min_intersection=sec.min_intersection)
        self.psi = PSIParty(self.name, table.ids, label_party=self.label_name, parties=list(cfg.data.parties),
                            run_id=self.run_id, policy=self.policy, ledger=self.ledger)  # type: ignore[arg-type]
        glm_run = f"{self.run_id}/glm"
        self._glm_run = glm_run
        self._channels = {p: Channel(self.name, p, glm_run) for p in cfg.data.parties if p != self.name}
        self._columns: dict[str, dict[str, Any]] = {}
        self._stage = "psi"
        self._sent_columns = False
        self.alignment: Alignment | None = None
        self.done = False
        self.result: VerticalGLMResult | None = None
        self._label: LabelParty | None = None
        self._fparty: dict[str, FeatureParty] = {}
        self._history: list[dict[str, Any]] = []
        self._step: dict[str, Any] | None = None
        self._t0 = time.perf_counter()
        self._psi_seconds = 0.0
        self._psi_bytes = {"bytes": 0, "messages": 0}
        self._fit: dict[str, Any] = {}

    # ------------------------------------------------------------------ driving

    @property
    def stage(self) -> str:
        """Where the party is: ``psi``, ``fit``, ``test`` or ``done``."""
        return self._stage

    def start(self) -> list[Outgoing]:
        """The opening messages: the GLM channels' hellos, and the label party's PSI hellos."""
        out = [self._emit(p, ch.hello(), 0, "glm-hello") for p, ch in self._channels.items()]
        return out + [self._psi_out(m) for m in self.psi.start()]

    def receive(self, message: bytes) -> list[Outgoing]:
        """Process one message the relay delivered to this party; the messages to send in answer.

        Raises
        ------
        PSIError, BlobError, AggregationError, ...
            A message that is not for this party, fails authentication (tampered, replayed, sealed under
            another key), is out of turn, or a refusal of the protocol (naming the party).
        """
        r = route(message)
        if r.receiver != self.name:
            raise PSIError(f"a message for party {r.receiver!r} reached party {self.name!r}")
        if r.run_id == self._glm_run:
            return self._on_glm(r.sender, r.kind, message)
        if r.run_id != self.run_id:
            raise PSIError(f"party {self.name!r} got a message of run {r.run_id!r}; this run is {self.run_id!r}")
        if self.is_label and r.sender in self.features:
            self._psi_bytes["bytes"] += len(message)
            self._psi_bytes["messages"] += 1
        out = [self._psi_out(m) for m in self.psi.receive(message)]
        if self.psi.done and self.alignment is None:
            self.alignment = self.psi.alignment()   # a refusal of the intersection raises here
            self._psi_seconds = time.perf_counter() - self._t0
            self._say(f"{self.name}: PSI done" + ("" if self.alignment.n_shared is None else
                                                 f", {self.alignment.n_shared:,} people shared by all parties"))
            out += self._after_psi()
        return out

    def status(self) -> dict[str, Any]:
        """What the relay may know of this party: its role and stage (no value of the fit)."""
        return {"party": self.name, "role": "label" if self.is_label else "feature", "stage": self._stage,
                "done": self.done}

    # ------------------------------------------------------------------ messages out

    def _emit(self, to: str, message: bytes, rnd: int, kind: str) -> Outgoing:
        head = None
        if self.ledger is not None:
            self.ledger.append(round=rnd, kind=kind, payload=message)
            rnd, kind, head = self.ledger.sent(message)
        return Outgoing(to, message, rnd, kind, head)

    def _psi_out(self, message: bytes) -> Outgoing:
        r = route(message)
        if self.is_label:
            self._psi_bytes["bytes"] += len(message)
            self._psi_bytes["messages"] += 1
        head = None
        rnd, kind = 0, f"psi-{r.kind}"
        if self.ledger is not None:   # the PSI party appended it already
            rnd, kind, head = self.ledger.sent(message)
        return Outgoing(r.receiver, message, rnd, kind, head)

    def _seal(self, to: str, kind: str, meta: Mapping[str, Any], payload: bytes, rnd: int) -> Outgoing:
        ch = self._channels[to]
        if not ch.ready:
            raise PSIError(f"party {self.name!r}: no channel with party {to!r} yet (its hello has not arrived)")
        return self._emit(to, ch.seal(kind, {**meta, "round": rnd}, payload), rnd, kind)

    def _glm_out(self, out: Mapping[str, bytes], rnd: int) -> list[Outgoing]:
        prefix = "glm-test" if self._stage == "test" else "glm"
        if self.is_label:
            self._count("bytes_up", sum(len(d) for d in out.values()), len(out))
        return [self._seal(to, f"{prefix}-{message_kind(data)}", {"stage": self._stage}, data, rnd)
                for to, data in out.items()]

    # ------------------------------------------------------------------ the GLM channel

    def _on_glm(self, sender: str, kind: str, message: bytes) -> list[Outgoing]:
        ch = self._channels.get(sender)
        if ch is None:
            raise PSIError(f"party {self.name!r} got a message from {sender!r}, which is no party of this run")
        if kind == "hello":
            ch.accept_hello(message)
            return self._maybe_columns()
        kind, meta, payload = ch.open(message)
        if kind == "glm-columns":
            if not self.is_label or sender in self._columns:
                raise PSIError(f"party {self.name!r}: an unexpected column list from {sender!r}")
            self._columns[sender] = meta
            return self._maybe_fit()
        if kind == "glm-done":
            if self.is_label or sender != self.label_name:
                raise PSIError(f"party {self.name!r}: an unexpected end of the fit from {sender!r}")
            self._stage, self.done = "done", True
            self._say(f"{self.name}: the label party {sender} reports the fit done")
            return []
        stage = meta.get("stage")
        if stage not in ("fit", "test"):
            raise PSIError(f"party {self.name!r}: a {kind!r} message from {sender!r} of no stage of the fit")
        if self.is_label:
            return self._label_receives(sender, payload, len(message))
        party = self._feature_party(stage)
        self._stage = stage
        return self._glm_out(party.receive(sender, payload), int(meta.get("round", 0)))

    # ------------------------------------------------------------------ after the PSI

    def _after_psi(self) -> list[Outgoing]:
        al = self.alignment
        assert al is not None
        if self.is_label:
            assert al.rows is not None
            self._test = select_test_rows(self.table.ids, al.rows, self.psi.secret, self.cfg.data.test_fraction)
            return self._maybe_fit()
        self._stage = "fit"
        return []

    def _maybe_columns(self) -> list[Outgoing]:
        """A feature party's column names (public in the config, but for the levels of its categoricals), once its
        channel with the label party is up."""
        if self.is_label or self._sent_columns or not self._channels[self.label_name].ready:
            return []
        self._sent_columns = True
        _, names = self.table.design(np.zeros(0, dtype=np.int64))
        meta = {"names": names, "reference_levels": self.table.reference_levels()}
        return [self._seal(self.label_name, "glm-columns", meta, b"", 0)]

    def _maybe_fit(self) -> list[Outgoing]:
        """The label party starts the fit once the PSI is done and every feature party's columns are in."""
        if not self.is_label or self._label is not None or self.alignment is None \
                or set(self._columns) != set(self.features):
            return []
        self._stage = "fit"
        self._label = self._make_label("train")
        self._step = _new_step(0)
        t0, c0 = time.perf_counter(), time.process_time()
        out = self._label.start({f: list(self._columns[f]["names"]) for f in self.features})
        self._charge(t0, c0)
        return self._glm_out(out, 0)

    def _make_label(self, split: str, **extra: Any) -> LabelParty:
        cfg, table, al = self.cfg, self.table, self.alignment
        assert al is not None and al.rows is not None
        sec, fed = cfg.security, cfg.federation
        rows = al.rows[~self._test] if split == "train" else al.rows[self._test]
        mask = ~self._test if split == "train" else self._test
        X, names = table.design(rows)
        peer_rows = {}
        if self.policy.reveal != "all":   # the feature party does not know its shared rows: its whole table
            peer_rows = {f: (al.peer_sizes[f], al.peer_positions[f][mask]) for f in self.features}
        references = dict(table.reference_levels())
        for f in self.features:
            references.update(self._columns[f].get("reference_levels") or {})
        return LabelParty(self.name, X, names, table.column("target", rows), family=family_of(cfg),
                          exposure=table.column("exposure", rows), weight=table.column("weight", rows),
                          tweedie_power=fed.tweedie_power, encryption=sec.encryption, label_block=sec.label_block,
                          min_cohort=sec.min_cohort, l2=fed.l2, tolerance=fed.tolerance, peer_rows=peer_rows,
                          reference_levels=references, **extra)

    def _feature_party(self, stage: str) -> FeatureParty:
        """A feature party's design for the fit or the held-out rows (built on the first message of each)."""
        if stage in self._fparty:
            return self._fparty[stage]
        if stage == "test" and "fit" not in self._fparty:
            raise PSIError(f"party {self.name!r}: a message about the held-out rows before the fit")
        al, table, cfg = self.alignment, self.table, self.cfg
        if al is None:
            raise PSIError(f"party {self.name!r}: a message of the fit before the private set intersection ended")
        if al.rows is not None:   # it knows its shared rows (psi_reveal: all), in the common order
            own = select_test_rows(table.ids, al.rows, self.psi.secret, cfg.data.test_fraction)
            X, names = table.design(al.rows[own] if stage == "test" else al.rows[~own])
        else:   # its whole table, in the shuffled order of the PSI
            assert al.wire_order is not None
            X, names = table.design(al.wire_order)
        sec = cfg.security
        party = FeatureParty(self.name, X, names, encryption=sec.encryption, min_cohort=sec.min_cohort,
                             pairs=stage == "fit")
        self._fparty[stage] = party
        return party

    # ------------------------------------------------------------------ the label party's fit

    def _label_receives(self, sender: str, data: bytes, size: int) -> list[Outgoing]:
        label = self._label
        assert label is not None
        self._count("bytes_down", size, 1)
        t0, c0 = time.perf_counter(), time.process_time()
        out = label.receive_from(sender, data)
        self._charge(t0, c0)
        rnd = label.round
        if self._stage == "fit" and self._step is not None and rnd != self._step["round"]:
            self._close_step()
            if rnd > self.cfg.federation.rounds:
                raise AggregationError(f"vertical newton: the fit did not converge in {self.cfg.federation.rounds} "
                                       f"Newton rounds")
            self._step = _new_step(rnd)
        if not label.done:
            return self._glm_out(out, rnd)
        if self._stage == "fit":
            self._close_step()
            self.result = vertical_result(label, self._history)
            self._say(f"{self.name}: fit converged in {self.result.iterations} Newton rounds, deviance "
                      f"{self.result.deviance:.6g}")
            if self._test.any():
                beta = np.array(list(self.result.params.values()))
                self._held = self._make_label("test", evaluate=beta)
                self._label = self._held
                self._stage = "test"
                out = self._held.start({f: list(self._columns[f]["names"]) for f in self.features})
                return self._glm_out(out, 0)
        else:
            self._fit["test_deviance"] = label.last_deviance
        return self._finish()

    def _finish(self) -> list[Outgoing]:
        res = self.result
        assert res is not None
        doc = self._document(res)
        write_atomic(self.out / "result.json", json.dumps(json_ready(doc), indent=2, allow_nan=False))
        write_atomic(self.out / "pricing_table.csv", pricing_table_csv(res.results))
        write_atomic(self.out / "history.csv", history_csv(res.history))
        self._say(f"{self.name}: wrote {self.out / 'result.json'} and {self.out / 'pricing_table.csv'}")
        self._stage, self.done = "done", True
        return [self._seal(f, "glm-done", {"status": "ok"}, b"", res.iterations) for f in self.features]

    def _count(self, key: str, size: int, messages: int) -> None:
        if self.is_label and self._step is not None and self._stage == "fit":
            self._step[key] += size
            self._step["messages"] += messages

    def _charge(self, t0: float, c0: float) -> None:
        if self._step is not None and self._stage == "fit":
            self._step["seconds"] += time.perf_counter() - t0
            self._step["cpu_seconds"] += time.process_time() - c0

    def _close_step(self) -> None:
        if self._step is not None:
            self._history.append(self._step)
            self._step = None

    def _document(self, res: VerticalGLMResult) -> dict[str, Any]:
        """result.json at the label party: what it knows (no feature party's table is described)."""
        cfg, al = self.cfg, self.alignment
        assert al is not None
        test = None
        if self._test.any():
            held = self._held
            dev = float(self._fit["test_deviance"])
            from ..aggregators.glm_families import get_family

            assert res.label_only is not None
            fam = get_family(family_of(cfg), cfg.federation.tweedie_power)
            eta = held.offset + held.Z @ res.label_only.params.to_numpy()
            alone = float(fam.terms(held.y, eta, held.w).deviance.sum())
            test = {"nobs": int(held.Z.shape[0]), "deviance": dev, "label_only_deviance": alone,
                    "lift": 1.0 - dev / alone if alone > 0 else 0.0}
        report = dict(res.report)
        metrics = {"deviance": res.deviance, "null_deviance": res.null_deviance, "aic": res.aic,
                   "d2": report.get("d2"), "nobs": res.nobs, "lift": res.lift,
                   "label_only_deviance": res.label_only_deviance}
        if test is not None:
            metrics.update({f"test_{k}": v for k, v in test.items()})
        columns = {name: [c for c in res.params if c.startswith(f"{name}:")] for name in cfg.data.parties or {}}
        parties = {name: {"role": "label" if name == self.label_name else "feature", "coefficients": columns[name]}
                   for name in columns}
        parties[self.name]["rows"] = len(self.table.df)
        parties[self.name]["ledger"] = str(self.out / "ledger.jsonl") if self.ledger is not None else None
        for f in self.features:
            parties[f]["rows"] = al.peer_sizes.get(f)
        psi = {"shared": al.n_shared, "rows": {n: parties[n]["rows"] for n in parties}, "fit_rows": res.nobs,
               "test_rows": int(self._test.sum()), "seconds": self._psi_seconds, **self._psi_bytes,
               "policy": self.policy.to_dict()}
        privacy = {"encryption": cfg.security.encryption, "label_block": cfg.security.label_block,
                   "min_cohort": cfg.security.min_cohort, "min_intersection": cfg.security.min_intersection,
                   "psi": self.policy.to_dict(), "model": "semi-honest, parties that do not collude",
                   "transport": "deployment: every message after its hello sealed end to end between two parties "
                                "(ChaCha20-Poly1305); the relay reads only routing headers"}
        model = {"task": cfg.task, "kind": "glm", "partition": "vertical", "label_party": self.label_name,
                 "party_of": {c: c.split(":", 1)[0] for c in res.params if ":" in c}, **report}
        lift = {"lift": res.lift, "joint_deviance": res.deviance, "joint_aic": res.aic,
                "label_only_deviance": res.label_only_deviance, "label_only_aic": res.label_only_aic,
                "label_only_coefficients": [] if res.label_only is None else res.label_only.to_dict()["coefficients"],
                "test": test}
        return {"schema_version": SCHEMA_VERSION, "fedx_version": __version__,
                "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "partition": "vertical",
                "deployment": {"run_id": self.run_id, "party": self.name}, "config": cfg.to_dict(),
                "metrics": metrics, "model": model, "lift": lift, "psi": psi, "parties": parties,
                "privacy": privacy, "history": res.history}


def _new_step(rnd: int) -> dict[str, Any]:
    return {"round": rnd, "seconds": 0.0, "cpu_seconds": 0.0, "bytes_up": 0, "bytes_down": 0, "bytes_between": 0,
            "messages": 0}


def run_sessions(sessions: Mapping[str, PartySession],
                 relay: Callable[[str, Outgoing], None] | None = None) -> dict[str, PartySession]:
    """Pass the sessions' messages to each other in this process, in the order they are sent, until every
    party is done (what the fedx server does over the network; for tests). ``relay(sender, message)`` sees each
    message forwarded."""
    queue: list[tuple[str, Outgoing]] = [(n, m) for n, s in sessions.items() for m in s.start()]
    while queue:
        sender, out = queue.pop(0)
        if relay is not None:
            relay(sender, out)
        if out.to not in sessions:
            raise PSIError(f"party {sender!r} sent a message to {out.to!r}, which is no party of this run")
        queue.extend((out.to, m) for m in sessions[out.to].receive(out.message))
    unfinished = sorted(n for n, s in sessions.items() if not s.done)
    if unfinished:
        raise AggregationError(f"the parties stopped exchanging messages before {', '.join(unfinished)} finished")
    return dict(sessions)
