"""Local training: a plain DataLoader, optimizer and model, so that Opacus can wrap all three.

:func:`fit` is ``make_loader`` + ``make_optimizer`` + ``run_epoch`` per epoch. Differential privacy
slots in between: with ``privacy=SampleDP(...)``, ``PrivacyEngine.make_private(module=model,
optimizer=optimizer, data_loader=loader, ...)`` returns the three objects that ``run_epoch`` then takes
unchanged (DP-SGD), and the report says how much privacy the training spent.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError, DataError, PrivacyBudgetError
from .data import TabularData
from .losses import Loss
from .params import array_names, check_arrays

if TYPE_CHECKING:
    from ..config import Config, TrainConfig

log = logging.getLogger(__name__)

#: Rows per forward pass when scoring a whole table.
SCORE_CHUNK = 65536

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class TrainOptions:
    """How an institution trains locally.

    Parameters
    ----------
    epochs : int
        Passes over the local data.
    batch_size : int
        Rows per minibatch (ignored with ``full_batch``).
    lr : float
        Learning rate.
    lr_decay : float
        The learning rate is multiplied by this after every ``decay_every`` epochs (1 keeps it constant).
    decay_every : int
        Epochs between two decays of the learning rate.
    optimizer : {"adam", "sgd"}
        Local optimizer (SGD without momentum).
    weight_decay : float
        L2 penalty, added to the gradient by the optimizer.
    prox_mu : float
        FedProx: adds ``prox_mu / 2 * ||w - w_global||^2``; needs ``global_arrays`` in training.
    pos_weight : float, "auto" or None
        Weight of positive rows in binary losses. ``"auto"`` is ``sqrt(neg / pos)`` of the local
        training data, so it differs between institutions; fix a number where FedAvg must equal
        centralized training exactly. None means 1. GLM tasks ignore it.
    loss : str
        ``auto`` (the task's own), or ``bce`` / ``focal`` (binary tasks), ``poisson`` / ``gamma`` (GLM tasks).
    seed : int
        Seed of shuffling and dropout.
    full_batch : bool
        One gradient step per epoch on all rows, in row order.
    max_grad_norm : float, optional
        Clip the gradient norm of each step (stability, not differential privacy).
    """

    epochs: int = 1
    batch_size: int = 256
    lr: float = 0.01
    lr_decay: float = 1.0
    decay_every: int = 1
    optimizer: Literal["adam", "sgd"] = "adam"
    weight_decay: float = 0.0
    prox_mu: float = 0.0
    pos_weight: float | Literal["auto"] | None = "auto"
    loss: str = "auto"
    seed: int = 0
    full_batch: bool = False
    max_grad_norm: float | None = None

    def __post_init__(self) -> None:
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_number("lr", self.lr, positive=True)
        _check_number("lr_decay", self.lr_decay, positive=True)
        if self.lr_decay > 1:
            raise ConfigError(f"TrainOptions.lr_decay: expected a number in (0, 1], got {self.lr_decay!r}")
        _check_int("decay_every", self.decay_every, 1)
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"TrainOptions.optimizer: expected adam or sgd, got {self.optimizer!r}")
        _check_number("weight_decay", self.weight_decay, positive=False)
        _check_number("prox_mu", self.prox_mu, positive=False)
        if self.pos_weight is not None and self.pos_weight != "auto":
            _check_number("pos_weight", self.pos_weight, positive=True, extra="'auto', None or ")
        if not isinstance(self.loss, str):
            raise ConfigError(f"TrainOptions.loss: expected a loss name, got {self.loss!r}")
        _check_int("seed", self.seed, None)
        if self.max_grad_norm is not None:
            _check_number("max_grad_norm", self.max_grad_norm, positive=True, extra="None or ")

    @classmethod
    def from_config(cls, cfg: Config, name: str, server_round: int | str, epochs: int) -> TrainOptions:
        """The local training options of institution ``name`` in a round (seeded by the run, name and round).

        The learning rate of round ``r`` is ``train.lr * train.lr_decay ** (r - 1)``; FedProx's
        ``prox_mu`` is ``federation.mu``.
        """
        from ..data.local import derive_seed

        t = cfg.train
        lr = t.lr * t.lr_decay ** (server_round - 1) if isinstance(server_round, int) else t.lr
        return cls.from_section(t, epochs, derive_seed(cfg.seed, name, server_round), lr=lr,
                                prox_mu=cfg.federation.mu)

    @classmethod
    def from_section(cls, train: TrainConfig, epochs: int, seed: int, **extra: Any) -> TrainOptions:
        """The ``train:`` section of a config as options, with ``extra`` fields set or replaced."""
        fields = {"batch_size": train.batch_size, "lr": train.lr, "optimizer": train.optimizer,
                  "weight_decay": train.weight_decay, "pos_weight": train.pos_weight, "loss": train.loss,
                  "full_batch": train.full_batch}
        return cls(epochs=epochs, seed=seed, **{**fields, **extra})


def _check_int(field: str, value: object, lo: int | None, owner: str = "TrainOptions") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or (lo is not None and value < lo):
        bound = "" if lo is None else f" >= {lo}"
        raise ConfigError(f"{owner}.{field}: expected an integer{bound}, got {value!r}")


def _check_number(field: str, value: object, *, positive: bool, extra: str = "", owner: str = "TrainOptions") -> None:
    ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
          and (value > 0 if positive else value >= 0))
    if not ok:
        raise ConfigError(f"{owner}.{field}: expected {extra}a number {'> 0' if positive else '>= 0'}, "
                          f"got {value!r}")


#: Opacus' accountant history: ``(noise_multiplier, sample_rate, steps)`` per run of equal steps.
DPHistory = tuple[tuple[float, float, int], ...]


@dataclass(frozen=True)
class SampleDP:
    """Sample-level differential privacy of local training: DP-SGD through Opacus, RDP accounting.

    Each row's gradient is clipped to ``max_grad_norm`` and each step's summed gradient gets Gaussian
    noise of standard deviation ``noise_multiplier * max_grad_norm``; minibatches are Poisson samples
    at rate ``1 / batches per epoch`` (about ``batch_size / rows``). Epsilon is for adding or removing
    one training row.

    Parameters
    ----------
    noise_multiplier : float
        Noise standard deviation over ``max_grad_norm`` (0 clips without noise: epsilon is infinite).
    max_grad_norm : float
        L2 bound of each row's gradient. It replaces ``TrainOptions.max_grad_norm``.
    delta : float
        The delta of the reported (epsilon, delta).
    target_epsilon : float, optional
        Refuse to train (:class:`~fedx.errors.PrivacyBudgetError`) when the training asked for would
        take this institution's epsilon above it.
    history : tuple of (noise_multiplier, sample_rate, steps)
        The accountant history of this institution's earlier training in the run
        (``TrainReport.privacy.history`` of its previous round), so that epsilon accumulates.
    seed : int, optional
        Seed of the noise and of the minibatch sampling, for tests only. None (the default) draws both
        from the operating system's entropy: a seed derived from the run's config would let anyone who
        knows the config reproduce, and subtract, the noise.
    """

    noise_multiplier: float
    max_grad_norm: float
    delta: float
    target_epsilon: float | None = None
    history: DPHistory = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        _check_number("noise_multiplier", self.noise_multiplier, positive=False, owner="SampleDP")
        _check_number("max_grad_norm", self.max_grad_norm, positive=True, owner="SampleDP")
        _check_number("delta", self.delta, positive=True, owner="SampleDP")
        if self.delta >= 1:
            raise ConfigError(f"SampleDP.delta: expected a number in (0, 1), got {self.delta!r}")
        if self.target_epsilon is not None:
            _check_number("target_epsilon", self.target_epsilon, positive=True, extra="None or ", owner="SampleDP")
        if self.seed is not None:
            _check_int("seed", self.seed, None, owner="SampleDP")
        try:
            history = tuple((float(s), float(q), int(n)) for s, q, n in self.history)
        except (TypeError, ValueError):
            raise ConfigError(f"SampleDP.history: expected (noise_multiplier, sample_rate, steps) triples, "
                              f"got {self.history!r}") from None
        object.__setattr__(self, "history", history)


@dataclass(frozen=True)
class PrivacySpent:
    """The sample-level privacy an institution's local training has spent so far in the run.

    Attributes
    ----------
    epsilon, delta : float
        The (epsilon, delta)-DP guarantee for one training row, over all steps in ``history``.
    noise_multiplier, max_grad_norm, sample_rate : float
        The settings of this call's steps.
    steps : int
        DP-SGD steps accounted, over all calls.
    history : tuple of (noise_multiplier, sample_rate, steps)
        Opacus' accountant history: pass it to the next call's :class:`SampleDP`.
    accountant : str
        The accountant used.
    """

    epsilon: float
    delta: float
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    history: DPHistory
    accountant: str = "rdp (opacus)"


@dataclass(frozen=True)
class TrainReport:
    """What one call of local training did.

    Attributes
    ----------
    loss_before, loss_after : float
        Mean training loss on all local rows (eval mode, without the FedProx term) before and after.
    n_examples : int
        Training rows.
    steps : int
        Optimizer steps taken.
    seconds : float
        Wall-clock time of the call.
    privacy : PrivacySpent or None
        The sample-level privacy spent, with ``SampleDP``.
    """

    loss_before: float
    loss_after: float
    n_examples: int
    steps: int
    seconds: float
    privacy: PrivacySpent | None = None


class RowTensors(Dataset[Batch]):
    """Map-style dataset of (x, y, weight, offset) rows that fetches a whole batch with one index operation.

    ``DataLoader`` calls ``__getitems__`` with a batch's indices, so :func:`batch_collate` returns its
    input unchanged. This is 4x faster than ``TensorDataset`` with the default collate, and Opacus'
    ``DPDataLoader`` keeps both (it reuses the dataset and wraps the collate function).
    """

    def __init__(self, data: TabularData) -> None:
        self.tensors = _tensors(data)

    def __len__(self) -> int:
        return int(self.tensors[0].shape[0])

    def __getitem__(self, index: int) -> Batch:
        x, y, w, o = (t[index] for t in self.tensors)
        return x, y, w, o

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        ix = torch.as_tensor(indices, dtype=torch.long)
        x, y, w, o = (t[ix] for t in self.tensors)
        return x, y, w, o


def batch_collate(batch: Batch) -> Batch:
    """The collate function of :class:`RowTensors` batches: they come already stacked."""
    return batch


def _tensors(data: TabularData) -> Batch:
    n = len(data)
    w = torch.ones(n) if data.weight is None else torch.from_numpy(data.weight)
    o = torch.zeros(n) if data.offset is None else torch.from_numpy(data.offset)
    return torch.from_numpy(data.X), torch.from_numpy(data.y), w, o


def make_loader(data: TabularData, opts: TrainOptions) -> DataLoader[Batch]:
    """Shuffled minibatches seeded by ``opts.seed``, or one batch of all rows in order with ``full_batch``."""
    ds = RowTensors(data)
    if opts.full_batch:
        return DataLoader(ds, batch_size=max(len(ds), 1), shuffle=False, collate_fn=batch_collate)
    gen = torch.Generator().manual_seed(opts.seed)
    return DataLoader(ds, batch_size=opts.batch_size, shuffle=True, generator=gen, collate_fn=batch_collate)


def make_optimizer(model: nn.Module, opts: TrainOptions) -> torch.optim.Optimizer:
    """Adam, or SGD without momentum, over all of the model's parameters."""
    if opts.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, opts: TrainOptions, epoch: int) -> None:
    """Set the learning rate of ``epoch`` (0-based): ``lr * lr_decay ** (epoch // decay_every)``."""
    for group in optimizer.param_groups:
        group["lr"] = opts.lr * opts.lr_decay ** (epoch // opts.decay_every)


def prox_anchors(model: nn.Module, global_arrays: Sequence[np.ndarray]) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """Pair each trainable parameter with its value in the global model, for the FedProx term."""
    check_arrays(model, global_arrays, what="global_arrays")
    by_name = dict(zip(array_names(model), global_arrays))
    return [(p, torch.tensor(by_name[name], dtype=torch.float32)) for name, p in model.named_parameters()]


def run_epoch(model: nn.Module, loader: DataLoader[Batch], optimizer: torch.optim.Optimizer, loss_fn: Loss, *,
              prox_mu: float = 0.0, anchors: Sequence[tuple[nn.Parameter, torch.Tensor]] = (),
              max_grad_norm: float | None = None) -> int:
    """One pass over ``loader``; returns the number of optimizer steps.

    With ``prox_mu > 0`` each step minimises ``loss + prox_mu / 2 * sum ||p - anchor||^2``.
    """
    model.train()
    steps = 0
    for x, y, w, offset in loader:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x, offset), y, w)
        if prox_mu > 0:
            loss = loss + 0.5 * prox_mu * sum(((p - a) ** 2).sum() for p, a in anchors)
        loss.backward()
        if max_grad_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        steps += 1
    return steps


