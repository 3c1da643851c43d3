"""`fedx node` against a real SuperLink (TLS, node authentication) on 127.0.0.1: a node started before its
key is registered waits and then joins; a wrong CA certificate and a node without TLS each end the node
with their own message. (The decisions are unit-tested in test_node_start.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fedx_deploy_support import Processes, wait_for

from fedx.flower import deploy

pytestmark = [pytest.mark.deployment, pytest.mark.slow, pytest.mark.timeout(400),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:typer")]


def site(folder: Path, address: str, ca: Path, *, insecure: bool = False) -> Path:
    folder.mkdir(parents=True)
    deploy.make_node_keypair(folder, "site")
    (folder / "ca.crt").write_bytes(ca.read_bytes())
    (folder / "data.csv").write_text("x,label\n1,0\n2,1\n")
    doc = {"name": "site", "data": "data.csv", "out_dir": "out",
           "superlink": {"address": address, "root_certificates": "ca.crt", "auth_key": "site.key",
                         "insecure": insecure}}
    (folder / "node.yaml").write_text(yaml.safe_dump(doc))
    return folder


def test_a_node_waits_for_its_key_and_tls_failures_are_named(tmp_path: Path, processes: Processes) -> None:
    tls = deploy.make_ca_and_server_cert(tmp_path / "certs")
    other = deploy.make_ca_and_server_cert(tmp_path / "other-ca")
    superlink = deploy.start_superlink(tmp_path / "server", tls=tls)
    try:
        home = tmp_path / "cli"
        deploy.write_connection(home, "fedx", superlink.address, root_certificates=tls.ca_cert)
        early = site(tmp_path / "early", superlink.address, tls.ca_cert)
        wrong_ca = site(tmp_path / "wrong-ca", superlink.address, other.ca_cert)
        plain = site(tmp_path / "plain", superlink.address, tls.ca_cert, insecure=True)
        node = processes.start("early", ["node", "--config", "node.yaml", "--retry-for", "180"], early)
        bad_ca = processes.start("wrong-ca", ["node", "--config", "node.yaml"], wrong_ca)
        no_tls = processes.start("plain", ["node", "--config", "node.yaml", "--retry-for", "120"], plain)

        out = early / "early.out"
        wait_for(lambda: "does not know this node's key yet" in out.read_text(), 120, "the node to wait for its key")
        assert node.poll() is None
        deploy.register_node(early / "site.pub", "fedx", home, name="site")
        wait_for(lambda: "connected to the server as node" in out.read_text(), 120, "the node to join")
        assert node.poll() is None

        assert bad_ca.wait(timeout=120) == 2
        said = (wrong_ca / "wrong-ca.out").read_text()
        assert "does not verify against" in said and "--root-certificates" in said
        assert "refused this node's key" not in said
        assert no_tls.wait(timeout=120) == 2
        assert "speaks TLS, but this node runs without it" in (plain / "plain.out").read_text()

        for log in (superlink.log_path, early / "out" / "supernode.log"):
            assert "\x1b[" not in log.read_text(), log
    finally:
        processes.stop_all()
        deploy.stop(superlink)
