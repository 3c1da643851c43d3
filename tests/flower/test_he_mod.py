"""fedx.flower.he_mod and EncryptedFedAvg: what each client receives is the numpy weighted mean of the clients'
updates (within the encoding's stated error), and the server side only ever holds ciphertexts.

The fast tests call the mod directly with hand-built Messages; the slow one runs Flower's simulation engine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)

from fedx import he
from fedx.errors import FederationError, KeyFileError, KeyMismatchError
from fedx.flower import EncryptedFedAvg, decrypt_arrays, he_mod
from fedx.flower.he_client_mod import KEY_TOTAL_WEIGHT, encrypt_arrays
from fedx.flower.records import STYPE_HE

WEIGHTS = (900, 500, 250)
SHAPES = {"layer.weight": (3, 4), "layer.bias": (4,)}


@pytest.fixture(autouse=True)
def _message_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.supercore.task_identity import TaskIdentity

    for attr, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", 0)):
        monkeypatch.setattr(TaskIdentity, attr, value)


@pytest.fixture(scope="module")
def keys() -> he.KeySet:
    return he.keygen("bfv-compact")


@pytest.fixture(scope="module")
def ckks_keys() -> he.KeySet:
    return he.keygen("ckks")


def update(client: int, server_round: int) -> dict[str, np.ndarray]:
    """Client ``client``'s deterministic update in ``server_round``, within bfv-compact's clip range."""
    rng = np.random.default_rng(100 * server_round + client)
    return {"layer.weight": rng.uniform(-0.9, 0.9, SHAPES["layer.weight"]).astype(np.float32),
            "layer.bias": rng.uniform(-0.9, 0.9, SHAPES["layer.bias"])}


def weighted_mean(updates: list[dict[str, np.ndarray]], weights: tuple[float, ...]) -> dict[str, np.ndarray]:
    w = np.asarray(weights, np.float64)
    return {k: sum(wi * u[k].astype(np.float64) for wi, u in zip(w, updates)) / w.sum() for k in updates[0]}


def record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})


def train_message(node: int, arrays: ArrayRecord, config: dict | None = None, kind: str = "train") -> Message:
    return Message(RecordDict({"arrays": arrays, "config": ConfigRecord(config or {})}), dst_node_id=node,
                   message_type=kind)


def context(node: int) -> Context:
    return Context(run_id=1, node_id=node, node_config={}, state=RecordDict(), run_config={})


def client(arrays: dict[str, np.ndarray], weight: float, seen: list[dict[str, np.ndarray]]) -> Callable:
    """A user's train function: records what it received, replies with ``arrays`` and ``num-examples``."""
    def train(msg: Message, ctx: Context) -> Message:
        seen.append({k: a.numpy() for k, a in msg.content["arrays"].items()})
        return Message(RecordDict({"arrays": record(arrays),
                                   "metrics": MetricRecord({"num-examples": weight, "train-loss": 0.5})}), reply_to=msg)
    return train


def run_round(mod, incoming: ArrayRecord, server_round: int, config: dict | None = None) -> tuple[list[Message], list]:
    replies, seen = [], []
    for i, n in enumerate(WEIGHTS):
        msg = train_message(i + 1, incoming, config)
        replies.append(mod(msg, context(i + 1), client(update(i, server_round), n, seen)))
    return replies, seen


def assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray], tol: float) -> None:
    assert list(got) == list(want)
    for k, value in want.items():
        assert got[k].shape == value.shape
        np.testing.assert_allclose(got[k].astype(np.float64), value, rtol=0, atol=tol, err_msg=k)


def only_ciphertext(reply: Message) -> None:
    (rec,) = reply.content.array_records.values()
    assert list(rec.keys()) == ["blob"]
    assert all(a.dtype == "bytes" and a.stype == STYPE_HE for a in rec.values())


