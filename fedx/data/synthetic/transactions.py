"""Synthetic card transactions of several banks, with fraud from known scenarios.

Modelled on the transaction simulator of Le Borgne et al., *Reproducible Machine Learning for
Credit Card Fraud Detection - Practical Handbook* (2022), across several banks:

- Customers (cards) have a home location, a mean amount (standard deviation half of it), an
  activity level and a preferred mix of channels. Terminals have a location, a channel (``pos``,
  ``web``, ``atm``) and a merchant category. A customer pays at the ``pos`` and ``atm`` terminals
  within ``radius`` of home (the nearest one when none is that close) and at any ``web`` terminal,
  popular merchants more often. Times of day are normal around noon, so more by day than at night.
- Each bank has its own customers; terminals are shared, and a bank sees only its own customers'
  transactions. Banks differ in size, spending, channel mix, fraud rate and mix of fraud scenarios.
- Fraud scenarios (the ``scenario`` column, ground truth and never a feature):

  1. large amount: any amount above :data:`AMOUNT_THRESHOLD` is fraud (online purchases at
     electronics, luxury and travel merchants with stolen card details);
  2. compromised terminal: a terminal (mostly fuel pumps and ATMs) is skimmed, and every
     transaction of the bank's cards there during the next :data:`TERMINAL_COMPROMISE_DAYS` days
     is fraud;
  3. compromised card: during the next :data:`CARD_COMPROMISE_DAYS` days, a third of the card's
     transactions are fraud. The card's details are sold on to fraud rings, the same at every
     bank, and each fraudulent payment is one ring's, in the ring's own way: online at one
     merchant category, by night or by day, on weekends or weekdays, with the card's usual amount
     multiplied by the ring's factor (3, 5 or 7);
  4. card testing: a burst of payments under 1.00, a minute or two apart, at one of the few
     small-ticket merchants that testers favour (genuine payments are at least 1.00).

  The number of compromises is calibrated so that each bank's fraud rate and scenario mix match
  its :class:`BankProfile`. Genuine payments include bursts of small in-app purchases, and
  genuine spending never exceeds the threshold.
- Features are engineered per bank from that bank's own transactions (:func:`engineer_features`):
  the card's activity over the last 1, 7 and 30 days, and the terminal's activity and fraud risk
  over 1, 7 and 30 days that end :data:`LABEL_DELAY_DAYS` days ago, since labels arrive late.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ...errors import ConfigError, SchemaError
from .profiles import check_shares, resized

CHANNELS: tuple[str, ...] = ("pos", "web", "atm")
"""Payment channels, in the order of :attr:`BankProfile.channel_mix`."""

SCENARIOS: tuple[str, ...] = ("genuine", "large_amount", "compromised_terminal", "compromised_card",
                              "card_testing")
"""Names of the values of the ``scenario`` column (0 is genuine)."""

AMOUNT_THRESHOLD = 220.0
TERMINAL_COMPROMISE_DAYS = 28
CARD_COMPROMISE_DAYS = 14
CARD_FRAUD_SHARE = 1 / 3
LABEL_DELAY_DAYS = 7
WINDOW_DAYS: tuple[int, ...] = (1, 7, 30)
START_DATE = np.datetime64("2025-01-06T00:00:00", "s")  # a Monday

_DAY = 86_400
_RADIUS = 5.0
_TERMINAL_CHANNEL_SHARES = (0.75, 0.15, 0.10)  # pos, web, atm
# Merchant categories of each channel, their shares among its terminals, and how they scale amounts.
_MCC: dict[str, tuple[tuple[str, float, float], ...]] = {
    "pos": (("grocery", 0.28, 1.0), ("restaurant", 0.22, 0.7), ("fuel", 0.14, 1.0), ("retail", 0.16, 1.2),
            ("pharmacy", 0.08, 0.8), ("electronics", 0.05, 1.5), ("travel", 0.04, 1.6), ("luxury", 0.03, 1.6)),
    "web": (("digital", 0.25, 0.4), ("retail", 0.25, 1.2), ("electronics", 0.12, 1.5), ("travel", 0.12, 1.6),
            ("gaming", 0.10, 0.5), ("gift_cards", 0.06, 1.0), ("charity", 0.05, 0.6), ("luxury", 0.05, 1.6)),
    "atm": (("cash", 1.0, 1.5),),
}
# Where each fraud scenario strikes: relative weights of merchant categories (the same at every bank).
_LARGE_AMOUNT_MCC = {"electronics": 3.0, "luxury": 3.0, "travel": 2.0}
_SKIMMED_MCC = {"fuel": 4.0, "cash": 4.0, "grocery": 1.0, "restaurant": 1.0, "retail": 1.0, "pharmacy": 1.0,
                "electronics": 1.0, "travel": 1.0, "luxury": 1.0}
_CARD_FRAUD_MCC = {"gift_cards": 3.0, "electronics": 2.5, "luxury": 2.0, "gaming": 1.5, "travel": 1.0,
                   "retail": 1.0, "digital": 1.0, "charity": 0.5}
_N_RINGS = 48
_RING_FACTORS = (3.0, 5.0, 7.0)
_CARD_TESTING_MCC = ("charity", "gaming", "digital")
_CARD_TESTING_MERCHANTS = 0.15  # share of those merchants that card testers use
_SESSION_SHARE = 0.02  # share of genuine payments made in bursts of small online purchases (apps, games)
_SESSION_USERS = 0.3  # share of cards that ever make such bursts
_WEEKDAY_WEIGHTS = np.array([1.0, 1.0, 1.0, 1.0, 1.05, 1.1, 0.6])  # Monday .. Sunday

TRANSACTION_FEATURES: dict[str, str] = {
    "amount": "numeric",
    "log_amount": "numeric",
    "is_weekend": "numeric",
    "is_night": "numeric",
    "amount_to_avg_30d": "numeric",
    "customer_nb_tx_1h": "numeric",
    **{f"customer_{stat}_{w}d": "numeric" for w in WINDOW_DAYS for stat in ("nb_tx", "avg_amount")},
    **{f"terminal_{stat}_{w}d": "numeric" for w in WINDOW_DAYS for stat in ("nb_tx", "risk")},
    "channel": "categorical",
    "mcc_group": "categorical",
}
"""The model features of :func:`generate_transactions` and their kinds (no ids, label or scenario)."""

TRANSACTION_LEVELS: dict[str, tuple[str, ...]] = {
    "channel": tuple(sorted(CHANNELS)),
    "mcc_group": tuple(sorted({m for groups in _MCC.values() for m, _, _ in groups})),
}
"""Levels of the categorical features, sorted."""


@dataclass(frozen=True)
class BankProfile:
    """One bank of the simulation.

    Parameters
    ----------
    name : str
        The value of the ``bank`` column.
    n_transactions : int
        Exact number of transactions of the bank's customers.
    n_customers : int
        Number of cards.
    fraud_rate : float
        Share of the transactions that are fraud, in (0, 0.5).
    scenario_weights : tuple of 4 floats
        Share of the frauds from scenarios 1 to 4 (large amount, compromised terminal, compromised
        card, card testing); normalised to sum to 1.
    mean_amount : (low, high)
        Each customer's mean amount is uniform in this range.
    channel_mix : tuple of 3 floats
        Average share of the customers' payments at ``pos``, ``web`` and ``atm`` terminals.
    home_area : (x0, y0, x1, y1)
        The rectangle of the 100 x 100 map where the bank's customers live: a regional bank
        covers less of it.
    """

    name: str
    n_transactions: int
    n_customers: int
    fraud_rate: float
    scenario_weights: tuple[float, float, float, float]
    mean_amount: tuple[float, float] = (5.0, 100.0)
    channel_mix: tuple[float, float, float] = (0.7, 0.2, 0.1)
    home_area: tuple[float, float, float, float] = (0.0, 0.0, 100.0, 100.0)

    def __post_init__(self) -> None:
        where = f"bank {self.name!r}"
        for name in ("scenario_weights", "mean_amount", "channel_mix", "home_area"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"bank name: expected a non-empty string, got {self.name!r}")
        if self.n_customers < 1 or self.n_transactions < self.n_customers:
            raise ConfigError(f"{where}: expected 1 <= n_customers <= n_transactions, got "
                              f"n_customers={self.n_customers}, n_transactions={self.n_transactions}")
        if not 0.0 < self.fraud_rate < 0.5:
            raise ConfigError(f"{where}: fraud_rate must be in (0, 0.5), got {self.fraud_rate}")
        check_shares(self.scenario_weights, 4, f"{where}: scenario_weights")
        check_shares(self.channel_mix, 3, f"{where}: channel_mix")
        low, high = self.mean_amount if len(self.mean_amount) == 2 else (0.0, -1.0)
        if not 0.0 < low <= high or 2.0 * high >= AMOUNT_THRESHOLD:
            raise ConfigError(f"{where}: mean_amount must be (low, high) with 0 < low <= high < "
                              f"{AMOUNT_THRESHOLD / 2:g}, got {self.mean_amount}")
        x0, y0, x1, y1 = self.home_area if len(self.home_area) == 4 else (0.0, 0.0, -1.0, -1.0)
        if not (0.0 <= x0 < x1 <= 100.0 and 0.0 <= y0 < y1 <= 100.0):
            raise ConfigError(f"{where}: home_area must be (x0, y0, x1, y1) with 0 <= x0 < x1 <= 100 and "
                              f"0 <= y0 < y1 <= 100, got {self.home_area}")

    @property
    def scenario_shares(self) -> np.ndarray:
        """``scenario_weights`` normalised to sum to 1."""
        w = np.asarray(self.scenario_weights)
        return w / w.sum()


DEFAULT_BANKS: tuple[BankProfile, ...] = (
    BankProfile("bank_a", 80_000, 700, 0.002, (0.20, 0.17, 0.60, 0.03), (10.0, 95.0), (0.72, 0.18, 0.10),
                (0.0, 0.0, 100.0, 100.0)),
    BankProfile("bank_b", 50_000, 450, 0.005, (0.03, 0.17, 0.55, 0.25), (5.0, 85.0), (0.62, 0.30, 0.08),
                (0.0, 0.0, 100.0, 62.5)),
    BankProfile("bank_c", 35_000, 320, 0.008, (0.22, 0.20, 0.55, 0.03), (15.0, 100.0), (0.70, 0.20, 0.10),
                (30.0, 40.0, 96.0, 100.0)),
    BankProfile("bank_d", 20_000, 180, 0.015, (0.03, 0.20, 0.55, 0.22), (5.0, 80.0), (0.72, 0.15, 0.13),
                (0.0, 50.0, 50.0, 100.0)),
    BankProfile("bank_e", 15_000, 140, 0.030, (0.22, 0.20, 0.55, 0.03), (10.0, 90.0), (0.66, 0.24, 0.10),
                (55.0, 0.0, 100.0, 42.0)),
)
"""Five banks, 200,000 transactions, fraud rates 0.2% to 3%.

