"""Progress of a run: a rich progress bar over the rounds in a terminal, one plain line per round elsewhere.

A progress bar redraws itself with control codes, which a log file keeps as truncated lines. So when the
stream it writes to (stderr) is not a terminal (``fedx run ... 2> run.log``, a pipe, a CI job), each
round prints one plain line instead, e.g. ``round 3/20: auprc 0.8123  ε=1.20 (4.2 s)``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class RunProgress:
    """Renders the orchestrator's events; use as a context manager around the run.

    Parameters
    ----------
    metric : str
        The metric shown after each round.
    enabled : bool
        False prints nothing (for tests and libraries).
    file : text stream, optional
        Where to write (default: ``sys.stderr``). A terminal gets the progress bar; anything else gets
        one plain line per round.
    """

    def __init__(self, metric: str, enabled: bool = True, file: TextIO | None = None) -> None:
        self.metric = metric
        self.enabled = enabled
        self.file = sys.stderr if file is None else file
        self.console = Console(file=self.file)
        self.live = enabled and self.console.is_terminal
        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                  TextColumn("{task.fields[status]}"), console=self.console,
                                  disable=not self.live, transient=False)
        self._task: Any = None
        self._total: int | None = None
        self._unit = "round"

    def __enter__(self) -> RunProgress:
        self._progress.__enter__()
        self._task = self._progress.add_task("setting up", total=None, status="")
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def __call__(self, kind: str, info: Mapping[str, Any]) -> None:
        """Handle one event of :class:`~fedx.flower.server_app.Orchestrator`."""
        if not self.enabled:
            return
        if not self.live:
            self._plain(kind, info)
            return
        p, t = self._progress, self._task
        if kind == "connected":
            p.update(t, description=f"{len(info['institutions'])} institutions connected")
        elif kind == "rounds":
            total, done = int(info["total"]), int(info["start"]) - 1
            p.update(t, description=f"{info.get('unit', 'round')}s", total=total, completed=min(done, total))
            if done >= total:
                self.console.print(_nothing_left(total, str(info.get("unit", "round"))), highlight=False)
        elif kind == "level":
            p.update(t, status=f"tree {info['tree']}/{info['trees']}: level {info['level']}/{info['depth']}")
        elif kind == "resumed":
            self.console.print(_resuming(info))
        elif kind == "round_start":
            p.update(t, status=f"round {info['round']}: training")
        elif kind == "reply":
            p.update(t, status=f"{info['what']}: {info['received']}/{info['expected']} replies")
        elif kind == "round_end":
            p.update(t, advance=1, status=self._round_status(info))
        elif kind == "phase":
            p.update(t, status=str(info.get("what", "")))

    def _plain(self, kind: str, info: Mapping[str, Any]) -> None:
        """One line for each event worth keeping in a log; none for the per-reply updates."""
        if kind == "connected":
            line = f"{len(info['institutions'])} institutions connected: {', '.join(info['institutions'])}"
        elif kind == "rounds":
            self._total = int(info["total"])
            self._unit = str(info.get("unit", "round"))
            start, total = int(info["start"]), int(info["total"])
            line = f"{self._unit}s {start}-{total}" if start <= total else _nothing_left(total, self._unit)
        elif kind == "resumed":
            line = _resuming(info)
        elif kind == "round_end":
            of = f"/{self._total}" if self._total is not None else ""
            status = self._round_status(info)
            seconds = info.get("seconds")
            levels = f", {info['levels']} levels" if "levels" in info else ""   # a tree of a gbdt run
            took = f" ({seconds:.1f} s{levels})" if isinstance(seconds, (int, float)) else ""
            line = f"{self._unit} {info['round']}{of}" + (f": {status}" if status else "") + took
        elif kind == "phase" and info.get("what"):
            line = str(info["what"])
        else:
            return
        self.file.write(line + "\n")
        self.file.flush()

    def _round_status(self, info: Mapping[str, Any]) -> str:
        """The latest metric, epsilon and dropped institutions of a finished round."""
        value = info.get("metrics", {}).get(self.metric)
        shown = f"{self.metric} {value:.4f}" if isinstance(value, (int, float)) else ""
        extra = info.get("privacy", {}).get("epsilon")
        if extra is not None:
            shown += f"  ε={extra:.2f}"
        if info.get("dropped"):
            shown += f"  dropped: {', '.join(info['dropped'])}"
        return shown.strip()


def _resuming(info: Mapping[str, Any]) -> str:
    return f"resuming after {info.get('unit', 'round')} {info['round']} from the checkpoint"


def _nothing_left(total: int, unit: str) -> str:
    """What a resumed run whose checkpoint holds every round (or tree) says instead of an empty range."""
    done = "grown" if unit == "tree" else "run"
    what = f"all {total} {unit}s were" if total != 1 else f"the only {unit} was"
    return f"{what} already {done}; nothing to do"
