"""Kubernetes' own admission policy kinds, loaded unchanged: ValidatingAdmissionPolicy, MutatingAdmissionPolicy
and their bindings (admissionregistration.k8s.io v1, v1beta1, v1alpha1).

A policy does nothing without a binding, as in Kubernetes; each (policy, binding) pair becomes one compiled
policy whose match is the policy's matchConstraints AND the binding's matchResources, whose actions are the
binding's validationActions, and whose params come from the binding's paramRef at request time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import Field, model_validator

from webhook.errors import SourceProblem
from webhook.policies.cel import CelEvaluationError, ExpectedType, Program
from webhook.policies.cel_runtime import OUT_OF_BUDGET
from webhook.policies.compiled import CompiledMutation, CompiledPolicy, CompiledValidation, CompiledVariable
from webhook.policies.matching import uses_resource_names
from webhook.policies.model import (
    AuditAnnotation,
    BindingMatchResources,
    MatchCondition,
    MatchResources,
    Model,
    ObjectMeta,
    ParamKind,
    ParamRef,
    Validation,
    Variable,
)
from webhook.policies.scope import PolicyScope, referenced_variables
from webhook.yamlsource import Document, FieldPath

GROUP = "admissionregistration.k8s.io"
VERSIONS = ("v1", "v1beta1", "v1alpha1")
VALIDATING, MUTATING = "ValidatingAdmissionPolicy", "MutatingAdmissionPolicy"
KINDS = (VALIDATING, f"{VALIDATING}Binding", MUTATING, f"{MUTATING}Binding")
Action = Literal["Deny", "Warn", "Audit"]


def _unique(kind: str, names: list[str]) -> None:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{kind} names must be unique; repeated: {', '.join(repeated)}")


class ValidatingPolicySpec(Model):
    paramKind: ParamKind | None = None
    matchConstraints: MatchResources
    validations: list[Validation] = Field(default_factory=list)
    failurePolicy: Literal["Fail", "Ignore"] = "Fail"
    auditAnnotations: list[AuditAnnotation] = Field(default_factory=list)
    matchConditions: list[MatchCondition] = Field(default_factory=list)
    variables: list[Variable] = Field(default_factory=list)

    @model_validator(mode="after")
    def _coherent(self) -> ValidatingPolicySpec:
        if not self.validations and not self.auditAnnotations:
            raise ValueError("validations or auditAnnotations must be given")
        _unique("matchConditions", [c.name for c in self.matchConditions])
        _unique("variables", [v.name for v in self.variables])
        _unique("auditAnnotations", [a.key for a in self.auditAnnotations])
        return self


class ValidatingBindingSpec(Model):
    policyName: str
    paramRef: ParamRef | None = None
    matchResources: BindingMatchResources | None = None
    validationActions: list[Action] = Field(min_length=1)

    @model_validator(mode="after")
    def _actions(self) -> ValidatingBindingSpec:
        if len(set(self.validationActions)) != len(self.validationActions):
            raise ValueError("validationActions lists an action twice")
        if {"Deny", "Warn"} <= set(self.validationActions):
            raise ValueError("validationActions cannot hold both Deny and Warn (Deny already reports)")
        return self


class Expression(Model):
    expression: str


class MutationSpec(Model):
    patchType: Literal["ApplyConfiguration", "JSONPatch"]
    applyConfiguration: Expression | None = None
    jsonPatch: Expression | None = None

    @model_validator(mode="after")
    def _one(self) -> MutationSpec:
        wanted = "applyConfiguration" if self.patchType == "ApplyConfiguration" else "jsonPatch"
        given = [name for name in ("applyConfiguration", "jsonPatch") if getattr(self, name) is not None]
        if given != [wanted]:
            raise ValueError(f"patchType {self.patchType} needs {wanted} (and only it)")
        return self

    @property
    def expression(self) -> str:
        chosen = self.applyConfiguration or self.jsonPatch
        assert chosen is not None
        return chosen.expression


class MutatingPolicySpec(Model):
    paramKind: ParamKind | None = None
    matchConstraints: MatchResources
    variables: list[Variable] = Field(default_factory=list)
    mutations: list[MutationSpec] = Field(min_length=1)
    failurePolicy: Literal["Fail", "Ignore"] = "Fail"
    matchConditions: list[MatchCondition] = Field(default_factory=list)
    reinvocationPolicy: Literal["Never", "IfNeeded"] = "Never"

    @model_validator(mode="after")
    def _coherent(self) -> MutatingPolicySpec:
        _unique("matchConditions", [c.name for c in self.matchConditions])
        _unique("variables", [v.name for v in self.variables])
        return self


class MutatingBindingSpec(Model):
    policyName: str
    paramRef: ParamRef | None = None
    matchResources: BindingMatchResources | None = None


class _Object(Model):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    status: Any = None  # as `kubectl get -o yaml` writes it; ignored


class ValidatingPolicy(_Object):
    spec: ValidatingPolicySpec


class ValidatingBinding(_Object):
    spec: ValidatingBindingSpec


class MutatingPolicy(_Object):
    spec: MutatingPolicySpec


class MutatingBinding(_Object):
    spec: MutatingBindingSpec


MODELS: dict[str, type[_Object]] = {VALIDATING: ValidatingPolicy, f"{VALIDATING}Binding": ValidatingBinding,
                                    MUTATING: MutatingPolicy, f"{MUTATING}Binding": MutatingBinding}


def is_native(api_version: str, kind: str) -> bool:
    group, _, version = api_version.partition("/")
    return group == GROUP and version in VERSIONS and kind in KINDS


def with_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """v1alpha1 bindings predate validationActions; they denied, so Deny is their default."""
    if data.get("kind") == f"{VALIDATING}Binding" and str(data.get("apiVersion", "")).endswith("/v1alpha1"):
        spec = data.get("spec")
        if isinstance(spec, dict) and "validationActions" not in spec:
            return {**data, "spec": {**spec, "validationActions": ["Deny"]}}
    return data


# --- typed object construction in CEL -----------------------------------------------------------------------

_TYPE_NAME = re.compile(r"\b(?:Object(?:\.[A-Za-z_][A-Za-z0-9_]*)*|JSONPatch)\s*\{")
_FIELD = re.compile(r"\s*(\?)?\s*([A-Za-z_][A-Za-z0-9_]*)\s*:")


@dataclass(frozen=True, slots=True)
class Rewritten:
    """A source with `Object{...}` / `JSONPatch{...}` turned into map literals, and where it grew."""

    source: str
    insertions: tuple[tuple[int, int], ...]  # (line, column in the rewritten source) of each added quote pair

    def original_column(self, line: int, column: int) -> int:
        return column - 2 * sum(1 for at_line, at_column in self.insertions if at_line == line and at_column < column)


def rewrite_object_literals(source: str) -> Rewritten:
    """MutatingAdmissionPolicy expressions build typed objects (`Object{spec: Object.spec{replicas: 3}}`,
    `JSONPatch{op: "add", path: ..., value: ...}`), which neither Python CEL engine can type. Both become
    map literals with the field names quoted (`{"spec": {"replicas": 3}}`); optional fields (`?name: x`)
    become optional map entries. The type name is blanked out, so columns move only by the added quotes."""
    if "{" not in source or not _TYPE_NAME.search(source):
        return Rewritten(source, ())
    out: list[str] = []
    insertions: list[tuple[int, int]] = []
    stack: list[bool] = []  # per open brace: is it a typed object literal?
    index, line, column = 0, 1, 1
    expect_field = False

    def emit(text: str) -> None:
        nonlocal line, column
        out.append(text)
        for char in text:
            if char == "\n":
                line, column = line + 1, 1
            else:
                column += 1

    while index < len(source):
        char = source[index]
        if char in "'\"":
            end = _string_end(source, index)
            emit(source[index:end])
            index = end
            continue
        if expect_field:
            expect_field = False
            name = _FIELD.match(source, index)
            if name is not None:
                emit(source[index:name.start(2)])
                insertions.append((line, column))
                emit(f'"{name.group(2)}"')
                emit(source[name.end(2):name.end()])
                index = name.end()
                continue
        typed = _TYPE_NAME.match(source, index)
        if typed is not None and (index == 0 or not (source[index - 1].isalnum() or source[index - 1] in "._")):
            emit(" " * (typed.end() - index - 1) + "{")
            stack.append(True)
            expect_field = True
            index = typed.end()
            continue
        if char in "{[(":
            stack.append(False)
        elif char in "}])":
            if stack:
                stack.pop()
        elif char == "," and stack and stack[-1]:
            expect_field = True
        emit(char)
        index += 1
    return Rewritten("".join(out), tuple(insertions))


def _string_end(source: str, start: int) -> int:
    quote = source[start]
    if source.startswith(quote * 3, start):
        end = source.find(quote * 3, start + 3)
        return len(source) if end < 0 else end + 3
    index = start + 1
    while index < len(source):
        if source[index] == "\\":
            index += 2
            continue
        if source[index] == quote or source[index] == "\n":
            return index + 1
        index += 1
    return index


# --- compiling (policy, binding) pairs ----------------------------------------------------------------------


class Compiler(Protocol):
    """What the directory loader offers: CEL compilation with positions, and where problems go."""

    problems: list[SourceProblem]
    notes: list[SourceProblem]
    warnings: list[SourceProblem]  # what `webhook lint` warns of and `webhook lint --strict` refuses

    def compile(self, document: Document, path: FieldPath, source: str, expect: ExpectedType, scope: PolicyScope,
                *, typed_objects: bool = False) -> Program | None: ...


def compile_variables(compiler: Compiler, document: Document, variables: Any, params_key: str | None,
                      sources: dict[str, str], *, typed_objects: bool = False) -> list[CompiledVariable]:
    """`spec.variables` of either policy kind, each seeing the params and the variables before it. `sources`:
    every variable's source as compiled (what closed expressions inline)."""
    compiled = []
    for i, variable in enumerate(variables):
        earlier = PolicyScope(params_key, {v.name: sources[v.name] for v in variables[:i]})
        program = compiler.compile(document, ("spec", "variables", i, "expression"), variable.expression, "any",
                                   earlier, typed_objects=typed_objects)
        if program is not None:
            compiled.append(CompiledVariable(variable.name, program, tuple(referenced_variables(variable.expression))))
    return compiled


