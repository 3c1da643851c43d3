"""Run a federation on Flower's deployment engine: certificates, node keys, processes, runs.

This module drives the Flower 1.42 command-line programs as child processes. What it does was
checked on a real machine (see ``docs/deploy-notes.md``):

- ``flower-superlink`` serves one HTTPS port (``--host``/``--port``) that carries the Fleet API
  (SuperNodes), the Control API (``flwr run``, ``flwr ls``, ``flwr supernode register``) and the
  Runtime API (the ServerApp). It starts a ``flower-superexec`` child in a session of its own, which
  starts one ``flwr-serverapp`` process per run.
- ``flower-supernode`` serves its own Runtime API on a second port (``--host``/``--port``,
  plain HTTP on loopback, distinct per SuperNode on one machine). It starts a ``flower-superexec``
  child that starts one ``flwr-clientapp`` process per message.
- With ``--disable-runtime-dependency-installation`` (SuperLink; SuperNodes never install unless
  given ``--allow-runtime-dependency-installation``) nothing is installed at run time: the FAB
  holds only ``pyproject.toml``, and its components (``module:attr``) are imported from the
  Python environment of each process, so the code must be installed there (or on ``PYTHONPATH``).
- SuperNode authentication uses EC keys on a NIST curve in OpenSSH format: the private key file
  for ``--auth-supernode-private-key``, the public key (``ecdsa-sha2-nistp384 ...``) for
  ``flwr supernode register``. The node id is fixed at registration and kept across SuperNode
  restarts; the SuperLink forgets registrations on restart unless it runs with ``--database``.

Every child gets ``FLWR_TELEMETRY_ENABLED=0`` and ``FLWR_DISABLE_UPDATE_CHECK=1``, its own
``FLWR_HOME``, and this interpreter's ``bin`` folder first on ``PATH`` (the Flower processes start
``flower-superexec``, ``flwr-serverapp`` and ``flwr-clientapp`` by name). Everything binds to
127.0.0.1 unless an address is given. Each server process starts in a session of its own, and
:func:`stop` ends it together with every process it started, by PID.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DeploymentError

log = logging.getLogger(__name__)

__all__ = [
    "INSECURE_WARNING",
    "DEFAULT_HOST",
    "TLSFiles",
    "FlowerProcess",
    "make_ca_and_server_cert",
    "make_node_keypair",
    "free_port",
    "child_env",
    "write_connection",
    "write_app_dir",
    "format_config_args",
    "start_superlink",
    "register_node",
    "start_supernode",
    "wait_supernode_ready",
    "NodeTrouble",
    "diagnose_supernode",
    "probe_tls",
    "list_nodes",
    "launch_run",
    "run_status",
    "wait_run",
    "run_logs",
    "stop_run",
    "stop",
    "stop_all",
    "descendant_pids",
    "alive_pids",
]

#: The address every server binds to unless the caller names another.
DEFAULT_HOST = "127.0.0.1"

#: Printed by the CLI whenever a SuperLink or SuperNode runs with ``--insecure``.
INSECURE_WARNING = """\
**********************************************************************************
*  WARNING: INSECURE MODE. TLS IS OFF AND SUPERNODES ARE NOT AUTHENTICATED.      *
*  Model updates, metrics and run configs travel in clear text, and ANY process  *
*  that can reach the SuperLink's port can join the federation as a SuperNode.   *
*  Use this only for a demo on one machine (127.0.0.1), never across a network   *
*  and never with real data.                                                     *
**********************************************************************************"""

#: Environment that every Flower child process gets, whatever the caller passes.
_QUIET_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PYTHONUNBUFFERED": "1",
}

_RUNTIME_INSTALL_ENV = "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ANSI_BYTES = re.compile(rb"\x1b\[[0-9;]*m")
_NODE_ID = re.compile(r"SuperNode ID: (\d+)")
_EXIT_CODE = re.compile(r"Exit Code: (\d+)")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_CONFIG_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_CLI_TIMEOUT = 120.0


# --------------------------------------------------------------------------------------------
# Certificates and node keys
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSFiles:
    """The PEM files of a private CA and of the SuperLink's server certificate.

    Attributes
    ----------
    ca_cert : Path
        The CA certificate: give it to every SuperNode (``--root-certificates``) and to the
        ``flwr`` CLI connection (``root-certificates``), and to the SuperLink (``--ssl-ca-certfile``).
    ca_key : Path
        The CA's private key (mode 0600). Keep it offline; it signs server certificates only.
    server_cert : Path
        The SuperLink's certificate (``--ssl-certfile``), valid for the hosts it was made for.
    server_key : Path
        The SuperLink's private key (``--ssl-keyfile``, mode 0600).
    """

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    def check(self) -> None:
        """Raise :class:`DeploymentError` naming the first file that the SuperLink needs and lacks."""
        for label, path in (("CA certificate", self.ca_cert), ("server certificate", self.server_cert),
                            ("server key", self.server_key)):
            if not Path(path).is_file():
                raise DeploymentError(f"TLS {label} not found: {path} (make one with make_ca_and_server_cert)")


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def _refuse_overwrite(paths: Iterable[Path], overwrite: bool) -> None:
    if overwrite:
        return
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise DeploymentError(
            f"refusing to overwrite existing key material: {', '.join(existing)} "
            "(pass overwrite=True, or choose another folder)"
        )


def make_ca_and_server_cert(
    out_dir: str | os.PathLike[str],
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    days: int = 365,
    *,
    overwrite: bool = False,
) -> TLSFiles:
    """Make a private CA and a SuperLink server certificate signed by it (EC P-384, SHA-256).

    Parameters
    ----------
    out_dir : path
        Folder for ``ca.crt``, ``ca.key``, ``server.pem`` and ``server.key`` (keys mode 0600).
    hosts : sequence of str
        Names the SuperNodes will dial: IP addresses become IP subject-alternative names, anything
        else a DNS name. The SuperLink's own SuperExec dials ``127.0.0.1`` when it binds there, so
        keep ``127.0.0.1`` in the list for a loopback SuperLink.
    days : int
        Validity of both certificates, from now (backdated five minutes for clock skew).
    overwrite : bool
        Replace existing files. Off by default: a new CA invalidates every ``ca.crt`` handed out.

    Returns
    -------
    TLSFiles
        The four paths.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if isinstance(hosts, str):
        hosts = (hosts,)
    if not hosts:
        raise DeploymentError("make_ca_and_server_cert: hosts is empty; expected at least one name or IP")
    if not isinstance(days, int) or days < 1:
        raise DeploymentError(f"make_ca_and_server_cert: days must be a positive integer, got {days!r}")
    out = Path(out_dir)
    files = TLSFiles(out / "ca.crt", out / "ca.key", out / "server.pem", out / "server.key")
    _refuse_overwrite((files.ca_cert, files.ca_key, files.server_cert, files.server_key), overwrite)

    san: list[x509.GeneralName] = []
    for host in hosts:
        try:
            san.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not host or any(c.isspace() for c in host):
                raise DeploymentError(f"make_ca_and_server_cert: invalid host name {host!r}") from None
            san.append(x509.DNSName(host))

    now = _dt.datetime.now(_dt.timezone.utc)
    start, end = now - _dt.timedelta(minutes=5), now + _dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedx"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "fedx federation CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedx"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    plain = serialization.NoEncryption()
    out.mkdir(parents=True, exist_ok=True)
    files.ca_cert.write_bytes(ca_cert.public_bytes(pem))
    _write_private(files.ca_key, ca_key.private_bytes(pem, pkcs8, plain))
    files.server_cert.write_bytes(server_cert.public_bytes(pem))
    _write_private(files.server_key, server_key.private_bytes(pem, pkcs8, plain))
    return files


