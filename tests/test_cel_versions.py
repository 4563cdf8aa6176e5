"""The Kubernetes CEL environment per version (`--kubernetes-version`): each library is absent below the version
whose base environment introduced it and present from it on, as staging/src/k8s.io/apiserver/pkg/cel/environment/
base.go in kubernetes/kubernetes declares them (IP and CIDR 1.30, the format library and authz selectors 1.31,
two-variable comprehensions 1.32, semver and image 1.33); a compile error on an older version says which version
has the function."""

from __future__ import annotations

from pathlib import Path

import pytest
from cel_expr_python import cel

from webhook.cel.environment import CelCompileError, Environment, parse_version
from webhook.cel.kubernetes.library import INTRODUCED, NEWEST_VERSION, OLDEST_VERSION, OVERLOADS
from webhook.cli import main

VERSIONS = [(1, minor) for minor in range(OLDEST_VERSION[1], NEWEST_VERSION[1] + 1)]
EXAMPLES = [  # (expression, the version that introduced what it uses)
    ("quantity('1').isGreaterThan(quantity('0'))", (1, 30)),
    ("ip('10.0.0.1').family() == 4 && cidr('10.0.0.0/8').containsIP(ip('10.0.0.1'))", (1, 30)),
    ("url('https://example.com').getHost() == 'example.com'", (1, 30)),
    ("sets.contains([1, 2], [1])", (1, 30)),
    ("format.dns1123Label().validate('a') == optional.none()", (1, 31)),
    ("format.named('dns1123Label').hasValue()", (1, 31)),
    ("{'a': 1}.all(k, v, v > 0)", (1, 32)),
    ("[1, 2].transformList(i, v, v * 2) == [2, 4]", (1, 32)),
    ("isSemver('1.2.3') && semver('1.2.3').major() == 1", (1, 33)),
    ("image('registry.example.com/app:1.0').registry() == 'registry.example.com'", (1, 33)),
]


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: f"{v[0]}.{v[1]}")
@pytest.mark.parametrize(("source", "introduced"), EXAMPLES, ids=[e[0][:40] for e in EXAMPLES])
def test_each_library_exists_from_its_version_on(source: str, introduced: tuple[int, int],
                                                 version: tuple[int, int]) -> None:
    environment = Environment({"object": cel.Type.DYN}, kubernetes_version=version)
    if version >= introduced:
        assert environment.compile(source).evaluate({}) is True
        return
    with pytest.raises(CelCompileError) as raised:
        environment.compile(source)
    assert f"Kubernetes {introduced[0]}.{introduced[1]} has it" in raised.value.message
    assert f"this environment is Kubernetes {version[0]}.{version[1]}" in raised.value.message


def test_every_gated_overload_is_a_real_one_and_the_newest_version_has_them_all() -> None:
    ids = {overload.id for overload in OVERLOADS}
    assert set(INTRODUCED) <= ids
    assert all(OLDEST_VERSION < version <= NEWEST_VERSION for version in INTRODUCED.values())


def test_a_field_selector_on_an_authorizer_check_needs_1_31() -> None:
    variables = {"authorizer": cel.Type("kubernetes.authorization.Authorizer")}
    source = "authorizer.group('').resource('pods').fieldSelector('spec.nodeName=n').check('list').allowed()"
    Environment(variables, kubernetes_version=(1, 31)).compile(source)
    with pytest.raises(CelCompileError, match=r"Kubernetes 1\.31 has it"):
        Environment(variables, kubernetes_version=(1, 30)).compile(source)


@pytest.mark.parametrize(("text", "expected"), [("1.30", (1, 30)), ("v1.33", (1, 33)), ("1.31.4", (1, 31))])
def test_versions_parse(text: str, expected: tuple[int, int]) -> None:
    assert parse_version(text) == expected


@pytest.mark.parametrize("text", ["1.29", "1.34", "2.0", "latest", ""])
def test_unsupported_versions_are_refused_with_the_range(text: str) -> None:
    with pytest.raises(ValueError, match=r"1\.30 to 1\.33"):
        parse_version(text)


POLICY = """apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: dns-names
spec:
  matchConstraints:
    resourceRules:
      - apiGroups: [""]
        apiVersions: ["v1"]
        operations: ["CREATE"]
        resources: ["configmaps"]
  validations:
    - expression: >-
        !format.dns1123Label().validate(object.metadata.name).hasValue()
"""


def test_lint_points_at_a_function_the_chosen_kubernetes_lacks(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "dns-names.yaml").write_text(POLICY)
    assert main(["lint", str(tmp_path), "--kubernetes-version", "1.31"]) == 0
    capsys.readouterr()
    assert main(["lint", str(tmp_path), "--kubernetes-version", "1.30"]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'dns-names.yaml'}:14:" in out
    assert "undeclared reference to 'format'" in out
    assert "Kubernetes 1.31 has it; this environment is Kubernetes 1.30" in out


def test_serve_refuses_an_unsupported_kubernetes_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--kubernetes-version", "1.28"])
    assert exited.value.code == 2
    assert "Kubernetes 1.28 is not supported: 1.30 to 1.33" in capsys.readouterr().err
