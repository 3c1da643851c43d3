"""The one result.json writer, FederationSummary.write_result, as the deployed ServerApp and a simulated run use it.

The deployed ServerApp is run as Flower calls it (``_server_main(grid, context)``), with the Orchestrator
replaced by one that returns a known summary: what a deployed run leaves in result.json is checked without a
deployment. The privacy figures are checked against Opacus' RDP accountant, called directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from flwr.app import Context, RecordDict
from opacus.accountants import RDPAccountant

from fedx import he
from fedx.config import config_from_dict, load_config
from fedx.errors import ConfigError
from fedx.flower import apps
from fedx.privacy.dp import ClientDPAccountant
from fedx.run_keys import he_overrides
from fedx.summary import FederationSummary

DP = {"clip": 1.0, "noise_multiplier": 1.1, "delta": 1e-5}
JOB = {"name": "t", "seed": 3, "task": "fraud", "model": {"kind": "logistic"}, "data": {"target": "y"},
       "federation": {"rounds": 2, "min_clients": 2},
       "security": {"encryption": "bfv-compact", "keys": "keys", "he": {"clip": 2.0}, "dp": DP},
       "report": {"plots": False}}


def _metrics(auc: float) -> dict[str, float]:
    # As they arrive through Flower's MetricRecord; roc_auc comes before fraud's primary metric, auprc.
    return {"n": 120.0, "roc_auc": auc, "auprc": auc / 2}


def _summary(cfg: Any) -> FederationSummary:
    """What the Orchestrator learns in two rounds of client-level DP, as its _round and _final record it."""
    dp = cfg.security.dp
    accountant = ClientDPAccountant.from_config(dp, sample_rate=1.0)
    history = []
    for r in (1, 2):
        accountant.step()
        history.append({"round": r, "metrics": _metrics(0.7 + r / 100), "bytes_up": 10.0, "bytes_down": 20.0,
                        "seconds": 1.0, "privacy": {"epsilon": accountant.epsilon()}})
    per = {"bank_a": _metrics(0.71), "bank_b": _metrics(0.73)}
    return FederationSummary(history=history, metrics=_metrics(0.72), per_institution=per,
                             institutions={"bank_a": {"n_train": 80.0, "n_test": 20.0}},
                             model_paths={"bank_a": "/a/model.pt"}, privacy=accountant.report())


def _deployment(tmp_path: Path, job: dict[str, Any], keys: he.KeySet | None = None) -> tuple[Path, Any]:
    (tmp_path / "fedx.yaml").write_text(yaml.safe_dump(job))
    cfg = load_config(tmp_path / "fedx.yaml")
    keys = keys or he.keygen("bfv-compact", **he_overrides(cfg))   # as `fedx keygen --clip` makes them
    keys.save(tmp_path / "keys")
    return tmp_path / "fedx.yaml", cfg


def _serve(tmp_path: Path, config: Path, summary: FederationSummary, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Run the deployed ServerApp's main with an Orchestrator that returns ``summary``; the contexts it got."""
    built: list[Any] = []

    class _Orchestrator:
        def __init__(self, cfg: Any, grid: Any, public: Any, out: Path, **kwargs: Any) -> None:
            built.append(public)

        def run(self) -> FederationSummary:
            return summary

    from fedx.flower import server_app

    monkeypatch.setattr(server_app, "Orchestrator", _Orchestrator)  # apps imports it when a run starts
    run_config = {"fedx-config": str(config), "fedx-out": str(tmp_path / "server-out"),
                  "fedx-public": str(tmp_path / "keys"), "fedx-expected-nodes": "2"}
    apps._server_main(None, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),  # type: ignore[arg-type]
                                    run_config=run_config))
    return built


