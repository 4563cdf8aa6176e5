"""Load a policy directory into a PolicySet: every file parsed, every expression compiled, or every problem listed."""

from __future__ import annotations

import hashlib
import inspect
import os
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import ValidationError

from webhook.authoring import POLICY_MARK, PythonPolicySpec, import_file, pod_templates_rules
from webhook.errors import PolicyLoadError, SourceProblem
from webhook.policies import directory_checks
from webhook.policies.cel import (
    CelCompileError,
    Engine,
    ExpectedType,
    Program,
    comprehension_depth,
)
from webhook.policies.compiled import (
    CompiledMutation,
    CompiledPolicy,
    PolicySet,
)
from webhook.policies.matching import uses_resource_names
from webhook.policies.model import (
    POLICY_API_VERSION,
    MatchResources,
    ObjectMeta,
    PolicyDocument,
    PolicySpec,
    RuleWithOperations,
    Variable,
)
from webhook.policies.native import (
    MODELS,
    NativeDocuments,
    compile_validations,
    compile_variables,
    is_native,
    rewrite_object_literals,
    with_defaults,
)
from webhook.policies.params import ParamStore
from webhook.policies.scope import PolicyScope, outside_strings, referenced_variables
from webhook.yamlsource import Document, FieldPath, parse_documents, validation_problems

YAML_SUFFIXES = (".yaml", ".yml")
MAX_EXPRESSION_LENGTH = 10_000
MAX_COMPREHENSION_DEPTH = 3
MAX_FILE_BYTES = 4 * 1024 * 1024
_REASON_DEFAULT = "Forbidden"
_KIND = "request.kind.kind"
# What `podTemplates: true` defines, before the policy's own variables (lazily evaluated: unused costs nothing).
POD_TEMPLATE_VARIABLES = {
    "podSpecPath": (f"{_KIND} == 'Pod' ? '/spec' : {_KIND} == 'CronJob' ? "
                    "'/spec/jobTemplate/spec/template/spec' : '/spec/template/spec'"),
    "podSpec": (f"{_KIND} == 'Pod' ? object.spec : {_KIND} == 'CronJob' ? "
                "object.spec.jobTemplate.spec.template.spec : object.spec.template.spec"),
    "oldPodSpec": (f"{_KIND} == 'Pod' ? oldObject.spec : {_KIND} == 'CronJob' ? "
                   "oldObject.spec.jobTemplate.spec.template.spec : oldObject.spec.template.spec"),
    "podMetadata": (f"{_KIND} == 'Pod' ? object.metadata : {_KIND} == 'CronJob' ? "
                    "(has(object.spec.jobTemplate.spec.template.metadata) ? "
                    "object.spec.jobTemplate.spec.template.metadata : {}) : "
                    "(has(object.spec.template.metadata) ? object.spec.template.metadata : {})"),
}
_AUTHORIZER = re.compile(r"(?<![.\w])authorizer\b")


def policy_files(directory: Path) -> list[Path]:
    """Policy files below `directory`, sorted; hidden entries (and ConfigMap `..data` dirs) and names starting
    with `_` (such as the `_resources/` folders that `webhook test` files read objects from) are skipped."""
    found: list[Path] = []
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))  # `_resources/`: test objects
        for name in sorted(files):
            if name.startswith((".", "_")):
                continue
            if name.endswith((*YAML_SUFFIXES, ".py")):
                found.append(Path(root) / name)
    return found


def _watched_files(directory: Path) -> list[Path]:
    """Every file a load can read: policy files and also `_` helpers (modules a policy imports, test data)."""
    found: list[Path] = []
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / name for name in sorted(files) if not name.startswith("."))
    return found


