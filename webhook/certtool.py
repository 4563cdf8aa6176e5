"""`webhook certs generate | rotate | inspect`: certificates for running in a cluster.

A directory holds `ca.crt` (the CA bundle: what goes into a webhook configuration's `caBundle`), `ca.key`
(the key of the CA that signs now), `tls.crt` and `tls.key` (the serving pair). Rotating the CA is three
steps so that no request fails, whatever order the API server and the server pick up changes in:

1. `rotate --ca`: a new CA is added to the bundle (new first, old kept) and becomes the signing CA; the
   serving certificate is left alone. Give the API server the new bundle (`webhook register`, the chart).
2. `rotate`: a new serving certificate signed by the new CA; the server reloads it without a restart.
   Clients trusting the two-CA bundle accept the old and the new serving certificate.
3. `rotate --drop-old-cas`: the bundle keeps only the signing CA; give the API server the bundle again.
"""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from webhook.certs import (
    CA_CERT,
    CA_KEY,
    TLS_CERT,
    TLS_KEY,
    PrivateKey,
    generate_ca,
    generate_serving,
    load_private_key,
    load_signing_ca,
    same_key,
    write_file,
)
from webhook.errors import ConfigError

PEM = serialization.Encoding.PEM


def service_names(service: str, namespace: str, extra: list[str]) -> list[str]:
    """The names the API server uses for a Service (`NAME.NAMESPACE.svc` first), then extra names."""
    names = [f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local", f"{service}.{namespace}",
             service, *extra]
    return list(dict.fromkeys(names))


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@dataclass(frozen=True, slots=True)
class Generated:
    ca_bundle: bytes
    ca_key: bytes
    cert: bytes
    key: bytes

    def write(self, directory: Path) -> None:
        write_file(directory / CA_KEY, self.ca_key, private=True)
        write_file(directory / CA_CERT, self.ca_bundle)
        write_file(directory / TLS_KEY, self.key, private=True)
        write_file(directory / TLS_CERT, self.cert)

    def secret_manifest(self, *, name: str, namespace: str) -> str:
        """A `kubernetes.io/tls` Secret with `ca.crt` (the CA key stays out of the cluster)."""
        data = {key: base64.b64encode(value).decode() for key, value in
                (("tls.crt", self.cert), ("tls.key", self.key), ("ca.crt", self.ca_bundle))}
        return yaml.safe_dump({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                               "metadata": {"name": name, "namespace": namespace}, "data": data}, sort_keys=False)


def generate(*, names: list[str], ca_days: int, days: int, algorithm: str) -> Generated:
    ca_cert, ca_key = generate_ca(days=ca_days, algorithm=algorithm)
    leaf, leaf_key = generate_serving(ca_cert=ca_cert, ca_key=ca_key, names=names, days=days, algorithm=algorithm)
    return Generated(ca_cert.public_bytes(PEM), _key_pem(ca_key), leaf.public_bytes(PEM), _key_pem(leaf_key))


def _bundle(directory: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates((directory / CA_CERT).read_bytes())
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read the CA bundle {directory / CA_CERT}: {error}") from error


def _names_of(certificate: x509.Certificate) -> list[str]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*(str(n) for n in san.get_values_for_type(x509.DNSName)),
            *(str(n) for n in san.get_values_for_type(x509.IPAddress))]


