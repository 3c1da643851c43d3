"""The federated model as an institution keeps it: a torch module that scores raw tables.

:class:`FedxModel` bundles the network with the shared preprocessing, so a bank's pipeline can
score a pandas DataFrame of its own transactions directly::

    model = fedx.load_model("runs/finance-antifraud/institutions/bank_a/model.pt")
    scores = model.predict(df)          # probability of fraud per row
    logits = model(torch_tensor_of_design_matrix)   # it is an ordinary torch.nn.Module too
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .atomic import atomic_file
from .data.preprocess import Preprocessor
from .data.tables import mask_na_codes
from .errors import DataError
from .tasks import TabularData, get_task
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

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        """Scores of each row of a raw table: a probability (fraud, disease) or an expected value (GLMs).

        For claim frequency the table needs its exposure column; the prediction is the expected
        number of claims over that exposure.
        """
        schema = self.preprocessor.schema
        offset = None
        if schema.exposure is not None:
            if schema.exposure not in df.columns:
                raise DataError(f"predict: column {schema.exposure!r} (exposure) is missing")
            offset = np.log(df[schema.exposure].to_numpy(dtype=np.float64)).astype(np.float32)
        x = self.design_matrix(df)
        data = TabularData(x, np.zeros(len(df), dtype=np.float32), offset=offset,
                           feature_names=self.feature_names)
        with torch.no_grad():
            return get_task(self.task_name).predict(self.net, data)

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
