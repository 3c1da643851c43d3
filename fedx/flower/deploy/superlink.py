"""The SuperLink and its control through the ``flwr`` CLI: start it, write the CLI's connection and
the app folder, register nodes, launch runs and follow them.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ...errors import DeploymentError
from .environment import (
    _ANSI,
    _CONFIG_KEY,
    _NAME,
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
from .teardown import descendant_pids, stop
from .tls import TLSFiles

_CLI_TIMEOUT = 120.0


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _health(host: str, port: int, ca_cert: Path | None) -> tuple[bool, str | None]:
    """GET ``/health`` of a SuperLink: ``(healthy, fatal_reason)``; a certificate failure is fatal."""
    import ssl

    import httpx

    scheme = "http" if ca_cert is None else "https"
    verify: ssl.SSLContext | bool = False
    if ca_cert is not None:
        verify = ssl.create_default_context(cafile=str(ca_cert))
    try:
        response = httpx.get(f"{scheme}://{_join_address(host, port)}/health", verify=verify, timeout=2.0)
    except httpx.ConnectError as exc:
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, ssl.SSLCertVerificationError):
                return False, f"its certificate does not verify against {ca_cert} for {host}: {cause.verify_message}"
            cause = cause.__cause__ or cause.__context__
        return False, None
    except httpx.HTTPError:
        return False, None
    return response.status_code == 200, None


def start_superlink(
    workdir: str | os.PathLike[str],
    *,
    tls: TLSFiles | None = None,
    insecure: bool = False,
    host: str = DEFAULT_HOST,
    port: int | None = None,
    flwr_home: str | os.PathLike[str] | None = None,
    log_path: str | os.PathLike[str] | None = None,
    database: str | os.PathLike[str] | None = None,
    enable_supernode_auth: bool | None = None,
    pythonpath: Sequence[str | os.PathLike[str]] = (),
    extra_env: Mapping[str, str] | None = None,
    startup_timeout: float = 30.0,
) -> FlowerProcess:
    """Start ``flower-superlink`` and wait until it answers ``/health`` over verified TLS.

    The SuperLink opens one port, for the Fleet API (SuperNodes), the Control API (the ``flwr``
    CLI) and the Runtime API (its ServerApp processes). Runtime dependency installation is
    disabled: the ServerApp is imported from this environment (plus ``pythonpath``).

    Parameters
    ----------
    workdir : path
        Working folder; holds the default ``flwr-home/`` and ``superlink.log``.
    tls : TLSFiles, optional
        CA, certificate and key. Required unless ``insecure``.
    insecure : bool
        Plain HTTP with no SuperNode authentication; for localhost demos only (print
        :data:`INSECURE_WARNING`).
    host : str
        Address to bind; 127.0.0.1 unless the SuperNodes are on other machines.
    port : int, optional
        Port to bind; a free one when omitted.
    flwr_home : path, optional
        ``FLWR_HOME`` of the SuperLink and of its ServerApp processes (FABs unpack there).
    log_path : path, optional
        Log file (appended to).
    database : path, optional
        SQLite file for the SuperLink's state. Without it the state is in memory and a restart
        forgets every registered SuperNode and every run.
    enable_supernode_auth : bool, optional
        Accept registered SuperNodes only. Defaults to on with TLS; refused with ``insecure``.
    pythonpath : sequence of path
        Extra import folders for the ServerApp.
    extra_env : mapping, optional
        More environment variables for the SuperLink and the processes it starts.
    startup_timeout : float
        Seconds to wait for the port.

    Returns
    -------
    FlowerProcess
        With ``address`` the ``host:port`` to give SuperNodes and :func:`write_connection`.
    """
    if insecure and tls is not None:
        raise DeploymentError("start_superlink: pass tls or insecure=True, not both")
    if not insecure and tls is None:
        raise DeploymentError("start_superlink: TLS certificates are required (tls=make_ca_and_server_cert(...)); "
                              "insecure=True is for localhost demos only")
    if enable_supernode_auth is None:
        enable_supernode_auth = not insecure
    if enable_supernode_auth and insecure:
        raise DeploymentError("start_superlink: SuperNode authentication needs TLS; it cannot run with insecure=True")
    if tls is not None:
        tls.check()
    port = free_port(host) if port is None else port
    _check_port_free(host, port, "start_superlink")
    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    home = Path(flwr_home).resolve() if flwr_home is not None else work / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    logfile = Path(log_path).resolve() if log_path is not None else work / "superlink.log"

    argv = [_bin("flower-superlink"), "--host", host, "--port", str(port),
            "--isolation", "subprocess", "--disable-runtime-dependency-installation"]
    if insecure:
        argv.append("--insecure")
    else:
        assert tls is not None
        argv += ["--ssl-ca-certfile", str(Path(tls.ca_cert).resolve()),
                 "--ssl-certfile", str(Path(tls.server_cert).resolve()),
                 "--ssl-keyfile", str(Path(tls.server_key).resolve())]
    if enable_supernode_auth:
        argv.append("--enable-supernode-auth")
    if database is not None:
        db = Path(database).resolve()
        db.parent.mkdir(parents=True, exist_ok=True)
        argv += ["--database", str(db)]

    env = child_env(home, pythonpath=pythonpath, extra=extra_env)
    popen, offset = _spawn("superlink", argv, env=env, log_path=logfile, cwd=work)
    proc = FlowerProcess("superlink", popen, logfile, _join_address(_dial_host(host), port), home,
                         insecure=insecure, log_offset=offset, extra={"port": port, "host": host})
    ca_cert = None if tls is None else Path(tls.ca_cert).resolve()
    deadline = time.monotonic() + startup_timeout
    while True:
        code = popen.poll()
        if code is not None:
            stop(proc)  # its SuperExec runs in a session of its own
            raise DeploymentError(f"the SuperLink exited with status {code} while starting "
                                  f"(log {logfile}):\n{proc.log_tail()}")
        if _port_open(_dial_host(host), port):
            healthy, fatal = _health(_dial_host(host), port, ca_cert)
            if fatal:
                stop(proc)
                raise DeploymentError(f"the SuperLink started, but {fatal}; SuperNodes could not connect. "
                                      "Make the certificate with make_ca_and_server_cert(hosts=[...]) naming "
                                      "the address that SuperNodes dial")
            if healthy:
                return proc
        if time.monotonic() > deadline:
            stop(proc)
            raise DeploymentError(f"the SuperLink did not open {host}:{port} within {startup_timeout:g} s "
                                  f"(log {logfile}):\n{proc.log_tail()}")
        time.sleep(0.1)


def write_connection(
    flwr_home: str | os.PathLike[str],
    name: str,
    address: str,
    *,
    root_certificates: str | os.PathLike[str] | None = None,
    insecure: bool = False,
    make_default: bool = True,
) -> Path:
    """Add or replace the ``[superlink.NAME]`` connection in ``FLWR_HOME/config.toml``.

    The ``flwr`` CLI (``run``, ``ls``, ``log``, ``stop``, ``supernode register``) reads its target
    from there. Writing the file first also keeps the CLI from creating its default file, whose
    default connection ``local`` (address ``:local:``) starts a background SuperLink.

    Parameters
    ----------
    flwr_home : path
        The CLI's ``FLWR_HOME``.
    name : str
        Connection name, passed to the CLI as its ``SUPERLINK`` argument.
    address : str
        The SuperLink's ``host:port``.
    root_certificates : path, optional
        The CA certificate that signed the SuperLink's certificate (stored as an absolute path).
    insecure : bool
        Plain HTTP (for a SuperLink started with ``--insecure``). Exclusive with ``root_certificates``.
    make_default : bool
        Also make it ``[superlink] default``.

    Returns
    -------
    Path
        The config file.
    """
    import tomli
    import tomli_w

    if not isinstance(name, str) or not _NAME.match(name):
        raise DeploymentError(f"write_connection: invalid connection name {name!r}; "
                              "expected letters, digits, '-' or '_'")
    if not isinstance(address, str) or not re.match(r"^(\[[0-9A-Fa-f:.]+\]|[^:\s\[\]]+):\d{1,5}$", address):
        raise DeploymentError(f"write_connection: address must be host:port, got {address!r}")
    if insecure and root_certificates is not None:
        raise DeploymentError("write_connection: give root_certificates or insecure=True, not both")
    if not insecure and root_certificates is None:
        raise DeploymentError("write_connection: a TLS connection needs root_certificates (the CA certificate); "
                              "pass insecure=True only for a SuperLink started with --insecure")
    entry: dict[str, Any] = {"address": address}
    if insecure:
        entry["insecure"] = True
    else:
        ca = Path(root_certificates).expanduser().resolve()  # type: ignore[arg-type]
        if not ca.is_file():
            raise DeploymentError(f"write_connection: CA certificate not found: {ca}")
        entry["root-certificates"] = str(ca)

    home = Path(flwr_home)
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    doc: dict[str, Any] = {}
    if path.exists():
        try:
            doc = tomli.loads(path.read_text(encoding="utf-8"))
        except (tomli.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise DeploymentError(f"{path}: not valid TOML ({exc}); fix or remove it") from None
    links = doc.setdefault("superlink", {})
    if not isinstance(links, dict):
        raise DeploymentError(f"{path}: 'superlink' must be a table")
    links[name] = entry
    if make_default:
        links["default"] = name
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return path


def _check_config_value(key: str, value: Any, where: str) -> None:
    if not isinstance(key, str) or not _CONFIG_KEY.match(key):
        raise DeploymentError(f"{where}: invalid key {key!r}; expected letters, digits, '-', '_' or '.'")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_config_value(k, v, f"{where}.{key}")
    elif not isinstance(value, (str, bool, int, float)):
        raise DeploymentError(f"{where}: {key} = {value!r} is a {type(value).__name__}; "
                              "Flower configs hold str, int, float or bool only")


def write_app_dir(
    folder: str | os.PathLike[str],
    server_component: str = "fedx.flower.apps:server_app",
    client_component: str = "fedx.flower.apps:client_app",
    config: Mapping[str, Any] | None = None,
    *,
    name: str = "fedx-app",
    publisher: str = "fedx",
    version: str = "1.0.0",
) -> Path:
    """Write the smallest Flower app project that ``flwr run`` accepts: one ``pyproject.toml``.

    The FAB built from it holds that file alone. With runtime dependency installation disabled,
    every ``flwr-serverapp``/``flwr-clientapp`` imports the components from its own Python
    environment, so ``module`` must be importable there, and also by the ``flwr run`` process
    (which checks it). Flower also checks that ``attr`` is a plain top-level assignment
    (``server_app = ServerApp()``) of that module, or listed in its ``__all__``.

    Parameters
    ----------
    folder : path
        Created if missing. It must hold nothing else: every ``*.py``, ``*.yaml``, ``*.json``,
        ``*.md`` or ``*.toml`` file in it would be packed into the FAB and sent to every node.
    server_component, client_component : str
        ``"module:attr"`` of the ServerApp and ClientApp.
    config : mapping, optional
        The run config's defaults (``[tool.flwr.app.config]``). ``flwr run --run-config`` may
        only override keys declared here.
    name, publisher, version : str
        The app's identity; the FAB is installed as ``FLWR_HOME/apps/PUBLISHER.NAME.VERSION.HASH``.

    Returns
    -------
    Path
        The folder, to pass to :func:`launch_run`.
    """
    import tomli_w

    for label, ref in (("server_component", server_component), ("client_component", client_component)):
        module, _, attr = str(ref).partition(":")
        if not module or not attr or not all(part.isidentifier() for part in module.split(".") + attr.split(".")):
            raise DeploymentError(f"write_app_dir: {label} must be 'package.module:attribute', got {ref!r}")
    if not _NAME.match(name) or not _NAME.match(publisher):
        raise DeploymentError(f"write_app_dir: invalid app name {name!r} or publisher {publisher!r}")
    if not re.match(r"^\d+\.\d+\.\d+$", version):
        raise DeploymentError(f"write_app_dir: version must be MAJOR.MINOR.PATCH, got {version!r}")
    cfg = dict(config or {})
    for key, value in cfg.items():
        _check_config_value(key, value, "write_app_dir: config")

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    strays = sorted(p.name for p in out.iterdir() if p.name not in ("pyproject.toml", ".flwr", "__pycache__"))
    if strays:
        raise DeploymentError(f"write_app_dir: {out} must hold only the app's pyproject.toml, found "
                              f"{', '.join(strays)}; these would be packed into the FAB and sent to every node")
    doc: dict[str, Any] = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {
            "name": name,
            "version": version,
            "description": "fedx federation (code installed on every node; this FAB carries the config only)",
            "license": "Apache-2.0",
            "dependencies": [],
        },
        "tool": {"flwr": {"app": {
            "publisher": publisher,
            "components": {"serverapp": server_component, "clientapp": client_component},
            "config": cfg,
        }}},
    }
    (out / "pyproject.toml").write_text(tomli_w.dumps(doc), encoding="utf-8")
    return out


def _flwr(args: list[str], flwr_home: str | os.PathLike[str], *, pythonpath: Sequence[str | os.PathLike[str]] = (),
          timeout: float = _CLI_TIMEOUT, what: str) -> dict[str, Any]:
    """Run ``flwr ARGS --format json`` and return its JSON answer; raise on failure.

    With ``--format json`` the CLI exits 0 even when it failed, and says so in ``success``.
    """
    home = Path(flwr_home)
    if not (home / "config.toml").is_file():
        raise DeploymentError(f"{what}: {home / 'config.toml'} does not exist; call write_connection first "
                              "(without it the flwr CLI would fall back to a local background SuperLink)")
    argv = [_bin("flwr"), *args, "--format", "json"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              env=child_env(home, pythonpath=pythonpath))
    except subprocess.TimeoutExpired:
        raise DeploymentError(f"{what}: `flwr {' '.join(args)}` did not answer within {timeout:g} s") from None
    out = done.stdout.strip()
    start = out.find("{")
    try:
        answer = json.loads(out[start:]) if start >= 0 else None
    except json.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):
        detail = _ANSI.sub("", (done.stderr or done.stdout).strip())[-1500:]
        raise DeploymentError(f"{what}: `flwr {' '.join(args)}` failed (status {done.returncode}): {detail}")
    if not answer.get("success", False):
        message = _ANSI.sub("", str(answer.get("error-message", "no reason given")))
        message = " ".join(line.strip() for line in message.splitlines()
                           if line.strip() and not line.startswith("Using SuperLink:")) or "no reason given"
        raise DeploymentError(f"{what}: {message}")
    return answer


def register_node(
    public_key_path: str | os.PathLike[str],
    connection: str,
    flwr_home: str | os.PathLike[str],
    *,
    name: str | None = None,
) -> int:
    """Register a SuperNode's public key with the SuperLink (``flwr supernode register``).

    Parameters
    ----------
    public_key_path : path
        The ``.pub`` file from :func:`make_node_keypair` (OpenSSH, EC on a NIST curve).
    connection : str
        A connection written by :func:`write_connection`.
    flwr_home : path
        That connection's ``FLWR_HOME``.
    name : str, optional
        A label shown by ``flwr supernode ls``.

    Returns
    -------
    int
        The node id; the SuperNode holding the private key gets this id each time it connects.
    """
    pub = Path(public_key_path)
    if not pub.is_file():
        raise DeploymentError(f"register_node: public key not found: {pub}")
    if not pub.read_text(encoding="utf-8", errors="replace").startswith("ecdsa-sha2-nistp"):
        raise DeploymentError(f"register_node: {pub} is not an OpenSSH EC public key "
                              "('ecdsa-sha2-nistp384 ...'); make one with make_node_keypair")
    args = ["supernode", "register", str(pub.resolve()), connection]
    if name:
        args += ["--name", name]
    try:
        answer = _flwr(args, flwr_home, what="register_node")
    except DeploymentError as exc:
        if "already in use" in str(exc):
            raise DeploymentError(f"register_node: the key {pub} is already registered with this SuperLink") from None
        raise
    return int(answer["node-id"])


def list_nodes(connection: str, flwr_home: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The SuperNodes the SuperLink knows (``flwr supernode ls``): ``node-id`` (int) and ``status``.

    ``status`` is ``registered`` (key known, never connected), ``online``, ``offline`` or ``unregistered``.
    """
    answer = _flwr(["supernode", "ls", connection], flwr_home, what="list_nodes")
    return [{**row, "node-id": int(row["node-id"])} for row in answer.get("nodes") or []]


