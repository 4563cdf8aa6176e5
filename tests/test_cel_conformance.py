"""The CEL specification's own conformance tests, run on webhook.cel.

The cases come from google/cel-spec (tests/simple/testdata/*.textproto), converted once into
tests/data/cel_conformance.json by tests/cel_conformance/convert.py (see tests/data/cel_conformance.NOTICE). One test
per case, named `file/section/name`. Cases that need protobuf message types (TestAllTypes, wrappers, enums, Any,
Struct/Value/ListValue messages) are skipped with the reason the table records; every other case runs, including
those whose extension or feature the runtime lacks, so that the gaps stay visible.

A case passes when:

- `check_only`: the expression compiles (with its declared variables, functions and container);
- a deduced type (type_deduction.textproto): the checker's type, `Program.return_type`, is that type;
- an expected value: it compiles (unchecked when `disable_check`), evaluates with the bindings, and the result equals
  the expected value exactly: same CEL type at every level (1, 1u and 1.0 differ; true is not 1), NaN matches NaN,
  maps compare without regard to order;
- an expected error: it compiles, and evaluating raises a CelError (the spec's error texts vary by implementation and
  are shown, not compared), or it does not compile with exactly the error text the case gives (a checker's error,
  as in network_ext's `is_ip_cidr_compile_error`).
"""

from __future__ import annotations

import base64
import calendar
import json
import math
import re
from collections import Counter
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cel_expr_python import cel

from webhook.cel.codegen import FALLBACKS
from webhook.cel.environment import PER_CALL_LIMIT, CelCompileError, Environment
from webhook.cel.values import CelError, CelType, Duration, Timestamp, UInt

TABLE = Path(__file__).parent / "data" / "cel_conformance.json"

_PRIMITIVES = {
    "BOOL": cel.Type.BOOL, "INT64": cel.Type.INT, "UINT64": cel.Type.UINT, "DOUBLE": cel.Type.DOUBLE,
    "STRING": cel.Type.STRING, "BYTES": cel.Type.BYTES,
}
_WELL_KNOWN = {"TIMESTAMP": cel.Type.TIMESTAMP, "DURATION": cel.Type.DURATION}
_NATIVE_MESSAGES = {"google.protobuf.Timestamp": cel.Type.TIMESTAMP, "google.protobuf.Duration": cel.Type.DURATION}
_DOUBLES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_TIMESTAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z")
# Cases outside the table's protobuf sections that do not run here, each with its reason (README, CEL engines).
_NOT_RUN = {
    "block_ext/": "cel.block/cel.index/cel.iterVar are cel-go's internal form for its common-subexpression optimiser, "
                  "not part of Kubernetes' CEL environment; cel-expr-python's parser has no such macros",
    "type_deduction/type_parameters/multiple_parameters_": "the case declares a function with type parameters, which "
                  "cel-expr-python's Type (our checker's declarations) cannot express",
}
# Known differences, run and expected to fail (strict: one that starts passing fails the suite).
_KNOWN_DIFFERENCES = {
    "string_ext/format/map support (all key types)": "a map with both true and 1 as keys: the runtime's maps are "
                  "Python dicts, where True == 1 (Kubernetes objects are JSON: their keys are strings)",
    # cel-go's network extension accepts IPv4-mapped IPv6 addresses and compares them equal to the IPv4 address;
    # Kubernetes' ip() refuses them (`IPv4-mapped IPv6 address "::ffff:c0a8:1" is not allowed`), and so do we.
    "network_ext/ipv4/ipv4_equals_ipv6": "Kubernetes' ip() refuses IPv4-mapped IPv6 addresses (cel-go's accepts them)",
    "network_ext/ipv4/ipv4_not_equals_ipv6": "Kubernetes' ip() refuses IPv4-mapped IPv6 addresses (cel-go's accepts "
                  "them)",
}