A national bank and four regional ones. Large amounts (1) and card testing (4) are each common at
some banks and rare (3% of frauds) at the others, so every bank has a scenario it rarely sees;
compromised terminals (2) and compromised cards (3) strike everywhere.
"""


def generate_transactions(banks: Sequence[BankProfile] = DEFAULT_BANKS, *, sizes: Sequence[int] | None = None,
                          n_days: int = 120, n_terminals: int = 2000, seed: int = 7) -> pd.DataFrame:
    """Card transactions of several banks, with engineered features and known fraud scenarios.

    Parameters
    ----------
    banks : sequence of BankProfile
        The banks, with distinct names.
    sizes : sequence of int, optional
        Numbers of transactions that replace the banks' ``n_transactions``, in order; the numbers
        of customers scale with them, so that cards keep their activity.
    n_days : int
        Length of the simulated period, at least 31 days.
    n_terminals : int
        Number of terminals, shared by all banks.
    seed : int
        Same seed, same table.

    Returns
    -------
    pandas.DataFrame
        One row per transaction, in time order: ``tx_id``, ``bank``, ``customer_id``,
        ``terminal_id``, ``tx_datetime``, ``day``, the :data:`TRANSACTION_FEATURES`, ``is_fraud``
        (0/1) and ``scenario`` (0 genuine, 1-4 as in :data:`SCENARIOS`).
    """
    banks = _resolve_banks(banks, sizes)
    if not isinstance(n_days, int) or n_days <= max(WINDOW_DAYS):
        raise ConfigError(f"n_days: expected an integer above {max(WINDOW_DAYS)}, got {n_days!r}")
    if not isinstance(n_terminals, int) or n_terminals < 200:
        raise ConfigError(f"n_terminals: expected an integer of at least 200, got {n_terminals!r}")
    seeds = np.random.SeedSequence(seed).spawn(len(banks) + 1)
    world = np.random.default_rng(seeds[0])
    terminals = _Terminals.generate(n_terminals, world)
    rings = _Rings.generate(world)
    parts = []
    first_customer = 0
    for bank, bank_seed in zip(banks, seeds[1:]):
        part = _simulate_bank(bank, terminals, rings, n_days, np.random.default_rng(bank_seed))
        part["customer_id"] += first_customer
        first_customer += bank.n_customers
        parts.append(part)
    df = pd.concat(parts, ignore_index=True)
    df = df.sort_values(["day", "second"], kind="stable", ignore_index=True)
    df.insert(0, "tx_id", np.arange(len(df), dtype=np.int64))
    df["tx_datetime"] = START_DATE + (df["day"].to_numpy() * _DAY + df["second"].to_numpy()).astype("timedelta64[s]")
    df["channel"] = np.asarray(CHANNELS)[terminals.channel[df["terminal_id"].to_numpy()]]
    df["mcc_group"] = terminals.mcc_names[terminals.mcc[df["terminal_id"].to_numpy()]]
    df["is_fraud"] = (df["scenario"] > 0).astype(np.int64)
    df = engineer_features(df)
    ids = ["tx_id", "bank", "customer_id", "terminal_id", "tx_datetime", "day"]
    return df[ids + list(TRANSACTION_FEATURES) + ["is_fraud", "scenario"]]


def engineer_features(df: pd.DataFrame, *, delay_days: int = LABEL_DELAY_DAYS,
                      windows: Sequence[int] = WINDOW_DAYS) -> pd.DataFrame:
    """Add the time and window features to transactions, computed per bank.

    Card windows cover ``(t - w days, t]`` and include the transaction itself. Terminal windows
    cover ``(t - delay - w days, t - delay]``: the fraud risk uses only labels at least
    ``delay_days`` old, never the transaction's own. The risk is the share of fraud in the window
    (0 when the window is empty).

    Parameters
    ----------
    df : pandas.DataFrame
        With columns ``bank``, ``customer_id``, ``terminal_id``, ``tx_datetime``, ``amount`` and
        ``is_fraud``.
    delay_days : int
        Days before a fraud label is known.
    windows : sequence of int
        Window lengths in days.

    Returns
    -------
    pandas.DataFrame
        A copy of ``df`` with ``is_weekend``, ``is_night`` (00:00-05:59), ``log_amount`` (log10 of the
        amount: card tests of cents and bursts of small purchases differ in it by a decade),
        ``amount_to_avg_30d``
        (the amount over the card's 30-day average), ``customer_nb_tx_1h`` (the card's payments in
        the last hour: its velocity), ``customer_nb_tx_{w}d``, ``customer_avg_amount_{w}d``, ``terminal_nb_tx_{w}d`` and
        ``terminal_risk_{w}d``.
    """
    needed = ["bank", "customer_id", "terminal_id", "tx_datetime", "amount", "is_fraud"]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise SchemaError(f"engineer_features: missing column(s) {', '.join(missing)}")
    out = df.copy()
    when = pd.to_datetime(out["tx_datetime"])
    seconds = when.to_numpy().astype("datetime64[s]").astype(np.int64)
    seconds = seconds - seconds.min()
    out["is_weekend"] = (when.dt.day_of_week >= 5).astype(np.int64)
    out["is_night"] = (when.dt.hour < 6).astype(np.int64)
    amount = out["amount"].to_numpy(dtype=np.float64)
    fraud = out["is_fraud"].to_numpy(dtype=np.float64)
    card = out.groupby(["bank", "customer_id"], sort=False).ngroup().to_numpy()
    terminal = out.groupby(["bank", "terminal_id"], sort=False).ngroup().to_numpy()
    delay = delay_days * _DAY
    for w in windows:
        n, total = _window_sums(card, seconds, amount, w * _DAY, 0)
        out[f"customer_nb_tx_{w}d"] = n
        out[f"customer_avg_amount_{w}d"] = total / n
    out["log_amount"] = np.log10(np.maximum(amount, 0.01))
    out["amount_to_avg_30d"] = amount / out["customer_avg_amount_30d"].to_numpy()
    out["customer_nb_tx_1h"], _ = _window_sums(card, seconds, amount, 3600, 0)
    for w in windows:
        n, frauds = _window_sums(terminal, seconds, fraud, delay + w * _DAY, delay)
        out[f"terminal_nb_tx_{w}d"] = n
        out[f"terminal_risk_{w}d"] = np.divide(frauds, n, out=np.zeros(len(n)), where=n > 0)
    return out


def _window_sums(group: np.ndarray, time: np.ndarray, values: np.ndarray, start: int, end: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Count and sum of ``values`` over the rows of the same group with time in ``(t - start, t - end]``."""
    order = np.lexsort((time, group))
    span = int(time.max()) + 2
    key = group[order].astype(np.int64) * span + time[order]
    base = group.astype(np.int64) * span
    hi = np.searchsorted(key, base + np.maximum(time - end, -1), side="right")
    lo = np.searchsorted(key, base + np.maximum(time - start, -1), side="right")
    cumulative = np.concatenate([[0.0], np.cumsum(values[order])])
    return (hi - lo).astype(np.int64), cumulative[hi] - cumulative[lo]


