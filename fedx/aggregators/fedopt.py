"""Adaptive server optimizers: FedAdam, FedYogi and FedAvgM (Reddi et al., 2021; Hsu et al., 2019).

The pseudo-gradient of a round is the weighted mean of the clients' deltas. The step is a pure
function of (state, aggregate), so under encryption each institution runs it on the decrypted
aggregate and all of them reach the same model; without encryption the server runs it. The update
formulas follow Flower's ``FedAdam``, ``FedYogi`` and ``FedAvgM`` strategies, so that those serve as
an independent oracle in the tests. Arithmetic is float64, whose IEEE operations give bit-identical
results on every institution's machine.
"""

from __future__ import annotations

import numpy as np

from .base import Arrays, ModelState, UpdateRule, _check_shapes


class _AdaptiveRule(UpdateRule):
    def __init__(self, lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> None:
        self.lr, self.beta1, self.beta2, self.tau = lr, beta1, beta2, tau

    def apply(self, state: ModelState, aggregate: Arrays) -> ModelState:
        _check_shapes(state.params, aggregate)
        delta = [np.asarray(d, dtype=np.float64) for d in aggregate]
        m_prev = state.opt.get("m") or [np.zeros_like(d) for d in delta]
        v_prev = state.opt.get("v") or [np.zeros_like(d) for d in delta]
        m = [self.beta1 * mp + (1.0 - self.beta1) * d for mp, d in zip(m_prev, delta)]
        v = [self._second_moment(vp, d) for vp, d in zip(v_prev, delta)]
        eta = self._step_size(state.round + 1)
        params = [(p.astype(np.float64) + eta * mt / (np.sqrt(vt) + self.tau)).astype(p.dtype)
                  for p, mt, vt in zip(state.params, m, v)]
        return ModelState(params, {"m": m, "v": v}, state.round + 1)

    def _second_moment(self, v: np.ndarray, d: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _step_size(self, server_round: int) -> float:
        return self.lr


class FedAdamRule(_AdaptiveRule):
    """FedAdam, with the bias-corrected step size that Flower's FedAdam uses."""

    name = "fedadam"

    def _second_moment(self, v: np.ndarray, d: np.ndarray) -> np.ndarray:
        return self.beta2 * v + (1.0 - self.beta2) * d * d

    def _step_size(self, server_round: int) -> float:
        # Flower's FedAdam: eta * sqrt(1 - beta2^(t+1)) / (1 - beta1^(t+1)), t the server round.
        t = server_round + 1.0
        return self.lr * float(np.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t))


class FedYogiRule(_AdaptiveRule):
    """FedYogi: the second moment moves additively, which keeps the step from growing too fast."""

    name = "fedyogi"

    def _second_moment(self, v: np.ndarray, d: np.ndarray) -> np.ndarray:
        d2 = d * d
        return v - (1.0 - self.beta2) * d2 * np.sign(v - d2)


class FedAvgMRule(UpdateRule):
    """FedAvgM: server SGD with heavy-ball momentum on the pseudo-gradient."""

    name = "fedavgm"

    def __init__(self, lr: float = 1.0, momentum: float = 0.9) -> None:
        self.lr, self.momentum = lr, momentum

    def apply(self, state: ModelState, aggregate: Arrays) -> ModelState:
        _check_shapes(state.params, aggregate)
        grad = [-np.asarray(d, dtype=np.float64) for d in aggregate]
        prev = state.opt.get("momentum")
        mom = grad if prev is None else [self.momentum * mv + g for mv, g in zip(prev, grad)]
        params = [(p.astype(np.float64) - self.lr * mv).astype(p.dtype) for p, mv in zip(state.params, mom)]
        return ModelState(params, {"momentum": mom}, state.round + 1)