def make_node_keypair(
    out_dir: str | os.PathLike[str], name: str, *, overwrite: bool = False
) -> tuple[Path, Path]:
    """Make a SuperNode authentication key pair: EC P-384, OpenSSH format.

    Parameters
    ----------
    out_dir : path
        Folder for ``NAME.key`` (private, mode 0600, for ``--auth-supernode-private-key``) and
        ``NAME.pub`` (``ecdsa-sha2-nistp384 AAAA...``, for ``flwr supernode register``).
    name : str
        Letters, digits, ``-`` and ``_``; usually the institution's name.
    overwrite : bool
        Replace an existing pair. A new key is a new identity: register it again.

    Returns
    -------
    tuple of Path
        ``(private_path, public_path)``.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(name, str) or not _NAME.match(name):
        raise DeploymentError(f"make_node_keypair: invalid key name {name!r}; expected letters, digits, '-' or '_'")
    out = Path(out_dir)
    private_path, public_path = out / f"{name}.key", out / f"{name}.pub"
    _refuse_overwrite((private_path, public_path), overwrite)
    key = ec.generate_private_key(ec.SECP384R1())
    _write_private(private_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                   serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    public_path.write_bytes(public + f" fedx-{name}\n".encode())
    return private_path, public_path


# --------------------------------------------------------------------------------------------
# Ports, environment, files
# --------------------------------------------------------------------------------------------


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it; another process may take it later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _check_port_free(host: str, port: int, what: str) -> None:
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise DeploymentError(f"{what}: port must be an integer in 1..65535, got {port!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise DeploymentError(
                f"{what}: port {port} on {host} is not available ({exc.strerror}); "
                "stop whatever holds it or choose another port"
            ) from None


def _dial_host(host: str) -> str:
    """The address to dial for a server bound to ``host`` (a wildcard bind is dialled on loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bin(name: str) -> str:
    """The path of a Flower program: beside this interpreter first, then on PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise DeploymentError(f"the Flower program '{name}' was not found beside {sys.executable} nor on PATH; "
                              "is flwr installed in this environment?")
    return found


def child_env(
    flwr_home: str | os.PathLike[str],
    *,
    pythonpath: Sequence[str | os.PathLike[str]] = (),
    extra: Mapping[str, str] | None = None,
    runtime_dependency_installation: bool = False,
) -> dict[str, str]:
    """The environment of a Flower child process.

    Parameters
    ----------
    flwr_home : path
        ``FLWR_HOME`` of the child: its ``config.toml`` (CLI connections) and ``apps/`` (installed
        FABs) live there, never in ``~/.flwr``.
    pythonpath : sequence of path
        Folders put first on ``PYTHONPATH``, for app code that is not installed.
    extra : mapping, optional
        More variables; they cannot turn telemetry or the update check back on.
    runtime_dependency_installation : bool
        Leave ``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION`` unset. Off by default: it is set to 1.
    """
    env = dict(os.environ)
    if extra:
        env.update({str(k): str(v) for k, v in extra.items()})
    env.update(_QUIET_ENV)
    env["FLWR_HOME"] = str(Path(flwr_home).resolve())
    if runtime_dependency_installation:
        env.pop(_RUNTIME_INSTALL_ENV, None)
    else:
        env[_RUNTIME_INSTALL_ENV] = "1"
    bin_dir = str(Path(sys.executable).parent)
    path = env.get("PATH", "")
    if bin_dir not in path.split(os.pathsep):
        env["PATH"] = bin_dir + (os.pathsep + path if path else "")
    extra_paths = [str(Path(p).resolve()) for p in pythonpath]
    if extra_paths:
        old = env.get("PYTHONPATH", "")
        env["PYTHONPATH"] = os.pathsep.join(extra_paths + ([old] if old else []))
    return env


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


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


@dataclass
class FlowerProcess:
    """A running ``flower-superlink`` or ``flower-supernode``, started by this module.

    Attributes
    ----------
    role : str
        ``"superlink"`` or ``"supernode"``.
    popen : subprocess.Popen
        The process; it leads a session of its own.
    log_path : Path
        Its stdout and stderr (and those of the app processes it starts).
    address : str
        SuperLink: the ``host:port`` that SuperNodes and the CLI dial. SuperNode: its Runtime API.
    flwr_home : Path
        Its ``FLWR_HOME``.
    node_id : int or None
        SuperNode: the id the SuperLink gave it, once connected.
    insecure : bool
        Whether it runs without TLS.
    """

    role: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    address: str
    flwr_home: Path
    node_id: int | None = None
    insecure: bool = False
    log_offset: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        """The process id."""
        return int(self.popen.pid)

    def poll(self) -> int | None:
        """Its exit status, or None while it runs."""
        return self.popen.poll()

    @property
    def returncode(self) -> int | None:
        """The process's exit status (1 for every Flower error; see :attr:`flower_exit_code`)."""
        return self.popen.poll()

    def log_text(self) -> str:
        """Its log so far (from its own start, when the file is shared), without colour codes."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self.log_offset)
                data = fh.read()
        except OSError:
            return ""
        return _ANSI.sub("", data.decode("utf-8", errors="replace"))

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of its log, without colour codes."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    @property
    def flower_exit_code(self) -> int | None:
        """The Flower exit code it logged (``Exit Code: 305`` and so on), if any.

        Flower logs the specific code but the process itself exits with status 1.
        """
        found = _EXIT_CODE.findall(self.log_text())
        return int(found[-1]) if found else None


def _spawn(role: str, argv: list[str], *, env: dict[str, str], log_path: Path,
           cwd: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``argv`` in a session of its own, appending its output to ``log_path`` as plain text.

    Flower colours its log lines whatever the output is (``flwr.supercore.logger`` has no switch for
    it), so the output goes through a pipe and a thread of this process that drops the ANSI colour
    codes before writing each line to the file. Returns the process and the log's size before it.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as fh:
        offset = fh.tell()
    log.debug("starting %s: %s", role, " ".join(argv))
    popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env=env, cwd=str(cwd), start_new_session=True)
    assert popen.stdout is not None
    threading.Thread(target=_copy_plain, args=(popen.stdout, log_path), name=f"fedx-{role}-{popen.pid}-log",
                     daemon=True).start()
    return popen, offset


def _copy_plain(stream: Any, log_path: Path) -> None:
    """Copy ``stream`` line by line to ``log_path`` without ANSI colour codes, until every writer closed it."""
    with stream, open(log_path, "ab", buffering=0) as fh:
        fh.writelines(_ANSI_BYTES.sub(b"", line) for line in iter(stream.readline, b""))


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

    Returns
    -------
    FlowerProcess
        With ``node_id`` set when ``wait_ready``.
    """
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
    port = free_port(host) if port is None else port
    _check_port_free(host, port, "start_supernode")
    logfile = Path(log_path).resolve()
    work = Path(workdir).resolve() if workdir is not None else logfile.parent
    work.mkdir(parents=True, exist_ok=True)
    home = Path(flwr_home).resolve()
    home.mkdir(parents=True, exist_ok=True)

    argv = [_bin("flower-supernode"), "--superlink", superlink_address,
            "--host", host, "--port", str(port), "--isolation", "subprocess"]
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
    popen, offset = _spawn("supernode", argv, env=env, log_path=logfile, cwd=work)
    proc = FlowerProcess("supernode", popen, logfile, _join_address(_dial_host(host), port), home,
                         insecure=insecure, log_offset=offset,
                         extra={"port": port, "superlink": superlink_address})
    if wait_ready:
        wait_supernode_ready(proc, timeout=startup_timeout)
    return proc


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
        found = _NODE_ID.search(proc.log_text())
        if found:
            proc.node_id = int(found.group(1))
            return proc.node_id
        code = proc.popen.poll()
        if code is not None:
            # the log may have gained the id line just before exit
            found = _NODE_ID.search(proc.log_text())
            if found:
                proc.node_id = int(found.group(1))
                return proc.node_id
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


# --------------------------------------------------------------------------------------------
# The flwr CLI
# --------------------------------------------------------------------------------------------


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
) -> dict[str, Any]:
    """Wait until a run finishes; return its final record (see :func:`run_status`).

    It returns on ``finished:failed`` too: check ``record["status"]``.

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
    """
    deadline = time.monotonic() + timeout
    while True:
        if superlink is not None and superlink.poll() is not None:
            raise DeploymentError(f"the SuperLink exited with status {superlink.poll()} during run {run_id}:\n"
                                  f"{superlink.log_tail()}")
        record = run_status(run_id, connection, flwr_home)
        if str(record.get("status", "")).startswith("finished"):
            return record
        if time.monotonic() > deadline:
            raise DeploymentError(f"run {run_id} did not finish within {timeout:g} s "
                                  f"(status {record.get('status')})")
        time.sleep(poll)


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