# --------------------------------------------------------------------------- simulation


@dataclass(frozen=True)
class _Terminals:
    x: np.ndarray
    y: np.ndarray
    channel: np.ndarray  # index into CHANNELS
    mcc: np.ndarray  # index into mcc_names
    amount_factor: np.ndarray
    web_popularity: np.ndarray  # sampling weights, 0 off the web
    mcc_names: np.ndarray
    testing_prone: np.ndarray  # bool: merchants that card testers use

    @classmethod
    def generate(cls, n: int, rng: np.random.Generator) -> _Terminals:
        channel = rng.choice(len(CHANNELS), size=n, p=_TERMINAL_CHANNEL_SHARES)
        channel[: len(CHANNELS)] = np.arange(len(CHANNELS))  # every channel has a terminal
        names = TRANSACTION_LEVELS["mcc_group"]
        mcc = np.zeros(n, dtype=np.int64)
        factor = np.zeros(n)
        for c, ch in enumerate(CHANNELS):
            idx = np.flatnonzero(channel == c)
            groups, shares, factors = zip(*_MCC[ch])
            pick = rng.choice(len(groups), size=idx.size, p=shares)
            pick[: len(groups)] = np.arange(min(len(groups), idx.size))
            mcc[idx] = np.searchsorted(names, np.asarray(groups))[pick]
            factor[idx] = np.asarray(factors)[pick]
        web = channel == CHANNELS.index("web")
        popularity = np.where(web, rng.pareto(1.5, size=n) + 0.1, 0.0)
        testable = web & np.isin(mcc, np.searchsorted(names, _CARD_TESTING_MCC))
        testing_prone = testable & (rng.random(n) < _CARD_TESTING_MERCHANTS)
        testing_prone[np.flatnonzero(testable)[:1]] = True
        return cls(x=rng.uniform(0, 100, n), y=rng.uniform(0, 100, n), channel=channel, mcc=mcc,
                   amount_factor=factor, web_popularity=popularity / popularity.sum(),
                   mcc_names=np.asarray(names), testing_prone=testing_prone)

    def mcc_weights(self, weights: dict[str, float], channels: Sequence[str]) -> np.ndarray:
        """Per-terminal weight of its merchant category in ``weights`` (0 for other categories and channels)."""
        table = np.zeros(self.mcc_names.size)
        table[np.searchsorted(self.mcc_names, list(weights))] = list(weights.values())
        return table[self.mcc] * np.isin(self.channel, [CHANNELS.index(c) for c in channels])


