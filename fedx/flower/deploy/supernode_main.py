"""``python -m fedx.flower.deploy.supernode_main ARGS``: Flower's ``flower-supernode ARGS``, quicker to see a message.

Flower 1.42's SuperNode loop (``flwr/supernode/start_client_internal.py``) asks the SuperLink for a message, and
when none is waiting it sleeps 3 s before it asks again; once it has handed a message to its ClientApp, it looks
for the reply every 0.5 s. A message that the server sends just after an empty ask waits at the SuperLink for up
to 3 s, and a federated round is several such hops (a vertical fit is dozens). This entry point runs the same
command, with the same arguments, after shortening those two waits: the idle wait to ``FEDX_SUPERNODE_POLL``
seconds (0.25 unless set; Flower's 3 s when set to 3), the reply wait to a tenth of it (at most 0.5 s). An empty
ask is one small request to the SuperLink, so a node asks about 4 times a second instead of once every 3 s.

The waits are the module's ``time.sleep(3)`` and ``time.sleep(0.5)`` calls: they are shortened by giving that one
module a ``time`` whose ``sleep`` maps those two durations, and nothing else changes. This is checked against the
installed Flower: with another version, or a loop whose source no longer holds those calls, the SuperNode runs
unchanged and says so in its log.
"""

from __future__ import annotations

import inspect
import os
import sys
import time
from typing import Any

#: The Flower releases whose SuperNode loop this was checked against.
CHECKED_FLWR = ("1.42.",)
#: The environment variable that sets the idle wait, in seconds.
POLL_ENV = "FEDX_SUPERNODE_POLL"
DEFAULT_POLL = 0.25
#: Flower's own waits, in seconds, in ``start_client_internal``: no message waiting; no reply yet.
FLOWER_IDLE, FLOWER_REPLY = 3, 0.5


class _Waits:
    """The ``time`` module, except that ``sleep(3)`` and ``sleep(0.5)`` sleep ``idle`` and ``reply`` seconds."""

    def __init__(self, idle: float, reply: float) -> None:
        self.idle, self.reply = float(idle), float(reply)

    def sleep(self, seconds: float) -> None:
        if seconds == FLOWER_IDLE:
            seconds = self.idle
        elif seconds == FLOWER_REPLY:
            seconds = self.reply
        time.sleep(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def poll_from_env(environ: dict[str, str] | os._Environ[str] = os.environ) -> float:
    """The idle wait that ``FEDX_SUPERNODE_POLL`` asks for (0.25 s unset); a clear error when it is no number."""
    text = environ.get(POLL_ENV, "").strip()
    if not text:
        return DEFAULT_POLL
    try:
        value = float(text)
    except ValueError:
        raise SystemExit(f"{POLL_ENV}={text!r}: expected a number of seconds, e.g. 0.25") from None
    if not 0.01 <= value <= FLOWER_IDLE:
        raise SystemExit(f"{POLL_ENV}={text!r}: expected seconds between 0.01 and {FLOWER_IDLE}")
    return value


def shorten_waits(idle: float) -> str | None:
    """Shorten the SuperNode loop's waits; None when done, else why not (another Flower, another loop)."""
    import flwr
    from flwr.supernode import start_client_internal as loop

    version = getattr(flwr, "__version__", "") or ""
    if not version.startswith(CHECKED_FLWR):
        return f"flwr {version} is not a release this was checked against ({', '.join(CHECKED_FLWR)}x)"
    try:
        source = inspect.getsource(loop)
    except (OSError, TypeError) as exc:
        return f"the source of {loop.__name__} cannot be read ({exc})"
    if source.count(f"time.sleep({FLOWER_IDLE})") != 1 or f"time.sleep({FLOWER_REPLY})" not in source \
            or getattr(loop, "time", None) is not time:
        return f"{loop.__name__} no longer waits with time.sleep({FLOWER_IDLE}) and time.sleep({FLOWER_REPLY})"
    loop.time = _Waits(idle, min(FLOWER_REPLY, idle / 10))  # type: ignore[assignment]
    return None


def main() -> None:
    idle = poll_from_env()
    why_not = shorten_waits(idle) if idle != FLOWER_IDLE else None
    if why_not is not None:
        print(f"fedx: the SuperNode keeps Flower's {FLOWER_IDLE} s wait between asks: {why_not}", file=sys.stderr)
    from flwr.supernode.cli import flower_supernode

    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
