"""CloudEvents delivery through the real server to real HTTP subscribers on loopback."""

from __future__ import annotations

import base64
import json
import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from standardwebhooks.webhooks import Webhook

from tests.helpers import TEST_POLICIES, RunningServer, pod, review, running_server, wait_for
from tests.receivers import healthy, refused_url
from webhook.cli import main
from webhook.config import Settings
from webhook.events.outbox import Outbox

FAST_RETRY = {"maxAttempts": 4, "initialDelaySeconds": 0.05, "maxDelaySeconds": 0.2}
ADMISSION = [{"prefix": {"type": "dev.webhook.admission."}}]



@pytest.fixture
def events_server(tmp_path: Path, cert_dir: Path) -> Iterator[Callable[..., RunningServer]]:
    """Start a server with the given subscribers; returns it (stopped at the end of the test)."""
    stack: list[Any] = []

    def start(subscribers: list[dict[str, Any]], **settings: Any) -> RunningServer:
        path = tmp_path / "subscribers.yaml"
        path.write_text(yaml.safe_dump({"subscribers": subscribers}))
        context = running_server(Settings(policies=TEST_POLICIES, watch_policies=False, subscribers=path,
                                          state_dir=tmp_path / "state", cluster_name="test-cluster",
                                          server_name="server-a", **settings), cert_dir)
        server = context.__enter__()
        stack.append(context)
        return server

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


def outbox(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "state" / "outbox.db")


def counts(tmp_path: Path) -> dict[str, int]:
    """Pending, delivered and dead rows of the only subscriber (zeros before the first row arrives)."""
    box = outbox(tmp_path)
    try:
        rows = box.status()
    finally:
        box.close()
    if not rows:
        return {"pending": 0, "delivered": 0, "dead": 0}
    return {"pending": rows[0].pending, "delivered": rows[0].delivered, "dead": rows[0].dead}


def test_binary_mode_event_as_the_http_binding_says(events_server, receivers) -> None:  # type: ignore[no-untyped-def]
    receiver = receivers()
    server = events_server([{"name": "audit", "sink": receiver.url, "filters": ADMISSION}])
    body = review(pod(namespace="deny-ns"), user="dave", groups=("devs",))
    assert server.validate(body)["allowed"] is False
    (event,) = wait_for(lambda: receiver.events("dev.webhook.admission."), what="event")
    headers = receiver.received[-1].headers
    assert headers["content-type"] == "application/json"
    assert headers["ce-specversion"] == "1.0"
    assert event.get_type() == "dev.webhook.admission.denied"
    assert event.get_source() == "urn:webhook.dev:cluster:test-cluster:server:server-a"
    assert event.get_subject() == "namespaces/deny-ns/pods/web"
    assert event.get_id() == str(uuid.uuid5(uuid.UUID("6f1c5d0e-7e55-4a52-9b62-2a7d0f6a4c11"),
                                            f"{body['request']['uid']}/validate"))
    assert event.get_time() is not None
    assert event.get_extension("phase") == "validate"
    data = event.get_data()
    assert data["uid"] == body["request"]["uid"]
    assert data["allowed"] is False
    assert data["operation"] == "CREATE"
    assert data["userInfo"] == {"username": "dave", "groups": ["devs"]}
    assert data["status"]["message"].startswith("require-team-label:")
    assert {"policy": "require-team-label", "result": "fail", "messages": ["every Pod needs a team label"]} \
        in data["policies"]
    assert "object" not in data


def test_structured_mode_and_mutation_event(events_server, receivers) -> None:  # type: ignore[no-untyped-def]
    receiver = receivers()
    server = events_server([{"name": "s", "sink": receiver.url, "contentMode": "structured",
                             "filters": ADMISSION}])
    server.mutate(review(pod(namespace="mutate-ns")))
    (event,) = wait_for(lambda: receiver.events("dev.webhook.admission."), what="event")
    assert receiver.received[-1].headers["content-type"] == "application/cloudevents+json"
    assert json.loads(receiver.received[-1].body)["specversion"] == "1.0"
    assert event.get_type() == "dev.webhook.admission.mutated"
    assert event.get_extension("phase") == "mutate"
    assert {"op": "add", "path": "/spec/priorityClassName", "value": "standard"} in event.get_data()["patch"]


