"""A federated GBDT as each institution keeps it: the trees with the shared preprocessing, in one JSON file.

:func:`fedx.load_model` reads it (``institutions/NAME/model.json``) and returns the same scikit-learn
estimator as for the other models (:class:`fedx.model.FedxClassifier` or :class:`fedx.model.FedxRegressor`):
:class:`SavedGBDT` has the interface of :class:`fedx.model.FedxModel` that the estimators use, without torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..atomic import write_atomic
from ..data.preprocess import Preprocessor
from ..data.tables import log_exposure, mask_na_codes
from ..errors import DataError
from .model import GBDTModel

FORMAT = "fedx-gbdt-model/1"


def tree_matrix(prep: Preprocessor, df: pd.DataFrame) -> np.ndarray:
    """The design matrix that the trees split (float64): the shared preprocessing, missing values kept.

    The preprocessing imputes a missing numeric value with the federated mean for the other models; a tree
    instead learns where missing values go (each split's default direction), so they stay NaN here. Categorical
    features are one-hot coded and missing-value indicators kept, as for every model.
    """
    X = prep.transform(df).astype(np.float64)
    names = prep.feature_names
    for spec in prep.schema.features:
        if spec.kind != "numeric":
            continue
        col = pd.to_numeric(df[spec.name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        miss = np.isnan(col)
        if miss.any():
            X[miss, names.index(spec.name)] = np.nan
    return X


def is_gbdt_file(path: str | Path) -> bool:
    """Whether ``path`` holds a saved GBDT (a JSON document of :data:`FORMAT`), not a torch model file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64).lstrip()
    except OSError:
        return False
    return head.startswith(b"{")


class SavedGBDT:
    """The trees, the shared preprocessing and the task, with the scoring interface of ``FedxModel``.

    Parameters
    ----------
    task_name : str
        The run's task (fraud, disease_risk, claim_frequency).
    model_cfg : mapping
        The run's ``model:`` section.
    preprocessor : Preprocessor
        The shared preprocessing the federation fitted from summed statistics.
    model : GBDTModel
        The boosted trees.
    na_values : mapping, optional
        ``data.na_values``: codes that mean missing, applied to tables before scoring.
    """

    glm_results = None
    net = None

    def __init__(self, task_name: str, model_cfg: Mapping[str, Any], preprocessor: Preprocessor, model: GBDTModel,
                 na_values: Mapping[str, Sequence[Any]] | None = None) -> None:
        self.task_name = task_name
        self.model_cfg = dict(model_cfg)
        self.preprocessor = preprocessor
        self.gbdt = model
        self.na_values = dict(na_values or {})

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Columns of the design matrix the trees split."""
        return self.preprocessor.feature_names

    def design_matrix(self, df: pd.DataFrame) -> np.ndarray:
        """The design matrix of a raw table (:func:`tree_matrix`, missing-value codes as in training)."""
        return tree_matrix(self.preprocessor, mask_na_codes(df, self.na_values))

    def predict(self, df: pd.DataFrame, exposure: Any = None) -> np.ndarray:
        """A probability (fraud, disease_risk) or the expected count over the row's exposure (claim_frequency)."""
        X = self.design_matrix(df)
        if self.gbdt.classes_ is not None:
            if exposure is not None:
                raise DataError(f"predict: exposure= is for claim_frequency; a {self.task_name} model takes none")
            return self.gbdt.predict_proba(X)[:, 1]
        return self.gbdt.predict(X, offset=log_exposure(df, self.preprocessor.schema.exposure, exposure))

    # ------------------------------------------------------------------ the file

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data: what :meth:`save` writes."""
        return {"format": FORMAT, "task": self.task_name, "model_cfg": self.model_cfg,
                "preprocessor": self.preprocessor.to_dict(), "na_values": self.na_values,
                "gbdt": self.gbdt.to_dict()}

    def save(self, path: str | Path) -> Path:
        """Write the model as strict JSON (no pickle); :meth:`load` reads it back exactly."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(p, json.dumps(self.to_dict(), allow_nan=False))
        return p

    @classmethod
    def load(cls, path: str | Path) -> SavedGBDT:
        """Read a file written by :meth:`save`.

        Raises
        ------
        DataError
            No such file, or not a fedx GBDT model file.
        """
        p = Path(path)
        if not p.exists():
            raise DataError(f"model file not found: {p}")
        try:
            doc = json.loads(p.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{p}: not a fedx GBDT model file ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise DataError(f"{p}: not a fedx GBDT model file (expected format {FORMAT!r})")
        try:
            return cls(doc["task"], doc["model_cfg"], Preprocessor.from_dict(doc["preprocessor"]),
                       GBDTModel.from_dict(doc["gbdt"]), doc.get("na_values"))
        except KeyError as exc:
            raise DataError(f"{p}: malformed fedx GBDT model file (no {exc})") from None
