"""The whole statistics protocol in one process, without Flower: for tests, docs and notebooks.

It runs exactly the steps that the federation runs (level discovery, then stages until the release is
done), with the vectors summed by ``combine``: a plain sum by default, or an encrypted one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..data.preprocess import merge_levels
from ..privacy.policy import Policy
from .plan import StatsPlan

Combine = Callable[[Sequence[np.ndarray]], np.ndarray]


def simulate_stats(plan: StatsPlan, frames: Mapping[str, pd.DataFrame], policy: Policy, *,
                   combine: Combine | None = None, rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Federated statistics of several institutions' tables, computed stage by stage in this process.

    Parameters
    ----------
    plan : StatsPlan
        The query.
    frames : mapping of str to pandas.DataFrame
        Each institution's own rows, by name (a table may be empty).
    policy : Policy
        The release policy (the same local minimum for every institution).
    combine : callable, optional
        Sums the institutions' vectors of one stage; defaults to a plaintext sum. Pass an encrypted sum
        (encrypt each vector, aggregate, decrypt) to run under homomorphic encryption.
    rng : numpy.random.Generator, optional
        Source of the institutions' nonces (with noise).

    Returns
    -------
    dict
        The body of stats.json, with ``institutions`` ([{"name", "rows"}]) and ``stages`` (how many ran).
    """
    add = combine if combine is not None else _plain_sum
    for name, df in frames.items():
        plan.check_columns(df, name)
    if plan.needs_levels():
        plan = plan.with_levels(merge_levels([plan.local_levels(df, name) for name, df in frames.items()]))
    stage = json.loads(json.dumps(plan.first_stage()))
    while True:
        vectors = [plan.local_vector(df, stage, policy, source=name, rng=rng) for name, df in frames.items()]
        out = plan.release(add(vectors), stage, policy)
        if out.done:
            assert out.result is not None
            return {**out.result, "institutions": [{"name": n, "rows": len(df)} for n, df in frames.items()],
                    "stages": stage["step"]}
        assert out.next_stage is not None
        stage = json.loads(json.dumps(out.next_stage))  # as it travels on the wire


def _plain_sum(vectors: Sequence[np.ndarray]) -> np.ndarray:
    return np.sum(vectors, axis=0)
