"""Pairwise masking against plain bfv-compact, side by side in one run: bytes, seconds, message rounds, growth.

Part 1 (``--params`` values, ``--members`` institutions, default 1M and 10): one round plain
(``he.encrypt`` at every institution, ``he.aggregate`` at the server) and one round masked
(:mod:`fedx.secagg` with :mod:`fedx.he.masked`), on the same updates. It prints the bytes each way
(every message counted as the bytes that travel, from ``to_bytes``), the seconds of each step, and the
ratios masked / plain. It checks that both rounds decrypt to the same sum, bit for bit.

Part 2 (``--growth`` member counts, default 5, 20, 50): the masking protocol alone at ``--params``
values (no HE, which does not change with masking): key and share bytes per institution, the seconds an
institution spends making its masks, and the seconds the server spends rebuilding the residual mask with
no dropout and with one institution dropped before it sent its update.

Part 3 (``--example-sizes`` payments per bank, ``--example-rounds``): the anti-fraud example, reduced,
through ``fedx run`` twice (masking off and on): seconds and bytes per round as result.json records them
(the masking phases' JSON included), and whether the AUPRC is the same to the bit.

Goals: bytes per round at most 1.05x plain bfv-compact at 1M parameters and 10 institutions; seconds per
round on the anti-fraud example at most 1.2x.

Usage::

    python benchmarks/masking_bench.py [--params 1000000] [--members 10] [--growth 5,20,50]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import fedx.he as he
from fedx.he import masked
from fedx.secagg import MaskingClient, MaskingServer, RoundSetup, identity

#: Message round trips between the server and the institutions in one training round.
PLAIN_ROUNDS = ["train: global model down, encrypted update up"]
MASKED_ROUNDS = ["keys: setup down, public keys (advert, signed with the identity key) up",
                 "shares: roster and signed adverts down, sealed shares up",
                 "train: global model and relayed shares down, masked update up",
                 "unmask: survivor list down, shares of seeds and keys up"]


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def protocol(members: list[str], modulus: int, rows_shape: tuple[int, int], drop: str | None = None,
             keys: he.KeySet | None = None, updates: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """One masking round; with ``keys`` and ``updates`` also the HE side. Returns bytes and seconds."""
    setup = RoundSetup.create(members, modulus=modulus, round_=1)
    clients = {m: MaskingClient(m, setup) for m in members}
    server = MaskingServer(setup)
    n = len(members)
    down = {"setup": n * len(setup.to_bytes())}
    up: dict[str, int] = {}
    adverts = [c.advertise() for c in clients.values()]
    ids = {m: Ed25519PrivateKey.generate() for m in members}
    signed = sum(len(a.to_bytes()) + len(identity.sign_advert(ids[a.member], a)) + 32 for a in adverts)
    up["signed adverts"] = signed
    roster = server.roster(adverts)
    down["roster and signed adverts"] = n * (len(roster.to_bytes()) + signed)
    bundles = [c.share_keys(roster) for c in clients.values()]
    up["shares"] = sum(len(b.to_bytes()) for b in bundles)
    relays = server.relay(bundles)
    down["relays"] = sum(len(r.to_bytes()) for r in relays.values())
    survivors = [m for m in members if m != drop]
    out: dict[str, Any] = {"up": up, "down": down}
    if keys is None:
        # Three institutions mask full vectors (timed); the others a single slot, which leaves their
        # messages unchanged (masks never travel) and keeps the run short at 50 institutions.
        rows, tiny = np.zeros(rows_shape, np.int64), np.zeros((1, 1), np.int64)
        mask_s = []
        for i, m in enumerate(survivors):
            _, s = timed(lambda m=m, i=i: clients[m].mask(relays[m], rows if i < 3 else tiny))
            if i < 3:
                mask_s.append(s)
        out["mask_s"] = statistics.median(mask_s)
        agg = None
    else:
        assert updates is not None
        blobs, mask_s, enc_s = [], [], []
        for m in survivors:
            q = masked.quantize(keys.secret, [updates[m]], weight=1.0, total_weight=float(n))
            y, s1 = timed(lambda m=m, q=q: clients[m].mask(relays[m], q.rows))
            blob, s2 = timed(lambda q=q, y=y: masked.encrypt_masked(keys.secret, q, y, setup.tag))
            blobs.append(blob)
            mask_s.append(s1)
            enc_s.append(s2)
        up["masked updates"] = sum(len(b) for b in blobs)
        out["mask_s"], out["encrypt_s"] = statistics.median(mask_s), statistics.median(enc_s)
        agg, out["aggregate_s"] = timed(lambda: masked.aggregate_masked(keys.public, blobs))
    request = server.unmask_request(survivors)
    down["unmask request"] = len(survivors) * len(request.to_bytes())
    replies = [clients[m].unmask(request) for m in survivors]
    up["unmask replies"] = sum(len(r.to_bytes()) for r in replies)
    residual, out["residual_s"] = timed(lambda: server.residual(replies, rows_shape))
    if agg is not None:
        total, out["unmask_s"] = timed(lambda: masked.unmask(keys.public, agg, residual))
        down["aggregate"] = n * len(total)
        out["total"] = total
    return out


def part1(n_params: int, n_members: int) -> None:
    keys = he.keygen("bfv-compact")
    members = [f"inst_{i:02d}" for i in range(n_members)]
    rng = np.random.default_rng(0)
    updates = {m: np.clip(rng.normal(0, 0.05, n_params), -1, 1) for m in members}
    shape = (keys.preset.chunks_for(n_params, "mean"), keys.preset.slots)

    he.encrypt(keys.secret, [updates[members[0]]])  # warm-up: builds the SEAL engine once
    enc = []
    blobs = []
    for m in members:
        blob, s = timed(lambda m=m: he.encrypt(keys.secret, [updates[m]], weight=1.0, total_weight=float(n_members)))
        blobs.append(blob)
        enc.append(s)
    plain_total, plain_agg_s = timed(lambda: he.aggregate(keys.public, blobs))
    plain_up = sum(len(b) for b in blobs)
    plain_down = n_members * len(plain_total)

    res = protocol(members, keys.preset.plain_modulus, shape, keys=keys, updates=updates)
    same = np.array_equal(masked.decrypt_residues(keys.secret, res["total"]),
                          masked.decrypt_residues(keys.secret, plain_total))
    masked_up, masked_down = sum(res["up"].values()), sum(res["down"].values())

    print(f"== Part 1: {n_params:,} parameters, {n_members} institutions, bfv-compact, one round ==")
    print(f"{'':34s}{'plain':>14s}{'masked':>14s}{'ratio':>8s}")
    print(f"{'bytes up (all institutions)':34s}{plain_up:>14,d}{masked_up:>14,d}{masked_up / plain_up:>8.4f}")
    print(f"{'bytes down (all institutions)':34s}{plain_down:>14,d}{masked_down:>14,d}{masked_down / plain_down:>8.4f}")
    print(f"{'bytes per round':34s}{plain_up + plain_down:>14,d}{masked_up + masked_down:>14,d}"
          f"{(masked_up + masked_down) / (plain_up + plain_down):>8.4f}")
    print("  masked, by message:")
    for way, parts in (("up", res["up"]), ("down", res["down"])):
        for name, b in parts.items():
            print(f"    {way:4s} {name:26s}{b:>14,d}")
    inst_plain = statistics.median(enc)
    inst_masked = res["mask_s"] + res["encrypt_s"]
    print(f"{'s per institution (encrypt)':34s}{inst_plain:>14.3f}{inst_masked:>14.3f}{inst_masked / inst_plain:>8.3f}")
    print(f"{'  of which mask generation':34s}{'':>14s}{res['mask_s']:>14.3f}")
    srv_plain = plain_agg_s
    srv_masked = res["aggregate_s"] + res["residual_s"] + res["unmask_s"]
    print(f"{'s at the server':34s}{srv_plain:>14.3f}{srv_masked:>14.3f}{srv_masked / srv_plain:>8.3f}")
    print(f"{'  of which residual mask (rebuild)':34s}{'':>14s}{res['residual_s']:>14.3f}")
    print(f"{'  of which mask removal (sub_plain)':34s}{'':>14s}{res['unmask_s']:>14.3f}")
    print(f"message round trips per training round: plain {len(PLAIN_ROUNDS)}, masked {len(MASKED_ROUNDS)} "
          f"(+{len(MASKED_ROUNDS) - len(PLAIN_ROUNDS)}):")
    for r in MASKED_ROUNDS:
        print(f"    {r}")
    print(f"masked and plain sums decrypt to the same slots, bit for bit: {same}")


def part2(n_params: int, counts: list[int], modulus: int, slots: int) -> None:
    shape = (-(-n_params // slots), slots)
    print(f"\n== Part 2: growth with the number of institutions ({n_params:,} parameters, masking protocol only) ==")
    print(f"{'institutions':>12s}{'threshold':>10s}{'key+share B/inst':>18s}{'vs upload':>10s}"
          f"{'mask s/inst':>12s}{'server s':>10s}{'server s, 1 drop':>17s}")
    upload = he.describe("bfv-compact")["bytes_per_param"]["upload"] * n_params  # measured
    for n in counts:
        members = [f"inst_{i:02d}" for i in range(n)]
        res = protocol(members, modulus, shape)
        drop = protocol(members, modulus, shape, drop=members[-1])
        per_inst = (sum(res["up"].values()) + sum(res["down"].values())) / n
        print(f"{n:>12d}{n // 2 + 1:>10d}{per_inst:>18,.0f}{per_inst / upload:>10.5f}{res['mask_s']:>12.3f}"
              f"{res['residual_s']:>10.3f}{drop['residual_s']:>17.3f}")


def part3(sizes: int, rounds: int) -> None:
    """The anti-fraud example through ``fedx run`` (Flower simulation), masked and plain, reduced."""
    import json
    import tempfile
    from pathlib import Path

    import fedx

    example = Path(__file__).resolve().parents[1] / "examples" / "finance_antifraud" / "fedx.yaml"
    over = {"data.params": {"sizes": [sizes] * 5}, "federation.rounds": rounds, "report.baselines": [],
            "report.plots": False}
    out = Path(tempfile.mkdtemp(prefix="fedx-mask-bench-"))
    rows = {}
    for masking in ("none", "pairwise"):
        cfg = fedx.load_config(example, overrides={**over, "security.masking": masking})
        fedx.run(cfg, out / masking, progress=False)
        rows[masking] = json.loads((out / masking / "result.json").read_text())
    print(f"\n== Part 3: the anti-fraud example, {sizes:,} payments per bank, {rounds} rounds, Flower simulation ==")
    print(f"{'':34s}{'plain':>14s}{'masked':>14s}{'ratio':>8s}")
    # Round 1 also starts the workers; the median over the rounds is the steady state.
    sec = {k: statistics.median(h["seconds"] for h in r["history"]) for k, r in rows.items()}
    per = {k: statistics.median(h["bytes_up"] + h["bytes_down"] for h in r["history"]) for k, r in rows.items()}
    print(f"{'s per round (median)':34s}{sec['none']:>14.2f}{sec['pairwise']:>14.2f}{sec['pairwise'] / sec['none']:>8.3f}")
    print(f"{'bytes per round (median)':34s}{per['none']:>14,.0f}{per['pairwise']:>14,.0f}"
          f"{per['pairwise'] / per['none']:>8.4f}")
    for k in ("none", "pairwise"):
        print(f"  {k}: seconds by round {[round(h['seconds'], 2) for h in rows[k]['history']]}")
    same = rows["none"]["metrics"]["auprc"] == rows["pairwise"]["metrics"]["auprc"]
    print(f"AUPRC plain {rows['none']['metrics']['auprc']!r}, masked {rows['pairwise']['metrics']['auprc']!r}: "
          f"equal to the bit: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--growth", default="5,20,50")
    parser.add_argument("--example-sizes", type=int, default=8000, help="payments per bank in part 3 (0: skip)")
    parser.add_argument("--example-rounds", type=int, default=4)
    args = parser.parse_args()
    part1(args.params, args.members)
    preset = he.get_preset("bfv-compact")
    part2(args.params, [int(c) for c in args.growth.split(",")], preset.plain_modulus, preset.slots)
    if args.example_sizes:
        part3(args.example_sizes, args.example_rounds)


if __name__ == "__main__":
    main()
