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
        run_config = {"fedx-config": str(write_effective_config(cfg, out)), "fedx-out": str(out),
                      "fedx-public": str(public_path) if public_path else "",
                      "fedx-expected-nodes": str(expected), "fedx-wait-seconds": str(dep.wait_seconds)}
        rounds = RoundWatcher(out / "checkpoint" / "index.json")
        run_id = deploy.launch_run(app_dir, CONNECTION, run_config, home)
        say(f"run {run_id} launched; waiting for {expected} institution(s)")
        record = _follow(run_id, home, superlink, rounds, dep.max_seconds, say)
        if not str(record.get("status", "")).endswith("completed"):
            logs = deploy.run_logs(run_id, CONNECTION, home)
            raise DeploymentError(f"run {run_id} ended {record.get('status')}:\n" + "\n".join(logs.splitlines()[-25:]))
        say(f"run {run_id} finished: {out / 'result.json'}")
        return record
    finally:
        deploy.stop(superlink)


def write_effective_config(cfg: Config, out: Path) -> Path:
    """Write the config as `fedx server` resolved it (with ``--set`` and ``--insecure``) to ``out/config.yaml``.

    The ServerApp reads its config from this file, so that the overrides reach the run (it resolves no
    relative path, so the file's folder does not matter).
    """
    import yaml

    path = Path(out) / "config.yaml"
    path.write_text(f"# the config of the last `fedx server` run, as given by {cfg.source} and --set\n"
                    + yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return path.resolve()


def _follow(run_id: int, home: Path, superlink: deploy.FlowerProcess, rounds: RoundWatcher, max_seconds: float,
            say: Callable[[str], None]) -> dict[str, Any]:
    """Wait for the run, printing each completed round from the server's checkpoint."""
    deadline = time.monotonic() + max_seconds
    while True:
        if superlink.poll() is not None:
            raise DeploymentError(f"the SuperLink exited with status {superlink.poll()}:\n{superlink.log_tail()}")
        record = deploy.run_status(run_id, CONNECTION, home)
        for row in rounds.new_rows():
            say(round_line(row))
        if str(record.get("status", "")).startswith("finished"):
            return record
        if time.monotonic() > deadline:
            raise DeploymentError(f"run {run_id} did not finish within {max_seconds:g} s "
                                  f"(deployment.max_seconds)")
        time.sleep(2.0)


class RoundWatcher:
    """The rounds a run completes, read from its checkpoint index (``out_dir/checkpoint/index.json``).

    Make it before the run is launched: an index already there belongs to a previous run (a reused
    ``out_dir``), so its rows are not reported until the run has written its own (every save replaces the
    index by a rename).
    """

    def __init__(self, index: Path) -> None:
        self.index = index
        self.stale = self._stamp()
        self.seen = -1

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.index.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def new_rows(self) -> list[dict[str, Any]]:
        """History rows of rounds completed since the last call."""
        import json

        if self.stale is not None:
            if self._stamp() == self.stale:
                return []
            self.stale = None
        try:
            doc = json.loads(self.index.read_text())
        except (OSError, json.JSONDecodeError):
            return []
        rows = [row for row in doc.get("history", []) if row["round"] > self.seen]
        if rows:
            self.seen = max(row["round"] for row in rows)
        return rows


def round_line(row: dict[str, Any]) -> str:
    """The line ``fedx server`` prints for one completed round (a row of the checkpoint's history)."""
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in row.get("metrics", {}).items()
                        if isinstance(v, float) and k not in ("n", "base_rate"))
    if not metrics:   # a round without evaluation (federation.eval_every)
        loss = row.get("train_loss")
        metrics = (f"train_loss {loss:.4f}, " if isinstance(loss, float) else "") + "not evaluated"
    return f"round {row['round']}: {metrics}  ({row.get('seconds', 0):.1f} s, {len(row.get('clients', []))} institutions)"


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


def supernode_options(node: NodeConfig, node_path: Path, out: Path) -> dict[str, Any]:
    """The keyword arguments of :func:`deploy.start_supernode` for this node file.

    In insecure mode the node file's ``root_certificates`` and ``auth_key`` are ignored (Flower refuses
    them together with ``--insecure``), so the same node file serves both modes.
    """
    sl = node.superlink
    return {"superlink_address": sl.address, "node_config": {"fedx-node": str(Path(node_path).resolve())},
            "private_key": None if sl.insecure else node.resolve(sl.auth_key),
            "root_certificates": None if sl.insecure else node.resolve(sl.root_certificates),
            "insecure": sl.insecure, "port": sl.clientappio_port, "flwr_home": out / "flwr-home",
            "log_path": out / "supernode.log", "workdir": out, "extra_env": {"OMP_NUM_THREADS": "1"}}


def _supervise(node: NodeConfig, node_path: Path, out: Path, once: bool, say: Callable[[str], None]) -> int:
    sl = node.superlink
    backoff = 2.0
    while True:
        proc = deploy.start_supernode(**supernode_options(node, node_path, out), wait_ready=False)
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
