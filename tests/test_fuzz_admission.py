"""Bad input at scale: property-based tests (hypothesis) over /validate and /mutate of real TLS servers.

Every reply must be either a well-formed 4xx JSON body shaped like a Kubernetes Status, or a well-formed
AdmissionReview whose response.uid is the request's uid; never a 5xx, and the servers keep answering a normal
review afterwards. Inputs: valid reviews (tests.helpers builders) with fields mutated (wrong types, missing
fields, renamed keys, huge strings, deep nesting up to 10,000 levels, NaN/Infinity and out-of-range number
literals), bodies mutated as bytes (truncated, invalid UTF-8 inserted, duplicate keys, BOM, UTF-16, trailing
garbage), wrong Content-Types, and random bytes.

Three servers share the module: the fuzz policies (tests/data/fuzz/policies, which match everything and reach
into the object as real policies do) on both CEL engines, and the shipped policies/ on the default engine.

CI runs WEBHOOK_FUZZ_EXAMPLES examples per property (default 100); set it higher for a long run, e.g.
`WEBHOOK_FUZZ_EXAMPLES=20000 .venv/bin/pytest -q -s tests/test_fuzz_admission.py` (see docs/failure-modes.md).

The tests at the end whose docstrings start with "Was a bug" pin down what the fuzzing found (all fixed since):
each fails if its bug comes back (the docstring says where it was).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import string
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import (
    DATA,
    RunningServer,
    client_context,
    deployment,
    deployment_review,
    pod,
    review,
    running_server,
    start_server_process,
    wait_for,
)
from tests.receivers import Receiver
from webhook.config import Settings

EXAMPLES = int(os.environ.get("WEBHOOK_FUZZ_EXAMPLES", "100"))
FUZZ_POLICIES = DATA / "fuzz" / "policies"
SHIPPED_POLICIES = Path(__file__).resolve().parent.parent / "policies"
SERVERS = (("fuzz policies, builtin", FUZZ_POLICIES, "builtin"),
           ("fuzz policies, cel-expr-python", FUZZ_POLICIES, "cel-expr-python"),
           ("fuzz policies, cel-python", FUZZ_POLICIES, "cel-python"),
           ("shipped policies, builtin", SHIPPED_POLICIES, "builtin"))
FUZZ_SERVERS = 3  # the first three: the fuzz policies on every engine
MAX_BODY = 1024 * 1024  # small, so that bodies over the limit are cheap to send
ADMISSION_PATHS = ("/validate", "/mutate", "/validate/fail", "/validate/ignore", "/mutate/fail", "/mutate/ignore")
# CI (no WEBHOOK_FUZZ_EXAMPLES): the same examples every run, so that a red run is reproducible; a long run
# draws new ones each time. No example database (it would be written into the work tree).
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                derandomize="WEBHOOK_FUZZ_EXAMPLES" not in os.environ, suppress_health_check=list(HealthCheck))

TRIED: Counter[str] = Counter()  # inputs sent, by property
REPLIES: Counter[str] = Counter()  # replies, by status and reason


# --- servers ---------------------------------------------------------------------------------------------


@dataclass
class Target:
    """A server under fuzz: a real `webhook serve` process (its own interpreter: the recursion limit, the
    evaluation deadline and the uvicorn configuration are production's), or an in-thread server."""

    name: str
    base_url: str
    ca_file: Path
    log: Path | None = None

    def log_size(self) -> int:
        assert self.log is not None
        return self.log.stat().st_size


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Target]]:
    started = []
    for index, (name, policies, engine) in enumerate(SERVERS):
        process = start_server_process(tmp_path_factory.mktemp(f"fuzz-{index}"), "--policies", str(policies),
                                       "--cel-engine", engine, "--max-body-bytes", str(MAX_BODY), "--no-watch",
                                       "--memory-limit-mb", "2048", "--log-level", "info")
        started.append((name, process))
    try:
        targets = []
        for name, process in started:
            process.wait_ready()
            targets.append(Target(name, process.url, process.ca_file(), process.log))
        yield targets
    finally:
        close_clients()
        for _, process in started:
            assert process.stop() == 0, process.output()[-3000:]
    total = sum(TRIED.values())
    print(f"\nfuzz: {total} inputs tried ({dict(TRIED)}); replies: {dict(sorted(REPLIES.items()))}")


