"""Long-term identity keys that sign each institution's masking advert, so the server cannot swap keys.

The server relays every advert. Without signatures a server could hand a victim a roster in which the
other members' X25519 keys are its own (a man-in-the-middle on the key agreement): it would then know
every pairwise mask of the victim and, since the victim seals its seed shares to those keys, rebuild the
victim's self mask too, and read the victim's update alone. Each institution therefore signs its advert
(run, round, name and both public keys) with a long-term Ed25519 key, and every member checks each
advert of the roster against the public identity key it has pinned for that name.

Pinning. An institution keeps its own key in ``identity.key`` (PKCS#8 PEM, mode 0600) and its pins in
``identity-pins.json`` (``{name: hex public key}``), both in its node folder. Pins written there before
the run (from the other institutions' ``identity.pub``, exchanged out of band like the HE keys) protect
from the first round. Names met without a pin are pinned on first sight (trust on first use) and
logged; any later change of a pinned key is refused with :class:`MaskingError`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..atomic import write_atomic
from ..errors import MaskingError
from .messages import Advert

log = logging.getLogger(__name__)

KEY_FILE = "identity.key"
PUB_FILE = "identity.pub"
PINS_FILE = "identity-pins.json"
SIGNATURE_BYTES = 64


def advert_digest(advert: Advert) -> bytes:
    """The bytes an advert's signature covers: purpose, run, round, member and both public keys."""
    return json.dumps(["fedx-secagg/advert/v1", advert.run, advert.round, advert.member, advert.mask_key.hex(),
                       advert.channel_key.hex()]).encode()


def sign_advert(key: Ed25519PrivateKey, advert: Advert) -> bytes:
    """The Ed25519 signature of ``advert`` under an institution's identity key."""
    return key.sign(advert_digest(advert))


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    """The 32-byte public identity key."""
    return key.public_key().public_bytes_raw()


def verify_advert(public: bytes, advert: Advert, signature: bytes) -> None:
    """Check an advert's signature against a pinned public identity key.

    Raises
    ------
    MaskingError
        A malformed key or signature, or one that does not verify.
    """
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, advert_digest(advert))
    except (InvalidSignature, ValueError):
        raise MaskingError(f"the masking advert of {advert.member!r} is not signed by its identity key: the keys "
                           f"were substituted on the way (refusing the round)") from None


def load_or_create(folder: Path) -> Ed25519PrivateKey:
    """This institution's identity key from ``folder/identity.key``; made (with ``identity.pub``) when absent."""
    folder = Path(folder)
    path = folder / KEY_FILE
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except ValueError:
            raise MaskingError(f"{path}: not a PEM private key (an Ed25519 identity key)") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise MaskingError(f"{path}: not an Ed25519 key")
        return key
    folder.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    write_atomic(path, pem, mode=0o600)
    write_atomic(folder / PUB_FILE, (public_bytes(key).hex() + "\n").encode())
    log.info("made the masking identity key %s (public %s)", path, public_bytes(key).hex()[:16])
    return key


class Pins:
    """The public identity keys this institution trusts, by institution name (``identity-pins.json``)."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / PINS_FILE
        self._pins: dict[str, bytes] = {}
        if self.path.exists():
            try:
                raw = json.loads(self.path.read_text())
                self._pins = {str(k): bytes.fromhex(v) for k, v in raw.items()}
            except (ValueError, AttributeError, TypeError):
                raise MaskingError(f"{self.path}: expected a JSON object of institution name -> hex Ed25519 public "
                                   f"key") from None

    def check(self, identities: Mapping[str, bytes], adverts: Mapping[str, Advert],
              signatures: Mapping[str, bytes]) -> None:
        """Verify every advert against its pin; pin the names met for the first time.

        Raises
        ------
        MaskingError
            A missing signature or identity, a changed identity, or a signature that does not verify.
        """
        new = {}
        for name, advert in adverts.items():
            given = identities.get(name)
            if given is None or name not in signatures:
                raise MaskingError(f"the masking advert of {name!r} comes without its identity key or signature")
            pinned = self._pins.get(name)
            if pinned is not None and pinned != given:
                raise MaskingError(f"the identity key offered for {name!r} ({given.hex()[:16]}) differs from the one "
                                   f"pinned in {self.path} ({pinned.hex()[:16]}): the server or someone on the way "
                                   f"substituted it (refusing the round)")
            verify_advert(given, advert, signatures[name])
            if pinned is None:
                new[name] = given
        if new:
            log.warning("masking: pinned the identity keys of %s on first use (%s); pin them out of band to be "
                        "safe from the first round", ", ".join(sorted(new)), self.path)
            self._pins.update(new)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps({k: v.hex() for k, v in sorted(self._pins.items())}, indent=1).encode())


def main(argv: list[str] | None = None) -> int:
    """``python -m fedx.secagg.identity FOLDER``: make (or read) the identity key there; print its public key."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m fedx.secagg.identity NODE_OUT_DIR", file=sys.stderr)
        return 2
    print(public_bytes(load_or_create(Path(args[0]))).hex())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