def model_outputs(model: nn.Module, data: TabularData) -> torch.Tensor:
    """The model's outputs on every row (eval mode, no gradient), shape (n,)."""
    model.eval()
    x, _, _, offset = _tensors(data)
    with torch.no_grad():
        parts = [model(x[i:i + SCORE_CHUNK], offset[i:i + SCORE_CHUNK]) for i in range(0, len(data), SCORE_CHUNK)]
    return torch.cat(parts) if parts else torch.zeros(0)


def mean_loss(model: nn.Module, data: TabularData, loss_fn: Loss) -> float:
    """``loss_fn`` on all rows of ``data`` (eval mode)."""
    _, y, w, _ = _tensors(data)
    with torch.no_grad():
        return float(loss_fn(model_outputs(model, data), y, w))


def fit(model: nn.Module, data: TabularData, opts: TrainOptions, loss_fn: Loss,
        global_arrays: Sequence[np.ndarray] | None = None, privacy: SampleDP | None = None) -> TrainReport:
    """Train ``model`` in place on ``data``; deterministic for ``opts.seed`` (global RNG state untouched).

    With ``privacy``, training is DP-SGD (:class:`SampleDP`): deterministic only for ``privacy.seed``.

    Raises
    ------
    DataError
        If ``data`` has no rows, or ``global_arrays`` do not fit the model.
    ConfigError
        If ``opts.prox_mu > 0`` without ``global_arrays`` or with ``privacy``, or the loss diverges.
    PrivacyBudgetError
        If the training would take epsilon above ``privacy.target_epsilon``.
    """
    if len(data) == 0:
        raise DataError("training data: no rows to train on")
    anchors: list[tuple[nn.Parameter, torch.Tensor]] = []
    if opts.prox_mu > 0:
        if global_arrays is None:
            raise ConfigError(f"TrainOptions.prox_mu: FedProx (prox_mu={opts.prox_mu}) needs the global "
                              f"model's arrays; pass global_arrays")
        if privacy is not None:
            raise ConfigError(f"TrainOptions.prox_mu: FedProx (federation.mu={opts.prox_mu}) cannot be combined with "
                              f"sample-level differential privacy: Opacus clips and noises per-row gradients, and "
                              f"the proximal term's gradient is not one; set federation.mu: 0 or "
                              f"security.dp.level: client")
        anchors = prox_anchors(model, global_arrays)
    t0 = time.perf_counter()
    spent = None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opts.seed)
        loss_before = mean_loss(model, data, loss_fn)
        if privacy is None:
            loader = make_loader(data, opts)
            optimizer = make_optimizer(model, opts)
            steps = 0
            for epoch in range(opts.epochs):
                set_lr(optimizer, opts, epoch)
                steps += run_epoch(model, loader, optimizer, loss_fn, prox_mu=opts.prox_mu, anchors=anchors,
                                   max_grad_norm=opts.max_grad_norm)
        else:
            steps, spent = _fit_private(model, data, opts, loss_fn, privacy)
        loss_after = mean_loss(model, data, loss_fn)
    if not math.isfinite(loss_after):
        raise ConfigError(f"train.lr: local training diverged (loss {loss_after} after {steps} steps at "
                          f"lr={opts.lr}); lower the learning rate or set max_grad_norm")
    seconds = time.perf_counter() - t0
    log.debug("trained %d rows, %d steps in %.3fs: loss %.5g -> %.5g", len(data), steps, seconds,
              loss_before, loss_after)
    return TrainReport(loss_before, loss_after, len(data), steps, seconds, spent)


