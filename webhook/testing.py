"""`webhook test PATH`: the policy author's test runner.

Test files are YAML documents of kind `PolicyTest` (apiVersion webhook.dev/v1alpha1) anywhere in the policy
directory (the loader skips them). Each case is an admission request decided by the loaded policies exactly
as the server decides it: mutating policies first, then validating policies on the mutated object, as the
API server calls webhooks. A bad test file is reported as `path:line:column`, like a bad policy file.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from pydantic import Field, ValidationError, model_validator

from webhook.admission import admit
from webhook.errors import SourceProblem
from webhook.patches import PatchError, apply_operations
from webhook.policies.compiled import PolicySet
from webhook.policies.loader import YAML_SUFFIXES, policy_files
from webhook.policies.model import POLICY_API_VERSION, Model
from webhook.policies.params import ParamStore
from webhook.policies.python_faults import PythonFault
from webhook.reviews import parse_review
from webhook.state import StaticState
from webhook.yamlsource import Document, parse_documents, validation_problems

TEST_KIND = "PolicyTest"


class UserSpec(Model):
    username: str = "alice@example.com"
    groups: list[str] = Field(default_factory=lambda: ["system:authenticated"])
    uid: str = ""
    extra: dict[str, list[str]] = Field(default_factory=dict)


class NamespaceSpec(Model):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Expect(Model):
    allowed: bool
    message: str | None = None  # a substring of the denial message
    code: int | None = None
    warnings: list[str] | None = None  # substrings, each in a different warning; [] means no warnings at all
    auditAnnotations: dict[str, str] | None = None  # these keys with these values (others may exist)
    object: Any = None  # the whole object after the mutating policies (a map, a resource name or {file: ...})
    patched: bool | None = None  # whether the mutating policies changed the object


class Case(Model):
    name: str
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"] = "CREATE"
    object: Any = None  # a map, the name of an entry of `resources`, or {file: path}
    oldObject: Any = None
    namespace: str | None = None  # default: the object's
    subResource: str = ""
    user: UserSpec = Field(default_factory=UserSpec)
    dryRun: bool = False
    now: datetime.datetime | None = None
    expect: Expect


class TestSpec(Model):
    policies: list[str] | None = None  # only these policies take part (default: all in the directory)
    now: datetime.datetime | None = None  # the clock for every case (Python policies' request.now)
    namespaces: list[NamespaceSpec] = Field(default_factory=list)
    params: list[dict[str, Any]] = Field(default_factory=list)
    pods: list[dict[str, Any]] = Field(default_factory=list)  # running Pods for request.cluster.pods()
    resources: dict[str, Any] = Field(default_factory=dict)
    cases: list[Case] = Field(min_length=1)


class TestDocument(Model):
    apiVersion: Literal["webhook.dev/v1alpha1"]
    kind: Literal["PolicyTest"]
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: TestSpec

    @model_validator(mode="after")
    def _unique_cases(self) -> TestDocument:
        names = [case.name for case in self.spec.cases]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"case names must be unique; repeated: {', '.join(repeated)}")
        return self


@dataclasses.dataclass
class CaseResult:
    file: str
    line: int
    name: str
    passed: bool
    reasons: list[str]
    diff: str = ""
    response: dict[str, Any] = dataclasses.field(default_factory=dict)
    tracebacks: list[str] = dataclasses.field(default_factory=list)  # of Python policies that raised (-v)


def is_test_document(data: Any) -> bool:
    return isinstance(data, dict) and data.get("kind") == TEST_KIND and data.get("apiVersion") == POLICY_API_VERSION


def test_files(path: Path) -> list[Path]:
    """YAML files under `path` (or `path` itself) that hold at least one PolicyTest document."""
    candidates = [path] if path.is_file() else [p for p in policy_files(path) if p.suffix in YAML_SUFFIXES]
    return [p for p in candidates if f"kind: {TEST_KIND}" in p.read_text(errors="replace")]


class _Runner:
    def __init__(self, policy_set: PolicySet) -> None:
        self.policy_set = policy_set
        self.problems: list[SourceProblem] = []
        self.results: list[CaseResult] = []

    def run_file(self, path: Path) -> None:
        documents, problems = parse_documents(path.read_text(), path=str(path))
        self.problems.extend(problems)
        for document in documents:
            if not is_test_document(document.data):
                continue
            try:
                test = TestDocument.model_validate(document.data)
            except ValidationError as error:
                self.problems.extend(validation_problems(document, error))
                continue
            self.run_test(path, document, test)

    def _resolve(self, path: Path, document: Document, at: tuple[Any, ...], value: Any, test: TestDocument) -> Any:
        """A case's object: inline, a name of `resources`, or {file: path relative to the test file}."""
        if isinstance(value, str):
            if value not in test.spec.resources:
                raise _CaseError(document.problem(at, f"no resource named {value!r} in spec.resources"))
            return self._resolve(path, document, at, test.spec.resources[value], test)
        if isinstance(value, dict) and set(value) == {"file"}:
            file = path.parent / str(value["file"])
            try:
                text = file.read_text()
            except OSError as error:
                raise _CaseError(document.problem(at, f"cannot read {file}: {error}")) from error
            documents, problems = parse_documents(text, path=str(file))  # positions; no YAML aliases
            if problems:
                raise _CaseError(problems[0])
            return documents[0].data if documents else None
        return value

    def _policy_set(self, document: Document, test: TestDocument) -> PolicySet:
        base = self.policy_set
        policies = base.policies
        if test.spec.policies is not None:
            known = {policy.name for policy in policies}
            missing = [name for name in test.spec.policies if name not in known]
            if missing:
                raise _CaseError(document.problem(("spec", "policies"), f"no policy named {', '.join(missing)}"))
            policies = tuple(p for p in policies if p.name in test.spec.policies)
        namespaces = dict(base.namespaces)
        for namespace in test.spec.namespaces:
            namespaces[namespace.name] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {
                "name": namespace.name, "labels": {"kubernetes.io/metadata.name": namespace.name, **namespace.labels},
                "annotations": namespace.annotations}}
        params = ParamStore({key: list(objects) for key, objects in base.params.objects.items()},
                            set(base.params.namespaced))
        for item in test.spec.params:
            params.replace(item, base.engine.prepare)
        params.finish()
        return dataclasses.replace(base, policies=policies, namespaces=namespaces, params=params, _by_phase={},
                                   _cache={}, _lock=threading.Lock())

    def run_test(self, path: Path, document: Document, test: TestDocument) -> None:
        try:
            policy_set = self._policy_set(document, test)
        except _CaseError as error:
            self.problems.append(error.problem)
            return
        cluster = StaticState(policy_set.namespaces.values(), test.spec.pods)
        for index, case in enumerate(test.spec.cases):
            at = ("spec", "cases", index)
            try:
                obj = self._resolve(path, document, (*at, "object"), case.object, test)
                old = self._resolve(path, document, (*at, "oldObject"), case.oldObject, test)
                expected = self._resolve(path, document, (*at, "expect", "object"), case.expect.object, test)
            except _CaseError as error:
                self.problems.append(error.problem)
                continue
            line = document.where(at).line
            self.results.append(self.run_case(policy_set, cluster, str(path), line, case, obj, old, expected,
                                              case.now or test.spec.now))

    def run_case(self, policy_set: PolicySet, cluster: StaticState, file: str, line: int, case: Case, obj: Any,
                 old: Any, expected_object: Any, now: datetime.datetime | None) -> CaseResult:
        source = obj if obj is not None else old
        review = _review(case, obj, old, source)
        reasons: list[str] = []
        response: dict[str, Any] = {}
        current = obj
        mutate = _decide(policy_set, review, "mutate", cluster, now)
        patched = bool(mutate.patch) and mutate.allowed
        if patched:
            try:
                current, _ = apply_operations(obj, mutate.patch)
            except PatchError as error:
                reasons.append(f"the mutating policies' patch does not apply: {error}")
        final = mutate
        if mutate.allowed:
            validate_review = _review(case, current, old, source, uid=review["request"]["uid"])
            final = _decide(policy_set, validate_review, "validate", cluster, now)
        warnings = [*mutate.warnings, *(final.warnings if final is not mutate else [])]
        annotations = {**mutate.audit_annotations, **final.audit_annotations}
        response = {"allowed": final.allowed, "code": final.code, "message": final.message, "warnings": warnings,
                    "auditAnnotations": annotations, "patched": patched}
        expect = case.expect
        if final.allowed != expect.allowed:
            got = "allowed" if final.allowed else f"denied: {final.message}"
            reasons.append(f"expected {'allowed' if expect.allowed else 'denied'}, got {got}")
        if expect.message is not None and expect.message not in final.message:
            reasons.append(f"message {final.message!r} does not contain {expect.message!r}")
        if expect.code is not None and expect.code != final.code:
            reasons.append(f"expected code {expect.code}, got {final.code}")
        if expect.warnings is not None:
            reasons.extend(_check_warnings(expect.warnings, warnings))
        for key, value in (expect.auditAnnotations or {}).items():
            if annotations.get(key) != value:
                reasons.append(f"audit annotation {key!r}: expected {value!r}, got {annotations.get(key)!r}")
        if expect.patched is not None and expect.patched != patched:
            reasons.append("expected a patch, got none" if expect.patched else "expected no patch, got one")
        diff = ""
        if expected_object is not None and expected_object != current:
            reasons.append("the object after mutation differs from the expected object")
            diff = _diff(expected_object, current)
        tracebacks = [fault.policy_traceback for decision in {id(mutate): mutate, id(final): final}.values()
                      for result in decision.results for fault in result.faults if isinstance(fault, PythonFault)]
        return CaseResult(file, line, case.name, not reasons, reasons, diff, response, tracebacks)


