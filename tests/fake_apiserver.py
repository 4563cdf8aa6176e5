"""A small real HTTP server speaking the part of the Kubernetes API the real `kubernetes` client needs here.

Only the boundary we cannot run on these machines is faked: the client, its configuration loading and its
serialisation are the real ones. Objects live in a dict; resourceVersion is checked on replace.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

ADMISSION = "/apis/admissionregistration.k8s.io/v1/"


class FakeAPIServer:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}  # (collection, name) -> object
        self.requests: list[tuple[str, str, dict[str, Any] | None]] = []
        self.refuse_with: int | None = None  # answer every request with this status
        self._version = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

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
                if not self.path.startswith(ADMISSION):
                    self._answer(404, _status(404, "NotFound", self.path))
                    return
                collection, _, name = self.path.removeprefix(ADMISSION).split("?")[0].partition("/")
                status, answer = fake.handle(self.command, collection, name, body)
                self._answer(status, answer)

            do_GET = do_POST = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def handle(self, method: str, collection: str, name: str, body: dict[str, Any] | None
               ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if method == "GET":
                found = self.objects.get((collection, name))
                return (200, found) if found else (404, _status(404, "NotFound", f"{collection} {name} not found"))
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

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "admin", "user": {"token": "test-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "admin"}}]}))
        return path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
            "message": message}
