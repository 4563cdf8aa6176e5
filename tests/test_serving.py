"""Serving: certificates reloaded under a stream of requests, client authentication (mTLS, bearer)."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import threading
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.helpers import TEST_POLICIES, client_context, pod, review, running_server, wait_for
from webhook.certs import generate_ca, generate_serving
from webhook.cli import main
from webhook.config import Settings

PEM = serialization.Encoding.PEM


def _publish(source: Path, target: Path) -> None:
    """Replace a trust file in one step, as a ConfigMap or `webhook register` would (never half-written)."""
    temporary = target.with_suffix(".tmp")
    shutil.copy(source, temporary)
    os.replace(temporary, target)


def _served_issuer(port: int, ca_file: Path) -> str:
    context = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection(("127.0.0.1", port)) as raw, context.wrap_socket(
            raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).issuer.rfc4514_string()


def _tls_settings(directory: Path, **extra: object) -> Settings:
    return Settings(policies=TEST_POLICIES, tls_cert_file=directory / "tls.crt", tls_key_file=directory / "tls.key",
                    certificate_check_seconds=0.05, **extra)  # type: ignore[arg-type]


def test_ca_rotation_under_a_stream_of_new_connections_fails_no_request(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    assert main(["certs", "generate", "--dir", str(certs), "--dns-name", "127.0.0.1"]) == 0
    trusted = tmp_path / "api-server-ca-bundle.crt"  # what the API server has as caBundle
    _publish(certs / "ca.crt", trusted)
    old_ca_only = tmp_path / "old-ca.crt"
    shutil.copy(certs / "ca.crt", old_ca_only)
    with running_server(_tls_settings(certs), certs) as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        outcomes: list[str] = []
        stop = threading.Event()

        def stream() -> None:
            body = review(pod())
            while not stop.is_set():
                try:  # a new connection each time: every request is a new handshake
                    with httpx.Client(base_url=server.base_url, verify=client_context(trusted)) as client:
                        reply = client.post("/validate", json=body)
                    outcomes.append("ok" if reply.status_code == 200 else f"HTTP {reply.status_code}")
                except Exception as error:  # recorded, never lost with the thread
                    outcomes.append(f"{type(error).__name__}: {error}")

        sender = threading.Thread(target=stream)
        sender.start()
        try:
            wait_for(lambda: len(outcomes) >= 10, what="requests before the rotation")
            (old_ca,) = x509.load_pem_x509_certificates((certs / "ca.crt").read_bytes())
            assert main(["certs", "rotate", "--dir", str(certs), "--ca"]) == 0  # 1: new CA in the bundle
            _publish(certs / "ca.crt", trusted)  # the operator gives the API server the two-CA bundle
            count = len(outcomes)
            wait_for(lambda: len(outcomes) >= count + 10, what="requests with the two-CA bundle")
            assert main(["certs", "rotate", "--dir", str(certs)]) == 0  # 2: serving cert from the new CA
            new_ca = x509.load_pem_x509_certificates((certs / "ca.crt").read_bytes())[0]
            wait_for(lambda: _served_issuer(port, trusted) == new_ca.subject.rfc4514_string(),
                     what="the new serving certificate served")
            count = len(outcomes)
            wait_for(lambda: len(outcomes) >= count + 10, what="requests after the reload")
            assert main(["certs", "rotate", "--dir", str(certs), "--drop-old-cas"]) == 0  # 3
            _publish(certs / "ca.crt", trusted)
            count = len(outcomes)
            wait_for(lambda: len(outcomes) >= count + 10, what="requests with the new bundle only")
        finally:
            stop.set()
            sender.join(timeout=30)
        failures = [outcome for outcome in outcomes if outcome != "ok"]
        print(f"{len(outcomes)} requests across the CA rotation, {len(failures)} failed")
        assert failures == []
        assert old_ca.subject != new_ca.subject
        with httpx.Client(base_url=server.base_url, verify=client_context(old_ca_only)) as stale, \
                pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            stale.get("/healthz")
        with httpx.Client(base_url=server.base_url, verify=client_context(trusted)) as current:
            metrics = current.get("/metrics").text
        assert 'webhook_tls_certificate_reloads_total{result="loaded"} 1.0' in metrics


def test_garbage_certificate_keeps_the_last_good_one(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    assert main(["certs", "generate", "--dir", str(certs), "--dns-name", "127.0.0.1"]) == 0
    good_cert, good_key = (certs / "tls.crt").read_bytes(), (certs / "tls.key").read_bytes()
    with running_server(_tls_settings(certs), certs) as server:
        (certs / "tls.crt").write_text("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")

        def problem() -> str:
            with httpx.Client(base_url=server.base_url, verify=client_context(certs / "ca.crt")) as fresh:
                return str(fresh.get("/readyz").json().get("tlsProblem", ""))  # a new handshake each time

        assert "not reloaded (keeping the last good one)" in wait_for(problem, what="the problem reported")
        assert server.validate(review(pod()))["allowed"] is True
        # A key that does not belong to the certificate is refused too.
        other = tmp_path / "other"
        assert main(["certs", "generate", "--dir", str(other), "--dns-name", "127.0.0.1"]) == 0
        (certs / "tls.crt").write_bytes(good_cert)
        (certs / "tls.key").write_bytes((other / "tls.key").read_bytes())
        wait_for(lambda: "KEY_VALUES_MISMATCH" in problem() or "mismatch" in problem().lower(),
                 what="the mismatched key refused")
        (certs / "tls.key").write_bytes(good_key)
        wait_for(lambda: problem() == "", what="recovery once the files are good")
        assert 'webhook_tls_certificate_reloads_total{result="rejected"}' in server.client.get("/metrics").text


def _client_pair(directory: Path, ca: tuple[x509.Certificate, object], name: str) -> tuple[Path, Path]:
    ca_cert, ca_key = ca
    leaf, key = generate_serving(ca_cert=ca_cert, ca_key=ca_key, names=[name], client=True)  # type: ignore[arg-type]
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_bytes(leaf.public_bytes(PEM))
    key_file.write_bytes(key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_file, key_file


def test_client_certificate_required_on_admission_endpoints_only(tmp_path: Path, cert_dir: Path) -> None:
    client_ca, stranger_ca = generate_ca(), generate_ca()
    ca_file = tmp_path / "client-ca.crt"
    ca_file.write_bytes(client_ca[0].public_bytes(PEM))
    api_server = _client_pair(tmp_path, client_ca, "kube-apiserver")
    stranger = _client_pair(tmp_path, stranger_ca, "stranger")
    settings = Settings(policies=TEST_POLICIES, client_ca_file=ca_file)
    with running_server(settings, cert_dir) as server:
        anonymous = server.client
        assert anonymous.get("/healthz").status_code == 200  # probes need no certificate
        assert anonymous.get("/readyz").status_code == 200
        refused = anonymous.post("/validate", json=review(pod()))
        assert refused.status_code == 401
        assert refused.json()["reason"] == "Unauthorized"
        assert "client certificate" in refused.json()["message"]

        context = client_context(server.ca_file)
        context.load_cert_chain(*api_server)
        with httpx.Client(base_url=server.base_url, verify=context) as authenticated:
            reply = authenticated.post("/validate", json=review(pod()))
            assert reply.status_code == 200
            assert reply.json()["response"]["allowed"] is True

        context = client_context(server.ca_file)
        context.load_cert_chain(*stranger)
        with httpx.Client(base_url=server.base_url, verify=context) as impostor, \
                pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            impostor.post("/validate", json=review(pod()))  # refused in the handshake


def test_bearer_token_required_and_rotated(tmp_path: Path, cert_dir: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    with running_server(Settings(policies=TEST_POLICIES, client_token_file=token_file), cert_dir) as server:
        def status(token: str | None) -> int:
            headers = {"authorization": f"Bearer {token}"} if token else {}
            return server.client.post("/validate", json=review(pod()), headers=headers).status_code

        assert status(None) == 401
        assert status("wrong") == 401
        assert status("first-token") == 200
        assert server.client.get("/metrics").status_code == 200
        token_file.write_text("second-token-longer\n")
        wait_for(lambda: status("second-token-longer") == 200, what="the new token accepted")
        assert status("first-token") == 401
