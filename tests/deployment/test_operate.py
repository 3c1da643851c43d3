"""`fedx server` and `fedx node` as docs/deploy.md runs them (fedx/flower/operate.py), without a SuperLink.

- `fedx node --insecure` with the node file of a secure deployment ("A localhost demo"): the file names
  `root_certificates` and `auth_key`, and `--insecure` must still start a plain SuperNode that Flower accepts
  (Flower itself refuses `--insecure` together with a private key or a CA certificate). One real
  flower-supernode is started, pointed at a port where nothing listens, and stopped here by PID.
- The line `fedx server` prints per round, also for rounds without evaluation (`federation.eval_every`),
  and only for rounds of the run it launched, when `out_dir` holds a previous run's checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from fedx.config import load_node_config
from fedx.flower import deploy, operate
from fedx.atomic import write_atomic

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(120),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:typer")]


def node_file(folder: Path, port: int) -> Path:
    """A secure node file, as in docs/deploy.md: CA certificate and node key beside it."""
    tls = deploy.make_ca_and_server_cert(folder / "certs")
    (folder / "ca.crt").write_bytes(tls.ca_cert.read_bytes())
    deploy.make_node_keypair(folder, "site")
    (folder / "data.csv").write_text("x,label\n1,0\n2,1\n")
    doc = {"name": "site", "data": "data.csv", "out_dir": "node-out",
           "superlink": {"address": f"127.0.0.1:{port}", "root_certificates": "ca.crt", "auth_key": "site.key"}}
    path = folder / "node.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_secure_node_file_passes_its_certificate_and_key(tmp_path: Path) -> None:
    path = node_file(tmp_path, 9092)
    opts = operate.supernode_options(load_node_config(path), path, tmp_path / "out")
    assert opts["insecure"] is False
    assert Path(opts["root_certificates"]).resolve() == (tmp_path / "ca.crt").resolve()
    assert Path(opts["private_key"]).resolve() == (tmp_path / "site.key").resolve()
    assert opts["node_config"] == {"fedx-node": str(path.resolve())}


def test_insecure_flag_with_a_secure_node_file_starts_a_plain_supernode(tmp_path: Path) -> None:
    port = deploy.free_port()                      # nothing listens there: the node keeps retrying
    path = node_file(tmp_path, port)
    node = load_node_config(path, overrides={"superlink.insecure": True})   # what `fedx node --insecure` does
    opts = operate.supernode_options(node, path, tmp_path / "out")
    assert opts["private_key"] is None and opts["root_certificates"] is None

    proc = deploy.start_supernode(**opts, wait_ready=False)
    try:
        argv = [str(a) for a in proc.popen.args]
        assert "--insecure" in argv
        assert "--auth-supernode-private-key" not in argv and "--root-certificates" not in argv
        # Flower accepted the arguments: the node is up and trying to reach the (absent) SuperLink.
        deadline = time.monotonic() + 60
        while "Connection attempt failed" not in proc.log_text() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.log_tail()
            time.sleep(0.5)
        assert "Connection attempt failed" in proc.log_text(), proc.log_tail()
        assert proc.poll() is None, proc.log_tail()
    finally:
        tree = {proc.pid} | deploy.descendant_pids(proc.pid)
        deploy.stop(proc)
    assert not deploy.alive_pids(tree)


def test_round_line_shows_metrics_or_the_training_loss() -> None:
    # Rows as the server's checkpoint history holds them (fields of a deployed run's index.json).
    evaluated = {"round": 5, "metrics": {"n": 160.0, "base_rate": 0.49375, "roc_auc": 0.8718549773402094,
                                         "log_loss": 0.45555205495028284},
                 "train_loss": 0.3402, "clients": ["hungary", "cleveland", "long_beach"], "seconds": 70.81}
    assert operate.round_line(evaluated) == "round 5: roc_auc 0.8719, log_loss 0.4556  (70.8 s, 3 institutions)"
    skipped = {"round": 4, "metrics": {}, "per_institution": {}, "train_loss": 0.3656460213792193,
               "clients": ["hungary", "cleveland", "long_beach"], "seconds": 39.0126069020007}
    assert operate.round_line(skipped) == "round 4: train_loss 0.3656, not evaluated  (39.0 s, 3 institutions)"
    private = {"round": 2, "metrics": {}, "clients": ["a", "b"], "seconds": 12.0}   # no loss reported
    assert operate.round_line(private) == "round 2: not evaluated  (12.0 s, 2 institutions)"


def test_round_watcher_skips_a_previous_runs_checkpoint(tmp_path: Path) -> None:
    index = tmp_path / "checkpoint" / "index.json"
    index.parent.mkdir()

    def save(rounds: list[int]) -> None:   # as the server's checkpoint writes its index
        write_atomic(index, json.dumps({"history": [{"round": r, "metrics": {}, "train_loss": 0.5 / r}
                                                     for r in rounds]}).encode())

    save([1, 2, 3, 4, 5])                              # a finished run left in the reused out_dir
    watcher = operate.RoundWatcher(index)              # made before the new run is launched
    assert watcher.new_rows() == []
    assert watcher.new_rows() == []
    save([1])                                          # the new run's first round
    assert [r["round"] for r in watcher.new_rows()] == [1]
    assert watcher.new_rows() == []
    save([1, 2, 3])
    assert [r["round"] for r in watcher.new_rows()] == [2, 3]

    fresh = operate.RoundWatcher(tmp_path / "none" / "index.json")   # a fresh out_dir
    assert fresh.new_rows() == []
    resumed = operate.RoundWatcher(index)
    save([1, 2, 3, 4])                                 # a resumed run rewrites the whole history
    assert [r["round"] for r in resumed.new_rows()] == [1, 2, 3, 4]


SERVER_YAML = """\
name: heart-deployed
seed: 3
task: disease_risk
model: {kind: logistic}
data:
  target: num
  target_above: 0
  drop: [id, dataset]
  na_values: {chol: [0], trestbps: [0]}
