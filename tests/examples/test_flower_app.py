"""examples/flower_app, run as its README runs it: `flwr run .` in Flower's local simulation.

The encrypted final model that the ServerApp writes must equal plaintext FedAvg of the same clients, run
here in numpy with the app's own task functions (within the encoding's error), and the SuperLink that
`flwr run` starts in the background is stopped by its PID afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from fedx import he
from fedx.flower import decrypt_arrays

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "flower_app"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (this test's private FLWR_HOME path)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                pids.append(int(proc.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return False


def _plaintext_fedavg(task, rounds: int, epochs: int, lr: float, n_clients: int) -> dict[str, np.ndarray]:
    model = task.init_model()
    for _ in range(rounds):
        fits, weights = [], []
        for pid in range(n_clients):
            x, y, _, _ = task.load_data(pid, n_clients)
            fits.append(task.fit(model, x, y, epochs, lr))
            weights.append(len(y))
        w = np.asarray(weights, np.float64) / sum(weights)
        model = {k: sum(wi * f[k] for wi, f in zip(w, fits)) for k in model}
    return model


def test_flwr_run_gives_the_plaintext_fedavg_model(tmp_path: Path) -> None:
    app = tmp_path / "flower_app"
    shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("keys", "final_model.fxb", "__pycache__"))
    keys = he.keygen("bfv-compact", clip=2.0)
    keys.save(app / "keys")
    home = Path(tempfile.mkdtemp(prefix="fxflwr", dir="/tmp"))   # short: Ray's socket paths must fit 107 bytes
    bin_dir = Path(sys.executable).parent
    env = {**os.environ,
           "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_TMPDIR": str(home / "ray"),
           "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(_free_port()), "FLWR_LOCAL_CONTROL_API_PORT": str(_free_port()),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    (home / "ray").mkdir()
    try:
        done = subprocess.run([str(bin_dir / "flwr"), "run", ".", "--federation-config", "num-supernodes=3",
                               "--stream"], cwd=app, env=env, capture_output=True, text=True, timeout=420,
                              check=False)
    finally:
        superlinks = _processes_mentioning(f"{home}/local-superlink")
        for pid in superlinks:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(p) for p in superlinks):
            time.sleep(0.2)
        if not any(_alive(p) for p in superlinks):
            shutil.rmtree(home, ignore_errors=True)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert superlinks, "flwr run should have started a local SuperLink"
    assert not any(_alive(p) for p in superlinks), "the SuperLink should be stopped"
    assert "encrypted final model" in done.stdout, log[-3000:]

    sys.path.insert(0, str(app))
    try:
        from flower_app import task  # the example's own model, data and training
    finally:
        sys.path.remove(str(app))
    model = task.from_record(decrypt_arrays(keys, (app / "final_model.fxb").read_bytes()))
    config = tomllib.loads((app / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    want = _plaintext_fedavg(task, rounds=int(config["num-server-rounds"]), epochs=int(config["local-epochs"]),
                             lr=float(config["learning-rate"]), n_clients=3)
    for name, value in want.items():
        np.testing.assert_allclose(model[name], value, rtol=0, atol=1e-3, err_msg=name)
    # and the federated model is near the coefficients that generated the data
    assert np.abs(model["coef"] - task.TRUE_COEF).max() < 0.2