@dataclass(frozen=True)
class _Rings:
    """Fraud rings that exploit compromised cards, the same at every bank.

    Each ring shops online at one merchant category, by night or by day, on weekends or weekdays,
    and multiplies the card's usual amounts by its own factor (5 on average).
    """

    mcc: np.ndarray  # names
    night: np.ndarray
    weekend: np.ndarray
    factor: np.ndarray

    @classmethod
    def generate(cls, rng: np.random.Generator) -> _Rings:
        groups, weights = zip(*_CARD_FRAUD_MCC.items())
        return cls(mcc=np.asarray(groups)[rng.choice(len(groups), _N_RINGS, p=_normalised(np.asarray(weights)))],
                   night=rng.random(_N_RINGS) < 0.5, weekend=rng.random(_N_RINGS) < 0.4,
                   factor=rng.choice(_RING_FACTORS, _N_RINGS))

    @property
    def size(self) -> int:
        """Number of rings."""
        return self.mcc.size

    def exploit(self, tx: dict[str, np.ndarray], rows: np.ndarray, ring: int, terminals: _Terminals, n_days: int,
                rng: np.random.Generator) -> None:
        """Turn ``rows`` into the ring's online purchases: its merchants, times and amounts."""
        merchants = terminals.mcc_weights({str(self.mcc[ring]): 1.0}, ("web",))
        tx["terminal_id"][rows] = rng.choice(merchants.size, size=rows.size, p=_normalised(merchants))
        hours = (0, 6) if self.night[ring] else (8, 22)
        tx["second"][rows] = rng.integers(hours[0] * 3600, hours[1] * 3600, rows.size)
        weekday = (tx["day"][rows] + _weekday(START_DATE)) % 7
        if self.weekend[ring]:
            shift = np.where(weekday >= 5, 0, 5 - weekday + rng.integers(0, 2, rows.size))
        else:
            shift = np.where(weekday >= 5, 4 - weekday, 0)
        tx["day"][rows] = np.clip(tx["day"][rows] + shift, 0, n_days - 1)
        tx["amount"][rows] = np.round(tx["amount"][rows] * self.factor[ring], 2)


