"""Certificates with `cryptography`: a local CA and a serving certificate, and the server's TLS context."""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import logging
import os
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from webhook.errors import ConfigError

log = logging.getLogger("webhook.server")

CA_CERT, CA_KEY, TLS_CERT, TLS_KEY = "ca.crt", "ca.key", "tls.crt", "tls.key"
DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")
# TLS 1.2 suites: forward-secret AEAD only (TLS 1.3 suites are fixed by OpenSSL and all strong).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


@dataclass(frozen=True, slots=True)
class ServingFiles:
    ca_cert: Path
    cert: Path
    key: Path
    generated: bool

    def ca_bundle(self) -> str:
        """The base64 PEM of the CA, as a webhook configuration's `caBundle` wants it."""
        return base64.b64encode(self.ca_cert.read_bytes()).decode()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def write_file(path: Path, data: bytes, *, private: bool = False) -> None:
    """Replace a file atomically (a watcher never reads half of it); private files are created 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def _write_private(path: Path, data: bytes) -> None:
    write_file(path, data, private=True)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _subject_alternative_names(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
KEY_ALGORITHMS = ("ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072")


def new_key(algorithm: str = "ecdsa-p256") -> PrivateKey:
    if algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "ecdsa-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if algorithm in ("rsa-2048", "rsa-3072"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(algorithm[4:]))
    raise ConfigError(f"unknown key algorithm {algorithm!r}; use one of {', '.join(KEY_ALGORITHMS)}")


def generate_ca(*, common_name: str | None = None, days: int = 3650, algorithm: str = "ecdsa-p256"
                ) -> tuple[x509.Certificate, PrivateKey]:
    """A CA of its own name (dated, so that an old and a new CA in one bundle can be told apart)."""
    key = new_key(algorithm)
    now = _now()
    name = x509.Name([x509.NameAttribute(
        NameOID.COMMON_NAME, common_name or f"webhook CA {now:%Y-%m-%dT%H:%M:%S}.{now.microsecond:06d}Z")])
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def generate_serving(*, ca_cert: x509.Certificate, ca_key: PrivateKey, names: list[str], days: int = 365,
                     algorithm: str = "ecdsa-p256", client: bool = False) -> tuple[x509.Certificate, PrivateKey]:
    """A leaf for `names` (the first is the common name): serving by default, client auth with `client`."""
    key = new_key(algorithm)
    now = _now()
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if not client:
        builder = builder.add_extension(_subject_alternative_names(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _covers(certificate: x509.Certificate, names: list[str]) -> bool:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    present = {str(v) for v in san.get_values_for_type(x509.DNSName)}
    present |= {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    return all(str(ipaddress.ip_address(n)) in present if _is_ip(n) else n in present for n in names)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def load_private_key(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigError(f"{path}: expected an ECDSA or RSA private key")
    return key


def same_key(certificate: x509.Certificate, key: PrivateKey) -> bool:
    return certificate.public_key() == key.public_key()


def load_signing_ca(cert_dir: Path) -> tuple[x509.Certificate, PrivateKey]:
    """The CA whose key is `ca.key`, out of the bundle `ca.crt` (which holds two CAs during a rotation)."""
    key = load_private_key(cert_dir / CA_KEY)
    for certificate in x509.load_pem_x509_certificates((cert_dir / CA_CERT).read_bytes()):
        if same_key(certificate, key):
            return certificate, key
    raise ConfigError(f"{cert_dir / CA_KEY} belongs to no certificate in {cert_dir / CA_CERT}")


def ensure_self_signed(cert_dir: Path, *, dns_names: list[str], renew_within_days: int = 30) -> ServingFiles:
    """Reuse the CA and serving certificate in `cert_dir`, or create them; renew a leaf that is about to expire.

    The CA is kept across runs so that a `caBundle` already pasted into a webhook configuration stays valid.
    """
    names = list(dict.fromkeys([*DEFAULT_NAMES, *dns_names]))
    ca_cert_path, ca_key_path = cert_dir / CA_CERT, cert_dir / CA_KEY
    cert_path, key_path = cert_dir / TLS_CERT, cert_dir / TLS_KEY
    generated = False
    try:
        if ca_cert_path.exists() and ca_key_path.exists():
            ca_cert, ca_key = load_signing_ca(cert_dir)
        else:
            ca_cert, ca_key = generate_ca()
            _write_private(ca_key_path, _key_pem(ca_key))
            write_file(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM))
            generated = True
        fresh = False
        if cert_path.exists() and key_path.exists() and not generated:
            leaf = x509.load_pem_x509_certificate(cert_path.read_bytes())
            remaining = leaf.not_valid_after_utc - _now()
            fresh = (remaining > datetime.timedelta(days=renew_within_days) and _covers(leaf, names)
                     and leaf.issuer == ca_cert.subject)
        if not fresh:
            leaf, leaf_key = generate_serving(ca_cert=ca_cert, ca_key=ca_key, names=names)
            _write_private(key_path, _key_pem(leaf_key))
            write_file(cert_path, leaf.public_bytes(serialization.Encoding.PEM))
            generated = True
    except (ValueError, OSError) as error:
        raise ConfigError(f"cannot prepare certificates in {cert_dir}: {error}") from error
    return ServingFiles(ca_cert_path, cert_path, key_path, generated)


def server_tls_context(*, cert_file: Path, key_file: Path, client_ca_file: Path | None = None) -> ssl.SSLContext:
    """TLS 1.2 or newer, forward-secret AEAD ciphers only, no compression, no renegotiation.

    With a client CA, a client certificate is asked for and verified against it when presented; it is not
    required at the TLS layer (kubelet probes have none): the admission endpoints require it (server.py).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    if hasattr(ssl, "OP_NO_RENEGOTIATION"):
        context.options |= ssl.OP_NO_RENEGOTIATION
    try:
        context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    except (ssl.SSLError, OSError) as error:
        raise ConfigError(f"cannot load TLS certificate {cert_file} with key {key_file}: {error}") from error
    if client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(client_ca_file))
        except (ssl.SSLError, OSError) as error:
            raise ConfigError(f"cannot load client CA {client_ca_file}: {error}") from error
        context.verify_mode = ssl.CERT_OPTIONAL
    serving_contexts(cert_file, key_file).append(context)
    return context


