"""The federated model as an institution keeps it, and the scikit-learn estimator that scores with it.

:func:`fedx.load_model` returns a :class:`FedxClassifier` (fraud, disease_risk) or a :class:`FedxRegressor`
(claim_frequency, claim_severity). Both take the raw table, a pandas DataFrame (extra columns such as ids
or the institution's name are ignored) or an array whose columns are :attr:`~FedxEstimator.feature_names_in_`::

    model = fedx.load_model("runs/finance-antifraud/institutions/bank_a/model.pt")
    p = model.predict_proba(df)[:, 1]         # probability of fraud per row
    flags = model.predict(df)                 # 0/1 at model.threshold (0.5)
    roc_auc_score(df["is_fraud"], p)          # sklearn.metrics and sklearn.calibration take them as they are

    glm = fedx.load_model(".../pricing_frequency/institutions/north/model.pt")
    claims = glm.predict(df, exposure=df["years"])   # expected claim counts over that exposure

Underneath is :class:`FedxModel`, a torch module that bundles the network with the shared preprocessing
(``model.module_``); its :meth:`FedxModel.predict` returns the scores (probabilities or expected values).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from torch import nn

from .atomic import atomic_file
from .data.preprocess import Preprocessor
from .data.tables import log_exposure, mask_na_codes
from .errors import DataError
from .tasks import TabularData, get_task
from .tasks.base import BinaryTask
from .tasks.params import set_arrays

FORMAT = "fedx-model/1"


class FedxModel(nn.Module):
    """A trained fedx model with its preprocessing.

    Parameters
    ----------
    task : str
        The task name (fraud, disease_risk, claim_frequency, claim_severity).
    model_cfg : mapping
        The ``model:`` section it was built from.
    preprocessor : Preprocessor
        The shared preprocessing fitted by the federation.
    net : torch.nn.Module
        The network, with the federated weights.
    """

    def __init__(self, task: str, model_cfg: Mapping[str, Any], preprocessor: Preprocessor, net: nn.Module,
                 na_values: Mapping[str, Sequence[Any]] | None = None, glm_report: Mapping[str, Any] | None = None
                 ) -> None:
        super().__init__()
        self.glm_report = None if glm_report is None else dict(glm_report)
        self.task_name = task
        self.model_cfg = dict(model_cfg)
        self.preprocessor = preprocessor
        self.net = net
        self.na_values = {str(k): list(v) for k, v in (na_values or {}).items()}

    @classmethod
    def build(cls, task: str, model_cfg: Mapping[str, Any], preprocessor: Preprocessor,
              params: Sequence[np.ndarray], na_values: Mapping[str, Sequence[Any]] | None = None,
              glm_report: Mapping[str, Any] | None = None) -> FedxModel:
        """Rebuild the network for ``preprocessor``'s features and load ``params`` into it.

        ``na_values`` are the codes that meant "missing" in training (``data.na_values``); scoring
        treats them the same way. ``glm_report`` is an exact GLM's :meth:`GLMResults.to_dict`.
        """
        net = get_task(task).build_model(len(preprocessor.feature_names), model_cfg, seed=0)
        set_arrays(net, list(params))
        net.eval()
        return cls(task, model_cfg, preprocessor, net, na_values, glm_report)

    @property
    def glm_results(self) -> Any:
        """The exact GLM's :class:`~fedx.aggregators.glm_results.GLMResults` (standard errors, intervals,
        relativities, ``summary()``), for a model fitted with ``federation.aggregator: newton``."""
        from .aggregators.glm_results import GLMResults

        if self.glm_report is None:
            raise DataError(f"this {self.task_name} model was not fitted by the exact GLM "
                            f"(federation.aggregator: newton), so it has no GLM results")
        return GLMResults.from_dict(self.glm_report)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The network's raw output for a design matrix (see :attr:`feature_names`)."""
        return self.net(x, *args, **kwargs)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Columns of the design matrix the network takes."""
        return self.preprocessor.feature_names

    def design_matrix(self, df: pd.DataFrame) -> np.ndarray:
        """The preprocessed float32 design matrix of a raw table (missing-value codes as in training)."""
        return self.preprocessor.transform(mask_na_codes(df, self.na_values))

    def predict(self, df: pd.DataFrame, exposure: Any = None) -> np.ndarray:
        """Scores of each row of a raw table: a probability (fraud, disease) or an expected value (GLMs).

        For claim frequency the prediction is the expected number of claims over the row's exposure:
        ``exposure`` when given (one positive number per row), else the table's exposure column when the
        model was fitted with one, else 1. Claim severity takes no exposure.
        """
        offset = self._offset(df, exposure)
        data = TabularData.from_frame(None, self.preprocessor, mask_na_codes(df, self.na_values), offset=offset)
        with torch.no_grad():
            return get_task(self.task_name).predict(self.net, data)

    def _offset(self, df: pd.DataFrame, exposure: Any) -> np.ndarray | None:
        """log(exposure) of each row, or None (exposure 1)."""
        if exposure is not None and getattr(get_task(self.task_name), "family", None) != "poisson":
            raise DataError(f"predict: exposure= is for claim_frequency; a {self.task_name} model takes none")
        offset = log_exposure(df, self.preprocessor.schema.exposure, exposure)
        return None if offset is None else offset.astype(np.float32)

    def save(self, path: str | Path) -> Path:
        """Write the model (weights and preprocessing) to ``path``; readable with :meth:`load`."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        blob = {
            "format": FORMAT,
            "task": self.task_name,
            "model_cfg": self.model_cfg,
            "preprocessor": self.preprocessor.to_dict(),
            "state_dict": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
            "na_values": self.na_values,
            "glm_report": self.glm_report,
        }
        with atomic_file(p) as fh:
            torch.save(blob, fh)
        return p

    @classmethod
    def load(cls, path: str | Path) -> FedxModel:
        """Read a model written by :meth:`save` (safely: no pickled code is executed)."""
        p = Path(path)
        if not p.exists():
            raise DataError(f"model file not found: {p}")
        try:
            blob = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
            raise DataError(f"{p}: not a fedx model file ({type(exc).__name__}: {exc})") from None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise DataError(f"{p}: not a fedx model file (format {blob.get('format') if isinstance(blob, dict) else '?'})")
        prep = Preprocessor.from_dict(blob["preprocessor"])
        net = get_task(blob["task"]).build_model(len(prep.feature_names), blob["model_cfg"], seed=0)
        net.load_state_dict(blob["state_dict"])
        net.eval()
        return cls(blob["task"], blob["model_cfg"], prep, net, blob.get("na_values"), blob.get("glm_report"))


