"""What ``fedx server`` and ``fedx node`` do: run one side of a real deployment.

``serve`` (the server operator): start a SuperLink with TLS and SuperNode authentication (its state in
a SQLite file, so a restart keeps the registered nodes), register the institutions' public keys,
launch the fedx run, follow it until it finishes, and stop the SuperLink. Run it again after a crash:
the SuperLink comes back with its registrations, the nodes reconnect, and the run resumes from the
server's checkpoint.

``run_node`` (each institution): start a SuperNode for the institution's node file, and keep it
running: when it stops (the server restarted, the network failed), start it again, so the node
rejoins and catches up.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Config, NodeConfig
from ..errors import DeploymentError
from . import deploy

log = logging.getLogger(__name__)

CONNECTION = "fedx"
RUN_CONFIG_KEYS = ("fedx-config", "fedx-out", "fedx-public", "fedx-expected-nodes", "fedx-wait-seconds")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def serve(cfg: Config, config_path: Path, *, say: Callable[[str], None] = _say) -> dict[str, Any]:
    """Run the config's job on a real SuperLink; return the run's final Flower status record.

    Raises
    ------
    DeploymentError
        Missing certificates or keys, a SuperLink that does not start, or a run that fails.
    """
    dep = cfg.deployment
    if dep is None:
        raise DeploymentError(f"{config_path}: deployment: missing section (host, port, certificates, nodes, "
                              f"out_dir); see docs/deploy.md")
    out = cfg.resolve_path(dep.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    home = out / "flwr-home"
    public_path = None
    if cfg.security.encryption != "none":
        if cfg.security.keys is None:
            raise DeploymentError("security.keys: a deployment needs the folder with public.fxk from `fedx keygen`")
        public_path = cfg.resolve_path(cfg.security.keys) / "public.fxk"
        if not public_path.exists():
            raise DeploymentError(f"security.keys: {public_path} not found (copy public.fxk from `fedx keygen`; "
                                  f"the server never needs secret.fxk)")
    pubs: list[Path] = []
    tls = None
    if dep.insecure:
        say(deploy.INSECURE_WARNING)
    else:
        assert dep.certificates is not None and dep.nodes is not None
        certs = cfg.resolve_path(dep.certificates)
        tls = deploy.TLSFiles(ca_cert=certs / "ca.crt", ca_key=certs / "ca.key", server_cert=certs / "server.pem",
                              server_key=certs / "server.key")
        tls.check()
        pubs = sorted(cfg.resolve_path(dep.nodes).glob("*.pub"))
        if not pubs:
            raise DeploymentError(f"deployment.nodes: no NAME.pub files in {cfg.resolve_path(dep.nodes)} "
                                  f"(each institution makes one with `fedx node-keys`)")
    expected = dep.expected_nodes or len(pubs) or cfg.federation.min_clients
    superlink = deploy.start_superlink(out, tls=tls, insecure=dep.insecure, host=dep.host, port=dep.port,
                                       flwr_home=home, log_path=out / "superlink.log",
                                       database=out / "superlink.db")
    try:
        address = superlink.address
        deploy.write_connection(home, CONNECTION, address, root_certificates=None if tls is None else tls.ca_cert,
                                insecure=dep.insecure)
        say(f"SuperLink listening on {dep.host}:{dep.port} (pid {superlink.pid}); log {superlink.log_path}")
        for pub in pubs:
            try:
                node_id = deploy.register_node(pub, CONNECTION, home, name=pub.stem)
                say(f"registered {pub.stem} (node {node_id})")
            except DeploymentError as exc:
                if "already registered" not in str(exc):
                    raise
                say(f"{pub.stem} was registered before")
        app_dir = deploy.write_app_dir(out / "app", config={k: "" for k in RUN_CONFIG_KEYS})
        run_config = {"fedx-config": str(Path(config_path).resolve()), "fedx-out": str(out),
                      "fedx-public": str(public_path) if public_path else "",
                      "fedx-expected-nodes": str(expected), "fedx-wait-seconds": str(dep.wait_seconds)}
        run_id = deploy.launch_run(app_dir, CONNECTION, run_config, home)
        say(f"run {run_id} launched; waiting for {expected} institution(s)")
        record = _follow(run_id, home, out, superlink, dep.max_seconds, say)
        if not str(record.get("status", "")).endswith("completed"):
            logs = deploy.run_logs(run_id, CONNECTION, home)
            raise DeploymentError(f"run {run_id} ended {record.get('status')}:\n" + "\n".join(logs.splitlines()[-25:]))
        say(f"run {run_id} finished: {out / 'result.json'}")
        return record
    finally:
        deploy.stop(superlink)


def _follow(run_id: int, home: Path, out: Path, superlink: deploy.FlowerProcess, max_seconds: float,
            say: Callable[[str], None]) -> dict[str, Any]:
    """Wait for the run, printing each completed round from the server's checkpoint."""
    import json

    deadline = time.monotonic() + max_seconds
    seen = -1
    index = out / "checkpoint" / "index.json"
    while True:
        if superlink.poll() is not None:
            raise DeploymentError(f"the SuperLink exited with status {superlink.poll()}:\n{superlink.log_tail()}")
        record = deploy.run_status(run_id, CONNECTION, home)
        if index.exists():
            try:
                doc = json.loads(index.read_text())
            except (OSError, json.JSONDecodeError):
                doc = {}
            for row in doc.get("history", []):
                if row["round"] > seen:
                    seen = row["round"]
                    metrics = ", ".join(f"{k} {v:.4f}" for k, v in row.get("metrics", {}).items()
                                        if isinstance(v, float) and k not in ("n", "base_rate"))
                    say(f"round {seen}: {metrics}  ({row.get('seconds', 0):.1f} s, "
                        f"{len(row.get('clients', []))} institutions)")
        if str(record.get("status", "")).startswith("finished"):
            return record
        if time.monotonic() > deadline:
            raise DeploymentError(f"run {run_id} did not finish within {max_seconds:g} s "
                                  f"(deployment.max_seconds)")
        time.sleep(2.0)


