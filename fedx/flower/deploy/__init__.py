"""Run a federation on Flower's deployment engine: certificates, node keys, processes, runs.

This package drives the Flower 1.42 command-line programs as child processes. What it does was
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

The package has one module per job: :mod:`.tls` (the CA, the SuperLink's certificate, node keys),
:mod:`.environment` (the child processes' environment, ports, the process record and its plain-text
log), :mod:`.superlink` (the SuperLink and its control through the ``flwr`` CLI: connection, app folder,
node registration, runs), :mod:`.supernode` (SuperNode processes, and why one could not join) and
:mod:`.teardown` (stopping by PID). Every name is importable from ``fedx.flower.deploy``.
"""

from __future__ import annotations

from .environment import (
    DEFAULT_HOST,
    INSECURE_WARNING,
    FlowerProcess,
    child_env,
    free_port,
)
from .superlink import (
    launch_run,
    list_nodes,
    register_node,
    run_logs,
    run_status,
    start_superlink,
    stop_run,
    wait_run,
    write_app_dir,
    write_connection,
)
from .supernode import (
    NodeTrouble,
    diagnose_supernode,
    format_config_args,
    node_id_in_log,
    probe_tls,
    start_supernode,
    wait_supernode_ready,
)
from .teardown import (
    alive_pids,
    descendant_pids,
    stop,
    stop_all,
)
from .tls import (
    TLSFiles,
    make_ca_and_server_cert,
    make_node_keypair,
)

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
    "node_id_in_log",
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