#: Opacus warnings that fit answers itself: the noise and sampling seeds come from the OS's entropy
#: (see SampleDP.seed), and the per-row gradient hooks fire on inputs that need no gradient.
_OPACUS_NOTICES = ("Secure RNG turned off", "Full backward hook is firing")


def _fit_private(model: nn.Module, data: TabularData, opts: TrainOptions, loss_fn: Loss,
                 privacy: SampleDP) -> tuple[int, PrivacySpent]:
    """DP-SGD: Opacus wraps the model, optimizer and loader, and ``run_epoch`` runs them unchanged."""
    from opacus import PrivacyEngine
    from opacus.accountants import RDPAccountant

    noise_seed, sampling_seed = (int(s) for s in np.random.SeedSequence(privacy.seed).generate_state(2, np.uint64))
    loader = make_loader(data, replace(opts, seed=sampling_seed))
    planned = RDPAccountant()
    planned.history = [*privacy.history, (privacy.noise_multiplier, 1 / len(loader), opts.epochs * len(loader))]
    epsilon = float(planned.get_epsilon(privacy.delta))
    if privacy.target_epsilon is not None and epsilon > privacy.target_epsilon:
        raise PrivacyBudgetError(
            f"security.dp.target_epsilon: {privacy.target_epsilon:g} does not allow this training: {opts.epochs} "
            f"epoch(s) of DP-SGD would bring this institution's epsilon to {epsilon:.4g} (noise_multiplier "
            f"{privacy.noise_multiplier:g}, sample_rate {1 / len(loader):.4g}, delta {privacy.delta:g}, "
            f"{sum(n for *_, n in privacy.history)} steps spent before)")
    with warnings.catch_warnings():
        for notice in _OPACUS_NOTICES:
            warnings.filterwarnings("ignore", message=notice, category=UserWarning)
        engine = PrivacyEngine(accountant="rdp")
        engine.accountant.history = list(privacy.history)
        model.train()  # Opacus validates the mode; mean_loss left it in eval
        dp_model, dp_optimizer, dp_loader = engine.make_private(
            module=model, optimizer=make_optimizer(model, opts), data_loader=loader,
            noise_multiplier=privacy.noise_multiplier, max_grad_norm=privacy.max_grad_norm,
            noise_generator=torch.Generator().manual_seed(noise_seed))
        try:
            steps = 0
            for epoch in range(opts.epochs):
                set_lr(dp_optimizer, opts, epoch)
                steps += run_epoch(dp_model, dp_loader, dp_optimizer, loss_fn)
        finally:
            dp_model.cleanup()
            for p in model.parameters():  # the last step's noiseless sum of clipped gradients: never keep it
                p.__dict__.pop("summed_grad", None)
    history = tuple(engine.accountant.history)
    spent = PrivacySpent(epsilon=float(engine.accountant.get_epsilon(privacy.delta)), delta=privacy.delta,
                         noise_multiplier=privacy.noise_multiplier, max_grad_norm=privacy.max_grad_norm,
                         sample_rate=dp_loader.sample_rate, steps=sum(n for *_, n in history), history=history)
    return steps, spent
