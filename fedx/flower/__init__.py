"""Flower runtime of fedx: the only package of fedx that imports flwr.

Everything Flower-specific lives here (ClientApp, ServerApp, the strategy adapter, simulation and
deployment helpers), so a Flower API change touches this folder only. Two pieces drop into any user's
own Message-API Flower app:

>>> from fedx.flower import EncryptedFedAvg, he_mod
>>> app = ClientApp(mods=[he_mod("keys/")])                        # doctest: +SKIP
>>> strategy = EncryptedFedAvg(keys_public)                        # doctest: +SKIP

:func:`decrypt_arrays` reads the encrypted final model at an institution. The names load on first use,
so that importing a submodule does not pull in the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .encrypted_fedavg import EncryptedFedAvg
    from .he_client_mod import decrypt_arrays, he_mod

__all__ = ["EncryptedFedAvg", "decrypt_arrays", "he_mod"]


def __getattr__(name: str) -> Any:
    if name == "EncryptedFedAvg":
        from .encrypted_fedavg import EncryptedFedAvg

        return EncryptedFedAvg
    if name in ("he_mod", "decrypt_arrays"):
        from . import he_client_mod as module

        return getattr(module, name)
    raise AttributeError(f"module 'fedx.flower' has no attribute {name!r}")