class FedxEstimator(BaseEstimator):
    """A fedx model with the scikit-learn surface; :class:`FedxClassifier` and :class:`FedxRegressor` are the kinds.

    Build one with :meth:`load` (what :func:`fedx.load_model` does) or :meth:`from_model`. It is fitted by the
    federation, never by ``fit``; ``sklearn.base.clone`` is not supported.

    Parameters
    ----------
    model : FedxModel
        The torch module with its preprocessing (reachable as :attr:`module_`).

    Attributes
    ----------
    feature_names_in_ : ndarray of str
        The raw input columns the model reads, before preprocessing: one per declared feature, in the order
        an array ``X`` must have them. A categorical column is one input here, however many design columns it
        becomes (those are :attr:`feature_names`). The exposure column is not among them.
    n_features_in_ : int
        ``len(feature_names_in_)``.
    module_ : FedxModel
        The torch module; ``module_.net`` is the bare network, which takes the design matrix.
    """

    _task_kind = ""

    def __init__(self, model: FedxModel) -> None:
        self.model = model

    @classmethod
    def from_model(cls, model: FedxModel, **kwargs: Any) -> FedxEstimator:
        """The estimator of ``model``'s kind: :class:`FedxClassifier` (binary task) or :class:`FedxRegressor`."""
        kind = FedxClassifier if isinstance(get_task(model.task_name), BinaryTask) else FedxRegressor
        return kind(model, **kwargs)

    @classmethod
    def load(cls, path: str | Path) -> Any:
        """Read a model file written by a run (``institutions/NAME/model.pt``, or ``model.json`` for trees) or by
        :meth:`save`.

        A horizontal gbdt's ``model.json`` gives its estimator. A vertical gbdt run folder (or its parties'
        ``model.json`` parts) gives the joint SecureBoost predictor
        (:func:`fedx.vertical.secureboost_model.load_joint`).
        """
        from .trees.saved import FORMAT as GBDT_FORMAT
        from .trees.saved import SavedGBDT, is_gbdt_file

        p = Path(path)
        if p.is_dir() or (is_gbdt_file(p) and _json_format(p) != GBDT_FORMAT):
            from .vertical.secureboost_model import load_joint

            return load_joint(p)
        if is_gbdt_file(p):
            return cls.from_model(SavedGBDT.load(p))  # type: ignore[arg-type]
        return cls.from_model(FedxModel.load(path))

    def save(self, path: str | Path) -> Path:
        """Write the model to ``path`` (the same file as :meth:`FedxModel.save`)."""
        return self.module_.save(path)

    @property
    def module_(self) -> FedxModel:
        """The torch module, with its preprocessing."""
        return self.model

    @property
    def net(self) -> nn.Module:
        """The bare network: it takes the design matrix (:meth:`design_matrix`)."""
        return self.model.net

    @property
    def task(self) -> str:
        """The task the model was trained for."""
        return self.model.task_name

    @property
    def feature_names_in_(self) -> np.ndarray:
        return np.asarray(self.model.preprocessor.schema.feature_names, dtype=object)

    @property
    def n_features_in_(self) -> int:
        return len(self.model.preprocessor.schema.features)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Columns of the design matrix (one-hot levels, missing-value indicators), as the coefficients name them."""
        return self.model.feature_names

    @property
    def glm_results(self) -> Any:
        """The exact GLM's results (see :attr:`FedxModel.glm_results`)."""
        return self.model.glm_results

    def design_matrix(self, X: Any) -> np.ndarray:
        """The preprocessed float32 design matrix of ``X`` (columns :attr:`feature_names`)."""
        return self.model.design_matrix(self._frame(X))

    def _frame(self, X: Any) -> pd.DataFrame:
        """``X`` as a DataFrame holding every column of :attr:`feature_names_in_`."""
        names = list(self.feature_names_in_)
        if isinstance(X, pd.DataFrame):
            missing = [c for c in names if c not in X.columns]
            if missing:
                raise DataError(f"predict: the table lacks the model's input column(s) {', '.join(map(repr, missing))} "
                                f"(the model reads {', '.join(names)})")
            return X
        if isinstance(X, pd.Series) or np.ndim(X) != 2:
            raise DataError(f"predict: expected a DataFrame or a 2-d array with {len(names)} columns "
                            f"({', '.join(names)}), got {type(X).__name__} of {np.ndim(X)} dimension(s)")
        arr = np.asarray(X)
        if arr.shape[1] != len(names):
            raise DataError(f"predict: expected an array with {len(names)} columns ({', '.join(names)}), "
                            f"got {arr.shape[1]}; pass a DataFrame to choose columns by name")
        return pd.DataFrame(arr, columns=names)

    def __repr__(self, N_CHAR_MAX: int = 700) -> str:  # scikit-learn names the argument so
        return f"{type(self).__name__}(task={self.task!r}, features={self.n_features_in_})"

    def __sklearn_clone__(self) -> FedxEstimator:
        raise TypeError(f"{type(self).__name__} is fitted by the federation; clone is not supported "
                        f"(load the model file again for a second copy)")