def rotate(directory: Path, *, new_ca: bool = False, drop_old_cas: bool = False, ca_days: int = 3650,
           days: int = 365, algorithm: str = "ecdsa-p256", names: list[str] | None = None) -> str:
    """One rotation step (see the module text); returns what was done, for the operator."""
    bundle = _bundle(directory)
    if new_ca:
        ca_cert, ca_key = generate_ca(days=ca_days, algorithm=algorithm)
        write_file(directory / CA_KEY, _key_pem(ca_key), private=True)
        write_file(directory / CA_CERT, b"".join(c.public_bytes(PEM) for c in [ca_cert, *bundle]))
        return (f"new CA {ca_cert.subject.rfc4514_string()} added to {directory / CA_CERT} ({len(bundle) + 1} CAs); "
                "give the API server this bundle, then run `webhook certs rotate` for a serving certificate "
                "signed by it")
    signing_cert, signing_key = load_signing_ca(directory)
    if drop_old_cas:
        write_file(directory / CA_CERT, signing_cert.public_bytes(PEM))
        return f"{len(bundle) - 1} old CAs dropped from {directory / CA_CERT}; give the API server this bundle"
    if names is None:
        try:
            names = _names_of(x509.load_pem_x509_certificate((directory / TLS_CERT).read_bytes()))
        except (OSError, ValueError) as error:
            raise ConfigError(f"cannot read {directory / TLS_CERT} for its names (give --service or "
                              f"--dns-name): {error}") from error
    if not names:
        raise ConfigError("no names for the serving certificate: give --service/--namespace or --dns-name")
    leaf, leaf_key = generate_serving(ca_cert=signing_cert, ca_key=signing_key, names=names, days=days,
                                      algorithm=algorithm)
    write_file(directory / TLS_KEY, _key_pem(leaf_key), private=True)
    write_file(directory / TLS_CERT, leaf.public_bytes(PEM))
    return (f"new serving certificate for {', '.join(names)} signed by {signing_cert.subject.rfc4514_string()}, "
            f"valid until {leaf.not_valid_after_utc:%Y-%m-%d}; a running server reloads it")


def _describe(certificate: x509.Certificate, now: datetime.datetime) -> list[str]:
    left = certificate.not_valid_after_utc - now
    lines = [f"  subject: {certificate.subject.rfc4514_string()}",
             f"  issuer:  {certificate.issuer.rfc4514_string()}",
             f"  valid:   {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} to "
             f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC ({left.days} days left)"]
    names = _names_of(certificate)
    if names:
        lines.append(f"  names:   {', '.join(names)}")
    return lines


def inspect(directory: Path, *, renew_within_days: int = 30, now: datetime.datetime | None = None
            ) -> tuple[list[str], list[str]]:
    """(description lines, problems): subjects, names, expiry, and whether the chain and the keys hold."""
    moment = now or datetime.datetime.now(datetime.UTC)
    lines: list[str] = []
    problems: list[str] = []
    bundle = _bundle(directory)
    for index, ca in enumerate(bundle):
        lines.append(f"{CA_CERT} [{index}]:")
        lines.extend(_describe(ca, moment))
        if ca.not_valid_after_utc <= moment:
            problems.append(f"{CA_CERT} [{index}] expired")
    if (directory / CA_KEY).exists():
        key = load_private_key(directory / CA_KEY)
        if not any(same_key(ca, key) for ca in bundle):
            problems.append(f"{CA_KEY} belongs to no CA in {CA_CERT}")
    try:
        leaf = x509.load_pem_x509_certificate((directory / TLS_CERT).read_bytes())
    except (OSError, ValueError) as error:
        problems.append(f"cannot read {TLS_CERT}: {error}")
        return lines, problems
    lines.append(f"{TLS_CERT}:")
    lines.extend(_describe(leaf, moment))
    issuers = [ca for ca in bundle if _issued_by(leaf, ca)]
    if issuers:
        lines.append(f"  chain:   signed by {issuers[0].subject.rfc4514_string()} (in {CA_CERT})")
    else:
        problems.append(f"{TLS_CERT} is signed by no CA in {CA_CERT}: clients trusting the bundle refuse it")
    if leaf.not_valid_after_utc <= moment:
        problems.append(f"{TLS_CERT} expired")
    elif leaf.not_valid_after_utc - moment < datetime.timedelta(days=renew_within_days):
        problems.append(f"{TLS_CERT} expires within {renew_within_days} days: run `webhook certs rotate`")
    if (directory / TLS_KEY).exists() and not same_key(leaf, load_private_key(directory / TLS_KEY)):
        problems.append(f"{TLS_KEY} does not belong to {TLS_CERT}")
    return lines, problems


def _issued_by(leaf: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
