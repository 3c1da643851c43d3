"""SuperNode processes: start one, wait for its node id, and tell why one could not join."""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import DeploymentError
from .environment import (
    _CONFIG_KEY,
    DEFAULT_HOST,
    FlowerProcess,
    _bin,
    _check_port_free,
    _dial_host,
    _join_address,
    _spawn,
    child_env,
    free_port,
)
from .supernode_main import POLL_ENV

_NODE_ID = re.compile(r"SuperNode ID: (\d+)")


def _config_value(key: str, value: Any, where: str) -> str:
    """One value of a ``--node-config`` string, quoted so that Flower's parser reads it back exactly."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if '"' not in value:
            return json.dumps(value)  # a TOML basic string: escapes \n, \\ and control characters
        if "'" not in value and "\n" not in value and "\r" not in value:
            return f"'{value}'"  # a TOML literal string, taken as is
        raise DeploymentError(f"{where}: the value of {key} holds both quote kinds (or a double quote and a "
                              "newline), which Flower's key=value parser cannot carry; pass a file path instead")
    raise DeploymentError(f"{where}: {key} = {value!r} is a {type(value).__name__}; expected str, int, float or bool")


def format_config_args(config: Mapping[str, Any], where: str = "node_config") -> str:
    """``{"fedx-node": "/p/node.yaml", "k": 3}`` -> ``fedx-node="/p/node.yaml" k=3`` (Flower's syntax)."""
    parts = []
    for key, value in config.items():
        if not isinstance(key, str) or not _CONFIG_KEY.match(key):
            raise DeploymentError(f"{where}: invalid key {key!r}; expected letters, digits, '-', '_' or '.'")
        parts.append(f"{key}={_config_value(key, value, where)}")
    return " ".join(parts)


def start_supernode(
    superlink_address: str,
    *,
    node_config: Mapping[str, Any],
    private_key: str | os.PathLike[str] | None = None,
    root_certificates: str | os.PathLike[str] | None = None,
    insecure: bool = False,
    host: str = DEFAULT_HOST,
    port: int | None = None,
    flwr_home: str | os.PathLike[str],
    log_path: str | os.PathLike[str],
    workdir: str | os.PathLike[str] | None = None,
    pythonpath: Sequence[str | os.PathLike[str]] = (),
    extra_env: Mapping[str, str] | None = None,
    max_wait_time: float | None = None,
    wait_ready: bool = True,
    startup_timeout: float = 30.0,
    isolation: str = "subprocess",
    poll: float | None = None,
) -> FlowerProcess:
    """Start ``flower-supernode``; by default wait until the SuperLink has accepted it.

    The SuperNode serves its Runtime API on ``host:port`` (its ``flwr-clientapp`` processes
    dial it), so every SuperNode on one machine needs its own port. It never installs
    dependencies: the ClientApp is imported from this environment (plus ``pythonpath``).

    Parameters
    ----------
    superlink_address : str
        The SuperLink's ``host:port``.
    node_config : mapping
        This node's settings, e.g. ``{"fedx-node": "/etc/fedx/node.yaml"}``; the ClientApp reads
        them from ``context.node_config``.
    private_key : path, optional
        The node's OpenSSH EC private key (:func:`make_node_keypair`), registered beforehand with
        :func:`register_node`. Required with TLS when the SuperLink authenticates SuperNodes.
    root_certificates : path, optional
        The CA certificate. Required unless ``insecure``.
    insecure : bool
        Plain HTTP, no authentication (the node gets a fresh id each start).
    host, port : str, int
        The Runtime API's address; a free port when omitted.
    flwr_home : path
        ``FLWR_HOME`` of the node and its ClientApp processes.
    log_path : path
        Log file (appended to).
    workdir : path, optional
        Working folder; the log's folder by default.
    pythonpath : sequence of path
        Extra import folders for the ClientApp.
    extra_env : mapping, optional
        More environment variables for the node and its ClientApps.
    max_wait_time : float, optional
        Give up reconnecting to an unreachable SuperLink after this many seconds (default: never).
    wait_ready : bool
        Wait for the node id (:func:`wait_supernode_ready`); a refused node raises.
    startup_timeout : float
        Seconds to wait for the node id.
    isolation : str
        ``subprocess``: the SuperNode starts a ``flwr-clientapp`` process per message; ``process``: another
        process runs its tasks from its Runtime API (``fedx node`` does, :mod:`fedx.flower.node_tasks`).
    poll : float, optional
        Seconds the SuperNode waits before asking the SuperLink again when no message was waiting, and a tenth
        of that between looks for its ClientApp's reply: it runs through :mod:`.supernode_main`. By default it
        is Flower's own ``flower-supernode``, which waits 3 s and 0.5 s.

    Returns
    -------
    FlowerProcess
        With ``node_id`` set when ``wait_ready``.
    """
    if isolation not in ("subprocess", "process"):
        raise DeploymentError(f"start_supernode: isolation must be subprocess or process, got {isolation!r}")
    if insecure and (root_certificates is not None or private_key is not None):
        raise DeploymentError("start_supernode: insecure=True takes neither root_certificates nor private_key")
    if not insecure:
        if root_certificates is None:
            raise DeploymentError("start_supernode: root_certificates (the federation's CA certificate) is required; "
                                  "insecure=True is for localhost demos only")
        if not Path(root_certificates).is_file():
            raise DeploymentError(f"start_supernode: CA certificate not found: {root_certificates}")
        if private_key is not None and not Path(private_key).is_file():
            raise DeploymentError(f"start_supernode: SuperNode private key not found: {private_key}")
    if not isinstance(superlink_address, str) or ":" not in superlink_address:
        raise DeploymentError(f"start_supernode: superlink_address must be host:port, got {superlink_address!r}")
    if poll is not None and not (isinstance(poll, (int, float)) and 0.01 <= poll <= 3):
        raise DeploymentError(f"start_supernode: poll must be a number of seconds in [0.01, 3], got {poll!r}")
    port = free_port(host) if port is None else port
    _check_port_free(host, port, "start_supernode")
    logfile = Path(log_path).resolve()
    work = Path(workdir).resolve() if workdir is not None else logfile.parent
    work.mkdir(parents=True, exist_ok=True)
    home = Path(flwr_home).resolve()
    home.mkdir(parents=True, exist_ok=True)

    program = [_bin("flower-supernode")] if poll is None else [sys.executable, "-m", f"{__package__}.supernode_main"]
    argv = [*program, "--superlink", superlink_address, "--host", host, "--port", str(port), "--isolation", isolation]
    if insecure:
        argv.append("--insecure")
    else:
        argv += ["--root-certificates", str(Path(root_certificates).resolve())]  # type: ignore[arg-type]
        if private_key is not None:
            argv += ["--auth-supernode-private-key", str(Path(private_key).resolve())]
    if node_config:
        argv += ["--node-config", format_config_args(node_config)]
    if max_wait_time is not None:
        argv += ["--max-wait-time", str(float(max_wait_time))]

    env = child_env(home, pythonpath=pythonpath, extra=extra_env)
    if poll is not None:
        env[POLL_ENV] = repr(float(poll))
    popen, offset = _spawn("supernode", argv, env=env, log_path=logfile, cwd=work)
    proc = FlowerProcess("supernode", popen, logfile, _join_address(_dial_host(host), port), home,
                         insecure=insecure, log_offset=offset,
                         extra={"port": port, "superlink": superlink_address})
    if wait_ready:
        wait_supernode_ready(proc, timeout=startup_timeout)
    return proc


def node_id_in_log(log_text: str) -> int | None:
    """The node id a SuperNode logged once the SuperLink accepted it (``SuperNode ID: ...``), or None."""
    found = _NODE_ID.search(log_text)
    return int(found.group(1)) if found else None

_HINTS = {
    "key-not-registered": "The SuperLink refused this node's key: register its public key first (register_node).",
    "key-invalid": "The private key is not an OpenSSH EC key (make one with make_node_keypair).",
    "certificate-untrusted": "The SuperLink's certificate is not signed by the CA given as root_certificates.",
    "certificate-wrong-host": "The SuperLink's certificate does not name the address dialled.",
    "server-not-tls": "The SuperLink speaks plain HTTP (started with insecure=True); this node uses TLS.",
    "tls-error": "The TLS handshake with the SuperLink failed.",
    "server-unreachable": "The SuperLink did not answer within max_wait_time.",
}


def wait_supernode_ready(proc: FlowerProcess, timeout: float = 30.0) -> int:
    """Wait until the SuperNode logs the node id the SuperLink gave it; return that id.

    Raises
    ------
    DeploymentError
        When the node exits first (a refused key logs Flower's ``Exit Code: 305``; the
        process itself exits with status 1) or ``timeout`` passes; the message holds its log.
    """
    deadline = time.monotonic() + timeout
    while True:
        node_id = node_id_in_log(proc.log_text())
        if node_id is not None:
            proc.node_id = node_id
            return node_id
        code = proc.popen.poll()
        if code is not None:
            # the log may have gained the id line just before exit
            node_id = node_id_in_log(proc.log_text())
            if node_id is not None:
                proc.node_id = node_id
                return node_id
            trouble = diagnose_supernode(proc.log_text())
            hint = f" {_HINTS[trouble.kind]}" if trouble is not None else ""
            raise DeploymentError(
                f"the SuperNode exited with status {code} (Flower exit code {proc.flower_exit_code}) before "
                f"joining {proc.extra.get('superlink')}.{hint} Log {proc.log_path}:\n{proc.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise DeploymentError(f"the SuperNode did not join {proc.extra.get('superlink')} within {timeout:g} s "
                                  f"(log {proc.log_path}):\n{proc.log_tail()}")
        time.sleep(0.2)


@dataclass(frozen=True)
class NodeTrouble:
    """Why a SuperNode could not join its SuperLink, read from its log (see :func:`diagnose_supernode`).

    Attributes
    ----------
    kind : str
        ``"key-not-registered"`` (the SuperLink does not know the node's public key: register it, then
        the node may retry), ``"certificate-untrusted"`` (the server certificate is not signed by the
        CA given with ``--root-certificates``), ``"certificate-wrong-host"`` (it is, but not for the
        address dialled), ``"server-not-tls"`` (the SuperLink speaks plain HTTP: ``--insecure``),
        ``"tls-error"`` (another TLS failure), ``"key-invalid"`` (the private key cannot be read) or
        ``"server-unreachable"`` (Flower gave up reconnecting after ``--max-wait-time``).
    detail : str
        Flower's own words for it (one line), or ``""``.
    """

    kind: str
    detail: str = ""

    @property
    def retryable(self) -> bool:
        """Whether starting the node again may succeed without a change at this node."""
        return self.kind == "key-not-registered"

_SSL_LINE = re.compile(r"\[SSL: [A-Z_]+\][^\n]*")


def diagnose_supernode(log_text: str) -> NodeTrouble | None:
    """Classify why a SuperNode stopped, from its log (Flower 1.42 exits with ``Exit Code: 305`` for all).

    Returns None when the log names none of the known causes.
    """
    ssl_line = _SSL_LINE.search(log_text)
    detail = ssl_line.group(0).strip() if ssl_line else ""
    if "CERTIFICATE_VERIFY_FAILED" in log_text:
        wrong_host = "mismatch" in detail or "not valid for" in detail
        return NodeTrouble("certificate-wrong-host" if wrong_host else "certificate-untrusted", detail)
    if "WRONG_VERSION_NUMBER" in log_text or "record layer failure" in log_text:
        return NodeTrouble("server-not-tls", detail)
    if "SSL/TLS handshake error" in log_text:
        return NodeTrouble("tls-error", detail)
    if "Failed to activate SuperNode" in log_text:
        return NodeTrouble("key-not-registered", "Failed to activate SuperNode")
    if "Unable to parse the private key" in log_text or "Exit Code: 302" in log_text:
        return NodeTrouble("key-invalid")
    if "Giving up reconnection" in log_text:
        found = re.search(r"Giving up reconnection after [^\n]*", log_text)
        return NodeTrouble("server-unreachable", found.group(0).strip() if found else "")
    return None


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def probe_tls(address: str, timeout: float = 3.0) -> bool | None:
    """Whether the server at ``host:port`` speaks TLS: None when nothing answers there.

    The handshake is not verified: this only tells a TLS server from a plain one, to explain a
    SuperNode that Flower keeps retrying without saying why.
    """
    import ssl

    host, port = _split_address(address)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with context.wrap_socket(sock, server_hostname=host):
            return True
    except (ssl.SSLError, OSError):
        return False
    finally:
        sock.close()

