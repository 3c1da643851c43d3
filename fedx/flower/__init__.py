"""fedx on Flower: the only package of fedx that imports ``flwr``.

Everything that speaks Flower lives here: the ClientApp and the ServerApp's orchestration on the Message
API (``client_app``, ``server_app``, ``strategy``, ``records``, ``protocol``), the simulation runner
(``simulation``), and the deployment engine's processes (``deploy``, ``operate``, ``apps``). The layers
below (``fedx.he``, ``fedx.aggregators``, ``fedx.tasks``, ``fedx.data``) never import ``flwr``, so a Flower
API change touches this folder only. Nothing is imported here, so that ``import fedx.flower.deploy``
(which needs no ``flwr``) stays light.
"""
