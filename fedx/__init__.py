"""fedx: privacy-preserving federated learning and analytics.

Institutions train models and compute statistics together; no raw record leaves its owner, and
model updates travel under homomorphic encryption, so the server adds ciphertexts it cannot read.

>>> import fedx
>>> cfg = fedx.load_config("examples/finance_antifraud/fedx.yaml", overrides={"federation.rounds": 3})
>>> result = fedx.run(cfg)          # doctest: +SKIP
>>> result.metrics["auprc"]         # doctest: +SKIP

A config may also be a dict (:func:`config_from_dict`), and each institution's table a pandas
DataFrame: ``fedx.run(config, "runs/x", tables={"bank_a": df_a, ...})`` (docs/quickstart.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .config import Config, config_from_dict, load_config
from .errors import FedxError

if TYPE_CHECKING:
    from . import he
    from .data.local import local_split
    from .report import RunResult
    from .runner import run, stats

__all__ = ["Config", "FedxError", "RunResult", "__version__", "config_from_dict", "he", "load_config", "load_model",
           "local_split", "run", "stats"]


def __getattr__(name: str) -> Any:
    # Heavy parts (pandas, torch, Flower, TenSEAL) load on first use, so that `import fedx` stays fast.
    # fedx.run and fedx.stats are fedx.runner's functions themselves: their signatures and docstrings.
    if name == "he":
        return importlib.import_module(".he", __name__)
    if name == "RunResult":
        from .report import RunResult

        return RunResult
    if name in ("run", "stats"):
        from . import runner

        return getattr(runner, name)
    if name == "load_model":
        from .model import FedxEstimator

        return FedxEstimator.load
    if name == "local_split":
        from .data.local import local_split

        return local_split
    raise AttributeError(f"module 'fedx' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
