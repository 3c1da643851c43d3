"""One of eight banks poisons every round: robust aggregators hold, FedAvg breaks.

Eight institutions hold IID shares of the card-fraud generator's transactions and train fedx's own
fraud task locally; the update rules are the shipped ones (:func:`fedx.aggregators.make_rule`). One
institution sends its delta multiplied by ``ATTACK`` (a scaled sign flip) in every round. The anti-fraud
AUPRC of the final model, on the eight test splits pooled, is computed by scikit-learn
(``average_precision_score``), independently of fedx's metrics.

The data lean on the generator's two high-fraud banks (about 800 frauds in 40,000 transactions), so that
the pooled test splits hold about 200 frauds and the AUPRC is stable to well under 0.02.
"""

from __future__ import annotations

from functools import cache, lru_cache

import numpy as np
from sklearn.metrics import average_precision_score

from fedx.config import Config, config_from_dict
from fedx.inprocess import Federation, federation, train_rounds
from fedx.tasks import get_task

ATTACK = -10.0          # the attacker's delta, times this
ATTACKER = 3            # which of the 8 institutions attacks
ROUNDS = 10


def _config(aggregator: str) -> Config:
    return config_from_dict({
        "name": "poisoning", "seed": 7, "task": "fraud",
        "model": {"kind": "logistic"},
        "data": {"source": "synthetic/transactions",
                 "params": {"sizes": [2_000, 2_000, 4_000, 12_000, 20_000], "n_terminals": 400},
                 "institutions": 8, "target": "is_fraud", "test_fraction": 0.25,
                 "drop": ["tx_id", "bank", "customer_id", "terminal_id", "tx_datetime", "day", "scenario"]},
        "train": {"lr": 0.05, "batch_size": 256},
        "federation": {"rounds": ROUNDS, "aggregator": aggregator, "min_clients": 8, "byzantine": 1},
        "security": {"encryption": "none"},
    })


@lru_cache(maxsize=1)
def _federation() -> Federation:
    """The eight institutions, split and preprocessed as a federation would (fedx.inprocess)."""
    fed = federation(_config("fedavg"))
    assert len(fed.data) == 8
    return fed


@cache
def _final_auprc(aggregator: str, attack: float | None) -> float:
    """AUPRC of the model after ROUNDS rounds of the named rule, with or without the attacker."""
    cfg = _config(aggregator)
    fed = _federation()
    attacker = list(fed.data)[ATTACKER]

    def tamper(name: str, _round: int, delta: list[np.ndarray]) -> list[np.ndarray]:
        return [(attack * d).astype(d.dtype) for d in delta] if attack is not None and name == attacker else delta

    model, _ = train_rounds(cfg, fed, tamper=tamper)
    task = get_task(cfg.task)
    tests = [test for _, test in fed.data.values()]
    y = np.concatenate([test.y for test in tests])
    scores = np.concatenate([task.predict(model, test) for test in tests])
    return float(average_precision_score(y, scores))


def test_median_and_krum_keep_the_clean_auprc_where_fedavg_breaks() -> None:
    clean = _final_auprc("fedavg", None)
    fedavg = _final_auprc("fedavg", ATTACK)
    median = _final_auprc("median", ATTACK)
    krum = _final_auprc("krum", ATTACK)
    y = np.concatenate([test.y for _, test in _federation().data.values()])
    print(f"\nAUPRC after {ROUNDS} rounds, 8 institutions, institution {ATTACKER} sends {ATTACK:g} x its update "
          f"({int(y.sum())} frauds in {len(y)} test rows, base rate {y.mean():.4f}):\n"
          f"  clean FedAvg    {clean:.4f}\n  attacked FedAvg {fedavg:.4f}\n"
          f"  attacked median {median:.4f}\n  attacked Krum   {krum:.4f}")
    assert clean > 10 * y.mean()            # the clean federation learned to find fraud
    assert clean - fedavg > 0.1              # FedAvg visibly breaks (far beyond the 0.02 band)
    assert fedavg < 3 * y.mean()             # ... down to about a random ranking
    assert abs(median - clean) <= 0.02
    assert abs(krum - clean) <= 0.02