# --------------------------------------------------------------------------------------------
# Stopping by PID
# --------------------------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """``{pid: (ppid, pgid, state)}`` of every process, from /proc (empty where there is none)."""
    table: dict[int, tuple[int, int, str]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return table
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2:].split()
        try:
            table[int(entry.name)] = (int(rest[1]), int(rest[2]), rest[0])
        except (IndexError, ValueError):
            continue
    return table


def descendant_pids(pid: int) -> set[int]:
    """Every living process below ``pid`` in the process tree (Linux /proc; empty elsewhere)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for child, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(child)
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive_pids(pids: Iterable[int]) -> set[int]:
    """Those of ``pids`` that still run (zombies count as gone)."""
    table = _proc_table()
    if table:
        return {p for p in pids if p in table and table[p][2] != "Z"}
    alive = set()
    for p in pids:
        try:
            os.kill(p, 0)
            alive.add(p)
        except OSError:
            pass
    return alive


def _signal(pids: Iterable[int], sig: int) -> None:
    own = {os.getpid(), 1}
    for p in pids:
        if p in own:
            continue
        try:
            os.kill(p, sig)
        except OSError:
            pass


def stop_all(processes: Sequence[FlowerProcess], timeout: float = 10.0) -> dict[int, int | None]:
    """Stop processes together with every process they started; return ``{pid: exit status}``.

    Each gets SIGTERM (Flower then deactivates a SuperNode, so pending messages to it are answered
    at once with ``NODE_UNAVAILABLE``) and up to ``timeout`` seconds; then SIGKILL. Their
    descendants, also those already orphaned (a ``flwr-clientapp`` outlives a killed SuperNode),
    are found through the process tree and the process groups, and ended the same way.
    """
    table = _proc_table()
    own_group = os.getpgrp()
    tree: set[int] = set()
    groups: set[int] = set()
    for p in processes:
        groups.add(p.pid)  # each leads its own session, so pgid == pid (also for its orphans)
        for d in descendant_pids(p.pid):
            tree.add(d)
            if d in table:
                groups.add(table[d][1])
    groups.discard(own_group)

    running = [p for p in processes if p.popen.poll() is None]
    _signal((p.pid for p in running), signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in running:
        try:
            p.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) ignored SIGTERM for %g s; killing it", p.role, p.pid, timeout)
            _signal([p.pid], signal.SIGKILL)
            p.popen.wait(timeout=5)

    def leftovers() -> set[int]:
        current = _proc_table()
        members = {pid for pid, (_, pgid, state) in current.items() if pgid in groups and state != "Z"}
        return (alive_pids(tree) | members) - {os.getpid()}

    rest = leftovers()
    if rest:
        _signal(rest, signal.SIGTERM)
        end = time.monotonic() + min(5.0, timeout)
        while rest and time.monotonic() < end:
            time.sleep(0.1)
            rest = leftovers()
        if rest:
            _signal(rest, signal.SIGKILL)
            end = time.monotonic() + 5.0
            while rest and time.monotonic() < end:
                time.sleep(0.1)
                rest = leftovers()
        if rest:
            raise DeploymentError(f"could not end processes {sorted(rest)} started under "
                                  f"{', '.join(f'{p.role} {p.pid}' for p in processes)}")
    return {p.pid: p.popen.poll() for p in processes}


def stop(process: FlowerProcess, timeout: float = 10.0) -> int | None:
    """Stop one SuperLink or SuperNode and everything it started; return its exit status.

    Stop the SuperNodes before their SuperLink, so they do not sit retrying.
    """
    return stop_all([process], timeout=timeout)[process.pid]