def compile_validations(compiler: Compiler, document: Document, validations: Any, scope: PolicyScope, *,
                        default_reason: str) -> list[CompiledValidation]:
    """`spec.validations` of either policy kind: expression, messageExpression, message and reason."""
    compiled = []
    for i, validation in enumerate(validations):
        at = ("spec", "validations", i)
        program = compiler.compile(document, (*at, "expression"), validation.expression, "bool", scope)
        message_program = None
        if validation.messageExpression is not None:
            message_program = compiler.compile(document, (*at, "messageExpression"), validation.messageExpression,
                                               "string", scope)
        if program is not None:
            compiled.append(CompiledValidation(validation.expression, program, validation.message, message_program,
                                               validation.reason or default_reason))
    return compiled


@dataclass
class NativeDocuments:
    """The native objects of a directory, until every file is read and bindings can be paired."""

    policies: dict[tuple[str, str], tuple[Document, ValidatingPolicy | MutatingPolicy]] = field(default_factory=dict)
    bindings: list[tuple[Document, ValidatingBinding | MutatingBinding]] = field(default_factory=list)

    def param_kinds(self) -> set[tuple[str, str]]:
        return {(p.spec.paramKind.apiVersion, p.spec.paramKind.kind)
                for _, p in self.policies.values() if p.spec.paramKind is not None}

    def add(self, document: Document, item: _Object, problems: list[SourceProblem]) -> None:
        if isinstance(item, ValidatingPolicy | MutatingPolicy):
            key = (item.kind, item.metadata.name)
            if key in self.policies:
                problems.append(document.problem(("metadata", "name"), (
                    f"{item.kind} {item.metadata.name!r} is already defined at {self.policies[key][0].path}")))
                return
            self.policies[key] = (document, item)
        elif isinstance(item, ValidatingBinding | MutatingBinding):
            self.bindings.append((document, item))

    def compile(self, compiler: Compiler) -> list[CompiledPolicy]:
        compiled: list[CompiledPolicy] = []
        bound: set[tuple[str, str]] = set()
        for binding_document, binding in self.bindings:
            policy_kind = binding.kind.removesuffix("Binding")
            found = self.policies.get((policy_kind, binding.spec.policyName))
            if found is None:
                compiler.warnings.append(binding_document.problem(("spec", "policyName"), (
                    f"{policy_kind} {binding.spec.policyName!r} is not in this directory: the binding does nothing")))
                continue
            bound.add((policy_kind, binding.spec.policyName))
            document, policy = found
            result = _compile_pair(compiler, document, policy, binding, key=f"n{len(compiled)}")
            if result is not None:
                compiled.append(result)
        for (kind, name), (document, policy) in self.policies.items():
            if (kind, name) not in bound:
                compiler.notes.append(document.problem(("metadata", "name"), (
                    f"{kind} {name!r} has no binding in this directory: it does nothing (as in Kubernetes)")))
                _compile_pair(compiler, document, policy, None, key="unbound")  # still report its errors
        return compiled