@dataclass(frozen=True)
class _Customers:
    x: np.ndarray
    y: np.ndarray
    mean_amount: np.ndarray
    activity: np.ndarray  # probability that a transaction of the bank is this card's
    session_weights: np.ndarray  # probability that a burst of small online purchases is this card's
    channel_cdf: np.ndarray  # (n, 3) cumulative channel probabilities

    @classmethod
    def generate(cls, bank: BankProfile, rng: np.random.Generator) -> _Customers:
        n = bank.n_customers
        activity = rng.uniform(0.2, 1.8, n)
        mix = rng.dirichlet(20.0 * np.asarray(bank.channel_mix) + 1e-3, size=n)
        sessions = activity * (rng.random(n) < _SESSION_USERS)
        sessions = sessions if sessions.sum() > 0 else activity
        x0, y0, x1, y1 = bank.home_area
        return cls(x=rng.uniform(x0, x1, n), y=rng.uniform(y0, y1, n),
                   mean_amount=rng.uniform(*bank.mean_amount, n), activity=activity / activity.sum(),
                   session_weights=sessions / sessions.sum(),
                   channel_cdf=np.cumsum(mix, axis=1))


def _simulate_bank(bank: BankProfile, terminals: _Terminals, rings: _Rings, n_days: int,
                   rng: np.random.Generator) -> pd.DataFrame:
    """One bank's transactions: columns bank, customer_id, terminal_id, day, second, amount, scenario."""
    customers = _Customers.generate(bank, rng)
    targets = np.rint(bank.fraud_rate * bank.n_transactions * bank.scenario_shares).astype(np.int64)
    n_genuine = bank.n_transactions - int(targets[3])
    n_sessions = round(_SESSION_SHARE * n_genuine)
    digital = np.flatnonzero(terminals.mcc_weights({"digital": 1.0, "gaming": 1.0}, ("web",)))
    evening = np.clip(rng.normal(20 * 3600, 2.5 * 3600, n_sessions), 0, _DAY - 3600).astype(np.int64)
    sessions = _bursts(n_sessions, customers.session_weights, digital, _normalised(terminals.web_popularity[digital]),
                       (1.0, 9.99), 240.0, evening, n_days, rng)
    regular = _genuine(n_genuine - n_sessions, customers, terminals, n_days, rng)
    tx = {k: np.concatenate([regular[k], sessions[k]]) for k in regular}
    tx["scenario"] = np.zeros(n_genuine, dtype=np.int64)

    # 2: compromised terminals (skimmers, mostly at fuel pumps and ATMs) among those the bank's cards use.
    used = np.bincount(tx["terminal_id"], minlength=terminals.x.size).astype(np.float64)
    skimmable = used * terminals.mcc_weights(_SKIMMED_MCC, ("pos", "atm"))
    if targets[1] > 0 and skimmable.sum() == 0:
        raise ConfigError(f"bank {bank.name!r}: compromised terminals (scenario 2) need payments at pos or atm "
                          f"terminals; channel_mix has none")
    _compromise(tx, "terminal_id", _normalised(skimmable), TERMINAL_COMPROMISE_DAYS, 1.0, 2, int(targets[1]),
                n_days, rng)
    # 3: compromised cards, whose details fraud rings use online, each in its own way.
    hit = _compromise(tx, "customer_id", customers.activity, CARD_COMPROMISE_DAYS, CARD_FRAUD_SHARE, 3,
                      int(targets[2]), n_days, rng)
    ring_of = rng.integers(0, rings.size, hit.size)
    for ring in range(rings.size):
        rings.exploit(tx, hit[ring_of == ring], ring, terminals, n_days, rng)
    # 1: large amounts online at electronics, luxury and travel merchants.
    genuine = np.flatnonzero(tx["scenario"] == 0)
    large = rng.choice(genuine, size=min(int(targets[0]), genuine.size), replace=False)
    high_value = terminals.mcc_weights(_LARGE_AMOUNT_MCC, ("web",))
    tx["terminal_id"][large] = rng.choice(high_value.size, size=large.size, p=_normalised(high_value))
    tx["amount"][large] = np.round(AMOUNT_THRESHOLD * (1.0 + rng.exponential(0.6, large.size)) + 0.01, 2)
    tx["scenario"][(tx["amount"] > AMOUNT_THRESHOLD) & (tx["scenario"] == 0)] = 1
    # 4: card testing at the few small-ticket merchants that testers favour, at any time of day.
    testing = _bursts(int(targets[3]), customers.activity, np.flatnonzero(terminals.testing_prone), None,
                      (0.01, 0.99), 90.0, rng.integers(0, _DAY - 3600, int(targets[3])), n_days, rng)
    testing["scenario"] = np.full(int(targets[3]), 4, dtype=np.int64)
    out = pd.DataFrame({k: np.concatenate([tx[k], testing[k]]) for k in tx})
    out.insert(0, "bank", bank.name)
    return out


