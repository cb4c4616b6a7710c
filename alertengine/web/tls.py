"""HTTPS for ``serve``: the operator's certificate, or a self-signed one made at first start.

A self-signed certificate is for a first start and for senders that refuse plain HTTP (the official
PagerDuty client does); clients must pin it (its SHA-256 fingerprint is printed at start). In
production, put a certificate from your own CA in ``tls_cert_file`` / ``tls_key_file``, or terminate
TLS at a reverse proxy and list it in ``trusted_proxies``.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..config import Config
from ..errors import ConfigError
from ..ledger.keys import write_private_file

SELF_SIGNED_DAYS = 825  # the longest validity clients generally accept for a server certificate


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    fingerprint: str     # SHA-256 of the certificate (DER), colon-separated hex, as browsers show it
    self_signed: bool


def tls_files(config: Config, data_dir: Path) -> TlsFiles | None:
    """The certificate and key to serve with, or None for plain HTTP. Checks that they load."""
    if config.tls_cert_file:
        cert, key, made = Path(config.tls_cert_file), Path(config.tls_key_file), False
    elif config.tls_self_signed:
        cert, key = data_dir / "tls" / "cert.pem", data_dir / "tls" / "key.pem"
        made = True
        if not (cert.exists() and key.exists()):
            _make_self_signed(cert, key, config.host)
    else:
        return None
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("tls_cert_file", f"cannot use {cert} with {key}: {exc}") from None
    der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return TlsFiles(cert, key, ":".join(f"{b:02X}" for b in digest.finalize()), made)


def _make_self_signed(cert_path: Path, key_path: Path, host: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                     x509.IPAddress(ipaddress.ip_address("::1"))]
    try:
        address = ipaddress.ip_address(host)
        if not address.is_unspecified and address not in (ipaddress.ip_address("127.0.0.1"),
                                                          ipaddress.ip_address("::1")):
            names.append(x509.IPAddress(address))
    except ValueError:
        if host and host != "localhost":
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AlertEngine appliance (self-signed)")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path.parent.mkdir(mode=0o700, exist_ok=True)
    key_bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    for stale in (key_path, cert_path):   # half of a pair (an interrupted first start) is made again
        stale.unlink(missing_ok=True)
    write_private_file(key_path, key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