def _compile_pair(compiler: Compiler, document: Document, policy: ValidatingPolicy | MutatingPolicy,
                  binding: ValidatingBinding | MutatingBinding | None, *, key: str) -> CompiledPolicy | None:
    spec = policy.spec
    name = policy.metadata.name
    before = len(compiler.problems)
    params_key = key if spec.paramKind is not None else None
    mutating = isinstance(policy, MutatingPolicy)
    # The sources a closed expression inlines (see cel.closed_source): a mutating policy's as compiled.
    sources = {v.name: rewrite_object_literals(v.expression).source if mutating else v.expression
               for v in spec.variables}
    scope = PolicyScope(params_key, sources)
    conditions = tuple((c.name, compiler.compile(document, ("spec", "matchConditions", i, "expression"),
                                                 c.expression, "bool", scope))
                       for i, c in enumerate(spec.matchConditions))
    variables = compile_variables(compiler, document, spec.variables, params_key, sources, typed_objects=mutating)
    validations: list[CompiledValidation] = []
    annotations: list[tuple[str, Program]] = []
    mutations: list[CompiledMutation] = []
    if isinstance(policy, ValidatingPolicy):
        validations = compile_validations(compiler, document, policy.spec.validations, scope, default_reason="Invalid")
        for i, annotation in enumerate(policy.spec.auditAnnotations):
            program = compiler.compile(document, ("spec", "auditAnnotations", i, "valueExpression"),
                                       annotation.valueExpression, "any", scope)
            if program is not None:  # `policy.key`: the API server takes one '/' in a webhook's annotation keys
                annotations.append((f"{name}.{annotation.key}", program))
    else:
        for i, mutation in enumerate(policy.spec.mutations):
            field_name = "applyConfiguration" if mutation.patchType == "ApplyConfiguration" else "jsonPatch"
            program = compiler.compile(document, ("spec", "mutations", i, field_name, "expression"),
                                       mutation.expression, "any" if field_name == "applyConfiguration" else "list",
                                       scope, typed_objects=True)
            if program is not None:
                program.source = mutation.expression  # as written, not as rewritten: errors quote it (filter.go)
                is_apply = mutation.patchType == "ApplyConfiguration"
                mutations.append(CompiledMutation(None, None, None, None, None, None,
                                                  None if is_apply else program, program if is_apply else None))
    if binding is None or len(compiler.problems) > before:
        return None
    position = document.where(())
    binding_match = binding.spec.matchResources
    actions = binding.spec.validationActions if isinstance(binding, ValidatingBinding) else ["Deny"]
    return CompiledPolicy(
        name=name, origin=f"{document.path}:{position.line}", match=spec.matchConstraints,
        uses_resource_names=uses_resource_names(spec.matchConstraints) or (
            binding_match is not None and uses_resource_names(binding_match)),
        failure_policy=spec.failurePolicy, actions=frozenset(actions),
        match_conditions=tuple((n, p) for n, p in conditions if p is not None), params_key=params_key,
        variables=tuple(variables), validations=tuple(validations), audit_annotations=tuple(annotations),
        mutations=tuple(mutations), kind=policy.kind, binding=binding.metadata.name, binding_match=binding_match,
        param_kind=spec.paramKind, param_ref=binding.spec.paramRef,
        reinvoke=isinstance(policy, MutatingPolicy) and policy.spec.reinvocationPolicy == "IfNeeded",
    )


