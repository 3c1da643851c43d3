"""Client-level DP: clipping bounds each institution, the noise has the configured spread, epsilon is the RDP value."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from scipy import stats

from fedx.config import DPConfig
from fedx.errors import ConfigError, PrivacyBudgetError, UpdateRejected
from fedx.privacy.dp import (
    ClientDPAccountant,
    central_noise,
    check_budget,
    clip_update,
    effective_noise_multiplier,
    noise_share,
    noised_value_bound,
    privatize_update,
)

#: Opacus' default RDP orders, written out here so that a change in Opacus shows up as a failure.
ALPHAS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
SHAPES = [(200, 150), (20_000,)]  # 50,000 values
N_VALUES = 50_000


def gaussian_epsilon(sigma: float, rounds: int, delta: float) -> float:
    """Epsilon of ``rounds`` Gaussian mechanisms (sensitivity 1, no sampling), computed here with numpy.

    RDP of one round at order a is a / (2 sigma^2) exactly; the conversion to (epsilon, delta) is the one in
    opacus.accountants.analysis.rdp.get_privacy_spent (Balle et al. 2020, Theorem 21):
    eps(a) = rdp(a) - (log(delta) + log(a)) / (a - 1) + log((a - 1) / a), minimised over the orders.
    """
    a = np.asarray(ALPHAS, dtype=np.float64)
    rdp = rounds * a / (2 * sigma**2)
    return float(np.min(rdp - (np.log(delta) + np.log(a)) / (a - 1) + np.log((a - 1) / a)))


def assert_std(values: np.ndarray, want: float, what: str) -> None:
    """The sample std of ``values`` is ``want`` within 4 standard errors (sqrt(1 / 2N) relative); zero mean; normal."""
    x = np.asarray(values, dtype=np.float64).ravel()
    tol = 4 / math.sqrt(2 * x.size)
    got = float(np.sqrt(np.mean(x**2)))  # the mean is known to be 0
    assert abs(got / want - 1) < tol, f"{what}: std {got:.6g}, expected {want:.6g} (tolerance {tol:.2%})"
    assert abs(x.mean()) < 4 * want / math.sqrt(x.size), f"{what}: mean {x.mean():.3g} is not 0"
    assert stats.kstest(x / want, "norm").pvalue > 1e-3, f"{what}: not normal"


def zeros() -> list[np.ndarray]:
    return [np.zeros(s, dtype=np.float32) for s in SHAPES]


# --------------------------------------------------------------------------- clipping


@pytest.mark.parametrize("scale", [1e-6, 1e-2, 1.0, 3.0, 1e3, 1e6])
@pytest.mark.parametrize("clip", [0.1, 1.0, 50.0])
def test_clipping_bounds_the_norm_and_keeps_the_direction(scale: float, clip: float) -> None:
    rng = np.random.default_rng(int(scale * 1e6) % 2**32 + int(clip * 10))
    update = [(scale * rng.standard_t(3, size=s)).astype(dt) for s, dt in
              zip([(7, 5), (5,), (300,)], [np.float32, np.float32, np.float64])]
    clipped, norm, factor = clip_update(update, clip)
    flat = np.concatenate([a.astype(np.float64).ravel() for a in update])
    out = np.concatenate([a.astype(np.float64).ravel() for a in clipped])
    assert norm == pytest.approx(np.linalg.norm(flat), rel=1e-12)
    assert np.linalg.norm(out) <= clip * (1 + 1e-6)
    assert [a.dtype for a in clipped] == [a.dtype for a in update]
    assert factor == pytest.approx(min(1.0, clip / norm), rel=1e-12)
    np.testing.assert_allclose(out, factor * flat, rtol=1e-6, atol=0)
    if norm <= clip:
        assert factor == 1.0
        for a, b in zip(clipped, update):
            np.testing.assert_array_equal(a, b)
    else:
        assert np.linalg.norm(out) == pytest.approx(clip, rel=1e-6)


def test_one_institution_moves_the_clipped_mean_by_at_most_clip_over_n() -> None:
    """Sensitivity of the uniform mean of n clipped updates: replacing one update by zeros moves it <= clip / n."""
    rng = np.random.default_rng(3)
    n, clip = 8, 0.5
    updates = [[rng.normal(0, 10.0 ** rng.integers(-3, 4), size=(40,)).astype(np.float32)] for _ in range(n)]

    def mean(us: list[list[np.ndarray]]) -> np.ndarray:
        return np.mean([privatize_update(u, clip, 0.0, n, distributed=True)[0][0] for u in us], axis=0)

    full = mean(updates)
    for j in range(n):
        without = mean([u if i != j else [np.zeros(40, np.float32)] for i, u in enumerate(updates)])
        assert np.linalg.norm(full - without) <= clip / n * (1 + 1e-6)


def test_a_nan_update_is_rejected() -> None:
    with pytest.raises(UpdateRejected, match="NaN or Inf"):
        clip_update([np.array([1.0, np.nan], np.float32)], 1.0)


def test_the_report_stays_local_and_says_whether_the_update_was_clipped() -> None:
    small, report_small = privatize_update([np.full(4, 0.1, np.float32)], 1.0, 0.0, 3, distributed=False)
    _, report_big = privatize_update([np.full(4, 5.0, np.float32)], 1.0, 0.0, 3, distributed=False)
    assert report_small == {"norm": pytest.approx(0.2), "clipped": False}
    assert report_big == {"norm": pytest.approx(10.0), "clipped": True}
    np.testing.assert_array_equal(small[0], np.full(4, 0.1, np.float32))


# --------------------------------------------------------------------------- noise


SIGMA, CLIP, N = 1.3, 0.7, 10


def test_noise_shares_sum_to_the_central_noise() -> None:
    shares = [noise_share(SHAPES, CLIP, SIGMA, N, np.random.default_rng(100 + i)) for i in range(N)]
    total = [np.sum([s[j] for s in shares], axis=0) for j in range(len(SHAPES))]
    flat = np.concatenate([t.ravel() for t in total])
    assert_std(np.concatenate([s.ravel() for s in shares[0]]), SIGMA * CLIP / math.sqrt(N), "one share")
    assert_std(flat, SIGMA * CLIP, "sum of the shares")
    assert_std(flat / N, SIGMA * CLIP / N, "mean")


def test_distributed_noise_on_the_plaintext_mean_has_the_configured_std() -> None:
    noised = [privatize_update(zeros(), CLIP, SIGMA, N, np.random.default_rng(200 + i), distributed=True)[0]
              for i in range(N)]
    assert all(a.dtype == np.float32 for u in noised for a in u)
    mean = np.concatenate([np.mean([u[j] for u in noised], axis=0, dtype=np.float64).ravel() for j in range(2)])
    assert_std(mean, SIGMA * CLIP / N, "mean of the noised updates")


def test_central_noise_on_the_sum_gives_the_same_std() -> None:
    clipped = [privatize_update(zeros(), CLIP, SIGMA, N, distributed=False)[0] for _ in range(N)]
    assert all(not np.any(a) for u in clipped for a in u)  # the institutions add nothing in the central mode
    total = [np.sum([u[j] for u in clipped], axis=0, dtype=np.float64) for j in range(2)]
    noisy = [t + z for t, z in zip(total, central_noise(SHAPES, CLIP, SIGMA, np.random.default_rng(5)))]
    assert_std(np.concatenate([x.ravel() for x in noisy]) / N, SIGMA * CLIP / N, "central mean")


def test_dropouts_leave_less_noise_as_effective_noise_multiplier_says() -> None:
    arrived = 7
    shares = [noise_share(SHAPES, CLIP, SIGMA, N, np.random.default_rng(300 + i)) for i in range(arrived)]
    total = np.concatenate([np.sum([s[j] for s in shares], axis=0).ravel() for j in range(2)])
    sigma_eff = effective_noise_multiplier(SIGMA, N, arrived)
    assert sigma_eff == pytest.approx(SIGMA * math.sqrt(0.7))
    assert_std(total, sigma_eff * CLIP, "sum of 7 of 10 shares")
    # An institution that knows its own share can subtract it: 6 unknown shares remain.
    assert_std(total - np.concatenate([s.ravel() for s in shares[0]]),
               effective_noise_multiplier(SIGMA, N, arrived, n_known=1) * CLIP, "sum minus one's own share")


def test_the_default_noise_is_fresh_each_time() -> None:
    a = noise_share([(1000,)], 1.0, 1.0, 4)[0]
    b = noise_share([(1000,)], 1.0, 1.0, 4)[0]
    assert not np.array_equal(a, b)
    seeded = [noise_share([(1000,)], 1.0, 1.0, 4, np.random.default_rng(9))[0] for _ in range(2)]
    np.testing.assert_array_equal(*seeded)


def test_noised_value_bound_covers_the_noise() -> None:
    bound = noised_value_bound(CLIP, SIGMA, N)
    assert bound == pytest.approx(CLIP + 6 * SIGMA * CLIP / math.sqrt(N))
    update = [np.concatenate([[CLIP], np.zeros(N_VALUES - 1)]).astype(np.float32)]  # all the norm in one value
    noised, _ = privatize_update(update, CLIP, SIGMA, N, np.random.default_rng(0), distributed=True)
    assert np.max(np.abs(noised[0])) < bound


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_expected": 0, "n_arrived": 0}, r"n_expected: expected an integer >= 1"),
    ({"n_expected": 3, "n_arrived": 4}, r"n_arrived <= n_expected"),
    ({"n_expected": 3, "n_arrived": 2, "n_known": 3}, r"n_known <= n_arrived"),
])
def test_effective_noise_multiplier_refuses_impossible_counts(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        effective_noise_multiplier(1.0, **kwargs)


def test_bad_noise_parameters_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"security\.dp\.clip: expected a number > 0"):
        clip_update([np.ones(2)], 0.0)
    with pytest.raises(ConfigError, match=r"security\.dp\.noise_multiplier: expected a number >= 0"):
        noise_share([(2,)], 1.0, -1.0, 3)
    with pytest.raises(ConfigError, match=r"n_clients: expected an integer >= 1"):
        noise_share([(2,)], 1.0, 1.0, 0)


# --------------------------------------------------------------------------- accounting


@pytest.mark.parametrize(("sigma", "rounds", "delta"), [(1.0, 10, 1e-5), (0.8, 100, 1e-6), (2.0, 1000, 1e-5),
                                                         (5.0, 3, 1e-3)])
def test_epsilon_with_full_participation_equals_the_gaussian_rdp_formula(sigma: float, rounds: int,
                                                                          delta: float) -> None:
    assert RDPAccountant.DEFAULT_ALPHAS == ALPHAS
    acc = ClientDPAccountant(sigma, 1.0, delta, clip=1.0)
    for _ in range(rounds):
        acc.step()
    assert acc.steps == rounds
    assert acc.epsilon() == pytest.approx(gaussian_epsilon(sigma, rounds, delta), rel=1e-12)


def test_epsilon_with_sampling_equals_opacus_analysis_and_is_near_prv() -> None:
    sigma, q, delta = 1.1, 0.3, 1e-5
    low = effective_noise_multiplier(sigma, 10, 8)  # rounds with dropouts count with less noise
    acc = ClientDPAccountant(sigma, q, delta)
    prv = PRVAccountant()
    for s in [sigma] * 30 + [low] * 5 + [sigma] * 10 + [low] * 5:
        acc.step(noise_multiplier=s)
        prv.step(noise_multiplier=s, sample_rate=q)
    assert acc.history == [(sigma, q, 30), (low, q, 5), (sigma, q, 10), (low, q, 5)]
    rdp = (compute_rdp(q=q, noise_multiplier=sigma, steps=40, orders=ALPHAS)
           + compute_rdp(q=q, noise_multiplier=low, steps=10, orders=ALPHAS))
    want, _ = get_privacy_spent(orders=ALPHAS, rdp=rdp, delta=delta)
    assert acc.epsilon() == pytest.approx(float(want), rel=1e-12)
    opacus = RDPAccountant()
    opacus.history = acc.history
    assert acc.epsilon() == opacus.get_epsilon(delta=delta)  # Opacus' own accountant, bit for bit
    reference = prv.get_epsilon(delta=delta, eps_error=0.01)
    assert reference <= acc.epsilon() <= 1.25 * reference  # RDP is an upper bound, and not a loose one here


def test_report_and_state_dict_round_trip() -> None:
    acc = ClientDPAccountant.from_config(DPConfig(clip=0.5, noise_multiplier=1.2, delta=1e-6), sample_rate=0.5)
    for _ in range(5):
        acc.step()
    acc.step(noise_multiplier=0.9)
    report = acc.report()
    assert report == {"epsilon": acc.epsilon(), "delta": 1e-6, "noise_multiplier": 1.2, "clip": 0.5,
                      "sample_rate": 0.5, "steps": 6, "accountant": "rdp (opacus)",
                      "history": [[1.2, 0.5, 5], [0.9, 0.5, 1]]}
    restored = ClientDPAccountant.from_config(DPConfig(clip=0.5, noise_multiplier=1.2, delta=1e-6), 0.5)
    restored.load_state_dict(json.loads(json.dumps(acc.state_dict())))
    assert (restored.epsilon(), restored.steps, restored.history) == (acc.epsilon(), 6, acc.history)
    assert ClientDPAccountant(1.0, 1.0, 1e-5).epsilon() == 0.0


@pytest.mark.parametrize(("args", "message"), [
    ((1.0, 0.0, 1e-5), r"security\.dp\.sample_rate: expected a number in \(0, 1\]"),
    ((1.0, 1.5, 1e-5), r"security\.dp\.sample_rate"),
    ((1.0, 1.0, 1.0), r"security\.dp\.delta: expected a number in \(0, 1\)"),
    ((-0.5, 1.0, 1e-5), r"security\.dp\.noise_multiplier: expected a number >= 0"),
])
def test_bad_accountant_parameters_are_refused(args: tuple, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ClientDPAccountant(*args)


# --------------------------------------------------------------------------- budget


def stepped_epsilons(acc: ClientDPAccountant, rounds: int, sigma: float | None = None) -> list[float]:
    """Epsilon after 1..rounds more rounds, by really stepping a copy of ``acc``."""
    copy = ClientDPAccountant(acc.noise_multiplier, acc.sample_rate, acc.delta)
    copy.load_state_dict(acc.state_dict())
    out = []
    for _ in range(rounds):
        copy.step(noise_multiplier=sigma)
        out.append(copy.epsilon())
    return out


@pytest.mark.parametrize(("sigma", "q", "spent", "target"), [(1.0, 1.0, 0, 30.0), (2.0, 1.0, 5, 10.0),
                                                              (1.1, 0.3, 3, 8.0)])
def test_check_budget_gives_the_number_of_rounds_that_fit(sigma: float, q: float, spent: int, target: float) -> None:
    acc = ClientDPAccountant(sigma, q, 1e-5)
    for _ in range(spent):
        acc.step()
    eps = stepped_epsilons(acc, 60)
    fit = check_budget(acc, target, 60)
    assert 0 < fit < 60
    assert eps[fit - 1] <= target < eps[fit]
    assert check_budget(acc, target, fit - 1) == fit - 1  # capped by the rounds planned
    assert acc.steps == spent


def test_check_budget_can_plan_for_the_worst_dropouts() -> None:
    acc = ClientDPAccountant(1.5, 1.0, 1e-5)
    worst = effective_noise_multiplier(1.5, 10, 6)
    fit = check_budget(acc, 20.0, 100, noise_multiplier=worst)
    eps = stepped_epsilons(acc, fit + 1, sigma=worst)
    assert eps[fit - 1] <= 20.0 < eps[fit]
    assert fit < check_budget(acc, 20.0, 100)


def test_the_budget_refuses_to_start_when_one_round_is_too_many() -> None:
    acc = ClientDPAccountant(0.8, 1.0, 1e-5, clip=1.0)
    with pytest.raises(PrivacyBudgetError, match=r"target_epsilon: 5 allows no further round: one more round would "
                                                 r"bring epsilon to \d+\.\d+ \(now 0 after 0 round\(s\); "
                                                 r"noise_multiplier 0\.8, sample_rate 1, delta 1e-05\)"):
        check_budget(acc, 5.0, 10)


def test_the_budget_stops_a_run_in_progress() -> None:
    """The server's loop: before each round, stop if it would exceed the target."""
    acc, target = ClientDPAccountant(1.0, 1.0, 1e-5), 40.0
    rounds = 0
    while not acc.would_exceed(target) and rounds < 1000:
        acc.step()
        rounds += 1
    assert acc.epsilon() <= target < acc.epsilon_after(1)
    assert rounds == check_budget(ClientDPAccountant(1.0, 1.0, 1e-5), target, 1000)


def test_would_exceed_does_not_step() -> None:
    acc = ClientDPAccountant(1.0, 0.5, 1e-5)
    acc.step()
    before = (acc.epsilon(), acc.steps, acc.history, acc.state_dict())
    assert acc.would_exceed(acc.epsilon() * 1.0001)
    assert not acc.would_exceed(1e9)
    acc.epsilon_after(50, noise_multiplier=0.5)
    check_budget(acc, 20.0, 100)
    assert (acc.epsilon(), acc.steps, acc.history, acc.state_dict()) == before
