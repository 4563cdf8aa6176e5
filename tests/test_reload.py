"""Hot reload: a new set replaces the old one only when it compiles; broken sets are reported, not served."""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import DATA, RunningServer, pod, review, running_server, wait_for
from webhook.config import Settings

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
    - expression: "{expression}"
      message: "{message}"
"""


def policy(expression: str = "has(object.metadata.labels)", message: str = "first version") -> str:
    return POLICY.format(expression=expression, message=message)


@pytest.fixture
def live(tmp_path: Path, cert_dir: Path) -> Iterator[tuple[RunningServer, Path]]:
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "team.yaml").write_text(policy())
    with running_server(Settings(policies=directory), cert_dir) as server:
        yield server, directory


def _message(server: RunningServer) -> str | None:
    response = server.validate(review(pod()))
    return None if response["allowed"] else response["status"]["message"]


def test_edited_policy_is_served_after_reload(live: tuple[RunningServer, Path]) -> None:
    server, directory = live
    assert _message(server) == "team-label: first version"
    (directory / "team.yaml").write_text(policy(message="second version"))
    wait_for(lambda: _message(server) == "team-label: second version", what="reload")


def test_broken_edit_keeps_the_last_good_set_and_says_where(live: tuple[RunningServer, Path]) -> None:
    server, directory = live
    (directory / "team.yaml").write_text(policy(expression="object.metadata.name ==", message="broken"))
    detail = wait_for(lambda: server.client.get("/readyz").json().get("lastLoadFailed") and
                      server.client.get("/readyz").json(), what="rejected reload")
    assert detail["ready"] is True
    assert any(problem.startswith(f"{directory / 'team.yaml'}:13:") and "CEL compile error" in problem
               for problem in detail["problems"]), detail["problems"]
    assert _message(server) == "team-label: first version"
    assert "webhook_policy_set_healthy 0.0" in server.client.get("/metrics").text
    (directory / "team.yaml").write_text(policy(message="fixed"))
    wait_for(lambda: _message(server) == "team-label: fixed", what="recovery")
    assert "lastLoadFailed" not in server.client.get("/readyz").json()


def test_added_and_removed_files_are_picked_up(live: tuple[RunningServer, Path]) -> None:
    server, directory = live
    (directory / "team.yaml").unlink()
    wait_for(lambda: _message(server) is None, what="removal")
    (directory / "again.yaml").write_text(policy(message="again"))
    wait_for(lambda: _message(server) == "team-label: again", what="addition")


def _configmap_version(directory: Path, name: str, content: str) -> None:
    """Do what the kubelet does for a ConfigMap volume: new dir, then an atomic rename of the ..data link."""
    version = directory / name
    version.mkdir()
    (version / "team.yaml").write_text(content)
    temporary = directory / "..data_tmp"
    os.symlink(name, temporary)
    os.replace(temporary, directory / "..data")


def test_configmap_symlink_swap_is_reloaded(tmp_path: Path, cert_dir: Path) -> None:
    directory = tmp_path / "mounted"
    directory.mkdir()
    _configmap_version(directory, "..2026_11_23_01", policy(message="from configmap v1"))
    os.symlink("..data/team.yaml", directory / "team.yaml")
    with running_server(Settings(policies=directory), cert_dir) as server:
        assert _message(server) == "team-label: from configmap v1"
        _configmap_version(directory, "..2026_11_23_02", policy(message="from configmap v2"))
        wait_for(lambda: _message(server) == "team-label: from configmap v2", what="configmap swap")
        assert server.client.get("/readyz").json()["policies"] == 1


def test_broken_directory_at_start_is_not_ready(tmp_path: Path, cert_dir: Path) -> None:
    directory = tmp_path / "broken"
    directory.mkdir()
    (directory / "team.yaml").write_text("apiVersion: webhook.dev/v1alpha1\nkind: Policy\nmetadata: [\n")
    with running_server(Settings(policies=directory), cert_dir) as server:
        ready = server.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["problems"][0].startswith(f"{directory / 'team.yaml'}:")
        reply = server.client.post("/validate", json=review(pod()))
        assert reply.status_code == 503
        assert reply.json()["reason"] == "ServiceUnavailable"
        (directory / "team.yaml").write_text(policy(message="now good"))
        wait_for(lambda: server.client.get("/readyz").status_code == 200, what="first good load")
        assert _message(server) == "team-label: now good"


def test_fingerprint_follows_underscore_helpers(tmp_path: Path) -> None:
    """A `_helper.py` that policy modules import is not a policy file, but editing it must reload them."""
    from webhook.policies.loader import fingerprint

    (tmp_path / "_helper.py").write_text("LIMIT = 1\n")
    before = fingerprint(tmp_path)
    (tmp_path / "_helper.py").write_text("LIMIT = 22\n")
    assert fingerprint(tmp_path) != before


def test_a_reload_collects_the_replaced_set_and_freezes_the_heap(tmp_path: Path, cert_dir: Path) -> None:
    """After each load the server collects and freezes its heap (full collections then walk only what requests
    made); the set a reload replaced (a Python policy's module makes it cyclic) is collected by that reload."""
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "team.yaml").write_text(policy())
    (directory / "python_policies.py").write_text((DATA / "policies" / "python_policies.py").read_text())
    with running_server(Settings(policies=directory), cert_dir) as server:
        store = server.app.state.store
        replaced = weakref.ref(store.current)
        assert gc.get_freeze_count() > 0
        (directory / "team.yaml").write_text(policy(message="second version"))
        wait_for(lambda: _message(server) == "team-label: second version", what="reload")
        wait_for(lambda: replaced() is None, what="the replaced policy set collected")
        assert gc.get_freeze_count() > 0
