"""The card-transaction generator against its declared profiles, and its features against hand-checked values."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from fedx.data.synthetic import (
    DEFAULT_BANKS,
    TRANSACTION_FEATURES,
    BankProfile,
    generate_transactions,
)
from fedx.data.synthetic.transactions import (
    START_DATE,
    TRANSACTION_LEVELS,
    engineer_features,
)
from fedx.errors import ConfigError, SchemaError

SMALL = [6000, 4000, 3000, 2000, 1500]


@pytest.fixture(scope="module")
def default_table() -> tuple[pd.DataFrame, float]:
    start = time.perf_counter()
    df = generate_transactions(seed=7)
    return df, time.perf_counter() - start


def test_same_seed_same_table_other_seed_other_table() -> None:
    a = generate_transactions(sizes=SMALL, n_days=60, seed=3)
    b = generate_transactions(sizes=SMALL, n_days=60, seed=3)
    c = generate_transactions(sizes=SMALL, n_days=60, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == len(c)
    assert not a["amount"].equals(c["amount"])
    assert not a["is_fraud"].equals(c["is_fraud"])


def test_default_banks_sizes_rates_and_speed(default_table: tuple[pd.DataFrame, float]) -> None:
    df, seconds = default_table
    assert seconds < 30.0
    assert len(df) == sum(b.n_transactions for b in DEFAULT_BANKS) == 200_000
    assert df["tx_id"].is_unique and df["tx_datetime"].is_monotonic_increasing
    for bank in DEFAULT_BANKS:
        rows = df[df["bank"] == bank.name]
        assert len(rows) == bank.n_transactions
        assert rows["is_fraud"].mean() == pytest.approx(bank.fraud_rate, rel=0.1)
    # Every card belongs to one bank; terminals are shared across banks.
    assert df.groupby("customer_id")["bank"].nunique().max() == 1
    assert df.groupby("terminal_id")["bank"].nunique().max() == len(DEFAULT_BANKS)


def test_scenario_mix_matches_profiles_and_every_bank_has_a_rare_scenario(
        default_table: tuple[pd.DataFrame, float]) -> None:
    df, _ = default_table
    fraud = df[df["is_fraud"] == 1]
    assert (df["is_fraud"] == (df["scenario"] > 0)).all()
    realised = fraud.groupby("bank")["scenario"].value_counts(normalize=True).unstack(fill_value=0.0)
    for bank in DEFAULT_BANKS:
        np.testing.assert_allclose(realised.loc[bank.name, [1, 2, 3, 4]], bank.scenario_shares, atol=0.06)
    declared = pd.DataFrame({b.name: b.scenario_shares for b in DEFAULT_BANKS}, index=[1, 2, 3, 4])
    for bank in DEFAULT_BANKS:
        others = declared.drop(columns=bank.name).max(axis=1)
        rare_here = declared[bank.name] <= 0.05
        assert (rare_here & (others >= 0.2)).any(), bank.name
        assert ((realised.loc[bank.name] <= 0.06) & (realised.drop(index=bank.name).max() >= 0.15)).any()


def test_ground_truth_of_each_scenario(default_table: tuple[pd.DataFrame, float]) -> None:
    df, _ = default_table
    assert (df.loc[df["amount"] > 220, "scenario"] > 0).all()
    assert (df.loc[df["scenario"] == 1, "amount"] > 220).all()
    testing = df[df["scenario"] == 4]
    assert (testing["amount"] < 1).all() and (df.loc[df["scenario"] == 0, "amount"] >= 1).all()
    assert set(testing["channel"]) == {"web"}
    assert set(df.loc[df["scenario"] == 2, "channel"]) <= {"pos", "atm"}


def test_feature_columns_kinds_and_levels(default_table: tuple[pd.DataFrame, float]) -> None:
    df, _ = default_table
    ids = ["tx_id", "bank", "customer_id", "terminal_id", "tx_datetime", "day"]
    assert list(df.columns) == ids + list(TRANSACTION_FEATURES) + ["is_fraud", "scenario"]
    assert not set(TRANSACTION_FEATURES) & {"scenario", "is_fraud", "bank", "customer_id", "terminal_id"}
    for name, kind in TRANSACTION_FEATURES.items():
        if kind == "numeric":
            assert pd.api.types.is_numeric_dtype(df[name]) and np.isfinite(df[name]).all(), name
        else:
            assert set(df[name]) <= set(TRANSACTION_LEVELS[name]), name
    assert df["is_fraud"].dtype == np.int64


def _tiny(rows: list[tuple[str, int, int, float, float, int]]) -> pd.DataFrame:
    """Transactions from (bank, customer, terminal, day, hours after midnight, is_fraud); amount = 10 * (i + 1)."""
    return pd.DataFrame({
        "bank": [r[0] for r in rows],
        "customer_id": [r[1] for r in rows],
        "terminal_id": [r[2] for r in rows],
        "tx_datetime": [START_DATE + np.timedelta64(int(r[3] * 86_400 + r[4] * 3600), "s") for r in rows],
        "amount": [10.0 * (i + 1) for i in range(len(rows))],
        "is_fraud": [r[5] for r in rows],
    })


def test_terminal_risk_uses_only_labels_older_than_the_delay() -> None:
    df = _tiny([
        ("a", 1, 7, 0, 12, 1),                 # 0
        ("a", 2, 7, 2, 12, 0),                 # 1
        ("a", 3, 7, 7, 12, 1),                 # 2: exactly 7 days after row 0
        ("a", 4, 7, 7, 12 - 1 / 3600, 0),      # 3: one second earlier, row 0 not yet 7 days old
        ("a", 5, 7, 9, 12, 1),                 # 4
        ("a", 6, 7, 20, 12, 0),                # 5
        ("b", 7, 7, 1, 12, 1),                 # 6: another bank at the same terminal
    ])
    out = engineer_features(df)
    expected = {  # row: (nb_1d, risk_1d, nb_7d, risk_7d, nb_30d, risk_30d), worked out by hand
        0: (0, 0.0, 0, 0.0, 0, 0.0),
        1: (0, 0.0, 0, 0.0, 0, 0.0),
        2: (1, 1.0, 1, 1.0, 1, 1.0),
        3: (0, 0.0, 0, 0.0, 0, 0.0),
        4: (1, 0.0, 2, 0.5, 2, 0.5),
        5: (0, 0.0, 3, 2 / 3, 5, 0.6),
        6: (0, 0.0, 0, 0.0, 0, 0.0),
    }
    for row, (n1, r1, n7, r7, n30, r30) in expected.items():
        got = out.loc[row, ["terminal_nb_tx_1d", "terminal_risk_1d", "terminal_nb_tx_7d", "terminal_risk_7d",
                            "terminal_nb_tx_30d", "terminal_risk_30d"]].to_numpy(dtype=float)
        np.testing.assert_allclose(got, [n1, r1, n7, r7, n30, r30], err_msg=f"row {row}")


def test_card_windows_include_the_transaction_and_stay_within_the_card() -> None:
    df = _tiny([
        ("a", 1, 1, 0, 10, 0),    # amount 10
        ("a", 1, 2, 0, 11, 0),    # amount 20
        ("a", 1, 3, 1, 12, 0),    # amount 30: row 0 and 1 are more than a day before
        ("a", 2, 1, 1, 12, 0),    # another card
    ])
    out = engineer_features(df)
    assert out.loc[2, "customer_nb_tx_1d"] == 1 and out.loc[2, "customer_avg_amount_1d"] == 30
    assert out.loc[2, "customer_nb_tx_7d"] == 3 and out.loc[2, "customer_avg_amount_7d"] == 20
    assert out.loc[1, "customer_nb_tx_1d"] == 2 and out.loc[1, "customer_avg_amount_1d"] == 15
    assert out.loc[3, "customer_nb_tx_30d"] == 1 and out.loc[3, "customer_avg_amount_30d"] == 40
    assert out.loc[0, "is_night"] == 0 and out.loc[0, "is_weekend"] == 0


def test_velocity_log_amount_and_ratio_to_the_cards_habit() -> None:
    df = _tiny([
        ("a", 1, 1, 0, 10, 0),                 # 0: amount 10
        ("a", 1, 2, 0, 10.5, 0),               # 1: amount 20, 30 minutes later
        ("a", 1, 3, 0, 11 - 1 / 3600, 0),      # 2: amount 30, just under an hour after row 0
        ("a", 1, 3, 0, 11.25, 0),              # 3: amount 40, row 0 is now more than an hour before
        ("a", 2, 3, 0, 11.25, 0),              # 4: amount 50, another card
    ])
    out = engineer_features(df)
    assert out["customer_nb_tx_1h"].tolist() == [1, 2, 3, 3, 1]
    np.testing.assert_allclose(out["log_amount"], np.log10(df["amount"]))
    np.testing.assert_allclose(out["amount_to_avg_30d"], df["amount"] / out["customer_avg_amount_30d"])
    assert out.loc[3, "amount_to_avg_30d"] == pytest.approx(40 / 25)


def test_recent_labels_and_other_banks_never_change_a_banks_features() -> None:
    df = generate_transactions(sizes=SMALL, n_days=60, seed=5)
    cols = [c for c in TRANSACTION_FEATURES if c.startswith(("terminal_", "customer_"))]
    base = engineer_features(df)
    # Labels of the last 7 days are not known yet: changing them changes no feature.
    recent = df["tx_datetime"] > df["tx_datetime"].max() - pd.Timedelta(days=7)
    flipped = df.assign(is_fraud=np.where(recent, 1 - df["is_fraud"], df["is_fraud"]))
    pd.testing.assert_frame_equal(engineer_features(flipped)[cols], base[cols])
    # A bank's features come from its own transactions only.
    alone = engineer_features(df[df["bank"] == "bank_a"])
    pd.testing.assert_frame_equal(alone[cols], base.loc[df["bank"] == "bank_a", cols])


def test_bad_profiles_and_arguments_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="fraud_rate"):
        BankProfile("x", 1000, 10, 0.7, (1, 1, 1, 1))
    with pytest.raises(ConfigError, match="scenario_weights"):
        BankProfile("x", 1000, 10, 0.01, (1, 1, 1))
    with pytest.raises(ConfigError, match="n_customers"):
        BankProfile("x", 10, 100, 0.01, (1, 1, 1, 1))
    with pytest.raises(ConfigError, match="n_days"):
        generate_transactions(sizes=SMALL, n_days=10)
    with pytest.raises(ConfigError, match="sizes"):
        generate_transactions(sizes=[100, 200])
    with pytest.raises(ConfigError, match="distinct"):
        generate_transactions(banks=[DEFAULT_BANKS[0], DEFAULT_BANKS[0]])
    with pytest.raises(SchemaError, match="is_fraud"):
        engineer_features(pd.DataFrame({"bank": ["a"], "customer_id": [1], "terminal_id": [1],
                                        "tx_datetime": [START_DATE], "amount": [1.0]}))
