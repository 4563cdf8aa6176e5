"""The HTTP edge: bad input gets a specific 4xx with a JSON body; health, readiness, metrics, TLS versions."""

from __future__ import annotations

import socket
import ssl
import warnings
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import RunningServer, client_context, pod, review


def _error(reply: httpx.Response, code: int, reason: str) -> str:
    assert reply.status_code == code, reply.text
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["kind"] == "Status"
    assert body["code"] == code
    assert body["reason"] == reason
    message: str = body["message"]
    return message


def test_non_json_body_is_400(fast_server: RunningServer) -> None:
    reply = fast_server.client.post("/validate", content=b"{not json", headers={"content-type": "application/json"})
    assert "not valid JSON" in _error(reply, 400, "InvalidJSON")


def test_invalid_utf8_is_400(fast_server: RunningServer) -> None:
    reply = fast_server.client.post("/validate", content=b'{"a": "\xff\xfe"}',
                                    headers={"content-type": "application/json"})
    _error(reply, 400, "InvalidJSON")


def test_json_that_is_not_an_object_is_400(fast_server: RunningServer) -> None:
    reply = fast_server.client.post("/mutate", json=[1, 2])
    assert "must be a JSON object" in _error(reply, 400, "InvalidAdmissionReview")


@pytest.mark.parametrize(("content_type", "expected"), [
    ("text/plain", "'text/plain'"),
    ("application/yaml", "'application/yaml'"),
    ("", "none"),
], ids=["text", "yaml", "missing"])
def test_wrong_content_type_is_415(fast_server: RunningServer, content_type: str, expected: str) -> None:
    headers = {"content-type": content_type} if content_type else {}
    reply = fast_server.client.post("/validate", content=b"{}", headers=headers)
    assert expected in _error(reply, 415, "UnsupportedMediaType")


def test_content_type_with_charset_is_accepted(fast_server: RunningServer) -> None:
    body = httpx.Request("POST", "/", json=review(pod())).content
    reply = fast_server.client.post("/validate", content=body,
                                    headers={"content-type": "application/json; charset=utf-8"})
    assert reply.status_code == 200


@pytest.mark.parametrize(("field", "value"), [
    ("apiVersion", "admission.k8s.io/v2"),
    ("kind", "ConversionReview"),
], ids=["api-version", "kind"])
def test_wrong_api_version_or_kind_is_400(fast_server: RunningServer, field: str, value: str) -> None:
    body = review(pod())
    body[field] = value
    message = _error(fast_server.client.post("/validate", json=body), 400, "UnsupportedAdmissionReviewVersion")
    assert value in message


def test_missing_request_uid_is_400_naming_the_field(fast_server: RunningServer) -> None:
    body = review(pod())
    del body["request"]["uid"]
    message = _error(fast_server.client.post("/validate", json=body), 400, "InvalidAdmissionReview")
    assert "request.uid" in message


@pytest.mark.parametrize(("path", "value"), [
    (("request",), None),
    (("request", "operation"), "PATCH"),
    (("request", "object"), "a string"),
    (("request", "kind"), {"kind": "Pod"}),
    (("request", "userInfo", "groups"), "admins"),
], ids=["no-request", "operation", "object-type", "kind-version", "groups-type"])
def test_wrong_types_in_fields_are_400(fast_server: RunningServer, path: tuple[str, ...], value: object) -> None:
    body = review(pod())
    target = body
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    message = _error(fast_server.client.post("/validate", json=body), 400, "InvalidAdmissionReview")
    assert ".".join(path) in message


def test_body_over_the_limit_is_413(fast_server: RunningServer) -> None:
    body = review(pod(annotations={"big": "x" * 70_000}))
    message = _error(fast_server.client.post("/validate", json=body), 413, "RequestEntityTooLarge")
    assert "65536" in message


def test_streamed_body_over_the_limit_is_413(fast_server: RunningServer) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"x": "'
        for _ in range(100):
            yield b"x" * 1024

    reply = fast_server.client.post("/validate", content=chunks(), headers={"content-type": "application/json"})
    _error(reply, 413, "RequestEntityTooLarge")


def test_wrong_method_and_unknown_path_are_json(fast_server: RunningServer) -> None:
    _error(fast_server.client.get("/validate"), 405, "MethodNotAllowed")
    _error(fast_server.client.post("/nothing-here", json={}), 404, "NotFound")


def test_server_keeps_answering_after_bad_input(fast_server: RunningServer) -> None:
    for body in (b"", b"{", b"null", b"[]", b'{"request": {}}', b"\x00" * 100):
        reply = fast_server.client.post("/validate", content=body, headers={"content-type": "application/json"})
        assert 400 <= reply.status_code < 500
    assert fast_server.validate(review(pod()))["allowed"] is True


def test_health_and_readiness(fast_server: RunningServer) -> None:
    assert fast_server.client.get("/healthz").json() == {"status": "ok"}
    ready = fast_server.client.get("/readyz")
    assert ready.status_code == 200
    detail = ready.json()
    assert detail["ready"] is True
    assert detail["policies"] >= 10
    assert detail["engine"] == "builtin"


def test_metrics_count_requests_by_verdict_and_faults(fast_server: RunningServer) -> None:
    fast_server.validate(review(pod(namespace="deny-ns")))
    fast_server.validate(review(pod(namespace="fault-fail")))
    text = fast_server.client.get("/metrics").text
    assert ('webhook_admission_requests_total{endpoint="/validate",kind="Pod",operation="CREATE",'
            'verdict="denied"}') in text
    assert 'webhook_policy_evaluation_errors_total{policy="broken-fail"}' in text
    assert "webhook_admission_duration_seconds_bucket" in text
    assert "webhook_policies_loaded" in text


def _handshake(server: RunningServer, context: ssl.SSLContext) -> str:
    host, port = server.base_url.removeprefix("https://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        version = tls.version()
        assert version is not None
        return version


def test_tls_12_and_13_are_accepted(fast_server: RunningServer) -> None:
    context = client_context(fast_server.ca_file)
    assert _handshake(fast_server, context) == "TLSv1.3"
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    assert _handshake(fast_server, context) == "TLSv1.2"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["tls1.0", "tls1.1"])
def test_old_tls_versions_are_refused(fast_server: RunningServer, version: ssl.TLSVersion) -> None:
    context = client_context(fast_server.ca_file)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer them; the server must say no
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = version
        context.maximum_version = version
    with pytest.raises(ssl.SSLError) as refused:
        _handshake(fast_server, context)
    # The client did send its hello (a client that cannot offer the version fails with NO_PROTOCOLS_AVAILABLE
    # before connecting); the server answered with an alert or closed the handshake.
    text = str(refused.value).upper()
    assert "NO_PROTOCOLS_AVAILABLE" not in text
    assert "PROTOCOL_VERSION" in text or isinstance(refused.value, ssl.SSLEOFError)


def test_weak_tls12_ciphers_are_refused(fast_server: RunningServer) -> None:
    context = client_context(fast_server.ca_file)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("AES128-SHA:AES256-SHA:AES128-SHA256:@SECLEVEL=0")  # no forward secrecy, CBC
    with pytest.raises(ssl.SSLError):
        _handshake(fast_server, context)
