"""What every aggregator provides: a way to combine updates, and a deterministic step that applies them.

An :class:`UpdateRule` splits aggregation in two:

- ``combine``: many clients' updates -> one aggregate. Under encryption the server can only add
  ciphertexts, so rules that encrypt declare ``he_kind`` ("mean": a weighted mean of deltas,
  "sum": a plain sum of statistics) and the sum is done by :mod:`fedx.he`.
- ``apply``: (model, optimizer state, aggregate) -> (model, optimizer state). It is deterministic,
  so with encryption on every institution runs it on the same decrypted aggregate and reaches the
  same model; in plaintext the server runs it. A digest of the result lets the federation check
  that nobody diverged.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..errors import AggregationError
from .fedavg import weighted_mean

__all__ = ["Arrays", "FedAvgRule", "ModelState", "UpdateRule", "weighted_mean"]

Arrays = list[np.ndarray]


@dataclass
class ModelState:
    """The global model and the server optimizer's state after ``round`` aggregates were applied."""

    params: Arrays
    opt: dict[str, Arrays] = field(default_factory=dict)
    round: int = 0

    def digest(self) -> str:
        """sha256 over the round, every parameter and every optimizer array, bit for bit."""
        h = hashlib.sha256(str(self.round).encode())
        for a in self.params:
            _hash_array(h, a)
        for key in sorted(self.opt):
            h.update(key.encode())
            for a in self.opt[key]:
                _hash_array(h, a)
        return h.hexdigest()

    def copy(self) -> ModelState:
        """A deep copy."""
        return ModelState([p.copy() for p in self.params],
                          {k: [a.copy() for a in v] for k, v in self.opt.items()}, self.round)


def _hash_array(h: "hashlib._Hash", a: np.ndarray) -> None:
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())


class UpdateRule(ABC):
    """How client deltas become the next global model.

    Attributes
    ----------
    name : str
        The config name (``federation.aggregator``).
    he_kind : "mean", "sum" or None
        How the rule's aggregate can be formed under encryption; None means the rule needs each
        update in plaintext and is refused with encryption on.
    clients_need_opt : bool
        Whether the institutions need the optimizer state to compute their update (in plaintext
        the server then sends it along with the model).
    """

    name: str = ""
    he_kind: Literal["mean", "sum"] | None = "mean"
    clients_need_opt: bool = False

    def combine(self, updates: Sequence[Arrays], weights: Sequence[float]) -> Arrays:
        """Plaintext aggregate of several clients' deltas (default: the weighted mean)."""
        return weighted_mean(updates, weights)

    @abstractmethod
    def apply(self, state: ModelState, aggregate: Arrays) -> ModelState:
        """The next state from the current one and the aggregate of the round. Deterministic."""


class FedAvgRule(UpdateRule):
    """FedAvg: the new model is the old one plus the weighted mean delta (also FedProx's server side)."""

    name = "fedavg"

    def apply(self, state: ModelState, aggregate: Arrays) -> ModelState:
        _check_shapes(state.params, aggregate)
        params = [(p.astype(np.float64) + d).astype(p.dtype) for p, d in zip(state.params, aggregate)]
        return ModelState(params, state.opt, state.round + 1)


def _check_shapes(params: Arrays, aggregate: Arrays) -> None:
    if len(params) != len(aggregate) or any(p.shape != a.shape for p, a in zip(params, aggregate)):
        raise AggregationError(
            f"aggregate has shapes {[a.shape for a in aggregate]}, the model has {[p.shape for p in params]}")
