"""Local training: the FedAvg identity, FedProx, determinism, options, and the Opacus hook-up."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.special import expit

from fedx.errors import ConfigError, DataError
from fedx.tasks import TabularData, TrainOptions, get_arrays, get_task, set_arrays
from fedx.tasks.losses import auto_pos_weight, focal, weighted_bce
from fedx.tasks.metrics import unit_deviance
from fedx.tasks.training import make_loader, make_optimizer, run_epoch

SIZES = [7, 60, 450, 1800]


def _start(task_name: str, d: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    model = get_task(task_name).build_model(d, {"kind": "logistic"}, seed=0)
    return [rng.normal(scale=0.5, size=a.shape).astype(np.float32) for a in get_arrays(model)]


def test_fedavg_of_one_full_batch_sgd_step_equals_one_centralized_step(synth: SimpleNamespace) -> None:
    """Needs a MEAN loss and a fixed pos_weight ("auto" differs between institutions)."""
    task, d = get_task("fraud"), 6
    pooled = synth.binary_data(sum(SIZES), d, rate=0.1, seed=3)
    start = _start("fraud", d, seed=1)
    opts = TrainOptions(epochs=1, lr=0.5, optimizer="sgd", full_batch=True, pos_weight=3.0)

    local = []
    for part in synth.split(pooled, SIZES):
        model = task.build_model(d, {"kind": "logistic"}, seed=0)
        set_arrays(model, start)
        assert task.train(model, part, opts).steps == 1
        local.append(get_arrays(model))
    fedavg = [sum(n * arrays[i].astype(np.float64) for n, arrays in zip(SIZES, local)) / sum(SIZES)
              for i in range(len(start))]

    central = task.build_model(d, {"kind": "logistic"}, seed=0)
    set_arrays(central, start)
    task.train(central, pooled, opts)
    for got, want in zip(fedavg, get_arrays(central)):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)

    # ... and the centralized step is the gradient step of the weighted cross-entropy, written in numpy.
    X, y = pooled.X.astype(np.float64), pooled.y.astype(np.float64)
    w, b = start[0][0].astype(np.float64), float(start[1][0])
    p = expit(X @ w + b)
    dz = (p * (3.0 * y + 1 - y) - 3.0 * y) / len(y)
    np.testing.assert_allclose(get_arrays(central)[0][0], w - 0.5 * X.T @ dz, atol=1e-6, rtol=0)
    np.testing.assert_allclose(get_arrays(central)[1][0], b - 0.5 * dz.sum(), atol=1e-6, rtol=0)


def test_auto_pos_weight_breaks_the_fedavg_identity(synth: SimpleNamespace) -> None:
    """The reason the identity above fixes pos_weight: "auto" is local to each institution."""
    task, d = get_task("fraud"), 6
    pooled = synth.binary_data(sum(SIZES), d, rate=0.1, seed=3)
    start = _start("fraud", d, seed=1)
    opts = TrainOptions(epochs=1, lr=0.5, optimizer="sgd", full_batch=True, pos_weight="auto")
    local = []
    for part in synth.split(pooled, SIZES):
        model = task.build_model(d, {"kind": "logistic"}, seed=0)
        set_arrays(model, start)
        task.train(model, part, opts)
        local.append(get_arrays(model)[0])
    central = task.build_model(d, {"kind": "logistic"}, seed=0)
    set_arrays(central, start)
    task.train(central, pooled, opts)
    fedavg = sum(n * a for n, a in zip(SIZES, local)) / sum(SIZES)
    assert np.abs(fedavg - get_arrays(central)[0]).max() > 1e-5  # 10x the tolerance above


def test_fedprox_keeps_the_weights_near_the_global_model(synth: SimpleNamespace) -> None:
    task, d = get_task("disease_risk"), 5
    data = synth.binary_data(2000, d, rate=0.3, seed=4)
    glob = get_arrays(task.build_model(d, {"kind": "mlp", "hidden": [16]}, seed=0))

    def distance(mu: float) -> float:
        model = task.build_model(d, {"kind": "mlp", "hidden": [16]}, seed=0)
        set_arrays(model, glob)
        task.train(model, data, TrainOptions(epochs=3, lr=0.01, prox_mu=mu, seed=1), global_arrays=glob)
        return float(np.sqrt(sum(((a - g) ** 2).sum() for a, g in zip(get_arrays(model), glob))))

    free, prox = distance(0.0), distance(10.0)
    assert prox < 0.5 * free, (prox, free)


def test_fedprox_needs_the_global_arrays(synth: SimpleNamespace) -> None:
    task = get_task("fraud")
    data = synth.binary_data(100, 3, rate=0.2, seed=0)
    model = task.build_model(3, {"kind": "logistic"}, seed=0)
    with pytest.raises(ConfigError, match="prox_mu.*global_arrays"):
        task.train(model, data, TrainOptions(prox_mu=0.1))
    with pytest.raises(DataError, match=r"global_arrays: expected 2 arrays"):
        task.train(model, data, TrainOptions(prox_mu=0.1), global_arrays=get_arrays(model)[:1])


def test_lr_decay_equals_epochs_run_one_at_a_time_at_the_decayed_rates(synth: SimpleNamespace) -> None:
    """Full-batch SGD keeps no state between epochs, so 4 epochs at ``lr * 0.5 ** (epoch // 2)`` equal four
    one-epoch calls at lr, lr, lr/2, lr/2; a constant rate gives a different model."""
    task, d = get_task("fraud"), 5
    data = synth.binary_data(400, d, rate=0.2, seed=9)
    start = _start("fraud", d, seed=2)

    def trained(*runs: TrainOptions) -> list[np.ndarray]:
        model = task.build_model(d, {"kind": "logistic"}, seed=0)
        set_arrays(model, start)
        for opts in runs:
            task.train(model, data, opts)
        return get_arrays(model)

    step = {"optimizer": "sgd", "full_batch": True, "pos_weight": 2.0}
    scheduled = trained(TrainOptions(epochs=4, lr=0.8, lr_decay=0.5, decay_every=2, **step))
    by_hand = trained(*(TrainOptions(epochs=1, lr=lr, **step) for lr in (0.8, 0.8, 0.4, 0.4)))
    constant = trained(TrainOptions(epochs=4, lr=0.8, **step))
    for a, b, c in zip(scheduled, by_hand, constant):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert max(float(np.abs(a - c).max()) for a, c in zip(scheduled, constant)) > 1e-3


def test_the_round_sets_the_decayed_learning_rate() -> None:
    """Round r trains at ``train.lr * train.lr_decay ** (r - 1)``; baselines decay every local_epochs epochs."""
    from fedx.config import config_from_dict

    cfg = config_from_dict({"name": "t", "task": "fraud", "data": {"source": "synthetic/transactions", "target": "is_fraud"},
                            "train": {"lr": 0.02, "lr_decay": 0.5}, "federation": {"local_epochs": 3}})
    assert [TrainOptions.from_config(cfg, "bank_a", r, 3).lr for r in (1, 2, 4)] == pytest.approx([0.02, 0.01, 0.0025])
    assert TrainOptions.from_config(cfg, "bank_a", 4, 3).lr_decay == 1.0  # no decay inside a round


def test_report_counts_steps_and_loss_goes_down(synth: SimpleNamespace) -> None:
    task = get_task("disease_risk")
    data = synth.binary_data(1000, 4, rate=0.3, seed=6)
    model = task.build_model(4, {"kind": "mlp", "hidden": [8]}, seed=0)
    report = task.train(model, data, TrainOptions(epochs=3, batch_size=128, lr=0.02))
    assert report.n_examples == 1000 and report.steps == 3 * 8 and report.seconds > 0
    assert report.loss_after < report.loss_before


@pytest.mark.parametrize("task_name", ["claim_frequency", "claim_severity"])
def test_glm_training_loss_is_the_mean_deviance(task_name: str) -> None:
    """The torch loss and the numpy metric agree: loss_before is the mean weighted deviance at the start."""
    task = get_task(task_name)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    if task_name == "claim_frequency":
        data = TabularData(X, rng.poisson(0.5, 300), offset=np.log(rng.uniform(0.2, 1.0, 300)))
        weight = np.ones(300)
    else:
        data = TabularData(X, rng.gamma(2.0, 1.5, 300), weight=rng.integers(1, 4, 300))
        weight = data.weight.astype(np.float64)
    model = task.build_model(2, {"kind": "glm"}, seed=0)
    mu = task.predict(model, data)
    report = task.train(model, data, TrainOptions(epochs=1, lr=0.01))
    expected = (weight * unit_deviance(task.family, data.y, mu)).mean()
    assert report.loss_before == pytest.approx(expected, rel=1e-5)


def test_binary_losses_match_their_formulas() -> None:
    z = torch.tensor([-3.0, -0.5, 0.0, 1.2, 4.0])
    y = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0])
    w = torch.tensor([1.0, 2.0, 1.0, 0.5, 1.0])
    p, yn, wn = expit(z.numpy().astype(np.float64)), y.numpy(), w.numpy()
    bce = -(3.0 * yn * np.log(p) + (1 - yn) * np.log(1 - p))
    assert float(weighted_bce(3.0)(z, y, w)) == pytest.approx((wn * bce).mean(), rel=1e-6)
    fl = -(3.0 * yn * (1 - p) ** 2 * np.log(p) + (1 - yn) * p ** 2 * np.log(1 - p))
    assert float(focal(3.0)(z, y, w)) == pytest.approx((wn * fl).mean(), rel=1e-6)
    assert float(focal(3.0, gamma=0.0)(z, y, w)) == pytest.approx(float(weighted_bce(3.0)(z, y, w)), rel=1e-6)


def test_auto_pos_weight() -> None:
    y = np.r_[np.ones(10), np.zeros(90)]
    assert auto_pos_weight(y) == pytest.approx(3.0)
    assert auto_pos_weight(y, np.r_[np.full(10, 4.0), np.ones(90)]) == pytest.approx(1.5)
    assert auto_pos_weight(np.zeros(5)) == 1.0  # no positives: nothing to weigh


def test_focal_loss_trains(synth: SimpleNamespace) -> None:
    task = get_task("fraud")
    train, test = synth.split(synth.binary_data(8000, 4, rate=0.05, seed=8), [6000, 2000])
    model = task.build_model(4, {"kind": "mlp", "hidden": [16]}, seed=0)
    report = task.train(model, train, TrainOptions(epochs=4, loss="focal", lr=0.01))
    assert report.loss_after < report.loss_before
    assert task.metrics(test, task.predict(model, test))["roc_auc"] > 0.85


@pytest.mark.parametrize(("field", "value", "match"), [
    ("epochs", 0, r"TrainOptions\.epochs: expected an integer >= 1"),
    ("batch_size", 1.5, r"TrainOptions\.batch_size"),
    ("lr", 0.0, r"TrainOptions\.lr: expected a number > 0"),
    ("lr", float("nan"), r"TrainOptions\.lr"),
    ("optimizer", "rmsprop", r"TrainOptions\.optimizer: expected adam or sgd"),
    ("weight_decay", -1.0, r"TrainOptions\.weight_decay: expected a number >= 0"),
    ("prox_mu", -0.1, r"TrainOptions\.prox_mu"),
    ("pos_weight", "sqrt", r"TrainOptions\.pos_weight: expected 'auto', None or a number > 0"),
    ("pos_weight", 0.0, r"TrainOptions\.pos_weight"),
    ("max_grad_norm", 0.0, r"TrainOptions\.max_grad_norm"),
    ("lr_decay", 0.0, r"TrainOptions\.lr_decay: expected a number > 0"),
    ("lr_decay", 1.5, r"TrainOptions\.lr_decay: expected a number in \(0, 1\]"),
    ("decay_every", 0, r"TrainOptions\.decay_every: expected an integer >= 1"),
])
def test_bad_train_options_are_rejected(field: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainOptions(**{field: value})


def test_a_loss_the_task_does_not_take_is_rejected(synth: SimpleNamespace) -> None:
    data = synth.binary_data(50, 2, rate=0.2, seed=0)
    task = get_task("fraud")
    with pytest.raises(ConfigError, match=r"train\.loss: task 'fraud' takes auto or bce or focal, got 'poisson'"):
        task.train(task.build_model(2, {"kind": "logistic"}, seed=0), data, TrainOptions(loss="poisson"))


def test_no_training_rows_is_a_data_error() -> None:
    task = get_task("fraud")
    with pytest.raises(DataError, match="no rows"):
        task.train(task.build_model(2, {"kind": "logistic"}, seed=0), TabularData(np.zeros((0, 2)), np.zeros(0)),
                   TrainOptions())


def test_divergence_is_reported(synth: SimpleNamespace) -> None:
    rng = np.random.default_rng(0)
    data = TabularData(rng.normal(size=(200, 2)) * 100, rng.poisson(3.0, 200).astype(float))
    task = get_task("claim_frequency")
    with pytest.raises(ConfigError, match=r"train\.lr: local training diverged"):
        task.train(task.build_model(2, {"kind": "glm"}, seed=0), data,
                   TrainOptions(epochs=5, lr=10.0, optimizer="sgd", full_batch=True))


@pytest.mark.filterwarnings("ignore::UserWarning")  # Opacus: secure RNG off; backward hooks on inputs
def test_the_loop_accepts_opacus_wrapped_objects(synth: SimpleNamespace) -> None:
    """make_loader / make_optimizer / run_epoch take what PrivacyEngine.make_private returns."""
    opacus = pytest.importorskip("opacus")
    task = get_task("fraud")
    data = synth.binary_data(1000, 4, rate=0.1, seed=9)
    opts = TrainOptions(batch_size=100, lr=0.05, optimizer="sgd", pos_weight=2.0)
    model = task.build_model(4, {"kind": "mlp", "hidden": [8]}, seed=0)
    before = get_arrays(model)
    engine = opacus.PrivacyEngine(accountant="rdp")
    dp_model, dp_opt, dp_loader = engine.make_private(
        module=model, optimizer=make_optimizer(model, opts), data_loader=make_loader(data, opts),
        noise_multiplier=1.0, max_grad_norm=1.0)
    steps = run_epoch(dp_model, dp_loader, dp_opt, task.make_loss(data, opts))
    assert steps > 0 and 0 < engine.get_epsilon(delta=1e-5) < 10
    assert not np.array_equal(get_arrays(model)[0], before[0])
