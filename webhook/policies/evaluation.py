"""Evaluate the matching policies of one request; every fault is a value in the result, never an exception."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from webhook import authoring
from webhook.cel.codegen import FALLBACKS
from webhook.cel.comprehensions import CostLimitExceeded
from webhook.patches import PatchError, PatchTestFailed, apply_operations, make_patch
from webhook.policies import native, python_faults
from webhook.policies.apply import merge
from webhook.policies.cel import CelEvaluationError, Engine, Program
from webhook.policies.compiled import CompiledMutation, CompiledPolicy, CompiledValidation, Phase, PolicySet
from webhook.policies.matching import (
    NAMESPACE_NAME_LABEL,
    ResourceKey,
    labels_of,
    namespace_selector_matches,
    object_selector_matches,
)
from webhook.policies.native import Violation
from webhook.policies.params import ParamObject, Resolution
from webhook.policies.scope import PARAMS_BY_POLICY
from webhook.state import EMPTY, ClusterState, ClusterUnavailable

Status = Literal["pass", "fail", "error"]


@dataclass(slots=True)
class PolicyResult:
    """What one policy said about one request, before failurePolicy and validationActions are applied."""

    policy: CompiledPolicy
    violations: list[Violation] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    audit_annotations: dict[str, str] = field(default_factory=dict)
    patch: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> Status:
        if self.faults:
            return "error"
        return "fail" if self.violations else "pass"

    def fault(self, message: str, *, direct: bool = False, reason: str = "Invalid") -> None:
        """A fault; for Kubernetes' kinds also a decision in its place among the validations' (native.Violation)."""
        self.faults.append(message)
        if self.policy.binding is not None:
            self.violations.append(Violation(message, reason, fault=True, error=True, direct=direct))


@dataclass(slots=True)
class RequestContext:
    """Everything about one request that evaluation needs, built once at the edge."""

    key: ResourceKey
    uid: str
    name: str
    namespace: str
    object: Any
    old_object: Any
    request: dict[str, Any]  # the CEL `request` variable (the review request without the objects)
    namespace_object: Any
    dry_run: bool
    user_info: authoring.UserInfo
    cluster: ClusterState = EMPTY
    now: datetime.datetime | None = None  # None: the wall clock when a policy asks
    namespace_problem: str | None = None  # set when the live cluster state could not tell the namespace
    # `authorizer` and `authorizer.requestResource` (webhook.cel.kubernetes.authz), when the engine may use them
    authorizer_bindings: Mapping[str, Any] = field(default_factory=dict)


def namespace_context(policy_set: PolicySet, namespace: str, cluster: ClusterState = EMPTY
                      ) -> tuple[Any, dict[str, str] | None, str | None]:
    """The namespace object and its labels: from the cluster state, else the loaded set's Namespace objects,
    else what the API server always sets (the name label). When the live cluster state cannot tell (not
    synced, or stale) the object is None and the third value says why: policies whose namespaceSelector needs
    the labels are then faults under their failurePolicy, and expressions reading namespaceObject fault where
    they use it, rather than deciding on made-up labels."""
    if not namespace:
        return None, None, None
    known = None
    try:
        if not cluster.synced:
            raise ClusterUnavailable("the cluster state has not synced yet")
        known = cluster.namespace(namespace)
    except ClusterUnavailable as error:
        return None, None, f"the labels of namespace {namespace} are unknown: {error}"
    if known is None:
        known = policy_set.namespaces.get(namespace)
    if known is not None:
        labels = labels_of(known) or {}
        return known, {NAMESPACE_NAME_LABEL: namespace, **labels}, None
    synthetic = {"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": namespace, "labels": {NAMESPACE_NAME_LABEL: namespace}}}
    return synthetic, {NAMESPACE_NAME_LABEL: namespace}, None


def matching_policies(policy_set: PolicySet, phase: Phase, context: RequestContext) -> list[CompiledPolicy]:
    """Candidates by resource (cached), then resourceNames and the label selectors of this request."""
    found = []
    namespace_labels: dict[str, str] | None = None
    for policy in policy_set.candidates(phase, context.key):
        if policy.uses_resource_names and not policy.matches_key(context.key, name=context.name):
            continue
        if policy.selects_all:
            found.append(policy)
            continue
        if namespace_labels is None:
            namespace_labels = labels_of(context.namespace_object) or {}
            if context.namespace:
                namespace_labels.setdefault(NAMESPACE_NAME_LABEL, context.namespace)
        if context.namespace_problem is not None and policy.needs_namespace:
            found.append(policy)  # cannot be decided now: it faults in evaluation (see Evaluator._unknown)
        elif _selectors_match(policy, context, namespace_labels):
            found.append(policy)
    return found


def _selectors_match(policy: CompiledPolicy, context: RequestContext, namespace_labels: dict[str, str]) -> bool:
    for object_selector, namespace_selector in policy.selectors:  # the non-empty ones
        if object_selector is not None and not object_selector_matches(
                object_selector, obj=context.object, old_obj=context.old_object):
            return False
        if namespace_selector is not None and not namespace_selector_matches(
                namespace_selector, key=context.key, obj=context.object, old_obj=context.old_object,
                namespace_labels=namespace_labels):
            return False
    return True


class _PolicyRun:
    """builtin and cel-python: an activation of its own per policy; variables evaluated when first used (as the
    API server's lazy variables: one used only in an untaken branch never runs, and a failed one faults only the
    expressions that reach it).

    The activation holds the lazy `variables`, which compute through this run: they reach it through a weak
    reference, so that a finished run (its activation and every value it computed) is freed at once by reference
    counting instead of waiting, as a cycle, for the collector (~130 objects per review of the benchmark's mix)."""

    def __init__(self, engine: Engine, base: Mapping[str, Any], policy: CompiledPolicy, params: Any) -> None:
        self.engine = engine
        self.programs = policy.variable_programs
        self.named = policy.binding is None  # the Policy kind names the failed variable; Kubernetes does not
        self.values: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        run = weakref.ref(self)

        def variable(name: str) -> Any:
            alive = run()
            if alive is None:
                raise CelEvaluationError("variables are only available while their policy is evaluated")
            return alive._variable(name)

        self.activation = engine.activation({**base, "params": params, "variables": engine.lazy_variables(
            variable, policy.variable_names)})

    def _variable(self, name: str) -> Any:
        """The engine value of `variables.NAME`, computed once; raises CelEvaluationError."""
        if name in self.values:
            return self.values[name]
        if name not in self.errors:
            program = self.programs.get(name)
            if program is None:
                raise CelEvaluationError(f"no such key: {name}")
            try:
                self.values[name] = program.evaluate(self.activation)
                return self.values[name]
            except CelEvaluationError as error:
                self.errors[name] = str(error)
        raise CelEvaluationError(f"variables.{name}: {self.errors[name]}" if self.named else self.errors[name])

    def evaluate(self, program: Program) -> Any:
        """The plain result; raises CelEvaluationError, also for a failed variable the expression reached."""
        value = program.evaluate(self.activation)
        return value if type(value) is bool else self.engine.to_plain(value)


class _SharedRun:
    """cel-expr-python: the request's one activation; params and variables are bound inside each program
    (see cel.closed_source), a variable evaluated when an expression first reaches it."""

    def __init__(self, engine: Engine, activation: Any, policy: CompiledPolicy) -> None:
        self.engine = engine
        self.activation = activation
        self.variables = policy.variable_programs
        self.memo: dict[str, tuple[Any, str | None]] = {}  # variables reached through calls (cel.closed_source)

    def evaluate(self, program: Program) -> Any:
        value = self.engine.evaluate_with_variables(program, self.activation, self.variables, self.memo)
        return self.engine.to_plain(value)


def _describe(source: str) -> str:
    source = " ".join(source.split())
    return source if len(source) <= 200 else source[:197] + "..."


class Evaluator:
    """Runs the policies of one phase over one request."""

    def __init__(self, policy_set: PolicySet, context: RequestContext, policies: Sequence[CompiledPolicy]) -> None:
        self.policy_set = policy_set
        self.engine = policy_set.engine
        self.context = context
        self.policies = policies
        self._bindings: tuple[int, dict[str, Any]] | None = None
        self._shared: tuple[int, Any] | None = None
        self._resolutions: dict[int, Resolution] = {}
        self.completed: list[PolicyResult] = []  # in order; what survives a deadline that cuts evaluation short
        self._python_request: authoring.AdmissionRequest | None = None

    def base_bindings(self, obj: Any) -> dict[str, Any]:
        """The request-level bindings, prepared once per version of the object."""
        if self._bindings is None or self._bindings[0] != id(obj):
            prepare = self.engine.prepare
            context = self.context
            self._bindings = (id(obj), {
                "object": prepare(obj),
                "oldObject": prepare(context.old_object),
                "request": prepare(context.request),
                "namespaceObject": prepare(context.namespace_object),
                **context.authorizer_bindings,
            })
        return self._bindings[1]

    def resolution(self, policy: CompiledPolicy) -> Resolution:
        """The params objects this request evaluates `policy` with (a native binding's paramRef, or the
        Policy kind's own `params`), found once per request."""
        if policy.own_params is not None:
            return policy.own_params
        found = self._resolutions.get(id(policy))
        if found is None:
            found = self.policy_set.params.resolve(policy.param_kind, policy.param_ref,
                                                   request_namespace=self.context.namespace)
            self._resolutions[id(policy)] = found
        return found

    def shared_activation(self, obj: Any) -> Any:
        """One activation for every policy of the request (new only when a mutation changed the object)."""
        if self._shared is None or self._shared[0] != id(obj):
            params = {}
            for policy in self.policies:
                if policy.params_key is not None:
                    objects = self.resolution(policy).objects
                    params[policy.params_key] = objects[0].prepared if objects else None
            activation = self.engine.activation({**self.base_bindings(obj), "params": None, "variables": {},
                                                 PARAMS_BY_POLICY: params})
            self._shared = (id(obj), activation)
        return self._shared[1]

    def validate(self, policies: Sequence[CompiledPolicy]) -> list[PolicyResult]:
        for policy in policies:
            self.completed.append(self._validate_one(policy))
        return list(self.completed)

    def mutate(self, policies: Sequence[CompiledPolicy]) -> tuple[list[PolicyResult], Any]:
        """Mutations in policy order, each policy seeing the object as the previous ones left it. Policies
        with reinvocationPolicy IfNeeded run once more at the end when a later policy changed the object
        after them (the API server would reinvoke the webhook; within one call this is as close as it gets)."""
        current = self.context.object
        after: list[tuple[CompiledPolicy, Any]] = []
        for policy in policies:
            result, current = self._mutate_one(policy, current)
            self.completed.append(result)
            after.append((policy, current))
        for policy, seen in after:
            if policy.reinvoke and current is not seen and current != seen:
                result, current = self._mutate_one(policy, current)
                self.completed.append(result)
        return list(self.completed), current

    # --- one policy ----------------------------------------------------------------------------------

    def _start(self, policy: CompiledPolicy, obj: Any, result: PolicyResult, param: ParamObject,
               index: int) -> _PolicyRun | _SharedRun | None:
        """The policy's bindings for one params object after its matchConditions; None when it does not apply
        or faulted."""
        run: _PolicyRun | _SharedRun
        if self.engine.shares_activation:
            if index == 0:
                activation = self.shared_activation(obj)
            else:  # a further params object of a selector: an activation of its own
                activation = self.engine.activation({**self.base_bindings(obj), "params": None, "variables": {},
                                                     PARAMS_BY_POLICY: {policy.params_key: param.prepared}})
            run = _SharedRun(self.engine, activation, policy)
        else:
            run = _PolicyRun(self.engine, self.base_bindings(obj), policy, param.prepared)
        errors: list[str] = []
        for name, program in policy.match_conditions:  # matchconditions/matcher.go: one false one skips, errors or not
            try:
                if run.evaluate(program) is False:
                    return None
            except CelEvaluationError as error:
                errors.append(f"matchCondition {name!r}: {error}" if policy.binding is None else
                              native.expression_error(program.source, error))
        if errors:
            result.faults.extend(errors) if policy.binding is None else result.fault(native.aggregate(errors))
        return None if errors else run

    def _params_of(self, policy: CompiledPolicy, result: PolicyResult) -> tuple[ParamObject, ...]:
        """The params objects to evaluate with; none (with a fault, or for an Allow) when there are none."""
        resolution = self.resolution(policy)
        if resolution.fault is not None:  # Kubernetes: a configuration error, denying whatever the validationActions
            result.fault(f"failed to configure binding: {resolution.fault}" if policy.binding else resolution.fault,
                         direct=True, reason="Forbidden" if policy.kind == native.MUTATING else "Invalid")
        return resolution.objects

    def _unknown(self, policy: CompiledPolicy, result: PolicyResult) -> bool:
        """A policy that depends on namespace labels the live cluster state cannot give now is a fault."""
        if self.context.namespace_problem is not None and policy.needs_namespace:
            result.fault(self.context.namespace_problem, direct=True)
            return True
        return False

    def _validate_one(self, policy: CompiledPolicy) -> PolicyResult:
        result = PolicyResult(policy)
        if self._unknown(policy, result):
            return result
        if policy.python_function is not None:
            self._run_python(policy, self.context.object, result, phase="validate")
            return result
        fast = self.policy_set.fast_validators.get(id(policy))
        if fast is not None:
            resolution = self.resolution(policy)
            if resolution.fault is None and len(resolution.objects) == 1:
                try:
                    if fast({**self.base_bindings(self.context.object), "params": resolution.objects[0].prepared}):
                        return result  # clean: no violation, no fault
                except (*FALLBACKS, CostLimitExceeded):
                    pass  # the usual path decides, exactly
        for index, param in enumerate(self._params_of(policy, result)):
            run = self._start(policy, self.context.object, result, param, index)
            if run is not None:
                self._validations(policy, run, result)
        return result

    def _validations(self, policy: CompiledPolicy, run: _PolicyRun | _SharedRun, result: PolicyResult) -> None:
        if policy.binding is not None:  # Kubernetes' kinds: decided as the API server decides (see native.validate)
            decisions, annotations = native.validate(policy, run.evaluate)
            result.faults.extend(decision.message for decision in decisions if decision.fault)
            result.violations.extend(decisions)
            result.audit_annotations.update(annotations)
            return
        for validation in policy.validations:
            try:
                passed = run.evaluate(validation.program)
            except CelEvaluationError as error:
                result.faults.append(f"expression '{_describe(validation.source)}': {error}")
                continue
            if not passed:
                result.violations.append(Violation(self._message(run, validation), validation.reason))
        for key, program in policy.audit_annotations:
            try:
                value = run.evaluate(program)
            except CelEvaluationError as error:
                result.faults.append(f"auditAnnotation {key!r}: {error}")
                continue
            if isinstance(value, str) and value:
                result.audit_annotations[key] = value[:10240]
            elif value is not None and value != "":
                result.faults.append(f"auditAnnotation {key!r} must evaluate to string or null, "
                                     f"got {type(value).__name__}")

    @staticmethod
    def _message(run: _PolicyRun | _SharedRun, validation: CompiledValidation) -> str:
        message = None
        if validation.message_program is not None:
            with contextlib.suppress(CelEvaluationError):  # as the API server: fall back to the static message
                message = run.evaluate(validation.message_program)
        if isinstance(message, str) and message.strip():
            return message
        return str(validation.message) if validation.message else f"failed expression: {validation.source}"

    def _mutate_one(self, policy: CompiledPolicy, obj: Any) -> tuple[PolicyResult, Any]:
        result = PolicyResult(policy)
        if self._unknown(policy, result):
            return result, obj
        if policy.python_function is not None:
            return result, self._run_python(policy, obj, result, phase="mutate")
        current = obj
        for index, param in enumerate(self._params_of(policy, result)):
            run = self._start(policy, current, result, param, index)
            if run is None:
                continue
            # A policy's mutations form one JSON Patch per params object: applied whole, or (after a failed
            # test, or a fault) not at all.
            try:
                current = self._apply_mutations(policy, run, current, result)
            except PatchTestFailed:
                return PolicyResult(policy), obj
            except (PatchError, CelEvaluationError) as error:
                result.fault(str(error), direct=True)
                result.patch.clear()
                return result, obj
        return result, current

    def _apply_mutations(self, policy: CompiledPolicy, run: _PolicyRun | _SharedRun, obj: Any,
                         result: PolicyResult) -> Any:
        current = obj
        for index, mutation in enumerate(policy.mutations):
            try:
                if mutation.apply_program is not None:
                    applied = run.evaluate(mutation.apply_program)
                    if not isinstance(applied, dict):
                        raise CelEvaluationError(f"applyConfiguration must evaluate to an object, got "
                                                 f"{type(applied).__name__}")
                    operations = make_patch(current, merge(current, applied))
                else:
                    operations = self._operations(run, mutation)
            except CelEvaluationError as error:
                source = getattr(mutation.apply_program or mutation.patches_program, "source", "")  # Kubernetes'
                raise CelEvaluationError(native.expression_error(source, error) if policy.binding else
                                         f"mutation {index}: {error}") from error
            current, applied_operations = apply_operations(current, operations)
            result.patch.extend(applied_operations)
        return current

    @staticmethod
    def _operations(run: _PolicyRun | _SharedRun, mutation: CompiledMutation) -> list[dict[str, Any]]:
        if mutation.condition_program is not None and run.evaluate(mutation.condition_program) is not True:
            return []
        if mutation.patches_program is not None:
            return list(run.evaluate(mutation.patches_program))
        operation: dict[str, Any] = {"op": mutation.op, "path": mutation.path}
        if mutation.from_path is not None:
            operation["from"] = mutation.from_path
        if mutation.value_program is not None:
            operation["value"] = run.evaluate(mutation.value_program)
        elif mutation.op in ("add", "replace", "test"):
            operation["value"] = mutation.value
        return [operation]

    # --- Python policies -----------------------------------------------------------------------------

    def python_request(self, obj: Any, params: Any) -> authoring.AdmissionRequest:
        if self._python_request is None:  # what every Python policy of this request sees alike, made once
            context, request = self.context, self.context.request
            kind = request.get("kind") or {}
            resource = request.get("resource") or {}
            self._python_request = authoring.AdmissionRequest(
                uid=context.uid, operation=context.key.operation,
                kind=authoring.GroupVersionKind(kind.get("group", ""), kind.get("version", ""),
                                                kind.get("kind", "")),
                resource=authoring.GroupVersionResource(resource.get("group", ""), resource.get("version", ""),
                                                        resource.get("resource", "")),
                sub_resource=context.key.sub_resource, name=context.name, namespace=context.namespace,
                object=obj, old_object=context.old_object, user_info=context.user_info, dry_run=context.dry_run,
                params=params, namespace_object=context.namespace_object, options=request.get("options"),
                now=context.now or datetime.datetime.now(datetime.UTC), cluster=context.cluster,
            )
        shared = self._python_request
        if shared.object is obj and shared.params is params:
            return shared
        return dataclasses.replace(shared, object=obj, params=params)

    def _run_python(self, policy: CompiledPolicy, obj: Any, result: PolicyResult, *, phase: Phase) -> Any:
        assert policy.python_function is not None
        try:
            returned = policy.python_function(self.python_request(obj, policy.params))
        except Exception as error:  # a policy function may raise anything; it is a fault, not a crash
            result.faults.append(python_faults.fault(error, function=policy.python_function, origin=policy.origin))
            return obj
        items = returned if isinstance(returned, list | tuple) else [returned]
        operations: list[Any] = []
        for item in items:
            if item is None or isinstance(item, authoring.Allow):
                continue
            if isinstance(item, authoring.Deny):
                result.violations.append(Violation(str(item.message), item.reason))
            elif isinstance(item, authoring.Warn):
                result.warnings.append(str(item.message))
            elif isinstance(item, authoring.Audit):
                result.audit_annotations[f"{policy.name}.{item.key}"] = str(item.value)
            elif isinstance(item, authoring.Patch) and phase == "mutate":
                operations.extend(item.operations)
            elif isinstance(item, authoring.Patch):
                result.faults.append("a validating policy returned patch(); use @mutating for patches")
            else:
                result.faults.append(
                    f"returned {type(item).__name__}; expected None, allow(), deny(), warn(), audit() or patch()")
        if result.faults or not operations:
            return obj
        try:
            current, applied = apply_operations(obj, operations)
        except PatchTestFailed:
            return obj
        except PatchError as error:
            result.faults.append(str(error))
            return obj
        result.patch.extend(applied)
        return current
