from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fake_apiserver import FakeAPIServer
from tests.helpers import TEST_POLICIES, RunningServer, ServerProcess, running_server, start_server_process
from tests.receivers import Answer, Receiver, healthy
from webhook.config import Settings
from webhook.policies.cel import ENGINE_NAMES


@pytest.fixture(scope="session")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("certs")


@pytest.fixture(scope="session", params=ENGINE_NAMES)
def server(request: pytest.FixtureRequest, cert_dir: Path) -> Iterator[RunningServer]:
    """One server per CEL engine over tests/data/policies, shared by the tests that only read."""
    settings = Settings(policies=TEST_POLICIES, cel_engine=request.param, watch_policies=False)
    with running_server(settings, cert_dir) as running:
        yield running


@pytest.fixture(scope="session")
def fast_server(cert_dir: Path) -> Iterator[RunningServer]:
    """The default engine only, for tests about the HTTP edge rather than policy semantics."""
    settings = Settings(policies=TEST_POLICIES, watch_policies=False, max_body_bytes=64 * 1024)
    with running_server(settings, cert_dir) as running:
        yield running


@pytest.fixture
def server_processes(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start `webhook serve` processes under tmp_path; every one is stopped at the end of the test."""
    started: list[ServerProcess] = []

    def start(*arguments: str, directory: Path | None = None) -> ServerProcess:
        process = start_server_process(directory or tmp_path, *arguments)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def api() -> Iterator[FakeAPIServer]:
    """A small real Kubernetes API server (tests/fake_apiserver.py) for one test, closed after it."""
    server = FakeAPIServer()
    yield server
    server.close()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    """Make real HTTP subscriber receivers on 127.0.0.1 (healthy by default); all closed after the test."""
    made: list[Receiver] = []

    def make(behaviour: Callable[[int], Answer] = healthy) -> Receiver:
        receiver = Receiver(behaviour)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.close()
