"""TLS material: a private CA with the SuperLink's certificate, and SuperNode authentication keys."""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ...errors import DeploymentError
from .environment import _NAME


@dataclass(frozen=True)
class TLSFiles:
    """The PEM files of a private CA and of the SuperLink's server certificate.

    Attributes
    ----------
    ca_cert : Path
        The CA certificate: give it to every SuperNode (``--root-certificates``) and to the
        ``flwr`` CLI connection (``root-certificates``), and to the SuperLink (``--ssl-ca-certfile``).
    ca_key : Path
        The CA's private key (mode 0600). Keep it offline; it signs server certificates only.
    server_cert : Path
        The SuperLink's certificate (``--ssl-certfile``), valid for the hosts it was made for.
    server_key : Path
        The SuperLink's private key (``--ssl-keyfile``, mode 0600).
    """

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    def check(self) -> None:
        """Raise :class:`DeploymentError` naming the first file that the SuperLink needs and lacks."""
        for label, path in (("CA certificate", self.ca_cert), ("server certificate", self.server_cert),
                            ("server key", self.server_key)):
            if not Path(path).is_file():
                raise DeploymentError(f"TLS {label} not found: {path} (make one with make_ca_and_server_cert)")


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def _refuse_overwrite(paths: Iterable[Path], overwrite: bool) -> None:
    if overwrite:
        return
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise DeploymentError(
            f"refusing to overwrite existing key material: {', '.join(existing)} "
            "(pass overwrite=True, or choose another folder)"
        )


def make_ca_and_server_cert(
    out_dir: str | os.PathLike[str],
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    days: int = 365,
    *,
    overwrite: bool = False,
) -> TLSFiles:
    """Make a private CA and a SuperLink server certificate signed by it (EC P-384, SHA-256).

    Parameters
    ----------
    out_dir : path
        Folder for ``ca.crt``, ``ca.key``, ``server.pem`` and ``server.key`` (keys mode 0600).
    hosts : sequence of str
        Names the SuperNodes will dial: IP addresses become IP subject-alternative names, anything
        else a DNS name. The SuperLink's own SuperExec dials ``127.0.0.1`` when it binds there, so
        keep ``127.0.0.1`` in the list for a loopback SuperLink.
    days : int
        Validity of both certificates, from now (backdated five minutes for clock skew).
    overwrite : bool
        Replace existing files. Off by default: a new CA invalidates every ``ca.crt`` handed out.

    Returns
    -------
    TLSFiles
        The four paths.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if isinstance(hosts, str):
        hosts = (hosts,)
    if not hosts:
        raise DeploymentError("make_ca_and_server_cert: hosts is empty; expected at least one name or IP")
    if not isinstance(days, int) or days < 1:
        raise DeploymentError(f"make_ca_and_server_cert: days must be a positive integer, got {days!r}")
    out = Path(out_dir)
    files = TLSFiles(out / "ca.crt", out / "ca.key", out / "server.pem", out / "server.key")
    _refuse_overwrite((files.ca_cert, files.ca_key, files.server_cert, files.server_key), overwrite)

    san: list[x509.GeneralName] = []
    for host in hosts:
        try:
            san.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not host or any(c.isspace() for c in host):
                raise DeploymentError(f"make_ca_and_server_cert: invalid host name {host!r}") from None
            san.append(x509.DNSName(host))

    now = _dt.datetime.now(_dt.timezone.utc)
    start, end = now - _dt.timedelta(minutes=5), now + _dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedx"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "fedx federation CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedx"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    plain = serialization.NoEncryption()
    out.mkdir(parents=True, exist_ok=True)
    files.ca_cert.write_bytes(ca_cert.public_bytes(pem))
    _write_private(files.ca_key, ca_key.private_bytes(pem, pkcs8, plain))
    files.server_cert.write_bytes(server_cert.public_bytes(pem))
    _write_private(files.server_key, server_key.private_bytes(pem, pkcs8, plain))
    return files


def make_node_keypair(
    out_dir: str | os.PathLike[str], name: str, *, overwrite: bool = False
) -> tuple[Path, Path]:
    """Make a SuperNode authentication key pair: EC P-384, OpenSSH format.

    Parameters
    ----------
    out_dir : path
        Folder for ``NAME.key`` (private, mode 0600, for ``--auth-supernode-private-key``) and
        ``NAME.pub`` (``ecdsa-sha2-nistp384 AAAA...``, for ``flwr supernode register``).
    name : str
        Letters, digits, ``-`` and ``_``; usually the institution's name.
    overwrite : bool
        Replace an existing pair. A new key is a new identity: register it again.

    Returns
    -------
    tuple of Path
        ``(private_path, public_path)``.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(name, str) or not _NAME.match(name):
        raise DeploymentError(f"make_node_keypair: invalid key name {name!r}; expected letters, digits, '-' or '_'")
    out = Path(out_dir)
    private_path, public_path = out / f"{name}.key", out / f"{name}.pub"
    _refuse_overwrite((private_path, public_path), overwrite)
    key = ec.generate_private_key(ec.SECP384R1())
    _write_private(private_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                   serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    public_path.write_bytes(public + f" fedx-{name}\n".encode())
    return private_path, public_path