# --- deciding at request time as plugin/cel/filter.go, matchconditions/matcher.go, validating/*.go, generic/*.go ---

MAX_MESSAGE_EXPRESSION_BYTES = 5 * 1024  # celconfig.MaxEvaluatedMessageExpressionSizeBytes (apis/cel/config.go)
MAX_AUDIT_ANNOTATION_BYTES = 10 * 1024  # maxAuditAnnotationValueLength (validating/dispatcher.go)
# Go's strings.TrimSpace (unicode.IsSpace): Python's str.strip() would also take \x1c-\x1f away.
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
_CEL_TYPE_NAMES = {bool: "bool", int: "int", float: "double", list: "list", tuple: "list", dict: "map", bytes: "bytes"}


@dataclass(frozen=True, slots=True)
class Violation:
    """A failed validation; for Kubernetes' kinds also a fault in its place (`error`: only under Fail; `direct`: it
    denies whatever the validationActions)."""

    message: str
    reason: str = "Forbidden"
    index: int = 0  # of the validation: the audit record's expressionIndex
    fault: bool = False
    error: bool = False
    direct: bool = False


def expression_error(source: str, error: object) -> str:
    """filter.go: how an expression that failed to evaluate is reported (the expression as written)."""
    return f"expression '{source}' resulted in error: {error}"


