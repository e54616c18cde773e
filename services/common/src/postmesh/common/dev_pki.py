"""A throwaway CA and one certificate per service for the internal gRPC mTLS (ADR 10), so
`make run` and the integration tests run the secure default with no set-up. Production gets
its certificates from Secrets or cert-manager (the Helm chart); nothing here is used there."""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from postmesh.common.grpc_security import GrpcSecurity, identity_name


@dataclass(frozen=True)
class ServiceCert:
    cert: Path
    key: Path
    ca: Path

    def env(self) -> dict[str, str]:
        """The POSTMESH_GRPC_TLS_* settings that point a service at these files."""
        return {
            "POSTMESH_GRPC_TLS_CERT_FILE": str(self.cert),
            "POSTMESH_GRPC_TLS_KEY_FILE": str(self.key),
            "POSTMESH_GRPC_TLS_CA_FILE": str(self.ca),
        }

    def security(self) -> GrpcSecurity:
        return GrpcSecurity.from_files(self.cert, self.key, self.ca)


def _write(path: Path, data: bytes) -> None:
    # Temporary name and rename: a reader never sees half a file.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o600)
    tmp.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ensure_ca(directory: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert_path, ca_key_path = directory / "ca.pem", directory / "ca-key.pem"
    now = datetime.datetime.now(datetime.UTC)
    if ca_cert_path.exists() and ca_key_path.exists():
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(_name("Postmesh development CA"))
            .issuer_name(_name("Postmesh development CA"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write(ca_key_path, _key_pem(ca_key))
        _write(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM))
    return ca_key, ca_cert


def ensure_dev_pki(directory: Path, services: Iterable[str]) -> dict[str, ServiceCert]:
    """The CA in ``directory`` (made once) and a certificate for each of ``services`` (made
    when missing), each naming ``identity_name(service)`` in its subjectAltName."""
    ca_key, ca_cert = _ensure_ca(directory)
    ca_cert_path = directory / "ca.pem"
    now = datetime.datetime.now(datetime.UTC)
    out = {}
    for service in services:
        cert_path, key_path = directory / f"{service}.pem", directory / f"{service}-key.pem"
        if not (cert_path.exists() and key_path.exists()):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = (
                x509.CertificateBuilder()
                .subject_name(_name(identity_name(service)))
                .issuer_name(ca_cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=825))
                .add_extension(
                    x509.SubjectAlternativeName([x509.DNSName(identity_name(service))]),
                    critical=False,
                )
                # Every service is a server (store, auth) or a client (the rest), or both.
                .add_extension(
                    x509.ExtendedKeyUsage(
                        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                    ),
                    critical=False,
                )
                .sign(ca_key, hashes.SHA256())
            )
            _write(key_path, _key_pem(key))
            _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        out[service] = ServiceCert(cert_path, key_path, ca_cert_path)
    return out


def ensure_server_cert(
    directory: Path, name: str, dns_names: Iterable[str], ip_addresses: Iterable[str] = ()
) -> ServiceCert:
    """A TLS server certificate from the same throwaway CA, for a test's Kafka broker or
    MongoDB-wire server: ``<name>.pem`` (the certificate), ``<name>-key.pem`` (PKCS#8 key)."""
    ca_key, ca_cert = _ensure_ca(directory)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    if not (cert_path.exists() and key_path.exists()):
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        alt_names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        alt_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write(key_path, _key_pem(key))
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return ServiceCert(cert_path, key_path, directory / "ca.pem")