def fingerprint(directory: Path) -> str:
    """Changes whenever a file under the directory is added, removed or rewritten (through symlinks), including
    `_` helper modules that policy modules import."""
    digest = hashlib.sha256()
    for path in _watched_files(directory):
        try:
            stat = path.stat()
        except OSError:
            continue
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def content_digest(directory: Path) -> str:
    """The /readyz `digest`: of every file's name inside the directory and its bytes, so that two replicas (or a
    touched file) with the same files give the same digest, wherever the directory is mounted."""
    digest = hashlib.sha256()
    for path in _watched_files(directory):
        try:
            content = path.read_bytes()
        except OSError:
            continue
        name = path.relative_to(directory).as_posix().encode()
        digest.update(b"%d\0%s\0%d\0" % (len(name), name, len(content)) + content)
    return digest.hexdigest()[:12]


class _Compiler:
    """Compiles the documents of one directory; collects problems instead of stopping at the first."""

    def __init__(self, engine: Engine, directory: Path) -> None:
        self.engine = engine
        self.directory = directory
        self.problems: list[SourceProblem] = []
        self.notes: list[SourceProblem] = []  # not errors, but worth an author's attention (`webhook lint`)
        self.warnings: list[SourceProblem] = []  # likely mistakes: `webhook lint` warns, `--strict` refuses
        self.policies: list[CompiledPolicy] = []
        self.namespaces: dict[str, Any] = {}
        self.native = NativeDocuments()
        self.other_objects: list[Document] = []  # params objects, once the policies' paramKinds are known
        self.params = ParamStore()

    def display(self, path: Path) -> str:
        return str(path)

    # --- CEL ---------------------------------------------------------------------------------------

    def compile(self, document: Document, path: FieldPath, source: str, expect: ExpectedType,
                scope: PolicyScope, *, typed_objects: bool = False) -> Program | None:
        if len(source) > MAX_EXPRESSION_LENGTH:
            self.problems.append(document.problem(
                path, f"expression is {len(source)} characters long; the limit is {MAX_EXPRESSION_LENGTH}"))
            return None
        undefined = [name for name in referenced_variables(source) if name not in scope.variables]
        if undefined:
            self.problems.append(document.problem(path, (
                f"variables.{undefined[0]} is not defined (variables can use only the variables defined "
                "before them)")))
            return None
        depth = 0 if self.engine.bounded else comprehension_depth(source, at_least=MAX_COMPREHENSION_DEPTH + 1)
        if depth > MAX_COMPREHENSION_DEPTH:
            self.problems.append(document.problem(path, (
                f"comprehensions (all, exists, map, filter ...) nest {depth} deep; the limit is "
                f"{MAX_COMPREHENSION_DEPTH}, because each level multiplies the work by a list's length")))
            return None
        problem = self._authorizer_problem(document, path, source)
        if problem is not None:
            self.problems.append(document.problem(path, problem))
            return None
        rewritten = rewrite_object_literals(source) if typed_objects else None
        try:
            return self.engine.compile(rewritten.source if rewritten else source, expect=expect, scope=scope)
        except CelCompileError as error:
            column = rewritten.original_column(error.line, error.column) if rewritten else error.column
            self.problems.append(document.expression_problem(
                path, line=error.line, column=column, message=f"CEL compile error: {error.message}"))
            return None

    def _authorizer_problem(self, document: Document, path: FieldPath, source: str) -> str | None:
        """Why `source` may not use `authorizer` (None when it does not, or may): the engine has none (no
        cluster connection, or not the builtin engine), or it is a native policy's messageExpression, where
        Kubernetes does not declare it."""
        if "authorizer" not in source:
            return None
        code: list[str] = []  # the parts outside string literals

        def keep(part: str) -> str:
            code.append(part)
            return part

        outside_strings(source, keep)
        if not _AUTHORIZER.search(" ".join(code)):
            return None
        if self.engine.authorizer_problem is not None:
            return self.engine.authorizer_problem
        data = document.data if isinstance(document.data, dict) else {}
        if path[-1:] == ("messageExpression",) and is_native(str(data.get("apiVersion")), str(data.get("kind"))):
            return ("`authorizer` is not available in a messageExpression: Kubernetes declares it for expression, "
                    "matchConditions, variables and auditAnnotations only (the Policy kind allows it here)")
        return None

    # --- YAML --------------------------------------------------------------------------------------

    def load_yaml(self, path: Path) -> None:
        display = self.display(path)
        try:
            data = path.read_bytes()
        except OSError as error:
            self.problems.append(SourceProblem(display, 1, 1, f"cannot read file: {error.strerror}"))
            return
        if len(data) > MAX_FILE_BYTES:
            self.problems.append(SourceProblem(display, 1, 1, f"file is larger than {MAX_FILE_BYTES} bytes"))
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            self.problems.append(SourceProblem(display, 1, 1, f"file is not UTF-8: {error.reason}"))
            return
        documents, problems = parse_documents(text, path=display)
        self.problems.extend(problems)
        for document in documents:
            self.load_document(document)

    def load_document(self, document: Document) -> None:
        data = document.data
        if data is None:  # an empty document, such as after a trailing ---
            return
        if not isinstance(data, dict):
            self.problems.append(document.problem((), "a document must be a map with apiVersion and kind"))
            return
        kind, api_version = data.get("kind"), data.get("apiVersion")
        if not isinstance(kind, str) or not isinstance(api_version, str):
            self.problems.append(document.problem((), "a document needs string fields apiVersion and kind"))
            return
        if kind == "PolicyTest" and api_version == POLICY_API_VERSION:
            return  # `webhook test` cases live next to the policies
        if kind == "Policy" and api_version == POLICY_API_VERSION:
            self.load_policy(document)
        elif is_native(api_version, kind):
            try:
                item = MODELS[kind].model_validate(with_defaults(data))
            except ValidationError as error:
                self.problems.extend(validation_problems(document, error))
                return
            self.native.add(document, item, self.problems)
        else:
            if kind == "Namespace" and api_version == "v1":
                self.load_namespace(document)
            self.other_objects.append(document)

    def load_namespace(self, document: Document) -> None:
        try:
            meta = ObjectMeta.model_validate(document.data.get("metadata") or {})
        except ValidationError as error:
            self.problems.extend(validation_problems(document, error, ("metadata",)))
            return
        self.namespaces[meta.name] = document.data

    def load_policy(self, document: Document) -> None:
        try:
            policy = PolicyDocument.model_validate(document.data)
        except ValidationError as error:
            self.problems.extend(validation_problems(document, error))
            return
        name = policy.metadata.name
        before = len(self.problems)
        spec: PolicySpec | None = policy.spec
        if policy.spec.podTemplates:
            spec = self.with_pod_templates(document, policy.spec)
        if spec is None:
            return
        params_key = f"p{len(self.policies)}" if spec.params is not None else None
        definitions = {variable.name: variable.expression for variable in spec.variables}
        scope = PolicyScope(params_key, definitions)
        conditions = tuple(
            (condition.name, self.compile(document, ("spec", "matchConditions", i, "expression"),
                                          condition.expression, "bool", scope))
            for i, condition in enumerate(spec.matchConditions)
        )
        variables = compile_variables(self, document, spec.variables, params_key, definitions)
        validations = compile_validations(self, document, spec.validations, scope, default_reason=_REASON_DEFAULT)
        annotations = []
        for i, annotation in enumerate(spec.auditAnnotations):
            full_key = f"{name}.{annotation.key}"
            if len(full_key) > 63:
                self.problems.append(document.problem(("spec", "auditAnnotations", i, "key"), (
                    f"audit annotation key {full_key!r} (policy name + '.' + key) is longer than 63 bytes; "
                    "shorten the key or the policy name")))
            program = self.compile(document, ("spec", "auditAnnotations", i, "valueExpression"),
                                   annotation.valueExpression, "any", scope)
            if program is not None:
                annotations.append((full_key, program))
        mutations = [self.compile_mutation(document, i, mutation, scope) for i, mutation in enumerate(spec.mutations)]
        if len(self.problems) > before:
            return
        position = document.where(())
        self.policies.append(CompiledPolicy(
            name=name,
            origin=f"{document.path}:{position.line}",
            match=spec.matchConstraints,
            uses_resource_names=uses_resource_names(spec.matchConstraints),
            failure_policy=spec.failurePolicy,
            actions=frozenset(spec.validationActions),
            match_conditions=tuple((n, p) for n, p in conditions if p is not None),
            params=spec.params,
            params_key=params_key,
            params_prepared=self.engine.prepare(spec.params),
            variables=tuple(variables),
            validations=tuple(validations),
            audit_annotations=tuple(annotations),
            mutations=tuple(m for m in mutations if m is not None),
        ))

    def with_pod_templates(self, document: Document, spec: PolicySpec) -> PolicySpec | None:
        """The spec with the workload rules and the pod template variables added (see POD_TEMPLATE_VARIABLES)."""
        pod_rules = [r for r in spec.matchConstraints.resourceRules
                     if ("" in r.apiGroups or "*" in r.apiGroups) and ("pods" in r.resources or "*" in r.resources)]
        if not pod_rules:
            self.problems.append(document.problem(("spec", "podTemplates"), (
                "podTemplates: true needs a resource rule for pods (the workload rules follow its operations)")))
            return None
        taken = [v.name for v in spec.variables if v.name in POD_TEMPLATE_VARIABLES]
        if taken:
            self.problems.append(document.problem(("spec", "variables"), (
                f"variable {taken[0]!r} is defined by podTemplates: true; rename yours")))
            return None
        operations = list(dict.fromkeys(op for rule in pod_rules for op in rule.operations))
        rules = [*spec.matchConstraints.resourceRules,
                 *(RuleWithOperations.model_validate(rule) for rule in pod_templates_rules(operations))]
        match = spec.matchConstraints.model_copy(update={"resourceRules": rules})
        variables = [Variable(name=n, expression=e) for n, e in POD_TEMPLATE_VARIABLES.items()]
        return spec.model_copy(update={"matchConstraints": match, "variables": [*variables, *spec.variables]})

    def compile_mutation(self, document: Document, index: int, mutation: Any,
                         scope: PolicyScope) -> CompiledMutation | None:
        at = ("spec", "mutations", index)
        value_program = condition_program = patches_program = None
        if mutation.valueExpression is not None:
            value_program = self.compile(document, (*at, "valueExpression"), mutation.valueExpression, "any", scope)
        if mutation.condition is not None:
            condition_program = self.compile(document, (*at, "condition"), mutation.condition, "bool", scope)
        if mutation.patchesExpression is not None:
            patches_program = self.compile(document, (*at, "patchesExpression"), mutation.patchesExpression,
                                           "list", scope)
        return CompiledMutation(mutation.op, mutation.path, mutation.from_, mutation.value, value_program,
                                condition_program, patches_program)

    # --- Python ------------------------------------------------------------------------------------

    def load_python(self, path: Path, generation: str) -> None:
        display = self.display(path)
        module_name = f"webhook_policy_{generation}_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
        try:
            module = import_file(path, module_name)
        except SyntaxError as error:
            self.problems.append(SourceProblem(display, error.lineno or 1, error.offset or 1,
                                               f"Python syntax error: {error.msg}"))
            return
        except Exception as error:  # module-level code of a policy file may raise anything
            line = _error_line(error, path)
            self.problems.append(SourceProblem(display, line, 1,
                                               f"importing the module raised {type(error).__name__}: {error}"))
            return
        for function in _marked_functions(module):
            spec: PythonPolicySpec = getattr(function, POLICY_MARK)
            line = inspect.getsourcelines(function)[1] if _has_source(function) else 1
            name = spec.name or function.__name__.replace("_", "-").lower()
            try:
                ObjectMeta.model_validate({"name": name})
                match = MatchResources.model_validate(spec.match_constraints)
            except ValidationError as error:
                details = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                    for e in error.errors())
                self.problems.append(SourceProblem(display, line, 1, f"policy {name!r}: {details}"))
                continue
            self.policies.append(CompiledPolicy(
                name=name, origin=f"{display}:{line}", match=match, uses_resource_names=uses_resource_names(match),
                failure_policy=spec.failure_policy, actions=frozenset({"Deny"}), params=spec.params,
                python_function=function, python_phase=spec.phase,
            ))

    def finish(self) -> None:
        self.load_params()
        seen: dict[str, str] = {}
        for policy in self.policies:
            if policy.name in seen:
                path, _, line = policy.origin.rpartition(":")
                self.problems.append(SourceProblem(path, int(line), 1, (
                    f"policy name {policy.name!r} is already used at {seen[policy.name]}")))
            else:
                seen[policy.name] = policy.origin
        self.policies.extend(self.native.compile(self))
        self.warnings.extend(directory_checks.unmatched_param_refs(self.native, self.params))

    def load_params(self) -> None:
        """Objects of a kind some policy names as paramKind are params; other unknown kinds are mistakes."""
        wanted = self.native.param_kinds()
        params_documents: list[Document] = []
        unknown: list[Document] = []
        for document in self.other_objects:
            data = document.data
            key = (data["apiVersion"], data["kind"])
            if key in wanted:
                try:
                    ObjectMeta.model_validate(data.get("metadata") or {})
                except ValidationError as error:
                    self.problems.extend(validation_problems(document, error, ("metadata",)))
                    continue
                self.params.add(data, self.engine.prepare)
                params_documents.append(document)
            elif key != ("v1", "Namespace"):
                unknown.append(document)
        self.params.finish()
        self.problems.extend(directory_checks.duplicate_params(self.params, params_documents))
        typos, explained = directory_checks.param_kind_typos(self.native, self.params, unknown)
        self.problems.extend(typos)
        self.problems.extend(_unknown_kind(document) for document in unknown if id(document) not in explained)