def test_two_rounds_give_each_client_the_weighted_mean(keys: he.KeySet) -> None:
    mod = he_mod(keys)
    strategy = EncryptedFedAvg(keys.public)
    initial = {"layer.weight": np.zeros((3, 4), np.float32), "layer.bias": np.zeros(4)}
    # round 1: plaintext initial arrays pass through; no shared total yet, so the replies are kind='sum'
    replies, seen = run_round(mod, record(initial), 1)
    for got in seen:
        assert_close(got, initial, 0.0)
    for r in replies:
        assert not r.has_error()
        only_ciphertext(r)
        assert he.inspect(bytes(r.content["arrays"]["blob"].data)).kind == "sum"
    agg, metrics = strategy.aggregate_train(1, replies)
    assert agg is not None and list(agg.keys()) == ["blob"] and agg["blob"].stype == STYPE_HE
    assert metrics is not None and metrics["train-loss"] == pytest.approx(0.5)
    want1 = weighted_mean([update(i, 1) for i in range(3)], WEIGHTS)
    # round 2: every client decrypts the same weighted mean (the sum path is exact up to 2^-25 per value)
    total = float(sum(WEIGHTS))
    replies, seen = run_round(mod, agg, 2, {KEY_TOTAL_WEIGHT: total})
    assert len(seen) == 3
    for got in seen:
        assert got["layer.weight"].dtype == np.float32 and got["layer.bias"].dtype == np.float64
        assert_close(got, want1, 1e-6)
    # with the shared total the replies are compact kind='mean' blobs, within n half quantization steps
    for r in replies:
        assert he.inspect(bytes(r.content["arrays"]["blob"].data)).kind == "mean"
    agg2, _ = strategy.aggregate_train(2, replies)
    preset = keys.preset
    step = preset.clip / preset.levels
    want2 = weighted_mean([update(i, 2) for i in range(3)], WEIGHTS)
    got2 = {k: a.numpy() for k, a in decrypt_arrays(keys, agg2).items()}
    assert_close(got2, want2, 3 * step / 2 + 1e-7)
    unweighted = {k: np.mean([update(i, 2)[k] for i in range(3)], axis=0) for k in want2}
    assert np.abs(got2["layer.bias"] - unweighted["layer.bias"]).max() > 10 * step   # the weights do matter


def test_any_shared_total_gives_the_weighted_mean(keys: he.KeySet) -> None:
    # A total twice the true one halves every rho: the mean is the same, the stated error twice as large.
    mod = he_mod(keys)
    replies, _ = run_round(mod, record(update(0, 0)), 3, {KEY_TOTAL_WEIGHT: 2.0 * sum(WEIGHTS)})
    agg, _ = EncryptedFedAvg(keys.public).aggregate_train(3, replies)
    step = keys.preset.clip / keys.preset.levels
    got = {k: a.numpy() for k, a in decrypt_arrays(keys, agg).items()}
    assert_close(got, weighted_mean([update(i, 3) for i in range(3)], WEIGHTS), 2 * 3 * step / 2 + 1e-7)


def test_mean_blobs_are_smaller_than_sum_blobs(keys: he.KeySet) -> None:
    big = record({"w": np.random.default_rng(0).uniform(-0.5, 0.5, 20_000).astype(np.float32)})
    sums = len(encrypt_arrays(keys.secret, big, 900.0, None)["blob"].data)
    means = len(encrypt_arrays(keys.secret, big, 900.0, 1650.0)["blob"].data)
    assert means * 4 < sums     # 8 limbs per value in a bfv-compact sum, one in a mean


def test_evaluate_sees_the_decrypted_model_and_its_reply_is_untouched(keys: he.KeySet) -> None:
    mod = he_mod(keys)
    replies, _ = run_round(mod, record(update(0, 0)), 1)
    agg, _ = EncryptedFedAvg(keys.public).aggregate_train(1, replies)
    seen = []

    def evaluate(msg: Message, ctx: Context) -> Message:
        seen.append({k: a.numpy() for k, a in msg.content["arrays"].items()})
        return Message(RecordDict({"metrics": MetricRecord({"num-examples": 10, "accuracy": 0.75})}), reply_to=msg)

    reply = mod(train_message(1, agg, kind="evaluate"), context(1), evaluate)
    assert_close(seen[0], weighted_mean([update(i, 1) for i in range(3)], WEIGHTS), 1e-6)
    assert dict(reply.content["metrics"]) == {"num-examples": 10, "accuracy": 0.75}
    assert not reply.content.array_records


def test_keys_from_a_folder(keys: he.KeySet, tmp_path: Path) -> None:
    keys.save(tmp_path / "keys")
    replies, _ = run_round(he_mod(tmp_path / "keys"), record(update(0, 0)), 1)
    strategy = EncryptedFedAvg(tmp_path / "keys")          # reads public.fxk from the folder
    agg, _ = strategy.aggregate_train(1, replies)
    got = {k: a.numpy() for k, a in decrypt_arrays(str(tmp_path / "keys"), agg).items()}
    assert_close(got, weighted_mean([update(i, 1) for i in range(3)], WEIGHTS), 1e-6)
    # each SuperNode may name its own folder in its node config
    per_node = he_mod(lambda ctx: ctx.node_config["he-keys"])
    ctx = Context(run_id=1, node_id=1, node_config={"he-keys": str(tmp_path / "keys")}, state=RecordDict(),
                  run_config={})
    seen: list = []
    reply = per_node(train_message(1, agg), ctx, client(update(0, 2), 10, seen))
    assert not reply.has_error()
    assert_close(seen[0], weighted_mean([update(i, 1) for i in range(3)], WEIGHTS), 1e-6)