def _read_app_config_keys(app_dir: Path) -> set[str] | None:
    import tomli

    try:
        doc = tomli.loads((app_dir / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, tomli.TOMLDecodeError):
        return None
    cfg = doc.get("tool", {}).get("flwr", {}).get("app", {}).get("config", {})

    def flat(d: Mapping[str, Any], prefix: str = "") -> set[str]:
        keys: set[str] = set()
        for k, v in d.items():
            keys |= flat(v, f"{prefix}{k}.") if isinstance(v, Mapping) else {f"{prefix}{k}"}
        return keys

    return flat(cfg)


def launch_run(
    app_dir: str | os.PathLike[str],
    connection: str,
    run_config: Mapping[str, Any] | None,
    flwr_home: str | os.PathLike[str],
    *,
    pythonpath: Sequence[str | os.PathLike[str]] = (),
) -> int:
    """Submit a run (``flwr run APP_DIR CONNECTION``) and return its id without waiting.

    The run config travels as a TOML file (``--run-config FILE.toml``), so any string, also
    multi-line YAML text or a path with spaces and quotes, reaches ``context.run_config`` exactly.

    Parameters
    ----------
    app_dir : path
        A folder from :func:`write_app_dir`.
    connection : str
        A connection written by :func:`write_connection` (never the CLI's ``local`` default).
    run_config : mapping, optional
        Overrides; each key must be declared in the app's ``[tool.flwr.app.config]``.
    flwr_home : path
        The connection's ``FLWR_HOME``.
    pythonpath : sequence of path
        Extra import folders: ``flwr run`` checks that the components' module can be found.

    Returns
    -------
    int
        The run id.
    """
    import tomli_w

    app = Path(app_dir).resolve()
    if not (app / "pyproject.toml").is_file():
        raise DeploymentError(f"launch_run: {app} has no pyproject.toml (make the app folder with write_app_dir)")
    overrides = dict(run_config or {})
    for key, value in overrides.items():
        _check_config_value(key, value, "launch_run: run_config")
    declared = _read_app_config_keys(app)
    if declared is not None:
        unknown = sorted(set(overrides) - declared)
        if unknown:
            raise DeploymentError(f"launch_run: run_config keys {', '.join(unknown)} are not declared in "
                                  f"{app / 'pyproject.toml'} [tool.flwr.app.config] (declared: "
                                  f"{', '.join(sorted(declared)) or 'none'}); Flower refuses undeclared keys")
    args = ["run", str(app), connection]
    tmp: Path | None = None
    try:
        if overrides:
            fd, name = tempfile.mkstemp(prefix="fedx-run-config-", suffix=".toml", dir=str(Path(flwr_home)))
            tmp = Path(name)
            with os.fdopen(fd, "wb") as fh:
                fh.write(tomli_w.dumps(overrides).encode("utf-8"))
            args += ["--run-config", str(tmp)]
        answer = _flwr(args, flwr_home, pythonpath=pythonpath, what="launch_run")
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return int(answer["run-id"])


def run_status(run_id: int, connection: str, flwr_home: str | os.PathLike[str]) -> dict[str, Any]:
    """The SuperLink's record of a run (``flwr ls --run-id``).

    Its ``status`` is ``pending``, ``starting``, ``running``, ``finished:completed``,
    ``finished:failed`` or ``finished:stopped``; ``status-details`` says why a run failed.
    """
    answer = _flwr(["ls", connection, "--run-id", str(int(run_id))], flwr_home, what="run_status")
    runs = answer.get("runs") or []
    if not runs:
        raise DeploymentError(f"run_status: the SuperLink of connection '{connection}' knows no run {run_id}")
    return dict(runs[0])


def wait_run(
    run_id: int,
    connection: str,
    flwr_home: str | os.PathLike[str],
    *,
    timeout: float = 3600.0,
    poll: float = 2.0,
    superlink: FlowerProcess | None = None,
    on_poll: Callable[[dict[str, Any]], None] | None = None,
    timeout_hint: str = "",
    app_poll: float = 15.0,
) -> dict[str, Any]:
    """Wait until a run finishes; return its final record (see :func:`run_status`).

    It returns on ``finished:failed`` too: check ``record["status"]``.

    Each status check starts the ``flwr`` CLI. With a local ``superlink``, while its ServerApp process runs
    (``flwr-serverapp``, below the SuperLink) the run cannot have finished, so the status is checked only
    every ``app_poll`` seconds; it is checked at the next ``poll`` once that process has gone.

    Parameters
    ----------
    run_id : int
        From :func:`launch_run`.
    connection, flwr_home : str, path
        As for :func:`launch_run`.
    timeout : float
        Seconds before :class:`DeploymentError`; the run goes on (stop it with :func:`stop_run`).
    poll : float
        Seconds between checks (each starts the ``flwr`` CLI, about 1 s of CPU).
    superlink : FlowerProcess, optional
        The local SuperLink: stop waiting with an error if it dies.
    on_poll : callable, optional
        Called at each poll with the latest record, also the final one (to report progress).
    timeout_hint : str
        Appended to the timeout error, e.g. the setting that sets ``timeout``.
    app_poll : float
        Seconds between status checks while the local SuperLink's ServerApp process runs.
    """
    deadline = time.monotonic() + timeout
    record: dict[str, Any] | None = None
    asked = 0.0
    while True:
        if superlink is not None and superlink.poll() is not None:
            raise DeploymentError(f"the SuperLink exited with status {superlink.poll()} during run {run_id}:\n"
                                  f"{superlink.log_tail()}")
        if record is None or time.monotonic() - asked >= app_poll or superlink is None \
                or not serverapp_running(superlink):
            record = run_status(run_id, connection, flwr_home)
            asked = time.monotonic()
        if on_poll is not None:
            on_poll(record)
        if str(record.get("status", "")).startswith("finished"):
            return record
        if time.monotonic() > deadline:
            raise DeploymentError(f"run {run_id} did not finish within {timeout:g} s{timeout_hint} "
                                  f"(status {record.get('status')})")
        time.sleep(poll)


def serverapp_running(superlink: FlowerProcess) -> bool:
    """Whether a ServerApp process (``flwr-serverapp``) runs below a local SuperLink (Linux /proc; else False)."""
    for pid in descendant_pids(superlink.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and any(Path(a.decode(errors="replace")).name == "flwr-serverapp" for a in argv[:2]):
            return True
    return False


def run_logs(run_id: int, connection: str, flwr_home: str | os.PathLike[str], *, timeout: float = 60.0) -> str:
    """The ServerApp's log of a run so far (``flwr log RUN CONNECTION --show``), without colour codes."""
    home = Path(flwr_home)
    argv = [_bin("flwr"), "log", str(int(run_id)), connection, "--show"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              env=child_env(home))
    except subprocess.TimeoutExpired:
        raise DeploymentError(f"run_logs: `flwr log {run_id}` did not answer within {timeout:g} s") from None
    if done.returncode != 0:
        detail = _ANSI.sub("", done.stderr or done.stdout)[-1500:]
        raise DeploymentError(f"run_logs: `flwr log {run_id}` failed: {detail}")
    return _ANSI.sub("", done.stdout)


def stop_run(run_id: int, connection: str, flwr_home: str | os.PathLike[str]) -> None:
    """Ask the SuperLink to stop a run (``flwr stop``)."""
    _flwr(["stop", str(int(run_id)), connection], flwr_home, what="stop_run")

