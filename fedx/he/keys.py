"""Keys: the institutions' secret context, the server's public context, and their files.

The server's :class:`PublicContext` is the preset and the key fingerprint, nothing else: encryption is
symmetric and the server only adds ciphertexts, so it needs no key at all. It cannot decrypt, and it
cannot encrypt either, so it cannot forge an update under the institutions' keys.

The fingerprint is ``SHA-256(parameter hash, SHA-256(serialized secret key))``: a commitment that binds
blobs to one secret key without revealing anything usable about it. The server's public context carries
the same fingerprint, so institutions and server compare one short text (:func:`fingerprint_text`) to
know that they hold keys of one set: ``fedx keygen``, ``fedx node`` and ``fedx server`` print it.

Files (see :mod:`fedx.he.frame` for the framing): ``secret.fxk`` (mode 0600) holds the preset, the
fingerprint and the SEAL secret key; ``public.fxk`` holds the preset and the fingerprint.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..atomic import write_atomic
from ..errors import HEError, KeyFileError, KeyMismatchError
from . import frame, seal
from .schemes import Preset, get_preset

log = logging.getLogger(__name__)

MAGIC = b"FXHK"
VERSION = 1
SECRET_FILE = "secret.fxk"
PUBLIC_FILE = "public.fxk"


def fingerprint(preset: Preset, key_data: bytes) -> str:
    """The key fingerprint: a hash of the parameters and a hash commitment to the secret key."""
    commitment = hashlib.sha256(b"fedx-he/secret-key-commitment/v1\0" + key_data).digest()
    return hashlib.sha256(b"fedx-he/fingerprint/v1\0" + preset.params_hash.encode() + commitment).hexdigest()


def fingerprint_text(fp: str) -> str:
    """The fingerprint as people compare it: its first 128 bits in eight groups of four hex digits.

    ``"3f2a 9c01 77d0 e2b4 1c9e 55aa 0b3d 7e21"``. 128 bits leave no practical way to make other keys that
    show the same text; the server compares the whole fingerprint.

    Raises
    ------
    HEError
        ``fp`` is not a 64-digit hex fingerprint.
    """
    if not isinstance(fp, str) or len(fp) != 64 or any(c not in "0123456789abcdef" for c in fp):
        raise HEError(f"a key fingerprint is 64 lowercase hex digits, got {fp!r}")
    return " ".join(fp[i:i + 4] for i in range(0, 32, 4))


@dataclass(frozen=True)
class PublicContext:
    """What the server holds: the preset and the key fingerprint. It carries no key material."""

    preset: Preset
    fingerprint: str

    @property
    def fingerprint_text(self) -> str:
        """The fingerprint as people compare it (:func:`fingerprint_text`)."""
        return fingerprint_text(self.fingerprint)


class SecretContext:
    """What the institutions hold: the preset, the secret key, and its fingerprint.

    Build one with :func:`keygen` or :func:`load_secret`; give the server :attr:`public` only.
    """

    def __init__(self, preset: Preset, key: seal.SecretKey) -> None:
        self._preset = preset
        self._key = key
        self._fingerprint = fingerprint(preset, key.data)

    def __repr__(self) -> str:
        return f"SecretContext(preset={self._preset.name!r}, fingerprint={self._fingerprint[:12]!r})"

    @property
    def preset(self) -> Preset:
        """The preset the keys were made for."""
        return self._preset

    @property
    def fingerprint(self) -> str:
        """Hex fingerprint, identical in the matching public context."""
        return self._fingerprint

    @property
    def fingerprint_text(self) -> str:
        """The fingerprint as people compare it (:func:`fingerprint_text`)."""
        return fingerprint_text(self._fingerprint)

    @property
    def public(self) -> PublicContext:
        """The matching public context, for the server."""
        return PublicContext(self._preset, self._fingerprint)

    @property
    def seal_key(self) -> seal.SecretKey:
        """The SEAL secret key (used by :mod:`fedx.he.codec`)."""
        return self._key


@dataclass(frozen=True)
class KeySet:
    """A secret context and its public context, as :func:`keygen` makes them."""

    secret: SecretContext

    @property
    def public(self) -> PublicContext:
        """The server's context."""
        return self.secret.public

    @property
    def fingerprint(self) -> str:
        """Hex fingerprint of the keys."""
        return self.secret.fingerprint

    @property
    def fingerprint_text(self) -> str:
        """The fingerprint as people compare it (:func:`fingerprint_text`)."""
        return self.secret.fingerprint_text

    @property
    def preset(self) -> Preset:
        """The preset of the keys."""
        return self.secret.preset

    def save(self, folder: str | os.PathLike[str], *, overwrite: bool = False) -> tuple[Path, Path]:
        """Write ``folder/secret.fxk`` (mode 0600) and ``folder/public.fxk``; returns both paths.

        Raises
        ------
        KeyFileError
            A key file exists there already and ``overwrite`` is False.
        """
        folder = Path(folder)
        paths = folder / SECRET_FILE, folder / PUBLIC_FILE
        for path in paths:
            if path.exists() and not overwrite:
                raise KeyFileError(f"{path} exists; keys are never overwritten silently (remove it, choose another "
                                   f"folder, or pass overwrite=True)")
        folder.mkdir(parents=True, exist_ok=True)
        key = self.secret.seal_key
        _write(paths[0], _pack("secret", self.preset, self.fingerprint, key.data), 0o600)
        _write(paths[1], _pack("public", self.preset, self.fingerprint, b""), 0o644)
        log.info("wrote HE keys %s to %s (fingerprint %s)", self.preset.name, folder, self.fingerprint[:12])
        return paths


