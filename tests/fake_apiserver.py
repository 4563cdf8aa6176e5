"""A small real HTTP server speaking the part of the Kubernetes API the real `kubernetes` client needs here.

Only the boundary we cannot run on these machines is faked: the client, its configuration loading and its
serialisation are the real ones. Objects live in dicts with one resourceVersion counter, as in etcd.

- admissionregistration.k8s.io/v1 webhook configurations: get, create, replace (resourceVersion checked).
- core v1 `namespaces`, `pods` and `configmaps` across namespaces: list (pages with `limit`/`continue`, the
  list's resourceVersion) and watch (`?watch=true&resourceVersion=N`): a chunked stream of newline-delimited
  events replayed from an event log after N, then live (ADDED, MODIFIED, DELETED, BOOKMARK when asked), ended
  at `timeoutSeconds`. `put`/`delete` change objects while watches are open; `expire()` sends an ERROR event
  with a 410 Status to open watches and refuses watches from older versions (a compaction); `fail(500)`
  answers the core API with an error; `go_down()`/`come_back()` close the port (connections refused) and open
  it again on the same port.
- Lists and watches of a namespace (`/api/v1/namespaces/NS/configmaps`), and `fieldSelector`
  (`metadata.name`, `metadata.namespace`; `=`, `==`, `!=`) and `labelSelector` (`=`, `==`, `!=`, `in`,
  `notin`, `key`, `!key`) on both, as the API server: a filtered watch sends ADDED when an object comes to
  match, DELETED when it stops matching, and nothing for objects that match neither before nor after.
  `core_requests()` tells what was listed and watched, with which selectors.
- authorization.k8s.io/v1 `subjectaccessreviews`: create, answered per user and group from `grant`ed rules (a
  SubjectAccessReview is allowed when a rule of its user, or of one of its groups, matches every attribute the
  rule names); a raw field or label selector that does not parse is ignored with the API server's
  evaluationError note. `access_status` answers them with an error status instead (403: as without RBAC),
  `hold_access_reviews()` keeps them unanswered until `release_access_reviews()`; `access_reviews()` lists the
  specs asked.
- Other API groups (`API_RESOURCES`: apps/v1 and batch/v1 workloads, coordination.k8s.io/v1 Leases, the
  openreports.io and wgpolicyk8s.io reports): get, list (pages with `limit`/`continue`, `labelSelector`, one
  namespace or all), create (409 when it exists), replace (resourceVersion checked: 409 on a stale one), delete.
  `api_put`/`api_delete` change them from a test, `api_objects` reads them; `inject_failures(text, count,
  status)` answers the next `count` requests whose path contains `text` with `status` (an API error mid-pass).
"""

from __future__ import annotations

import bisect
import contextlib
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

ADMISSION = "/apis/admissionregistration.k8s.io/v1/"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
CORE = "/api/v1/"
CORE_KINDS = {"namespaces": "Namespace", "pods": "Pod", "configmaps": "ConfigMap"}
# group/version -> plural -> (kind, namespaced): the other API groups this fake serves (see `api_request`)
API_RESOURCES = {
    "apps/v1": {"deployments": ("Deployment", True), "statefulsets": ("StatefulSet", True),
                "daemonsets": ("DaemonSet", True), "replicasets": ("ReplicaSet", True)},
    "batch/v1": {"jobs": ("Job", True), "cronjobs": ("CronJob", True)},
    "coordination.k8s.io/v1": {"leases": ("Lease", True)},
    "openreports.io/v1alpha1": {"reports": ("Report", True), "clusterreports": ("ClusterReport", False)},
    "wgpolicyk8s.io/v1alpha2": {"policyreports": ("PolicyReport", True),
                                "clusterpolicyreports": ("ClusterPolicyReport", False)},
}


