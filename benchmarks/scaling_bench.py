"""Cost of a federated round as the number of institutions grows, side by side in one run.

The same table (``synthetic/transactions``, ``--rows`` rows in all) is split IID into N simulated
institutions (``data.institutions: N``), and ``fedx.run`` trains a small MLP on Flower's simulation
engine for ``--rounds`` rounds, with encryption off and with ``bfv-compact``. Each (N, encryption)
run is a fresh Python process, so that no memory carries over from one run to the next.

Per run it reports:

- seconds per round: the median of ``history[].seconds`` over the steady rounds that only train:
  round 2 to the one before last (``federation.eval_every: 0``: the last round also evaluates, and
  round 1 warms up: the workers' first training, and under encryption no aggregate travels down yet);
- bytes up per round (all institutions' replies, from ``history[].bytes_up``) and the update size of
  one institution;
- peak memory of the whole process tree (the driver, Ray's GCS, raylet and workers): the largest sum
  over the tree of RSS, and of PSS (shared pages split between the processes that map them), sampled
  from /proc every ``--sample`` seconds by this (parent) process, so that sampling takes nothing from the
  run's own interpreter; and the driver's own ``ru_maxrss``.

Ray gives each simulated institution one CPU and the machine's cores set how many train at once
(two on a 2-core machine), so the institutions of a round train mostly one after another.
Growth ratios against the smallest N are printed for each column.

Usage::

    python benchmarks/scaling_bench.py [--sizes 5,50,200,1000] [--rounds 6] [--encryption none,bfv-compact]
                                       [--rows 100000] [--out runs/bench-scaling]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
GIB = 1024**3
MIB = 1024**2
#: The five banks' shares of the default generator (80k, 50k, 35k, 20k, 15k transactions of 200k).
BANK_SHARES = (0.40, 0.25, 0.175, 0.10, 0.075)
#: Columns that are ids, timestamps or the generator's ground truth, never features.
DROP = ["tx_id", "customer_id", "terminal_id", "tx_datetime", "day", "scenario", "bank"]


def scaling_config(n: int, encryption: str, rounds: int, rows: int, seed: int) -> dict[str, Any]:
    """The run's config: ``rows`` transactions split IID into ``n`` institutions."""
    sizes = [round(rows * s) for s in BANK_SHARES]
    sizes[0] += rows - sum(sizes)
    return {
        "name": f"scaling-{n}-{encryption}",
        "seed": seed,
        "task": "fraud",
        "model": {"kind": "mlp", "hidden": [32, 16]},
        "data": {"source": "synthetic/transactions", "params": {"sizes": sizes}, "target": "is_fraud",
                 "institutions": n, "partition": {"method": "iid"}, "drop": DROP, "test_fraction": 0.2},
        "train": {"lr": 0.001, "batch_size": 256},
        "federation": {"rounds": rounds, "local_epochs": 1, "aggregator": "fedavg", "min_clients": n,
                       "eval_every": 0},
        "security": {"encryption": encryption, "audit": True},
        "report": {"baselines": [], "plots": False},
    }


# --------------------------------------------------------------------------- memory of a process tree


def _ppids() -> dict[int, int]:
    """Parent pid of every process on the machine, from /proc/<pid>/stat."""
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
        out[int(entry)] = int(stat[stat.rindex(b")") + 2:].split()[1])
    return out


def tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _ppids().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _rss_pss(pid: int) -> tuple[int, int]:
    """RSS and PSS of one process in bytes (0, 0 when it has gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
            lines = fh.read().splitlines()[1:]  # the first line names the address range
    except OSError:
        return 0, 0
    kib = {}
    for line in lines:
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            kib[key.strip()] = int(value.split()[0])
    return kib.get("Rss", 0) * 1024, kib.get("Pss", 0) * 1024


class TreeMemory:
    """Peak RSS and PSS summed over process trees, sampled in a background thread.

    ``root`` is one pid or a list of pids; pids appended to :attr:`roots` later are sampled from then on
    (the deployment of bigmodel_bench.py adds each node as it starts).
    """

    def __init__(self, root: int | list[int], interval: float) -> None:
        self.roots = list(root) if isinstance(root, list) else [root]
        self.interval = interval
        self.peak_rss = self.peak_pss = 0
        self.peak_procs = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-memory", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            pids = {pid for root in list(self.roots) for pid in tree(root)}
            rss = pss = 0
            for pid in pids:
                r, p = _rss_pss(pid)
                rss, pss = rss + r, pss + p
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.peak_procs = max(self.peak_procs, len(pids))
            self.samples += 1
            self._stop.wait(self.interval)


# --------------------------------------------------------------------------- one run (child process)


@dataclass
class Measure:
    """What one (N, encryption) run measured."""

    n: int
    encryption: str
    rounds: int
    s_round: float  # median seconds of the steady rounds that only train (2 .. last - 1)
    s_first: float  # seconds of round 1
    s_last: float  # seconds of the last round, which also evaluates
    wall: float  # seconds of the whole fedx.run (data, setup, rounds, final evaluation)
    bytes_up: float  # median bytes up per training round, all institutions
    bytes_down: float
    update_bytes: float  # one institution's update
    peak_rss: int  # bytes, summed over the process tree
    peak_pss: int
    peak_procs: int
    driver_maxrss: int  # bytes
    auprc: float


def child(args: argparse.Namespace) -> int:
    """Run one (N, encryption) federation in this process and write its Measure as JSON."""
    import fedx
    from fedx.config import config_from_dict

    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    out = Path(args.out) / f"n{args.n}-{args.encryption}"
    cfg = config_from_dict(scaling_config(args.n, args.encryption, args.rounds, args.rows, args.seed),
                                source="scaling_bench")
    t0 = time.perf_counter()
    result = fedx.run(cfg, out, progress=False, force=True)
    wall = time.perf_counter() - t0
    hist = result.history
    # Round 1 warms up (first training in each worker; under encryption no aggregate travels down yet).
    train_only = [h for h in hist[1:] if not h["metrics"]] or hist[:-1] or hist
    m = Measure(
        n=args.n, encryption=args.encryption, rounds=len(hist),
        s_round=statistics.median(h["seconds"] for h in train_only), s_first=hist[0]["seconds"],
        s_last=hist[-1]["seconds"], wall=wall,
        bytes_up=statistics.median(h["bytes_up"] for h in train_only),
        bytes_down=statistics.median(h["bytes_down"] for h in train_only),
        update_bytes=statistics.median(h["update_bytes_per_client"] for h in train_only),
        peak_rss=0, peak_pss=0, peak_procs=0,  # filled in by the parent, which samples this process's tree
        driver_maxrss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        auprc=float(result.metrics.get("auprc", float("nan"))),
    )
    (out / "measure.json").write_text(json.dumps(asdict(m), indent=2))
    return 0


# --------------------------------------------------------------------------- the table (parent process)


def _size(b: float) -> str:
    return f"{b / GIB:.2f} GiB" if b >= GIB else f"{b / MIB:.0f} MiB"


def _bytes(b: float) -> str:
    return f"{b / MIB:.2f} MB" if b >= MIB else f"{b / 1024:.0f} kB"


def table(rows: list[Measure], encryptions: list[str]) -> str:
    """One line per N: seconds per round and bytes for each encryption, and the peak memory."""
    head = f"{'N':>4}"
    for enc in encryptions:
        head += f"{'s/round ' + enc:>22}{'up/round ' + enc:>22}"
    if len(encryptions) == 2:
        head += f"{'enc/plain':>11}"
    head += f"{'peak RSS tree':>15}{'peak PSS tree':>15}{'driver maxrss':>15}{'procs':>7}"
    lines = [head, "-" * len(head)]
    by = {(r.n, r.encryption): r for r in rows}
    for n in sorted({r.n for r in rows}):
        line = f"{n:>4}"
        for enc in encryptions:
            r = by.get((n, enc))
            line += f"{r.s_round:>22.2f}{_bytes(r.bytes_up):>22}" if r else f"{'-':>22}{'-':>22}"
        if len(encryptions) == 2 and all((n, e) in by for e in encryptions):
            line += f"{by[(n, encryptions[1])].s_round / by[(n, encryptions[0])].s_round:>10.2f}x"
        mem = [by[(n, e)] for e in encryptions if (n, e) in by]
        line += (f"{_size(max(r.peak_rss for r in mem)):>15}{_size(max(r.peak_pss for r in mem)):>15}"
                 f"{_size(max(r.driver_maxrss for r in mem)):>15}{max(r.peak_procs for r in mem):>7}")
        lines.append(line)
    return "\n".join(lines)


def details(rows: list[Measure]) -> str:
    """Every run on its own line."""
    head = (f"{'N':>4} {'encryption':<12}{'round 1 s':>10}{'median s':>10}{'last s':>8}{'wall s':>8}"
            f"{'update/inst':>13}{'down/round':>12}{'peak RSS':>11}{'peak PSS':>11}{'AUPRC':>7}")
    lines = [head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: (r.n, r.encryption)):
        lines.append(f"{r.n:>4} {r.encryption:<12}{r.s_first:>10.2f}{r.s_round:>10.2f}{r.s_last:>8.2f}{r.wall:>8.1f}"
                     f"{_bytes(r.update_bytes):>13}{_bytes(r.bytes_down):>12}{_size(r.peak_rss):>11}"
                     f"{_size(r.peak_pss):>11}{r.auprc:>7.3f}")
    return "\n".join(lines)


def growth(rows: list[Measure], encryptions: list[str]) -> str:
    """Ratios of each larger N to the smallest, per encryption."""
    lines = []
    ns = sorted({r.n for r in rows})
    by = {(r.n, r.encryption): r for r in rows}
    for enc in encryptions:
        base = by.get((ns[0], enc))
        if base is None:
            continue
        for n in ns[1:]:
            r = by.get((n, enc))
            if r is None:
                continue
            per_inst = (r.s_round / n) / (base.s_round / ns[0])
            lines.append(f"{enc:<12} N={n} vs N={ns[0]} ({n / ns[0]:.0f}x clients): s/round {r.s_round / base.s_round:.2f}x, "
                         f"s/round per institution {1e3 * r.s_round / n:.1f} ms ({per_inst:.2f}x), "
                         f"bytes up/round {r.bytes_up / base.bytes_up:.2f}x, peak RSS tree "
                         f"{r.peak_rss / base.peak_rss:.2f}x, peak PSS tree {r.peak_pss / base.peak_pss:.2f}x, "
                         f"wall {r.wall / base.wall:.2f}x")
    return "\n".join(lines)


def main() -> int:
    """Run every (N, encryption) in its own process and print the tables; exit 1 if a run fails or exceeds 24 GiB."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="5,50,200,1000", help="numbers of institutions, comma-separated")
    p.add_argument("--rounds", type=int, default=6,
                   help="federated rounds per run (rounds 2 .. last - 1 are measured; the last one also evaluates)")
    p.add_argument("--encryption", default="none,bfv-compact", help="encryption presets, comma-separated")
    p.add_argument("--rows", type=int, default=100_000, help="transactions in all, split among the institutions")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--sample", type=float, default=0.25, help="seconds between memory samples")
    p.add_argument("--limit-gib", type=float, default=24.0, help="memory the largest run must fit in")
    p.add_argument("--out", default="runs/bench-scaling", help="run folders and scaling.json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    sizes = [int(s) for s in args.sizes.split(",")]
    encryptions = [e.strip() for e in args.encryption.split(",") if e.strip()]
    if args.rounds < 3:
        p.error("--rounds must be at least 3 (round 1 warms up, the last round also evaluates)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    print(f"{args.rows:,} synthetic transactions split IID into N institutions; MLP [32, 16]; {args.rounds} "
          f"rounds, 1 local epoch, batch 256; Ray: 1 CPU per institution, {os.cpu_count()} CPUs; "
          f"a fresh process per run", flush=True)
    rows: list[Measure] = []
    failed = []
    for n in sizes:
        for enc in encryptions:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--n", str(n), "--encryption", enc,
                   "--rounds", str(args.rounds), "--rows", str(args.rows), "--seed", str(args.seed),
                   "--sample", str(args.sample), "--out", str(out)]
            t0 = time.perf_counter()
            err = out / f"n{n}-{enc}.err"
            with open(err, "wb") as log:
                proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
                with TreeMemory(proc.pid, args.sample) as mem:  # sampled from here, off the run's own GIL
                    code = proc.wait()
            path = out / f"n{n}-{enc}" / "measure.json"
            if code != 0 or not path.exists():
                failed.append((n, enc))
                print(f"N={n} {enc}: FAILED (exit {code})\n{err.read_text()[-3000:]}", flush=True)
                continue
            m = Measure(**json.loads(path.read_text()))
            m.peak_rss, m.peak_pss, m.peak_procs = mem.peak_rss, mem.peak_pss, mem.peak_procs
            path.write_text(json.dumps(asdict(m), indent=2))
            rows.append(m)
            print(f"N={n:<3} {enc:<12} done in {time.perf_counter() - t0:.0f} s: {m.s_round:.2f} s/round, "
                  f"peak RSS tree {_size(m.peak_rss)}", flush=True)
    if not rows:
        return 1
    print()
    print(table(rows, encryptions))
    print("(s/round: median over rounds 2 .. last - 1, which only train; up/round: all institutions' replies; peak RSS/PSS "
          "tree: largest sum over the driver and all Ray processes; procs: most processes in the tree)")
    print()
    print(details(rows))
    print()
    print(growth(rows, encryptions))
    (out / "scaling.json").write_text(json.dumps({"args": vars(args), "runs": [asdict(r) for r in rows]}, indent=2))
    biggest = max(rows, key=lambda r: (r.n, r.peak_rss))
    ok = biggest.peak_pss <= args.limit_gib * GIB
    print(f"\n{'PASS' if ok else 'FAIL'}  N={biggest.n} fits in {args.limit_gib:g} GiB: peak PSS of the tree "
          f"{_size(max(r.peak_pss for r in rows if r.n == biggest.n))}, peak RSS sum "
          f"{_size(max(r.peak_rss for r in rows if r.n == biggest.n))}")
    return 0 if ok and not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
