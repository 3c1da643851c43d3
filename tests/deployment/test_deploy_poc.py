"""End to end on Flower's deployment engine: TLS, SuperNode authentication, no runtime installs.

One SuperLink and three SuperNodes on free loopback ports run the proof-of-concept app in
``pocapp/`` (importable through ``PYTHONPATH``, never installed). An unregistered key is refused.
Everything is stopped by PID, and no Flower process may be left behind.
"""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedx.errors import DeploymentError
from fedx.flower import deploy

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(180)]

HERE = Path(__file__).resolve().parent  # holds the pocapp package
APP_CONFIG = {"expected-nodes": 3, "timeout": 30, "fedx-config": "", "reply-timeout": 30.0, "out": ""}
CONNECTION = "fedx-test"


def _processes_mentioning(needles: list[str]) -> dict[int, str]:
    """Living processes whose command line holds one of ``needles`` (ports, paths)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and any(n in cmd for n in needles):
            found[int(entry.name)] = cmd[:160]
    return found


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[deploy.FlowerProcess]]:
    """Processes the test starts; stopped by PID afterwards (SuperNodes first), leaving nothing behind."""
    procs: list[deploy.FlowerProcess] = []
    yield procs
    pids: set[int] = set()
    needles = [str(tmp_path)]
    for p in procs:
        pids |= {p.pid} | deploy.descendant_pids(p.pid)
        needles.append(p.address)  # runtime API of a node, or the SuperLink: on every child's command line
    deploy.stop_all([p for p in procs if p.role == "supernode"])
    deploy.stop_all([p for p in procs if p.role == "superlink"])
    assert all(p.poll() is not None for p in procs)
    assert not deploy.alive_pids(pids), f"left running: {deploy.alive_pids(pids)}"
    leftovers = _processes_mentioning(needles)
    assert not leftovers, f"left running: {leftovers}"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="the leftover check reads /proc (Linux)")
def test_tls_auth_federation_runs_and_refuses_unregistered_node(
    tmp_path: Path, started: list[deploy.FlowerProcess]
) -> None:
    t0 = time.monotonic()
    tls = deploy.make_ca_and_server_cert(tmp_path / "certs")
    assert stat.S_IMODE(tls.server_key.stat().st_mode) == 0o600
    keys = [deploy.make_node_keypair(tmp_path / "keys", f"bank{i}") for i in range(3)]
    rogue_key, _ = deploy.make_node_keypair(tmp_path / "keys", "rogue")

    link = deploy.start_superlink(tmp_path / "superlink", tls=tls, pythonpath=[HERE])
    started.append(link)
    assert link.address.startswith("127.0.0.1:")
    cli_home = tmp_path / "cli-home"
    deploy.write_connection(cli_home, CONNECTION, link.address, root_certificates=tls.ca_cert)
    registered = [deploy.register_node(pub, CONNECTION, cli_home) for _, pub in keys]
    assert len(set(registered)) == 3

    node_files = [str(tmp_path / f"site {i}" / "node.yaml") for i in range(3)]  # a space in the path
    nodes = []
    for i, (private, _) in enumerate(keys):
        node = deploy.start_supernode(
            link.address, node_config={"fedx-node": node_files[i]}, private_key=private,
            root_certificates=tls.ca_cert, flwr_home=tmp_path / f"node{i}" / "flwr-home",
            log_path=tmp_path / f"node{i}" / "supernode.log", pythonpath=[HERE], wait_ready=False)
        started.append(node)
        nodes.append(node)
    rogue = deploy.start_supernode(
        link.address, node_config={"fedx-node": "rogue"}, private_key=rogue_key, root_certificates=tls.ca_cert,
        flwr_home=tmp_path / "rogue" / "flwr-home", log_path=tmp_path / "rogue" / "supernode.log",
        pythonpath=[HERE], wait_ready=False)
    started.append(rogue)
    for node in nodes:
        deploy.wait_supernode_ready(node, timeout=30)
    assert [n.node_id for n in nodes] == registered  # the id was fixed at registration

    # The unregistered key is refused: Flower logs exit code 305; the process exits with status 1.
    with pytest.raises(DeploymentError, match="refused this node's key"):
        deploy.wait_supernode_ready(rogue, timeout=30)
    assert rogue.returncode == 1
    assert rogue.flower_exit_code == 305

    app = deploy.write_app_dir(tmp_path / "app", "pocapp.apps:server_app", "pocapp.apps:client_app",
                               APP_CONFIG, name="pocapp")
    out = tmp_path / "result.json"
    yaml_text = "name: it's \"quoted\"\nfederation:\n  rounds: 3\n"  # multi-line text with both quote kinds
    run_id = deploy.launch_run(app, CONNECTION, {"fedx-config": yaml_text, "out": str(out)}, cli_home,
                               pythonpath=[HERE])
    record = deploy.wait_run(run_id, CONNECTION, cli_home, timeout=90, poll=1.0, superlink=link)
    assert record["status"] == "finished:completed", record

    result = json.loads(out.read_text())
    assert result["errors"] == {}
    assert sorted(result["nodes"]) == sorted(registered)
    replies = result["replies"]
    assert set(replies) == {str(n) for n in registered}
    for node, node_file in zip(nodes, node_files):
        reply = replies[str(node.node_id)]
        assert reply["fedx-node"] == node_file  # context.node_config, from --node-config
        assert reply["echo"] == yaml_text  # context.run_config, from --run-config FILE.toml
    assert "POC result" in deploy.run_logs(run_id, CONNECTION, cli_home)
    # Nothing was installed at run time: the FAB that reached the nodes holds pyproject.toml alone.
    installed = list((tmp_path / "node0" / "flwr-home" / "apps").glob("fedx.pocapp.*"))
    assert installed and sorted(p.name for p in installed[0].iterdir()) == ["pyproject.toml"]
    print(f"deployment test body took {time.monotonic() - t0:.1f} s")