def _unknown_kind(document: Document) -> SourceProblem:
    return document.problem(("kind",), (
        f"unknown kind {document.data['apiVersion']}/{document.data['kind']}; this directory takes "
        f"{POLICY_API_VERSION}/Policy, ValidatingAdmissionPolicy, MutatingAdmissionPolicy and their bindings "
        "(admissionregistration.k8s.io v1, v1beta1, v1alpha1), v1/Namespace, objects of a kind "
        "a policy names as paramKind, and Python modules"))


def _marked_functions(module: ModuleType) -> Iterator[Any]:
    for value in vars(module).values():
        if callable(value) and hasattr(value, POLICY_MARK) and getattr(value, "__module__", None) == module.__name__:
            yield value


def _has_source(function: Any) -> bool:
    try:
        inspect.getsourcelines(function)
    except (OSError, TypeError):
        return False
    return True


def _error_line(error: BaseException, path: Path) -> int:
    traceback = error.__traceback__
    line = 1
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == str(path):
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line


def load_policy_set(directory: Path, *, engine: Engine) -> PolicySet:
    """Load and compile `directory` completely, or raise PolicyLoadError listing every problem."""
    if not directory.is_dir():
        raise PolicyLoadError([SourceProblem(str(directory), 1, 1, "policy directory does not exist")])
    files = policy_files(directory)
    generation = fingerprint(directory)[:12]
    compiler = _Compiler(engine, directory)
    inside = directory.resolve()
    for path in files:
        if not path.resolve().is_relative_to(inside):  # a ConfigMap volume's own links stay inside
            compiler.problems.append(SourceProblem(compiler.display(path), 1, 1, (
                f"links to {path.resolve()}, outside the policy directory; policy files must be inside it")))
        elif path.suffix == ".py":
            compiler.load_python(path, generation)
        else:
            compiler.load_yaml(path)
    compiler.finish()
    if compiler.problems:
        raise PolicyLoadError(compiler.problems)
    return PolicySet(engine=engine, policies=tuple(compiler.policies), namespaces=compiler.namespaces,
                     files=tuple(str(p) for p in files), digest=content_digest(directory), params=compiler.params,
                     notes=tuple(compiler.notes), warnings=tuple(compiler.warnings))
