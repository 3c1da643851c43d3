"""Fast checks of the deployment file helpers against Flower's own readers (no processes started)."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

from fedx.errors import DeploymentError
from fedx.flower import deploy

# importing the flwr CLI pulls in typer, which uses deprecated click helpers
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:typer")


def test_server_certificate_is_signed_by_ca_and_names_loopback(tmp_path: Path) -> None:
    from cryptography import x509

    tls = deploy.make_ca_and_server_cert(tmp_path, hosts=("127.0.0.1", "localhost", "link.example"), days=3)
    ca = x509.load_pem_x509_certificate(tls.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(tls.server_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "link.example"}
    assert oct(tls.ca_key.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(DeploymentError, match="refusing to overwrite"):
        deploy.make_ca_and_server_cert(tmp_path)


def test_node_keys_load_with_flowers_own_loaders(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key
    from flwr.cli.supernode.register import try_load_public_key

    private, public = deploy.make_node_keypair(tmp_path, "bank-a")
    key = load_ssh_private_key(private.read_bytes(), None)  # what flower-supernode does
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert public.read_text().startswith("ecdsa-sha2-nistp384 ")
    assert try_load_public_key(public).startswith(b"-----BEGIN PUBLIC KEY-----")  # what `flwr supernode register` does
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(DeploymentError, match="invalid key name"):
        deploy.make_node_keypair(tmp_path, "../evil")


@pytest.mark.parametrize("value", ["/srv/site a/node.yaml", "it's", 'say "hi"', "a: 1\nb: [x]\n", 3, 2.5, True])
def test_node_config_round_trips_through_flowers_parser(value: object) -> None:
    from flwr.common.config import parse_config_args

    text = deploy.format_config_args({"fedx-node": value, "other": 1})
    assert parse_config_args([text]) == {"fedx-node": value, "other": 1}


def test_node_config_refuses_what_flower_cannot_carry() -> None:
    with pytest.raises(DeploymentError, match="fedx-node"):
        deploy.format_config_args({"fedx-node": "it's \"both\""})
    with pytest.raises(DeploymentError, match="invalid key"):
        deploy.format_config_args({"bad key": 1})


def test_app_dir_is_a_valid_flower_app(tmp_path: Path) -> None:
    from flwr.cli.config_utils import load_and_validate

    app = deploy.write_app_dir(tmp_path / "app", config={"fedx-config": "", "rounds": 3})
    config, warnings = load_and_validate(app / "pyproject.toml", check_module=False)
    assert config["tool"]["flwr"]["app"]["components"] == {
        "serverapp": "fedx.flower.apps:server_app", "clientapp": "fedx.flower.apps:client_app"}
    assert config["tool"]["flwr"]["app"]["config"] == {"fedx-config": "", "rounds": 3}
    assert warnings == []
    (app / "notes.md").write_text("secret")
    with pytest.raises(DeploymentError, match="notes.md"):
        deploy.write_app_dir(app)
    with pytest.raises(DeploymentError, match="server_component"):
        deploy.write_app_dir(tmp_path / "other", server_component="no_colon")


def test_connection_is_read_by_the_flwr_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.cli.flower_config import read_superlink_connection

    ca = deploy.make_ca_and_server_cert(tmp_path / "certs").ca_cert
    deploy.write_connection(tmp_path / "home", "fx", "127.0.0.1:9999", root_certificates=ca)
    deploy.write_connection(tmp_path / "home", "demo", "127.0.0.1:9998", insecure=True, make_default=False)
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "home"))
    conn = read_superlink_connection(None)  # the default one
    assert (conn.name, conn.address, conn.root_certificates, conn.insecure) == ("fx", "127.0.0.1:9999", str(ca), False)
    assert read_superlink_connection("demo").insecure is True
    text = (tmp_path / "home" / "config.toml").read_text()
    assert ":local:" not in text  # no background-SuperLink default
    with pytest.raises(DeploymentError, match="root_certificates"):
        deploy.write_connection(tmp_path / "home", "x", "127.0.0.1:1")


def test_child_env_is_quiet_and_private(tmp_path: Path) -> None:
    env = deploy.child_env(tmp_path, pythonpath=[tmp_path / "code"], extra={"FLWR_TELEMETRY_ENABLED": "1"})
    assert env["FLWR_TELEMETRY_ENABLED"] == "0"
    assert env["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    assert env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"
    assert env["FLWR_HOME"] == str(tmp_path.resolve())
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str((tmp_path / "code").resolve())


def test_busy_port_and_missing_certificate_are_clear_errors(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(DeploymentError, match=f"port {port} on 127.0.0.1 is not available"):
            deploy.start_superlink(tmp_path, insecure=True, port=port)
    tls = deploy.TLSFiles(tmp_path / "ca.crt", tmp_path / "ca.key", tmp_path / "s.pem", tmp_path / "s.key")
    with pytest.raises(DeploymentError, match="CA certificate not found"):
        deploy.start_superlink(tmp_path, tls=tls)
    with pytest.raises(DeploymentError, match="TLS certificates are required"):
        deploy.start_superlink(tmp_path)
    with pytest.raises(DeploymentError, match="insecure=True is for localhost demos only"):
        deploy.start_supernode("127.0.0.1:1", node_config={}, flwr_home=tmp_path, log_path=tmp_path / "n.log")
