"""`webhook test`: the policy author's test runner, on every engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import DATA
from webhook.cli import main
from webhook.policies.cel import ENGINE_NAMES

EXAMPLES = DATA / "testing"


def run(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    code = main(["test", *arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_examples_pass_on_every_engine(capsys: pytest.CaptureFixture[str], engine: str) -> None:
    code, out, _ = run(capsys, str(EXAMPLES), "--cel-engine", engine)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[-1] == "5 cases in 1 files: 5 passed, 0 failed"
    assert f"PASS  {EXAMPLES}/cases.test.yaml:36  a latest tag in a deployment template is denied" in lines


def test_a_failing_case_says_why_with_a_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("no-latest.yaml", "budget.py"):
        (tmp_path / name).write_text((EXAMPLES / name).read_text())
    (tmp_path / "wrong.test.yaml").write_text("""\
apiVersion: webhook.dev/v1alpha1
kind: PolicyTest
metadata: {name: wrong}
spec:
  resources:
    pinned: {apiVersion: v1, kind: Pod, metadata: {name: p, namespace: d}, spec: {containers: [{name: a, image: x:1}]}}
  cases:
    - name: expects the wrong verdict
      object: {apiVersion: v1, kind: Pod, metadata: {name: p, namespace: d}, spec: {containers: [{name: a, image: x}]}}
      expect: {allowed: true}
    - name: expects the wrong object
      object: pinned
      expect:
        allowed: true
        warnings: ["nothing like this"]
        object: pinned
""")
    code, out, _ = run(capsys, str(tmp_path))
    assert code == 1
    lines = out.splitlines()
    assert f"FAIL  {tmp_path}/wrong.test.yaml:8  expects the wrong verdict" in lines
    assert "        expected allowed, got denied: no-latest: pin an image tag (/spec)" in lines
    assert "        the object after mutation differs from the expected object" in lines
    assert "        +    imagePullPolicy: IfNotPresent" in lines  # the diff, expected vs actual
    assert "        no warning contains 'nothing like this' (warnings: [])" in lines
    assert lines[-1] == "2 cases in 1 files: 0 passed, 2 failed"


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(EXAMPLES), "--output", "json")
    assert code == 0
    report = json.loads(out)
    assert (report["passed"], report["failed"]) == (5, 0)
    case = report["cases"][1]
    assert case["name"] == "a latest tag in a deployment template is denied"
    assert case["response"]["code"] == 403
    assert case["line"] == 36


def test_bad_test_files_are_reported_with_positions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "no-latest.yaml").write_text((EXAMPLES / "no-latest.yaml").read_text())
    (tmp_path / "bad.test.yaml").write_text("""\
apiVersion: webhook.dev/v1alpha1
kind: PolicyTest
metadata: {name: bad}
spec:
  policies: [no-latest, not-there]
  cases:
    - name: one
      object: missing-resource
      expect: {allowed: true, verdict: yes}
""")
    code, _, err = run(capsys, str(tmp_path / "bad.test.yaml"))
    assert code == 2
    assert f"{tmp_path}/bad.test.yaml:9:31: unknown field 'verdict'" in err.splitlines()
    (tmp_path / "bad.test.yaml").write_text((tmp_path / "bad.test.yaml").read_text().replace(", verdict: yes", ""))
    code, _, err = run(capsys, str(tmp_path / "bad.test.yaml"))
    assert code == 2
    assert f"{tmp_path}/bad.test.yaml:5:13: no policy named not-there" in err.splitlines()


def test_policies_that_do_not_load_stop_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "broken.yaml").write_text("apiVersion: webhook.dev/v1alpha1\nkind: Policy\nmetadata: {name: x}\n")
    code, _, err = run(capsys, str(tmp_path))
    assert code == 2
    assert "do not load" in err