def test_the_deployed_result_has_the_dp_epsilon_the_preset_and_the_primary_metric(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, cfg = _deployment(tmp_path, JOB)
    summary = _summary(cfg)
    built = _serve(tmp_path, config, summary, monkeypatch)
    assert built and built[0].fingerprint == he.load_public(tmp_path / "keys" / "public.fxk").fingerprint
    doc = json.loads((tmp_path / "server-out" / "result.json").read_text())

    opacus = RDPAccountant()
    opacus.history = [(1.1, 1.0, 2)]                  # two rounds, every institution sampled
    privacy = doc["privacy"]
    assert privacy["epsilon"] == pytest.approx(opacus.get_epsilon(delta=1e-5), rel=1e-9)
    assert privacy["delta"] == 1e-5 and privacy["noise_multiplier"] == 1.1 and privacy["level"] == "client"
    assert privacy["steps"] == 2 and privacy["stopped_by_budget"] is False
    assert privacy["encryption"] == "bfv-compact"
    # The keys' own preset: its clip range widened for the DP noise beyond security.he.clip.
    assert privacy["preset"]["name"] == "bfv-compact" and privacy["preset"]["clip"] == he_overrides(cfg)["clip"] > 2.0
    assert doc["primary_metric"] == "auprc"
    assert doc["metrics"]["n"] == 120 and set(doc["per_institution"]) == {"bank_a", "bank_b"}

    # A simulated run writes the same summary through the same method: the same sections, the same privacy.
    sim = summary.write_result(cfg, tmp_path / "sim", built[0], centralized=_metrics(0.8),
                               centralized_per_institution={"bank_a": _metrics(0.79)})
    sim_doc = json.loads(sim.result_path.read_text())
    assert sim_doc["privacy"] == privacy
    assert set(sim_doc) == set(doc) and sim_doc["baselines"]["centralized"]["auprc"] == 0.4
    assert "centralized" not in doc["baselines"]   # pooled data exists in simulation only


def test_sample_level_epsilon_is_the_largest_institution_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = {**JOB, "security": {**JOB["security"], "dp": {**DP, "level": "sample"}}}
    config, cfg = _deployment(tmp_path, job, keys=he.keygen("bfv-compact", clip=2.0))
    summary = _summary(cfg)
    summary.privacy = {}
    for row, eps in zip(summary.history, ({"bank_a": 0.4, "bank_b": 0.6}, {"bank_a": 0.9, "bank_b": 0.7})):
        row["privacy"] = {"per_institution_epsilon": eps}
    _serve(tmp_path, config, summary, monkeypatch)
    privacy = json.loads((tmp_path / "server-out" / "result.json").read_text())["privacy"]
    assert privacy["epsilon"] == 0.9 and privacy["per_institution_epsilon"] == {"bank_a": 0.9, "bank_b": 0.7}
    assert privacy["level"] == "sample"


@pytest.mark.parametrize(("keys", "message"), [
    (lambda: he.keygen("ckks"), r"security\.keys: .*/keys/public\.fxk holds ckks keys, and security\.encryption is bfv-compact"),
    (lambda: he.keygen("bfv-compact", clip=3.0), r"security\.keys: .*/keys/public\.fxk: the keys clip values to 3, and "
                                                 r"client-level DP .* needs at least 5\.67: make keys with `fedx keygen --preset bfv-compact --clip 5\.67`"),
    (lambda: he.keygen("bfv-compact", bits=12, clip=6.0), r"security\.keys: .*/keys/public\.fxk: the keys quantize to 12 bits, "
                                                          r"and security\.he\.bits is 19: make keys with `fedx keygen "
                                                          r"--preset bfv-compact --bits 19`"),
])
def test_the_deployed_server_refuses_keys_that_do_not_fit_the_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: Any, message: str) -> None:
    job = {**JOB, "security": {**JOB["security"], "he": {"bits": 19, "clip": 2.0}}}
    config, cfg = _deployment(tmp_path, job, keys=keys())
    with pytest.raises(ConfigError, match=message):
        _serve(tmp_path, config, _summary(cfg), monkeypatch)
    assert not (tmp_path / "server-out" / "result.json").exists()


def test_without_dp_the_privacy_section_is_the_encryption_alone() -> None:
    cfg = config_from_dict({**JOB, "security": {"encryption": "none"}})
    summary = FederationSummary(metrics=_metrics(0.7))
    assert summary.privacy_section(cfg, None) == {"encryption": "none"}
    result = summary.result(cfg, "out", None, final_path=lambda p: "/final/" + p)
    assert result.primary_metric == "auprc" and result.baselines == {}
