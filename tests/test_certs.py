"""`webhook certs`: generate, rotate (the three CA steps) and inspect, on real files."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from webhook.cli import main


def _certs(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_generate_for_a_service_with_private_keys(tmp_path: Path) -> None:
    assert main(["certs", "generate", "--dir", str(tmp_path), "--service", "webhook", "--namespace", "infra"]) == 0
    (leaf,) = _certs(tmp_path / "tls.crt")
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)
    assert names[:2] == ["webhook.infra.svc", "webhook.infra.svc.cluster.local"]
    assert leaf.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    for key in ("ca.key", "tls.key"):
        assert stat.S_IMODE((tmp_path / key).stat().st_mode) == 0o600
    assert main(["certs", "generate", "--dir", str(tmp_path), "--service", "webhook"]) == 2  # no overwrite


def test_generate_rsa_and_lifetimes(tmp_path: Path) -> None:
    assert main(["certs", "generate", "--dir", str(tmp_path), "--dns-name", "hook.example", "--days", "10",
                 "--ca-days", "20", "--key-algorithm", "rsa-2048"]) == 0
    (leaf,) = _certs(tmp_path / "tls.crt")
    (ca,) = _certs(tmp_path / "ca.crt")
    assert leaf.public_key().key_size == 2048  # type: ignore[union-attr]
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days == 10
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days == 20


def test_secret_manifest(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["certs", "generate", "--dir", str(tmp_path / "unused"), "--service", "webhook", "--namespace",
                 "infra", "--secret-manifest", "webhook-tls"]) == 0
    secret = yaml.safe_load(capsys.readouterr().out)
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"] == {"name": "webhook-tls", "namespace": "infra"}
    assert sorted(secret["data"]) == ["ca.crt", "tls.crt", "tls.key"]
    assert b"PRIVATE KEY" in base64.b64decode(secret["data"]["tls.key"])
    assert not (tmp_path / "unused").exists()


def test_ca_rotation_steps_and_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = str(tmp_path)
    assert main(["certs", "generate", "--dir", directory, "--service", "webhook"]) == 0
    (old_ca,) = _certs(tmp_path / "ca.crt")
    old_leaf = (tmp_path / "tls.crt").read_bytes()

    assert main(["certs", "rotate", "--dir", directory, "--ca"]) == 0  # step 1: bundle grows, leaf unchanged
    new_ca, kept = _certs(tmp_path / "ca.crt")
    assert kept == old_ca
    assert new_ca != old_ca
    assert (tmp_path / "tls.crt").read_bytes() == old_leaf
    assert main(["certs", "inspect", "--dir", directory]) == 0

    assert main(["certs", "rotate", "--dir", directory]) == 0  # step 2: leaf from the new CA, same names
    (leaf,) = _certs(tmp_path / "tls.crt")
    assert leaf.issuer == new_ca.subject
    assert "webhook.default.svc" in [str(n) for n in leaf.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)]

    assert main(["certs", "rotate", "--dir", directory, "--drop-old-cas"]) == 0  # step 3
    assert _certs(tmp_path / "ca.crt") == [new_ca]
    capsys.readouterr()
    assert main(["certs", "inspect", "--dir", directory]) == 0
    out = capsys.readouterr().out
    assert f"chain:   signed by {new_ca.subject.rfc4514_string()}" in out
    assert "problem" not in out


def test_inspect_reports_broken_chain_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "generate", "--dir", str(tmp_path / "a"), "--service", "a"]) == 0
    assert main(["certs", "generate", "--dir", str(tmp_path / "b"), "--service", "b"]) == 0
    (tmp_path / "a" / "ca.crt").write_bytes((tmp_path / "b" / "ca.crt").read_bytes())
    (tmp_path / "a" / "tls.key").write_bytes((tmp_path / "b" / "tls.key").read_bytes())
    capsys.readouterr()
    assert main(["certs", "inspect", "--dir", str(tmp_path / "a")]) == 1
    out = capsys.readouterr().out
    assert "problem: tls.crt is signed by no CA in ca.crt" in out
    assert "problem: tls.key does not belong to tls.crt" in out
    assert "problem: ca.key belongs to no CA in ca.crt" in out


def test_inspect_warns_before_expiry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "generate", "--dir", str(tmp_path), "--service", "w", "--days", "5"]) == 0
    capsys.readouterr()
    assert main(["certs", "inspect", "--dir", str(tmp_path)]) == 1
    assert "expires within 30 days" in capsys.readouterr().out
