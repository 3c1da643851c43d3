"""examples/flower_app, run as its README runs it: `flwr run .` in Flower's local simulation.

The encrypted final model that the ServerApp writes must equal plaintext FedAvg of the same clients, run
here in numpy with the app's own task functions (within the encoding's error), and the SuperLink that
`flwr run` uses (started here with flwr's own flags, so that the test owns it) is stopped by its PID.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
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


def _wait_healthy(port: int, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"flower-superlink exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"flower-superlink did not answer on 127.0.0.1:{port} within {timeout:.0f} s")


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
    http_port, control_port = _free_port(), _free_port()
    env = {**os.environ,
           "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_TMPDIR": str(home / "ray"),
           "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(http_port), "FLWR_LOCAL_CONTROL_API_PORT": str(control_port),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    (home / "ray").mkdir()
    # The local SuperLink that `flwr run` would start itself, with the same flags (flwr gives it only 15 s to
    # come up, too little on a loaded machine). `flwr run .` finds it on the local connection's port.
    superlink = subprocess.Popen(
        [str(bin_dir / "flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
         "--control-api-address", f"127.0.0.1:{control_port}", "--host", "127.0.0.1", "--port", str(http_port),
         "--database", str(home / "state.db"), "--log-file", str(home / "superlink.log")],
        cwd=app, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)   # relative paths resolve here
    try:
        _wait_healthy(http_port, superlink, timeout=180)
        done = subprocess.run([str(bin_dir / "flwr"), "run", ".", "--federation-config", "num-supernodes=3",
                               "--stream"], cwd=app, env=env, capture_output=True, text=True, timeout=420,
                              check=False)
    finally:
        superlink.terminate()
        try:
            superlink.wait(timeout=30)
        except subprocess.TimeoutExpired:
            superlink.kill()
            superlink.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
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