class FedxClassifier(ClassifierMixin, FedxEstimator):
    """A fraud or disease-risk model: :meth:`predict_proba` and :meth:`predict` (labels at :attr:`threshold`).

    Parameters
    ----------
    model : FedxModel
        The torch module with its preprocessing.
    threshold : float
        :meth:`predict` gives 1 where the probability of the positive class is at least this (default 0.5).
    """

    def __init__(self, model: FedxModel, threshold: float = 0.5) -> None:
        super().__init__(model)
        self.threshold = threshold

    @property
    def classes_(self) -> np.ndarray:
        """The labels, ``[0, 1]``: column 1 of :meth:`predict_proba` is the positive class."""
        return np.array([0, 1])

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities of each class, shape (n, 2): ``[:, 1]`` is the probability of the positive class."""
        p1 = self.model.predict(self._frame(X))
        return np.column_stack([1.0 - p1, p1])

    def predict(self, X: Any) -> np.ndarray:
        """Labels 0 or 1: 1 where the positive class has probability at least :attr:`threshold`."""
        if not (isinstance(self.threshold, (int, float)) and 0.0 <= float(self.threshold) <= 1.0):
            raise DataError(f"threshold: expected a number in [0, 1], got {self.threshold!r}")
        return (self.predict_proba(X)[:, 1] >= float(self.threshold)).astype(np.int64)


class FedxRegressor(RegressorMixin, FedxEstimator):
    """A claim frequency or claim severity GLM: :meth:`predict` gives the expected value of each row."""

    def predict(self, X: Any, exposure: Any = None) -> np.ndarray:
        """Expected values: ``exp(eta)`` for severity; for frequency, ``exp(eta) * exposure``.

        ``exposure`` is one positive number per row. Without it, a DataFrame's exposure column is used when
        the model was fitted with one (an array ``X`` then needs ``exposure=``), else the exposure is 1.
        """
        return self.model.predict(self._frame(X), exposure=exposure)


def _json_format(path: Path) -> object:
    """The ``format`` field of a JSON model file (None when it has none or cannot be read)."""
    import json

    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc.get("format") if isinstance(doc, dict) else None
