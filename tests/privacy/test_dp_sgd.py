"""Sample-level DP-SGD in local training (Opacus): rows clipped, epsilon from the accountant, default path untouched."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from scipy.special import expit

from fedx.errors import ConfigError, PrivacyBudgetError
from fedx.tasks import TabularData, TrainOptions, get_task
from fedx.tasks.params import get_arrays, set_arrays
from fedx.tasks.training import (
    SampleDP,
    make_loader,
    make_optimizer,
    mean_loss,
    run_epoch,
)

pytestmark = pytest.mark.filterwarnings("ignore:Optimal order is the:UserWarning")  # epsilon = inf without noise

TASK = get_task("fraud")
MODEL = {"kind": "mlp", "hidden": [8]}


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def rows(n: int = 300, d: int = 4, seed: int = 0, scale: float = 1.0) -> TabularData:
    rng = np.random.default_rng(seed)
    X = (scale * rng.normal(size=(n, d))).astype(np.float32)
    y = (rng.random(n) < expit(2 * X[:, 0] - 1)).astype(np.float32)
    return TabularData(X, y)


def model(d: int = 4, dropout: float = 0.0) -> torch.nn.Module:
    return TASK.build_model(d, {**MODEL, "dropout": dropout}, seed=0)


def train(data: TabularData, opts: TrainOptions, privacy: SampleDP | None, net: torch.nn.Module | None = None):
    net = net or model(data.X.shape[1])
    return TASK.train(net, data, opts, privacy=privacy), net


def opacus_epsilon(sigma: float, q: float, steps: int, delta: float) -> float:
    orders = RDPAccountant.DEFAULT_ALPHAS
    eps, _ = get_privacy_spent(orders=orders, rdp=compute_rdp(q=q, noise_multiplier=sigma, steps=steps,
                                                               orders=orders), delta=delta)
    return float(eps)


def test_epsilon_is_the_accountants_and_grows_with_epochs() -> None:
    data, sigma, delta = rows(), 1.1, 1e-5
    one, _ = train(data, TrainOptions(epochs=1, batch_size=50, lr=0.05), SampleDP(sigma, 1.0, delta, seed=1))
    three, _ = train(data, TrainOptions(epochs=3, batch_size=50, lr=0.05), SampleDP(sigma, 1.0, delta, seed=1))
    assert one.privacy is not None and three.privacy is not None
    assert one.privacy.sample_rate == pytest.approx(50 / 300)
    assert (one.steps, three.steps, one.privacy.steps, three.privacy.steps) == (6, 18, 6, 18)
    assert one.privacy.epsilon == pytest.approx(opacus_epsilon(sigma, 1 / 6, 6, delta), rel=1e-12)
    assert three.privacy.epsilon == pytest.approx(opacus_epsilon(sigma, 1 / 6, 18, delta), rel=1e-12)
    assert 0 < one.privacy.epsilon < three.privacy.epsilon < math.inf
    assert (one.privacy.delta, one.privacy.noise_multiplier, one.privacy.max_grad_norm) == (delta, sigma, 1.0)


def test_epsilon_accumulates_across_rounds_through_the_history() -> None:
    data, opts = rows(), TrainOptions(epochs=1, batch_size=50, lr=0.05)
    first, net = train(data, opts, SampleDP(1.1, 1.0, 1e-5))
    second, _ = train(data, opts, SampleDP(1.1, 1.0, 1e-5, history=first.privacy.history), net)
    assert second.privacy.steps == 12
    assert second.privacy.history == ((1.1, 1 / 6, 12),)
    assert second.privacy.epsilon == pytest.approx(opacus_epsilon(1.1, 1 / 6, 12, 1e-5), rel=1e-12)


def per_row_clipped_mean_gradient(net: torch.nn.Module, data: TabularData, opts: TrainOptions,
                                  max_grad_norm: float) -> tuple[list[np.ndarray], float]:
    """Each row's gradient by plain autograd, clipped to ``max_grad_norm``, averaged; and the largest row norm."""
    loss_fn = TASK.make_loss(data, opts)
    x, y = torch.from_numpy(data.X), torch.from_numpy(data.y)
    total = [torch.zeros_like(p, dtype=torch.float64) for p in net.parameters()]
    largest = 0.0
    for i in range(len(data)):
        net.zero_grad()
        loss_fn(net(x[i:i + 1], torch.zeros(1)), y[i:i + 1], torch.ones(1)).backward()
        grads = [p.grad.double() for p in net.parameters()]
        norm = float(torch.sqrt(sum((g**2).sum() for g in grads)))
        largest = max(largest, norm)
        for t, g in zip(total, grads):
            t += g * min(1.0, max_grad_norm / norm)
    return [(t / len(data)).numpy() for t in total], largest


def test_each_rows_gradient_is_clipped() -> None:
    """Without noise, one full-batch SGD step moves the weights by lr * mean of the clipped per-row gradients."""
    data, lr, c = rows(n=64, scale=5.0), 0.5, 0.05
    opts = TrainOptions(epochs=1, lr=lr, optimizer="sgd", full_batch=True, pos_weight=3.0)
    net = model()
    start = get_arrays(net)
    want, largest = per_row_clipped_mean_gradient(net, data, opts, c)
    assert largest > 10 * c  # clipping is active on these rows
    report, _ = train(data, opts, SampleDP(0.0, c, 1e-5, seed=0), net)
    assert report.steps == 1 and report.privacy.sample_rate == 1.0 and report.privacy.epsilon == math.inf
    moved = [(s.astype(np.float64) - e.astype(np.float64)) / lr for s, e in zip(start, get_arrays(net))]
    for m, w in zip(moved, want):
        np.testing.assert_allclose(m, w, rtol=1e-4, atol=1e-6)
    assert math.sqrt(sum(float((m**2).sum()) for m in moved)) <= c * (1 + 1e-5)
    plain = model()
    train(data, opts, None, plain)
    assert math.sqrt(sum(float(((s - e) ** 2).sum()) for s, e in zip(start, get_arrays(plain)))) > 10 * lr * c


