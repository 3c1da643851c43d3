"""What ``fedx server`` and ``fedx node`` do: run one side of a real deployment.

``serve`` (the server operator): start a SuperLink with TLS and SuperNode authentication (its state in
a SQLite file, so a restart keeps the registered nodes), register the institutions' public keys,
launch the fedx run, follow it until it finishes, and stop the SuperLink. Run it again after a crash:
the SuperLink comes back with its registrations, the nodes reconnect, and the run resumes from the
server's checkpoint.

``run_node`` (each institution): start a SuperNode for the institution's node file and say what it
waits for. A node started before the server knows its key retries with backoff for ``retry_for``
seconds; TLS failures end it at once with a message that names the file to check; a server that goes
away mid-run is awaited for ``retry_for`` seconds (Flower's ``--max-wait-time``), so the node rejoins a
restarted server and catches up. When the run it joined has ended (the ClientApp records it in
``out_dir/run-ended.json`` on the run's final message) and the server has then closed, the node stops,
unless ``keep_running``.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..config import Config, NodeConfig
from ..errors import DeploymentError
from ..run_keys import server_public_key
from . import deploy
from .run_end import RUN_END_FILE, record_run_end  # noqa: F401 - part of what `fedx node` does

log = logging.getLogger(__name__)

CONNECTION = "fedx"
_RUN_LINE = re.compile(r"\[RUN (\d+)")
RUN_CONFIG_KEYS = ("fedx-config", "fedx-out", "fedx-public", "fedx-expected-nodes", "fedx-wait-seconds")

#: Seconds a node keeps trying to join (or rejoin) its server before it gives up (``fedx node --retry-for``).
DEFAULT_RETRY_FOR = 600.0

#: The node ids `fedx server` got when registering each institution's key, in its ``out_dir``.
NODE_IDS_FILE = "node-ids.json"


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
    if cfg.model.kind == "gbdt" and not cfg.data.vertical:
        raise DeploymentError(f"{config_path}: horizontal model.kind: gbdt (data.split_by) runs in simulation only "
                              f"(`fedx run`); deployment runs vertical gbdt (data.partition: vertical), the vertical "
                              f"GLM and the other models (docs/trees.md)")
    out = cfg.resolve_path(dep.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    home = out / "flwr-home"
    public_path = None
    if cfg.security.encryption != "none" and not cfg.data.vertical:   # a vertical party makes its own keys
        if cfg.security.keys is None:
            raise DeploymentError("security.keys: a deployment needs the folder with public.fxk from `fedx keygen`")
        public_path = cfg.resolve_path(cfg.security.keys)
        public = server_public_key(cfg, public_path)   # refused here, before a SuperLink starts, if it does not fit
        say(f"HE public key {public.preset.name}, fingerprint {public.fingerprint_text} (each institution's "
            f"`fedx node` prints the fingerprint of its secret key: they must be the same)")
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
        names = _read_node_ids(out)
        for pub in pubs:
            try:
                node_id = deploy.register_node(pub, CONNECTION, home, name=pub.stem)
                names[node_id] = pub.stem
                say(f"registered {pub.stem} (node {node_id})")
            except DeploymentError as exc:
                if "already registered" not in str(exc):
                    raise
                say(f"{pub.stem} was registered before")
        _write_node_ids(out, names)
        app_dir = deploy.write_app_dir(out / "app", config={k: "" for k in RUN_CONFIG_KEYS})
        run_config = {"fedx-config": str(write_effective_config(cfg, out)), "fedx-out": str(out),
                      "fedx-public": str(public_path) if public_path else "",
                      "fedx-expected-nodes": str(expected), "fedx-wait-seconds": str(dep.wait_seconds)}
        rounds = RoundWatcher(out / "checkpoint" / "index.json")
        run_id = deploy.launch_run(app_dir, CONNECTION, run_config, home)
        say(f"run {run_id} launched; waiting for {expected} institution(s)")
        waiting = NodeWaitReporter(expected, names, secure=not dep.insecure)
        record = _follow(run_id, home, superlink, rounds, dep.max_seconds, say, waiting)
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
            say: Callable[[str], None], waiting: NodeWaitReporter | None = None) -> dict[str, Any]:
    """Wait for the run, printing the institutions connected until round 1, then each completed round.

    Each look at the connected institutions starts the ``flwr`` CLI: once all are connected, it is taken every
    :data:`NODES_POLL_CONNECTED` seconds rather than at every poll (a vertical run has no rounds to end it).
    """
    started = False
    looked = -NODES_POLL_CONNECTED

    def report(record: dict[str, Any]) -> None:
        nonlocal started, looked
        for row in rounds.new_rows():
            started = True
            say(round_line(row))
        if waiting is not None and not started and not str(record.get("status", "")).startswith("finished") \
                and (not waiting.complete or time.monotonic() - looked >= NODES_POLL_CONNECTED):
            looked = time.monotonic()
            line = waiting.update(deploy.list_nodes(CONNECTION, home))
            if line:
                say(line)

    return deploy.wait_run(run_id, CONNECTION, home, timeout=max_seconds, poll=2.0, superlink=superlink,
                           on_poll=report, timeout_hint=" (deployment.max_seconds)")


#: Seconds between two looks at the connected institutions once all are connected (:func:`_follow`).
NODES_POLL_CONNECTED = 15.0


def _read_node_ids(out: Path) -> dict[int, str]:
    try:
        return {int(k): str(v) for k, v in json.loads((out / NODE_IDS_FILE).read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _write_node_ids(out: Path, names: dict[int, str]) -> None:
    (out / NODE_IDS_FILE).write_text(json.dumps({str(k): v for k, v in sorted(names.items())}, indent=1))


class NodeWaitReporter:
    """The line `fedx server` prints while it waits for the institutions, each time the picture changes.

    Parameters
    ----------
    expected : int
        How many institutions the run waits for.
    names : dict
        ``{node id: institution}`` from the registrations.
    secure : bool
        Whether keys are registered (TLS with SuperNode authentication).
    """

    def __init__(self, expected: int, names: dict[int, str], *, secure: bool) -> None:
        self.expected, self.names, self.secure = expected, dict(names), secure
        self.last: str | None = None
        #: Whether the last nodes seen had every expected institution online.
        self.complete = False

    def line(self, nodes: list[dict[str, Any]]) -> str:
        """``institutions connected: 1/3 (east); waiting for north, south; keys registered: 3``."""
        online = sorted(self.names.get(n["node-id"], f"node {n['node-id']}") for n in nodes
                        if n.get("status") == "online")
        self.complete = len(online) >= self.expected
        text = f"institutions connected: {len(online)}/{self.expected}"
        if online:
            text += f" ({', '.join(online)})"
        missing = sorted(set(self.names.values()) - set(online))
        if missing and len(online) < self.expected:
            text += f"; waiting for {', '.join(missing)}"
        if self.secure:
            known = [n for n in nodes if n.get("status") != "unregistered"]
            text += f"; keys registered: {len(known)}"
        return text

    def update(self, nodes: list[dict[str, Any]]) -> str | None:
        """The line, when it differs from the last one printed; else None."""
        text = self.line(nodes)
        if text == self.last:
            return None
        self.last = text
        return text


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


def run_node(node: NodeConfig, node_path: Path, *, once: bool = False, retry_for: float = DEFAULT_RETRY_FOR,
             keep_running: bool = False, say: Callable[[str], None] = _say) -> int:
    """Run this institution's SuperNode until its run ends (or until interrupted); return the exit status.

    Parameters
    ----------
    node : NodeConfig
        The institution's node file, loaded.
    node_path : Path
        Its path (the ClientApp reads it again in each of its processes).
    once : bool
        Start the SuperNode once: no retry when the server refuses its key, and return its exit status
        when it stops.
    retry_for : float
        Seconds to keep trying to join the server (its key not registered yet, nothing listening yet), and
        to wait for a server that went away; 0 means no limit.
    keep_running : bool
        Stay after the run ends, for further runs.

    Raises
    ------
    DeploymentError
        A TLS failure, an unreadable key, or a server that did not accept the node within ``retry_for``.
    """
    if not node.data_path.exists():
        raise DeploymentError(f"{node_path}: data: {node.data_path} not found")
    if node.keys_path is not None and not node.keys_path.exists():
        raise DeploymentError(f"{node_path}: keys: {node.keys_path} not found (the secret.fxk from `fedx keygen`)")
    if retry_for < 0:
        raise DeploymentError(f"--retry-for must be >= 0 seconds (0: no limit), got {retry_for:g}")
    if node.keys_path is not None:
        say(key_line(node))
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
    # A vertical run's party keeps its state between messages in this process (fedx.vertical.service).
    from ..vertical.service import PartyService

    service = PartyService(node.name, node.data_path, out, say=say).start()
    try:
        return NodeSupervisor(node, Path(node_path), out, once=once, retry_for=retry_for,
                              keep_running=keep_running, say=say).run()
    finally:
        service.stop()
        signal.signal(signal.SIGTERM, previous)


def key_line(node: NodeConfig) -> str:
    """The line ``fedx node`` prints about the HE secret key it loaded: its preset and its fingerprint.

    The institutions and the server operator compare the fingerprint with the one ``fedx keygen`` printed
    (docs/deploy.md); the server refuses a node whose keys have another.

    Raises
    ------
    KeyFileError, KeyMismatchError
        The key file is unreadable, damaged, public, or does not match the folder's public.fxk.
    """
    from .. import he

    assert node.keys_path is not None
    secret = he.secret_context(node.keys_path)
    return f"{node.name}: HE keys {node.keys_path} ({secret.preset.name}), fingerprint {secret.fingerprint_text}"


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
            "log_path": out / "supernode.log", "workdir": out, "extra_env": {"OMP_NUM_THREADS": "1"},
            "poll": sl.poll_seconds}


def retry_delays(first: float = 2.0, factor: float = 2.0, cap: float = 60.0) -> Iterator[float]:
    """Seconds between attempts: ``first``, then ``factor`` times longer each time, at most ``cap``."""
    delay = first
    while True:
        yield delay
        delay = min(delay * factor, cap)


class RunEndWatcher:
    """The run ends recorded in a node's ``out_dir`` since this watcher was made (an older file is stale)."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / RUN_END_FILE
        self.stale = self._stamp()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    def ended(self) -> int | None:
        """The id of a run that ended since the last call, or None."""
        stamp = self._stamp()
        if stamp is None or stamp == self.stale:
            return None
        self.stale = stamp
        try:
            return int(json.loads(self.path.read_text())["run_id"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


class NodeSupervisor:
    """One institution's SuperNode, started, watched and explained (what :func:`run_node` runs).

    ``clock``, ``sleep`` and ``poll`` are injectable for tests of the decisions (no real process).
    """

    POLL = 0.5
    REPORT_EVERY = 60.0
    PROBE_EVERY = 10.0
    #: Seconds a node whose run ended waits for its server to close (the SuperLink must still hand the
    #: node's last reply to the ServerApp, and drops the replies of a node that has left).
    END_GRACE = 600.0

    def __init__(self, node: NodeConfig, node_path: Path, out: Path, *, once: bool = False,
                 retry_for: float = DEFAULT_RETRY_FOR, keep_running: bool = False,
                 say: Callable[[str], None] = _say, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.node, self.node_path, self.out = node, node_path, out
        self.once, self.retry_for, self.keep_running = once, retry_for, keep_running
        self.say, self.clock, self.sleep = say, clock, sleep
        self.ends = RunEndWatcher(out)

    # -- messages -----------------------------------------------------------------------------

    def _files(self) -> dict[str, Any]:
        sl = self.node.superlink
        key = self.node.resolve(sl.auth_key) if not sl.insecure else None
        return {"name": self.node.name, "address": sl.address, "file": self.node_path,
                "ca": None if sl.insecure else self.node.resolve(sl.root_certificates),
                "key": key, "pub": None if key is None else Path(key).with_suffix(".pub")}

    def explain(self, trouble: deploy.NodeTrouble) -> str:
        """The one-line error for a SuperNode that could not join (names the file to check)."""
        f = self._files()
        detail = f" ({trouble.detail})" if trouble.detail else ""
        host = str(f["address"]).rpartition(":")[0].strip("[]")
        return {
            "key-not-registered":
                f"{f['name']}: the server refused this node's key"
                f"{'' if self.once else f' for {self.retry_for:g} s (--retry-for)'}: the "
                f"server operator must register its public key {f['pub']} (a NAME.pub in the server's "
                f"deployment.nodes folder, registered when `fedx server` starts)",
            "certificate-untrusted":
                f"{f['name']}: the server's TLS certificate does not verify against {f['ca']}{detail}: check "
                f"superlink.root_certificates in {f['file']} (passed as --root-certificates {f['ca']}); it "
                f"must be the federation's ca.crt from the server operator",
            "certificate-wrong-host":
                f"{f['name']}: the server's TLS certificate is not valid for {host}{detail}: check "
                f"superlink.address in {f['file']}, or ask the server operator for a certificate made with "
                f"`fedx certs --host {host}`",
            "server-not-tls":
                f"{f['name']}: the server at {f['address']} does not speak TLS{detail}; was it started with "
                f"--insecure? This node uses TLS (superlink.root_certificates {f['ca']} in {f['file']}): run "
                f"both sides with TLS, or both with --insecure for a localhost demo",
            "server-tls":
                f"{f['name']}: the server at {f['address']} speaks TLS, but this node runs without it "
                f"(--insecure, or superlink.insecure in {f['file']}): drop --insecure and set "
                f"superlink.root_certificates in {f['file']} to the federation's ca.crt",
            "tls-error":
                f"{f['name']}: the TLS handshake with the server at {f['address']} failed{detail}: check "
                f"superlink.root_certificates {f['ca']} in {f['file']}",
            "key-invalid":
                f"{f['name']}: superlink.auth_key {f['key']} in {f['file']} is not an OpenSSH EC private key "
                f"(make one with `fedx node-keys`)",
            "server-unreachable":
                f"{f['name']}: the server at {f['address']} did not answer for {self.retry_for:g} s "
                f"(--retry-for): check superlink.address in {f['file']} and that `fedx server` is running",
        }.get(trouble.kind, f"{f['name']}: the SuperNode could not join the server at {f['address']}{detail}")

    def _left(self, deadline: float | None) -> str:
        return "no time limit" if deadline is None else f"giving up in {max(0.0, deadline - self.clock()):.0f} s"

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> int:
        """Start the SuperNode and watch it; return 0 when its run has ended (130 when interrupted)."""
        delays = retry_delays()
        deadline = None if self.retry_for == 0 else self.clock() + self.retry_for
        options = supernode_options(self.node, self.node_path, self.out)
        name = self.node.name
        while True:
            proc = deploy.start_supernode(**options, wait_ready=False, isolation="process",
                                          max_wait_time=self.retry_for or None)
            self.say(f"{name}: SuperNode started (pid {proc.pid}), connecting to {self.node.superlink.address}; "
                     f"log {proc.log_path}")
            from .node_tasks import NodeTasks

            tasks = NodeTasks(getattr(proc, "address", "")).start()   # its ClientApp runs in this process
            try:
                outcome, value = self._watch(proc, deadline)
            except KeyboardInterrupt:
                deploy.stop(proc)
                tasks.stop()
                self.say(f"{name}: stopped")
                return 130
            except BaseException:
                deploy.stop(proc)
                tasks.stop()
                raise
            deploy.stop(proc)
            tasks.stop()
            if proc.node_id is not None:   # it had joined: a fresh window to rejoin, from now
                delays = retry_delays()
                deadline = None if self.retry_for == 0 else self.clock() + self.retry_for
            if outcome == "ended":
                self.say(f"{name}: run {value} has ended; this node stops (start it with --keep-running to "
                         f"take part in further runs)")
                return 0
            code = int(value)
            trouble = deploy.diagnose_supernode(proc.log_text())
            if trouble is not None and trouble.kind == "server-unreachable" and self.keep_running \
                    and proc.node_id is not None:
                deadline = None if self.retry_for == 0 else self.clock() + self.retry_for
                self.say(f"{name}: the server went away; waiting for it to come back ({self._left(deadline)}, "
                         f"--retry-for)")
                continue
            if trouble is not None and not (trouble.retryable and not self.once):
                raise DeploymentError(self.explain(trouble))
            if trouble is None and self.once:
                return code
            wait = next(delays)
            if deadline is not None and self.clock() + wait > deadline:
                raise DeploymentError(self.explain(trouble or deploy.NodeTrouble("server-unreachable")))
            if trouble is not None:   # a key not registered yet
                self.say(f"{name}: the server does not know this node's key yet: waiting for the server operator "
                         f"to register {self._files()['pub']}; retrying in {wait:.0f} s ({self._left(deadline)}, "
                         f"--retry-for)")
            else:
                self.say(f"{name}: SuperNode exited with status {code}; starting it again in {wait:.0f} s")
            self.sleep(wait)

    def _watch(self, proc: deploy.FlowerProcess, deadline: float | None) -> tuple[str, int]:
        """Follow one SuperNode: ``("ended", run id)`` once its run ended, or ``("exited", status)``."""
        name, address = self.node.name, self.node.superlink.address
        joined = reported_wait = last_probe = None
        runs: set[int] = set()
        ended: int | None = None
        ended_at = 0.0
        failed_before = 0
        while True:
            text = proc.log_text()
            code = proc.poll()
            if joined is None:
                joined = deploy.node_id_in_log(text)
                if joined is not None:
                    proc.node_id = joined
                    self.say(f"{name}: connected to the server as node {joined}; waiting for the run to reach "
                             f"this node")
            for run_id in map(int, _RUN_LINE.findall(text)):
                if run_id not in runs:
                    runs.add(run_id)
                    self.say(f"{name}: taking part in run {run_id}")
            if code is not None:
                return "exited", code
            if ended is None:
                ended = self.ends.ended()
                if ended is not None:
                    ended_at, failed_before = self.clock(), text.count("Connection attempt failed")
                    if self.keep_running:
                        self.say(f"{name}: run {ended} has ended; waiting for further runs (--keep-running)")
                        ended = None
            elif text.count("Connection attempt failed") > failed_before or self.clock() - ended_at > self.END_GRACE:
                return "ended", ended   # the server has closed (fedx server stops its SuperLink after the run)
            if joined is None and "Connection attempt failed" in text:
                now = self.clock()
                if last_probe is None or now - last_probe >= self.PROBE_EVERY:
                    last_probe = now
                    tls = deploy.probe_tls(address)
                    if tls and self.node.superlink.insecure:
                        raise DeploymentError(self.explain(deploy.NodeTrouble("server-tls")))
                    if reported_wait is None or now - reported_wait >= self.REPORT_EVERY:
                        reported_wait = now
                        why = "nothing answers there yet" if tls is None else "it does not accept the connection"
                        self.say(f"{name}: waiting for the server at {address}: {why} ({self._left(deadline)}, "
                                 f"--retry-for)")
                if deadline is not None and now > deadline:
                    raise DeploymentError(self.explain(deploy.NodeTrouble("server-unreachable")))
            self.sleep(self.POLL)
