"""``fedx.run(cfg)`` and ``fedx.stats(cfg)``: simulated federated jobs, from config to result files.

0. The config, the keys, the run folder (:mod:`fedx.run_folder`) and every institution's table
   (:mod:`fedx.data.checks`) are checked; nothing is written and Ray does not start before that.
1. Each institution's table is written to its own file, as if it were that institution's database.
2. With encryption on, keys come from ``security.keys``, or are generated into the run folder.
3. The job runs on Flower's simulation engine (:mod:`fedx.flower.simulation`).
4. For training, the centralized baseline, when asked for, trains on the pooled data (possible only
   in simulation).
5. result.json (or stats.json), CSV tables and PNG plots are written to the run folder.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .config import Config
from .errors import ConfigError, FedxError
from .institution import LocalPolicy, NodeSpec
from .report import RunResult, comparison_table, print_summary, write_result
from .run_folder import RunFolder

log = logging.getLogger(__name__)


def default_out_dir(cfg: Config) -> Path:
    """``runs/<name>-<UTC time>`` under the current folder."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", cfg.name).strip("-") or "run"
    return Path("runs") / f"{slug}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def run(cfg: Config, out_dir: str | Path | None = None, *, progress: bool = True, resume: bool = False,
        force: bool = False, verbose: bool = False, tables: Mapping[str, pd.DataFrame] | None = None
        ) -> RunResult:
    """Run a federated training job in simulation and write its result.

    Parameters
    ----------
    cfg : Config
        From :func:`fedx.load_config`.
    out_dir : str or Path, optional
        The run folder (default ``runs/<name>-<time>``). It receives result.json, history.csv,
        institutions.csv, rounds.png, institutions.png, the server checkpoint, each simulated
        institution's model and audit ledger, and generated keys.
    progress : bool
        Show a progress bar and print the final table.
    resume : bool
        Continue from the checkpoint in ``out_dir`` (after a crash, or with more rounds), under the
        checkpoint's own config: only :data:`fedx.run_folder.RESUMABLE_KEYS` may differ.
    force : bool
        Replace a finished run in ``out_dir`` (without it, a finished run is never overwritten). The new
        run is written beside the old one and replaces it only once it has finished.
    verbose : bool
        Show Flower's and Ray's logs.
    tables : mapping of str to pandas.DataFrame, optional
        Each simulated institution's own table, by name, in place of ``data.source`` (which is then
        not read). Each table stays with its institution, as a file of that institution's alone.

    Returns
    -------
    RunResult

    Raises
    ------
    ConfigError, DataError
        Before anything is written or Ray starts: a bad config or keys, a finished run without
        ``force``, a resume under another config, or an institution's table that does not fit the config
        (:func:`fedx.data.checks.check_tables`).
    """
    if cfg.data.vertical:  # parties with different columns of the same people: fedx.vertical.run
        from .vertical.run import run_vertical

        return run_vertical(cfg, out_dir, progress=progress, resume=resume, force=force, tables=tables)
    from .flower.server_app import Orchestrator
    from .flower.simulation import run_on_simulation
    from .progress import RunProgress
    from .tasks import get_task

    if cfg.task is None:
        raise ConfigError(f"{cfg.source}: task: missing required key (what to learn); a config with only a "
                          f"stats: section runs with `fedx stats`")
    target = Path(out_dir) if out_dir is not None else default_out_dir(cfg)
    folder = RunFolder.plan(cfg, target, "result.json", resume=resume, force=force)
    task = get_task(cfg.task)
    # Everything that can be checked is checked before anything is written or Ray starts.
    given_keys = _given_keys(cfg)
    checked = _checked_tables(cfg, tables, task.target_kind)
    with folder.writing() as out:
        with _simulated_sites(cfg, out, checked, given_keys) as sites, \
                RunProgress(task.primary_metric, enabled=progress) as bar:
            summary = run_on_simulation(
                lambda grid: Orchestrator(cfg, grid, sites.public, out, expected_nodes=len(sites.specs),
                                          on_event=bar, resume=resume).run(),
                sites.specs, verbose=verbose)
            baselines: dict[str, Any] = {}
            central_per_inst: dict[str, dict[str, Any]] = {}
            if summary.local_baselines:
                baselines["local"] = summary.local_baselines
                baselines["local_combined"] = summary.local_combined
            if "centralized" in cfg.report.baselines:
                from .baselines import centralized

                bar("phase", {"what": "centralized baseline (pooled data, simulation only)"})
                baselines["centralized"], central_per_inst = centralized(cfg, sites.tables,
                                                                         features=summary.features)
        result = RunResult(
            metrics=summary.metrics, history=summary.history, out_dir=out,
            per_institution=summary.per_institution, baselines=baselines,
            comparison=comparison_table(summary.per_institution, baselines, central_per_inst),
            model={"task": cfg.task, "kind": cfg.model.kind,
                   "paths": {k: folder.final_path(v) for k, v in summary.model_paths.items()},
                   **(summary.model_report or {})},
            privacy=_privacy_report(cfg, sites.public, summary),
            config=cfg.to_dict(), institutions=summary.institutions,
        )
        write_result(result, plots=cfg.report.plots, primary_metric=task.primary_metric)
    result.out_dir = folder.target
    if progress:
        shown = [m for m in task.metric_names if m not in (task.primary_metric, "n", "base_rate")]
        print_summary(result, [task.primary_metric, *shown[:3]])
    return result


