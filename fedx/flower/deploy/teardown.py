"""Stopping what this package started, by PID: each server process with every process below it."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from ...errors import DeploymentError
from .environment import FlowerProcess

log = logging.getLogger(__name__)


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

