"""The HE keys of a run: the server's public key, loaded and checked against the config in one place.

:func:`server_public_key` is how every fedx server gets its public context: a simulated run
(:func:`fedx.run`, :func:`fedx.stats`), ``fedx server`` before it starts its SuperLink, and the ServerApp
that the deployment launches. The key is refused, naming ``security.keys``, when its preset differs from
``security.encryption`` and ``security.he``, or when its clip range is too narrow for client-level DP.

A simulated run also holds the institutions' side: :func:`given_keys` checks that the folder of
``security.keys`` holds the secret key of that public key, and :func:`run_folder_keys` makes fresh keys
in the run folder (with :func:`he_overrides`) when ``security.keys`` is not given.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from .config import Config
from .errors import ConfigError, FedxError

log = logging.getLogger(__name__)


def he_overrides(cfg: Config, n_institutions: int | None = None) -> dict[str, Any]:
    """The settings of fresh HE keys: ``security.he``, with the clip range widened for client-level DP.

    Under client-level DP each bfv-compact value is a clipped update plus its share of the noise, which
    needs the range :func:`dp_clip_range` gives. A ``security.he.clip`` sized for plaintext updates (for
    example 2.0 in the anti-fraud example) would cut the noise, so the range is widened to that bound,
    and the log says so.

    Unless ``security.he.max_clients`` is given, bfv-compact keys hold sums of ``n_institutions`` updates
    (the federation's size, when known), so that every institution keeps the full ``bits`` of precision.
    """
    overrides = cfg.security.he.overrides()
    known = n_institutions if n_institutions is not None else federation_size(cfg)
    if cfg.security.encryption == "bfv-compact" and "max_clients" not in overrides and known is not None:
        overrides["max_clients"] = known
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


def federation_size(cfg: Config) -> int | None:
    """The number of institutions when the config fixes it (``data.institutions``, or
    ``deployment.expected_nodes``), else None: the most updates a bfv-compact sum of a round must hold."""
    n = cfg.n_institutions_hint()
    if n < (1 << 30):
        return n
    deployment = getattr(cfg, "deployment", None)
    return getattr(deployment, "expected_nodes", None)


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


def check_preset(cfg: Config, preset: Any, where: str) -> None:
    """Refuse keys whose preset (an :class:`fedx.he.Preset`) does not fit the config.

    The preset's name must be ``security.encryption``; its clip range must hold the DP noise
    (:func:`dp_clip_range`); and its ``bits`` and ``clip`` must be those of ``security.he`` where given,
    except that client-level DP may widen the clip range (keys made by :func:`he_overrides`).
    ``where`` names the keys in the error (``"security.keys: keys/public.fxk"``).

    Raises
    ------
    ConfigError
    """
    enc = cfg.security.encryption
    if preset.name != enc:
        raise ConfigError(f"{where} holds {preset.name} keys, and security.encryption is {enc}: make keys with "
                          f"`fedx keygen --preset {enc}`")
    he_cfg = cfg.security.he
    taken = set(preset.overridable)
    for key, value in he_cfg.overrides().items():
        if key not in taken:
            raise ConfigError(f"security.he.{key}: {value!r} is not a setting of {enc} keys (they take "
                              f"{', '.join(sorted(taken)) or 'none'}); remove it")
    have_bits, have_clip = getattr(preset, "bits", None), getattr(preset, "clip", None)
    need = dp_clip_range(cfg)
    if need is not None and have_clip is not None and have_clip < need:
        dp = cfg.security.dp
        assert dp is not None
        raise ConfigError(f"{where}: the keys clip values to {have_clip:g}, and client-level DP "
                          f"(security.dp.clip {dp.clip:g}, noise_multiplier {dp.noise_multiplier:g}, "
                          f"federation.min_clients {cfg.federation.min_clients}) needs at least {need:.3g}: make "
                          f"keys with `fedx keygen --preset bfv-compact --clip {math.ceil(need * 100) / 100:g}`")
    if he_cfg.bits is not None and have_bits != he_cfg.bits:
        raise ConfigError(f"{where}: the keys quantize to {have_bits} bits, and security.he.bits is {he_cfg.bits}: "
                          f"make keys with `fedx keygen --preset {enc} --bits {he_cfg.bits}`, or change "
                          f"security.he.bits")
    have_max = getattr(preset, "max_clients", None)
    if he_cfg.max_clients is not None and have_max != he_cfg.max_clients:
        raise ConfigError(f"{where}: the keys hold sums of {have_max} updates (he.max_clients), and "
                          f"security.he.max_clients is {he_cfg.max_clients}: make keys with `fedx keygen --preset "
                          f"{enc} --max-clients {he_cfg.max_clients}`, or change security.he.max_clients")
    known = federation_size(cfg)
    if have_max is not None and known is not None and known > have_max:
        raise ConfigError(f"{where}: the keys hold sums of at most {have_max} updates (he.max_clients), and the "
                          f"federation has {known} institutions: make keys with `fedx keygen --preset {enc} "
                          f"--max-clients {known}`")
    widened = need is not None and he_cfg.clip is not None and need > he_cfg.clip
    if he_cfg.clip is not None and have_clip != he_cfg.clip and not widened:
        raise ConfigError(f"{where}: the keys clip values to {have_clip:g}, and security.he.clip is {he_cfg.clip:g}: "
                          f"make keys with `fedx keygen --preset {enc} --clip {he_cfg.clip:g}`, or change "
                          f"security.he.clip")


def server_public_key(cfg: Config, source: Any = None) -> Any:
    """The server's public context for ``cfg``, checked against it; None when encryption is off.

    Parameters
    ----------
    cfg : Config
        The run's config.
    source : he.PublicContext, str or PathLike, optional
        The public context, a ``public.fxk`` file or its folder (default: ``security.keys``).

    Raises
    ------
    ConfigError
        No ``security.keys`` to read, or keys that do not fit the config (:func:`check_preset`).
    KeyFileError
        No public.fxk there, a secret key passed, or a damaged file.
    """
    if cfg.security.encryption == "none":
        return None
    from . import he

    if source is None:
        if cfg.security.keys is None:
            raise ConfigError(f"security.keys: missing (the folder with public.fxk from `fedx keygen --preset "
                              f"{cfg.security.encryption} --out DIR`)")
        source = cfg.resolve_path(cfg.security.keys)
    public = he.public_context(source, what="security.keys")
    where = "security.keys" if isinstance(source, he.PublicContext) else f"security.keys: {_public_file(source)}"
    check_preset(cfg, public.preset, where)
    return public


def given_keys(cfg: Config) -> tuple[Any, Path] | None:
    """A simulated run's keys from ``security.keys``: the public context and the folder; None when not given.

    The folder must also hold the secret key of that public key: the simulated institutions read it.

    Raises
    ------
    ConfigError, KeyFileError, KeyMismatchError
    """
    if cfg.security.encryption == "none" or cfg.security.keys is None:
        return None
    from . import he

    folder = cfg.resolve_path(cfg.security.keys)
    public = server_public_key(cfg, folder)
    he.load_keys(folder)  # the simulated institutions' secret.fxk belongs to this public.fxk
    return public, folder


def run_folder_keys(cfg: Config, out: Path, n_institutions: int | None = None) -> tuple[Any, Path | None]:
    """Keys kept in a simulated run's folder ``out/keys``: those of the run being resumed, or fresh ones
    (for ``n_institutions`` institutions, :func:`he_overrides`)."""
    if cfg.security.encryption == "none":
        return None, None
    from . import he

    folder = out / "keys"
    if (folder / "public.fxk").exists():
        return server_public_key(cfg, folder), folder
    try:
        keys = he.keygen(cfg.security.encryption, **he_overrides(cfg, n_institutions))
    except FedxError as exc:
        raise ConfigError(f"security.he: {exc}") from None
    keys.save(folder)
    return keys.public, folder


def _public_file(source: str | os.PathLike[str]) -> Path:
    path = Path(source)
    return path / "public.fxk" if path.is_dir() else path
