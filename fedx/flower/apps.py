"""The ServerApp and ClientApp that Flower's deployment engine loads (``fedx.flower.apps:server_app``).

The SuperLink runs :data:`server_app` with a run config that names the fedx config file, the
server's public HE context and its output folder; each SuperNode runs :data:`client_app` with a node
config that names the institution's node file (data, secret key, policy). Nothing is installed at
run time: both live in the installed fedx package.

Run config keys: ``fedx-config`` (path of the run's YAML), ``fedx-out`` (server folder for the
checkpoint and result.json), ``fedx-public`` (public.fxk or its folder, when encryption is on; checked
against the config by :func:`fedx.run_keys.server_public_key`) and
``fedx-expected-nodes`` (how many institutions to wait for). Node config key: ``fedx-node``
(path of the institution's node YAML, see :func:`fedx.config.load_node_config`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from ..config import NodeConfig, load_config, load_node_config
from ..errors import DeploymentError
from . import protocol as P
from .records import json_record, read_json
from .run_end import record_run_end
from .vertical_client import handle_vertical, vertical_phase

if TYPE_CHECKING:
    from ..institution import NodeSpec

log = logging.getLogger(__name__)


def _run_value(context: Context, key: str, default: str | None = None) -> str:
    value = context.run_config.get(key, default)
    if value is None or value == "":
        raise DeploymentError(f"run config has no {key!r}; launch runs with `fedx server`")
    return str(value)


def node_file_from_context(context: Context) -> NodeConfig:
    """The node file named in the SuperNode's node config."""
    path = context.node_config.get("fedx-node")
    if not path:
        raise DeploymentError("this SuperNode has no fedx-node in its node config; start it with `fedx node`")
    return load_node_config(str(path))


def node_spec_from_context(context: Context) -> NodeSpec:
    """The institution's settings, from the node file named in the SuperNode's node config."""
    from ..institution import LocalPolicy, NodeSpec

    node = node_file_from_context(context)
    return NodeSpec(name=node.name, data=node.data_path, out_dir=node.out_path, keys=node.keys_path,
                    policy=LocalPolicy(require_encryption=node.policy.require_encryption,
                                       min_cohort=node.policy.min_cohort))


server_app = ServerApp()


@server_app.main()
def _server_main(grid: Grid, context: Context) -> None:
    cfg = load_config(_run_value(context, "fedx-config"))
    out = Path(_run_value(context, "fedx-out"))
    if cfg.data.vertical:
        from .vertical_relay import VerticalRelay

        VerticalRelay(cfg, grid, out, expected_nodes=int(_run_value(context, "fedx-expected-nodes", "0")),
                      wait_seconds=float(context.run_config.get("fedx-wait-seconds", 300))).run()
        return
    from ..run_keys import server_public_key
    from .server_app import Orchestrator

    public = None
    if cfg.security.encryption != "none":
        public = server_public_key(cfg, _run_value(context, "fedx-public"))
    expected = int(_run_value(context, "fedx-expected-nodes", str(cfg.federation.min_clients)))
    summary = Orchestrator(cfg, grid, public, out, expected_nodes=expected, resume=True,
                           wait_seconds=float(context.run_config.get("fedx-wait-seconds", 300))).run()
    summary.write_result(cfg, out, public)
    log.info("fedx run finished: %s", out / "result.json")


def note_run_end(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    """ClientApp mod: once this node has answered a run's final message, record that the run ended.

    ``fedx node`` reads the record (``out_dir/run-ended.json``) and stops its SuperNode, so the node
    does not go on dialling the server's address after its run.
    """
    reply = call_next(msg, context)
    try:
        asked, answered = read_json(msg.content), read_json(reply.content)
    except Exception:  # noqa: BLE001 - not a fedx message; nothing to record
        return reply
    if asked.get("phase") == P.FINAL and answered.get("status") == "ok":
        try:
            record_run_end(node_spec_from_context(context).out_dir, context.run_id)
        except (OSError, DeploymentError) as exc:
            log.error("cannot record the end of run %s: %s", context.run_id, exc)
    return reply


def _handle(msg: Message, context: Context) -> Message:
    """A vertical phase goes to the party service (a light process: no torch); any other to the institution."""
    req = vertical_phase(msg)
    if req is not None:
        try:
            node = node_file_from_context(context)
        except Exception as exc:  # noqa: BLE001 - the server learns why
            doc = {"phase": req.get("phase"), "status": "error", "reason": str(exc), "error_type": type(exc).__name__}
            return Message(RecordDict({"fedx": json_record(doc)}), reply_to=msg)
        return handle_vertical(msg, context, node, req)
    from .client_app import _handle as handle_institution

    return note_run_end(msg, context, lambda m, c: handle_institution(m, c, node_spec_from_context))


# Plain assignments: Flower finds a component only as a top-level name (not an annotated one).
client_app = ClientApp()
client_app.query()(_handle)
client_app.train()(_handle)
client_app.evaluate()(_handle)
