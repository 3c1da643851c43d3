"""The parties of a deployed vertical run, each a PartySession fed by a relay that forwards bytes: the fit equals
the simulated run (`run_vertical`) and statsmodels, the relay reads only routing headers, and a tampered, replayed
or foreign message is refused by the party that receives it, naming the sender."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from fedx.config import config_from_dict
from fedx.data.synthetic.health_insurance import generate_health_insurance
from fedx.errors import PSIError
from fedx.privacy.audit import verify
from fedx.vertical.channel import route
from fedx.vertical.run import run_vertical
from fedx.vertical.service import PartyService, call_party
from fedx.vertical.session import PartySession, run_sessions
from fedx.vertical.tables import load_party_table

FEATURES = {"insurer": {"age_band": "categorical", "sex": "categorical"},
            "hospital_a": {"diabetes": "numeric", "hypertension": "numeric"},
            "hospital_b": {"bmi": "numeric"}}


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    data = generate_health_insurance(3_000, hospitals=2, hospital_split="columns", seed=5)
    return {"insurer": data.insurer, **data.hospitals}


def config(test_fraction: float = 0.0, encryption: str = "none"):
    parties = {name: {"source": f"{name}.csv", "features": f} for name, f in FEATURES.items()}
    parties["insurer"].update(target="claims", exposure="exposure")
    return config_from_dict({
        "name": "v", "task": "claim_frequency", "model": {"kind": "glm"},
        "data": {"partition": "vertical", "id": "person_id", "label_party": "insurer", "parties": parties,
                 "test_fraction": test_fraction},
        "federation": {"aggregator": "newton", "rounds": 30},
        "security": {"encryption": encryption, "psi_reveal": "all"}})


def sessions(cfg, tables, out: Path, run_id: str = "run-1") -> dict[str, PartySession]:
    return {n: PartySession(cfg, load_party_table(cfg, n, tables[n], f"{n}.csv"), run_id, out / n) for n in tables}


def test_sessions_equal_the_simulated_run_and_statsmodels(tmp_path: Path, tables) -> None:
    cfg = config()
    run_vertical(cfg, tmp_path / "sim", progress=False, tables=tables)
    seen: list[tuple[str, bytes]] = []
    run_sessions(sessions(cfg, tables, tmp_path), relay=lambda sender, out: seen.append((sender, out.message)))
    sim = json.loads((tmp_path / "sim" / "result.json").read_text())
    got = json.loads((tmp_path / "insurer" / "result.json").read_text())
    names = [c["name"] for c in sim["model"]["coefficients"]]
    assert [c["name"] for c in got["model"]["coefficients"]] == names
    np.testing.assert_allclose([c["estimate"] for c in got["model"]["coefficients"]],
                               [c["estimate"] for c in sim["model"]["coefficients"]], rtol=0, atol=1e-8)
    joined = tables["insurer"].merge(tables["hospital_a"], on="person_id").merge(tables["hospital_b"], on="person_id")
    X = pd.get_dummies(joined[["age_band", "sex"]].astype(str), drop_first=True, dtype=float)
    X = pd.concat([X, joined[["diabetes", "hypertension", "bmi"]]], axis=1)
    X.insert(0, "Intercept", 1.0)
    ref = sm.GLM(joined["claims"], X, family=sm.families.Poisson(), exposure=joined["exposure"]).fit(tol=1e-12)
    np.testing.assert_allclose([c["estimate"] for c in got["model"]["coefficients"]], ref.params, rtol=1e-6)
    np.testing.assert_allclose([c["std_error"] for c in got["model"]["coefficients"]], ref.bse, rtol=1e-6)
    assert got["psi"]["shared"] == len(joined)
    # Each message is in its sender's ledger; past its hello, the relay sees nothing but a sealed body.
    for name in tables:
        entries = [json.loads(line) for line in (tmp_path / name / "ledger.jsonl").read_text().splitlines()]
        assert verify(tmp_path / name / "ledger.jsonl").entries == len(entries) == sum(s == name for s, _ in seen)
    coefficient = f"{ref.params['hypertension']:.6f}".encode()
    for sender, message in seen:
        r = route(message)
        assert r.sender == sender and (r.sealed or r.kind == "hello")
        assert b"hypertension" not in message and coefficient not in message


def test_held_out_rows_are_scored_at_the_label_party(tmp_path: Path, tables) -> None:
    run_sessions(sessions(config(test_fraction=0.2), tables, tmp_path))
    got = json.loads((tmp_path / "insurer" / "result.json").read_text())
    assert got["psi"]["fit_rows"] + got["psi"]["test_rows"] == got["psi"]["shared"]
    assert got["lift"]["test"]["nobs"] == got["psi"]["test_rows"] > 0
    assert got["metrics"]["test_deviance"] > 0
    kinds = {json.loads(line)["kind"] for line in (tmp_path / "hospital_b" / "ledger.jsonl").read_text().splitlines()}
    assert {"glm-test-setup_reply", "glm-test-round_reply"} <= kinds


def _flip(message: bytes) -> bytes:
    return message[:-1] + bytes([message[-1] ^ 1])


@pytest.mark.parametrize("attack", ["tampered", "replayed", "foreign"])
def test_a_tampered_replayed_or_foreign_message_is_refused(tmp_path: Path, tables, attack: str) -> None:
    cfg = config()
    mine = sessions(cfg, tables, tmp_path / "a", "run-1")
    other = sessions(cfg, tables, tmp_path / "b", "run-1")   # the same run id, other keys
    queue = [(n, m) for n, s in mine.items() for m in s.start()]
    theirs = [(n, m) for n, s in other.items() for m in s.start()]
    for _, m in theirs:   # the other run's parties agree their own keys
        other[m.to].receive(m.message)
    delivered = []
    while queue:
        _, out = queue.pop(0)
        if route(out.message).sealed and route(out.message).kind.startswith("glm-round"):
            break
        queue.extend((out.to, m) for m in mine[out.to].receive(out.message))
        delivered.append(out)
    r = route(out.message)
    if attack == "tampered":
        bad = _flip(out.message)
    elif attack == "replayed":
        bad = next(d.message for d in reversed(delivered) if d.to == out.to and route(d.message).sealed
                   and route(d.message).sender == r.sender and route(d.message).run_id == r.run_id)
    else:   # sealed by a party of another run under the same names: another key
        ch = other[r.sender]._channels[r.receiver]
        bad = ch.seal(r.kind, {"stage": "fit", "round": 1}, b"x" * 64)
    with pytest.raises(PSIError, match=f"from party '{r.sender}'"):
        mine[out.to].receive(bad)


def test_the_party_service_keeps_the_session_between_requests(tmp_path: Path, tables) -> None:
    cfg = config()
    services = {}
    for name, df in tables.items():
        (tmp_path / name).mkdir()
        df.to_csv(tmp_path / name / f"{name}.csv", index=False)
        services[name] = PartyService(name, tmp_path / name / f"{name}.csv", tmp_path / name / "out").start()
    try:
        assert oct((tmp_path / "insurer" / "out" / "party-service.json").stat().st_mode & 0o777) == "0o600"
        queue = []
        for name in tables:
            doc, out = call_party(tmp_path / name / "out", {"op": "start", "run": "r", "config": cfg.to_dict()})
            assert doc["status"] == "ok", doc
            queue += [(m["to"], b) for m, b in zip(doc["messages"], out)]
        while queue:
            to, message = queue.pop(0)
            doc, out = call_party(tmp_path / to / "out", {"op": "deliver", "run": "r"}, [message])
            assert doc["status"] == "ok", doc
            queue += [(m["to"], b) for m, b in zip(doc["messages"], out)]
        assert (tmp_path / "insurer" / "out" / "result.json").exists()
        # A bad message ends that party's session with an error naming the party; the service goes on.
        doc, _ = call_party(tmp_path / "insurer" / "out", {"op": "deliver", "run": "r"}, [b"junk"])
        assert doc["status"] == "error" and "no session of run r" not in doc["reason"]
        doc, _ = call_party(tmp_path / "insurer" / "out", {"op": "deliver", "run": "r"}, [])
        assert doc["status"] == "error" and "party insurer: no session of run r" in doc["reason"]
    finally:
        for s in services.values():
            s.stop()
    with pytest.raises(Exception, match="no party service"):
        call_party(tmp_path / "insurer" / "out", {"op": "deliver", "run": "r"}, [], name="insurer")


def test_stop_returns_when_the_serving_thread_has_already_left_its_loop(tmp_path: Path) -> None:
    """A stop that lands just after a request finds the serving thread gone from accept(): it must not hang."""
    import socket
    import threading

    service = PartyService("insurer", tmp_path / "t.csv", tmp_path / "out").start()
    service._stopped.set()
    socket.create_connection(service._listener.address, timeout=2).close()  # the thread wakes and leaves
    service._thread.join(timeout=10)
    assert not service._thread.is_alive()
    stopper = threading.Thread(target=service.stop, daemon=True)
    stopper.start()
    stopper.join(timeout=15)
    assert not stopper.is_alive(), "PartyService.stop hung waiting for a thread that no longer accepts"
    assert not service.path.exists()
