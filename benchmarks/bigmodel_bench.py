"""A 10M-parameter model under bfv-compact: in simulation with 5 institutions, and over a real deployment.

Both runs train the same MLP (``--hidden`` x2, 10.06M parameters by default) on the same table: five sites of
``--rows`` rows each, 20 numeric features and a 0/1 label, made here from a fixed seed. Every update is encrypted
under ``bfv-compact`` and summed by a server that cannot read it.

- **Simulation**: ``fedx run CONFIG`` on Flower's simulation engine (Ray, 1 CPU per institution).
- **Deployment**: ``fedx server`` (a SuperLink with TLS and node authentication, on 127.0.0.1) and five
  ``fedx node`` processes (one SuperNode each), set up with the fedx CLI as operators would. The update of
  one institution (about 40 MB) travels as one encrypted Array of an ArrayRecord, which Flower cuts into
  chunks of at most ``FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE`` (5 MiB) that are pushed and pulled one by one, so no
  gRPC message comes near gRPC's 2 GiB limit.

Per run it prints seconds per round (round 1, the median of the steady rounds 2 .. R-1, and the last round,
which also evaluates and saves the model), bytes up and down per steady round (all institutions, from the
run's history), the update size of one institution in bytes per parameter,
and the peak memory of the whole process tree: the largest sum of RSS and of PSS over every process the run
started (for the deployment: the server's tree and the five nodes' trees together), sampled from /proc.

Goal (issue 21, goal 5): the simulated run fits in 8 GB for the whole process tree (PSS, shared pages counted
once).

Usage::

    python benchmarks/bigmodel_bench.py [--hidden 3160] [--rounds 3] [--rows 400] [--only sim|deploy]
                                        [--out runs/bench-bigmodel]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scaling_bench import GIB, MIB, TreeMemory, tree  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SITES = ("site_a", "site_b", "site_c", "site_d", "site_e")
FEATURES = 20
LIMIT_GB = 8.0
ENV = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def fedx_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedx.cli", *args]


def cli(*args: str, cwd: Path) -> None:
    res = subprocess.run(fedx_cmd(*args), check=False, cwd=cwd, capture_output=True, text=True, timeout=300, env=ENV)
    if res.returncode != 0:
        raise SystemExit(f"fedx {' '.join(args)} failed:\n{res.stderr[-3000:]}")


def n_params(hidden: int) -> int:
    """Parameters of the MLP [hidden, hidden] on FEATURES inputs with one output."""
    return (FEATURES + 1) * hidden + (hidden + 1) * hidden + hidden + 1


def make_table(rows: int, seed: int = 11) -> pd.DataFrame:
    """Five sites with shifted features and a logistic label."""
    rng = np.random.default_rng(seed)
    beta = rng.normal(0, 0.5, FEATURES)
    parts = []
    for i, site in enumerate(SITES):
        x = rng.normal(0.2 * (i - 2), 1.0, (rows, FEATURES))
        y = (rng.random(rows) < 1 / (1 + np.exp(-(x @ beta - 0.5)))).astype(int)
        part = pd.DataFrame(x, columns=[f"x{j}" for j in range(FEATURES)])
        part.insert(0, "site", site)
        part["label"] = y
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def build(root: Path, args: argparse.Namespace) -> None:
    """The server's folder and one folder per institution, made with the fedx CLI."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    cli("certs", "--out", "certs", cwd=root)
    cli("keygen", "--preset", "bfv-compact", "--max-clients", str(len(SITES)), "--out", "keys", cwd=root)
    (root / "nodekeys").mkdir()
    table = make_table(args.rows)
    table.to_csv(root / "all_sites.csv", index=False)
    port = args.port or _free_port()
    for name in SITES:
        site = root / name
        site.mkdir()
        cli("node-keys", "--name", name, "--out", str(site), cwd=root)
        (root / "nodekeys" / f"{name}.pub").write_bytes((site / f"{name}.pub").read_bytes())
        table[table.site == name].drop(columns=["site"]).to_csv(site / "data.csv", index=False)
        node = {"name": name, "data": "data.csv", "keys": "../keys/secret.fxk", "out_dir": "out",
                "policy": {"require_encryption": True},
                "superlink": {"address": f"127.0.0.1:{port}", "root_certificates": "../certs/ca.crt",
                              "auth_key": f"{name}.key"}}
        (site / "node.yaml").write_text(yaml.safe_dump(node))
    job = {"name": "bigmodel", "seed": 5, "task": "fraud",
           "model": {"kind": "mlp", "hidden": [args.hidden, args.hidden]},
           "data": {"source": "all_sites.csv", "split_by": "site", "target": "label", "test_fraction": 0.2},
           "train": {"lr": 0.001, "batch_size": 128},
           "federation": {"rounds": args.rounds, "local_epochs": 1, "min_clients": len(SITES), "timeout": 900,
                          "eval_every": 0},
           "security": {"encryption": "bfv-compact", "keys": "keys"},
           "report": {"baselines": [], "plots": False},
           "deployment": {"port": port, "certificates": "certs", "nodes": "nodekeys", "out_dir": "server-out",
                          "wait_seconds": 120}}
    (root / "server.yaml").write_text(yaml.safe_dump(job, sort_keys=False))