def run_node(node: NodeConfig, node_path: Path, *, once: bool = False, say: Callable[[str], None] = _say) -> int:
    """Run this institution's SuperNode until interrupted; restart it whenever it stops.

    Parameters
    ----------
    node : NodeConfig
        The institution's node file, loaded.
    node_path : Path
        Its path (the ClientApp reads it again in each of its processes).
    once : bool
        Do not restart: return the SuperNode's exit status when it stops.
    """
    if not node.data_path.exists():
        raise DeploymentError(f"{node_path}: data: {node.data_path} not found")
    if node.keys_path is not None and not node.keys_path.exists():
        raise DeploymentError(f"{node_path}: keys: {node.keys_path} not found (the secret.fxk from `fedx keygen`)")
    sl = node.superlink
    if sl.insecure:
        say(deploy.INSECURE_WARNING)
    else:
        for what, value in (("root_certificates", sl.root_certificates), ("auth_key", sl.auth_key)):
            path = node.resolve(value)
            if path is None or not path.exists():
                raise DeploymentError(f"{node_path}: superlink.{what}: {path} not found")
    out = node.out_path.resolve()
    out.mkdir(parents=True, exist_ok=True)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return _supervise(node, node_path, out, once, say)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _supervise(node: NodeConfig, node_path: Path, out: Path, once: bool, say: Callable[[str], None]) -> int:
    sl = node.superlink
    backoff = 2.0
    while True:
        proc = deploy.start_supernode(
            sl.address, node_config={"fedx-node": str(Path(node_path).resolve())},
            private_key=node.resolve(sl.auth_key), root_certificates=node.resolve(sl.root_certificates),
            insecure=sl.insecure, port=sl.clientappio_port, flwr_home=out / "flwr-home",
            log_path=out / "supernode.log", workdir=out,
            extra_env={"OMP_NUM_THREADS": "1"}, wait_ready=False)
        say(f"{node.name}: SuperNode started (pid {proc.pid}), connecting to {sl.address}; log {proc.log_path}")
        try:
            code = proc.popen.wait()
        except KeyboardInterrupt:
            deploy.stop(proc)
            say(f"{node.name}: stopped")
            return 130
        deploy.stop(proc)
        if proc.flower_exit_code == 305:
            raise DeploymentError(f"{node.name}: the server refused this node's key: the server operator must "
                                  f"register its public key (the .pub beside {node.resolve(sl.auth_key)})")
        if once:
            return int(code)
        say(f"{node.name}: SuperNode exited with status {code}; starting it again in {backoff:.0f} s")
        time.sleep(backoff)
        backoff = min(backoff * 2, 60.0)
