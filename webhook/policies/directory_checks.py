"""Checks of a whole policy directory that point at the line an author got wrong: params objects and paramKinds."""

from __future__ import annotations

import difflib

from webhook.errors import SourceProblem
from webhook.policies.native import NativeDocuments
from webhook.policies.params import ParamStore
from webhook.yamlsource import Document


def duplicate_params(store: ParamStore, documents: list[Document]) -> list[SourceProblem]:
    """Two params objects of one kind, namespace and name would both be evaluated: an error at each."""
    problems = []
    seen: dict[tuple[str, str, str, str], Document] = {}
    for document in documents:
        identity = store.identity(document.data)
        first = seen.setdefault(identity, document)
        if first is document:
            continue
        what = f"{identity[1]} {'/'.join(part for part in identity[2:] if part)}"
        for here, there in ((first, document), (document, first)):
            other = there.where(("metadata", "name"))
            problems.append(here.problem(("metadata", "name"), (
                f"{what} is defined again at {there.path}:{other.line}:{other.column}; params objects of one "
                "kind, namespace and name must be unique (rename or remove one)")))
    return problems


def param_kind_typos(native: NativeDocuments, store: ParamStore,
                     unknown: list[Document]) -> tuple[list[SourceProblem], set[int]]:
    """A paramKind that no object here has, close to the kind of an object no policy takes (`ConfigMpa` for
    `ConfigMap`): an error at the paramKind, and the ids of the objects it explains (not reported again)."""
    problems: list[SourceProblem] = []
    explained: set[int] = set()
    for document, policy in native.policies.values():
        kind = policy.spec.paramKind
        if kind is None:
            continue
        named = f"{kind.apiVersion}/{kind.kind}"
        if store.objects.get((kind.apiVersion, kind.kind)):
            continue  # the kind has objects here: not a typo
        for candidate in unknown:
            written = f"{candidate.data.get('apiVersion')}/{candidate.data.get('kind')}"
            if not difflib.get_close_matches(named, [written], cutoff=0.8):
                continue
            at = candidate.where(("kind",))
            problems.append(document.problem(("spec", "paramKind", "kind"), (
                f"paramKind {named}: no object of this kind in the directory; did you mean {written} "
                f"(as at {candidate.path}:{at.line}:{at.column})?")))
            explained.add(id(candidate))
            break
    return problems, explained


def unmatched_param_refs(native: NativeDocuments, store: ParamStore) -> list[SourceProblem]:
    """A paramRef.name that names no params object here: with no cluster (`webhook test`, `serve` without one)
    the binding finds no params. A warning: a cluster may hold the object."""
    warnings = []
    for document, binding in native.bindings:
        ref = binding.spec.paramRef
        found = native.policies.get((binding.kind.removesuffix("Binding"), binding.spec.policyName))
        if ref is None or ref.name is None or found is None or found[1].spec.paramKind is None:
            continue
        kind = found[1].spec.paramKind
        objects = store.objects.get((kind.apiVersion, kind.kind), [])
        if any(o.name == ref.name and (not ref.namespace or o.namespace == ref.namespace) for o in objects):
            continue
        where = f" in namespace {ref.namespace}" if ref.namespace else ""
        warnings.append(document.problem(("spec", "paramRef", "name"), (
            f"paramRef.name {ref.name!r}: no {kind.apiVersion}/{kind.kind} of that name{where} in this directory; "
            f"without a cluster the binding finds no params (parameterNotFoundAction "
            f"{ref.parameterNotFoundAction or 'Deny'})")))
    return warnings
