"""The one exception hierarchy of fedx.

Every error that a user can cause by their input derives from :class:`FedxError`.
The CLI turns a ``FedxError`` into a one-line message and exit code 2, with no traceback.
Messages name the file, key or field at fault and say what was expected.
"""

from __future__ import annotations


class FedxError(Exception):
    """Base class of every error that fedx raises on purpose."""


class ConfigError(FedxError, ValueError):
    """A config file or override is malformed, misspelt, mistyped or out of range."""


class DataError(FedxError, ValueError):
    """Input data is missing, malformed, or does not match its declared schema."""


class SchemaError(DataError):
    """A column is absent, of the wrong type, or has a level nobody declared."""


class HEError(FedxError):
    """Base class of homomorphic-encryption errors."""


class KeyFileError(HEError):
    """Keys are missing, unreadable, or of the wrong kind (for example public where secret is needed)."""


class KeyMismatchError(HEError):
    """A blob or context was made under other keys (its fingerprint differs)."""


class BlobError(HEError, ValueError):
    """A ciphertext blob is truncated, tampered with, of an unknown version, or misshapen."""


class CapacityError(HEError, ValueError):
    """An encrypted sum could overflow the plaintext modulus or exhaust the noise budget."""


class AggregationError(FedxError):
    """Aggregation cannot proceed: too few valid updates, or an aggregator refused the setting."""


class UpdateRejected(AggregationError):
    """One client's update failed validation (shape, NaN/Inf, norm, preset or fingerprint)."""


class StateDivergedError(AggregationError):
    """A client's copy of the optimizer state no longer matches the federation's."""


class PolicyError(FedxError):
    """A query or release would break a data owner's policy (for example a cohort below the minimum)."""


class PrivacyBudgetError(FedxError):
    """Training would exceed the configured differential-privacy budget."""


class FederationError(FedxError):
    """The federation cannot go on: too few institutions answered, or a node failed."""


class DeploymentError(FedxError):
    """Certificates, node keys, or server/node processes are missing or misconfigured."""


class AuditError(FedxError):
    """An audit ledger is unreadable or its hash chain is broken."""


class MaskingError(HEError):
    """Pairwise masking cannot proceed: a bad setting, or a message that breaks the masking protocol."""


class MaskingRefused(MaskingError):
    """An institution refuses a request that would let the server remove both masks of one update."""


class TooFewSurvivors(MaskingError, FederationError):
    """Fewer institutions than the threshold are left, so no mask can be removed and nothing is decrypted."""


class VerticalError(FedxError):
    """A vertical run (parties holding different columns of the same people) cannot proceed."""


class PSIError(VerticalError, ValueError):
    """Private set intersection refused: bad ids at a party, too small an intersection, or a bad message."""
