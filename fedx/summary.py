"""What the server knows at the end of a federated training run, and the one way it becomes result.json.

Both ends of a run finish with :meth:`FederationSummary.write_result`: the simulation
(:func:`fedx.run`) and the ServerApp of a deployment (``fedx.flower.apps``). So both result.json files
hold the same sections, the same ``privacy`` report (the encryption preset, and epsilon where
differential privacy is on) and the same ``primary_metric``. Only what a simulation alone can add
differs: the centralized baseline, trained on the pooled data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config
from .report import RunResult, comparison_table, write_result


@dataclass
class FederationSummary:
    """What the server knows at the end of a run (everything in it may leave the institutions)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    per_institution: dict[str, dict[str, Any]] = field(default_factory=dict)
    local_baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    local_combined: dict[str, Any] = field(default_factory=dict)
    institutions: dict[str, dict[str, Any]] = field(default_factory=dict)
    model_paths: dict[str, str] = field(default_factory=dict)
    final_params: list[np.ndarray] | None = None
    features: dict[str, str] | None = None
    model_report: dict[str, Any] | None = None
    stopped_by_budget: bool = False
    privacy: dict[str, Any] = field(default_factory=dict)
    resumed_from: int = 0

    def write_result(self, cfg: Config, out_dir: str | Path, public: Any, *,
                     centralized: Mapping[str, Any] | None = None,
                     centralized_per_institution: Mapping[str, Mapping[str, Any]] | None = None,
                     final_path: Callable[[str], str] | None = None) -> RunResult:
        """Write the run's result.json, CSV tables and plots into ``out_dir``; return what was written.

        Parameters
        ----------
        cfg : Config
            The run's config.
        out_dir : str or Path
            The folder that receives result.json.
        public : he.PublicContext or None
            The server's public context (None without encryption): its preset is described in ``privacy``.
        centralized, centralized_per_institution : mapping, optional
            The centralized baseline's metrics, overall and on each institution's test split (simulation only).
        final_path : callable, optional
            Where a model path reported by an institution will be once the run is committed (a simulated
            run writes into a working folder first).
        """
        result = self.result(cfg, out_dir, public, centralized=centralized,
                             centralized_per_institution=centralized_per_institution, final_path=final_path)
        write_result(result, plots=cfg.report.plots, primary_metric=result.primary_metric)
        return result

    def result(self, cfg: Config, out_dir: str | Path, public: Any, *,
               centralized: Mapping[str, Any] | None = None,
               centralized_per_institution: Mapping[str, Mapping[str, Any]] | None = None,
               final_path: Callable[[str], str] | None = None) -> RunResult:
        """The :class:`~fedx.report.RunResult` that :meth:`write_result` writes (see there)."""
        from .tasks import get_task

        baselines: dict[str, Any] = {}
        if self.local_baselines:
            baselines["local"] = self.local_baselines
            baselines["local_combined"] = self.local_combined
        if centralized is not None:
            baselines["centralized"] = dict(centralized)
        place = final_path or str
        return RunResult(
            metrics=self.metrics, history=self.history, out_dir=Path(out_dir),
            per_institution=self.per_institution, baselines=baselines,
            comparison=comparison_table(self.per_institution, baselines, centralized_per_institution),
            model={"task": cfg.task, "kind": cfg.model.kind,
                   "paths": {k: place(v) for k, v in self.model_paths.items()}, **(self.model_report or {})},
            privacy=self.privacy_section(cfg, public), config=cfg.to_dict(), institutions=self.institutions,
            primary_metric=get_task(cfg.task).primary_metric if cfg.task else None,
        )

    def privacy_section(self, cfg: Config, public: Any) -> dict[str, Any]:
        """result.json's ``privacy``: the encryption preset, and epsilon where differential privacy is on."""
        out: dict[str, Any] = {"encryption": cfg.security.encryption}
        if public is not None:
            from . import he

            out["preset"] = he.describe(public.preset)
        dp = cfg.security.dp
        if dp is not None:
            out.update(level=dp.level, **self.privacy)
            out.setdefault("delta", dp.delta)
            out.setdefault("noise_multiplier", dp.noise_multiplier)
            out.setdefault("clip", dp.clip)
            per = [row["privacy"]["per_institution_epsilon"] for row in self.history
                   if "per_institution_epsilon" in row.get("privacy", {})]
            if per:
                out["per_institution_epsilon"] = per[-1]
                out["epsilon"] = max(per[-1].values())
            out["stopped_by_budget"] = self.stopped_by_budget
        return out