train: {lr: 0.05, batch_size: 32}
federation: {rounds: 5, local_epochs: 2, eval_every: 0, min_clients: 2, timeout: 600}
security: {encryption: bfv-compact, keys: keys}
deployment: {host: 127.0.0.1, port: 9092, certificates: certs, nodes: nodekeys, out_dir: server-out}
"""


def test_the_serverapp_reads_the_config_with_the_command_line_overrides(tmp_path: Path) -> None:
    from fedx.config import load_config
    from fedx.run_folder import config_digest as _config_digest

    (tmp_path / "server.yaml").write_text(SERVER_YAML)
    out = tmp_path / "server-out"
    out.mkdir()
    # `fedx server --config server.yaml --set federation.rounds=2 --set train.lr=0.1`
    given = load_config(tmp_path / "server.yaml", overrides={"federation.rounds": 2, "train.lr": 0.1})
    seen = load_config(operate.write_effective_config(given, out))   # what the ServerApp loads
    assert seen.federation.rounds == 2 and seen.train.lr == 0.1
    assert seen.data.drop == ["id", "dataset"] and seen.data.na_values == {"chol": [0], "trestbps": [0]}
    assert seen.to_dict() == given.to_dict()

    # Without overrides the ServerApp sees the file itself: a checkpoint made from it still resumes.
    plain = load_config(tmp_path / "server.yaml")
    seen = load_config(operate.write_effective_config(plain, out))
    assert _config_digest(seen) == _config_digest(plain)
    assert seen.federation.rounds == 5


def test_a_horizontal_gbdt_config_is_refused_before_anything_starts(tmp_path: Path) -> None:
    from fedx.config import config_from_dict
    from fedx.errors import DeploymentError

    cfg = config_from_dict({"name": "trees", "task": "fraud", "model": {"kind": "gbdt", "trees": 5},
                            "data": {"source": "synthetic/transactions", "split_by": "bank", "target": "is_fraud"},
                            "deployment": {"port": deploy.free_port(), "out_dir": str(tmp_path / "out"),
                                           "insecure": True}})
    with pytest.raises(DeploymentError, match=r"horizontal model\.kind: gbdt \(data\.split_by\) runs in simulation "
                                              r"only .*deployment runs vertical gbdt"):
        operate.serve(cfg, tmp_path / "server.yaml", say=lambda _: None)
    assert not (tmp_path / "out").exists()


# -- following a run: the flwr CLI only when it can tell something new ------------------------------------

class _Proc:
    """What wait_run reads of a local SuperLink: its pid, and whether it still runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def poll(self) -> None:
        return None


