"""YAML -> typed config: reading files (duplicate keys refused), overrides, type coercion and checks."""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from ..errors import ConfigError
from .rules import (
    _bool_hint,
    _check_range,
    _describe,
    _is_table,
    _join,
    _range,
    _show,
    _table_hint,
)
from .sections import Config, NodeConfig


def load_node_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> NodeConfig:
    """Read and validate a node file (see :class:`NodeConfig`)."""
    raw, p = _read_yaml(path)
    data = _deep_copy(raw)
    for key, value in (overrides or {}).items():
        _apply_override(data, key, value, str(p))
    try:
        node = _build(NodeConfig, data, "")
        node.base_dir = p.resolve().parent
        _check_tree(node, "")
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    return node


def load_config(config: str | os.PathLike[str] | Mapping[str, Any] | Config,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Read and validate a config: a YAML file, a dict, or a :class:`Config` already loaded.

    Parameters
    ----------
    config : str, path-like, mapping or Config
        The YAML file, whose relative data and key paths are resolved against its folder; or a dict
        of the same sections (see :func:`config_from_dict`), whose relative paths are resolved against
        the current folder; or a Config, returned as it is when there are no overrides.
    overrides : mapping, optional
        ``{"federation.rounds": 3}``: dotted key paths, as ``--set`` takes them. String values are
        parsed as YAML.

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        Naming the file, the key path and what was expected.
    TypeError
        When ``config`` is none of the above.
    """
    if isinstance(config, Config):
        if not overrides:
            return config
        return config_from_dict(config.to_dict(), overrides=overrides, source=config.source,
                                base_dir=config.base_dir)
    if isinstance(config, Mapping):
        return config_from_dict(config, overrides=overrides)
    if not isinstance(config, (str, os.PathLike)):
        raise TypeError(f"load_config: expected the path of a YAML file, a dict or a fedx.Config, got "
                        f"{_show(config)}{_table_hint(config)}")
    raw, p = _read_yaml(config)
    return config_from_dict(raw, overrides=overrides, source=str(p), base_dir=p.resolve().parent)


def _read_yaml(path: str | Path) -> tuple[dict[str, Any], Path]:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: config file not found")
    if p.is_dir():
        raise ConfigError(f"{p}: expected a YAML file, got a folder")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read config: {exc}") from None
    raw = load_yaml(text, str(p))
    if raw is None:
        raise ConfigError(f"{p}: the config file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of sections at the top, got {type(raw).__name__}")
    return raw, p


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: int, second: int) -> None:
        super().__init__(f"key {key!r} appears twice")
        self.key, self.first, self.second = key, first, second


class DuplicateKeyError(ConfigError):
    """A YAML mapping repeats a key (YAML itself would keep the last value and say nothing)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that repeats a key (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue   # `<<: *base` merges keys that the mapping may then replace, on purpose
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _DuplicateKey(key, seen[key], line)
                    seen[key] = line
                except TypeError:   # an unhashable key: SafeLoader itself refuses it below
                    break
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML text as fedx reads every YAML file: safely, and refusing duplicated keys.

    Raises
    ------
    ConfigError
        Naming ``source``, the line and the problem; for a repeated key, the key and both lines.
    """
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe
    except _DuplicateKey as exc:
        raise DuplicateKeyError(f"{source}: key {exc.key!r} appears twice in one mapping (lines {exc.first} "
                                f"and {exc.second}); YAML would silently keep the second, remove one of them"
                                ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: malformed YAML{where}: {problem}") from None


def config_from_dict(raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None, *,
                     source: str = "<dict>", base_dir: str | os.PathLike[str] = ".") -> Config:
    """Validate a config given as a dict, for example one built in a notebook.

    Parameters
    ----------
    raw : mapping
        The sections of the config, as its YAML file would hold them (``{"task": "fraud", "data":
        {...}}``). It is not modified.
    overrides : mapping, optional
        Dotted key paths, as in :func:`load_config`.
    source : str
        How error messages name the config (default ``<dict>``).
    base_dir : str or path-like
        The folder that relative data and key paths are relative to (default: the current folder).

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        Naming ``source``, the key path and what was expected.
    """
    if not isinstance(raw, Mapping):
        raise TypeError(f"config_from_dict: expected a mapping of sections, got {_show(raw)}{_table_hint(raw)}")
    data = _deep_copy(raw)
    for key, value in (overrides or {}).items():
        _apply_override(data, key, value, source)
    try:
        cfg = _build(Config, data, "", {"base_dir", "source"})
        cfg.base_dir = Path(base_dir)
        cfg.source = source
        if cfg.name is None:
            cfg.name = Path(source).stem if source != "<dict>" else "run"
        _check_tree(cfg, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return cfg


def parse_override(text: str) -> tuple[str, Any]:
    """Split a CLI ``key.path=value`` override; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected key.path=value, for example federation.rounds=3")
    key, _, value = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text}: the key path is empty")
    if not value.strip():
        return key, None
    try:
        return key, load_yaml(value, f"--set {key}")
    except DuplicateKeyError:
        raise
    except ConfigError:
        return key, value  # not YAML: the text itself


def _apply_override(data: dict[str, Any], key: str, value: Any, source: str) -> None:
    if isinstance(value, str):
        try:
            value = load_yaml(value, f"{source}: override {key}") if value.strip() else None
        except DuplicateKeyError:
            raise
        except ConfigError:
            pass  # not YAML: the text itself

    parts = key.split(".")
    node = data
    for depth, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"{source}: override {key}: {where} is not a section")
        node = nxt
    node[parts[-1]] = value


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _build(cls: type, raw: Any, path: str, internal: set[str] | None = None) -> Any:
    where = path or "the top level"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {_show(raw)}{_table_hint(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in raw:
        if not isinstance(key, str) or key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else f" (expected one of: {', '.join(fields)})"
            raise ConfigError(f"{_join(path, str(key))}: unknown key{hint}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        sub = _join(path, name)
        if name in raw:
            kwargs[name] = _coerce(hints[name], raw[name], sub, f.metadata)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            doc = f.metadata.get("doc")
            raise ConfigError(f"{sub}: missing required key" + (f" ({doc})" if doc else ""))
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, path: str, meta: Mapping[str, Any]) -> Any:
    if tp is not Any and _is_table(value):
        raise ConfigError(f"{path}: expected {_describe(tp)}, got {_show(value)}{_table_hint(value)}")
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        candidates = [a for a in args if a is not type(None)]
        for arg in candidates:
            try:
                return _coerce(arg, value, path, meta)
            except ConfigError:
                continue
        # Report the error of the alternative the value was evidently meant as (a mapping for a
        # section, a list for a list), so that a nested mistake is named precisely.
        for arg in candidates:
            if _same_shape(arg, value):
                _coerce(arg, value, path, meta)
        hint = _bool_hint(value) if str in candidates else ""
        raise ConfigError(f"{path}: expected {_describe(tp)}, got {_show(value)}{hint}")
    if origin is Literal:
        if value not in args:
            near = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            if all(isinstance(a, str) for a in args):
                hint = _bool_hint(value, "value") or hint
            raise ConfigError(f"{path}: expected one of {', '.join(map(str, args))}, got {_show(value)}{hint}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list of {_describe(args[0])}, got {_show(value)}")
        return [_coerce(args[0], v, f"{path}[{i}]", {}) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {_show(value)}")
        return {str(k): _coerce(args[1], v, f"{path}.{k}", {}) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        obj = _build(tp, value, path)
        return obj
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer{_range(meta)}, got {_show(value)}")
        _check_range(value, path, meta, "an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number{_range(meta)}, got {_show(value)}")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{path}: expected a finite number, got {value}")
        _check_range(value, path, meta, "a number")
        return value
    if tp is str:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{path}: expected a non-empty string, got {_show(value)}{_bool_hint(value)}")
        return value
    raise TypeError(f"config field {path} has an unsupported type {tp!r}")  # a bug, not user input


def _same_shape(tp: Any, value: Any) -> bool:
    origin = typing.get_origin(tp)
    if isinstance(value, Mapping):
        return origin is dict or dataclasses.is_dataclass(tp)
    if isinstance(value, list):
        return origin is list
    if isinstance(value, str):
        return tp is str or (origin is Literal and all(isinstance(a, str) for a in typing.get_args(tp)))
    return False


def _check_tree(obj: Any, path: str) -> None:
    """Run each section's cross-field ``check``, children first."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            _check_tree(value, _join(path, f.name))
    if hasattr(obj, "check"):
        obj.check(path)
