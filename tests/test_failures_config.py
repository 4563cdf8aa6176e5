"""Configuration broken at run time, on real `webhook serve` processes: the last good configuration keeps
serving, the problem is visible (log, /readyz, metrics, events), and fixing the file recovers.

Faults injected: a policy file edited into a CEL error and then a YAML error; a subscribers file with a typo
and then a secret reference to a missing environment variable; certificate and key files replaced by
garbage, an empty key, and an expired (but well-formed) certificate.
"""

from __future__ import annotations

import datetime
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.helpers import ServerProcess, client_context, pod, review, wait_for
from tests.receivers import Receiver
from webhook.certs import generate_serving
from webhook.cli import main

Start = Callable[..., ServerProcess]

POLICY = """\
apiVersion: webhook.dev/v1alpha1
kind: Policy
metadata:
  name: team-label
spec:
  matchConstraints:
    resourceRules:
      - apiGroups: [""]
        apiVersions: ["v1"]
        operations: ["CREATE"]
        resources: ["pods"]
  validations:
    - expression: "has(object.metadata.labels) && 'team' in object.metadata.labels"
      message: MESSAGE
"""


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made = [Receiver(), Receiver()]
    yield made
    for receiver in made:
        receiver.close()


def _metric(client: httpx.Client, key: str) -> float | None:
    """The value of one sample, `name` or `name{label="value"}` exactly as exposed."""
    for line in client.get("/metrics").text.splitlines():
        if not line.startswith("#") and line.rsplit(" ", 1)[0] == key:
            return float(line.rsplit(" ", 1)[1])
    return None


def _deny_message(client: httpx.Client) -> str:
    reply = client.post("/validate", json=review(pod(name="no-team")))
    assert reply.status_code == 200, reply.text
    response = reply.json()["response"]
    assert response["allowed"] is False
    message: str = response["status"]["message"]
    return message


def test_broken_policy_edit_keeps_the_last_good_set_and_recovers(server_processes: Start, tmp_path: Path,
                                                                 receivers: list[Receiver]) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    policy_file = policies / "team.yaml"
    policy_file.write_text(POLICY.replace("MESSAGE", "first version"))
    subscribers = tmp_path / "subscribers.yaml"
    subscribers.write_text(yaml.safe_dump({"subscribers": [
        {"name": "policy-watch", "sink": receivers[0].url, "filters": [{"prefix": {"type": "dev.webhook.policy."}}]}]}))
    server = server_processes("--policies", str(policies), "--subscribers", str(subscribers))
    server.wait_ready()
    receiver = receivers[0]

    def policy_events(kind: str) -> list[Any]:
        return receiver.events(f"dev.webhook.policy.{kind}")

    with server.client() as client:
        assert _deny_message(client) == "team-label: first version"
        good_digest = client.get("/readyz").json()["digest"]
        wait_for(lambda: policy_events("loaded"), what="the policy.loaded event of the start")

        # 1. A CEL syntax error: line 13 of the file, inside the expression.
        broken = POLICY.replace("MESSAGE", "second version").replace("&& 'team' in", "&&& 'team' in")
        policy_file.write_text(broken)
        ready = wait_for(lambda: (lambda r: r if r.get("lastLoadFailed") else None)(client.get("/readyz").json()),
                         what="/readyz reporting the rejected load")
        assert ready["ready"] is True  # the last good set serves
        assert ready["digest"] == good_digest
        assert any(re.match(rf"{re.escape(str(policy_file))}:13:\d+: ", problem) for problem in ready["problems"]), \
            ready["problems"]
        assert _deny_message(client) == "team-label: first version"
        assert _metric(client, "webhook_policy_set_healthy") == 0.0
        assert (_metric(client, 'webhook_policy_reloads_total{result="rejected"}') or 0) >= 1
        rejected = wait_for(lambda: policy_events("rejected"), what="a dev.webhook.policy.rejected event")
        problems = rejected[0].get_data()["problems"]
        assert any(problem.startswith(f"{policy_file}:13:") for problem in problems), problems
        assert f"{policy_file}:13:" in server.output()  # and in the log

        # 2. Then a YAML syntax error (unclosed flow sequence) on line 11: still the first version serves.
        policy_file.write_text(POLICY.replace("MESSAGE", "third version").replace('resources: ["pods"]',
                                                                                  'resources: ["pods"'))
        wait_for(lambda: any(f"{policy_file}:1" in p for p in client.get("/readyz").json().get("problems", [])
                             if ":13:" not in p), what="the YAML error reported")
        wait_for(lambda: len(policy_events("rejected")) >= 2, what="a second rejected event")
        assert _deny_message(client) == "team-label: first version"

        # 3. Fixed: the new version serves, readiness is clean, a loaded event follows.
        loaded_before = len(policy_events("loaded"))
        policy_file.write_text(POLICY.replace("MESSAGE", "fixed version"))
        wait_for(lambda: "lastLoadFailed" not in client.get("/readyz").json(), what="recovery in /readyz")
        assert _deny_message(client) == "team-label: fixed version"
        assert client.get("/readyz").json()["digest"] != good_digest
        assert _metric(client, "webhook_policy_set_healthy") == 1.0
        wait_for(lambda: len(policy_events("loaded")) > loaded_before, what="the policy.loaded event of the fix")
    print(f"policy events received: {[event.get_type() for event in receiver.events('dev.webhook.policy.')]}")


