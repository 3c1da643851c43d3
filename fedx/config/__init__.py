"""YAML -> typed, validated config: the one place where config errors are raised.

Every error names the file, the key path and what was expected, for example::

    examples/x/fedx.yaml: federation.rounds: expected an integer >= 1, got 'ten'
    examples/x/fedx.yaml: federaton: unknown key (did you mean 'federation'?)

Overrides use dotted key paths (``{"federation.rounds": 3}``, or ``--set federation.rounds=3`` in
the CLI). Their values are parsed as YAML, so ``3`` is an int and ``[a, b]`` a list.

The rooms: :mod:`~fedx.config.rules` (allowed values, numeric bounds, how values are named in errors),
:mod:`~fedx.config.sections` (the typed sections and their cross-key checks),
:mod:`~fedx.config.loading` (YAML, overrides, coercion) and :mod:`~fedx.config.reference` (the
Markdown reference in docs/configuration.md). Import from ``fedx.config``.
"""

from __future__ import annotations

from .loading import (
    DuplicateKeyError,
    config_from_dict,
    load_config,
    load_node_config,
    load_yaml,
    parse_override,
)
from .reference import NODE_SECTIONS, SECTIONS, reference_markdown
from .rules import (
    AGGREGATORS,
    BASELINES,
    DROPOUT,
    ENCRYPTIONS,
    NEWTON_L2,
    NEWTON_TOLERANCE,
    ROBUST_AGGREGATORS,
    TASKS,
    TWEEDIE_POWER,
    categorical_uses,
    check_number,
    check_unique,
)
from .sections import (
    Config,
    DataConfig,
    DeploymentConfig,
    DPConfig,
    FederationConfig,
    HEConfig,
    ModelConfig,
    NodeConfig,
    NodePolicyConfig,
    PartitionConfig,
    ReportConfig,
    SecurityConfig,
    ServerOptimizerConfig,
    StatsConfig,
    SuperLinkConfig,
    TrainConfig,
)
from .vertical import VerticalPartyConfig

__all__ = [
    "AGGREGATORS", "BASELINES", "DROPOUT", "ENCRYPTIONS", "NEWTON_L2", "NEWTON_TOLERANCE", "NODE_SECTIONS",
    "ROBUST_AGGREGATORS", "SECTIONS", "TASKS", "TWEEDIE_POWER", "Config", "DPConfig", "DataConfig",
    "DeploymentConfig", "DuplicateKeyError", "FederationConfig", "HEConfig", "ModelConfig", "NodeConfig",
    "NodePolicyConfig", "PartitionConfig", "ReportConfig", "SecurityConfig", "ServerOptimizerConfig",
    "StatsConfig", "SuperLinkConfig", "TrainConfig", "VerticalPartyConfig", "categorical_uses", "check_number", "check_unique",
    "config_from_dict", "load_config", "load_node_config", "load_yaml", "parse_override", "reference_markdown",
]
