"""The ClientApp's side of a deployed vertical run: carry the relay's messages to the party service and back.

A vertical run's phases (:data:`VERTICAL_PHASES`) are handled here, without the horizontal institution (no
torch, no preprocessing): each Flower message from the server holds the protocol messages for this party,
which go to the party's long-lived session in its ``fedx node`` process
(:func:`fedx.vertical.service.call_party`); the reply holds the party's messages to forward and, for each, the
receiver, the round, the kind and the party's ledger head before its entry (for the server's receipts). The
session has appended every one of them to the party's ledger before it answers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from flwr.app import Context, Message, RecordDict

from ..config import NodeConfig
from ..errors import FedxError
from .records import blobs_record, json_record, read_blobs, read_json
from .run_end import record_run_end

log = logging.getLogger(__name__)

__all__ = ["REC_MESSAGES", "VERTICAL_PHASES", "handle_vertical", "messages_record", "read_messages"]

V_HELLO, V_START, V_DELIVER, V_END = "v-hello", "v-start", "v-deliver", "v-end"
#: The phases of a vertical run (``hello``: who is this node; ``start``: open the run's session; ``deliver``:
#: messages from the other parties; ``end``: the run is over, or stopped).
VERTICAL_PHASES = (V_HELLO, V_START, V_DELIVER, V_END)
#: The record that carries protocol messages, in order (keys ``000000``, ``000001``, ...).
REC_MESSAGES = "messages"


def messages_record(messages: Sequence[bytes]) -> Any:
    """Protocol messages as one record, in order."""
    return blobs_record({f"{i:06d}": m for i, m in enumerate(messages)})


def read_messages(content: RecordDict) -> list[bytes]:
    """The protocol messages of a request or reply, in order (none when it carries no record)."""
    rec = content.array_records.get(REC_MESSAGES)
    if rec is None:
        return []
    blobs = read_blobs(rec)
    return [blobs[k] for k in sorted(blobs)]


def handle_vertical(msg: Message, context: Context, node: NodeConfig, req: dict[str, Any]) -> Message:
    """Answer one vertical phase for the party of node file ``node``; an error becomes ``status: error``."""
    from ..vertical.service import call_party

    phase = req.get("phase")
    out_dir = node.out_path.resolve()
    doc: dict[str, Any] = {"phase": phase, "name": node.name, "status": "ok"}
    records: dict[str, Any] = {}
    try:
        if phase == V_HELLO:
            doc["vertical"] = True
        else:
            header: dict[str, Any] = {"op": str(phase)[2:], "run": str(req.get("run", ""))}
            if phase == V_START:
                header["config"] = req.get("config")
            if phase == V_END:
                header.update(status=req.get("status", "ok"), reason=req.get("reason"))
            answer, out = call_party(out_dir, header, read_messages(msg.content), name=node.name)
            doc.update(answer)
            doc["name"] = node.name
            if out:
                records[REC_MESSAGES] = messages_record(out)
            if phase == V_END:
                record_run_end(out_dir, context.run_id)
    except FedxError as exc:
        doc.update(status="error", reason=str(exc), error_type=type(exc).__name__)
    except Exception as exc:
        log.exception("%s: unexpected error in %s", node.name, phase)
        doc.update(status="error", reason=f"{type(exc).__name__}: {exc}", error_type=type(exc).__name__)
    return Message(RecordDict({"fedx": json_record(doc), **records}), reply_to=msg)


def vertical_phase(msg: Message) -> dict[str, Any] | None:
    """The request's JSON document when it is a vertical phase, else None."""
    try:
        req = read_json(msg.content)
    except FedxError:
        return None
    return req if req.get("phase") in VERTICAL_PHASES else None
