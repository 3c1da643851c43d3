"""Private set intersection: seconds and bytes each way, at n x n ids, for fedx's PSI and the candidates.

Two parties (a label party and one feature party) each hold ``n`` integer ids, ``--overlap`` of them shared.
Both parties run in this process, one after the other, as in a simulation, so the seconds are the sum of
both parties' work on this machine (in deployment each party works on its own machine). Each run checks
its intersection against ``numpy.intersect1d`` on the raw ids.

Rows:

- ``fedx/<backend>``: :mod:`fedx.vertical.psi` end to end (normalisation, keyed hashing, blinding with
  ``--workers`` processes, matching, common order, sealed messages), for each installed X25519 backend:
  ``nacl`` (libsodium through PyNaCl) and ``cryptography`` (OpenSSL).
- ``openmined-psi``: the ``openmined-psi`` package (ECDH on P-256, the feature party's set in a GCS filter
  at false-positive rate 1e-9, one thread), ids salted with a per-run secret. It pins an old protobuf, so
  it only runs where it is installed on its own: ``--only openmined``, which does not import fedx.

Usage::

    python benchmarks/psi_bench.py [--sizes 100000,1000000] [--workers 2] [--overlap 0.6]
    python benchmarks/psi_bench.py --only openmined --sizes 100000     # in a separate environment
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from dataclasses import dataclass

import numpy as np


@dataclass
class Row:
    """One line of the table."""

    name: str
    n: int
    seconds: float
    cpu: float  # CPU seconds of this process and its workers
    shared: int
    correct: bool
    label_to_feature: int  # bytes
    feature_to_label: int
    detail: str = ""


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and its finished worker processes."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def make_ids(n: int, overlap: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two sets of ``n`` distinct 10-digit ids sharing ``overlap * n``; and the truth."""
    rng = np.random.default_rng(seed)
    pool = np.unique(rng.integers(10**9, 10**10, size=int(2.2 * n)))
    pool = pool[rng.permutation(len(pool))]
    k = int(overlap * n)
    shared, rest = pool[:k], pool[k:]
    a = np.concatenate([shared, rest[: n - k]])
    b = np.concatenate([shared, rest[n - k: 2 * (n - k)]])
    return a[rng.permutation(n)], b[rng.permutation(n)], np.intersect1d(a, b)


def run_fedx(a: np.ndarray, b: np.ndarray, truth: np.ndarray, backend: str, workers: int) -> Row:
    """fedx's PSI end to end, both parties in this process."""
    import pandas as pd

    from fedx.vertical.channel import route
    from fedx.vertical.curve import shutdown_workers
    from fedx.vertical.ids import normalise_ids
    from fedx.vertical.psi import PSIParty, run_psi

    traffic = {"insurer": 0, "hospital": 0}

    def observe(message: bytes) -> None:
        traffic[route(message).sender] += len(message)

    c0, t0 = cpu_seconds(), time.perf_counter()
    ids_a = normalise_ids(pd.DataFrame({"person_id": a}), "person_id", party="insurer")
    ids_b = normalise_ids(pd.DataFrame({"person_id": b}), "person_id", party="hospital")
    t_norm = time.perf_counter() - t0
    common: dict = {"label_party": "insurer", "parties": ["insurer", "hospital"], "run_id": "bench",
                    "backend": backend, "workers": workers}
    parties = [PSIParty("insurer", ids_a, **common), PSIParty("hospital", ids_b, **common)]
    out = run_psi(parties, observe=observe)
    shutdown_workers()  # so that the workers' CPU time is counted, and each run starts its own (as a node would)
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    rows = out["insurer"].rows
    assert rows is not None
    correct = bool(np.array_equal(np.sort(a[rows]), truth))
    steps = {k: sum(p.timings.get(k, 0.0) for p in parties) for k in ("hash", "blind", "match", "align")}
    detail = f"normalise {t_norm:.1f}s, " + ", ".join(f"{k} {v:.1f}s" for k, v in steps.items())
    return Row(f"fedx/{backend} x{workers}", len(a), seconds, cpu, int(out["insurer"].n_shared or 0), correct,
               traffic["insurer"], traffic["hospital"], detail)


