"""``model: {kind: gbdt, ...}``: the settings of gradient-boosted trees, and the rules that involve other keys."""

from __future__ import annotations

import pytest

from fedx.config import config_from_dict
from fedx.errors import ConfigError

BASE = {
    "name": "t",
    "task": "fraud",
    "data": {"source": "synthetic/transactions", "target": "is_fraud", "split_by": "bank"},
}

ISSUE_BLOCK = {"kind": "gbdt", "trees": 400, "depth": 6, "learning_rate": 0.05, "bins": 256, "l2": 1.0,
               "min_child_weight": 1.0, "subsample": 1.0, "colsample": 1.0, "objective": "auto"}


def test_the_gbdt_block_reads_with_types_and_defaults() -> None:
    cfg = config_from_dict({**BASE, "model": ISSUE_BLOCK})
    m = cfg.model
    assert (m.kind, m.trees, m.depth, m.learning_rate, m.bins) == ("gbdt", 400, 6, 0.05, 256)
    assert (m.l2, m.min_child_weight, m.gamma, m.subsample, m.colsample) == (1.0, 1.0, 0.0, 1.0, 1.0)
    assert isinstance(m.l2, float) and isinstance(m.trees, int)
    assert m.gbdt_objective(cfg.task) == "binary:logistic"
    assert cfg.standardize is False                       # trees need no scaling
    freq = config_from_dict({**BASE, "task": "claim_frequency", "data": {**BASE["data"], "target": "claims"},
                             "model": {"kind": "gbdt", "gamma": 0.5}})
    assert freq.model.gbdt_objective(freq.task) == "count:poisson" and freq.model.gamma == 0.5


@pytest.mark.parametrize("model, expected", [
    ({"depth": 0}, r"model\.depth: expected an integer in \[1, 16\], got 0"),
    ({"depth": 17}, r"model\.depth: expected an integer in \[1, 16\], got 17"),
    ({"bins": 1}, r"model\.bins: expected an integer in \[2, 256\], got 1"),
    ({"bins": 512}, r"model\.bins: expected an integer in \[2, 256\], got 512"),
    ({"trees": 0}, r"model\.trees: expected an integer >= 1, got 0"),
    ({"trees": 2.5}, r"model\.trees: expected an integer"),
    ({"learning_rate": 0}, r"model\.learning_rate: expected a number > 0, got 0"),
    ({"l2": -1}, r"model\.l2: expected a number >= 0, got -1"),
    ({"min_child_weight": -0.5}, r"model\.min_child_weight: expected a number >= 0"),
    ({"gamma": -1}, r"model\.gamma: expected a number >= 0"),
    ({"subsample": 0}, r"model\.subsample: expected a number in \(0, 1\], got 0"),
    ({"colsample": 1.5}, r"model\.colsample: expected a number in \(0, 1\], got 1\.5"),
    ({"objective": "reg:gamma"}, r"model\.objective: expected one of auto, binary:logistic, count:poisson"),
    ({"objective": "count:poisson"}, r"model\.objective: count:poisson does not fit task fraud"),
    ({"treez": 3}, r"model\.treez: unknown key \(did you mean 'trees'\?\)"),
])
def test_bad_gbdt_settings_name_the_key(model: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        config_from_dict({**BASE, "model": {"kind": "gbdt", **model}})


@pytest.mark.parametrize("change, expected", [
    ({"task": "claim_severity", "data": {**BASE["data"], "target": "cost"}},
     r"model\.kind: gbdt learns fraud, disease_risk, claim_frequency; task 'claim_severity'"),
    ({"federation": {"aggregator": "fedadam"}}, r"federation\.aggregator: model\.kind: gbdt .*\(got 'fedadam'\)"),
    ({"security": {"dp": {"clip": 1.0}}}, r"security\.dp: differential privacy is not available for model\.kind"),
    ({"federation": {"fraction": 0.5}}, r"federation\.fraction: model\.kind: gbdt sums every institution"),
    ({"security": {"encryption": "bfv-compact", "masking": "pairwise"}},
     r"security\.masking: model\.kind: gbdt sums its histograms .* without pairwise masks"),
])
def test_gbdt_rules_across_sections(change: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        config_from_dict({**BASE, "model": {"kind": "gbdt"}, **change})


def test_a_boosting_objective_needs_kind_gbdt() -> None:
    with pytest.raises(ConfigError, match=r"model\.objective: a boosting objective is for model\.kind: gbdt"):
        config_from_dict({**BASE, "model": {"kind": "mlp", "objective": "binary:logistic"}})
