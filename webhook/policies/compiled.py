"""Policies as they are kept after loading: every expression compiled, every request-independent part ready."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from webhook.errors import SourceProblem
from webhook.policies.cel import Engine, Program
from webhook.policies.matching import ResourceKey, is_empty, rules_match
from webhook.policies.model import LabelSelector, MatchResources, ParamKind, ParamRef
from webhook.policies.params import ParamObject, ParamStore, Resolution

Phase = Literal["validate", "mutate"]
_CACHE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class CompiledValidation:
    source: str
    program: Program
    message: str | None
    message_program: Program | None
    reason: str


@dataclass(frozen=True, slots=True)
class CompiledMutation:
    """One JSONPatch operation whose value (or condition) may be CEL, or a CEL list of operations."""

    op: str | None
    path: str | None
    from_path: str | None
    value: Any
    value_program: Program | None
    condition_program: Program | None
    patches_program: Program | None
    apply_program: Program | None = None  # MutatingAdmissionPolicy ApplyConfiguration: an object to merge


@dataclass(frozen=True, slots=True)
class CompiledVariable:
    name: str
    program: Program
    references: tuple[str, ...]  # names of earlier variables the expression uses, in order of use


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    name: str
    origin: str  # "path:line" of the definition
    match: MatchResources
    uses_resource_names: bool
    failure_policy: Literal["Fail", "Ignore"]
    actions: frozenset[str]
    match_conditions: tuple[tuple[str, Program], ...] = ()
    params: Any = None
    params_key: str | None = None  # where a shared activation holds this policy's params
    params_prepared: Any = None
    variables: tuple[CompiledVariable, ...] = ()
    validations: tuple[CompiledValidation, ...] = ()
    audit_annotations: tuple[tuple[str, Program], ...] = ()
    mutations: tuple[CompiledMutation, ...] = ()
    python_function: Callable[..., Any] | None = None
    python_phase: Phase | None = None
    # Kubernetes-native policies: one CompiledPolicy per (policy, binding).
    kind: str = "Policy"
    binding: str | None = None
    binding_match: MatchResources | None = None  # ANDed with `match`
    param_kind: ParamKind | None = None
    param_ref: ParamRef | None = None
    reinvoke: bool = False  # MutatingAdmissionPolicy reinvocationPolicy IfNeeded
    misconfiguration: str | None = None  # a fault on every request (as the API server's binding errors)
    # Computed from the fields above (so that dataclasses.replace keeps them right), for the request path:
    needs_namespace: bool = field(init=False)  # matching depends on the namespace's labels (a namespaceSelector)
    selects_all: bool = field(init=False)  # no object or namespace selector: matching the rules is enough
    variable_programs: Mapping[str, Program] = field(init=False)
    variable_names: frozenset[str] = field(init=False)
    own_params: Resolution | None = field(init=False)  # the Policy kind's `params` (no paramKind, no paramRef)
    # (objectSelector, namespaceSelector) of `match` and `binding_match`, None where empty; empty pairs left out
    selectors: tuple[tuple[LabelSelector | None, LabelSelector | None], ...] = field(init=False)

    def __post_init__(self) -> None:
        matches = [match for match in (self.match, self.binding_match) if match is not None]
        # Expressions that read `namespaceObject` get null when it is unknown, and fault where they use it.
        object.__setattr__(self, "needs_namespace", any(not is_empty(m.namespaceSelector) for m in matches))
        object.__setattr__(self, "selects_all", all(is_empty(m.namespaceSelector) and is_empty(m.objectSelector)
                                                    for m in matches))
        object.__setattr__(self, "selectors", tuple(
            (None if is_empty(m.objectSelector) else m.objectSelector,
             None if is_empty(m.namespaceSelector) else m.namespaceSelector)
            for m in matches if not (is_empty(m.objectSelector) and is_empty(m.namespaceSelector))))
        object.__setattr__(self, "variable_programs", {v.name: v.program for v in self.variables})
        object.__setattr__(self, "variable_names", frozenset(self.variable_programs))
        object.__setattr__(self, "own_params", Resolution(objects=(
            ParamObject("", "", {}, self.params, self.params_prepared),)) if self.param_kind is None and
            self.param_ref is None else None)

    @property
    def label(self) -> str:
        """How messages name it: `name`, or Kubernetes' `Kind 'name' with binding 'binding'`."""
        if self.binding is None:
            return self.name
        return f"{self.kind} '{self.name}' with binding '{self.binding}'"

    def matches_key(self, key: ResourceKey, *, name: str | None) -> bool:
        return rules_match(self.match, key, name=name) and (
            self.binding_match is None or rules_match(self.binding_match, key, name=name))

    def takes_part_in(self, phase: Phase) -> bool:
        if self.python_function is not None:
            return self.python_phase == phase
        if phase == "mutate":
            return bool(self.mutations)
        return bool(self.validations or self.audit_annotations)


@dataclass(frozen=True)
class PolicySet:
    """An immutable, fully compiled set of policies; requests keep the set they started with."""

    engine: Engine
    policies: tuple[CompiledPolicy, ...]
    namespaces: Mapping[str, Any]
    files: tuple[str, ...]
    digest: str
    params: ParamStore = field(default_factory=ParamStore)
    notes: tuple[SourceProblem, ...] = ()  # what `webhook lint` points out without refusing the set
    warnings: tuple[SourceProblem, ...] = ()  # likely mistakes: `webhook lint` warns, `--strict` refuses the set
    _by_phase: dict[Phase, tuple[CompiledPolicy, ...]] = field(default_factory=dict, repr=False)
    _cache: dict[tuple[Phase, ResourceKey], tuple[CompiledPolicy, ...]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Engines that link a policy's expressions into one fast path (the builtin engine): by id of the policy.
    fast_validators: dict[int, Callable[[dict[str, Any]], bool]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for phase in ("validate", "mutate"):
            self._by_phase[phase] = tuple(p for p in self.policies if p.takes_part_in(phase))
        link = getattr(self.engine, "link", None)
        if link is not None:
            for policy in self._by_phase["validate"]:
                fast = link(policy)
                if fast is not None:
                    self.fast_validators[id(policy)] = fast

    def candidates(self, phase: Phase, key: ResourceKey) -> tuple[CompiledPolicy, ...]:
        """Policies whose resource rules can match `key`; computed once per distinct key and cached."""
        cached = self._cache.get((phase, key))
        if cached is not None:
            return cached
        found = tuple(p for p in self._by_phase[phase] if p.matches_key(key, name=None))
        with self._lock:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[(phase, key)] = found
        return found

    def in_phase(self, phase: Phase) -> tuple[CompiledPolicy, ...]:
        return self._by_phase[phase]

    def count(self, phase: Phase) -> int:
        return len(self._by_phase[phase])
