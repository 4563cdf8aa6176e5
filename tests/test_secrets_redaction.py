"""A Secret's data never reaches the server's log or an event, even with `includeObject: true`, a mutating
policy that copies a value into its patch (CEL and Python), denials, audit annotations and debug logging.

Real `webhook serve` (log level debug, output to a file) with two real subscribers (binary with includeObject,
structured without); every byte of the log file and of every delivered request is searched for each value:
as sent (base64, as in `data`), decoded, and in `stringData` (plain).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.helpers import DATA, ServerProcess, review, start_server_process, wait_for
from tests.receivers import Receiver

SECRET_POLICIES = DATA / "fuzz" / "secrets"
PLAIN = {"password": "hunter2-pw-7Q1x", "token": "tok-Zr8vK3mW", "old": "previous-pw-Lm4e", "port": "port-value-9Hb",
         "string": "stringdata-pw-Y6tc"}
SECRET_KIND = ("", "v1", "Secret")
SECRET_RESOURCE = ("", "v1", "secrets")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def needles() -> dict[str, bytes]:
    """Every form in which a value could leak."""
    found = {}
    for name, value in PLAIN.items():
        found[f"{name} (plain)"] = value.encode()
        found[f"{name} (base64)"] = b64(value).encode()
        found[f"{name} (base64 of base64)"] = base64.b64encode(b64(value).encode())
    return found


def secret(name: str, *, labels: dict[str, str] | None = None, password: str = PLAIN["password"],
           extra: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": "default", **({"labels": labels} if labels else {})},
            "data": {"password": b64(password), "token": b64(PLAIN["token"]), **(extra or {})},
            "stringData": {"extra": PLAIN["string"]}}


@dataclass
class Served:
    server: ServerProcess
    receivers: tuple[Receiver, Receiver]

    def mark(self) -> tuple[int, int, int]:
        """Where the log and each subscriber's requests are now: a test searches only what comes after."""
        return self.server.log.stat().st_size, len(self.receivers[0].received), len(self.receivers[1].received)

    def leaks(self, since: tuple[int, int, int]) -> dict[str, list[str]]:
        """Where each form of each value was found since `since`: the log, a delivered request (headers, body)."""
        places = {"log": self.server.log.read_bytes()[since[0]:]}
        for receiver, start in zip(self.receivers, since[1:], strict=True):
            for index, record in enumerate(receiver.received[start:], start):
                places[f"{receiver.url} request {index}"] = json.dumps(record.headers).encode() + record.body
        return {what: [place for place, content in places.items() if needle in content]
                for what, needle in needles().items() if any(needle in content for content in places.values())}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("secrets")
    receivers = (Receiver(), Receiver())
    subscribers = directory / "subscribers.yaml"
    subscribers.write_text(yaml.safe_dump({"subscribers": [
        {"name": "full", "sink": receivers[0].url, "includeObject": True},
        {"name": "siem", "sink": receivers[1].url, "contentMode": "structured",
         "filters": [{"prefix": {"type": "dev.webhook."}}]},
    ]}))
    server = start_server_process(directory, "--policies", str(SECRET_POLICIES), "--subscribers", str(subscribers),
                                  "--no-watch", "--log-level", "debug")
    try:
        server.wait_ready()
        yield Served(server, receivers)
    finally:
        server.stop()
        for receiver in receivers:
            receiver.close()


