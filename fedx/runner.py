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
import os
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

from . import run_keys
from .config import Config, load_config
from .errors import ConfigError
from .institution import LocalPolicy, NodeSpec
from .report import RunResult, print_run_summary
from .run_folder import RunFolder, option

log = logging.getLogger(__name__)


def default_out_dir(cfg: Config) -> Path:
    """``runs/<name>-<UTC time>`` under the current folder."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", cfg.name).strip("-") or "run"
    return Path("runs") / f"{slug}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def run(config: str | os.PathLike[str] | Mapping[str, Any] | Config, out_dir: str | os.PathLike[str] | None = None,
        *, tables: pd.DataFrame | Mapping[str, pd.DataFrame] | None = None, progress: bool = True,
        resume: bool = False, force: bool = False, verbose: bool = False) -> RunResult:
    """Run a federated training job in simulation and write its result.

    Parameters
    ----------
    config : str, path-like, dict or Config
        The YAML file, a dict of the same sections (:func:`fedx.config_from_dict`), or a Config from
        :func:`fedx.load_config` (which applies overrides).
    out_dir : str or path-like, optional
        The run folder (default ``runs/<name>-<time>``). It receives result.json, history.csv,
        institutions.csv, rounds.png, institutions.png, the server checkpoint, each simulated
        institution's model and audit ledger, and generated keys.
    tables : pandas.DataFrame, or mapping of str to pandas.DataFrame, optional
        The institutions' tables, in place of ``data.source`` (which is then not read): one DataFrame,
        split by its ``data.split_by`` column, or each institution's table by name. Each table stays
        with its institution, as a file of that institution's alone. The column that names the
        institution is never a feature (:func:`fedx.data.institutions.given_tables`).
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

    Returns
    -------
    RunResult
        The metrics, history, per-institution results and baselines, as result.json holds them.

    Raises
    ------
    ConfigError, DataError
        Before anything is written or Ray starts: a bad config or keys, a finished run without
        ``force``, a resume under another config, or an institution's table that does not fit the config
        (:func:`fedx.data.checks.check_tables`).
    TypeError
        For a ``config`` that is none of the above.

    Examples
    --------
    >>> result = fedx.run("examples/finance_antifraud/fedx.yaml", "runs/fraud")     # doctest: +SKIP
    >>> result = fedx.run(cfg_dict, "runs/banks", tables={"bank_a": df_a, "bank_b": df_b})  # doctest: +SKIP
    """
    from .flower.server_app import Orchestrator
    from .flower.simulation import run_on_simulation
    from .progress import RunProgress
    from .tasks import get_task

    cfg = load_config(config)
    if cfg.data.vertical:  # parties with different columns of the same people: fedx.vertical.run
        from .vertical.run import run_vertical

        return run_vertical(cfg, out_dir, progress=progress, resume=resume, force=force, tables=tables)
    cfg, given = _given_tables(cfg, tables)
    if cfg.task is None:
        raise ConfigError(f"{cfg.source}: task: missing required key (what to learn); a config with only a "
                          f"stats: section runs with {option('stats')}")
    target = _target(cfg, out_dir, resume)
    folder = RunFolder.plan(cfg, target, "result.json", resume=resume, force=force)
    task = get_task(cfg.task)
    # Everything that can be checked is checked before anything is written or Ray starts.
    given_keys = run_keys.given_keys(cfg)
    checked = _checked_tables(cfg, given, task.target_kind)
    if cfg.model.kind == "gbdt":  # gradient-boosted trees from summed histograms: fedx.trees.run
        from .trees.run import run_gbdt

        return run_gbdt(cfg, folder, checked, given_keys, progress=progress)
    with folder.writing() as out:
        with _simulated_sites(cfg, out, checked, given_keys) as sites, \
                RunProgress(task.primary_metric, enabled=progress) as bar:
            summary = run_on_simulation(
                lambda grid: Orchestrator(cfg, grid, sites.public, out, expected_nodes=len(sites.specs),
                                          on_event=bar, resume=resume).run(),
                sites.specs, verbose=verbose)
            centralized = central_per_inst = None
            if "centralized" in cfg.report.baselines:
                from .baselines import centralized as centralized_baseline

                bar("phase", {"what": "centralized baseline (pooled data, simulation only)"})
                centralized, central_per_inst = centralized_baseline(cfg, sites.tables, features=summary.features)
        result = summary.write_result(cfg, out, sites.public, centralized=centralized,
                                      centralized_per_institution=central_per_inst, final_path=folder.final_path)
    result.out_dir = folder.target
    if progress:
        print_run_summary(result, task)
    return result


def stats(config: str | os.PathLike[str] | Mapping[str, Any] | Config, out_dir: str | os.PathLike[str] | None = None,
          *, tables: pd.DataFrame | Mapping[str, pd.DataFrame] | None = None, progress: bool = True,
          force: bool = False, verbose: bool = False) -> dict[str, Any]:
    """Compute the config's ``stats:`` section across simulated institutions and write stats.json.

    As with :func:`run`, a finished result in ``out_dir`` is replaced (``force``) only once the new one
    is written, and a failed run leaves nothing it created behind.

    Parameters
    ----------
    config : str, path-like, dict or Config
        As for :func:`run`; it needs a ``stats:`` section (docs/analytics.md).
    out_dir : str or path-like, optional
        The output folder (default ``runs/<name>-<time>``): stats.json, its tables and plots, the
        server's receipts and each institution's audit ledger.
    tables : pandas.DataFrame, or mapping of str to pandas.DataFrame, optional
        The institutions' tables, in place of ``data.source``, as for :func:`run`.
    progress : bool
        Show progress and print the statistics.
    force : bool
        Replace a finished result in ``out_dir``.
    verbose : bool
        Show Flower's and Ray's logs.

    Returns
    -------
    dict
        The body of stats.json: each statistic, with the suppressed cells named (docs/analytics.md).

    Raises
    ------
    ConfigError, DataError, PolicyError
        A bad config, a finished result without ``force``, a table that lacks a column the statistics
        need, or a query that the minimum-cohort policy refuses.
    TypeError
        For a ``config`` that is none of the above.
    """
    from .analytics import print_stats, write_stats
    from .flower.simulation import run_on_simulation
    from .flower.stats_server import StatsOrchestrator
    from .progress import RunProgress

    cfg = load_config(config)
    cfg, given = _given_tables(cfg, tables)
    if cfg.stats is None:
        raise ConfigError(f"{cfg.source}: stats: missing section (the statistics to compute)")
    target = _target(cfg, out_dir, False)
    folder = RunFolder.plan(cfg, target, "stats.json", resume=False, force=force, resumable=False)
    given_keys = run_keys.given_keys(cfg)
    checked = _checked_tables(cfg, given, None)
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


def _target(cfg: Config, out_dir: str | os.PathLike[str] | None, resume: bool) -> Path:
    if out_dir is not None:
        return Path(out_dir)
    if resume:
        raise ConfigError(f"{option('resume')} needs {option('out')}: the folder of the run to continue")
    return default_out_dir(cfg)


_Given = tuple[dict[str, pd.DataFrame], dict[str, str]]


def _given_tables(cfg: Config, tables: pd.DataFrame | Mapping[str, pd.DataFrame] | None
                  ) -> tuple[Config, _Given | None]:
    """The caller's tables and how errors name them; the config then names their institution column.

    See :func:`fedx.data.institutions.given_tables`. This comes before the run folder is planned, so
    that a resumed run compares the config that the run was made under.
    """
    if tables is None:
        return cfg, None
    from .data.institutions import given_tables

    # Rows are named by their position in the caller's frame, as in the institution's own file.
    cfg, named = given_tables(cfg, tables)
    one = isinstance(tables, pd.DataFrame)
    return cfg, (named, {name: "tables" if one else f"tables[{name!r}]" for name in named})


def _checked_tables(cfg: Config, given: _Given | None, target_kind: str | None) -> dict[str, pd.DataFrame]:
    """Each institution's table, checked against the config (:func:`fedx.data.checks.check_tables`)."""
    from .data.checks import check_tables
    from .data.institutions import institution_tables

    if given is None:
        tables = institution_tables(cfg)
        source = str(cfg.data.source)
        origin = source if source.startswith("synthetic/") else Path(source).name
        sources = {name: origin for name in tables}
    else:
        tables, sources = given
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
    public, keys_dir = given_keys if given_keys is not None else run_keys.run_folder_keys(cfg, out, len(tables))
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


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "institution"