def _cases() -> list[Any]:
    cases = json.loads(TABLE.read_text(encoding="utf-8"))["cases"]
    seen: Counter[str] = Counter()
    params = []
    for case in cases:
        name = f"{case['file']}/{case['section']}/{case['name']}"
        seen[name] += 1
        if seen[name] > 1:  # a few names repeat within a file in the spec
            name = f"{name}#{seen[name]}"
        marks = [pytest.mark.skip(reason=case["skip"])] if "skip" in case else []
        marks += [pytest.mark.skip(reason=why) for prefix, why in _NOT_RUN.items() if name.startswith(prefix)]
        if name in _KNOWN_DIFFERENCES:
            marks.append(pytest.mark.xfail(reason=_KNOWN_DIFFERENCES[name], strict=True))
        params.append(pytest.param(case, id=name, marks=marks))
    return params


def cel_type(form: dict[str, Any]) -> Any:
    """A declared type from the table as a cel_expr_python type."""
    (kind, value), = form.items()
    if kind == "primitive":
        return _PRIMITIVES[value]
    if kind == "list":
        return cel.Type.List(cel_type(value))
    if kind == "map":
        return cel.Type.Map(cel_type(value[0]), cel_type(value[1]))
    if kind == "dyn":
        return cel.Type.DYN
    if kind == "null":
        return cel.Type.NULL
    if kind == "wellknown" and value in _WELL_KNOWN:
        return _WELL_KNOWN[value]
    if kind == "message" and value in _NATIVE_MESSAGES:
        return _NATIVE_MESSAGES[value]
    if kind == "type":
        return cel.Type.TYPE if value is None else cel.Type.Type(cel_type(value))
    if kind == "abstract":
        return cel.Type.AbstractType(value["name"], [cel_type(p) for p in value["params"]])
    raise ValueError(f"no cel type for {form}")


def decode(tagged: dict[str, Any]) -> Any:
    """A tagged value from the table as the runtime's value (maps with keys Python would merge, such as true and 1,
    are refused: the runtime's dict cannot hold them either)."""
    (kind, value), = tagged.items()
    if kind == "null":
        return None
    if kind in ("bool", "string"):
        return value
    if kind == "int":
        return int(value)
    if kind == "uint":
        return UInt(int(value))
    if kind == "double":
        return _DOUBLES.get(value, value) if isinstance(value, str) else float(value)
    if kind == "bytes":
        return base64.b64decode(value)
    if kind == "list":
        return [decode(item) for item in value]
    if kind == "map":
        result = {decode(k): decode(v) for k, v in value}
        if len(result) != len(value):
            raise ValueError(f"map keys collide as Python dict keys: {value}")
        return result
    if kind == "type":
        return CelType(value)
    if kind == "timestamp":
        return Timestamp(_timestamp_nanos(value))
    if kind == "duration":
        return Duration(int(Decimal(value.removesuffix("s")) * 10**9))
    raise ValueError(f"cannot decode {tagged} (a protobuf value: the case should be skipped)")


def _timestamp_nanos(text: str) -> int:
    found = _TIMESTAMP.fullmatch(text)
    if found is None:
        raise ValueError(f"not an RFC 3339 UTC timestamp: {text}")
    seconds = calendar.timegm(datetime.strptime(found.group(1), "%Y-%m-%dT%H:%M:%S").timetuple())
    return seconds * 10**9 + int((found.group(2) or "").ljust(9, "0"))


def same(expected: Any, actual: Any) -> bool:
    """Equal, and of the same CEL type at every level (NaN matches NaN, maps in any order)."""
    if isinstance(expected, list):
        return (isinstance(actual, list | tuple) and len(actual) == len(expected)
                and all(same(e, a) for e, a in zip(expected, actual, strict=True)))
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or len(actual) != len(expected):
            return False
        for key, value in expected.items():
            matches = [a for k, a in actual.items() if same(key, k)]
            if len(matches) != 1 or not same(value, matches[0]):
                return False
        return True
    if type(expected) is not type(actual):
        return False
    if isinstance(expected, float) and math.isnan(expected):
        return math.isnan(actual)
    return bool(expected == actual)


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _uses_type_params(form: Any) -> bool:
    if isinstance(form, dict):
        return "type_param" in form or any(_uses_type_params(v) for v in form.values())
    return isinstance(form, list) and any(_uses_type_params(v) for v in form)