def test_a_run_is_checked_rarely_while_its_serverapp_runs_and_at_once_when_it_ends(monkeypatch) -> None:
    from fedx.flower.deploy import superlink as sl

    app_alive = [True] * 6 + [False]
    checks: list[int] = []
    seen: list[str] = []

    def status(run_id, connection, home):
        checks.append(len(seen))
        return {"status": "finished:completed" if not app_alive[min(len(seen), len(app_alive) - 1)] else "running"}

    monkeypatch.setattr(sl, "run_status", status)
    monkeypatch.setattr(sl, "serverapp_running", lambda proc: app_alive[min(len(seen), len(app_alive) - 1)])
    record = sl.wait_run(1, "fedx", "/nowhere", poll=0.01, superlink=_Proc(1),  # type: ignore[arg-type]
                         on_poll=lambda r: seen.append(r["status"]), app_poll=60)
    assert record["status"] == "finished:completed"
    assert checks == [0, 6]                  # the first poll, then the poll after the ServerApp process ended
    assert seen == ["running"] * 6 + ["finished:completed"]


def test_without_a_serverapp_process_every_poll_checks_the_run(monkeypatch) -> None:
    from fedx.flower.deploy import superlink as sl

    answers = iter(["pending", "starting", "finished:failed"])
    monkeypatch.setattr(sl, "run_status", lambda *a: {"status": next(answers)})
    monkeypatch.setattr(sl, "serverapp_running", lambda proc: False)
    assert sl.wait_run(1, "fedx", "/nowhere", poll=0.01, superlink=_Proc(1))["status"] == "finished:failed"  # type: ignore[arg-type]


def test_the_serverapp_process_is_found_below_the_superlink(tmp_path: Path) -> None:
    import subprocess
    import sys

    from fedx.flower.deploy import superlink as sl

    app = tmp_path / "flwr-serverapp"
    app.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(60)\n")
    app.chmod(0o755)
    link = subprocess.Popen([sys.executable, "-c", f"import subprocess; subprocess.run([{str(app)!r}])"])
    sleeper = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(60)'])"
    other = subprocess.Popen([sys.executable, "-c", sleeper])
    try:
        deadline = time.monotonic() + 30
        while not sl.serverapp_running(_Proc(link.pid)) and time.monotonic() < deadline:  # type: ignore[arg-type]
            time.sleep(0.1)
        assert sl.serverapp_running(_Proc(link.pid))  # type: ignore[arg-type]
        assert not sl.serverapp_running(_Proc(other.pid))  # type: ignore[arg-type]
    finally:
        for proc in (link, other):
            for pid in deploy.descendant_pids(proc.pid):
                os.kill(pid, 9)
            proc.kill()
            proc.wait()


def test_the_connected_institutions_are_looked_at_less_often_once_all_are_there(monkeypatch, tmp_path: Path) -> None:
    looks: list[float] = []
    online = [{"node-id": 1, "status": "online"}, {"node-id": 2, "status": "online"}]
    clock = [0.0]

    def list_nodes(connection, home):
        looks.append(clock[0])
        return online if clock[0] >= 2 else online[:1]

    def wait_run(run_id, connection, home, *, on_poll, **kwargs):
        for t in range(40):                  # a poll a second, for 40 s
            clock[0] = float(t)
            on_poll({"status": "running"})
        return {"status": "finished:completed"}

    monkeypatch.setattr(operate.deploy, "list_nodes", list_nodes)
    monkeypatch.setattr(operate.deploy, "wait_run", wait_run)
    monkeypatch.setattr(operate.time, "monotonic", lambda: clock[0])
    said: list[str] = []
    waiting = operate.NodeWaitReporter(2, {1: "east", 2: "north"}, secure=True)
    operate._follow(1, tmp_path, None, operate.RoundWatcher(tmp_path / "index.json"), 100, said.append,  # type: ignore[arg-type]
                    waiting)
    assert looks == [0.0, 1.0, 2.0, 17.0, 32.0]   # each poll until both are online, then every 15 s
    assert said == ["institutions connected: 1/2 (east); waiting for north; keys registered: 1",
                    "institutions connected: 2/2 (east, north); keys registered: 2"]