class _CaseError(Exception):
    def __init__(self, problem: SourceProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def _review(case: Case, obj: Any, old: Any, source: Any, *, uid: str | None = None) -> dict[str, Any]:
    kind = _kind_of(source)
    metadata = source.get("metadata", {}) if isinstance(source, dict) else {}
    namespace = case.namespace if case.namespace is not None else metadata.get("namespace", "")
    user = case.user
    request: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()), "kind": kind, "resource": _resource_of(kind), "requestKind": kind,
        "requestResource": _resource_of(kind), "name": metadata.get("name", ""), "namespace": namespace,
        "operation": case.operation, "object": obj, "oldObject": old, "dryRun": case.dryRun,
        "userInfo": {"username": user.username, "uid": user.uid, "groups": user.groups, "extra": user.extra},
    }
    if case.subResource:
        request["subResource"] = request["requestSubResource"] = case.subResource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def _kind_of(obj: Any) -> dict[str, str]:
    api_version = str(obj.get("apiVersion", "v1")) if isinstance(obj, dict) else "v1"
    group, _, version = api_version.rpartition("/")
    return {"group": group, "version": version, "kind": str(obj.get("kind", "")) if isinstance(obj, dict) else ""}


_IRREGULAR = {"Endpoints": "endpoints", "NetworkPolicy": "networkpolicies", "Ingress": "ingresses"}


