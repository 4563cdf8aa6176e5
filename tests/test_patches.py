"""apply_operations: a working copy that shares what the operations leave alone, never the caller's document."""

from __future__ import annotations

import copy
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