def keygen(preset: str | Preset = "bfv-compact", **overrides: Any) -> KeySet:
    """Fresh keys for ``preset`` (a name or a :class:`Preset`), with validated ``overrides`` (bits, clip)."""
    chosen = get_preset(preset, **overrides)
    return KeySet(SecretContext(chosen, seal.SecretKey.generate(seal.engine(chosen))))


def load_secret(path: str | os.PathLike[str]) -> SecretContext:
    """Load the institutions' secret context; warns (and logs) if group or others can access the file.

    Raises
    ------
    KeyFileError
        Missing, unreadable, corrupted, or a public file.
    """
    path = Path(path)
    preset, fp, payload = _read(path, "secret")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        message = (f"{path} holds the HE secret key and group/other users can access it (mode {mode:04o}); "
                   f"restrict it with: chmod 600 {path}")
        warnings.warn(message, UserWarning, stacklevel=2)
        log.warning(message)
    context = SecretContext(preset, seal.SecretKey.from_bytes(seal.engine(preset), payload, str(path)))
    if context.fingerprint != fp:
        raise KeyFileError(f"{path}: the secret key does not match the fingerprint recorded with it (edited file?)")
    return context


def load_public(path: str | os.PathLike[str]) -> PublicContext:
    """Load the server's public context.

    Raises
    ------
    KeyFileError
        Missing, unreadable, corrupted, or a secret file (the server must never hold the secret key).
    """
    preset, fp, _ = _read(Path(path), "public")
    return PublicContext(preset, fp)


def public_context(source: PublicContext | str | os.PathLike[str], *, what: str = "public key") -> PublicContext:
    """The server's public context: itself, a ``public.fxk`` file, or the key folder that holds one.

    The one way fedx reads a public key for a server (simulation, deployment, ``fedx.flower.EncryptedFedAvg``).
    ``what`` names the setting in errors (``"security.keys"``).

    Raises
    ------
    KeyFileError
        Secret keys passed (the server must never hold them), no public.fxk there, or a bad file.
    """
    if isinstance(source, PublicContext):
        return source
    if isinstance(source, (KeySet, SecretContext)):
        raise KeyFileError(f"{what}: the server takes the public context only (keys.public, or public.fxk): it "
                           f"must never hold the institutions' secret key")
    if not isinstance(source, (str, os.PathLike)):
        raise KeyFileError(f"{what}: expected an he.PublicContext, a public.fxk file or its folder, got "
                           f"{type(source).__name__}")
    path = Path(source)
    file = path / PUBLIC_FILE if path.is_dir() else path
    if not file.exists():
        raise KeyFileError(f"{what}: {file} does not exist (expected {PUBLIC_FILE} from `fedx keygen`, or its "
                           f"folder; the server never needs {SECRET_FILE})")
    return load_public(file)


def secret_context(source: str | os.PathLike[str]) -> SecretContext:
    """An institution's secret context from a ``secret.fxk`` file, or from the key folder that holds it.

    A folder's ``secret.fxk`` is checked against its ``public.fxk`` when present (:func:`load_keys`).

    Raises
    ------
    KeyFileError, KeyMismatchError
    """
    path = Path(source).expanduser()
    return load_keys(path).secret if path.is_dir() else load_secret(path)


def load_keys(folder: str | os.PathLike[str]) -> KeySet:
    """Load ``folder/secret.fxk`` and check it against ``folder/public.fxk`` when present.

    Raises
    ------
    KeyFileError, KeyMismatchError
    """
    folder = Path(folder)
    keys = KeySet(load_secret(folder / SECRET_FILE))
    if (folder / PUBLIC_FILE).exists():
        public = load_public(folder / PUBLIC_FILE)
        if public.fingerprint != keys.fingerprint or public.preset != keys.preset:
            raise KeyMismatchError(f"{folder}: {PUBLIC_FILE} (keys {public.fingerprint[:12]}) does not belong to "
                                   f"{SECRET_FILE} (keys {keys.fingerprint[:12]})")
    return keys


def _pack(kind: Literal["secret", "public"], preset: Preset, fp: str, payload: bytes) -> bytes:
    header = {"type": kind, "preset": preset.spec(), "params": preset.params_hash, "fingerprint": fp}
    return frame.pack(MAGIC, VERSION, header, [payload])


def _read(path: Path, kind: Literal["secret", "public"]) -> tuple[Preset, str, memoryview]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file (make keys with `fedx keygen --out DIR`)") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the key file ({exc.strerror})") from None
    what = f"key file {path}"
    fr = frame.unpack(data, magic=MAGIC, version=VERSION, error=KeyFileError, what=what)
    f = frame.Fields(fr.header, KeyFileError, what)
    found = f.text("type", ("secret", "public"))
    if found != kind:
        raise KeyFileError(f"{path} is a {found} key file, expected a {kind} one: " + (
            "the institutions need secret.fxk, the public file cannot decrypt" if kind == "secret" else
            "the server must only get public.fxk, never the secret key"))
    spec = dict(f.sub("preset").doc)
    try:
        preset = get_preset(spec.pop("name", None), **spec)
    except HEError as exc:
        raise KeyFileError(f"{path}: its preset {spec!r} is not valid here ({exc})") from None
    if preset.params_hash != f.hexdigits("params", 32):
        raise KeyFileError(f"{path} was made with other {preset.name} parameters than this fedx uses "
                           f"(parameter hash differs); make new keys with `fedx keygen`")
    if (len(fr.payload) > 0) != (kind == "secret"):
        raise KeyFileError(f"{path}: a {kind} key file must {'hold' if kind == 'secret' else 'not hold'} key data")
    return preset, f.hexdigits("fingerprint", 64), fr.payload


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically, with ``mode`` set before any byte lands on disk."""
    write_atomic(path, data, mode=mode)