def test_missing_keys_or_weight_give_error_replies(keys: he.KeySet, tmp_path: Path) -> None:
    msg = train_message(1, record(update(0, 0)))
    reply = he_mod(tmp_path / "nowhere")(msg, context(1), client(update(0, 1), 10, []))
    assert reply.has_error() and "nowhere" in reply.error.reason and "does not exist" in reply.error.reason

    def no_weight(m: Message, ctx: Context) -> Message:
        return Message(RecordDict({"arrays": record(update(0, 1)), "metrics": MetricRecord({"loss": 1.0})}),
                       reply_to=m)

    reply = he_mod(keys)(train_message(1, record(update(0, 0))), context(1), no_weight)
    assert reply.has_error() and "num-examples" in reply.error.reason


def test_the_server_refuses_plaintext_and_foreign_keys(keys: he.KeySet) -> None:
    strategy = EncryptedFedAvg(keys.public)
    plain = [client(update(i, 1), n, [])(train_message(i + 1, record(update(0, 0))), context(i + 1))
             for i, n in enumerate(WEIGHTS)]
    with pytest.raises(FederationError, match="plaintext arrays.*he_mod"):
        strategy.aggregate_train(1, plain)
    ours, _ = run_round(he_mod(keys), record(update(0, 0)), 1)
    theirs, _ = run_round(he_mod(he.keygen("bfv-compact")), record(update(0, 0)), 1)
    with pytest.raises(KeyMismatchError, match="node 3 encrypted under other keys"):
        strategy.aggregate_train(1, ours[:2] + theirs[2:])
    # the plaintext weight must be the one the blob was encrypted with
    liar, _ = run_round(he_mod(keys), record(update(0, 0)), 1)
    liar[1].content["metrics"]["num-examples"] = 10 * WEIGHTS[1]
    with pytest.raises(FederationError, match="node 2: its blob is weighted 500 but its metric 'num-examples' says 5000"):
        strategy.aggregate_train(1, liar)
    # a client holding other keys cannot read the federation's aggregate
    agg, _ = strategy.aggregate_train(1, ours)
    reply = he_mod(he.keygen("bfv-compact"))(train_message(1, agg), context(1), client(update(0, 1), 10, []))
    assert reply.has_error() and "incoming arrays" in reply.error.reason


def test_the_server_never_takes_the_secret_key(keys: he.KeySet) -> None:
    for secret in (keys, keys.secret):
        with pytest.raises(KeyFileError, match="public context only"):
            EncryptedFedAvg(secret)  # type: ignore[arg-type]


class _Grid:
    """The part of a Grid that FedAvg's sampling reads."""

    def get_node_ids(self) -> list[int]:
        return [1, 2, 3]


def test_configure_train_sends_the_total_once_the_weights_are_known(keys: he.KeySet) -> None:
    strategy = EncryptedFedAvg(keys.public)
    config = ConfigRecord({"lr": 0.1})
    first = list(strategy.configure_train(1, record(update(0, 0)), config, _Grid()))  # type: ignore[arg-type]
    assert len(first) == 3 and all(KEY_TOTAL_WEIGHT not in m.content["config"] for m in first)
    replies, _ = run_round(he_mod(keys), record(update(0, 0)), 1)
    agg, _ = strategy.aggregate_train(1, replies)
    second = list(strategy.configure_train(2, agg, config, _Grid()))  # type: ignore[arg-type]
    assert [m.content["config"][KEY_TOTAL_WEIGHT] for m in second] == [float(sum(WEIGHTS))] * 3
    assert all(m.content["arrays"]["blob"].stype == STYPE_HE for m in second)