class FakeAPIServer:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}  # (collection, name) -> object
        self.core: dict[str, dict[tuple[str, str], dict[str, Any]]] = {name: {} for name in CORE_KINDS}
        # "group/version/plural" -> (namespace, name) -> object, for API_RESOURCES; failures to inject
        self.stored: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self._failures: list[list[Any]] = []  # [text in the path, requests left, status]
        self.requests: list[tuple[str, str, dict[str, Any] | None]] = []
        self.refuse_with: int | None = None  # answer every request with this status
        self.grants: list[tuple[str, dict[str, str]]] = []  # SubjectAccessReviews: (user or group:NAME, rule)
        self.access_status: int | None = None  # answer SubjectAccessReviews with this status
        self.access_error = ""  # an evaluationError that every SubjectAccessReview reports (as RBAC's)
        self._access_hold: threading.Event | None = None
        self.core_status: int | None = None  # answer the core API with this status (see fail)
        self._version = 0
        # (version, collection, type, object, the object before: for filtered watches)
        self._log: list[tuple[int, str, str, dict[str, Any], dict[str, Any] | None]] = []
        self._compacted = 0  # watches from an older resourceVersion get 410 Gone
        self._expirations = 0  # open watches get 410 Gone when this changes
        self._epoch = 0  # bumped to end every open watch (expire, fail, go_down)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._connections: set[socket.socket] = set()
        self._watching: dict[str, int] = dict.fromkeys(CORE_KINDS, 0)
        self._handler = self._handler_class()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._start()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive and chunked watch streams, as the API server

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                # as the API server (Go sets TCP_NODELAY): a response's header and body writes must not wait for the
                # client's delayed ACK (40 ms per request with a keep-alive connection)
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with fake._lock:
                    fake._connections.add(self.connection)

            def finish(self) -> None:
                with fake._lock:
                    fake._connections.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                fake.requests.append((self.command, self.path, body))
                if fake.refuse_with is not None:
                    self._answer(fake.refuse_with, _status(fake.refuse_with, "Forbidden", "not allowed"))
                    return
                url = urlsplit(self.path)
                if (injected := fake.take_failure(self.path)) is not None:
                    self._answer(injected, _status(injected, "InternalError", "an injected failure"))
                    return
                if (served := fake.api_request(self.command, url.path, parse_qs(url.query), body)) is not None:
                    self._answer(*served)
                    return
                if url.path.startswith(CORE) and self.command == "GET":
                    self._core(url.path.removeprefix(CORE), parse_qs(url.query))
                    return
                if url.path == ACCESS_REVIEWS and self.command == "POST" and body is not None:
                    self._answer(*fake.review_access(body))
                    return
                if not self.path.startswith(ADMISSION):
                    self._answer(404, _status(404, "NotFound", self.path))
                    return
                collection, _, name = url.path.removeprefix(ADMISSION).partition("/")
                status, answer = fake.handle(self.command, collection, name, body)
                self._answer(status, answer)

            def _core(self, collection: str, query: dict[str, list[str]]) -> None:
                parts = collection.split("/")
                if len(parts) == 3 and parts[0] == "namespaces" and parts[2] in CORE_KINDS:  # one namespace's
                    collection, query = parts[2], {**query, "namespace": [parts[1]]}
                try:
                    matches = _selection(query)
                except ValueError as error:
                    self._answer(400, _status(400, "BadRequest", str(error)))
                    return
                if collection not in CORE_KINDS:
                    self._answer(404, _status(404, "NotFound", self.path))
                elif fake.core_status is not None:
                    code = fake.core_status
                    self._answer(code, _status(code, "InternalError", "the fake API server is failing"))
                elif query.get("watch", ["false"])[0] in ("true", "1"):
                    self._watch(collection, query, matches)
                else:
                    self._answer(*fake.list(collection, query, matches=matches))

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def _watch(self, collection: str, query: dict[str, list[str]], matches: Any) -> None:
                since = int(query.get("resourceVersion", ["0"])[0] or 0)
                timeout = float(query.get("timeoutSeconds", ["1800"])[0])
                bookmarks = query.get("allowWatchBookmarks", ["false"])[0] == "true"
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                try:
                    for event in fake.events(collection, since, timeout=timeout, bookmarks=bookmarks,
                                             matches=matches):
                        self._chunk(json.dumps(event).encode() + b"\n")
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    self.close_connection = True

            do_GET = do_POST = do_PUT = _handle
            do_DELETE = _handle

        return Handler

    def _start(self) -> None:
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    # --- admissionregistration --------------------------------------------------------------------------

    def handle(self, method: str, collection: str, name: str, body: dict[str, Any] | None
               ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if method == "GET":
                found = self.objects.get((collection, name))
                return (200, found) if found else (404, _status(404, "NotFound", f"{collection} {name} not found"))
            if method == "DELETE":
                gone = self.objects.pop((collection, name), None)
                if gone is None:
                    return 404, _status(404, "NotFound", f"{collection} {name} not found")
                self._version += 1
                return 200, _status(200, "Success", f"{collection} {name} deleted") | {"status": "Success"}
            assert body is not None
            object_name = body["metadata"]["name"]
            if method == "POST":
                if (collection, object_name) in self.objects:
                    return 409, _status(409, "AlreadyExists", object_name)
            else:
                current = self.objects.get((collection, name))
                if current is None:
                    return 404, _status(404, "NotFound", name)
                if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                    return 409, _status(409, "Conflict", "the object has been modified")
            self._version += 1
            stored = {**body, "metadata": {**body["metadata"], "resourceVersion": str(self._version)}}
            self.objects[(collection, object_name)] = stored
            return (201 if method == "POST" else 200), stored

    # --- core v1: objects, lists and watches --------------------------------------------------------------

    def put(self, collection: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object (ADDED or MODIFIED for open watches); returns it as stored."""
        metadata = obj["metadata"]
        key = (metadata.get("namespace", ""), metadata["name"])
        with self._changed:
            self._version += 1
            kind = CORE_KINDS[collection]
            stored = {"apiVersion": "v1", "kind": kind, **obj,
                      "metadata": {"uid": f"uid-{collection}-{key[0]}-{key[1]}", **metadata,
                                   "resourceVersion": str(self._version)}}
            before = self.core[collection].get(key)
            event = "MODIFIED" if before is not None else "ADDED"
            self.core[collection][key] = stored
            self._log.append((self._version, collection, event, stored, before))
            self._changed.notify_all()
            return stored

    def delete(self, collection: str, name: str, namespace: str = "") -> None:
        with self._changed:
            gone = self.core[collection].pop((namespace, name))
            self._version += 1
            final = {**gone, "metadata": {**gone["metadata"], "resourceVersion": str(self._version)}}
            self._log.append((self._version, collection, "DELETED", final, gone))
            self._changed.notify_all()

    def bookmark(self) -> None:
        """A BOOKMARK with the current resourceVersion to the watches that asked for bookmarks."""
        with self._changed:
            self._log.append((self._version, "*", "BOOKMARK", {}, None))
            self._changed.notify_all()

    def end_watches(self) -> None:
        """End every open watch normally (as at its timeout): clients watch again from where they were."""
        with self._changed:
            self._epoch += 1
            self._changed.notify_all()

    def expire(self) -> None:
        """Compact: open watches get an ERROR event with a 410 Status, watches from older versions too."""
        with self._changed:
            self._compacted = self._version
            self._expirations += 1
            self._epoch += 1
            self._changed.notify_all()

    def fail(self, status: int | None) -> None:
        """Answer the core API with `status` (None: answer normally again); open watches end."""
        with self._changed:
            self.core_status = status
            self._epoch += 1
            self._changed.notify_all()

    def go_down(self) -> None:
        """Close the port and every connection: the client sees resets, then refused connections."""
        self.server.shutdown()
        self.server.server_close()
        with self._changed:
            self._epoch += 1
            self._changed.notify_all()
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def come_back(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler)
        self._start()

    def list(self, collection: str, query: dict[str, list[str]], *, matches: Any = None) -> tuple[int, dict[str, Any]]:
        limit = int(query.get("limit", ["0"])[0] or 0)
        token = query.get("continue", [""])[0]
        with self._lock:
            offset, version = (int(part) for part in token.split(":")) if token else (0, self._version)
            items = [self.core[collection][key] for key in sorted(self.core[collection])
                     if (matches or _everything)(self.core[collection][key])]
        page = items[offset:offset + limit] if limit else items[offset:]
        metadata: dict[str, Any] = {"resourceVersion": str(version)}
        if limit and offset + limit < len(items):
            metadata["continue"] = f"{offset + limit}:{version}"
        return 200, {"kind": f"{CORE_KINDS[collection]}List", "apiVersion": "v1", "metadata": metadata,
                     "items": page}

    def list_requests(self, collection: str) -> int:
        """How many lists (not watches) of `collection` were asked for."""
        return sum(1 for method, path, _ in self.requests
                   if method == "GET" and urlsplit(path).path == CORE + collection and "watch=true" not in path)

    def core_requests(self, collection: str) -> list[dict[str, str]]:
        """The lists and watches of `collection` asked for, in order: `watch` ("true" or ""), `namespace` (""
        across namespaces), `fieldSelector` and `labelSelector` ("" when not given)."""
        found = []
        for method, path, _ in self.requests:
            url = urlsplit(path)
            parts = url.path.removeprefix(CORE).split("/")
            if method != "GET" or not url.path.startswith(CORE) or parts[-1] != collection or len(parts) not in (1, 3):
                continue
            query = parse_qs(url.query)
            found.append({"watch": "true" if query.get("watch", [""])[0] in ("true", "1") else "",
                          "namespace": parts[1] if len(parts) == 3 else "",
                          **{key: query.get(key, [""])[0] for key in ("fieldSelector", "labelSelector")}})
        return found

    def events(self, collection: str, since: int, *, timeout: float, bookmarks: bool,
               matches: Any = None) -> Any:
        """The watch events of `collection` after version `since`, until the timeout or the watch is ended;
        with `matches` (a filter), only those of the objects it selects (before or after the change)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            epoch, expirations = self._epoch, self._expirations
            if since < self._compacted:
                yield _gone(since)
                return
            cursor = bisect.bisect_right([entry[0] for entry in self._log], since)
            self._watching[collection] += 1
        try:
            yield from self._follow(collection, since, cursor, (epoch, expirations), deadline, bookmarks,
                                    matches or _everything)
        finally:
            with self._lock:
                self._watching[collection] -= 1

    def watching(self, *collections: str) -> bool:
        """Whether a watch of each collection is open (so that an `expire()` reaches it)."""
        with self._lock:
            return all(self._watching[collection] > 0 for collection in collections)

    def _follow(self, collection: str, since: int, cursor: int, epochs: tuple[int, int], deadline: float,
                bookmarks: bool, matches: Any) -> Any:
        epoch, expirations = epochs
        while True:
            with self._changed:
                while cursor == len(self._log) and self._epoch == epoch and time.monotonic() < deadline:
                    self._changed.wait(min(0.5, max(0.0, deadline - time.monotonic())))
                pending = self._log[cursor:]
                cursor = len(self._log)
                ended = self._epoch != epoch
                expired = self._expirations != expirations
            for version, where, kind, obj, before in pending:
                if kind == "BOOKMARK" and bookmarks:
                    yield {"type": "BOOKMARK", "object": {"kind": CORE_KINDS[collection], "apiVersion": "v1",
                                                          "metadata": {"resourceVersion": str(version)}}}
                elif where == collection:
                    since = version
                    now, then = matches(obj) and kind != "DELETED", before is not None and matches(before)
                    if now or then:  # as the API server: an object that comes to match is ADDED, one that leaves
                        yield {"type": kind if now == then else ("ADDED" if now else "DELETED"), "object": obj}
            if expired:
                yield _gone(since)
            if ended or time.monotonic() >= deadline:
                return

    # --- other API groups (API_RESOURCES): workloads, Leases, reports ---------------------------------------

    def inject_failures(self, text: str, count: int = 1, status: int = 500) -> None:
        """Answer the next `count` requests whose path (with its query) contains `text` with `status`."""
        with self._lock:
            self._failures.append([text, count, status])

    def take_failure(self, path: str) -> int | None:
        with self._lock:
            for failure in self._failures:
                if failure[1] > 0 and failure[0] in path:
                    failure[1] -= 1
                    return int(failure[2])
        return None

    def api_put(self, group_version: str, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object of API_RESOURCES from a test; returns it as stored."""
        kind, namespaced = API_RESOURCES[group_version][plural]
        metadata = obj["metadata"]
        key = (metadata.get("namespace", "") if namespaced else "", metadata["name"])
        with self._lock:
            self._version += 1
            stored = {"apiVersion": group_version, "kind": kind, **obj,
                      "metadata": {"uid": f"uid-{plural}-{key[0]}-{key[1]}", **metadata,
                                   "resourceVersion": str(self._version)}}
            self.stored.setdefault(f"{group_version}/{plural}", {})[key] = stored
            return stored

    def api_delete(self, group_version: str, plural: str, name: str, namespace: str = "") -> None:
        with self._lock:
            del self.stored[f"{group_version}/{plural}"][(namespace, name)]

    def api_objects(self, group_version: str, plural: str) -> list[dict[str, Any]]:
        """The stored objects of one resource, by namespace and name."""
        with self._lock:
            found = self.stored.get(f"{group_version}/{plural}", {})
            return [found[key] for key in sorted(found)]

    def api_request(self, method: str, path: str, query: dict[str, list[str]], body: dict[str, Any] | None
                    ) -> tuple[int, dict[str, Any]] | None:
        """Serve a request for API_RESOURCES; None for any other path (left to the other handlers)."""
        found = re.fullmatch(r"/apis/([^/]+/[^/]+)/(?:namespaces/([^/]+)/)?([^/]+)(?:/([^/]+))?", path)
        if found is None or found[3] not in API_RESOURCES.get(found[1], {}):
            return None
        group_version, namespace, plural, name = found[1], found[2] or "", found[3], found[4]
        kind, namespaced = API_RESOURCES[group_version][plural]
        collection = f"{group_version}/{plural}"
        if method == "GET" and name is None:
            try:
                matches = _selection({**query, "namespace": [namespace]} if namespace else query)
            except ValueError as error:
                return 400, _status(400, "BadRequest", str(error))
            return self._api_list(group_version, plural, query, matches)
        with self._lock:
            objects = self.stored.setdefault(collection, {})
            if method == "GET" or method == "DELETE":
                current = objects.get((namespace, name or ""))
                if current is None:
                    return 404, _status(404, "NotFound", f'{plural} "{name}" not found')
                if method == "DELETE":
                    del objects[(namespace, name or "")]
                    return 200, _status(200, "Success", f"{plural} {name} deleted") | {"status": "Success"}
                return 200, current
            if body is None or method not in ("POST", "PUT"):
                return 405, _status(405, "MethodNotAllowed", method)
            object_name = body.get("metadata", {}).get("name", "")
            key = (namespace if namespaced else "", object_name if method == "POST" else name or "")
            current = objects.get(key)
            if method == "POST" and current is not None:
                return 409, _status(409, "AlreadyExists", f'{plural} "{object_name}" already exists')
            if method == "PUT" and current is None:
                return 404, _status(404, "NotFound", f'{plural} "{name}" not found')
            if method == "PUT" and body["metadata"].get("resourceVersion") not in (
                    None, current["metadata"]["resourceVersion"]):
                return 409, _status(409, "Conflict", "the object has been modified; please apply your changes "
                                    "to the latest version and try again")
            self._version += 1
            metadata = {**body.get("metadata", {}), "resourceVersion": str(self._version)}
            metadata["uid"] = current["metadata"]["uid"] if current else f"uid-{plural}-{key[0]}-{key[1]}"
            if namespaced:
                metadata["namespace"] = key[0]
            stored = {**body, "apiVersion": group_version, "kind": kind, "metadata": metadata}
            objects[key] = stored
            return (201 if method == "POST" else 200), stored

    def _api_list(self, group_version: str, plural: str, query: dict[str, list[str]], matches: Any
                  ) -> tuple[int, dict[str, Any]]:
        limit = int(query.get("limit", ["0"])[0] or 0)
        token = query.get("continue", [""])[0]
        with self._lock:
            offset, version = (int(part) for part in token.split(":")) if token else (0, self._version)
            objects = self.stored.get(f"{group_version}/{plural}", {})
            items = [objects[key] for key in sorted(objects) if matches(objects[key])]
        page = items[offset:offset + limit] if limit else items[offset:]
        metadata: dict[str, Any] = {"resourceVersion": str(version)}
        if limit and offset + limit < len(items):
            metadata["continue"] = f"{offset + limit}:{version}"
        kind = API_RESOURCES[group_version][plural][0]
        return 200, {"kind": f"{kind}List", "apiVersion": group_version, "metadata": metadata, "items": page}

    # --- authorization.k8s.io: SubjectAccessReviews --------------------------------------------------------

    def grant(self, who: str, **rule: str) -> None:
        """Allow `who` (a user name, or `group:NAME`) what `rule` names: keys of the review's resourceAttributes
        or nonResourceAttributes (verb, group, resource, subresource, namespace, name, path; fieldSelector and
        labelSelector compare the raw selector); a key the rule leaves out matches anything."""
        self.grants.append((who, rule))

    def review_access(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        hold = self._access_hold
        if hold is not None:
            hold.wait(30)
        if self.access_status is not None:
            code = self.access_status
            if code == 403:
                return code, _status(code, "Forbidden", 'subjectaccessreviews.authorization.k8s.io is forbidden: '
                                     'User "system:serviceaccount:webhook:webhook" cannot create resource '
                                     '"subjectaccessreviews" in API group "authorization.k8s.io" at the cluster '
                                     'scope')
            return code, _status(code, "InternalError", "the fake API server is failing")
        spec = body.get("spec") or {}
        who = {spec.get("user", "")} | {f"group:{group}" for group in spec.get("groups") or ()}
        attributes = dict(spec.get("resourceAttributes") or spec.get("nonResourceAttributes") or {})
        notes = [self.access_error] if self.access_error else []
        for kind, pattern in (("field", _FIELD_TERM), ("label", _REQUIREMENT)):
            raw = (attributes.get(f"{kind}Selector") or {}).get("rawSelector", "")
            if raw and not all(pattern.match(term) for term in re.split(r",(?![^()]*\))", raw)):
                notes.append(f"spec.resourceAttributes.{kind}Selector ignored due to parse error")
                attributes.pop(f"{kind}Selector")
        status: dict[str, Any] = {"allowed": False, "reason": "no rule grants it"}
        for index, (subject, rule) in enumerate(self.grants):
            if subject in who and all(_access_attribute(attributes, key) == value for key, value in rule.items()):
                status = {"allowed": True, "reason": f"granted by rule {index} ({subject})"}
                break
        if notes:
            status["evaluationError"] = "; ".join(notes)
        return 201, {**body, "status": status}

    def access_reviews(self) -> list[dict[str, Any]]:
        """The specs of the SubjectAccessReviews created so far, in order."""
        return [body["spec"] for method, path, body in list(self.requests)
                if method == "POST" and urlsplit(path).path == ACCESS_REVIEWS and body is not None]

    def hold_access_reviews(self) -> None:
        """Leave SubjectAccessReviews unanswered (a hung API server) until `release_access_reviews`."""
        self._access_hold = threading.Event()

    def release_access_reviews(self) -> None:
        hold, self._access_hold = self._access_hold, None
        if hold is not None:
            hold.set()

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "admin", "user": {"token": "test-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "admin"}}]}))
        return path

    def close(self) -> None:
        self.release_access_reviews()
        self.go_down()


def _everything(obj: dict[str, Any]) -> bool:
    return True


_FIELD_TERM = re.compile(r"^[^!=]+(==|=|!=)[^!=]*$")


def _access_attribute(attributes: dict[str, Any], key: str) -> str:
    if key in ("fieldSelector", "labelSelector"):
        return str((attributes.get(key) or {}).get("rawSelector", ""))
    return str(attributes.get(key, ""))


_REQUIREMENT = re.compile(r"^\s*(?:(?P<not>!)\s*(?P<absent>[^\s!=(),]+)|(?P<key>[^\s!=(),]+)\s*(?:(?P<op>==|=|!=)"
                          r"\s*(?P<value>[^\s!=(),]*)|\s+(?P<set>in|notin)\s*\((?P<values>[^()]*)\))?)\s*$")


def _selection(query: dict[str, list[str]]) -> Any:
    """A filter for `namespace`, `fieldSelector` and `labelSelector`; ValueError for what the API refuses."""
    tests = []
    if namespace := query.get("namespace", [""])[0]:
        tests.append(_field_test("metadata.namespace", "=", namespace))
    for term in filter(None, query.get("fieldSelector", [""])[0].split(",")):
        found = re.fullmatch(r"([^!=]+)(==|=|!=)(.*)", term)
        if found is None:
            raise ValueError(f"invalid field selector: {term!r}")
        tests.append(_field_test(*found.groups()))
    for term in re.split(r",(?![^()]*\))", query.get("labelSelector", [""])[0]):
        if term.strip():
            found = _REQUIREMENT.match(term)
            if found is None:
                raise ValueError(f"unable to parse requirement: {term!r}")
            tests.append(_label_test(found))
    return lambda obj: all(test(obj) for test in tests)


def _field_test(field: str, operator: str, value: str) -> Any:
    if field not in ("metadata.name", "metadata.namespace"):
        raise ValueError(f"field label not supported: {field}")
    name = field.removeprefix("metadata.")
    return lambda obj: (obj["metadata"].get(name, "") == value) == (operator != "!=")


def _label_test(found: re.Match[str]) -> Any:
    def labels(obj: dict[str, Any]) -> dict[str, str]:
        return obj["metadata"].get("labels") or {}

    if found["absent"]:
        return lambda obj: found["absent"] not in labels(obj)
    key = found["key"]
    if found["op"] == "!=":  # as NotIn: objects without the label match too
        return lambda obj: labels(obj).get(key) != found["value"]
    if found["op"]:
        return lambda obj: labels(obj).get(key) == found["value"]
    if found["set"]:
        values = {value.strip() for value in found["values"].split(",")}
        if found["set"] == "in":
            return lambda obj: labels(obj).get(key) in values
        return lambda obj: labels(obj).get(key) not in values
    return lambda obj: key in labels(obj)


def _gone(version: int) -> dict[str, Any]:
    return {"type": "ERROR", "object": _status(410, "Expired", f"too old resource version: {version}")}


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
            "message": message}