def stats(cfg: Config, out_dir: str | Path | None = None, *, progress: bool = True, force: bool = False,
          verbose: bool = False) -> dict[str, Any]:
    """Compute the config's ``stats:`` section across simulated institutions; write stats.json.

    As with :func:`run`, a finished result in ``out_dir`` is replaced (``force``) only once the new one
    is written, and a failed run leaves nothing it created behind.

    Returns
    -------
    dict
        The body of stats.json (see docs/analytics.md).
    """
    from .analytics import print_stats, write_stats
    from .flower.simulation import run_on_simulation
    from .flower.stats_server import StatsOrchestrator
    from .progress import RunProgress

    if cfg.stats is None:
        raise ConfigError(f"{cfg.source}: stats: missing section (the statistics to compute)")
    target = Path(out_dir) if out_dir is not None else default_out_dir(cfg)
    folder = RunFolder.plan(cfg, target, "stats.json", resume=False, force=force, resumable=False)
    given_keys = _given_keys(cfg)
    checked = _checked_tables(cfg, None, None)
    with folder.writing() as out:
        with _simulated_sites(cfg, out, checked, given_keys) as sites, RunProgress("", enabled=progress) as bar:
            result = run_on_simulation(
                lambda grid: StatsOrchestrator(cfg, grid, sites.public, expected_nodes=len(sites.specs),
                                               on_event=bar,
                                               receipts=out / "receipts.jsonl" if cfg.security.audit else None).run(),
                sites.specs, verbose=verbose)
        result["privacy"] = {**result.get("privacy", {}), "encryption": cfg.security.encryption}
        write_stats(result, out, plots=cfg.report.plots)
    if progress:
        print_stats(result)
    return result


@dataclass
class _Sites:
    tables: dict[str, pd.DataFrame]
    specs: list[NodeSpec]
    public: Any


def _checked_tables(cfg: Config, given: Mapping[str, pd.DataFrame] | None, target_kind: str | None
                    ) -> dict[str, pd.DataFrame]:
    """Each institution's table, checked against the config (:func:`fedx.data.checks.check_tables`)."""
    from .data.checks import check_tables
    from .data.institutions import institution_tables

    if given is None:
        tables = institution_tables(cfg)
        source = str(cfg.data.source)
        origin = source if source.startswith("synthetic/") else Path(source).name
        sources = {name: origin for name in tables}
    else:
        # Rows are named by their position in the caller's frame, as in the institution's own file.
        tables = {name: df.reset_index(drop=True) for name, df in _given_tables(given).items()}
        sources = {name: f"tables[{name!r}]" for name in tables}
    check_tables(cfg, tables, sources, target_kind)
    if cfg.stats is not None and target_kind is None:
        from .analytics import StatsPlan
        from .data.checks import table_label
        from .data.tables import mask_na_codes

        plan = StatsPlan.from_config(cfg.stats, seed=cfg.seed)
        for name, df in tables.items():
            plan.check_columns(mask_na_codes(df, cfg.data.na_values), table_label(name, sources[name]))
    return tables


@contextmanager
def _simulated_sites(cfg: Config, out: Path, tables: dict[str, pd.DataFrame],
                     given_keys: tuple[Any, Path] | None) -> Iterator[_Sites]:
    """Each institution's table in a file of its own (deleted afterwards), and the keys."""
    public, keys_dir = given_keys if given_keys is not None else _run_keys(cfg, out)
    data_dir = Path(tempfile.mkdtemp(prefix="fedx-sites-"))
    try:
        specs = []
        for name, df in tables.items():
            path = data_dir / f"{_safe(name)}.parquet"
            df.to_parquet(path, index=False)
            specs.append(NodeSpec(name=name, data=path, out_dir=out / "institutions" / _safe(name), keys=keys_dir,
                                  policy=LocalPolicy()))
        yield _Sites(tables, specs, public)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _given_tables(given: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    if not isinstance(given, Mapping) or not given:
        raise ConfigError("tables: expected a mapping of institution name to pandas DataFrame, with at least one")
    out = {}
    for name, df in given.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"tables: institution names must be non-empty strings, got {name!r}")
        if not isinstance(df, pd.DataFrame) or df.empty:
            raise ConfigError(f"tables[{name!r}]: expected a non-empty pandas DataFrame")
        out[name] = df
    return out