def run_openmined(a: np.ndarray, b: np.ndarray, truth: np.ndarray) -> Row:
    """openmined-psi: the label party is the client (it learns its shared rows), the feature party the server."""
    import private_set_intersection.python as psi

    salt = os.urandom(16).hex()
    c0, t0 = cpu_seconds(), time.perf_counter()
    items_a = [f"{salt}:{v}" for v in a.tolist()]
    items_b = [f"{salt}:{v}" for v in b.tolist()]
    client = psi.client.CreateWithNewKey(True)
    server = psi.server.CreateWithNewKey(True)
    t = time.perf_counter()
    setup = server.CreateSetupMessage(1e-9, len(items_a), items_b, psi.DataStructure.GCS)
    t_setup = time.perf_counter() - t
    t = time.perf_counter()
    request = client.CreateRequest(items_a)
    t_req = time.perf_counter() - t
    t = time.perf_counter()
    response = server.ProcessRequest(request)
    t_resp = time.perf_counter() - t
    t = time.perf_counter()
    found = np.asarray(client.GetIntersection(setup, response), dtype=np.int64)
    t_int = time.perf_counter() - t
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    correct = bool(np.array_equal(np.sort(a[found]), truth))
    up = len(request.SerializeToString())
    down = len(setup.SerializeToString()) + len(response.SerializeToString())
    detail = f"setup {t_setup:.1f}s, request {t_req:.1f}s, response {t_resp:.1f}s, intersect {t_int:.1f}s"
    return Row("openmined-psi x1", len(a), seconds, cpu, len(found), correct, up, down, detail)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated n (ids at each party)")
    ap.add_argument("--overlap", type=float, default=0.6)
    ap.add_argument("--workers", type=int, default=2, help="blinding processes per party (fedx rows)")
    ap.add_argument("--only", choices=["fedx", "openmined", "all"], default="all")
    ap.add_argument("--backends", default="", help="fedx backends to run (default: every installed one)")
    args = ap.parse_args()

    sizes = [int(s) for s in args.sizes.split(",") if s]
    runners = []
    if args.only in ("fedx", "all"):
        from fedx.vertical.curve import available_backends

        names = [b for b in args.backends.split(",") if b] or available_backends()
        runners += [(f"fedx/{b}", lambda a, b_, t, _b=b: run_fedx(a, b_, t, _b, args.workers)) for b in names]
    if args.only in ("openmined", "all"):
        try:
            import private_set_intersection.python  # noqa: F401

            runners.append(("openmined-psi", run_openmined))
        except ImportError:
            print("openmined-psi: not installed here (it pins an old protobuf; run --only openmined in a "
                  "separate environment)")
    load = os.getloadavg()
    print(f"PSI benchmark: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at "
          f"start, overlap {args.overlap:.0%}; both parties in this process (seconds are their sum)")
    header = f"{'candidate':<22} {'n x n':>19} {'seconds':>8} {'cpu s':>7} {'shared':>8} {'ok':>3} {'L->F':>9} {'F->L':>9}"
    print(header)
    print("-" * len(header))
    for n in sizes:
        a, b, truth = make_ids(n, args.overlap)
        for _, fn in runners:
            r = fn(a, b, truth)
            print(f"{r.name:<22} {f'{n:,} x {n:,}':>19} {r.seconds:>8.1f} {r.cpu:>7.1f} {r.shared:>8,} "
                  f"{'yes' if r.correct else 'NO':>3} {_mb(r.label_to_feature):>9} {_mb(r.feature_to_label):>9}"
                  f"   {r.detail}", flush=True)
    load = os.getloadavg()
    print(f"load average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (other work on this machine shares "
          "its cores: under load, 'seconds' (wall) grows and 'cpu s' / cores is the wall time on idle cores); "
          "target: 1,000,000 x 1,000,000 in at most 120 s")


if __name__ == "__main__":
    main()
