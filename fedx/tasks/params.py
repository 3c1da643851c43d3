"""A model's weights as a fixed-order list of float32 numpy arrays: what travels between institutions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import DataError


def array_names(model: nn.Module) -> list[str]:
    """Names of the model's arrays, in the order of :func:`get_arrays`."""
    return list(model.state_dict().keys())


def get_arrays(model: nn.Module) -> list[np.ndarray]:
    """Float32 copies of the model's arrays (its ``state_dict``, in order)."""
    return [t.detach().cpu().numpy().astype(np.float32, copy=True) for t in model.state_dict().values()]


def check_arrays(model: nn.Module, arrays: Sequence[np.ndarray], what: str = "arrays") -> None:
    """Check that ``arrays`` fit ``model``: their count, each shape, and finite values.

    Raises
    ------
    DataError
        Naming the first array at fault, its expected shape and what was given.
    """
    names = array_names(model)
    shapes = [tuple(t.shape) for t in model.state_dict().values()]
    if len(arrays) != len(names):
        raise DataError(f"{what}: expected {len(names)} arrays for this model ({', '.join(names)}), "
                        f"got {len(arrays)}")
    for i, (name, shape, arr) in enumerate(zip(names, shapes, arrays)):
        a = np.asarray(arr)
        if a.shape != shape:
            raise DataError(f"{what}[{i}] ({name}): expected shape {shape}, got {a.shape}")
        if not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
            raise DataError(f"{what}[{i}] ({name}): expected finite numbers")


def set_arrays(model: nn.Module, arrays: Sequence[np.ndarray]) -> None:
    """Load ``arrays`` (in the order of :func:`get_arrays`) into ``model``, after :func:`check_arrays`."""
    check_arrays(model, arrays)
    state = {name: torch.tensor(np.asarray(a), dtype=torch.float32) for name, a in zip(array_names(model), arrays)}
    model.load_state_dict(state, strict=True)


def update_delta(new: Sequence[np.ndarray], old: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``new - old`` per array, subtracted in float64 and sent as float32 (what an institution uploads)."""
    return [(n.astype(np.float64) - o.astype(np.float64)).astype(np.float32) for n, o in zip(new, old)]