def _resource_of(kind: dict[str, str]) -> dict[str, str]:
    """The resource of a kind, by the API's plural rule (a test can only name kinds, not resources)."""
    name = kind["kind"]
    plural = _IRREGULAR.get(name) or (name.lower()[:-1] + "ies" if name.endswith("y") else
                                      name.lower() + ("es" if name.endswith(("s", "x", "ch")) else "s"))
    return {"group": kind["group"], "version": kind["version"], "resource": plural}


def _decide(policy_set: PolicySet, review: dict[str, Any], phase: Literal["validate", "mutate"],
            cluster: StaticState, now: datetime.datetime | None) -> Any:
    parsed, raw = parse_review(orjson.dumps(review))
    return admit(policy_set, parsed.request, raw, phase=phase, cluster=cluster, now=now)


def _check_warnings(expected: list[str], actual: list[str]) -> list[str]:
    if not expected:
        return [f"expected no warnings, got {actual}"] if actual else []
    remaining = list(actual)
    reasons = []
    for text in expected:
        found = next((warning for warning in remaining if text in warning), None)
        if found is None:
            reasons.append(f"no warning contains {text!r} (warnings: {actual})")
        else:
            remaining.remove(found)
    return reasons


def _diff(expected: Any, actual: Any) -> str:
    before = yaml.safe_dump(expected, sort_keys=True).splitlines()
    after = yaml.safe_dump(actual, sort_keys=True).splitlines()
    return "\n".join(difflib.unified_diff(before, after, "expected", "actual", lineterm=""))


def run(policy_set: PolicySet, paths: list[Path]) -> tuple[list[CaseResult], list[SourceProblem]]:
    runner = _Runner(policy_set)
    for path in paths:
        runner.run_file(path)
    return runner.results, runner.problems


def table(results: list[CaseResult], *, verbose: bool = False) -> Iterator[str]:
    """The readable report: one line per case, the reasons and diffs of failures under it; with `verbose`, the
    tracebacks of Python policies that raised (from the policy function down)."""
    for result in results:
        yield f"{'PASS' if result.passed else 'FAIL'}  {result.file}:{result.line}  {result.name}"
        for reason in result.reasons:
            yield f"        {reason}"
        for line in result.diff.splitlines():
            yield f"        {line}"
        for text in result.tracebacks if verbose else ():
            yield from (f"        {line}" for line in text.splitlines())


def command(path: Path, *, policies: Path | None, engine: Any, output: Literal["table", "json"],
            verbose: bool = False) -> int:
    """`webhook test`: 0 when every case passes, 1 on a failing case, 2 when files cannot be used."""
    import sys

    from webhook.errors import PolicyLoadError
    from webhook.policies.loader import load_policy_set

    directory = policies or (path if path.is_dir() else path.parent)
    try:
        policy_set = load_policy_set(directory, engine=engine)
    except PolicyLoadError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        print(f"webhook test: the policies in {directory} do not load", file=sys.stderr)
        return 2
    files = test_files(path)
    results, problems = run(policy_set, files)
    for problem in problems:
        print(problem, file=sys.stderr)
    failed = sum(1 for result in results if not result.passed)
    if output == "json":
        print(orjson.dumps({"files": [str(f) for f in files], "passed": len(results) - failed, "failed": failed,
                            "problems": [str(p) for p in problems],
                            "cases": [dataclasses.asdict(r) for r in results]}, option=orjson.OPT_INDENT_2).decode())
    else:
        for line in table(results, verbose=verbose):
            print(line)
        print(f"{len(results)} cases in {len(files)} files: {len(results) - failed} passed, {failed} failed"
              + (f", {len(problems)} problems in test files" if problems else ""))
    if problems:
        return 2
    return 1 if failed or not results else 0