def aggregate(errors: list[str]) -> str:
    """utilerrors.NewAggregate(...).Error(): one error as it is, several as `[a, b]` (the failed matchConditions)."""
    return errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]"


def evaluation_error(message: str, *, index: int = 0, direct: bool = False) -> Violation:
    return Violation(message, "Invalid", index, fault=True, error=True, direct=direct)


def validate(policy: CompiledPolicy, evaluate: Callable[[Program], Any]
             ) -> tuple[list[Violation], dict[str, str]]:
    """validator.go: the decisions of the validations in order, and the audit annotations to publish."""
    decisions: list[Violation] = []
    for index, validation in enumerate(policy.validations):
        try:
            if evaluate(validation.program):
                continue
            evaluated = None
            if validation.message_program is not None:
                try:
                    evaluated = evaluate(validation.message_program)
                except CelEvaluationError as error:  # logged by the API server; the message falls back
                    if str(error) == OUT_OF_BUDGET:
                        decisions.append(evaluation_error(f"failed messageExpression: {error}", index=index))
                        continue
            decisions.append(Violation(denial_message(validation, evaluated), validation.reason, index))
        except CelEvaluationError as error:
            if str(error) == OUT_OF_BUDGET:  # filter.go: the whole evaluation fails, with this decision only
                return [evaluation_error(OUT_OF_BUDGET)], {}
            decisions.append(evaluation_error(expression_error(validation.source, error), index=index))
    annotations: dict[str, str] = {}
    for key, program in policy.audit_annotations:
        try:
            value, problem = annotation_value(program.source, evaluate(program))
        except CelEvaluationError as error:  # under Fail a denial, whatever the validationActions
            decisions.append(evaluation_error(expression_error(program.source, error), direct=True))
            continue
        if problem is not None:  # a denial even under Ignore
            decisions.append(Violation(problem, "Invalid", fault=True, direct=True))
        elif value is not None:
            annotations[key] = value
    return decisions, annotations


def denial_message(validation: CompiledValidation, evaluated: Any) -> str:
    """The messageExpression's result trimmed, unless it is not a string, is empty, is longer than 5 KiB or holds a
    line break; then `message` trimmed; then `failed expression: <expression>`."""
    message = ""
    if isinstance(evaluated, str):
        message = evaluated.strip(_GO_SPACE)
        if len(message.encode()) > MAX_MESSAGE_EXPRESSION_BYTES or "\n" in message:
            message = ""
    if not message and validation.message:
        message = validation.message.strip(_GO_SPACE)
    return message or f"failed expression: {validation.source.strip(_GO_SPACE)}"


def annotation_value(source: str, value: Any) -> tuple[str | None, str | None]:
    """(The value to publish, or None to leave the key out; an error): a string trimmed (empty: left out) and cut
    to 10 KiB, null left out, any other type an error."""
    if value is None or (isinstance(value, str) and not value.strip(_GO_SPACE)):
        return None, None
    if not isinstance(value, str):
        kind = _CEL_TYPE_NAMES.get(type(value), type(value).__name__)
        return None, (f"valueExpression '{source}' resulted in unsupported return type: {kind}. "
                      "Return type must be either string or null.")
    return value.strip(_GO_SPACE).encode()[:MAX_AUDIT_ANNOTATION_BYTES].decode(errors="ignore"), None
