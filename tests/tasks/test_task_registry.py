"""The task registry and each task's declared contract."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fedx.errors import ConfigError
from fedx.tasks import TASKS, get_task


def test_every_task_is_registered_with_its_contract() -> None:
    expected = {"fraud": ("binary", "binary", "auprc"), "disease_risk": ("binary", "binary", "roc_auc"),
                "claim_frequency": ("poisson", "count", "deviance"),
                "claim_severity": ("gamma", "positive", "deviance")}
    assert set(TASKS) == set(expected)
    for name, (family, target_kind, primary) in expected.items():
        task = get_task(name)
        assert (task.name, task.family, task.target_kind, task.primary_metric) == (name, family, target_kind, primary)
        assert primary in task.metric_names


def test_unknown_task_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError) as err:
        get_task("frauds")
    msg = str(err.value)
    assert "frauds" in msg and "did you mean 'fraud'" in msg
    assert all(name in msg for name in TASKS)


def test_higher_is_better() -> None:
    assert get_task("fraud").higher_is_better("auprc")
    assert get_task("disease_risk").higher_is_better("roc_auc")
    assert not get_task("disease_risk").higher_is_better("brier")
    assert not get_task("claim_frequency").higher_is_better("deviance")
    assert get_task("claim_severity").higher_is_better("gini")
    with pytest.raises(ConfigError, match="deviance"):
        get_task("fraud").higher_is_better("deviance")


def test_tasks_import_neither_flower_nor_tenseal() -> None:
    code = "import sys, fedx.tasks; print(sorted(m for m in ('flwr', 'tenseal') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
