"""``he_mod``: a ClientApp mod that keeps a Flower app's model updates under homomorphic encryption.

It pairs with :class:`fedx.flower.EncryptedFedAvg` on the server, as Flower's ``secaggplus_mod`` pairs
with its workflow. Around the user's own train and evaluate functions it does two things:

- **Incoming** (every message type): each ArrayRecord that holds a fedx ciphertext (one ``"blob"``
  entry of stype :data:`~fedx.flower.records.STYPE_HE`) is decrypted into a plain ArrayRecord, the
  weighted mean of the clients' arrays, under the same names. A plaintext ArrayRecord passes through
  untouched: round 1's initial arrays are usually the public initial model, sent as the user gave them.
- **Outgoing** (train replies only): each ArrayRecord of the reply is encrypted into one blob, weighted by
  the reply's ``num-examples`` metric. Metrics stay in plaintext, as in any Flower app.

How the weight is applied. The decrypted aggregate must be ``sum(n_i * x_i) / sum(n_i)`` whatever the
other clients' weights, and a client knows only its own ``n_i``. Two paths, both exact up to the encoding:

- When the train message's config carries :data:`KEY_TOTAL_WEIGHT` (EncryptedFedAvg sends the sum of the
  sampled clients' last reported weights), the reply is a ``kind="mean"`` blob with
  ``weight=n_i, total_weight=T``: it carries ``(n_i / T) * x_i``, and decryption divides by the summed
  ``n_i / T``. Any ``T`` shared by the round gives the weighted mean; ``T`` near the true total keeps the
  quantization error at about half a step per client. This is the compact path (6 bytes per parameter up
  with ``bfv-compact``).
- Without it (the first round, or a strategy that does not send it), the reply is a ``kind="sum"`` blob
  of ``n_i * x_i`` with weight ``n_i``; the aggregate's header carries ``sum(n_i)``, and decryption
  divides by it. This needs nobody else's weight, at the cost of a larger upload (``bfv-compact`` sums
  use 8 slots per value).

Both pass every weight explicitly, so neither depends on what ``he.encrypt`` does without
``total_weight``.

A ``bfv-compact`` mean clips each value to the preset's ``clip`` (1.0 unless the keys were made with
another): the arrays a train function returns must lie within it, or the clipping is logged and the
model is damaged. Use keys with a larger ``clip`` (``he.keygen("bfv-compact", clip=4.0)``) or ``ckks``
for models whose weights are larger.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Error, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common.constant import ErrorCode

from .. import he
from ..errors import FederationError, FedxError, KeyFileError
from .records import STYPE_HE, payload_record, read_payload

log = logging.getLogger(__name__)

#: Config key of a train message: the total weight ``T`` that the clients of the round share.
KEY_TOTAL_WEIGHT = "fedx.he.total-weight"

Keys = str | os.PathLike[str] | he.KeySet | he.SecretContext


def he_mod(keys: Keys | Callable[[Context], Keys], *, weighted_by_key: str = "num-examples") -> Mod:
    """A ClientApp mod that decrypts the incoming aggregate and encrypts the train reply.

    Parameters
    ----------
    keys : path, he.KeySet, he.SecretContext, or a function of the Context
        The institutions' keys: a key folder from ``fedx keygen`` (``secret.fxk``, checked against
        ``public.fxk`` when present), a ``secret.fxk`` file, or keys in memory. A function receives the
        ClientApp's Context and returns one of those, so that each SuperNode can name its own folder
        (``lambda ctx: ctx.node_config["he-keys"]``). A path is read on the first message, in the process
        that runs the ClientApp.
    weighted_by_key : str
        The reply metric that weighs this client's arrays (the strategy's ``weighted_by_key``).

    Returns
    -------
    callable
        ``mod(msg, context, call_next) -> Message``, for ``ClientApp(mods=[...])``.

    Examples
    --------
    >>> from flwr.clientapp import ClientApp
    >>> app = ClientApp(mods=[he_mod("keys/")])          # doctest: +SKIP
    """
    source = _KeySource(keys)

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        try:
            secret = source.get(context)
            for name, record in list(msg.content.array_records.items()):
                if _is_encrypted(record):
                    msg.content[name] = decrypt_arrays(secret, record)
        except FedxError as exc:
            return _error(msg, f"he_mod: the incoming arrays: {exc}")
        reply = call_next(msg, context)
        if reply.has_error() or msg.metadata.message_type.split(".")[0] != MessageType.TRAIN:
            return reply
        try:
            weight = _reply_weight(reply, weighted_by_key)
            total = _total_weight(msg)
            for name, record in list(reply.content.array_records.items()):
                reply.content[name] = encrypt_arrays(secret, record, weight, total)
        except FedxError as exc:
            return _error(msg, f"he_mod: the train reply: {exc}")
        return reply

    mod.__name__ = mod.__qualname__ = "he_mod"
    return mod


def encrypt_arrays(secret: he.SecretContext, record: ArrayRecord, weight: float,
                   total_weight: float | None) -> ArrayRecord:
    """One ArrayRecord as one weighted blob (see the module docstring for the two paths).

    Raises
    ------
    FederationError
        The record is already encrypted, or holds something other than numpy arrays.
    HEError
        From :func:`fedx.he.encrypt` (values beyond the preset's capacity, NaN, ...).
    """
    if _is_encrypted(record):
        raise FederationError("the reply's arrays are already encrypted; he_mod encrypts plain arrays once")
    arrays = _plain_arrays(record)
    if total_weight is None:
        scaled = {k: _times(v, weight) for k, v in arrays.items()}
        blob = he.encrypt(secret, scaled, weight=weight, kind="sum")
    else:
        if weight > total_weight:
            log.warning("he_mod: weight %g exceeds the round's total weight %g (did the client's data grow?); "
                        "this client's update counts with weight %g", weight, total_weight, total_weight)
        blob = he.encrypt(secret, arrays, weight=weight, total_weight=max(total_weight, weight), kind="mean")
    return payload_record(blob)


def decrypt_arrays(keys: Keys, record: ArrayRecord | bytes) -> ArrayRecord:
    """The weighted mean that an encrypted aggregate holds, as a plain ArrayRecord.

    This is how an institution reads the final model of an :class:`~fedx.flower.EncryptedFedAvg` run
    (``result.arrays``, or its blob saved to a file); :func:`he_mod` does the same for every incoming message.

    Parameters
    ----------
    keys : path, he.KeySet or he.SecretContext
        The institutions' keys (as for :func:`he_mod`).
    record : ArrayRecord or bytes
        An encrypted ArrayRecord (one ``"blob"`` entry of the fedx stype), or the blob itself.

    Raises
    ------
    FederationError
        ``record`` holds no fedx ciphertext.
    KeyMismatchError, BlobError
        From :func:`fedx.he.decrypt`: other keys, or a malformed blob.
    """
    secret = keys if isinstance(keys, he.SecretContext) else _KeySource(keys).get()
    if isinstance(record, (bytes, bytearray, memoryview)):
        blob = bytes(record)
    else:
        if not _is_encrypted(record):
            raise FederationError(f"expected an encrypted ArrayRecord (one 'blob' entry of stype {STYPE_HE}), got "
                                  f"entries {list(record.keys())[:5]}")
        blob = read_payload(record)
        assert isinstance(blob, bytes)
    header = he.inspect(blob)
    arrays, weight = he.decrypt(secret, blob)
    if header.kind == "sum":  # sum(n_i * x_i) and sum(n_i)
        arrays = {k: _divided(v, weight, dtype) for (k, v), dtype in zip(_named(arrays).items(), header.dtypes)}
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in _named(arrays).items()})


class _KeySource:
    """The secret context, loaded once per path on first use (a mod is built at import time)."""

    def __init__(self, keys: Keys | Callable[[Context], Keys]) -> None:
        if not (callable(keys) or isinstance(keys, (str, os.PathLike, he.KeySet, he.SecretContext))):
            raise KeyFileError(f"he_mod keys must be a key folder, a secret.fxk path, an he.KeySet, an "
                               f"he.SecretContext or a function of the Context, got {type(keys).__name__}")
        self._keys = keys
        self._loaded: dict[Path, he.SecretContext] = {}

    def get(self, context: Context | None = None) -> he.SecretContext:
        keys = self._keys
        if callable(keys) and not isinstance(keys, (he.KeySet, he.SecretContext)):
            if context is None:
                raise KeyFileError("these keys are a function of the ClientApp's Context; pass the keys themselves")
            keys = keys(context)
        if isinstance(keys, he.KeySet):
            return keys.secret
        if isinstance(keys, he.SecretContext):
            return keys
        if not isinstance(keys, (str, os.PathLike)):
            raise KeyFileError(f"he_mod keys resolved to {type(keys).__name__}; expected a key folder, a secret.fxk "
                               f"path, an he.KeySet or an he.SecretContext")
        path = Path(keys).expanduser()
        if path not in self._loaded:
            if not path.exists():
                raise KeyFileError(f"he_mod keys: {path} does not exist (expected a key folder from `fedx keygen` "
                                   f"or its secret.fxk)")
            secret = he.secret_context(path)
            log.info("he_mod: loaded keys %s (%s, fingerprint %s)", path, secret.preset.name, secret.fingerprint_text)
            self._loaded[path] = secret
        return self._loaded[path]


def _is_encrypted(record: ArrayRecord) -> bool:
    return any(arr.stype == STYPE_HE for arr in record.values())


def _plain_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    out = {}
    for key, arr in record.items():
        if arr.stype != "numpy.ndarray":
            raise FederationError(f"reply array '{key}' is {arr.stype}; he_mod encrypts numpy arrays only")
        out[key] = arr.numpy()
    return out


def _reply_weight(reply: Message, key: str) -> float:
    records = list(reply.content.metric_records.values())
    found = [r[key] for r in records if key in r]
    if len(found) != 1:
        raise FederationError(f"expected the metric '{key}' (the client's weight) in exactly one MetricRecord of "
                              f"the reply, found it in {len(found)}")
    value = found[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise FederationError(f"metric '{key}' must be a positive number (the client's weight), got {value!r}")
    return float(value)


def _total_weight(msg: Message) -> float | None:
    values = [c[KEY_TOTAL_WEIGHT] for c in msg.content.config_records.values() if KEY_TOTAL_WEIGHT in c]
    if not values:
        return None
    value = values[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise FederationError(f"config '{KEY_TOTAL_WEIGHT}' must be a positive number, got {value!r}")
    return float(value)


def _times(a: np.ndarray, weight: float) -> np.ndarray:
    """``weight * a``, in a's float dtype (float64 for integers and booleans)."""
    return a * np.asarray(weight, a.dtype) if a.dtype.kind == "f" else a.astype(np.float64) * weight


def _divided(a: np.ndarray, weight: float, dtype: str) -> np.ndarray:
    out = np.asarray(a, np.float64) / weight
    return out.astype(dtype) if np.dtype(dtype).kind == "f" else out


def _named(arrays: list[np.ndarray] | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if isinstance(arrays, Mapping):
        return dict(arrays)
    return {str(i): a for i, a in enumerate(arrays)}


def _error(msg: Message, reason: str) -> Message:
    log.error("%s", reason)
    return Message(Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=reason), reply_to=msg)


__all__ = ["KEY_TOTAL_WEIGHT", "decrypt_arrays", "encrypt_arrays", "he_mod"]
