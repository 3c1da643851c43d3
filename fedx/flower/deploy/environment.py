"""The environment of every Flower child process, the process record, and the log files.

Every child gets ``FLWR_TELEMETRY_ENABLED=0`` and ``FLWR_DISABLE_UPDATE_CHECK=1``, its own
``FLWR_HOME``, and this interpreter's ``bin`` folder first on ``PATH`` (the Flower processes start
``flower-superexec``, ``flwr-serverapp`` and ``flwr-clientapp`` by name). Its output reaches its log
file as plain text (Flower's colour codes removed).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import DeploymentError

log = logging.getLogger(__name__)

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

_EXIT_CODE = re.compile(r"Exit Code: (\d+)")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

_CONFIG_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


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