def test_the_default_path_is_bit_identical_to_the_plain_loop() -> None:
    """privacy=None runs exactly the loop fit ran before DP existed."""
    data = rows()
    opts = TrainOptions(epochs=2, batch_size=32, lr=0.01, seed=5)
    report, net = train(data, opts, None, model(dropout=0.3))  # dropout: the global torch seed matters too
    reference = model(dropout=0.3)
    loss_fn = TASK.make_loss(data, opts)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opts.seed)
        mean_loss(reference, data, loss_fn)
        loader, optimizer = make_loader(data, opts), make_optimizer(reference, opts)
        steps = sum(run_epoch(reference, loader, optimizer, loss_fn) for _ in range(opts.epochs))
    assert report.privacy is None and report.steps == steps
    for a, b in zip(get_arrays(net), get_arrays(reference)):
        np.testing.assert_array_equal(a, b)


def test_noise_is_seeded_only_on_request_and_the_model_is_left_clean() -> None:
    data, opts = rows(), TrainOptions(epochs=1, batch_size=50, lr=0.05)
    rng_before = torch.random.get_rng_state()
    seeded = [get_arrays(train(data, opts, SampleDP(1.0, 1.0, 1e-5, seed=7))[1]) for _ in range(2)]
    fresh = [get_arrays(train(data, opts, SampleDP(1.0, 1.0, 1e-5))[1]) for _ in range(2)]
    for a, b in zip(*seeded):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(*fresh))
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    _, net = train(data, opts, SampleDP(1.0, 1.0, 1e-5))
    assert all(not vars(p) for p in net.parameters())  # no grad_sample, summed_grad or other Opacus attribute
    assert all(not m._forward_hooks and not m._backward_hooks for m in net.modules())
    again, _ = train(data, opts, None, net)  # the model trains normally afterwards
    assert again.privacy is None


def test_the_budget_refuses_training_before_it_starts() -> None:
    data, opts = rows(), TrainOptions(epochs=2, batch_size=50, lr=0.05)
    net = model()
    start = get_arrays(net)
    want = opacus_epsilon(1.0, 1 / 6, 12, 1e-5)
    with pytest.raises(PrivacyBudgetError, match=rf"target_epsilon: 1 does not allow this training: 2 epoch\(s\) "
                                                 rf"of DP-SGD would bring this institution's epsilon to {want:.4g}"):
        train(data, opts, SampleDP(1.0, 1.0, 1e-5, target_epsilon=1.0), net)
    for a, b in zip(get_arrays(net), start):
        np.testing.assert_array_equal(a, b)
    report, _ = train(data, opts, SampleDP(1.0, 1.0, 1e-5, target_epsilon=want * 1.001), net)
    assert report.privacy.epsilon == pytest.approx(want, rel=1e-12)


def test_fedprox_with_sample_level_dp_is_refused() -> None:
    net = model()
    opts = TrainOptions(prox_mu=0.1)
    with pytest.raises(ConfigError, match=r"prox_mu: FedProx \(federation\.mu=0\.1\) cannot be combined with "
                                          r"sample-level differential privacy"):
        TASK.train(net, rows(), opts, global_arrays=get_arrays(net), privacy=SampleDP(1.0, 1.0, 1e-5))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"noise_multiplier": -1.0}, r"SampleDP\.noise_multiplier: expected a number >= 0"),
    ({"max_grad_norm": 0.0}, r"SampleDP\.max_grad_norm: expected a number > 0"),
    ({"delta": 1.0}, r"SampleDP\.delta: expected a number in \(0, 1\)"),
    ({"target_epsilon": 0.0}, r"SampleDP\.target_epsilon: expected None or a number > 0"),
    ({"history": [(1.0, 0.5)]}, r"SampleDP\.history: expected \(noise_multiplier, sample_rate, steps\) triples"),
])
def test_bad_sample_dp_settings_are_refused(kwargs: dict, message: str) -> None:
    settings = {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "delta": 1e-5, **kwargs}
    with pytest.raises(ConfigError, match=message):
        SampleDP(**settings)


def test_glm_tasks_train_privately_too() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 3)).astype(np.float32)
    exposure = rng.uniform(0.5, 1.0, 200)
    data = TabularData(X, rng.poisson(exposure * np.exp(0.3 * X[:, 0])).astype(np.float32),
                       offset=np.log(exposure).astype(np.float32))
    task = get_task("claim_frequency")
    net = task.build_model(3, {"kind": "glm"}, seed=0)
    set_arrays(net, [np.zeros_like(a) for a in get_arrays(net)])
    report = task.train(net, data, TrainOptions(epochs=2, batch_size=40, lr=0.05),
                        privacy=SampleDP(1.0, 1.0, 1e-5, seed=3))
    assert report.privacy.epsilon == pytest.approx(opacus_epsilon(1.0, 0.2, 10, 1e-5), rel=1e-12)
    assert report.loss_after < report.loss_before
