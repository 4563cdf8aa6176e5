"""apply_operations: a working copy that shares what the operations leave alone, never the caller's document."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from webhook.patches import PatchError, PatchTestFailed, apply_operations


def document() -> dict[str, Any]:
    return {"metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
                                    {"name": "b", "image": "b:1"}],
                     "volumes": [{"name": "v", "emptyDir": {}}]}}


OPERATIONS: list[tuple[list[dict[str, Any]], dict[str, Any]]] = [
    ([{"op": "add", "path": "/metadata/labels/team", "value": "x"}],
     {"metadata": {"name": "web", "labels": {"app": "web", "team": "x"}}}),
    ([{"op": "replace", "path": "/spec/containers/0/env/0/value", "value": "2"}], {}),
    ([{"op": "remove", "path": "/spec/containers/1"}], {}),
    ([{"op": "add", "path": "/spec/containers/-", "value": {"name": "c", "image": "c:1"}}], {}),
    ([{"op": "move", "from": "/spec/volumes/0", "path": "/spec/containers/0/volume"}], {}),
    ([{"op": "copy", "from": "/spec/containers/0", "path": "/spec/template"},
      {"op": "replace", "path": "/spec/template/image", "value": "z:9"}], {}),
    ([{"op": "add", "path": "/spec/securityContext/runAsUser", "value": 1000}], {}),  # parents added
    ([{"op": "replace", "path": "", "value": {"kind": "Other"}},
      {"op": "add", "path": "/extra", "value": 1}], {"kind": "Other", "extra": 1}),
]


@pytest.mark.parametrize(("operations", "expected"), OPERATIONS)
def test_the_document_given_is_never_changed(operations: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    original = document()
    pristine = copy.deepcopy(original)
    values = copy.deepcopy(operations)
    result, applied = apply_operations(original, operations)
    assert original == pristine
    assert operations == values  # nor the operations' values (a later operation may write inside one)
    assert applied
    assert result != pristine
    for key, value in expected.items():
        assert result[key] == value
    reference = copy.deepcopy(pristine)  # the same operations on a deep copy give the same document
    again, _ = apply_operations(reference, copy.deepcopy(operations))
    assert again == result


def test_changes_land_where_they_should_and_untouched_parts_are_shared() -> None:
    original = document()
    result, _ = apply_operations(original, [{"op": "replace", "path": "/spec/containers/0/image", "value": "a:2"}])
    assert result["spec"]["containers"][0]["image"] == "a:2"
    assert original["spec"]["containers"][0]["image"] == "a:1"
    assert result["spec"]["containers"][1] is original["spec"]["containers"][1]  # shared, not copied
    assert result["metadata"] is original["metadata"]


def test_a_failed_operation_leaves_the_document_as_it_was() -> None:
    original = document()
    pristine = copy.deepcopy(original)
    with pytest.raises(PatchError):
        apply_operations(original, [{"op": "add", "path": "/spec/containers/0/name", "value": "n"},
                                    {"op": "remove", "path": "/spec/containers/7"}])
    with pytest.raises(PatchTestFailed):
        apply_operations(original, [{"op": "remove", "path": "/metadata/labels/app"},
                                    {"op": "test", "path": "/metadata/name", "value": "other"}])
    assert original == pristine


def _random_document(rng: random.Random, depth: int = 0) -> Any:
    if depth > 3 or rng.random() < 0.25:
        return rng.choice([None, 0, 1, "x", "a/b", "t~n", True, 2.5])
    if rng.random() < 0.5:
        return [_random_document(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["a", "b", "c", "a/b", "t~n", "0", ""]): _random_document(rng, depth + 1)
            for _ in range(rng.randint(0, 3))}


def _random_path(rng: random.Random, document: Any) -> str:
    """Mostly paths that exist (to a point), with odd tokens: -, 01, out-of-range indexes, escapes, ~2."""
    tokens: list[str] = []
    node = document
    while rng.random() < 0.75:
        if isinstance(node, dict) and node and rng.random() < 0.8:
            key = rng.choice(list(node))
            tokens.append(key.replace("~", "~0").replace("/", "~1"))
            node = node[key]
        elif isinstance(node, list) and node and rng.random() < 0.8:
            index = rng.randrange(len(node))
            tokens.append(str(index))
            node = node[index]
        else:
            tokens.append(rng.choice(["-", "01", "7", "0", "new", "a~1b", "x~2", "", "1e0", "-1"]))
            node = None
    return "".join("/" + token for token in tokens)


def test_operations_apply_as_jsonpatch_applies_them() -> None:
    """The operations applied in place (add, replace, remove) give what jsonpatch (the reference) gives for the
    same operation after the added parents, or both refuse; 3,000 seeded random operations on random documents."""
    import jsonpatch

    from webhook.patches import _parent_additions

    rng = random.Random(20261202)
    outcomes = {"applied": 0, "refused": 0}
    for _ in range(3000):
        doc = {"root": _random_document(rng)}
        op = rng.choice(["add", "add", "replace", "remove"])
        operation: dict[str, Any] = {"op": op, "path": _random_path(rng, doc)}
        if op != "remove":
            operation["value"] = _random_document(rng, 2)
        original = copy.deepcopy(doc)
        expected: Any
        try:
            expected = jsonpatch.apply_patch(copy.deepcopy(doc), [
                *(_parent_additions(doc, operation["path"]) if op == "add" else []), operation])
        except Exception:  # jsonpatch refuses in several ways
            expected = "refused"
        try:
            actual: Any = apply_operations(doc, [operation])[0]
        except PatchError:
            actual = "refused"
        assert actual == expected, (doc, operation)
        assert doc == original  # the caller's document is never changed
        outcomes["refused" if actual == "refused" else "applied"] += 1
    assert min(outcomes.values()) > 300, outcomes