def test_secret_data_reaches_no_log_and_no_event(served: Served) -> None:
    server, receivers = served.server, served.receivers
    since = served.mark()
    sent: list[str] = []
    with server.client() as client:
        def send(path: str, body: dict[str, Any]) -> dict[str, Any]:
            reply = client.post(path, json=body)
            assert reply.status_code == 200, reply.text
            sent.append(body["request"]["uid"])
            response: dict[str, Any] = reply.json()["response"]
            return response

        owned = secret("db", labels={"owner": "team-a"})
        response = send("/mutate", review(owned, kind=SECRET_KIND, resource=SECRET_RESOURCE))
        patch = json.loads(base64.b64decode(response["patch"]))
        # The API server needs the values in the patch it applies: the answer carries them, nothing else may.
        assert {"op": "add", "path": "/data/copy", "value": b64(PLAIN["password"])} in patch
        assert {"op": "add", "path": "/data/backup", "value": b64(PLAIN["password"])} in patch
        assert send("/validate", review(owned, kind=SECRET_KIND, resource=SECRET_RESOURCE))["allowed"] is True
        denied = send("/validate", review(secret("unowned"), kind=SECRET_KIND, resource=SECRET_RESOURCE))
        assert denied["allowed"] is False
        old = secret("db", labels={"owner": "team-a"}, password=PLAIN["old"])
        send("/mutate", review(owned, old=old, operation="UPDATE", kind=SECRET_KIND, resource=SECRET_RESOURCE))
        send("/validate", review(owned, old=old, operation="UPDATE", kind=SECRET_KIND, resource=SECRET_RESOURCE))
        send("/validate", review(None, old=old, operation="DELETE", kind=SECRET_KIND, resource=SECRET_RESOURCE))
    full, siem = receivers

    def got_all(receiver: Receiver) -> bool:
        return {event.get_data()["uid"] for event in receiver.events("dev.webhook.admission.")} >= set(sent)

    wait_for(lambda: got_all(full) and got_all(siem), what="every decision event at both subscribers")
    # Not a vacuous search: the events and the log are about these Secrets.
    events = full.events("dev.webhook.admission.")
    mutated = [e.get_data() for e in events if e.get_type() == "dev.webhook.admission.mutated"]
    assert mutated
    assert {"op": "add", "path": "/data/copy", "value": "<redacted>"} in mutated[0]["patch"]
    assert all("object" not in e.get_data() for e in events)
    assert "denied CREATE Secret default/unowned" in server.output()
    assert "POST /mutate" in server.output()  # debug: uvicorn's access log is on
    leaks = served.leaks(since)
    print(f"searched the log ({server.log.stat().st_size - since[0]} bytes) and "
          f"{len(full.received) - since[1] + len(siem.received) - since[2]} delivered requests for "
          f"{len(needles())} forms of {len(PLAIN)} values: {len(leaks)} found")
    assert leaks == {}


def test_policy_fault_messages_do_not_carry_secret_data(served: Served) -> None:
    """Was a bug (fixed): a fault's message can quote the value that could not be parsed, and for a Secret
    that value is secret data. `ip()` and `url()` (webhook/cel/kubernetes/network.py `parse_ip`, urls.py
    `parse_url`; Kubernetes' wording) say `IP Address "<value>" parse error` and `parse "<value>": ...`; a Python
    policy's exception says what Python says (`invalid literal for int() with base 10: '<value>'`). The message
    then goes into the denial, which `review` logs (webhook/server.py:194, "denied ... : <message>"), and into the
    event's `status.message` and `policies[].messages` (webhook/events/model.py:76-78), which are not redacted
    for Secrets (only `patch` values and `object` are).
    Proposed fix: for a Secret (`model.is_secret(kind)`), build a redactor from the request's `data` and
    `stringData` values (as sent, and base64-decoded) and of the old object's, and apply it to the decision's
    message, warnings and audit annotations before they are logged and spooled (replacing each occurrence by
    `<redacted>`); the answer to the API server can keep them (the requester sent that data).
    """
    server, receivers = served.server, served.receivers
    since = served.mark()
    body = review(secret("endpoint", labels={"faults": "yes"}, extra={"port": b64(PLAIN["port"])}),
                  kind=SECRET_KIND, resource=SECRET_RESOURCE)
    with server.client() as client:
        reply = client.post("/validate", json=body)
    assert reply.status_code == 200, reply.text
    response = reply.json()["response"]
    assert response["allowed"] is False
    assert "policy fault" in response["status"]["message"]
    full, siem = receivers
    uid = body["request"]["uid"]

    def delivered(receiver: Receiver) -> set[str]:
        return {event.get_data()["uid"] for event in receiver.events("dev.webhook.admission.")}

    wait_for(lambda: uid in delivered(full) and uid in delivered(siem), what="the denial's events")
    wait_for(lambda: "denied CREATE Secret default/endpoint" in server.output(), what="the denial logged")
    leaks = served.leaks(since)
    print(f"secret data in fault messages: {leaks}")
    assert leaks == {}
