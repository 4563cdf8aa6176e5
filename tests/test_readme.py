"""README facts that drift from the code: counts, the endpoints, how to register and where keys go (issue 17)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import RunningServer
from webhook import testing
from webhook.policies.cel import make_engine
from webhook.policies.loader import load_policy_set

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"\n{title}\n")
    following = re.search(r"\n#{2,3} ", README[start + len(title) + 2:])
    return README[start: start + len(title) + 2 + (following.start() if following else len(README))]


def test_readme_counts_match_the_shipped_library() -> None:
    policies = ROOT / "policies"
    policy_set = load_policy_set(policies, engine=make_engine("builtin"))
    files = testing.test_files(policies)
    results, problems = testing.run(policy_set, files)
    assert problems == []
    assert f"{len(policy_set.policies)} policies, {len(results)} `webhook test` cases" in README
    sample = re.search(r"^(\d+) cases in (\d+) files: (\d+) passed, (\d+) failed$", README, re.MULTILINE)
    assert sample is not None
    assert (int(sample[1]), int(sample[2])) == (len(results), len(files))
    assert int(sample[3]) + int(sample[4]) == len(results)


def test_endpoints_table_lists_every_route(fast_server: RunningServer) -> None:
    table = _section("## Endpoints")
    paths = {route.path for route in fast_server.app.routes if getattr(route, "path", "").startswith("/")
             and not route.path.startswith(("/docs", "/openapi", "/redoc"))}
    assert {"/validate/fail", "/validate/ignore", "/mutate/fail", "/mutate/ignore"} <= paths
    missing = [path for path in sorted(paths) if f"`POST {path}`" not in table and f"`GET {path}`" not in table]
    assert missing == []


def test_registering_by_url_points_at_the_command_instead_of_a_copy() -> None:
    section = _section("### Registering by URL")
    assert "kind: ValidatingWebhookConfiguration" not in section  # a copy drifts from what register generates
    assert "webhook register --url https://<host>:8443 --ca-file .webhook/certs/ca.crt --dry-run" in section


def test_readme_commands_keep_keys_out_of_the_tracked_certs_folder() -> None:
    assert "--dir certs" not in README
    assert re.search(r"(?<![\w./])certs/ca\.crt", README) is None  # only .webhook/certs/ca.crt
    assert "/.webhook/" in (ROOT / ".gitignore").read_text().splitlines()


def test_readyz_wording_says_what_happens_when_registered_by_url() -> None:
    assert "so no review is answered from an empty cache" not in README
    cluster = _section("### Live cluster state")
    assert "Registered by URL there is no Service and no readiness gate" in cluster
    assert "fault under their `failurePolicy`" in cluster