def in_thread(server: RunningServer, name: str) -> Target:
    return Target(name, server.base_url, server.ca_file)


def _still_answers(servers: list[Target]) -> None:
    """Each server still answers a normal review on both endpoints."""
    for server in servers:
        for path in ("/validate", "/mutate"):
            body = json.dumps(review(pod(name="after-fuzz"))).encode()
            reply = post(server, path, body, what="normal reviews after fuzzing", retry=False)
            assert reply.status_code == 200, reply.text
            check_reply(reply, body, verdict_expected=True)


# --- what a reply must look like -------------------------------------------------------------------------


def _sent_review(body: bytes) -> dict[str, Any] | None:
    """The review as the server must have read it (orjson: the same parser, the same duplicate-key rule)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def check_reply(reply: httpx.Response, body: bytes, *, verdict_expected: bool = False) -> dict[str, Any]:
    """A 4xx Status or an AdmissionReview answering this uid; never anything else. Returns the parsed reply."""
    assert reply.status_code < 500, f"{reply.status_code}: {reply.text[:2000]}"
    assert reply.headers.get("content-type") == "application/json", reply.headers
    data: dict[str, Any] = orjson.loads(reply.content)
    if reply.status_code != 200:
        REPLIES[f"{reply.status_code} {data.get('reason')}"] += 1
        assert not verdict_expected, f"expected a verdict, got {reply.status_code}: {reply.text[:2000]}"
        assert 400 <= reply.status_code < 500, reply.text[:2000]
        assert data["kind"] == "Status"
        assert data["code"] == reply.status_code
        assert isinstance(data["reason"], str)
        assert data["reason"]
        assert isinstance(data["message"], str)
        assert data["message"]
        return data
    sent = _sent_review(body)
    assert sent is not None, "a 200 for a body that is not a JSON object"
    assert data["kind"] == "AdmissionReview"
    assert data["apiVersion"] == sent["apiVersion"]
    response = data["response"]
    assert response["uid"] == sent["request"]["uid"]
    assert isinstance(response["allowed"], bool)
    REPLIES["200 " + ("allowed" if response["allowed"] else "denied")] += 1
    if not response["allowed"]:
        status = response["status"]
        assert isinstance(status["code"], int)
        assert 400 <= status["code"] < 600
        assert isinstance(status["message"], str)
        assert len(status["message"].encode()) <= 5 * 1024  # README: capped at 5 KiB
        assert "patch" not in response
    warnings = response.get("warnings", [])
    assert all(isinstance(w, str) and len(w.encode()) <= 256 for w in warnings), warnings
    assert sum(len(w.encode()) for w in warnings) <= 4000
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in response.get("auditAnnotations", {}).items())
    if "patch" in response:
        assert response["patchType"] == "JSONPatch"
        operations = orjson.loads(base64.b64decode(response["patch"], validate=True))
        assert isinstance(operations, list)
        assert operations
        assert all(isinstance(op, dict) and isinstance(op.get("op"), str) and isinstance(op.get("path"), str)
                   for op in operations)
        # The API server applies the patch to the object it sent: it must apply.
        jsonpatch.apply_patch(sent["request"]["object"], operations, in_place=True)
    return data


_CLIENTS: dict[str, httpx.Client] = {}


def close_clients(target: Target | None = None) -> None:
    """Close the clients (of one target): a server stopping waits for its TLS connections to close."""
    for url in [url for url in _CLIENTS if target is None or url == target.base_url]:
        _CLIENTS.pop(url).close()


def post(server: Target, path: str, body: bytes, content_type: str | None = "application/json",
         *, what: str, retry: bool = True) -> httpx.Response:
    """One request. The client keeps idle connections 1 s, well under uvicorn's 5 s keep-alive, so that a
    "server disconnected" is never a race with an idle timeout."""
    TRIED[what] += 1
    client = _CLIENTS.get(server.base_url)
    if client is None:
        client = _CLIENTS[server.base_url] = httpx.Client(
            base_url=server.base_url, verify=client_context(server.ca_file), timeout=60,
            limits=httpx.Limits(keepalive_expiry=1.0))
    headers = {"content-type": content_type} if content_type is not None else {}
    try:
        return client.post(path, content=body, headers=headers)
    except httpx.RemoteProtocolError:
        if not retry:
            raise
        # The connection was closed under us: after a 500 uvicorn closes it, which the 500 itself reports.
        # Once more on a new connection; a server that drops this very request fails here.
        REPLIES["reconnected"] += 1
        close_clients(server)
        return post(server, path, body, content_type, what="retried after a closed connection", retry=False)


# --- inputs ----------------------------------------------------------------------------------------------


def _secret() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "db", "namespace": "default", "labels": {"app": "db"}},
            "data": {"password": base64.b64encode(b"fuzz-password").decode()}}


def _labelled_deployment() -> dict[str, Any]:
    obj = deployment(replicas=20)
    obj["metadata"]["labels"] = {"app": "web"}
    return obj


BASES: dict[str, Callable[[], dict[str, Any]]] = {
    "pod": lambda: review(pod()),
    "pod-latest": lambda: review(pod(images=("nginx:latest", "redis"), labels={"app": "web", "fuzz-deny": "x"})),
    "pod-update-prod": lambda: review(pod(namespace="fuzz-prod"), operation="UPDATE", old=pod(namespace="fuzz-prod")),
    "deployment": lambda: deployment_review(_labelled_deployment()),
    "pod-delete": lambda: review(None, operation="DELETE", old=pod()),
    "pod-exec": lambda: review({"apiVersion": "v1", "kind": "PodExecOptions", "command": ["sh"]}, operation="CONNECT",
                               kind=("", "v1", "PodExecOptions"), resource=("", "v1", "pods"), sub_resource="exec",
                               name="web", namespace="default"),
    "secret": lambda: review(_secret(), kind=("", "v1", "Secret"), resource=("", "v1", "secrets")),
    "namespace": lambda: review({"apiVersion": "v1", "kind": "Namespace",
                                 "metadata": {"name": "team-a", "labels": {"env": "production"}}},
                                kind=("", "v1", "Namespace"), resource=("", "v1", "namespaces")),
    "v1beta1-dry-run": lambda: review(pod(labels={"app": "x"}), api_version="admission.k8s.io/v1beta1", dry_run=True),
}
WITH_OBJECT = [name for name in BASES if name != "pod-delete"]

# Number literals and near-JSON that a JSON encoder never writes; inserted as raw text.
LITERALS = ["NaN", "-NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" + "0" * 400, "18446744073709551616",
            "18446744073709551615", "9223372036854775808", "-9223372036854775809", "123456789012345678901234567890",
            "1e-400", "-0", "-0.0", "1.7976931348623157e308", "5e-324", "01", "1.", ".5", "+1", "0x10", "1_000",
            "nul", "tru", "True", "None", "undefined", "'single'", "[1,]", '{"a": 1,}', '"\\ud800"',
            '"\\udc00\\ud800"', '"\\u0000"', '"\\x41"', '"tab\tinside"', '"\\uZZZZ"', '"unterminated']
# Those orjson accepts: a review carrying them inside its object must still get a verdict.
VALID_LITERALS = ["18446744073709551616", "18446744073709551615", "9223372036854775808", "-9223372036854775809",
                  "123456789012345678901234567890", "1e-400", "-0", "-0.0", "1.7976931348623157e308", "5e-324",
                  '"\\u0000"', '"\\udbff\\udfff"']
DEPTHS = [2, 50, 253, 254, 255, 256, 400, 1000, 1023, 1024, 1025, 2000, 10_000]
HUGE_SIZES = [1_000, 65_536, 300_000, MAX_BODY + 1]
RETYPED: list[Any] = [None, True, False, 0, -1, 2**31, 1.5, "", "x", [], {}, [None], {"": None}, ["a", 1], {"a": {}}]
NASTY_BYTES = [b"\xff", b"\xfe\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\x00", b"\xe2\x82",
               b'"', b"\\", b"{", b"]", b",", b"\r\n", b"\\u", b"\x1b[31m"]
CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "application/json ;",
                 "application/json;charset=latin-1", "application/json-patch+json", "application/merge-patch+json",
                 "text/json", "text/plain", "application/yaml", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=x", "application/cbor", "*/*", "application", "", None]

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            found.extend(paths_of(inner, (*prefix, key)))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found.extend(paths_of(inner, (*prefix, index)))
    return found


def _parent(document: Any, path: tuple[Any, ...]) -> Any:
    node = document
    for part in path[:-1]:
        node = node[part]
    return node


class Markers:
    """Values that are not JSON (or too deep for an encoder) go in as unique strings, replaced as text."""

    def __init__(self) -> None:
        self.raw: dict[str, bytes] = {}

    def add(self, text: str) -> str:
        marker = f"@@fuzz-marker-{len(self.raw)}@@"
        self.raw[f'"{marker}"'] = text.encode()
        return marker

    def encode(self, document: Any) -> bytes:
        body = json.dumps(document, ensure_ascii=False).encode()
        for marker, raw in self.raw.items():
            body = body.replace(marker.encode(), raw)
        return body


def deep(depth: int, shape: str) -> str:
    if shape == "list":
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def mutate_field(data: st.DataObject, document: dict[str, Any], markers: Markers, *, inside: tuple[Any, ...] = (),
                 valid_only: bool = False) -> str:
    """One change at a path of the document (under `inside` when given); returns what it did."""
    candidates = [p for p in paths_of(document) if p[:len(inside)] == inside and len(p) > len(inside)]
    if not candidates:
        return "none"
    path = data.draw(st.sampled_from(candidates), label="path")
    parent, key = _parent(document, path), path[-1]
    kind = data.draw(st.sampled_from(["set", "retype", "delete", "rename", "huge", "deep", "literal"]),
                     label="mutation")
    if kind == "set":
        parent[key] = data.draw(json_values, label="value")
    elif kind == "retype":
        parent[key] = copy.deepcopy(data.draw(st.sampled_from(RETYPED), label="value"))
    elif kind == "delete":
        del parent[key]
    elif kind == "rename":
        if isinstance(parent, dict):
            parent[data.draw(st.text(max_size=12), label="new key")] = parent.pop(key)
        else:
            parent.insert(0, parent.pop(key))
    elif kind == "huge":
        sizes = [size for size in HUGE_SIZES if size < MAX_BODY // 4] if valid_only else HUGE_SIZES
        size = data.draw(st.sampled_from(sizes), label="size")
        unit = data.draw(st.sampled_from(["x", "é", "\u2028", "😀", "\\", '"', "\n"]), label="unit")
        parent[key] = unit * (size // len(unit.encode()))
    elif kind == "deep":
        depths = [d for d in DEPTHS if d + len(path) + 2 < 1024] if valid_only else DEPTHS
        shape = data.draw(st.sampled_from(["list", "object"]), label="shape")
        parent[key] = markers.add(deep(data.draw(st.sampled_from(depths), label="depth"), shape))
    elif kind == "literal":
        literal = data.draw(st.sampled_from(VALID_LITERALS if valid_only else LITERALS), label="literal")
        parent[key] = markers.add(literal)
    return kind


def mutate_bytes(data: st.DataObject, body: bytes) -> tuple[bytes, str]:
    kind = data.draw(st.sampled_from(["truncate", "insert", "duplicate-key", "bom", "utf-16", "trailing", "spaces"]),
                     label="byte mutation")
    if kind == "truncate":
        return body[:data.draw(st.integers(0, max(len(body) - 1, 0)), label="cut")], kind
    if kind == "insert":
        at = data.draw(st.integers(0, len(body)), label="at")
        inserted = data.draw(st.sampled_from(NASTY_BYTES) | st.binary(min_size=1, max_size=8), label="bytes")
        return body[:at] + inserted + body[at:], kind
    if kind == "duplicate-key":
        key = data.draw(st.sampled_from(["apiVersion", "kind", "request"]), label="key")
        value = json.dumps(data.draw(json_values, label="value")).encode()
        pair = b'"' + key.encode() + b'": ' + value
        return (b"{" + pair + b", " + body[1:]) if data.draw(st.booleans(), label="first") else (
            body[:-1] + b", " + pair + b"}"), kind
    if kind == "bom":
        return b"\xef\xbb\xbf" + body, kind
    if kind == "utf-16":
        return body.decode("utf-8", errors="replace").encode("utf-16"), kind
    if kind == "trailing":
        return body + data.draw(st.sampled_from([b"}", b" {}", b"\x00", b"\n\n", b"garbage", b","]), label="tail"), kind
    return b" \n\t\r" * data.draw(st.integers(1, 50), label="spaces") + body, kind


# --- properties ------------------------------------------------------------------------------------------


def test_mutated_reviews_get_a_status_or_a_verdict(servers: list[Target]) -> None:
    """Any field of a valid review changed, bodies broken as bytes, any Content-Type: 4xx Status or verdict."""

    @FUZZ
    @given(st.data())
    def check(data: st.DataObject) -> None:
        server = data.draw(st.sampled_from(servers), label="server")
        document = BASES[data.draw(st.sampled_from(sorted(BASES)), label="base")]()
        markers = Markers()
        for _ in range(data.draw(st.integers(0, 4), label="field mutations")):
            mutate_field(data, document, markers)
        body = markers.encode(document)
        if data.draw(st.integers(0, 3), label="bytes?") == 0:
            body, _ = mutate_bytes(data, body)
        content_type: str | None = "application/json"
        if data.draw(st.integers(0, 4), label="other content type?") == 0:
            content_type = data.draw(st.sampled_from(CONTENT_TYPES)
                                     | st.text(string.printable.strip(), max_size=30).map(str.strip),
                                     label="content type")
        path = data.draw(st.sampled_from(ADMISSION_PATHS), label="endpoint")
        reply = post(server, path, body, content_type, what="mutated reviews")
        parsed = check_reply(reply, body)
        media_type = (content_type or "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            assert (reply.status_code, parsed["reason"]) == (415, "UnsupportedMediaType")
        elif len(body) > MAX_BODY:
            assert (reply.status_code, parsed["reason"]) == (413, "RequestEntityTooLarge")

    check()
    _still_answers(servers)


def test_any_object_content_gets_a_verdict(servers: list[Target]) -> None:
    """Whatever JSON the object (and old object) hold, the policies decide: a 200 verdict echoing the uid,
    never a 4xx, and a /mutate patch that applies to the object sent."""

    @FUZZ
    @given(st.data())
    def check(data: st.DataObject) -> None:
        server = data.draw(st.sampled_from(servers), label="server")
        document = BASES[data.draw(st.sampled_from(WITH_OBJECT), label="base")]()
        markers = Markers()
        for _ in range(data.draw(st.integers(1, 4), label="mutations")):
            inside = ("request", data.draw(st.sampled_from(["object", "oldObject"]), label="which"))
            if document["request"][inside[1]] is None:
                inside = ("request", "object")
            mutate_field(data, document, markers, inside=inside, valid_only=True)
        body = markers.encode(document)
        path = data.draw(st.sampled_from(ADMISSION_PATHS), label="endpoint")
        check_reply(post(server, path, body, what="object contents"), body, verdict_expected=True)

    check()
    _still_answers(servers)


def test_random_bytes_and_random_json_are_refused_with_a_status(servers: list[Target]) -> None:
    @FUZZ
    @given(st.data())
    def check(data: st.DataObject) -> None:
        server = data.draw(st.sampled_from(servers), label="server")
        body = data.draw(st.binary(max_size=2048) | json_values.map(lambda v: json.dumps(v).encode())
                         | st.text(max_size=200).map(str.encode), label="body")
        reply = post(server, data.draw(st.sampled_from(ADMISSION_PATHS), label="endpoint"), body,
                     what="random bytes")
        check_reply(reply, body)
        assert 400 <= reply.status_code < 500

    check()
    _still_answers(servers)


# --- the named cases, once each --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["list", "object"])
def test_ten_thousand_levels_of_nesting_are_400(servers: list[Target], shape: str) -> None:
    whole = deep(10_000, shape).encode()
    inside = Markers()
    document = review(pod())
    document["request"]["object"]["spec"]["deep"] = inside.add(deep(10_000, shape))
    for server in servers:
        for body in (whole, inside.encode(document)):
            for path in ("/validate", "/mutate"):
                reply = post(server, path, body, what="named cases")
                assert check_reply(reply, body)["reason"] == "InvalidJSON"
                assert reply.status_code == 400
    _still_answers(servers)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "1" + "0" * 400])
def test_nan_infinity_and_overflowing_numbers_are_400(servers: list[Target], literal: str) -> None:
    markers = Markers()
    document = review(pod())
    document["request"]["object"]["spec"]["priority"] = markers.add(literal)
    body = markers.encode(document)
    for server in servers:
        reply = post(server, "/validate", body, what="named cases")
        assert (reply.status_code, check_reply(reply, body)["reason"]) == (400, "InvalidJSON")


def test_objects_nested_a_thousand_levels_get_a_verdict(servers: list[Target]) -> None:
    """Deeper than orjson can write (254) but within what it reads (1,024): still a verdict on every server."""
    for depth in (300, 1000):
        markers = Markers()
        document = review(pod(labels={"app": "web"}))
        document["request"]["object"]["spec"]["deep"] = markers.add(deep(depth, "object"))
        body = markers.encode(document)
        for server in servers:
            for path in ("/validate", "/mutate"):
                check_reply(post(server, path, body, what="named cases"), body, verdict_expected=True)


# --- bugs found by the fuzzing (failing until fixed) ---------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


def test_deeply_nested_objects_keep_their_decision_event(tmp_path: Path, cert_dir: Path, receiver: Receiver) -> None:
    """Was a bug (fixed): with a subscriber that has `includeObject: true`, the decision event of an object
    nested deeper than orjson can serialise (254 levels) is lost for every subscriber:

    - the object deeper than 254 levels (counting the object itself): `EventRecorder.record_admission`
      (webhook/events/service.py:163) calls `orjson.dumps(object_)`, which raises "Recursion limit reached"; the
      whole event is dropped (counted as webhook_events_dropped_total{reason="error"}), also for subscribers that
      never asked for the object (here: 300);
    - 253 or 254 levels: the recorder's dumps succeeds, but `EventDeliverer._route` (service.py:251) wraps the
      object two levels deeper in {"data": {"object": ...}}; that dumps raises, `ingest` (service.py:232) logs
      "skipping an unreadable record" and the event is gone without being counted anywhere (here: 251 under
      spec, 253 in all).

    The API server admits such objects (custom resources with x-kubernetes-preserve-unknown-fields; its own JSON
    depth limit is 10,000), so an object's author can keep their change out of the audit stream.
    Proposed fix: when the object cannot be serialised, spool and send the event without it (and say so in the
    data, e.g. `objectOmitted: "nested too deeply"`) instead of dropping the event: catch orjson.JSONEncodeError
    around the object's dumps in record_admission, and per subscriber in _route fall back to the plain event.
    """
    path = tmp_path / "subscribers.yaml"
    path.write_text(yaml.safe_dump({"subscribers": [
        {"name": "full", "sink": receiver.url, "includeObject": True,
         "filters": [{"prefix": {"type": "dev.webhook.admission."}}]}]}))
    settings = Settings(policies=FUZZ_POLICIES, watch_policies=False, subscribers=path, state_dir=tmp_path / "state")
    depths = (10, 251, 300, 2)  # the last one, shallow, is sent after the others: when it is delivered, the
    uids = []                    # deliverer has ingested what came before it
    with running_server(settings, cert_dir) as running:
        server = in_thread(running, "events")
        for depth in depths:
            document = review(pod(name=f"deep-{depth}"))
            markers = Markers()
            document["request"]["object"]["spec"]["deep"] = markers.add(deep(depth, "object"))
            body = markers.encode(document)
            check_reply(post(server, "/validate", body, what="named cases"), body, verdict_expected=True)
            uids.append(document["request"]["uid"])
        close_clients(server)

        def delivered() -> set[str]:
            return {event.get_data()["uid"] for event in receiver.events("dev.webhook.admission.")}

        wait_for(lambda: {uids[0], uids[-1]} <= delivered(), what="the shallow objects' events")
        with contextlib.suppress(AssertionError):  # the others were in flight with the last one: a short grace
            wait_for(lambda: set(uids) <= delivered(), timeout=3, what="every decision event")
        metrics = running.client.get("/metrics").text
    dropped = [line for line in metrics.splitlines() if line.startswith("webhook_events_dropped_total")]
    missing = [depth for depth, uid in zip(depths, uids, strict=True) if uid not in delivered()]
    print(f"events lost for depths {missing}; {dropped}")
    assert missing == [], f"decision events lost for objects nested {missing} levels deep ({dropped})"


def test_a_deep_object_on_mutate_does_not_flood_the_log(servers: list[Target]) -> None:
    """Was a bug (fixed): one 6 KB review whose object is nested 900 levels deep makes `apply_operations`
    (webhook/patches.py:86) hit RecursionError in `copy.deepcopy`; `admit` (webhook/admission.py:107) catches it
    with `log.exception`, writing a traceback of about a thousand frames (about 150 KB) per request, and marks
    every policy of the request "internal error" (a Fail policy then denies). Anyone who can reach /mutate
    multiplies the log volume ~25 times per byte sent. (In the pytest process itself this does not show:
    hypothesis raises the interpreter's recursion limit, which is why the fuzz targets are real processes.)
    Proposed fix: copy only along the patched paths instead of deep-copying the document (or catch
    RecursionError in apply_operations and make it a PatchError of that policy), and log unexpected evaluation
    errors with a bounded traceback (`log.error("...: %s", traceback.format_exc(limit=10))`).
    """
    target = servers[0]
    markers = Markers()
    document = review(pod(labels={"app": "web"}))
    document["request"]["object"]["spec"]["deep"] = markers.add(deep(900, "object"))
    body = markers.encode(document)
    sentinel = review(pod(name="log-sentinel", namespace="sentinel"))
    before = target.log_size()
    check_reply(post(target, "/mutate", body, what="named cases"), body, verdict_expected=True)
    # A denied review logs one line; once it is in the file, so is everything the deep review logged.
    sentinel_body = json.dumps({**sentinel, "request": {**sentinel["request"], "userInfo": {"username": "x" * 2000}}})
    post(target, "/validate", sentinel_body.encode(), what="named cases")
    wait_for(lambda: sentinel["request"]["uid"] in target.log.read_text(errors="replace")[before:]  # type: ignore[union-attr]
             , what="the sentinel's log line")
    logged = target.log_size() - before
    print(f"request body {len(body)} bytes, logged {logged} bytes")
    assert logged < 32 * 1024, f"one {len(body)}-byte request wrote {logged} bytes of log"


NOT_JSON = DATA / "fuzz" / "not-json"
NOT_JSON_CASES = ("bytes-value", "duration-value", "error-in-list", "error-in-map", "error-in-apply-configuration",
                  "python-set-value", "python-timedelta-value")


@pytest.mark.parametrize("engine", ["builtin", "cel-expr-python", "cel-python"])
def test_values_that_are_not_json_are_policy_faults_not_http_500(cert_dir: Path, engine: str) -> None:
    """Was a bug (fixed): README "Failures" says a fault never becomes an HTTP 500, but a mutation whose value
    is not JSON is put into the patch as it is, and `build_response` (webhook/reviews.py:102, called outside any
    try in webhook/server.py:180) fails in `orjson.dumps`: HTTP 500, and uvicorn closes the connection (the API
    server's next request on it fails too). Found by test_mutated_reviews_get_a_status_or_a_verdict on cel-python
    (an ApplyConfiguration over a Deployment without spec.template). Cases (tests/data/fuzz/not-json/):

    - cel-python: an error inside a list or map literal is a *value* (celpy's CELEvalError), not an exception:
      `[{'value': string(object.spec.missing)}]`, `{'a': [...]}` and every ApplyConfiguration `Object{...}` whose
      fields read a missing field. `_CelpyProgram.evaluate` (webhook/policies/cel.py:333-345) checks only the top-level
      value, and `CelpyEngine.to_plain` (cel.py:432-448) passes unknown types through unchanged;
    - both engines: CEL bytes (`b'abc'`), and on cel-expr-python durations (cel-python refuses them as a fault,
      an engine difference);
    - Python policies: a patch value that is not JSON (a set, a timedelta).

    Proposed fix: `to_plain` raises CelEvaluationError on a CELEvalError anywhere in the result (cel-python) and
    on values JSON cannot hold (bytes, durations; timestamps are turned into RFC 3339 by orjson on cel-expr-python
    but refused on cel-python: pick one); `check_operation` (webhook/patches.py) checks that `value` is plain
    JSON (dict with str keys, list, str, int, finite float, bool, None) and raises PatchError otherwise, which
    makes it a fault of that policy; and as a last guard build the response inside the try that makes faults.
    """
    settings = Settings(policies=NOT_JSON, cel_engine=engine, watch_policies=False)
    answers: dict[str, int | str] = {}
    with running_server(settings, cert_dir) as running:
        server = in_thread(running, engine)
        for case in NOT_JSON_CASES:
            document = review(pod(name=case, labels={"case": case}))
            body = json.dumps(document).encode()
            reply = post(server, "/mutate", body, what="named cases")
            answers[case] = reply.status_code
            if reply.status_code == 200:
                response = check_reply(reply, body)["response"]
                fault = any(text in str(response) for text in (  # the Policy kind's wording, then Kubernetes'
                    "policy fault", " resulted in error: ", "denied request: internal error while evaluating"))
                answers[case] = "fault" if not response["allowed"] and fault else "other"
        close_clients(server)
        # The server is still up for the next request, as after any fault.
        assert isinstance(running.mutate(review(pod()))["allowed"], bool)
    print(f"{engine}: {answers}")
    assert {case: answer for case, answer in answers.items() if answer != "fault"} == {}


def test_numbers_beyond_int64_give_the_same_verdict_on_every_engine(servers: list[Target]) -> None:
    """Was a bug (fixed): a JSON integer beyond int64 (valid JSON, e.g. 18446744073709551615 in a custom
    resource) is converted fine by cel-expr-python, but on cel-python `CelpyEngine._convert`
    (webhook/policies/cel.py:387-396) raises ValueError("overflow") from celtypes.IntType. The error escapes the
    evaluator, so `admit` (webhook/admission.py:106-109) marks *every* policy of the request, Python ones included,
    "internal error while evaluating: ValueError: overflow" and denies: the verdict depends on the engine.
    Proposed fix: in `_convert`, ints outside [-2**63, 2**64) become DoubleType (what Kubernetes' JSON decoding
    does with numbers that do not fit int64), ints in [2**63, 2**64) UintType; and convert inside the
    per-policy try so that a conversion problem is a fault of the policies that read the object, not of all.
    """
    markers = Markers()
    document = review(pod(name="big-number"))
    document["request"]["object"]["spec"]["priority"] = markers.add("18446744073709551615")
    body = markers.encode(document)
    verdicts = {}
    for (name, _, _), server in zip(SERVERS[:FUZZ_SERVERS], servers[:FUZZ_SERVERS], strict=True):
        response = check_reply(post(server, "/validate", body, what="named cases"), body, verdict_expected=True)
        verdicts[name] = (response["response"]["allowed"], response["response"].get("status", {}).get("message", ""))
    print(verdicts)
    assert not any("internal error" in message for _, message in verdicts.values()), verdicts
    assert len({allowed for allowed, _ in verdicts.values()}) == 1, verdicts


def test_deep_values_in_fields_the_server_reads_are_not_500(servers: list[Target]) -> None:
    """Was a bug (fixed), found by the long fuzz run (WEBHOOK_FUZZ_EXAMPLES=3000): a value nested about a
    thousand levels deep (orjson reads up to 1,024) where the server formats or converts it recursively raises
    RecursionError outside every handler: HTTP 500 and the connection closed.

    - `apiVersion` or `kind` deep: `parse_review` (webhook/reviews.py:77) puts `{kind!r} {api_version!r}` in the
      message; repr recurses. Proposed fix: describe a non-string with its type only
      (`type(value).__name__`), and cut strings to a few hundred characters.
    - a label value deep (object or old object): `labels_of` (webhook/policies/matching.py:120) does `str(v)` for
      every label; it runs in `matching_policies`, called by `admit` (webhook/admission.py:83) before the try
      that turns errors into faults. Proposed fix: labels whose key or value is not a string do not match any
      selector (the API server only ever sends strings), so keep only `isinstance(v, str)` pairs; and move
      matching into the try.
    The API server validates both, so only a direct caller sends these; a 500 is still never the answer.
    """
    cases = {}
    for field in ("apiVersion", "kind"):
        markers = Markers()
        document = review(pod())
        document[field] = markers.add(deep(1000, "list"))
        cases[f"{field} nested 1000 deep"] = markers.encode(document)
    for which in ("object", "oldObject"):
        markers = Markers()
        document = review(pod(labels={"app": "x"}), operation="UPDATE", old=pod(labels={"app": "x"}))
        document["request"][which]["metadata"]["labels"]["app"] = markers.add(deep(990, "object"))
        cases[f"a label of the {which} nested 990 deep"] = markers.encode(document)
    statuses = {}
    for what, body in cases.items():
        reply = post(servers[0], "/validate", body, what="named cases")
        statuses[what] = reply.status_code
    print(statuses)
    assert {what: status for what, status in statuses.items() if status >= 500} == {}