def test_subscribers_file_typo_keeps_the_last_good_subscribers(server_processes: Start, tmp_path: Path,
                                                               receivers: list[Receiver]) -> None:
    first, second = receivers
    subscribers = tmp_path / "subscribers.yaml"
    good = {"subscribers": [{"name": "audit", "sink": first.url,
                             "filters": [{"prefix": {"type": "dev.webhook.admission."}}],
                             "retry": {"maxAttempts": 50, "initialDelaySeconds": 0.1, "maxDelaySeconds": 0.5}}]}
    subscribers.write_text(yaml.safe_dump(good, sort_keys=False))
    (tmp_path / "no-policies").mkdir()
    server = server_processes("--policies", str(tmp_path / "no-policies"), "--subscribers", str(subscribers))
    server.wait_ready()

    with server.client() as client:
        def send(name: str) -> str:
            body = review(pod(name=name))
            assert client.post("/validate", json=body).status_code == 200
            uid: str = body["request"]["uid"]
            return uid

        def received(receiver: Receiver) -> set[str]:
            return {event.get_data()["uid"] for event in receiver.events("dev.webhook.admission.")}

        uid = send("before")
        wait_for(lambda: uid in received(first), what="the first event")

        # A typo: `sinc` for `sink` on line 3 (an unknown field, and sink missing).
        text = yaml.safe_dump(good, sort_keys=False)
        typo = text.replace("  sink:", "  sinc:")
        assert typo != text
        subscribers.write_text(typo)
        wait_for(lambda: "rejected, keeping 1 subscribers" in server.output(), what="the rejection logged")
        assert re.search(rf"{re.escape(str(subscribers))}:\d+:\d+: ", server.output())
        uid = send("during-typo")  # the last good subscriber still gets events
        wait_for(lambda: uid in received(first), what="an event with the last good subscribers")

        # A secret that cannot be read (an environment variable nobody set): also refused, also kept.
        unset = {"bearerToken": {"env": "WEBHOOK_TEST_UNSET_TOKEN"}}
        missing_secret = yaml.safe_dump({"subscribers": [{**good["subscribers"][0], "sink": second.url,
                                                          "auth": unset}]})
        subscribers.write_text(missing_secret)
        wait_for(lambda: "WEBHOOK_TEST_UNSET_TOKEN is not set" in server.output(), what="the secret problem logged")
        uid = send("during-missing-secret")
        wait_for(lambda: uid in received(first), what="an event with the last good subscribers")

        # Fixed, to the second receiver: new events go there, and no longer to the first.
        good["subscribers"][0]["sink"] = second.url
        subscribers.write_text(yaml.safe_dump(good, sort_keys=False))

        def switched() -> bool:
            uid = send("after-fix")
            return wait_for(lambda: uid in received(first) | received(second), what="an event") and \
                uid in received(second)

        wait_for(switched, what="events going to the fixed subscriber")
        uid = send("last")
        wait_for(lambda: uid in received(second), what="the last event at the fixed sink")
        assert uid not in received(first)
    log = server.output()
    print(f"log lines about subscribers: {[line for line in log.splitlines() if 'subscribers' in line][:6]}")


# --- certificates ----------------------------------------------------------------------------------------