def _free_port() -> int:
    from fedx.flower import deploy

    return deploy.free_port()


def summarise(kind: str, result: dict[str, Any], wall: float, mem: TreeMemory, params: int) -> dict[str, Any]:
    hist = result["history"]
    # Round 1 carries no aggregate down yet; the last round also ends the run (the aggregate goes down once
    # more for the final evaluation, and every institution saves the model): the steady rounds lie between.
    later = hist[1:-1] if len(hist) >= 3 else hist[1:]
    return {
        "run": kind, "params": params, "rounds": len(hist), "wall_s": wall,
        "round1_s": hist[0]["seconds"], "last_s": hist[-1]["seconds"],
        "round_s": statistics.median(h["seconds"] for h in later),
        "bytes_up": statistics.median(h["bytes_up"] for h in later),
        "bytes_down": statistics.median(h["bytes_down"] for h in later),
        "update_bytes": statistics.median(h["update_bytes_per_client"] for h in later),
        "update_b_per_param": statistics.median(h["update_bytes_per_param"] for h in later),
        "peak_rss": mem.peak_rss, "peak_pss": mem.peak_pss, "peak_procs": mem.peak_procs,
        "metric": result.get("metrics", {}).get("roc_auc"),
    }


def run_sim(root: Path, params: int, sample: float) -> dict[str, Any]:
    out = root / "sim"
    t0 = time.perf_counter()
    proc = subprocess.Popen(fedx_cmd("run", "server.yaml", "--out", str(out), "--quiet", "--force"), cwd=root,
                            env=ENV, stdout=subprocess.DEVNULL, stderr=open(root / "sim.err", "wb"))  # noqa: SIM115
    with TreeMemory(proc.pid, sample) as mem:
        code = proc.wait()
    wall = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"simulation failed (exit {code}):\n{(root / 'sim.err').read_text()[-3000:]}")
    return summarise("simulation", json.loads((out / "result.json").read_text()), wall, mem, params)


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    for pid in reversed(tree(proc.pid)):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        for pid in tree(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def run_deploy(root: Path, params: int, sample: float) -> dict[str, Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], cwd: Path, log: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(fedx_cmd(*args), cwd=cwd, env=ENV, start_new_session=True,
                                stdout=open(cwd / log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        procs.append(proc)
        return proc

    t0 = time.perf_counter()
    try:
        server = start(["server", "--config", "server.yaml"], root, "server.out")
        mem = TreeMemory([server.pid], sample)
        with mem:
            deadline = time.monotonic() + 300
            while "launched" not in (root / "server.out").read_text():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the server did not launch its run:\n{(root / 'server.out').read_text()[-3000:]}")
                time.sleep(0.5)
            for name in SITES:
                mem.roots.append(start(["node", "--config", "node.yaml"], root / name, f"{name}.out").pid)
            code = server.wait(timeout=3600)
        wall = time.perf_counter() - t0
        if code != 0:
            raise SystemExit(f"the deployed run failed (exit {code}):\n{(root / 'server.out').read_text()[-3000:]}")
        for proc, name in zip(procs[1:], SITES):
            if proc.wait(timeout=120) != 0:
                raise SystemExit(f"node {name} failed:\n{(root / name / f'{name}.out').read_text()[-3000:]}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                _kill_tree(proc)
    return summarise("deployment", json.loads((root / "server-out" / "result.json").read_text()), wall, mem, params)


def _size(b: float) -> str:
    return f"{b / GIB:.2f} GiB" if b >= GIB else f"{b / MIB:.0f} MiB"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=3160, help="width of both hidden layers (3160: 10.06M parameters)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rows", type=int, default=400, help="rows per institution")
    p.add_argument("--only", choices=("sim", "deploy"), help="run only the simulation or only the deployment")
    p.add_argument("--port", type=int, default=0, help="the SuperLink's port (default: a free one)")
    p.add_argument("--sample", type=float, default=0.2, help="seconds between memory samples")
    p.add_argument("--out", default="runs/bench-bigmodel")
    args = p.parse_args()
    if args.rounds < 2:
        p.error("--rounds must be at least 2 (round 1 carries no aggregate down yet)")
    root = Path(args.out).resolve()
    params = n_params(args.hidden)
    chunk = int(os.environ.get("FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE", 5 * MIB))
    print(f"MLP [{args.hidden}, {args.hidden}] on {FEATURES} features: {params:,} parameters; bfv-compact; "
          f"{len(SITES)} institutions x {args.rows} rows; {args.rounds} rounds; {os.cpu_count()} CPUs", flush=True)
    build(root, args)
    runs = []
    if args.only in (None, "sim"):
        runs.append(run_sim(root, params, args.sample))
        print(f"simulation done in {runs[-1]['wall_s']:.0f} s", flush=True)
    if args.only in (None, "deploy"):
        runs.append(run_deploy(root, params, args.sample))
        print(f"deployment done in {runs[-1]['wall_s']:.0f} s", flush=True)
    print()
    head = (f"{'run':<11}{'round 1 s':>10}{'round s':>9}{'last s':>8}{'wall s':>8}{'update/inst':>13}{'B/param':>9}"
            f"{'up/round':>11}{'down/round':>12}{'peak RSS tree':>15}{'peak PSS tree':>15}{'procs':>7}{'ROC-AUC':>9}")
    print(head)
    print("-" * len(head))
    for r in runs:
        print(f"{r['run']:<11}{r['round1_s']:>10.1f}{r['round_s']:>9.1f}{r['last_s']:>8.1f}{r['wall_s']:>8.0f}"
              f"{r['update_bytes'] / MIB:>10.1f} MB{r['update_b_per_param']:>9.3f}{r['bytes_up'] / MIB:>8.0f} MB"
              f"{r['bytes_down'] / MIB:>9.0f} MB{_size(r['peak_rss']):>15}{_size(r['peak_pss']):>15}"
              f"{r['peak_procs']:>7}{(r['metric'] or float('nan')):>9.3f}")
    steady = f"2 .. {args.rounds - 1}" if args.rounds >= 3 else "2"
    print(f"(round s: median of rounds {steady}, which only train; last s: the last round, which also evaluates and "
          f"saves; up/down: all institutions per steady round; peak RSS/PSS: the largest sum over every process of "
          f"the run)")
    for r in runs:
        if r["run"] == "deployment":
            pieces = -(-int(r["update_bytes"]) // chunk)
            print(f"deployment: one institution's update of {r['update_bytes'] / MIB:.1f} MB travelled as "
                  f"{pieces} Array chunks of at most {chunk / MIB:.0f} MiB each")
    ok = True
    for r in runs:
        if r["run"] == "simulation":
            passed = r["peak_pss"] <= LIMIT_GB * 1e9
            ok &= passed
            print(f"{'PASS' if passed else 'FAIL'}  simulation of {params / 1e6:.2f}M parameters, 5 institutions, within "
                  f"{LIMIT_GB:g} GB for the whole process tree: peak PSS {r['peak_pss'] / 1e9:.2f} GB "
                  f"(RSS sum {r['peak_rss'] / 1e9:.2f} GB)")
    (root / "bigmodel.json").write_text(json.dumps({"args": vars(args), "runs": runs}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