def _genuine(n: int, customers: _Customers, terminals: _Terminals, n_days: int, rng: np.random.Generator
             ) -> dict[str, np.ndarray]:
    """``n`` genuine transactions, spread over the cards in proportion to their activity."""
    customer = np.repeat(np.arange(customers.activity.size), rng.multinomial(n, customers.activity))
    weekday = _WEEKDAY_WEIGHTS[(np.arange(n_days) + _weekday(START_DATE)) % 7]
    day = rng.choice(n_days, size=n, p=weekday / weekday.sum())
    second = _time_of_day(n, rng)
    channel = (rng.random(n)[:, None] > customers.channel_cdf[customer]).sum(axis=1)
    channel = np.minimum(channel, len(CHANNELS) - 1)
    terminal = np.empty(n, dtype=np.int64)
    web = channel == CHANNELS.index("web")
    terminal[web] = rng.choice(terminals.x.size, size=int(web.sum()), p=terminals.web_popularity)
    for c in (CHANNELS.index("pos"), CHANNELS.index("atm")):
        rows = np.flatnonzero(channel == c)
        terminal[rows] = _nearby_terminal(customer[rows], c, customers, terminals, rng)
    mean = customers.mean_amount[customer] * terminals.amount_factor[terminal]
    amount = rng.normal(mean, mean / 2.0)
    bad = (amount <= 0.0) | (amount >= AMOUNT_THRESHOLD)
    amount[bad] = rng.uniform(0.0, np.minimum(2.0 * mean[bad], AMOUNT_THRESHOLD - 1.0))
    amount = np.maximum(np.round(amount, 2), 1.0)
    return {"customer_id": customer, "terminal_id": terminal, "day": day, "second": second, "amount": amount}