def test_signatures_verify_with_both_rotated_secrets_and_bearer_token(
        events_server, receivers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    old, new = (base64.b64encode(secret).decode() for secret in (b"old-secret-bytes-1", b"new-secret-bytes-2"))
    (tmp_path / "old").write_text(f"whsec_{old}\n")
    monkeypatch.setenv("TEST_SIGNING_SECRET", f"whsec_{new}")
    (tmp_path / "token").write_text("s3cr3t-token")
    receiver = receivers()
    server = events_server([{"name": "signed", "sink": receiver.url, "filters": ADMISSION, "auth": {
        "bearerToken": {"file": str(tmp_path / "token")},
        "signingSecrets": [{"file": str(tmp_path / "old")}, {"env": "TEST_SIGNING_SECRET"}]}}])
    server.validate(review(pod()))
    wait_for(lambda: receiver.events("dev.webhook.admission."), what="event")
    received = receiver.received[-1]
    assert received.headers["authorization"] == "Bearer s3cr3t-token"
    assert len(received.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(f"whsec_{secret}").verify(received.body, received.headers)
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(base64.b64encode(b"someone-else").decode()).verify(received.body, received.headers)


def test_filters_choose_what_each_subscriber_gets(events_server, receivers) -> None:  # type: ignore[no-untyped-def]
    denied, everything_but_policy = receivers(), receivers()
    server = events_server([
        {"name": "denied", "sink": denied.url, "filters": [{"suffix": {"type": ".denied"}}]},
        {"name": "not-policy", "sink": everything_but_policy.url,
         "filters": [{"not": {"prefix": {"type": "dev.webhook.policy."}}},
                     {"any": [{"exact": {"phase": "validate"}}, {"exact": {"phase": "mutate"}}]}]},
    ])
    server.validate(review(pod(namespace="deny-ns")))
    server.validate(review(pod(namespace="deny-ns", labels={"team": "a"})))
    wait_for(lambda: len(everything_but_policy.events()) == 2, what="two events")
    assert [e.get_type() for e in denied.events()] == ["dev.webhook.admission.denied"]
    assert sorted(e.get_type() for e in everything_but_policy.events()) == [
        "dev.webhook.admission.allowed", "dev.webhook.admission.denied"]


def test_policy_set_loaded_event(events_server, receivers) -> None:  # type: ignore[no-untyped-def]
    receiver = receivers()
    events_server([{"name": "ops", "sink": receiver.url, "filters": [{"prefix": {"type": "dev.webhook.policy."}}]}])
    (event,) = wait_for(lambda: receiver.events(), what="policy event")
    assert event.get_type() == "dev.webhook.policy.loaded"
    assert event.get_data()["policies"] > 10


def test_flapping_subscriber_gets_the_event_after_retries(events_server, receivers,
                                                          tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    receiver = receivers(lambda n: (503, {}, 0.0) if n <= 2 else (200, {}, 0.0))
    server = events_server([{"name": "flaps", "sink": receiver.url, "filters": ADMISSION, "retry": FAST_RETRY}])
    server.validate(review(pod()))
    wait_for(lambda: len(receiver.received) == 3, what="third attempt")
    ids = {json.loads(r.body)["uid"] for r in receiver.received}
    assert len(ids) == 1
    wait_for(lambda: counts(tmp_path)["delivered"] == 1, what="delivered state")
    assert 'webhook_events_retried_total{subscriber="flaps"} 2.0' in server.client.get("/metrics").text


def test_retry_after_is_honoured(events_server, receivers) -> None:  # type: ignore[no-untyped-def]
    receiver = receivers(lambda n: (429, {"Retry-After": "1"}, 0.0) if n == 1 else (200, {}, 0.0))
    server = events_server([{"name": "limited", "sink": receiver.url, "filters": ADMISSION, "retry": FAST_RETRY}])
    server.validate(review(pod()))
    wait_for(lambda: len(receiver.received) == 2, what="retry")
    first, second = receiver.received
    assert second.at - first.at >= 0.9  # the subscriber asked for at least one second


def test_gone_disables_the_subscriber_until_replayed(events_server, receivers, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    receiver = receivers(lambda n: (410, {}, 0.0))
    operations = receivers(healthy)
    server = events_server([
        {"name": "gone", "sink": receiver.url, "filters": ADMISSION, "retry": FAST_RETRY},
        {"name": "ops", "sink": operations.url, "filters": [{"prefix": {"type": "dev.webhook.subscriber."}}]}])
    server.validate(review(pod()))
    wait_for(lambda: outbox(tmp_path).disabled(), what="disabled")
    wait_for(lambda: operations.events("dev.webhook.subscriber.disabled"), what="the disabled event")
    (disabled_event,) = operations.events("dev.webhook.subscriber.disabled")
    assert disabled_event.get_subject() == "subscribers/gone"
    assert disabled_event.get_data()["subscriber"] == "gone"
    server.validate(review(pod()))
    wait_for(lambda: counts(tmp_path)["pending"] == 1, what="second event pending")
    assert len(receiver.received) == 1
    assert main(["events", "--state-dir", str(tmp_path / "state"), "status"]) == 0
    out = capsys.readouterr().out
    (gone_line,) = [line for line in out.splitlines() if line.startswith("gone ")]
    pending, _age, delivered, retried, dead = gone_line.split()[1:6]
    assert (pending, delivered, retried, dead) == ("1", "0", "0", "1")
    assert "disabled: 410 Gone" in gone_line
    assert 'webhook_subscribers_disabled_total{subscriber="gone"} 1.0' in server.client.get("/metrics").text
    receiver.behaviour = healthy
    assert main(["events", "--state-dir", str(tmp_path / "state"), "replay", "--subscriber", "gone"]) == 0
    wait_for(lambda: counts(tmp_path)["delivered"] == 2, what="both delivered after replay")


def test_client_error_goes_to_dead_letters_at_once_and_replays(
        events_server, receivers, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    receiver = receivers(lambda n: (400, {}, 0.0))
    server = events_server([{"name": "picky", "sink": receiver.url, "filters": ADMISSION, "retry": FAST_RETRY}])
    server.validate(review(pod()))
    wait_for(lambda: counts(tmp_path)["dead"] == 1, what="dead letter")
    assert len(receiver.received) == 1
    state = str(tmp_path / "state")
    assert main(["events", "--state-dir", state, "dead-letters"]) == 0
    listing = capsys.readouterr().out
    assert "picky  attempts=1  HTTP 400: the subscriber refused the event" in listing
    event_id = listing.split()[0]
    receiver.behaviour = healthy
    assert main(["events", "--state-dir", state, "replay", "--id", event_id]) == 0
    wait_for(lambda: counts(tmp_path)["delivered"] == 1, what="replayed")


def test_unreachable_subscriber_is_dead_lettered_after_the_retry_budget(
        events_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = events_server([{"name": "down", "sink": refused_url(), "filters": ADMISSION,
                             "retry": {**FAST_RETRY, "maxAttempts": 2}}])
    server.validate(review(pod()))
    wait_for(lambda: counts(tmp_path)["dead"] == 1, what="dead letter")
    (letter,) = outbox(tmp_path).dead_letters()
    assert letter["attempts"] == 2
    assert letter["last_error"].startswith("gave up after 2 attempts: connection error")


def test_dry_run_emits_nothing(events_server, receivers) -> None:  # type: ignore[no-untyped-def]
    receiver = receivers()
    server = events_server([{"name": "all", "sink": receiver.url, "filters": ADMISSION}])
    server.validate(review(pod(), dry_run=True))
    server.validate(review(pod(name="real")))
    wait_for(lambda: receiver.events(), what="the real event")
    assert [e.get_data()["name"] for e in receiver.events()] == ["real"]


def test_objects_only_on_request_and_never_secrets(events_server, receivers) -> None:  # type: ignore[no-untyped-def]
    receiver = receivers()
    server = events_server([{"name": "full", "sink": receiver.url, "filters": ADMISSION, "includeObject": True}])
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "default",
                                                                "labels": {"check": "strict"}},
              "data": {"password": base64.b64encode(b"hunter2-very-secret").decode()}}
    server.validate(review(secret, kind=("", "v1", "Secret"), resource=("", "v1", "secrets")))
    server.validate(review(pod(name="visible")))
    wait_for(lambda: len(receiver.events()) == 2, what="two events")
    by_name = {e.get_data()["name"]: e.get_data() for e in receiver.events()}
    assert "object" not in by_name["db"]
    assert by_name["visible"]["object"]["metadata"]["name"] == "visible"
    raw = b"".join(r.body for r in receiver.received)
    assert b"hunter2" not in raw
    assert base64.b64encode(b"hunter2-very-secret") not in raw


def test_full_outbox_drops_and_counts_but_admission_goes_on(
        events_server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    server = events_server([{"name": "down", "sink": refused_url(), "filters": ADMISSION,
                             "retry": {"maxAttempts": 50, "initialDelaySeconds": 60}}], outbox_max_backlog=3)
    for index in range(6):
        assert server.validate(review(pod(name=f"p{index}")))["allowed"] is True
    assert 'webhook_events_dropped_total{reason="full"} 3.0' in server.client.get("/metrics").text

    def dropped() -> int:
        box = outbox(tmp_path)
        try:
            return box.counters().get("dropped_full", 0)
        finally:
            box.close()

    wait_for(lambda: dropped() == 3, what="drops recorded in the outbox")
    assert main(["events", "--state-dir", str(tmp_path / "state"), "status"]) == 0
    out = capsys.readouterr().out
    assert "dropped: 3 (outbox full)" in out
    assert "backlog: 3 undelivered" in out


def test_broken_subscribers_file_is_refused_with_its_position(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "subscribers.yaml"
    path.write_text("subscribers:\n  - name: audit\n    sink: http://127.0.0.1:9/events\n"
                    "    filters:\n      - regex: {type: .*}\n")
    assert main(["serve", "--subscribers", str(path), "--state-dir", str(tmp_path / "state")]) == 2
    assert f"{path}:5:9: unknown filter dialect 'regex'" in capsys.readouterr().err


def test_an_outbox_made_before_the_owner_only_rule_is_made_owner_only(tmp_path: Path) -> None:
    """Was a finding: outbox.db created with the umask (0644) kept that mode after the fix; it holds event data."""
    state = tmp_path / "state"
    state.mkdir()
    old = state / "outbox.db"
    old.touch(mode=0o644)
    old.chmod(0o644)
    Outbox(old).close()
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
