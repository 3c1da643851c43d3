"""fedx: privacy-preserving federated learning and analytics.

Institutions train models and compute statistics together; no raw record leaves its owner, and
model updates travel under homomorphic encryption, so the server adds ciphertexts it cannot read.

>>> import fedx
>>> cfg = fedx.load_config("examples/finance_antifraud/fedx.yaml", overrides={"federation.rounds": 3})
>>> result = fedx.run(cfg)          # doctest: +SKIP
>>> result.metrics["auprc"]         # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .config import Config, load_config
from .errors import FedxError

if TYPE_CHECKING:
    from . import he
    from .data.local import local_split
    from .report import RunResult

__all__ = ["__version__", "Config", "FedxError", "RunResult", "he", "load_config", "local_split", "run", "stats",
           "load_model"]


def run(cfg: Config, out_dir: Any = None, **kwargs: Any) -> RunResult:
    """Run a federated job on Flower's simulation engine; see :func:`fedx.runner.run`."""
    from .runner import run as _run

    return _run(cfg, out_dir, **kwargs)


def __getattr__(name: str) -> Any:
    # Heavy parts (torch, Flower, TenSEAL) load on first use, so that `import fedx` stays fast.
    if name == "he":
        return importlib.import_module(".he", __name__)
    if name == "RunResult":
        from .report import RunResult

        return RunResult
    if name == "stats":
        from .runner import stats

        return stats
    if name == "load_model":
        from .model import FedxEstimator

        return FedxEstimator.load
    if name == "local_split":
        from .data.local import local_split

        return local_split
    raise AttributeError(f"module 'fedx' has no attribute {name!r}")
