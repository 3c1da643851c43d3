"""The models the tasks train: logistic regression, MLP, and log-link GLM. All float32.

Every model takes ``forward(x, offset=None)``. Logistic regression and the MLP return the linear
predictor (a logit, with ``offset`` added when given); :class:`LogLink` wraps either one and returns the
mean ``exp(eta + offset)``. The models are plain ``torch.nn`` modules so that Opacus can wrap them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..config import DROPOUT, check_number
from ..errors import ConfigError, DataError

if TYPE_CHECKING:
    from ..config import Config

#: Keys a model config may hold.
MODEL_KEYS = ("kind", "hidden", "dropout")


def model_config(cfg: Config) -> dict[str, Any]:
    """The ``model:`` section of a config as :func:`build_model` takes it (and as a model file keeps it)."""
    m = cfg.model
    return {"kind": m.kind, "hidden": list(m.hidden), "dropout": m.dropout}


def _with_offset(eta: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
    return eta if offset is None else eta + offset


class LinearScore(nn.Module):
    """Logistic regression: one linear layer; returns the linear predictor of shape (n,).

    Parameters
    ----------
    n_features : int
        Number of input columns.
    """

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """The linear predictor ``x @ w + b (+ offset)``."""
        return _with_offset(self.linear(x).squeeze(-1), offset)


class MLP(nn.Module):
    """Fully connected ReLU network with one output; returns its score of shape (n,).

    Parameters
    ----------
    n_features : int
        Number of input columns.
    hidden : sequence of int
        Widths of the hidden layers.
    dropout : float
        Dropout probability after each hidden layer (0 for none).
    """

    def __init__(self, n_features: int, hidden: Sequence[int], dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """The network's score (plus ``offset``)."""
        return _with_offset(self.net(x).squeeze(-1), offset)


class LogLink(nn.Module):
    """A log-link model: returns the mean ``exp(score(x) + offset)``.

    ``LogLink(LinearScore(d))`` is the Poisson/Gamma GLM; ``LogLink(MLP(...))`` its neural version.

    Parameters
    ----------
    score : nn.Module
        The model of the linear predictor (:class:`LinearScore` or :class:`MLP`).
    """

    def __init__(self, score: nn.Module) -> None:
        super().__init__()
        self.score = score

    def forward(self, x: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """The mean ``exp(eta + offset)``."""
        return torch.exp(self.score(x, offset))


def build_model(task: str, n_features: int, model_cfg: Mapping[str, Any], seed: int, *,
                kinds: Sequence[str], log_link: bool) -> nn.Module:
    """Build a model from a ``model:`` config section, deterministically for ``seed``.

    Parameters
    ----------
    task : str
        Name of the task (for error messages).
    n_features : int
        Number of input columns.
    model_cfg : mapping
        ``{"kind": ..., "hidden": [...], "dropout": ...}``; ``hidden`` and ``dropout`` are read for the MLP only.
        Without ``kind``, the first of ``kinds`` is built.
    seed : int
        Seed of the weight initialisation (linear models start at zero whatever the seed).
    kinds : sequence of str
        The model kinds this task accepts, among ``logistic``, ``mlp`` and ``glm``.
    log_link : bool
        Wrap the model in :class:`LogLink` (GLM tasks).

    Raises
    ------
    ConfigError
        If the config names an unknown key, a kind the task does not take, or invalid MLP settings.
    DataError
        If ``n_features`` is not a positive integer.
    """
    unknown = sorted(set(model_cfg) - set(MODEL_KEYS))
    if unknown:
        raise ConfigError(f"model.{unknown[0]}: unknown key; expected {', '.join(MODEL_KEYS)}")
    kind = model_cfg.get("kind", kinds[0])
    if kind not in kinds:
        raise ConfigError(f"model.kind: task '{task}' takes {' or '.join(kinds)}, got {kind!r}")
    if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1:
        raise DataError(f"n_features: expected a positive integer, got {n_features!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "mlp":
            hidden, dropout = _mlp_settings(model_cfg)
            score: nn.Module = MLP(n_features, hidden, dropout)
        else:
            score = LinearScore(n_features)
    model = LogLink(score) if log_link else score
    return model.to(torch.float32)


def _mlp_settings(model_cfg: Mapping[str, Any]) -> tuple[list[int], float]:
    hidden = model_cfg.get("hidden", [64, 32])
    if (isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence) or not hidden
            or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden)):
        raise ConfigError(f"model.hidden: expected a non-empty list of positive integer layer widths "
                          f"(e.g. [64, 32]), got {hidden!r}")
    return list(hidden), check_number(model_cfg.get("dropout", 0.0), "model.dropout", DROPOUT)