@pytest.mark.slow
def test_simulation_clients_receive_the_weighted_mean(keys: he.KeySet, tmp_path: Path) -> None:
    """3 clients, 2 rounds on Flower's simulation engine: every train and evaluate message decrypts to the
    numpy weighted mean of the previous round's updates; the strategy sees only fedx ciphertexts."""
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from fedx.flower.simulation import _ray_temp_dir, quiet_environment

    quiet_environment()
    keys.save(tmp_path / "keys")
    probe = tmp_path / "probe"
    probe.mkdir()
    client_app = ClientApp(mods=[he_mod(str(tmp_path / "keys"))])

    def received(msg: Message, ctx: Context, what: str) -> int:
        pid = int(ctx.node_config["partition-id"])
        arrays = {k: a.numpy() for k, a in msg.content["arrays"].items()}
        np.savez(probe / f"{what}-{int(msg.content['config']['server-round'])}-{pid}.npz", **arrays)
        return pid

    @client_app.train()
    def train(msg: Message, ctx: Context) -> Message:
        pid = received(msg, ctx, "train")
        arrays = update(pid, int(msg.content["config"]["server-round"]))
        return Message(RecordDict({"arrays": record(arrays), "metrics": MetricRecord({"num-examples": WEIGHTS[pid]})}),
                       reply_to=msg)

    @client_app.evaluate()
    def evaluate(msg: Message, ctx: Context) -> Message:
        received(msg, ctx, "evaluate")
        return Message(RecordDict({"metrics": MetricRecord({"num-examples": 1, "score": 1.0})}), reply_to=msg)

    seen: list[list[tuple[str, str]]] = []
    outcome: dict = {}

    class Recording(EncryptedFedAvg):
        def aggregate_train(self, server_round, replies):  # type: ignore[no-untyped-def]
            replies = list(replies)
            seen.append([(a.dtype, a.stype) for r in replies for rec in r.content.array_records.values()
                         for a in rec.values()])
            return super().aggregate_train(server_round, replies)

    server = ServerApp()
    initial = {"layer.weight": np.zeros((3, 4), np.float32), "layer.bias": np.zeros(4)}

    @server.main()
    def main(grid: Grid, ctx: Context) -> None:
        strategy = Recording(keys.public, min_train_nodes=3, min_evaluate_nodes=3, min_available_nodes=3)
        try:
            outcome["result"] = strategy.start(grid=grid, initial_arrays=record(initial), num_rounds=2)
        except Exception as exc:  # noqa: BLE001 - raised below, in the test's thread
            outcome["error"] = exc

    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"_node_ip_address": "127.0.0.1", "include_dashboard": False, "num_cpus": 2,
                             "_temp_dir": _ray_temp_dir()}}
    run_simulation(server_app=server, client_app=client_app, num_supernodes=3, backend_config=backend)
    if "error" in outcome:
        raise outcome["error"]
    result = outcome["result"]

    # the server held only ciphertexts: 3 replies per round, each one fedx blob
    assert seen == [[("bytes", STYPE_HE)] * 3] * 2
    assert list(result.arrays.keys()) == ["blob"] and result.arrays["blob"].stype == STYPE_HE
    step = keys.preset.clip / keys.preset.levels
    means = {r: weighted_mean([update(i, r) for i in range(3)], WEIGHTS) for r in (1, 2)}
    for pid in range(3):
        with np.load(probe / f"train-1-{pid}.npz") as first:
            assert_close(dict(first), initial, 0.0)
        for what, r, tol in (("train", 2, 1e-6), ("evaluate", 1, 1e-6), ("evaluate", 2, 3 * step / 2 + 1e-7)):
            with np.load(probe / f"{what}-{r}-{pid}.npz") as got:
                assert_close(dict(got), means[r - 1 if what == "train" else r], tol)
    final = {k: a.numpy() for k, a in decrypt_arrays(keys, result.arrays).items()}
    assert_close(final, means[2], 3 * step / 2 + 1e-7)


@pytest.mark.parametrize("total", [None, float(sum(WEIGHTS))], ids=["sum", "mean"])
def test_ckks_keys_take_both_paths(ckks_keys: he.KeySet, total: float | None) -> None:
    # CKKS neither clips nor quantizes: weights beyond bfv-compact's clip range come back to ~1e-9
    keys = ckks_keys
    rng = np.random.default_rng(5)
    updates = [{"w": rng.normal(0.0, 3.0, 50)} for _ in WEIGHTS]
    blobs = [bytes(encrypt_arrays(keys.secret, record(u), n, total)["blob"].data) for u, n in zip(updates, WEIGHTS)]
    got = decrypt_arrays(keys, he.aggregate(keys.public, blobs))["w"].numpy()
    np.testing.assert_allclose(got, weighted_mean(updates, WEIGHTS)["w"], rtol=0, atol=1e-8)
