"""The ClientApp: one institution's side of the federation, on Flower's Message API.

Every message from the server names a phase (see :mod:`fedx.flower.protocol`). The handler rebuilds
the :class:`~fedx.institution.Institution` from the node's local settings and the state Flower keeps
for the node between messages, runs the phase, records what leaves in the audit ledger, and replies.
An error at the institution becomes a reply with ``status: error`` and a one-line reason, so the
server can log it and go on with the others.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from ..aggregators import ModelState
from ..config import config_from_dict
from ..errors import AuditError, FederationError, FedxError
from ..institution import Institution, NodeSpec, NodeState
from ..privacy.audit import AuditLedger, head_from
from . import protocol as P
from .records import (
    arrays_record,
    blobs_record,
    json_record,
    named_arrays_record,
    payload_parts,
    payload_record,
    read_arrays,
    read_blobs,
    read_json,
    read_named_arrays,
    read_payload,
    stats_record,
)

log = logging.getLogger(__name__)

_JOB = "fedx-job"
_STATE = "fedx-state"
_PARAMS = "fedx-params"
_OPT = "fedx-opt"


def make_client_app(resolve_spec: Callable[[Context], NodeSpec], mods: Sequence[Any] = ()) -> ClientApp:
    """A ClientApp whose institution settings come from ``resolve_spec(context)``, wrapped in Flower ``mods``."""
    app = ClientApp(mods=list(mods))

    def handle(msg: Message, context: Context) -> Message:
        return _handle(msg, context, resolve_spec)

    app.query()(handle)
    app.train()(handle)
    app.evaluate()(handle)
    return app


def _handle(msg: Message, context: Context, resolve_spec: Callable[[Context], NodeSpec]) -> Message:
    req: dict[str, Any] = {}
    spec: NodeSpec | None = None
    try:
        req = read_json(msg.content)
        spec = resolve_spec(context)
        content = _run_phase(req, msg.content, context, spec)
    except FedxError as exc:
        if spec is not None and req.get("phase") == P.HELLO:
            log.error("%s refuses the run: %s", spec.name, exc)
        content = _error(req, exc, spec)
    except Exception as exc:  # noqa: BLE001 - an institution must answer, not crash the federation
        log.error("unexpected error at the institution:\n%s", traceback.format_exc())
        content = _error(req, exc, spec)
    if spec is not None:
        content = _audit(spec, context, req, content)
    return Message(content, reply_to=msg)


def _error(req: dict[str, Any], exc: BaseException, spec: NodeSpec | None = None) -> RecordDict:
    reason = str(exc) if isinstance(exc, FedxError) else f"{type(exc).__name__}: {exc}"
    doc = {"phase": req.get("phase"), "round": req.get("round", 0), "status": "error", "reason": reason,
           "error_type": type(exc).__name__}
    if spec is not None:
        doc["name"] = spec.name
    return RecordDict({"fedx": json_record(doc)})


def _run_phase(req: dict[str, Any], content: RecordDict, context: Context, spec: NodeSpec) -> RecordDict:
    phase = req.get("phase")
    if phase not in P.PHASES:
        raise FederationError(f"unknown phase {phase!r}; this node speaks {', '.join(P.PHASES)}")
    job = req.get("config")
    if job is not None:
        context.state.config_records[_JOB] = json_record(job)
    elif _JOB in context.state.config_records:
        job = read_json(context.state, _JOB)
    else:
        raise FederationError("the server sent no run config, and this node has none from earlier messages")
    cfg = config_from_dict(job, source="the run config sent by the server")
    inst = Institution(spec, cfg, _load_state(context))
    out: dict[str, Any] = {"phase": phase, "round": int(req.get("round", 0)), "status": "ok", "name": spec.name}
    records: dict[str, Any] = {}

    if "setup" in req and _needs_setup(inst, req["setup"]):
        inst.setup(req["setup"]["levels"], read_payload(content.array_records[P.REC_SETUP]))

    if phase == P.HELLO:
        out.update(inst.hello())
    elif phase == P.LEVELS:
        out["levels"] = inst.levels()
    elif phase in (P.MASK_KEYS, P.MASK_SHARES, P.MASK_UNMASK):
        from .masking import client_phase

        out.update(client_phase(phase, req, context, inst))
    elif phase == P.MOMENTS:
        records["payload"] = payload_record(_masked(inst, {"blob": inst.moments(req["levels"])}, req, context)["blob"])
    elif phase == P.SETUP:
        digests = inst.setup(req["levels"], read_payload(content.array_records[P.REC_SETUP]))
        out.update(digests)
        state = inst.state.model
        assert state is not None
        out["shapes"] = [list(p.shape) for p in state.params]
        out["update_shapes"] = [list(s) for s in inst.update_shapes()]
        if req.get("send_params"):
            records["payload"] = arrays_record(state.params)
    elif phase == P.STATS_LEVELS:
        out["levels"] = inst.stats_levels()
    elif phase == P.STATS:
        rec = content.array_records.get(P.REC_GLOBAL)
        total = None
        if rec is not None:
            total = read_blobs(rec) if req.get("encrypted") else {k: [v] for k, v in read_named_arrays(rec).items()}
        doc, payloads = inst.stats_step(req.get("levels") or {}, req.get("stage"), total)
        out.update(doc)
        if payloads:
            payloads = _masked(inst, payloads, req, context)
            records["payload"] = blobs_record(payloads) if req.get("encrypted") else \
                named_arrays_record({k: v[0] for k, v in payloads.items()})
    elif phase == P.LOCAL_BASELINE:
        metrics, stats = inst.local_baseline(int(req["epochs"]))
        out["metrics"] = metrics
        records["stats"] = stats_record(stats)
    elif phase in (P.TRAIN, P.EVALUATE, P.FINAL):
        _sync(inst, req, content)
        if phase == P.TRAIN:
            payload, metrics = inst.train(int(req["round"]), float(req["total_weight"]), int(req.get("n_clients", 1)))
            records["payload"] = payload_record(_masked(inst, {"blob": payload}, req, context)["blob"])
            records["metrics"] = MetricRecord({k: float(v) for k, v in metrics.items()})
        else:
            metrics, stats = inst.evaluate()
            out["metrics"] = metrics
            records["stats"] = stats_record(stats)
            if phase == P.FINAL:
                out["model_path"] = str(inst.save_model())
                if inst.state.report is not None:
                    out["model_report"] = inst.state.report
        state = inst.state.model
        assert state is not None
        out["state_round"] = state.round
        out["state_digest"] = state.digest()
        out["done"] = inst.state.report is not None
    _save_state(context, inst.state)
    return RecordDict({"fedx": json_record(out), **records})


def _masked(inst: Institution, payloads: dict[str, Any], req: dict[str, Any], context: Context) -> dict[str, Any]:
    """``payloads`` as they leave: masked and encrypted under ``security.masking: pairwise``, else as they are."""
    if not inst.masking:
        return payloads
    from .masking import seal

    return seal(payloads, req, context, inst)


def _needs_setup(inst: Institution, setup: dict[str, Any]) -> bool:
    from ..data.preprocess import Preprocessor

    if inst.state.preprocessor is None or inst.state.model is None:
        return True
    return Preprocessor.from_dict(inst.state.preprocessor).digest != setup.get("preprocessor")


def _sync(inst: Institution, req: dict[str, Any], content: RecordDict) -> None:
    target = int(req["target_round"])
    digests = {int(k): v for k, v in req.get("digests", {}).items()}
    rec = content.array_records.get(P.REC_GLOBAL)
    if req.get("encrypted"):
        blobs = read_blobs(rec) if rec is not None else {}
        aggregates = {int(k.split("/")[1]): b for k, b in blobs.items()}
        inst.sync(target, aggregates=aggregates, digests=digests)
    else:
        if rec is None:
            raise FederationError("plaintext round without the global model")
        opt_rec = content.array_records.get(P.REC_OPT)
        inst.sync(target, params=read_arrays(rec), opt=_unflatten_opt(opt_rec) if opt_rec is not None else None)


def _load_state(context: Context) -> NodeState:
    recs = context.state
    if _STATE not in recs.config_records:
        return NodeState()
    doc = read_json(recs, _STATE)
    model = None
    if _PARAMS in recs.array_records:
        opt = _unflatten_opt(recs.array_records[_OPT]) if _OPT in recs.array_records else {}
        model = ModelState(read_arrays(recs.array_records[_PARAMS]), opt, int(doc["round"]))
    return NodeState(preprocessor=doc.get("preprocessor"), model=model, report=doc.get("report"),
                     dp_history=doc.get("dp_history", []))


def _save_state(context: Context, state: NodeState) -> None:
    recs = context.state
    doc = {"preprocessor": state.preprocessor, "round": state.model.round if state.model else 0,
           "report": state.report, "dp_history": state.dp_history}
    recs.config_records[_STATE] = json_record(doc)
    if state.model is not None:
        recs.array_records[_PARAMS] = arrays_record(state.model.params)
        recs.array_records[_OPT] = opt_record(state.model.opt)


def opt_record(opt: dict[str, list[Any]]) -> ArrayRecord:
    """An optimizer state ({name: [arrays]}) as one record (keys ``name/0000``)."""
    flat = {f"{name}/{i:04d}": a for name, arrays in opt.items() for i, a in enumerate(arrays)}
    return named_arrays_record(flat) if flat else ArrayRecord()


def _unflatten_opt(record: ArrayRecord) -> dict[str, list[Any]]:
    opt: dict[str, list[Any]] = {}
    for key, arr in zip(sorted(record.keys()), read_arrays(record)):
        opt.setdefault(key.split("/")[0], []).append(arr)
    return opt


def _audit(spec: NodeSpec, context: Context, req: dict[str, Any], content: RecordDict) -> RecordDict:
    """Record the reply in the institution's ledger; return what may leave.

    The ledger holds everything that leaves the institution (``security.audit``, on unless the run turns it
    off). When it cannot be written (a full disk, a file that is not writable), the reply does not leave:
    an error reply without payload takes its place, and the server drops the institution with that reason
    (at ``hello`` the run stops).
    """
    job = read_json(context.state, _JOB) if _JOB in context.state.config_records else {}
    if not job.get("security", {}).get("audit", True):
        return content
    doc = read_json(content)
    checks: dict[str, Any] = {"status": doc.get("status"),
                              "encrypted": any(arr.stype != "numpy.ndarray"
                                               for rec in content.array_records.values() for arr in rec.values()
                                               ) if "payload" in content.array_records else False}
    try:
        ledger = AuditLedger(spec.out_dir / "ledger.jsonl")
        # The reply carries the ledger's head, which the server's receipt records; the entry records the
        # server's receipt head that came with the request. Each side then anchors the other's file.
        content.config_records["fedx"] = json_record({**doc, "ledger": ledger.head})
        ledger.append(round=int(req.get("round", 0)), kind=str(req.get("phase", "unknown")),
                      payload=payload_parts(content), checks=checks, anchor=head_from(req.get("receipt")))
    except (OSError, AuditError) as exc:
        log.error("%s: cannot write the audit ledger, so the reply is not sent: %s", spec.name, exc)
        return _error(req, AuditError(f"{spec.name} cannot write its audit ledger ({exc}), and nothing leaves "
                                      f"the institution unrecorded (security.audit): fix the ledger's folder "
                                      f"{spec.out_dir}"), spec)
    return content