def _nearby_terminal(customer: np.ndarray, channel: int, customers: _Customers, terminals: _Terminals,
                     rng: np.random.Generator) -> np.ndarray:
    """For each row, a terminal of ``channel`` drawn uniformly within the radius of the card's home."""
    candidates = np.flatnonzero(terminals.channel == channel)
    dist = np.hypot(customers.x[:, None] - terminals.x[candidates][None, :],
                    customers.y[:, None] - terminals.y[candidates][None, :])
    near = dist < _RADIUS
    near[np.arange(dist.shape[0]), dist.argmin(axis=1)] = True
    rows, cols = np.nonzero(near)  # row-major: grouped by customer
    counts = np.bincount(rows, minlength=dist.shape[0])
    offsets = np.concatenate([[0], np.cumsum(counts)])
    pick = offsets[customer] + (rng.random(customer.size) * counts[customer]).astype(np.int64)
    return candidates[cols[pick]]


def _compromise(tx: dict[str, np.ndarray], key: str, weights: np.ndarray, duration: int, share: float,
                scenario: int, target: int, n_days: int, rng: np.random.Generator) -> np.ndarray:
    """Compromise entities (terminals or cards) one at a time until ``target`` transactions are fraud.

    An event picks an entity with probability ``weights`` and a start day; each genuine transaction
    of the entity in the next ``duration`` days becomes fraud with probability ``share``. Events
    stop at the count nearest the target. Returns the rows made fraud.
    """
    if target == 0:
        return np.zeros(0, dtype=np.int64)
    entity_day = tx[key] * n_days + tx["day"]
    order = np.argsort(entity_day, kind="stable")
    sorted_keys = entity_day[order]
    hit: list[np.ndarray] = []
    done = 0
    max_events = 20 * target + 100
    entities = rng.choice(weights.size, size=max_events, p=weights)
    starts = rng.integers(0, n_days, size=max_events)
    for entity, start in zip(entities, starts):
        if done >= target:
            break
        lo, hi = np.searchsorted(sorted_keys, [entity * n_days + start,
                                               entity * n_days + min(start + duration, n_days)])
        rows = order[lo:hi]
        rows = rows[(tx["scenario"][rows] == 0) & (rng.random(rows.size) < share)]
        if done + rows.size - target > target - done:
            continue
        tx["scenario"][rows] = scenario
        hit.append(rows)
        done += rows.size
    return np.concatenate(hit) if hit else np.zeros(0, dtype=np.int64)


