"""The configuration reference (every key, type, default and meaning) as Markdown, for docs/configuration.md."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from typing import Any

import yaml

from .rules import _describe, _range
from .vertical import VerticalPartyConfig
from .sections import Config, DPConfig, DataConfig, DeploymentConfig, FederationConfig, HEConfig, ModelConfig, NodeConfig, NodePolicyConfig, PartitionConfig, ReportConfig, SecurityConfig, ServerOptimizerConfig, StatsConfig, SuperLinkConfig, TrainConfig



SECTIONS: tuple[tuple[str, type], ...] = (
    ("", Config), ("model", ModelConfig), ("data", DataConfig), ("data.partition", PartitionConfig),
    ("data.parties.<name>", VerticalPartyConfig),
    ("train", TrainConfig), ("federation", FederationConfig),
    ("federation.server_optimizer", ServerOptimizerConfig), ("security", SecurityConfig),
    ("security.he", HEConfig), ("security.dp", DPConfig), ("report", ReportConfig), ("stats", StatsConfig),
    ("deployment", DeploymentConfig),
)


NODE_SECTIONS: tuple[tuple[str, type], ...] = (
    ("", NodeConfig), ("policy", NodePolicyConfig), ("superlink", SuperLinkConfig),
)


def reference_markdown(sections: Sequence[tuple[str, type]] = SECTIONS) -> str:
    """The configuration reference (every key, its type, default and meaning) as Markdown tables.

    docs/configuration.md embeds this text (and that of :data:`NODE_SECTIONS`); a test keeps them
    identical.
    """
    lines: list[str] = []
    for path, cls in sections:
        lines.append(f"### `{path or 'top level'}`")
        lines.append("")
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        lines.append(doc.replace("``", "`"))
        lines.append("")
        lines.append("| key | type | default | meaning |")
        lines.append("|---|---|---|---|")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp) or any(dataclasses.is_dataclass(a) for a in typing.get_args(tp)):
                default = "see below"
            elif f.default is not dataclasses.MISSING:
                default = "required" if f.default is dataclasses.MISSING else f"`{_yaml_value(f.default)}`"
            elif f.default_factory is not dataclasses.MISSING:
                default = f"`{_yaml_value(f.default_factory())}`"
            else:
                default = "**required**"
            cells = [f"`{f.name}`", f"{_describe(tp)}{_range(f.metadata)}", default, f.metadata.get("doc", "")]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
