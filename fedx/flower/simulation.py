"""``fedx.run``: a whole federation on Flower's simulation engine, in this process.

Each simulated institution gets its own table file (its "local database") and reads only that.
The ServerApp runs in a thread of this process, the ClientApps in Ray workers on 127.0.0.1 with one
CPU each. Ray is shut down before this returns, so no background process is left behind.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from ..errors import FederationError, FedxError
from ..institution import NodeSpec
from .client_app import make_client_app

log = logging.getLogger(__name__)

T = TypeVar("T")


#: Ray resolves the node address 127.0.0.1 to the machine's outside address, and its gRPC servers
#: (GCS, raylet, workers) then listen on every interface, unless this switch is off: then the node
#: address stays the loopback one and every server binds to it (ray._private.services.get_node_ip_address).
#: Ray reads it once, when it is first imported.
_RAY_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def quiet_environment() -> None:
    """Telemetry off, and Ray kept on loopback with no usage stats and no dashboard.

    Call it before Ray is imported: Ray reads the loopback switch at import time.
    """
    os.environ[_RAY_LOOPBACK_ENV] = "0"
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


@contextmanager
def _flower_logs(level: int) -> Iterator[None]:
    flwr_log = logging.getLogger("flwr")
    old = flwr_log.level
    flwr_log.setLevel(level)
    try:
        yield
    finally:
        flwr_log.setLevel(old)


#: Flower versions whose simulation loop :func:`_install_extractor` replaces (checked against their source).
EXTRACTOR_FLWR = ("1.42.",)


def _install_extractor() -> bool:
    """Hand the simulation's waiting messages to the workers in one pass over the link state per tick.

    Flower 1.42's simulation engine (``flwr/server/superlink/fleet/vce/vce_api.py``,
    ``add_messages_to_queue``) asks the in-memory link state for one message per node, every 0.1 s, and
    each ask scans every stored message (``InMemoryLinkState.get_message_ins``) under the state's lock.
    A round of N institutions keeps about N messages stored, so each tick costs N x N checks: at 200
    institutions, most of the driver's time, with the lock held against the server's own calls. The
    replacement makes one pass per tick and hands over, as before, the oldest undelivered message of
    each node, checked (expiry, federation) and marked delivered exactly as ``get_message_ins`` does. A
    tick starts as soon as the server stores a message (:func:`_wake_on_store`), or after 0.1 s. The
    simulation's threads also wait at most :data:`QUEUE_WAIT` on their queues (:func:`_prompt`), so that a run
    ends when its server job does.
    Returns whether it was installed (only on the Flower versions it was written against).
    """
    import flwr
    from flwr.server.superlink.fleet.vce import vce_api
    from flwr.server.superlink.linkstate import in_memory_linkstate

    if not flwr.__version__.startswith(EXTRACTOR_FLWR):
        return False
    if getattr(vce_api.add_messages_to_queue, "_fedx", False):
        return True
    stock = vce_api.add_messages_to_queue
    memory_state = in_memory_linkstate.InMemoryLinkState

    def add_messages_to_queue(state: Any, queue: Any, nodes_mapping: Any, f_stop: threading.Event) -> None:
        _prompt(queue)
        if not isinstance(state, memory_state):
            return stock(state, queue, nodes_mapping, f_stop)
        nodes = set(nodes_mapping.keys())
        stored = _wake_on_store(state)
        while not f_stop.is_set():
            stored.clear()
            for msg in _undelivered(state, nodes):
                queue.put(msg)
            if stored.wait(0.1):
                f_stop.wait(0.002)  # let a burst of stores (a round's N messages) end: one pass for them all
        return None

    add_messages_to_queue._fedx = True  # type: ignore[attr-defined]
    add_messages_to_queue._stock = stock  # type: ignore[attr-defined]  # for a stock Flower baseline
    vce_api.add_messages_to_queue = add_messages_to_queue
    stock_put = vce_api.put_message_into_state

    def put_message_into_state(state: Any, queue: Any, f_stop: threading.Event) -> None:
        _prompt(queue)
        return stock_put(state, queue, f_stop)

    put_message_into_state._stock = stock_put  # type: ignore[attr-defined]
    vce_api.put_message_into_state = put_message_into_state
    return True


#: The longest a simulation's worker waits on its queue before it looks at the stop event again.
QUEUE_WAIT = 0.05


def _prompt(queue: Any) -> None:
    """Shorten the waits of Flower's simulation threads on ``queue`` to :data:`QUEUE_WAIT`.

    Flower 1.42's workers and reply injector wait up to 1 s on their queues (``queue.get(timeout=1.0)``) before
    they look at the stop event again, so every simulation ended up to 1 s after its server job (about 1 s on
    average, measured). The threads loop on an empty queue as before, only more often; a message still goes
    through at once.
    """
    if getattr(queue, "_fedx_prompt", False):
        return
    get = queue.get

    def prompt_get(block: bool = True, timeout: float | None = None) -> Any:
        if block and timeout is not None and timeout > QUEUE_WAIT:
            timeout = QUEUE_WAIT
        return get(block, timeout)

    queue.get = prompt_get
    queue._fedx_prompt = True


def _wake_on_store(state: Any) -> threading.Event:
    """An event set whenever the server stores a message in ``state`` (wrapping its ``store_message_ins``).

    The loop of :func:`_install_extractor` waits on it, at most 0.1 s as Flower's loop does: a message goes
    to the workers as soon as it is stored, instead of up to 0.1 s later. Each phase of a round costs
    Flower's loop about 0.05 s on average, twice per round (train and evaluate).
    """
    event = getattr(state, "_fedx_stored", None)
    if event is not None:
        return event
    event = threading.Event()
    store = state.store_message_ins

    def store_message_ins(*args: Any, **kwargs: Any) -> Any:
        try:
            return store(*args, **kwargs)
        finally:
            event.set()

    state.store_message_ins = store_message_ins
    state._fedx_stored = event
    return event


def _undelivered(state: Any, nodes: set[int]) -> list[Any]:
    """The oldest undelivered message of each of ``nodes`` in an in-memory link state, marked delivered.

    One pass over the stored messages, under the state's lock, with the checks of Flower's
    ``get_message_ins`` (expired messages and those of nodes that left the federation are dropped first).
    """
    from flwr.server.superlink.linkstate import in_memory_linkstate

    out: list[Any] = []
    taken: set[int] = set()
    with state.lock:
        ids = list(state.message_ins_store.keys())
        state._check_stored_messages(set(ids))
        for msg_id in ids:
            msg = state.message_ins_store.get(msg_id)
            if msg is None or msg.metadata.delivered_at != "":
                continue
            node = msg.metadata.dst_node_id
            if node in nodes and node not in taken:
                taken.add(node)
                out.append(msg)
        delivered_at = in_memory_linkstate.now().isoformat()
        for msg in out:
            msg.metadata.delivered_at = delivered_at
    return out


def run_on_simulation(job: Callable[[Grid], T], specs: Sequence[NodeSpec], *, verbose: bool = False) -> T:
    """Run a server job against simulated institutions on Flower's simulation engine.

    Parameters
    ----------
    job : callable
        Given the Grid, runs the server side (an :class:`~fedx.flower.server_app.Orchestrator` or a
        :class:`~fedx.flower.stats_server.StatsOrchestrator`) and returns its result.
    specs : sequence of NodeSpec
        One per simulated institution (partition ``i`` is ``specs[i]``).
    verbose : bool
        Show Flower's and Ray's own logs.

    Returns
    -------
    What ``job`` returned. An error in ``job`` is raised here, in the caller's thread.
    """
    quiet_environment()
    from flwr.simulation import run_simulation

    _install_extractor()

    _check_ray_on_loopback()
    outcome: dict[str, Any] = {}
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        try:
            outcome["result"] = job(grid)
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    frozen = list(specs)
    resolve, spec_dir = spec_resolver(frozen)
    client = make_client_app(resolve)
    backend = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"_node_ip_address": "127.0.0.1", "include_dashboard": False,
                      "logging_level": logging.INFO if verbose else logging.ERROR,
                      "log_to_driver": verbose, "num_cpus": min(os.cpu_count() or 1, len(frozen)),
                      "_temp_dir": _ray_temp_dir()},
    }
    with _flower_logs(logging.INFO if verbose else logging.ERROR):
        try:
            run_simulation(server_app=server, client_app=client, num_supernodes=len(frozen),
                           backend_config=backend, verbose_logging=verbose)
        except FedxError:
            raise
        except Exception as exc:
            if "error" not in outcome:
                raise FederationError(f"the simulation engine failed: {exc}") from exc
        finally:
            shutil.rmtree(spec_dir, ignore_errors=True)
    if "error" in outcome:
        raise outcome["error"]
    if "result" not in outcome:
        raise FederationError("the simulation ended without a result (see the log above)")
    return outcome["result"]


def spec_resolver(specs: Sequence[NodeSpec]) -> tuple[Callable[[Context], NodeSpec], Path]:
    """A resolver of simulated institutions that pickles as a path, and the private folder that holds it.

    The specs are written once to a file in a new folder (0700; the caller removes it after the run), and
    each worker reads them once (:func:`_resolve_from`).
    """
    folder = Path(tempfile.mkdtemp(prefix="fedx-sim-"))
    path = folder / "institutions.pickle"
    path.write_bytes(pickle.dumps(list(specs)))
    path.chmod(0o600)
    return functools.partial(_resolve_from, str(path)), folder


@functools.lru_cache(maxsize=4)
def _specs_at(path: str) -> list[NodeSpec]:
    with open(path, "rb") as fh:
        specs: list[NodeSpec] = pickle.load(fh)  # written by run_on_simulation in a private folder
    return specs


def _resolve_from(path: str, context: Context) -> NodeSpec:
    """The spec of a simulated institution, from the file that holds them all (read once per worker).

    Flower's Ray backend pickles the ClientApp with every message it hands a worker; a resolver that held
    the list of specs would send all N of them with each of the N messages of a round (N x N), while this
    one sends a path.
    """
    return _specs_at(path)[int(context.node_config["partition-id"])]


def _check_ray_on_loopback() -> None:
    """Keep Ray on loopback also when it was imported before :func:`quiet_environment` ran.

    Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` into ``ray_constants.ENABLE_RAY_CLUSTER`` once, at
    import, and ``get_node_ip_address`` reads that constant at each call; its child processes read the
    environment variable set above.
    """
    from ray._private import ray_constants

    if ray_constants.ENABLE_RAY_CLUSTER:
        log.debug("ray was imported before %s=0 was set; switching it off in the loaded module", _RAY_LOOPBACK_ENV)
        ray_constants.ENABLE_RAY_CLUSTER = False


_RAY_TMP_LOCK = threading.Lock()


def _ray_temp_dir() -> str:
    # Ray's default /tmp/ray is shared by every user of the machine; keep ours private.
    with _RAY_TMP_LOCK:
        path = Path(tempfile.gettempdir()) / f"fedx-ray-{os.getuid()}"
        path.mkdir(mode=0o700, exist_ok=True)
        return str(path)