def _bursts(n: int, card_weights: np.ndarray, merchants: np.ndarray, merchant_weights: np.ndarray | None,
            amounts: tuple[float, float], mean_gap: float, start: np.ndarray, n_days: int,
            rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``n`` transactions in bursts of 2-10 small payments by one card at one merchant.

    Payments in a burst are ``mean_gap`` seconds apart on average; ``start`` holds candidate start
    times of day, one per burst at least.
    """
    if n == 0:
        return {k: np.zeros(0, dtype=np.float64 if k == "amount" else np.int64)
                for k in ("customer_id", "terminal_id", "day", "second", "amount")}
    sizes = np.minimum(2 + rng.poisson(3.0, size=n), 10)
    n_bursts = int(np.searchsorted(np.cumsum(sizes), n)) + 1
    sizes = sizes[:n_bursts]
    sizes[-1] -= int(sizes.sum()) - n
    burst = np.repeat(np.arange(n_bursts), sizes)
    card = rng.choice(card_weights.size, size=n_bursts, p=card_weights)
    merchant = rng.choice(merchants, size=n_bursts, p=merchant_weights)
    day = rng.integers(0, n_days, size=n_bursts)
    gaps = np.round(10 + rng.exponential(mean_gap, size=n)).astype(np.int64)
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    elapsed = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[first], sizes)
    return {"customer_id": card[burst], "terminal_id": merchant[burst], "day": day[burst],
            "second": np.minimum(start[:n_bursts][burst] + elapsed, _DAY - 1),
            "amount": np.round(rng.uniform(*amounts, n), 2)}


def _normalised(weights: np.ndarray) -> np.ndarray:
    return weights / weights.sum()


def _time_of_day(n: int, rng: np.random.Generator) -> np.ndarray:
    """Seconds after midnight, normal around noon (sd 5.5 h) and redrawn outside the day."""
    second = rng.normal(_DAY / 2, 20_000, n)
    while (bad := (second < 0) | (second >= _DAY)).any():
        second[bad] = rng.normal(_DAY / 2, 20_000, int(bad.sum()))
    return second.astype(np.int64)


def _weekday(date: np.datetime64) -> int:
    """Day of the week, Monday 0."""
    return int((date.astype("datetime64[D]").astype(np.int64) + 3) % 7)


def _resolve_banks(banks: Sequence[BankProfile], sizes: Sequence[int] | None) -> list[BankProfile]:
    banks = list(banks)
    if not banks:
        raise ConfigError("banks: expected at least one bank")
    names = [b.name for b in banks]
    if len(set(names)) != len(names):
        raise ConfigError(f"banks: names must be distinct, got {names}")
    return banks if sizes is None else resized(banks, sizes, "n_transactions", scaled=("n_customers",))