def function_declarations(case: dict[str, Any]) -> list[Any]:
    """The case's declared functions (checked, never called) as cel_expr_python declarations."""
    declarations = []
    for decl in case["type_env"]:
        if "function" not in decl:
            continue
        if _uses_type_params(decl["function"]):
            raise ValueError(f"{decl['name']} has type parameters, which cel_expr_python's Type cannot declare")
        declarations.append(cel.FunctionDecl(decl["name"], [
            cel.Overload(o["id"], cel_type(o["result"]), [cel_type(p) for p in o["params"]], is_member=o["member"])
            for o in decl["function"]]))
    return declarations


def _compile(case: dict[str, Any]) -> Any:
    """The case's program, or why it has none, as text."""
    variables = {decl["name"]: cel_type(decl["type"]) for decl in case["type_env"] if "type" in decl}
    options: dict[str, Any] = {"container": case["container"]}
    try:
        declarations = function_declarations(case)
    except ValueError as error:
        return f"cannot declare the case's functions: {error}"
    if declarations:
        options["declarations"] = declarations
    try:
        return Environment(variables, **options).compile(case["expr"], disable_check=case["disable_check"])
    except CelCompileError as error:
        return f"does not compile: {error}"


def _evaluate(program: Any, bindings: dict[str, Any]) -> tuple[Any, CelError | None]:
    try:
        return program.evaluate(bindings), None
    except CelError as error:
        return None, error


def _fast_path_agrees(program: Any, bindings: dict[str, Any]) -> str | None:
    """The generated fast path (webhook.cel.codegen), where it answers, gives the planned closures' value and cost;
    where the closures fail, it must give way (raise) too. None when they agree, else what differs."""
    if program.fast is None:
        return None
    try:
        planned: tuple[Any, int] | None = program.evaluate_planned(bindings)
    except CelError:
        planned = None
    try:
        fast = program.fast(bindings, PER_CALL_LIMIT)
    except FALLBACKS:
        return None
    if planned is None:
        return f"the fast path gives {_show(fast[0])} where the closures fail"
    if not same(planned[0], fast[0]) or planned[1] != fast[1]:
        return f"the fast path gives {_show(fast[0])} at cost {fast[1]}, the closures {_show(planned[0])} at cost " \
               f"{planned[1]}"
    return None


@pytest.mark.parametrize("case", _cases())
def test_conformance(case: dict[str, Any]) -> None:
    expect = case["expect"]
    where = f"\n  expression: {case['expr']}\n  expected: {expect}"
    program = _compile(case)
    if isinstance(program, str):
        if any(program == f"does not compile: {text}" for text in expect.get("error", [])):
            return
        pytest.fail(program + where)
    deduced = case.get("deduced_type")
    return_type = getattr(program, "return_type", None)
    if deduced is not None and return_type is not None and return_type != cel_type(deduced):
        pytest.fail(f"the checker deduces {return_type}, expected {cel_type(deduced)}" + where)
    if "any" in expect:
        return
    bindings = {name: decode(value) for name, value in case["bindings"].items()}
    difference = _fast_path_agrees(program, bindings)
    if difference is not None:
        pytest.fail(difference + where)
    result, error = _evaluate(program, bindings)
    if "error" in expect:
        if error is None:
            pytest.fail(f"evaluates to {_show(result)}, expected an error" + where)
        return
    if error is not None:
        pytest.fail(f"fails: {error}" + where)
    expected = decode(expect["value"])
    if not same(expected, result):
        pytest.fail(f"evaluates to {_show(result)}, expected {_show(expected)}" + where)
