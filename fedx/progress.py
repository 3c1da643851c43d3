"""Progress of a run in the terminal: a rich progress bar over the rounds, with the latest metric."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    """

    def __init__(self, metric: str, enabled: bool = True) -> None:
        self.metric = metric
        self.enabled = enabled
        self.console = Console(stderr=True)
        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                  TextColumn("{task.fields[status]}"), console=self.console,
                                  disable=not enabled, transient=False)
        self._task: Any = None

    def __enter__(self) -> RunProgress:
        self._progress.__enter__()
        self._task = self._progress.add_task("setting up", total=None, status="")
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def __call__(self, kind: str, info: Mapping[str, Any]) -> None:
        """Handle one event of :class:`~fedx.flower.server_app.Orchestrator`."""
        p, t = self._progress, self._task
        if kind == "connected":
            p.update(t, description=f"{len(info['institutions'])} institutions connected")
        elif kind == "rounds":
            p.update(t, description="rounds", total=info["total"], completed=info["start"] - 1)
        elif kind == "resumed":
            self.console.print(f"resuming after round {info['round']} from the checkpoint")
        elif kind == "round_start":
            p.update(t, status=f"round {info['round']}: training")
        elif kind == "reply":
            p.update(t, status=f"{info['what']}: {info['received']}/{info['expected']} replies")
        elif kind == "round_end":
            value = info["metrics"].get(self.metric)
            shown = f"{self.metric} {value:.4f}" if isinstance(value, (int, float)) else ""
            extra = info.get("privacy", {}).get("epsilon")
            if extra is not None:
                shown += f"  ε={extra:.2f}"
            if info.get("dropped"):
                shown += f"  dropped: {', '.join(info['dropped'])}"
            p.update(t, advance=1, status=shown)
        elif kind == "phase":
            p.update(t, status=str(info.get("what", "")))