# The contexts this process serves with, by the files they were loaded from, so that CertificateWatcher can
# load renewed files into them (an SSLContext already bound to a listening socket cannot be swapped, but it
# can be reloaded in place: new handshakes get the new certificate, established connections keep theirs).
_SERVING_CONTEXTS: dict[tuple[str, str], list[ssl.SSLContext]] = {}


def serving_contexts(cert_file: Path, key_file: Path) -> list[ssl.SSLContext]:
    return _SERVING_CONTEXTS.setdefault((str(cert_file.absolute()), str(key_file.absolute())), [])


def uvicorn_tls_context(config: Any, default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """uvicorn's `ssl_context_factory`: our TLS settings over the files uvicorn was given."""
    client_ca = Path(config.ssl_ca_certs) if config.ssl_ca_certs else None
    return server_tls_context(cert_file=Path(config.ssl_certfile), key_file=Path(config.ssl_keyfile),
                              client_ca_file=client_ca)


def certificate_expiry(path: Path) -> float:
    """The first certificate's notAfter as Unix time (0 when the file cannot be read)."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc.timestamp()
    except (OSError, ValueError):
        return 0.0


def _stamp(path: Path) -> tuple[int, int, float, int]:
    """Identity of what a path points at now (a Secret volume swaps a symlink, cert-manager rewrites)."""
    stat = path.stat()  # follows symlinks
    return stat.st_ino, stat.st_dev, stat.st_mtime, stat.st_size


def _validity_problem(leaf: x509.Certificate) -> str | None:
    """Why `leaf` is not valid now (five minutes of clock skew allowed before its start), or None."""
    now = _now()
    if leaf.not_valid_after_utc <= now or leaf.not_valid_before_utc > now + datetime.timedelta(minutes=5):
        return (f"the certificate is valid only from {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} "
                f"to {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    return None


class CertificateWatcher:
    """Reloads the serving certificate and key when their files change, without a restart.

    The pair is read once into memory and checked in a scratch context first, so a half-written or
    mismatched pair (garbage, a key from another certificate) is refused and the last good one keeps serving.
    """

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self.contexts = serving_contexts(cert_file, key_file)
        self.problem: str | None = None
        with contextlib.suppress(OSError, ValueError):
            outside = _validity_problem(x509.load_pem_x509_certificate(cert_file.read_bytes()))
            if outside is not None:  # served (there is no other), and said where operators look
                self.problem = f"serving certificate {cert_file} is not valid now: {outside}"
                log.warning("%s; verifying clients, the API server included, will refuse it", self.problem)
        self.reloads = 0
        self._stamps: tuple[tuple[int, int, float, int], ...] | None = None
        with contextlib.suppress(OSError):
            self._stamps = (_stamp(cert_file), _stamp(key_file))

    def check(self) -> bool:
        """Reload when the files changed; True when a new pair is now served."""
        try:
            stamps = (_stamp(self.cert_file), _stamp(self.key_file))
        except OSError as error:
            self.problem = f"cannot read the serving certificate: {error}"
            return False
        if stamps == self._stamps:
            return False
        self._stamps = stamps
        try:
            cert_pem, key_pem = self.cert_file.read_bytes(), self.key_file.read_bytes()
            outside = _validity_problem(x509.load_pem_x509_certificate(cert_pem))
            if outside is not None:
                raise ValueError(outside)
            with tempfile.TemporaryDirectory(prefix="webhook-tls-") as scratch:
                cert_copy, key_copy = Path(scratch) / TLS_CERT, Path(scratch) / TLS_KEY
                cert_copy.write_bytes(cert_pem)
                _write_private(key_copy, key_pem)
                probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                probe.load_cert_chain(certfile=str(cert_copy), keyfile=str(key_copy))
                for context in self.contexts:
                    context.load_cert_chain(certfile=str(cert_copy), keyfile=str(key_copy))
        except (ssl.SSLError, OSError, ValueError) as error:
            self.problem = f"serving certificate {self.cert_file} not reloaded (keeping the last good one): {error}"
            return False
        self.problem = None
        self.reloads += 1
        return True
