"""Run a SuperNode's ClientApp tasks in the ``fedx node`` process, in place of a ``flwr-clientapp`` process each.

By default Flower's SuperNode starts a fresh ``flwr-clientapp`` process for every message: it imports Flower and
the app each time, seconds of work on a busy machine. A vertical run passes dozens of short messages in turn
(every Newton round is several hops between the parties), so ``fedx node`` starts its SuperNode with
``--isolation process`` and runs the tasks itself, one at a time, in a thread: :class:`NodeTasks` asks the
SuperNode's Runtime API for the next task (as Flower's SuperExec does), pulls its message and context, calls
the ClientApp, and pushes the reply and the context back (as ``flwr-clientapp`` does). The ClientApp and
what it sees are the same; only the process is reused.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from flwr.app import Context, Message
from flwr.app.error import Error
from flwr.common.constant import ErrorCode, SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.interceptors import (
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
)
from flwr.supercore.retry.retry_invoker import RetryInvoker, constant
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.runtime.tracing import RuntimeTracingInterceptor
from flwr.supernode.runtime import run_clientapp
from flwr.supernode.runtime.run_clientapp import (
    pull_task_input,
    push_message,
    push_task_output,
)

log = logging.getLogger(__name__)

#: HTTP statuses of the SuperNode's Runtime API that are worth asking again (it is busy or restarting).
_RETRY_STATUS = frozenset({502, 503, 504})


def _local_retry_invoker() -> RetryInvoker:
    """Retries for calls to this node's own SuperNode, on 127.0.0.1: short and bounded.

    Flower's default for its clientapp processes backs off exponentially without limit, and answers an HTTP 401
    by sending SIGINT to its own process. Both are wrong in the ``fedx node`` process: while the SuperLink is
    restarting, a backoff grown to tens of seconds made the node miss the restarted run's first message, and a
    signal would stop the node itself. Here a call is retried every 0.25 s for at most 5 s, then the error
    reaches the task loop, which asks again.
    """
    import httpx

    def give_up(exc: Exception) -> bool:
        return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code not in _RETRY_STATUS

    return RetryInvoker(wait_gen_factory=lambda: constant(0.25), recoverable_exceptions=(httpx.TransportError,
                                                                                        httpx.HTTPStatusError),
                        max_tries=None, max_time=5.0, should_giveup=give_up, jitter=None)

#: How long one object of a task's message may stay missing at this node's SuperNode (about 45 s: 50 tries, at
#: most 1 s apart). Flower's default is hours. A SuperNode that loses its SuperLink while it receives a message
#: logs "Run ... is not in RUNNING status. Ignoring message" but leaves the message's task waiting, and the objects
#: never come: with Flower's default the task loop would wait for them, and miss every later message (a restarted
#: server's first one). An object of a message that the SuperNode is still receiving arrives in seconds.
PULL_TRIES_PER_OBJECT, PULL_BACKOFF_CAP = 50, 1.0


def _pull_task_input(client: RuntimeHttpClient):
    """Flower's ``pull_task_input``, with the bounded wait for the message's objects above."""
    real = run_clientapp.pull_and_inflate_object_from_tree

    def bounded(*args: Any, **kwargs: Any) -> Any:
        kwargs.update(max_tries_per_object=PULL_TRIES_PER_OBJECT, initial_backoff=0.25,
                      backoff_cap=PULL_BACKOFF_CAP)
        return real(*args, **kwargs)

    run_clientapp.pull_and_inflate_object_from_tree = bounded
    try:
        return pull_task_input(client)
    finally:
        run_clientapp.pull_and_inflate_object_from_tree = real


__all__ = ["NodeTasks"]


class NodeTasks:
    """The ClientApp tasks of one SuperNode (``--isolation process``), run in a background thread.

    Parameters
    ----------
    runtime_address : str
        The SuperNode's Runtime API, ``host:port`` on 127.0.0.1.
    poll : float
        Seconds between two asks when no task is waiting.
    """

    def __init__(self, runtime_address: str, *, poll: float = 0.05) -> None:
        self.address, self.poll = runtime_address, float(poll)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.tasks = 0
        self._last_error = ""

    def start(self) -> NodeTasks:
        """Start asking for tasks."""
        self._thread = threading.Thread(target=self._loop, name="fedx-node-tasks", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the task under way."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _client(self, component: str, token: str | None = None) -> RuntimeHttpClient:
        interceptors: list[Any] = [RuntimeTracingInterceptor(), RuntimeVersionHttpInterceptor(component_name=component)]
        if token is not None:
            interceptors.append(RuntimeTokenHttpInterceptor(token))
        return RuntimeHttpClient.from_server_address(server_address=self.address, insecure=True,
                                                     root_certificates=None, interceptors=interceptors,
                                                     retry_invoker=_local_retry_invoker())

    def _loop(self) -> None:
        client = None
        while not self._stop.is_set():
            try:
                if client is None:
                    client = self._client("SuperExec")
                res = client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP],
                                                            agentapp_fab_hashes=[]))
                if res.HasField("task") and res.token:
                    self._run(res.token)
                    continue
            except Exception as exc:  # noqa: BLE001 - the SuperNode is starting, restarting or gone: ask again
                text = f"{type(exc).__name__}: {exc}"
                if text != self._last_error:
                    log.info("asking the SuperNode at %s for a task: %s", self.address, text)
                    self._last_error = text
                if client is not None:
                    try:
                        client.close()
                    except Exception as close_exc:  # noqa: BLE001 - it is dropped either way
                        log.debug("closing the Runtime API client: %s", close_exc)
                client = None
                self._stop.wait(0.5)
                continue
            self._stop.wait(self.poll)

    def _run(self, token: str) -> None:
        """One task: pull its message and context, call the ClientApp, push the reply and the context."""
        from .apps import client_app

        client = self._client("flwr-clientapp", token)
        heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
        heartbeat.start()
        message: Message | None = None
        reply: Message | None = None
        context: Context | None = None
        status, details = SubStatus.FAILED, "ClientApp task failed"
        try:
            message, context, _, _ = _pull_task_input(client)
            reply = client_app(message=message, context=context)
            status, details = SubStatus.COMPLETED, ""
        except Exception as exc:
            log.exception("the ClientApp raised an exception")
            details = f"{type(exc)}:<'{exc}'>"
            if message is not None:
                reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details), reply_to=message)
        finally:
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
                push_task_output(client=client, context=context, sub_status=status, details=details)
            except Exception as exc:  # noqa: BLE001
                log.error("pushing the reply to the SuperNode failed: %s", exc)
            if heartbeat.is_running:
                heartbeat.stop()
            client.close()
            self.tasks += 1
            time.sleep(0)