def _served_certificate(server: ServerProcess, ca_file: Path) -> bytes:
    """The DER certificate a new TLS handshake gets (verified against the CA)."""
    host, port = server.url.removeprefix("https://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw, \
            client_context(ca_file).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der


def _der(path: Path) -> bytes:
    return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(serialization.Encoding.DER)


def test_certificate_files_replaced_by_garbage_keep_the_last_good_pair(server_processes: Start,
                                                                       tmp_path: Path) -> None:
    certs = tmp_path / "pki"
    assert main(["certs", "generate", "--dir", str(certs), "--dns-name", "127.0.0.1"]) == 0
    cert_file, key_file, ca_file = certs / "tls.crt", certs / "tls.key", certs / "ca.crt"
    good_cert, good_key = cert_file.read_bytes(), key_file.read_bytes()
    (tmp_path / "policies").mkdir()
    server = server_processes("--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file),
                              "--policies", str(tmp_path / "policies"))
    good_der = _der(cert_file)

    def fresh_client() -> httpx.Client:
        return httpx.Client(base_url=server.url, verify=client_context(ca_file), timeout=10)

    def ready() -> bool:  # ServerProcess.wait_ready reads the generated CA's path, which given files lack
        assert server.process.poll() is None, server.output()
        try:
            with fresh_client() as client:
                return client.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    wait_for(ready, what="server ready")

    def tls_problem() -> str:
        with fresh_client() as client:  # a new handshake each time
            return str(client.get("/readyz").json().get("tlsProblem", ""))

    faults = {  # in an order where each problem's text differs from the one before (a new rejection counted)
        "garbage certificate": (b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
                                good_key),
        "empty key (a truncated write)": (good_cert, b""),
    }
    unverified = client_context(ca_file)
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE  # to read /readyz and /metrics whatever the server presents

    def rejected() -> float:
        with httpx.Client(base_url=server.url, verify=unverified, timeout=10) as client:
            return _metric(client, 'webhook_tls_certificate_reloads_total{result="rejected"}') or 0.0

    for what, (cert_bytes, key_bytes) in faults.items():  # one after the other, each a new problem
        before = rejected()
        cert_file.write_bytes(cert_bytes)
        key_file.write_bytes(key_bytes)
        wait_for(lambda: rejected() > before, what=f"the reload after {what} rejected")  # noqa: B023
        problem = tls_problem()
        assert "keeping the last good one" in problem, problem
        assert _served_certificate(server, ca_file) == good_der, what
        with fresh_client() as client:
            assert client.post("/validate", json=review(pod())).status_code == 200
    assert "not reloaded (keeping the last good one)" in server.output()

    # Then a well-formed pair that has expired. Today it is loaded and served (the expiry metric goes into the
    # past: alert on it), and every verifying client, the API server included, fails the handshake; a server
    # that refuses it (SECURITY.md recommends so) keeps the good pair and reports tlsProblem. Either way the
    # operator must be able to see it.
    rejected_before = rejected()
    ca_cert = x509.load_pem_x509_certificate(ca_file.read_bytes())
    ca_key = serialization.load_pem_private_key((certs / "ca.key").read_bytes(), password=None)
    expired, expired_key = generate_serving(ca_cert=ca_cert, ca_key=ca_key, names=["127.0.0.1"], days=0)  # type: ignore[arg-type]
    cert_file.write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(expired_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    expired_der = expired.public_bytes(serialization.Encoding.DER)

    def visible() -> str | None:
        with httpx.Client(base_url=server.url, verify=unverified, timeout=10) as client:
            expiry = _metric(client, "webhook_tls_certificate_expiry_timestamp_seconds")
            problem = client.get("/readyz").json().get("tlsProblem", "")
        if expiry is not None and expiry < datetime.datetime.now(datetime.UTC).timestamp():
            return "loaded: the expiry metric is in the past"
        return f"refused: {problem}" if rejected() > rejected_before and problem else None

    outcome = wait_for(visible, what="the expired certificate visible to the operator")
    print(f"expired certificate {outcome}")
    if outcome.startswith("loaded"):
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"), fresh_client() as client:
            client.get("/healthz")
    else:
        assert _served_certificate(server, ca_file) == good_der
    assert expired_der != good_der


def test_an_expired_certificate_at_start_is_reported(server_processes: Start, tmp_path: Path) -> None:
    """Was a finding: a certificate that had expired was served at start with no `tlsProblem` (only reloads
    checked validity). It is still served (there is no other), and /readyz and the log say so."""
    certs = tmp_path / "pki"
    assert main(["certs", "generate", "--dir", str(certs), "--dns-name", "127.0.0.1"]) == 0
    ca_file = certs / "ca.crt"
    ca_cert = x509.load_pem_x509_certificate(ca_file.read_bytes())
    ca_key = serialization.load_pem_private_key((certs / "ca.key").read_bytes(), password=None)
    expired, expired_key = generate_serving(ca_cert=ca_cert, ca_key=ca_key, names=["127.0.0.1"], days=0)  # type: ignore[arg-type]
    cert_file, key_file = tmp_path / "expired.crt", tmp_path / "expired.key"
    cert_file.write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(expired_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    (tmp_path / "policies").mkdir()
    server = server_processes("--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file),
                              "--policies", str(tmp_path / "policies"))
    unverified = client_context(ca_file)
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE

    def tls_problem() -> str | None:
        assert server.process.poll() is None, server.output()
        try:
            with httpx.Client(base_url=server.url, verify=unverified, timeout=10) as client:
                return str(client.get("/readyz").json().get("tlsProblem", ""))
        except httpx.TransportError:
            return None

    problem = wait_for(tls_problem, what="/readyz answering")
    assert problem.startswith(f"serving certificate {cert_file} is not valid now: the certificate is valid only "
                              "from "), problem
    assert "verifying clients, the API server included, will refuse it" in server.output()
