"""The builtin engine's fast paths (webhook/cel/codegen.py) change nothing but speed.

Each expression has a generated function in front of its planned closures, and each CEL policy's validate phase is
linked into one fast path (webhook/policies/cel_runtime.py `link_validations`) that answers only "clean" and gives
way to the usual evaluation for anything else. The conformance and differential tests compare single expressions
(tests/test_cel_conformance.py, tests/test_cel_differential.py); here whole verdicts are compared: the shipped
policies over the benchmark's review mix and over seeded mutations of it (fields removed, replaced by null, numbers,
strings, lists or maps: the errors that `&&`, `||`, `has()` and the macros must absorb exactly), once with the fast
paths and once with every policy and expression on the planned closures alone.
"""

from __future__ import annotations

import copy
import datetime
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from webhook.admission import admit
from webhook.cel.environment import Program
from webhook.policies.cel import make_engine
from webhook.policies.compiled import PolicySet
from webhook.policies.loader import load_policy_set
from webhook.reviews import parse_review

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import reviews  # noqa: E402

NOW = datetime.datetime(2026, 12, 2, 10, 0, tzinfo=datetime.UTC)
REPLACEMENTS: list[Any] = [None, 0, -1, 3.5, "", "x", "500m", [], [1, "a"], {}, {"a": 1}, True]


def _policy_sets() -> tuple[PolicySet, PolicySet]:
    fast = load_policy_set(ROOT / "policies", engine=make_engine("builtin"))
    slow = load_policy_set(ROOT / "policies", engine=make_engine("builtin"))
    slow.fast_validators.clear()
    for policy in slow.policies:  # every expression on its planned closures alone
        for program in _programs(policy):
            inner = getattr(program, "program", None)
            if isinstance(inner, Program):
                inner.fast = None
    return fast, slow


def _programs(policy: Any) -> Iterator[Any]:
    yield from (variable.program for variable in policy.variables)
    yield from (program for _, program in policy.match_conditions)
    for validation in policy.validations:
        yield validation.program
        if validation.message_program is not None:
            yield validation.message_program
    yield from (program for _, program in policy.audit_annotations)
    for mutation in policy.mutations:
        for name in ("value_program", "condition_program", "patches_program", "apply_program"):
            found = getattr(mutation, name, None)
            if found is not None:
                yield found


def _verdict(policy_set: PolicySet, body: bytes, phase: str) -> dict[str, Any]:
    parsed, raw = parse_review(body)
    decision = admit(policy_set, parsed.request, raw, phase=phase, now=NOW)  # type: ignore[arg-type]
    return {"allowed": decision.allowed, "code": decision.code, "reason": decision.reason,
            "message": decision.message, "warnings": decision.warnings, "annotations": decision.audit_annotations,
            "patch": decision.patch, "outcomes": decision.outcomes}


def _mutations(body: bytes, rng: random.Random, count: int) -> Iterator[bytes]:
    """`count` variants of a review, each with one to three fields of its object replaced or removed."""
    review = orjson.loads(body)
    for _ in range(count):
        variant = copy.deepcopy(review)
        obj = variant["request"]["object"]
        for _ in range(rng.randint(1, 3)):
            paths = list(_paths(obj, ()))
            if not paths:
                break
            path = rng.choice(paths)
            parent = obj
            for step in path[:-1]:
                parent = parent[step]
            if isinstance(parent, dict) and rng.random() < 0.3:
                del parent[path[-1]]
            else:
                parent[path[-1]] = copy.deepcopy(rng.choice(REPLACEMENTS))
        yield orjson.dumps(variant)


def _paths(value: Any, prefix: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("apiVersion", "kind") and not prefix:
                continue  # the review would not reach these policies at all
            if key == "annotations":
                continue  # the padding: large and read by no policy
            yield (*prefix, key)
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:3]):
            yield (*prefix, index)
            yield from _paths(item, (*prefix, index))


@pytest.fixture(scope="module")
def policy_sets() -> tuple[PolicySet, PolicySet]:
    return _policy_sets()


def test_the_shipped_cel_policies_have_linked_fast_paths(policy_sets: tuple[PolicySet, PolicySet]) -> None:
    fast, _ = policy_sets
    cel_policies = [p for p in fast.in_phase("validate") if p.python_function is None and not p.audit_annotations]
    linked = [p.name for p in cel_policies if id(p) in fast.fast_validators]
    assert len(linked) == len(cel_policies) >= 10, f"not linked: {set(p.name for p in cel_policies) - set(linked)}"


@pytest.mark.parametrize("phase", ["validate", "mutate"])
def test_verdicts_on_the_review_mix_are_the_same_on_the_fast_paths(
        policy_sets: tuple[PolicySet, PolicySet], phase: str) -> None:
    fast, slow = policy_sets
    denied = 0
    for review in reviews.review_mix():
        expected = _verdict(slow, review.body, phase)
        assert _verdict(fast, review.body, phase) == expected, review.case
        denied += not expected["allowed"]
    if phase == "validate":
        assert denied > 10  # the comparison covers denials, not only clean reviews


def test_verdicts_on_broken_objects_are_the_same_on_the_fast_paths(
        policy_sets: tuple[PolicySet, PolicySet]) -> None:
    fast, slow = policy_sets
    rng = random.Random(20261202)
    kinds: set[tuple[bool, str]] = set()
    for review in reviews.review_mix(count=60, seed=7):
        for body in _mutations(review.body, rng, count=8):
            for phase in ("validate", "mutate"):
                expected = _verdict(slow, body, phase)
                assert _verdict(fast, body, phase) == expected, body[:300]
                kinds.add((expected["allowed"], "fault" if "policy fault" in expected["message"] else "other"))
    assert (False, "fault") in kinds  # faults and clean verdicts are both compared
    assert (True, "other") in kinds
