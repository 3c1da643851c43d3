"""fedx on Flower: the only package of fedx that imports ``flwr``.

Everything that speaks Flower lives here: the ClientApp and the ServerApp's orchestration on the Message
API (``client_app``, ``server_app``, ``strategy``, ``records``, ``protocol``), the simulation runner
(``simulation``), and the deployment engine's processes (``deploy``, ``operate``, ``apps``). The layers
below (``fedx.he``, ``fedx.aggregators``, ``fedx.tasks``, ``fedx.data``) never import ``flwr``, so a Flower
API change touches this folder only. Two pieces drop into any user's own Message-API Flower app:

>>> from fedx.flower import EncryptedFedAvg, he_mod
>>> app = ClientApp(mods=[he_mod("keys/")])                        # doctest: +SKIP
>>> strategy = EncryptedFedAvg(keys_public)                        # doctest: +SKIP

:func:`decrypt_arrays` reads the encrypted final model at an institution. The names load on first use,
so that importing a submodule (``fedx.flower.deploy`` needs no ``flwr``) does not pull in the rest.
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
