"""ServerApp: send one ``query`` to every connected node and record the replies; ClientApp: answer it.

Run config (declared in the app's ``[tool.flwr.app.config]``):

- ``expected-nodes`` (int): wait up to ``timeout`` seconds for this many nodes.
- ``fedx-config`` (str): any text (a path, or YAML); sent to the nodes and echoed back.
- ``reply-timeout`` (float): the ``send_and_receive`` timeout.
- ``out`` (str): where the ServerApp writes the outcome as JSON.

The ClientApp answers with its ``context.node_config["fedx-node"]``, its node id and its pid.
"""

from __future__ import annotations

import json
import os
import time

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

server_app = ServerApp()
client_app = ClientApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """Query every node once and write ``{"nodes", "replies", "errors", "seconds"}`` to ``out``."""
    cfg = dict(context.run_config)
    expected = int(cfg["expected-nodes"])
    deadline = time.monotonic() + float(cfg["timeout"])
    node_ids: list[int] = []
    while time.monotonic() < deadline:
        node_ids = sorted(grid.get_node_ids())
        if len(node_ids) >= expected:
            break
        time.sleep(0.5)
    print(f"POC nodes {node_ids}", flush=True)
    messages = [
        Message(RecordDict({"q": ConfigRecord({"fedx-config": str(cfg["fedx-config"])})}),
                dst_node_id=node_id, message_type="query")
        for node_id in node_ids
    ]
    start = time.monotonic()
    replies = grid.send_and_receive(messages, timeout=float(cfg["reply-timeout"]))
    # The grid sets each message's id when it pushes it.
    sent = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
    outcome: dict[str, object] = {"nodes": node_ids, "replies": {}, "errors": {},
                                  "seconds": round(time.monotonic() - start, 2)}
    for reply in replies:
        # An error made by the SuperLink (NODE_UNAVAILABLE) comes from node 1: name the addressee instead.
        node = sent.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
        if reply.has_error():
            error = {"code": reply.error.code, "reason": reply.error.reason}
            outcome["errors"][str(node)] = error  # type: ignore[index]
        else:
            outcome["replies"][str(node)] = dict(reply.content["a"])  # type: ignore[index]
    print("POC result " + json.dumps(outcome), flush=True)
    if cfg["out"]:
        with open(str(cfg["out"]), "w", encoding="utf-8") as fh:
            json.dump(outcome, fh)


@client_app.query()
def query(msg: Message, context: Context) -> Message:
    """Answer with this node's ``fedx-node`` setting and echo the run's ``fedx-config``."""
    delay = float(os.environ.get("POC_CLIENT_DELAY", "0"))
    if delay:
        time.sleep(delay)
    return Message(RecordDict({"a": ConfigRecord({
        "fedx-node": str(context.node_config.get("fedx-node", "")),
        "node-id": str(context.node_id),
        "pid": os.getpid(),
        "echo": str(msg.content["q"]["fedx-config"]),
    })}), reply_to=msg)
