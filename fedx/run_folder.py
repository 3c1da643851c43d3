"""A run's output folder: nothing finished is ever lost, and a failed start leaves nothing behind.

- A folder that holds a finished run (result.json, stats.json) or an unfinished one (a checkpoint) is
  never written to without ``force`` (replace it) or ``resume`` (continue it).
- With ``force``, the new run is written beside the old one, in a hidden sibling folder, and replaces
  the old one only when it has finished. A new run that fails leaves the old one byte for byte intact.
- A new run that fails before it has a checkpoint to resume from removes what it created (the folder
  itself, when it did not exist) and nothing that was there before. One that fails later keeps its
  checkpoint, so that ``resume`` continues it.
- ``resume`` continues the checkpoint in place, and only under the config it was made with: every key
  but :data:`RESUMABLE_KEYS` must be the same.

Error messages name the options as the caller spells them: ``force=True`` from Python, ``--force``
from the command line (:func:`cli_spelling`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from .config import Config
from .errors import ConfigError

#: Config keys that may change when a run is resumed: more rounds, a longer timeout, plots or none.
RESUMABLE_KEYS: tuple[str, ...] = ("federation.rounds", "federation.timeout", "report.plots", "model.trees")

_PYTHON = {"force": "force=True", "resume": "resume=True", "out": "out_dir", "run": "fedx.run", "stats": "fedx.stats"}
_CLI = {"force": "--force", "resume": "--resume", "out": "--out", "run": "`fedx run`", "stats": "`fedx stats`"}
_SPELLING: ContextVar[Mapping[str, str]] = ContextVar("fedx_option_spelling", default=_PYTHON)


@contextmanager
def cli_spelling() -> Iterator[None]:
    """Within this block, errors name the command line's options (``--force``) instead of Python's."""
    token = _SPELLING.set(_CLI)
    try:
        yield
    finally:
        _SPELLING.reset(token)


def option(name: str) -> str:
    """``force`` as the caller spells it: ``force=True`` or ``--force``."""
    return _SPELLING.get()[name]


def config_digest(cfg: Config | Mapping[str, Any]) -> str:
    """sha256 of the config without :data:`RESUMABLE_KEYS`: a checkpoint resumes only under the same digest."""
    return _digest(_flat(cfg.to_dict() if isinstance(cfg, Config) else cfg), RESUMABLE_KEYS)


def legacy_config_digest(cfg: Config) -> str:
    """The digest that checkpoints written before :data:`RESUMABLE_KEYS` existed carry (only rounds left out)."""
    doc = cfg.to_dict()
    doc.get("federation", {}).pop("rounds", None)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _digest(flat: Mapping[str, Any], skip: tuple[str, ...]) -> str:
    kept = {k: v for k, v in flat.items() if k not in skip}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def _flat(doc: Any, prefix: str = "") -> dict[str, Any]:
    """``{"federation": {"rounds": 3}}`` -> ``{"federation.rounds": 3}`` (lists stay values)."""
    if not isinstance(doc, Mapping) or (prefix and not doc):
        return {prefix: doc}
    out: dict[str, Any] = {}
    for key, value in doc.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


class RunFolder:
    """Where one run writes (see the module's docstring).

    Build it with :meth:`plan`, which checks and writes nothing; :meth:`writing` then creates the folder
    the run writes into, and commits or rolls it back.
    """

    def __init__(self, target: Path, mode: str, keep_if: str | None) -> None:
        self.target = target
        self.mode = mode            # "new", "replace" or "resume"
        self.keep_if = keep_if      # a file whose presence makes a failed new run worth keeping
        self.work = target

    @classmethod
    def plan(cls, cfg: Config, target: str | Path, result_name: str, *, resume: bool, force: bool,
             resumable: bool = True) -> RunFolder:
        """Decide how the run writes into ``target``, refusing what would lose work.

        Raises
        ------
        ConfigError
            A finished or unfinished run without ``force``; ``resume`` without a checkpoint or under
            a config that differs from the checkpoint's (naming the keys).
        """
        out = Path(target)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"{out}: is a file; {option('out')} names the folder of the run")
        checkpoint = out / "checkpoint" / "index.json"
        keep_if = "checkpoint/index.json" if resumable else None
        if resume:
            if force:
                raise ConfigError(f"give {option('resume')} (continue the run in {out}) or {option('force')} "
                                  f"(replace it), not both")
            if not checkpoint.exists():
                raise ConfigError(f"{out}: holds no checkpoint to resume (checkpoint/index.json); run without "
                                  f"{option('resume')} to start a new run")
            check_resume(cfg, out)
            return cls(out, "resume", keep_if)
        if (out / result_name).exists() or (out / "checkpoint").exists():
            finished = (out / result_name).exists()
            if not force:
                if finished:
                    more = f", or {option('resume')} to continue it with more rounds" if resumable else ""
                    raise ConfigError(f"{out}: holds a finished run; choose another {option('out')}, or pass "
                                      f"{option('force')} to replace it{more}")
                if not resumable:
                    raise ConfigError(f"{out}: holds an unfinished run of another kind (a checkpoint), which this "
                                      f"run cannot continue; choose another {option('out')}, or pass "
                                      f"{option('force')} to replace it")
                raise ConfigError(f"{out}: holds an unfinished run; pass {option('resume')} to continue it, or "
                                  f"{option('force')} to start over")
            return cls(out, "replace", keep_if)
        return cls(out, "new", keep_if)

    @contextmanager
    def writing(self) -> Iterator[Path]:
        """The folder to write into; on success the run is in :attr:`target`, on failure rolled back."""
        if self.mode == "resume":
            yield self.target
            return
        if self.mode == "replace":
            self.work = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.new-", dir=self.target.parent))
            try:
                yield self.work
            except BaseException:
                shutil.rmtree(self.work, ignore_errors=True)
                raise
            self._swap()
            return
        created = _missing_ancestors(self.target)
        before = set(os.listdir(self.target)) if self.target.exists() else set()
        self.target.mkdir(parents=True, exist_ok=True)
        try:
            yield self.target
        except BaseException:
            if self.keep_if is None or not (self.target / self.keep_if).exists():
                _remove_new(self.target, created, before)
            raise

    def final_path(self, path: str | Path) -> str:
        """Where ``path``, written under the working folder, is once the run is committed."""
        p = Path(path)
        try:
            return str(self.target / p.relative_to(self.work))
        except ValueError:
            try:
                return str(self.target / p.resolve().relative_to(self.work.resolve()))
            except ValueError:
                return str(p)

    def _swap(self) -> None:
        old = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.old-", dir=self.target.parent))
        os.replace(self.target, old / "run")
        os.replace(self.work, self.target)
        shutil.rmtree(old, ignore_errors=True)
        self.work = self.target


def check_resume(cfg: Config, out: Path) -> None:
    """Refuse to resume the checkpoint in ``out`` under a config that differs from its own.

    Raises
    ------
    ConfigError
        Naming the keys that differ (only :data:`RESUMABLE_KEYS` may), or fewer rounds than done.
    """
    index = json.loads((out / "checkpoint" / "index.json").read_text())
    done = int(index.get("round", 0))
    if index.get("kind") == "gbdt" and cfg.model.trees < done:
        raise ConfigError(f"model.trees: {cfg.model.trees} is fewer than the {done} tree(s) the run in {out} has "
                          f"grown; resume with model.trees >= {done}")
    if index.get("kind") != "gbdt" and cfg.federation.rounds < done:
        raise ConfigError(f"federation.rounds: {cfg.federation.rounds} is fewer than the {done} round(s) the run in "
                          f"{out} has completed; resume with federation.rounds >= {done}")
    theirs = index.get("config")
    if theirs is None and (out / "result.json").exists():
        theirs = json.loads((out / "result.json").read_text()).get("config")
    if theirs is not None:
        mine, old = _flat(cfg.to_dict()), _flat(theirs)
        differ = sorted(k for k in set(mine) | set(old) if k not in RESUMABLE_KEYS and mine.get(k) != old.get(k))
        if differ:
            shown = ", ".join(f"{k} ({_show(old.get(k))} -> {_show(mine.get(k))})" for k in differ[:6])
            raise ConfigError(f"{out}: the checkpoint was made under another config: {shown}"
                              f"{' ...' if len(differ) > 6 else ''}. {option('resume')} continues a run only under "
                              f"its own config (only {', '.join(RESUMABLE_KEYS)} may change); pass "
                              f"{option('force')} to replace the run, or choose another {option('out')}")
        return
    if index.get("config_digest") not in (config_digest(cfg), legacy_config_digest(cfg)):
        raise ConfigError(f"{out}: the checkpoint was made under another config (its digest differs; it does not "
                          f"record which keys). Pass {option('force')} to replace the run, or choose another "
                          f"{option('out')}")


def _show(value: Any) -> str:
    return "unset" if value is None else json.dumps(value, default=str)


def _missing_ancestors(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, outermost last."""
    out = []
    p = path
    while not p.exists():
        out.append(p)
        if p.parent == p:
            break
        p = p.parent
    return out


def _remove_new(target: Path, created: list[Path], before: set[str]) -> None:
    """Undo a failed new run: remove the folders it created, or the entries it added to an existing one."""
    if created:
        shutil.rmtree(created[-1], ignore_errors=True)
        return
    if not target.exists():
        return
    for name in set(os.listdir(target)) - before:
        p = target / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
