"""Runs with ``security.masking: pairwise``: the same models, statistics and sums as without, bit for bit.

The server and the institutions are fedx's real ones; the transport is :class:`local_grid.LocalGrid`
(in process), so that five institutions, dropouts and a coalition fit in seconds. The truth each test
checks against is the unmasked bfv-compact run on the same data, and numpy's sum of the quantized
updates that the institutions sent in that run.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedx import he
from fedx.config import config_from_dict
from fedx.errors import ConfigError
from fedx.flower.records import read_blobs, read_json
from fedx.flower.server_app import Orchestrator
from fedx.flower.stats_server import StatsOrchestrator
from fedx.he import masked
from fedx.institution import LocalPolicy, NodeSpec

from local_grid import LocalGrid

SITES = ("ash", "birch", "cedar", "elm", "fir")


def five_sites(seed: int = 1) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    out = {}
    for i, name in enumerate(SITES):
        n = 120 + 40 * i
        x1, x2 = rng.normal(0.3 * i - 0.6, 1.0, n), rng.normal(0.0, 2.0, n)
        cat = rng.choice(["a", "b", "c"], n)
        logit = -1.0 + 1.5 * x1 - 0.5 * x2 + np.where(cat == "b", 1.0, 0.0)
        y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
        out[name] = pd.DataFrame({"x1": x1, "x2": x2, "cat": cat, "label": y})
    return out


@functools.cache
def keys_dir() -> Path:
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="fedx-mask-keys-"))
    he.keygen("bfv-compact").save(folder, overwrite=True)
    return folder


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sites")
    paths = {}
    for name, df in five_sites().items():
        paths[name] = folder / f"{name}.csv"
        df.to_csv(paths[name], index=False)
    return paths


def config(masking: str, **sections: dict) -> dict:
    doc = {
        "name": "masked", "seed": 5, "task": "disease_risk", "model": {"kind": "logistic"},
        "data": {"source": "unused.csv", "target": "label", "features": {"x1": "numeric", "x2": "numeric",
                                                                         "cat": "categorical"}},
        "train": {"lr": 0.05, "batch_size": 32},
        "federation": {"rounds": 2, "local_epochs": 1, "min_clients": 3},
        "security": {"encryption": "bfv-compact", "masking": masking, "keys": str(keys_dir())},
        "report": {"baselines": []},
    }
    for key, value in sections.items():
        doc[key] = {**doc.get(key, {}), **value}
    return doc


def specs(sites: dict[str, Path], out: Path, names=SITES) -> list[NodeSpec]:
    return [NodeSpec(name=n, data=sites[n], out_dir=out / n, keys=keys_dir(), policy=LocalPolicy()) for n in names]


def public():
    return he.public_context(keys_dir() / "public.fxk")


def secret():
    return he.secret_context(keys_dir() / "secret.fxk")


def train(sites, tmp: Path, masking: str, down=None, names=SITES, **sections):
    cfg = config_from_dict(config(masking, **sections))
    grid = LocalGrid(specs(sites, tmp / masking, names), down)
    orch = Orchestrator(cfg, grid, public(), tmp / masking / "server", expected_nodes=len(names), resume=False,
                        wait_seconds=1.0)
    summary = orch.run()
    return orch, grid, summary


def decrypted(blob: bytes) -> list[np.ndarray]:
    arrays, _ = he.decrypt(secret(), blob)
    return list(arrays.values()) if isinstance(arrays, dict) else list(arrays)


def test_a_masked_run_equals_the_unmasked_run_to_the_bit(sites, tmp_path: Path) -> None:
    plain, _, s_plain = train(sites, tmp_path, "none")
    mask, grid, s_mask = train(sites, tmp_path, "pairwise")
    assert sorted(plain.strategy.aggregates) == sorted(mask.strategy.aggregates) == [1, 2]
    for r in (1, 2):
        for a, b in zip(decrypted(plain.strategy.aggregates[r]), decrypted(mask.strategy.aggregates[r]), strict=True):
            assert np.array_equal(a, b)  # the same sum, hence the same model
    for a, b in zip(decrypted(plain.strategy.setup_payload), decrypted(mask.strategy.setup_payload), strict=True):
        assert np.array_equal(a, b)  # the moments of setup are masked too
    assert plain.strategy.digests == mask.strategy.digests  # every institution reached the same model state
    assert s_plain.per_institution == s_mask.per_institution
    # The combined metrics add the institutions' float evaluation sums, which move in the last bit between two
    # unmasked runs too (the models are equal: the digests above are SHA-256 of the parameters).
    assert s_plain.metrics == pytest.approx(s_mask.metrics, rel=1e-12)
    # Every sum went through the four masking steps: moments, then each round.
    phases = grid.seen["ash"]
    assert phases.count("mask-keys") == phases.count("mask-shares") == phases.count("mask-unmask") == 3
    assert all(h["masking_bytes"]["up"] > 0 for h in s_mask.history)


def test_newton_glm_statistics_are_masked_and_the_fit_is_unchanged(sites, tmp_path: Path) -> None:
    glm = {"federation": {"aggregator": "newton", "rounds": 8}}
    plain, _, _ = train(sites, tmp_path, "none", **glm)
    mask, grid, _ = train(sites, tmp_path, "pairwise", **glm)
    assert plain.strategy.report is not None or plain.summary.model_report is not None
    assert plain.summary.model_report == mask.summary.model_report
    assert grid.seen["elm"].count("mask-unmask") == 1 + len(mask.strategy.aggregates)


def test_statistics_are_masked_and_released_unchanged(sites, tmp_path: Path) -> None:
    stats = {"columns": ["x1", "x2"], "quantiles": {"x1": [0.5]}, "frequencies": ["cat"], "min_cohort": 5}
    results = {}
    for masking in ("none", "pairwise"):
        doc = config(masking)
        doc.pop("task"), doc.pop("model"), doc.pop("train")
        doc["stats"] = stats
        cfg = config_from_dict(doc)
        grid = LocalGrid(specs(sites, tmp_path / masking))
        results[masking] = StatsOrchestrator(cfg, grid, public(), expected_nodes=5, wait_seconds=1.0).run()
        if masking == "pairwise":
            assert grid.seen["fir"].count("mask-unmask") == results[masking]["stages"]
    assert results["none"] == results["pairwise"]


def _train_blobs(grid: LocalGrid, rnd: int) -> dict[str, bytes]:
    """The train payloads that reached the server in round ``rnd``, by institution."""
    return {n: read_blobs(msg.content.array_records["payload"])["blob"] for (n, phase, r), msg in grid.log.items()
            if phase == "train" and r == rnd and not msg.has_error()}


@pytest.mark.parametrize("when", ["after its masked update", "before its masked update"])
def test_one_of_five_drops_and_the_sum_of_the_survivors_is_exact(sites, tmp_path: Path, when: str) -> None:
    dies = "mask-unmask" if when.startswith("after") else "train"

    def down(name: str, phase: str, rnd: int) -> bool:
        return name == "cedar" and rnd >= 1 and (phase == dies or phase in ("evaluate", "final"))

    plain, pgrid, _ = train(sites, tmp_path / "p", "none", down, federation={"rounds": 1})
    mask, mgrid, _ = train(sites, tmp_path / "m", "pairwise", down, federation={"rounds": 1})
    sent = _train_blobs(pgrid, 1)
    assert ("cedar" in sent) == when.startswith("after") and len(sent) >= 4
    t = public().preset.plain_modulus
    truth = np.mod(sum(masked.decrypt_residues(secret(), b).astype(np.int64) for b in sent.values()), t)
    got = masked.decrypt_residues(secret(), mask.strategy.aggregates[1])
    assert np.array_equal(got, truth)  # numpy's sum of the quantized updates of every update that arrived
    assert sorted(mask.strategy.last_outcome.accepted) == sorted(plain.strategy.last_outcome.accepted)
    masked_sent = _train_blobs(mgrid, 1)
    assert set(masked_sent) == set(sent)
    # Each masked update on its own decrypts to noise, not to the update.
    for n, b in masked_sent.items():
        assert not np.array_equal(masked.decrypt_residues(secret(), b), masked.decrypt_residues(secret(), sent[n]))


def test_masking_is_refused_under_ckks_with_two_institutions_and_with_a_bad_threshold(sites, tmp_path) -> None:
    with pytest.raises(ConfigError, match="security.masking: pairwise needs security.encryption: bfv-compact"):
        config_from_dict(config("pairwise", security={"encryption": "ckks", "keys": None}))
    with pytest.raises(ConfigError, match="security.masking: pairwise needs at least 3 institutions, got 2"):
        config_from_dict(config("pairwise", data={"institutions": 2, "features": None},
                                federation={"min_clients": 2}))
    with pytest.raises(ConfigError, match=r"security.threshold: must lie in \[3, 5\] for 5 institutions"):
        config_from_dict(config("pairwise", data={"institutions": 5, "features": None}, security={"threshold": 2}))
    with pytest.raises(ConfigError, match="security.threshold: applies to security.masking: pairwise"):
        config_from_dict(config("none", security={"threshold": 3}))
    # Known only at run time: two institutions connect.
    with pytest.raises(ConfigError, match="needs at least 3 institutions, got 2"):
        train(sites, tmp_path, "pairwise", names=SITES[:2], federation={"min_clients": 2})


@pytest.mark.slow  # about 40 s on 2 loaded cores: two runs of a 10^4-parameter model
def test_a_coalition_of_the_server_and_t_minus_1_members_does_not_read_an_update_in_a_run(sites, tmp_path) -> None:
    """The attacker holds the HE secret key, every reply the server received, and all that two members (t - 1
    for t = 3 of 5) kept of the round: their mask keys, seeds and the shares they hold. Its best estimate of
    elm's update is uncorrelated with it; without masking the same attacker reads it exactly."""
    from fedx.flower.masking import _MASK_STATE
    from fedx.secagg import MaskingClient, UnmaskReply
    from fedx.secagg.client import SELF_SEED_BYTES, pair_mask, pair_sign, self_mask
    from fedx.secagg.sharing import combine

    mlp = {"model": {"kind": "mlp", "hidden": [100, 100]}, "federation": {"rounds": 1}}
    plain, pgrid, _ = train(sites, tmp_path / "p", "none", **mlp)
    _, mgrid, _ = train(sites, tmp_path / "m", "pairwise", **mlp)
    t = public().preset.plain_modulus
    target, coalition = "elm", ("ash", "birch")
    n = sum(int(np.prod(s)) for s in plain.strategy.update_shapes)
    assert n > 10_000
    # Without masks, the attacker's decryption of the target's blob is its quantized update (the truth here;
    # tests/secagg/test_coalition.py shows the same attacker recovering it exactly).
    truth = masked.centre(masked.decrypt_residues(secret(), _train_blobs(pgrid, 1)[target]), t).ravel()[:n]
    assert np.count_nonzero(truth) > n // 2
    blob = _train_blobs(mgrid, 1)[target]
    y = masked.decrypt_residues(secret(), blob).astype(np.int64)
    members = {m: MaskingClient.from_state(read_json(mgrid.contexts[i + 1].state, _MASK_STATE))
               for i, m in enumerate(SITES)}
    setup, roster = members[target].setup, members[coalition[0]]._roster
    # The server rebuilt the target's self-mask seed from the survivors' replies: remove the self mask.
    replies = [UnmaskReply.from_bytes(bytes.fromhex(read_json(msg.content)["reply"]))
               for (name, phase, r), msg in mgrid.log.items() if phase == "mask-unmask" and r == 1]
    seed = combine([rep.seed_shares[target] for rep in replies][:setup.threshold], setup.threshold, "seed",
                   SELF_SEED_BYTES)
    y = y - self_mask(seed, setup, y.size).reshape(y.shape)
    # Remove the pairwise masks between the target and each coalition member.
    for c in coalition:
        m = pair_mask(members[c]._mask_key, roster.mask_keys[target], setup, c, target, y.size, c)
        y = y - pair_sign(target, c) * m.reshape(y.shape)
    guess = masked.centre(y, t).ravel()[:n]
    assert abs(np.corrcoef(guess, truth)[0, 1]) < 0.05
    # The masks left are those shared with the honest members: with theirs too, the update appears exactly.
    for c in ("cedar", "fir"):
        m = pair_mask(members[c]._mask_key, roster.mask_keys[target], setup, c, target, y.size, c)
        y = y - pair_sign(target, c) * m.reshape(y.shape)
    assert np.array_equal(masked.centre(y, t).ravel()[:n], truth)
