"""Tasks: model + loss + local training + metrics for fraud, disease_risk, claim_frequency, claim_severity.

This is the only fedx package that imports torch. It never imports flwr or tenseal::

    task = get_task("fraud")
    model = task.build_model(n_features, {"kind": "mlp", "hidden": [64, 32]}, seed=7)
    report = task.train(model, TabularData(X, y), TrainOptions(epochs=1))
    stats = task.eval_stats(test, task.predict(model, test))  # additive: sum over institutions, then
    metrics = task.metrics_from_stats(stats)                   # the metrics of the pooled scores
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from types import MappingProxyType

from ..errors import ConfigError
from .base import BinaryTask, Task
from .data import TabularData
from .disease_risk import DiseaseRiskTask
from .fraud import FraudTask
from .glm import ClaimFrequencyTask, ClaimSeverityTask, GLMTask
from .metrics import (
    CalibrationCurve,
    OperatingPoint,
    calibration_curve,
    calibration_from_stats,
    operating_point,
    operating_point_from_stats,
)
from .models import model_config
from .params import array_names, get_arrays, set_arrays
from .training import TrainOptions, TrainReport

#: Every task by name (read-only).
TASKS: Mapping[str, Task] = MappingProxyType(
    {t.name: t for t in (FraudTask(), ClaimFrequencyTask(), ClaimSeverityTask(), DiseaseRiskTask())})


def get_task(name: str) -> Task:
    """The task called ``name``.

    Raises
    ------
    ConfigError
        If there is no such task; the message lists the valid names.
    """
    if name in TASKS:
        return TASKS[name]
    close = difflib.get_close_matches(str(name), TASKS, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ConfigError(f"task: unknown task {name!r}{hint}; expected one of {', '.join(TASKS)}")


__all__ = [
    "TASKS", "BinaryTask", "CalibrationCurve", "ClaimFrequencyTask", "ClaimSeverityTask", "DiseaseRiskTask",
    "FraudTask", "GLMTask", "OperatingPoint", "TabularData", "Task", "TrainOptions", "TrainReport", "array_names",
    "calibration_curve", "calibration_from_stats", "get_arrays", "get_task", "model_config", "operating_point",
    "operating_point_from_stats", "set_arrays",
]