def _privacy_report(cfg: Config, public: Any, summary: Any) -> dict[str, Any]:
    """result.json's ``privacy``: the encryption preset, and epsilon where differential privacy is on."""
    out: dict[str, Any] = {"encryption": cfg.security.encryption}
    if public is not None:
        from . import he

        out["preset"] = he.describe(public.preset)
    dp = cfg.security.dp
    if dp is not None:
        out.update(level=dp.level, **summary.privacy)
        out.setdefault("delta", dp.delta)
        out.setdefault("noise_multiplier", dp.noise_multiplier)
        out.setdefault("clip", dp.clip)
        per = [row["privacy"]["per_institution_epsilon"] for row in summary.history
               if "per_institution_epsilon" in row.get("privacy", {})]
        if per:
            out["per_institution_epsilon"] = per[-1]
            out["epsilon"] = max(per[-1].values())
        out["stopped_by_budget"] = summary.stopped_by_budget
    return out


def he_overrides(cfg: Config) -> dict[str, Any]:
    """The settings of fresh HE keys: ``security.he``, with the clip range widened for client-level DP.

    Under client-level DP each bfv-compact value is a clipped update plus its share of the noise, which
    needs the range :func:`dp_clip_range` gives. A ``security.he.clip`` sized for plaintext updates (for
    example 2.0 in the anti-fraud example) would cut the noise, so the range is widened to that bound,
    and the log says so.
    """
    overrides = cfg.security.he.overrides()
    need = dp_clip_range(cfg)
    if need is None:
        return overrides
    have = overrides.get("clip")
    if have is None:
        overrides["clip"] = max(1.0, need)
    elif have < need:
        dp = cfg.security.dp
        assert dp is not None
        log.warning("security.he.clip %g is too narrow for the DP noise (security.dp.clip %g, noise_multiplier %g, "
                    "federation.min_clients %d): the keys clip values to %.3g instead", have, dp.clip,
                    dp.noise_multiplier, cfg.federation.min_clients, need)
        overrides["clip"] = need
    return overrides


def dp_clip_range(cfg: Config) -> float | None:
    """The bfv-compact clip range that client-level DP needs (None when DP or bfv-compact is off).

    It is :func:`fedx.privacy.dp.noised_value_bound` at ``federation.min_clients``, the fewest
    institutions a round can have (fewer institutions carry larger noise shares).
    """
    dp = cfg.security.dp
    if dp is None or dp.level != "client" or cfg.security.encryption != "bfv-compact":
        return None
    from .privacy.dp import noised_value_bound

    return noised_value_bound(dp.clip, dp.noise_multiplier, cfg.federation.min_clients)


def _given_keys(cfg: Config) -> tuple[Any, Path] | None:
    """The server's public context and the keys folder of ``security.keys``, checked; None when not given."""
    if cfg.security.encryption == "none" or cfg.security.keys is None:
        return None
    from . import he

    folder = cfg.resolve_path(cfg.security.keys)
    if not (folder / "public.fxk").exists():
        raise ConfigError(f"security.keys: {folder} holds no public.fxk (create keys with "
                          f"`fedx keygen --preset {cfg.security.encryption} --out {folder}`)")
    keys = he.load_keys(folder)
    if keys.public.preset.name != cfg.security.encryption:
        raise ConfigError(f"security.keys: {folder} holds {keys.public.preset.name} keys, and "
                          f"security.encryption is {cfg.security.encryption}")
    need, have = dp_clip_range(cfg), getattr(keys.public.preset, "clip", None)
    if need is not None and have is not None and have < need:
        dp = cfg.security.dp
        assert dp is not None
        raise ConfigError(f"security.keys: the keys in {folder} clip values to {have:g}, and client-level DP "
                          f"(security.dp.clip {dp.clip:g}, noise_multiplier {dp.noise_multiplier:g}, "
                          f"federation.min_clients {cfg.federation.min_clients}) needs at least {need:.3g}: make "
                          f"keys with `fedx keygen --preset bfv-compact --clip {math.ceil(need * 100) / 100:g} "
                          f"--out {folder}`")
    return keys.public, folder


def _run_keys(cfg: Config, out: Path) -> tuple[Any, Path | None]:
    """Keys kept in the run folder: those of the run being resumed, or fresh ones."""
    if cfg.security.encryption == "none":
        return None, None
    from . import he

    folder = out / "keys"
    if (folder / "public.fxk").exists():
        return he.load_keys(folder).public, folder
    try:
        keys = he.keygen(cfg.security.encryption, **he_overrides(cfg))
    except FedxError as exc:
        raise ConfigError(f"security.he: {exc}") from None
    keys.save(folder)
    return keys.public, folder


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "institution"
