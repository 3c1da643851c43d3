"""FedAdam under encryption reaches the model that plaintext FedAdam, with the server stepping, reaches.

Under encryption the server only adds ciphertexts; every institution decrypts the same aggregate and
runs the Adam step itself. The oracle here is independent of that path: the same institutions train in
plaintext, in-process, and Flower's own ``FedAdam`` strategy steps the global model from their replies,
as a plaintext server would. Three claims are checked against one encrypted simulation:

1. every institution ends with the same model, and it is Flower's FedAdam applied to the decrypted
   aggregates (float32 rounding apart); the digests that travelled are those of that state;
2. each round's decrypted aggregate is the plaintext weighted mean of the clients' deltas within the
   precision that the preset states (``Preset.precision``);
3. the final model equals the plaintext trajectory within a bound derived from that precision, carried
   through Adam's step and through local training (see :func:`_trajectory_bound`).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.serverapp.strategy import FedAdam

import fedx
from fedx import he
from fedx.aggregators import FedAdamRule, ModelState, weighted_mean
from fedx.config import Config, config_from_dict
from fedx.data.institutions import institution_tables
from fedx.data.preprocess import Preprocessor, merge_levels
from fedx.institution import Institution, NodeSpec
from fedx.model import FedxModel

pytestmark = pytest.mark.slow

ROUNDS = 3
EPS32 = float(np.finfo(np.float32).eps)


def _load_fedopt_helpers() -> Any:
    """tests/aggregators/test_fedopt.py: its Flower reply builder and message identity (reused, not copied)."""
    path = Path(__file__).resolve().parents[1] / "aggregators" / "test_fedopt.py"
    spec = importlib.util.spec_from_file_location("_fedopt_oracle", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_fedopt = _load_fedopt_helpers()


@dataclass
class Rounds:
    """What the test compares, round by round."""

    cfg: Config
    out: Path
    final: dict[str, list[np.ndarray]]          # each institution's saved model
    decrypted: list[list[np.ndarray]]           # each round's aggregate, decrypted with the run's key
    stated: list[float]                         # the preset's error bound of each aggregate
    clipped: list[int]
    replay: list[list[np.ndarray]]              # Flower's FedAdam on the decrypted aggregates: x_0 .. x_R
    plain_mean_on_replay: list[list[np.ndarray]]   # plaintext mean delta of round r, trained from replay[r-1]
    plain: list[list[np.ndarray]]               # the plaintext trajectory, Flower's FedAdam stepping: x_0 .. x_R
    plain_aggregates: list[list[np.ndarray]]
    lipschitz: float                            # lr * L of local SGD (must be <= 2 for nonexpansive steps)


def _flower_fedadam(cfg: Config) -> FedAdam:
    opt = cfg.federation.server_optimizer
    return FedAdam(eta=opt.lr, beta_1=opt.beta1, beta_2=opt.beta2, tau=opt.tau)


def _flower_step(strategy: FedAdam, server_round: int, x: list[np.ndarray], client_models: list[list[np.ndarray]],
                 weights: list[float]) -> list[np.ndarray]:
    # What FedOpt's configure_train stores before aggregate_train (as in test_fedopt).
    strategy.current_arrays = {f"{i}": a for i, a in enumerate(x)}
    rec, _ = strategy.aggregate_train(server_round, [_fedopt._reply(m, w) for m, w in zip(client_models, weights)])
    return [rec[f"{i}"].numpy().astype(np.float32) for i in range(len(x))]


def _institutions(cfg: Config, folder: Path, prep: Preprocessor) -> list[Institution]:
    """The run's institutions, in plaintext and in-process, with the run's shared preprocessing."""
    plain = config_from_dict({**cfg.to_dict(), "security": {**cfg.to_dict()["security"], "encryption": "none"}},
                             base_dir=cfg.base_dir)
    insts = []
    for name, df in institution_tables(plain).items():
        path = folder / f"{name}.parquet"
        df.to_parquet(path, index=False)
        insts.append(Institution(NodeSpec(name, path, folder / name), plain))
    levels = merge_levels([i.levels() for i in insts])
    total = np.sum([i.moments(levels)[0] for i in insts], axis=0)
    for inst in insts:
        inst.setup(levels, [total])     # the initial model: built from cfg.seed, as in the run
        # The run fitted its preprocessing from moments summed under HE (exact to the preset's sum
        # precision); train on the very same preprocessing, so that only the aggregation differs.
        inst.state.preprocessor = prep.to_dict()
    return insts


def _round_deltas(insts: list[Institution], server_round: int, x: list[np.ndarray]) -> tuple[list, list[float]]:
    deltas, weights = [], []
    for inst in insts:
        inst.sync(server_round - 1, params=x)
        delta, metrics = inst.train(server_round, total_weight=1.0)
        deltas.append(delta)
        weights.append(metrics["num-examples"])
    return deltas, weights


def _local_sgd_lipschitz(cfg: Config, insts: list[Institution], prep: Preprocessor) -> float:
    """``lr * L`` for the clients' SGD steps on a mean BCE (pos_weight 1) of a logistic model.

    Each row's loss has Hessian ``p (1 - p) x x^T <= x x^T / 4`` in the weights and bias, so every
    minibatch loss is convex and L-smooth with ``L <= max ||(x, 1)||^2 / 4``.
    """
    rows = np.concatenate([inst.tabular(prep, inst.split()[0]).X for inst in insts]).astype(np.float64)
    return cfg.train.lr * float(np.max(np.sum(rows * rows, axis=1) + 1.0)) / 4.0


@pytest.fixture(scope="module")
def rounds(small_csv: Path, small_config, tmp_path_factory: pytest.TempPathFactory) -> Rounds:
    doc = small_config(small_csv,
                       train={"optimizer": "sgd", "lr": 0.1, "pos_weight": 1.0},
                       federation={"aggregator": "fedadam", "rounds": ROUNDS, "server_optimizer": {"lr": 0.05}},
                       security={"encryption": "bfv-compact"}, report={"baselines": []})
    cfg = config_from_dict(doc)
    out = tmp_path_factory.mktemp("fedadam-bfv")
    result = fedx.run(cfg, out / "run", progress=False)
    run = result.out_dir
    names = list(result.per_institution)
    saved = {n: FedxModel.load(run / "institutions" / n / "model.pt") for n in names}
    final = {n: [p.detach().numpy().copy() for p in m.net.state_dict().values()] for n, m in saved.items()}
    prep = saved[names[0]].preprocessor
    keys = he.load_keys(run / "keys")

    decrypted, stated, clipped = [], [], []
    for r in range(1, ROUNDS + 1):
        blob = (run / "checkpoint" / "blobs" / f"agg_{r:06d}.bin").read_bytes()   # what the server stored
        header = he.inspect(blob)
        arrays, _ = he.decrypt(keys.secret, blob)
        decrypted.append([np.asarray(a, dtype=np.float64) for a in arrays])
        stated.append(keys.secret.preset.precision("mean", header.n_summed, header.rho, header.bound).abs)
        clipped.append(int(header.report.clipped))

    insts = _institutions(cfg, out, prep)
    x0 = [p.copy() for p in insts[0].state.model.params]
    with pytest.MonkeyPatch.context() as mp:
        # Flower stamps messages with the task that creates them; outside a run, give it one.
        from flwr.supercore.task_identity import TaskIdentity

        for attr, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", 0)):
            mp.setattr(TaskIdentity, attr, value)
        replay, on_replay = [x0], []
        strategy = _flower_fedadam(cfg)
        for r in range(1, ROUNDS + 1):
            x = replay[-1]
            deltas, weights = _round_deltas(insts, r, x)
            on_replay.append(weighted_mean(deltas, weights))
            agg = decrypted[r - 1]
            replay.append(_flower_step(strategy, r, x, [[a + d for a, d in zip(x, agg)]], [1.0]))
        plain, plain_aggs = [x0], []
        strategy = _flower_fedadam(cfg)
        for r in range(1, ROUNDS + 1):
            x = plain[-1]
            deltas, weights = _round_deltas(insts, r, x)
            plain_aggs.append([np.asarray(a, dtype=np.float64) for a in weighted_mean(deltas, weights)])
            plain.append(_flower_step(strategy, r, x, [[a + d for a, d in zip(x, dl)] for dl in deltas], weights))
    return Rounds(cfg, run, final, decrypted, stated, clipped, replay, on_replay, plain, plain_aggs,
                  _local_sgd_lipschitz(cfg, insts, prep))


def test_every_institution_ends_with_flower_fedadam_on_the_decrypted_aggregates(rounds: Rounds) -> None:
    models = list(rounds.final.values())
    assert len(models) == 3
    for other in models[1:]:
        for a, b in zip(models[0], other):
            np.testing.assert_array_equal(a, b)    # same aggregates, same deterministic step
    x0, last = rounds.replay[0], rounds.replay[-1]
    for got, want, start in zip(models[0], last, x0):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)   # float32 rounding (as in test_fedopt)
        assert np.max(np.abs(got - start)) > 1e-2                       # Adam moved the model
    # The digests that travelled each round are those of the Adam state (params, m, v) that the
    # institutions reach from the decrypted aggregates: a diverged institution would not match.
    index = json.loads((rounds.out / "checkpoint" / "index.json").read_text())
    opt = rounds.cfg.federation.server_optimizer
    rule = FedAdamRule(opt.lr, opt.beta1, opt.beta2, opt.tau)
    state = ModelState([p.copy() for p in x0], {}, 0)
    assert index["digests"]["0"] == state.digest()
    for r, agg in enumerate(rounds.decrypted, start=1):
        state = rule.apply(state, [a.astype(np.float32) for a in agg])
        assert index["digests"][str(r)] == state.digest(), r


def test_each_decrypted_aggregate_is_the_plaintext_mean_within_the_stated_precision(rounds: Rounds) -> None:
    for r, (dec, plain, bound) in enumerate(zip(rounds.decrypted, rounds.plain_mean_on_replay, rounds.stated), 1):
        assert rounds.clipped[r - 1] == 0          # no value beyond the clip range: the bound applies as stated
        for d, p in zip(dec, plain):
            p = np.asarray(p, dtype=np.float64)
            # The stated bound holds before the cast to float32; the decrypted values and the
            # re-trained deltas are float32 (one rounding each).
            tol = bound + 2.0**-52 * np.abs(p) + 2 * EPS32 * np.abs(p)
            assert np.all(np.abs(d - p) <= tol), (r, float(np.max(np.abs(d - p))), bound)


def _trajectory_bound(cfg: Config, aggregates: list[list[np.ndarray]], params: list[list[np.ndarray]],
                      stated: list[float], lipschitz: float) -> list[np.ndarray]:
    """Per-coordinate bound on |encrypted - plaintext| of the final model, to first order in the HE error.

    Round s's encrypted pseudo-gradient differs from the plaintext one by at most
    ``eps_s = stated_s + 2 * E_{s-1}``: the preset's stated error, plus the change of the clients'
    deltas when they start from a model ``E_{s-1}`` away in L2 (SGD with ``lr * L <= 2`` on convex
    minibatch losses does not expand distances, so a delta moves by at most twice the start's move).
    Flower's step ``eta_t * m / (sqrt(v) + tau)`` then moves by at most
    ``eta_t * sum_s |d step / d d_s| * eps_s``, with the exact derivative
    ``a_s / (S + tau) - m * b_s * d_s / (S * (S + tau)^2)`` (``a_s = (1 - beta1) beta1^(t-s)``,
    ``b_s = (1 - beta2) beta2^(t-s)``, ``S = sqrt(v)``) taken on the plaintext trajectory. Terms of
    second order in ``eps / (S + tau)`` are left out. Float32 rounding adds one ulp per round.
    """
    assert lipschitz <= 2.0
    opt = cfg.federation.server_optimizer
    b1, b2, tau = opt.beta1, opt.beta2, opt.tau
    err = [np.zeros_like(a, dtype=np.float64) for a in aggregates[0]]
    eps: list[float] = []
    for t in range(1, len(aggregates) + 1):
        moved = float(np.sqrt(sum(np.sum(e * e) for e in err)))
        scale = max(float(np.max(np.abs(a))) for a in aggregates[t - 1])
        eps.append(stated[t - 1] + 2.0 * moved + 2 * EPS32 * scale)
        eta = opt.lr * np.sqrt(1.0 - b2 ** (t + 1.0)) / (1.0 - b1 ** (t + 1.0))   # Flower's bias correction
        for j in range(len(err)):
            d = [np.asarray(aggregates[s][j], dtype=np.float64) for s in range(t)]
            a = [(1 - b1) * b1 ** (t - 1 - s) for s in range(t)]
            b = [(1 - b2) * b2 ** (t - 1 - s) for s in range(t)]
            m = sum(a[s] * d[s] for s in range(t))
            sv = np.sqrt(sum(b[s] * d[s] ** 2 for s in range(t)))
            safe = np.where(sv > 0, sv, 1.0)
            step = eta * sum(np.abs(a[s] / (sv + tau) - m * b[s] * d[s] / (safe * (sv + tau) ** 2)) * eps[s]
                             for s in range(t))
            err[j] = err[j] + step + EPS32 * np.abs(params[t][j])
    return err


def test_encrypted_fedadam_ends_with_the_plaintext_server_stepped_model(rounds: Rounds) -> None:
    assert rounds.lipschitz <= 2.0, f"local SGD lr * L = {rounds.lipschitz:.3g}: the bound below needs <= 2"
    bound = _trajectory_bound(rounds.cfg, rounds.plain_aggregates, rounds.plain, rounds.stated, rounds.lipschitz)
    encrypted = next(iter(rounds.final.values()))
    worst = []
    for enc, plain, b, start in zip(encrypted, rounds.plain[-1], bound, rounds.plain[0]):
        diff = np.abs(enc.astype(np.float64) - plain)
        worst.append((float(diff.max()), float(b.max())))
        assert np.all(diff <= b), (float(diff.max()), float(b.max()))
        # The bound is far below a server step: it can tell FedAdam from other rules.
        assert float(b.max()) < 0.1 * float(np.max(np.abs(plain - start)))
    print(f"\nencrypted vs plaintext FedAdam after {ROUNDS} rounds: max |diff| and bound per array: {worst}; "
          f"stated HE precision per round {rounds.stated}")
