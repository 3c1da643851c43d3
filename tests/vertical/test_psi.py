"""Private set intersection: the result against Python's set intersection, the common order, the relay's
view, the policy, and every bad input."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from fedx.errors import ConfigError, FedxError, PSIError
from fedx.privacy.audit import AuditLedger, verify
from fedx.vertical.channel import route
from fedx.vertical.curve import available_backends, hash_to_u, new_scalar, scalar_mult
from fedx.vertical.ids import normalise_ids
from fedx.vertical.psi import (
    PSIParty,
    PSIPolicy,
    common_order,
    run_psi,
    select_test_rows,
)

N = 2000


def _ids(seed: int, n: int = N, pool: int = 4000) -> np.ndarray:
    return np.random.default_rng(seed).choice(pool, size=n, replace=False) + 10**9


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return {name: pd.DataFrame({"person_id": _ids(seed)}) for seed, name in enumerate(["insurer", "hospital",
                                                                                        "lab"])}


def _parties(tables: dict[str, pd.DataFrame], names: list[str], *, run_id: str = "run-1",
             policy: PSIPolicy | None = None, **kw: object) -> list[PSIParty]:
    policy = policy or PSIPolicy(min_intersection=10)
    return [PSIParty(n, normalise_ids(tables[n], "person_id", party=n), label_party=names[0], parties=names,
                     run_id=run_id, policy=policy, **kw) for n in names]


def _run(tables: dict[str, pd.DataFrame], names: list[str], **kw: object):
    parties = _parties(tables, names, **kw)
    seen: list[bytes] = []
    return parties, run_psi(parties, observe=seen.append), seen


@pytest.fixture(scope="module")
def three_all(tables):
    return _run(tables, ["insurer", "hospital", "lab"], policy=PSIPolicy(reveal="all", min_intersection=10))


@pytest.fixture(scope="module")
def two_default(tables):
    return _run(tables, ["insurer", "hospital"])


def test_two_parties_default_policy_matches_set_intersection(tables, two_default):
    _, out, _ = two_default
    ins, hos = tables["insurer"]["person_id"].to_numpy(), tables["hospital"]["person_id"].to_numpy()
    truth = set(ins.tolist()) & set(hos.tolist())
    lab = out["insurer"]
    assert lab.rows is not None and set(ins[lab.rows].tolist()) == truth and lab.n_shared == len(truth)
    assert len(lab.rows) == len(set(lab.rows.tolist()))
    feat = out["hospital"]
    assert feat.rows is None, "reveal: label_party must not tell the feature party its shared rows"
    assert feat.n_shared == len(truth), "count_to: all (the default) tells the count"
    # The label party's positions, read through the feature party's own (never sent) shuffle, are the same people.
    assert np.array_equal(hos[feat.wire_order[lab.peer_positions["hospital"]]], ins[lab.rows])
    assert lab.peer_sizes == {"hospital": N}


def test_three_parties_reveal_all_common_order_is_identical(tables, three_all):
    parties, out, _ = three_all
    cols = {n: tables[n]["person_id"].to_numpy() for n in tables}
    truth = set(cols["insurer"].tolist()) & set(cols["hospital"].tolist()) & set(cols["lab"].tolist())
    ordered = {n: cols[n][out[n].rows] for n in out}
    assert set(ordered["insurer"].tolist()) == truth
    assert np.array_equal(ordered["insurer"], ordered["hospital"])
    assert np.array_equal(ordered["insurer"], ordered["lab"])
    assert all(out[n].n_shared == len(truth) for n in out)
    for n in ("hospital", "lab"):  # the label party's alignment for each feature party, through its shuffle
        assert np.array_equal(cols[n][out[n].wire_order[out["insurer"].peer_positions[n]]], ordered["insurer"])
    # The order is the keyed hash's, not the ids' own order.
    assert not np.array_equal(ordered["insurer"], np.sort(ordered["insurer"]))
    # Each party's function yields the same order from its own ids.
    own = parties[1]
    shuffled = np.random.default_rng(5).permutation(out["hospital"].rows)
    assert np.array_equal(common_order(own.ids, shuffled, own.secret), out["hospital"].rows)


def test_order_and_test_split_depend_on_the_run_secret(tables, three_all):
    parties, out, _ = three_all
    ins = parties[0]
    other = common_order(ins.ids, out["insurer"].rows, bytes(32))
    assert set(other.tolist()) == set(out["insurer"].rows.tolist())
    assert not np.array_equal(other, out["insurer"].rows)
    a = select_test_rows(ins.ids, out["insurer"].rows, ins.secret, 0.2)
    b = select_test_rows(ins.ids, out["insurer"].rows, bytes(32), 0.2)
    assert not np.array_equal(a, b)


def test_test_split_is_identical_at_every_party_and_of_the_right_size(tables, three_all):
    parties, out, _ = three_all
    n = out["insurer"].n_shared
    picked = {}
    for p in parties:
        rows = out[p.name].rows
        mask = select_test_rows(p.ids, rows, p.secret, 0.2)
        assert mask.dtype == bool and int(mask.sum()) == round(0.2 * n)
        picked[p.name] = set(tables[p.name]["person_id"].to_numpy()[rows[mask]].tolist())
    assert picked["insurer"] == picked["hospital"] == picked["lab"]
    assert not select_test_rows(parties[0].ids, out["insurer"].rows, parties[0].secret, 0.0).any()
    with pytest.raises(ConfigError, match="test_fraction"):
        select_test_rows(parties[0].ids, out["insurer"].rows, parties[0].secret, 1.0)


def test_relay_sees_only_routing_headers_and_sealed_bodies(tables, two_default):
    _, _, seen = two_default
    kinds = [route(m).kind for m in seen]
    assert kinds == ["hello", "hello", "spec", "blinded", "reply", "result"]
    assert all(route(m).sealed for m in seen if route(m).kind != "hello")
    ids = np.unique(np.concatenate([tables[n]["person_id"].to_numpy()[:150] for n in ("insurer", "hospital")]))
    canonical = normalise_ids(pd.DataFrame({"c": ids}), "c", party="x").keys
    needles = set()
    for v, canon in zip(ids.tolist(), canonical):
        text = str(v).encode()
        for raw in (text, canon):
            needles.update({hashlib.sha256(raw).digest()[:8], hashlib.blake2b(raw, digest_size=32).digest()[:8],
                            hashlib.md5(raw).digest()[:8]})
        needles.add(text)
        needles.add(int(v).to_bytes(8, "little"))
        needles.add(int(v).to_bytes(8, "big"))
    wire = b"".join(seen)
    assert not [n for n in needles if n in wire]
    # The plaintext headers hold names, kinds and counters only.
    for m in seen:
        head = json.loads(m[10:10 + int.from_bytes(m[6:10], "big")])
        assert set(head) == {"run", "from", "to", "kind", "seq", "sealed"}


def test_blinded_values_cannot_be_linked_across_runs(tables):
    keys = normalise_ids(tables["insurer"], "person_id", party="insurer").keys[:500]
    alpha, s1, s2 = new_scalar(), bytes(range(32)), bytes(range(1, 33))
    run1 = scalar_mult(alpha, hash_to_u(keys, s1))
    again = scalar_mult(alpha, hash_to_u(keys, s1))
    run2 = scalar_mult(alpha, hash_to_u(keys, s2))
    chunks = lambda b: {b[i:i + 32] for i in range(0, len(b), 32)}
    assert run1 == again  # same secret and scalar: same values (so the check below can fail)
    assert not chunks(run1) & chunks(run2)
    # End to end, two runs with the same ids share no 16-byte window on the wire beyond the fixed headers.
    seen = [_run(tables, ["insurer", "hospital"], run_id=r)[2] for r in ("a", "b")]
    blind1 = next(m for m in seen[0] if route(m).kind == "blinded")
    blind2 = next(m for m in seen[1] if route(m).kind == "blinded")
    body1, body2 = blind1[-len(run1):], blind2[-len(run1):]
    assert not {body1[i:i + 16] for i in range(0, len(body1) - 16, 16)} & \
        {body2[i:i + 16] for i in range(0, len(body2) - 16, 16)}


def test_messages_are_logged_in_each_party_ledger(tables, tmp_path):
    names = ["insurer", "hospital"]
    ledgers = {n: AuditLedger(tmp_path / f"{n}.jsonl") for n in names}
    policy = PSIPolicy(min_intersection=10)
    parties = [PSIParty(n, normalise_ids(tables[n], "person_id", party=n), label_party="insurer",
                        parties=names, run_id="r", policy=policy, ledger=ledgers[n]) for n in names]
    seen: list[bytes] = []
    run_psi(parties, observe=seen.append)
    for n in names:
        sent = [m for m in seen if route(m).sender == n]
        lines = [json.loads(x) for x in (tmp_path / f"{n}.jsonl").read_text().splitlines()]
        assert [x["sha256"] for x in lines] == [hashlib.sha256(m).hexdigest() for m in sent]
        assert [x["kind"] for x in lines] == [f"psi-{route(m).kind}" for m in sent]
        assert verify(tmp_path / f"{n}.jsonl").entries == len(sent)


def test_min_intersection_refuses_at_every_party(tables):
    parties = _parties(tables, ["insurer", "hospital"], policy=PSIPolicy(min_intersection=5000))
    with pytest.raises(PSIError, match=r"share \d+ ids, fewer than security.min_intersection=5000"):
        run_psi(parties)
    with pytest.raises(PSIError, match="refused the run"):
        parties[1].alignment()


def test_count_to_label_party_hides_the_count(tables):
    policy = PSIPolicy(count_to="label_party", min_intersection=10)
    _, out, _ = _run(tables, ["insurer", "hospital"], policy=policy)
    assert out["hospital"].n_shared is None and out["hospital"].rows is None
    assert out["insurer"].n_shared and out["insurer"].n_shared > 10
    parties = _parties(tables, ["insurer", "hospital"], policy=PSIPolicy(count_to="label_party",
                                                                          min_intersection=5000))
    with pytest.raises(PSIError):
        run_psi(parties)
    with pytest.raises(PSIError, match="share too few ids") as err:
        parties[1].alignment()
    assert not any(ch.isdigit() for ch in str(err.value).split("min_intersection")[0])


def test_policy_must_agree(tables):
    names = ["insurer", "hospital"]
    a = PSIParty("insurer", normalise_ids(tables["insurer"], "person_id", party="insurer"), label_party="insurer",
                 parties=names, run_id="r", policy=PSIPolicy(min_intersection=10))
    b = PSIParty("hospital", normalise_ids(tables["hospital"], "person_id", party="hospital"),
                 label_party="insurer", parties=names, run_id="r", policy=PSIPolicy(reveal="all", min_intersection=10))
    with pytest.raises(PSIError, match="reveal='all'.*reveal='label_party'"):
        run_psi([a, b])
    with pytest.raises(ConfigError, match="security.psi_reveal"):
        PSIPolicy(reveal="everyone")
    with pytest.raises(ConfigError, match="security.min_intersection"):
        PSIPolicy(min_intersection=0)


def test_tampered_and_replayed_messages_are_refused(tables):
    parties = _parties(tables, ["insurer", "hospital"])
    ins, hos = parties
    hello = ins.start()[0]
    hos_hello, spec = hos.receive(hello)
    ins.receive(hos_hello)
    bad = bytearray(spec)
    bad[-5] ^= 1
    with pytest.raises(PSIError, match="fails authentication"):
        ins.receive(bytes(bad))
    parties = _parties(tables, ["insurer", "hospital"])
    ins, hos = parties
    hos_hello, spec = hos.receive(ins.start()[0])
    ins.receive(hos_hello)
    blinded = ins.receive(spec)[0]
    hos.receive(blinded)
    with pytest.raises(PSIError, match="out of order"):
        hos.receive(blinded)


def test_pinned_identity_keys(tables):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    keys = {n: X25519PrivateKey.generate() for n in ("insurer", "hospital")}
    pub = {n: k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
           for n, k in keys.items()}
    names = ["insurer", "hospital"]
    policy = PSIPolicy(min_intersection=10)

    def party(n: str, identity, trusted) -> PSIParty:
        return PSIParty(n, normalise_ids(tables[n], "person_id", party=n), label_party="insurer", parties=names,
                        run_id="r", policy=policy, identity=identity, trusted=trusted)

    ok = run_psi([party(n, keys[n], {m: pub[m] for m in names if m != n}) for n in names])
    assert ok["insurer"].n_shared
    impostor = X25519PrivateKey.generate()
    with pytest.raises(PSIError, match="pinned identity key"):
        run_psi([party("insurer", keys["insurer"], {"hospital": pub["hospital"]}), party("hospital", impostor, {})])


# ---------------------------------------------------------------------------------------------- ids

def _one(values: list, party: str = "p") -> bytes:
    return normalise_ids(pd.DataFrame({"c": values}), "c", party=party).keys[0]


def test_normalisation_rules():
    assert _one([123]) == _one([123.0]) == _one([np.int64(123)]) == _one(pd.array([123], dtype="Int64").tolist())
    assert _one(["  Ab-12 "]) == _one(["ab-12"]) == _one(["ＡＢ-12"])  # strip, case-fold, NFKC (full-width)
    assert _one(["00123"]) != _one([123])
    assert _one([pd.Timestamp("1980-02-03")]) == _one([pd.Timestamp("1980-02-03").date()])
    a = normalise_ids(pd.DataFrame({"x": ["a"], "y": ["bc"]}), ["x", "y"], party="p").keys[0]
    b = normalise_ids(pd.DataFrame({"x": ["ab"], "y": ["c"]}), ["x", "y"], party="p").keys[0]
    assert a != b, "combining columns must be unambiguous"


def test_combined_columns_intersect(tables):
    nid = [f"N{i:06d}" for i in range(300)]
    born = pd.to_datetime("1950-01-01") + pd.to_timedelta(np.arange(300), unit="D")
    ins = pd.DataFrame({"nid": nid, "birth": born})
    hos = pd.DataFrame({"nid": [f"  n{i:06d} " for i in range(100, 400)],
                        "birth": (pd.to_datetime("1950-01-01") + pd.to_timedelta(np.arange(100, 400), unit="D"))})
    hos.loc[hos.index[:50], "birth"] += pd.Timedelta(days=1)  # same national id, another birth date: no match
    names = ["insurer", "hospital"]
    parties = [PSIParty(n, normalise_ids(t, ["nid", "birth"], party=n), label_party="insurer", parties=names,
                        run_id="r", policy=PSIPolicy(reveal="all", min_intersection=10))
               for n, t in zip(names, (ins, hos))]
    out = run_psi(parties)
    assert out["insurer"].n_shared == 150
    assert ins["nid"].to_numpy()[out["insurer"].rows].tolist() == \
        hos["nid"].str.strip().str.upper().to_numpy()[out["hospital"].rows].tolist()


@pytest.mark.parametrize("values, match", [
    ([1, 2, 2, 3], r"party 'hospital', id column 'person_id': 2 rows share an id.*row positions 1 and 2"),
    (["a", " A", "b"], r"party 'hospital', id column 'person_id': 2 rows share an id"),
    ([1, None, 3], r"party 'hospital', id column 'person_id': 1 null id"),
    ([1.0, float("nan"), 3.0], r"party 'hospital', id column 'person_id': 1 null id"),
    (["a", "  ", "c"], r"party 'hospital', id column 'person_id': 1 empty id.*row positions 1"),
    ([1, "b", 3], r"party 'hospital', id column 'person_id': mixes kinds of id \(int .*, str "),
    ([1.5, 2.0], r"party 'hospital', id column 'person_id': non-integral"),
    ([True, False], r"party 'hospital', id column 'person_id': boolean"),
])
def test_bad_ids_name_party_and_column(values, match):
    with pytest.raises(PSIError, match=match):
        normalise_ids(pd.DataFrame({"person_id": values}), "person_id", party="hospital")


def test_missing_column_and_empty_table():
    with pytest.raises(PSIError, match="party 'hospital': id column 'pid' is not in the table"):
        normalise_ids(pd.DataFrame({"person_id": [1]}), "pid", party="hospital")
    with pytest.raises(PSIError, match="party 'hospital': the table has no rows"):
        normalise_ids(pd.DataFrame({"person_id": []}), "person_id", party="hospital")


def test_int_against_string_ids_are_refused_naming_both(tables):
    names = ["insurer", "hospital"]
    as_text = pd.DataFrame({"person_id": tables["hospital"]["person_id"].astype(str)})
    parties = [PSIParty("insurer", normalise_ids(tables["insurer"], "person_id", party="insurer"),
                        label_party="insurer", parties=names, run_id="r"),
               PSIParty("hospital", normalise_ids(as_text, "person_id", party="hospital"),
                        label_party="insurer", parties=names, run_id="r")]
    with pytest.raises(PSIError, match="column 'person_id' holds int ids at party 'insurer' but column "
                                       "'person_id' holds str ids at party 'hospital'") as err:
        run_psi(parties)
    assert isinstance(err.value, FedxError) and isinstance(err.value, ValueError)


# ---------------------------------------------------------------------------------------------- curve

def test_x25519_matches_rfc7748_and_backends_agree():
    scalar = bytes.fromhex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
    u = bytes.fromhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    want = bytes.fromhex("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")
    for backend in available_backends():
        assert scalar_mult(scalar, u, backend=backend) == want
    pts = hash_to_u([str(i).encode() for i in range(200)], bytes(32))
    a, b = new_scalar(), new_scalar()
    for backend in available_backends():
        assert scalar_mult(a, scalar_mult(b, pts, backend=backend), backend=backend) == \
            scalar_mult(b, scalar_mult(a, pts, backend=backend), backend=backend)
    with pytest.raises(PSIError, match="low-order point"):
        scalar_mult(a, bytes(32))


def test_worker_processes_give_the_same_values():
    pts = hash_to_u([str(i).encode() for i in range(9000)], bytes(32))
    k = new_scalar()
    assert scalar_mult(k, pts, workers=2) == scalar_mult(k, pts, workers=1)
