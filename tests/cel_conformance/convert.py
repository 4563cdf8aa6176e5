"""Convert the CEL specification's conformance tests into the JSON table that tests/test_cel_conformance.py runs.

The CEL specification (the public repository google/cel-spec) keeps its conformance tests as protobuf text files,
`tests/simple/testdata/*.textproto`, one `cel.expr.conformance.test.SimpleTestFile` per file. Reading them needs the
protobuf schema; the test suite should not, so this script turns them once into `tests/data/cel_conformance.json`
(committed), and copies the specification's license next to it.

Run by hand, from the repository root, against a checkout (or copy) of cel-spec at the commit named below:

    .venv/bin/python tests/cel_conformance/convert.py /path/to/cel-spec

It needs grpcio-tools and protobuf (both in the dev venv): it compiles the spec's .proto files (the test file schema,
`cel.expr.Value`, and the proto2/proto3 `TestAllTypes` messages that values in the tests name) into a temporary
directory with `python -m grpc_tools.protoc`, imports them, and parses each file with
`google.protobuf.text_format.Parse`. The output is deterministic (files in name order, sections and tests in file
order, keys sorted): running it twice writes the same bytes.

Written files:

- `tests/data/cel_conformance.json`: a header (origin, commit, license) and `cases`, one JSON object a line with
  `file`, `section`, `name`, `expr`, `disable_check`, `check_only`, `container`, `type_env` (declared variables and
  functions), `bindings` (name -> value), `expect` (`{"value": V}`, `{"error": [messages]}` or
  `{"any": "<why any result passes>"}`), `deduced_type` for the tests that give one, and `skip` (the reason) for
  every case that needs protobuf message types. No case is left out.
- `tests/data/cel_conformance.NOTICE`, `tests/data/cel_conformance.LICENSE`: where the data comes from, and the
  Apache-2.0 license it is under.

Values are tagged so that every CEL distinction survives JSON: `{"int": "-5"}` and `{"uint": "5"}` (64-bit integers
as strings), `{"double": 1.5}` (or "NaN", "Infinity", "-Infinity"), `{"string": ...}`, `{"bytes": "<base64>"}`,
`{"bool": true}`, `{"null": null}`, `{"list": [...]}`, `{"map": [[k, v], ...]}` (entries in file order),
`{"type": "name"}`, `{"timestamp": "<RFC 3339>"}` and `{"duration": "<seconds>s"}` for google.protobuf.Timestamp and
Duration messages, `{"enum": {"type": ..., "value": n}}` and `{"message": "type.name"}` for any other message.

Types (in `type_env` and `deduced_type`): `{"primitive": "INT64"}`, `{"wrapper": "INT64"}`, `{"wellknown":
"DURATION"}`, `{"list": T}`, `{"map": [K, V]}`, `{"message": "name"}`, `{"abstract": {"name": ..., "params":
[...]}}`, `{"type": T}` (or `{"type": null}`), `{"type_param": "T"}`, `{"dyn": true}`, `{"null": true}`,
`{"error": true}`, `{"function": {"params": [...], "result": T}}`.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ORIGIN_REPOSITORY = "https://github.com/google/cel-spec"
ORIGIN_COMMIT = "508bd98efda47d85bcf1b9930dd5f35fa37e9a18"
TESTDATA = Path("tests/simple/testdata")
REPO_ROOT = Path(__file__).resolve().parents[2]
OUTPUT = REPO_ROOT / "tests" / "data" / "cel_conformance.json"
NOTICE = OUTPUT.with_suffix(".NOTICE")
LICENSE = OUTPUT.with_suffix(".LICENSE")

# The generated modules, by the .proto file they come from (all of cel-spec's protos are compiled; these are imported
# so that their messages are in the default descriptor pool when `Any` values are parsed).
PROTO_MODULES = (
    "cel.expr.conformance.test.simple_pb2",
    "cel.expr.conformance.proto2.test_all_types_pb2",
    "cel.expr.conformance.proto2.test_all_types_extensions_pb2",
    "cel.expr.conformance.proto3.test_all_types_pb2",
)
WELL_KNOWN_MODULES = (
    "any_pb2", "duration_pb2", "empty_pb2", "field_mask_pb2", "struct_pb2", "timestamp_pb2", "wrappers_pb2",
)

# Files that test protobuf messages as such: every case in them is skipped with this reason.
FILE_SKIPS = {
    "enums": "protobuf enums (proto2/proto3 TestAllTypes enum fields and GlobalEnum constants)",
    "proto2": "protobuf proto2 messages (cel.expr.conformance.proto2.TestAllTypes)",
    "proto2_ext": "protobuf proto2 extensions (proto.getExt/hasExt on proto2 TestAllTypes)",
    "proto3": "protobuf proto3 messages (cel.expr.conformance.proto3.TestAllTypes)",
    "wrappers": "protobuf wrapper messages (google.protobuf.*Value, Struct, ListValue, Any)",
}

# The message types CEL maps to its own values: these are not protobuf messages to the runtime.
CEL_NATIVE_MESSAGES = frozenset({"google.protobuf.Timestamp", "google.protobuf.Duration"})

_IDENT = re.compile(r"[A-Za-z_]\w*")
_QUALIFIED = re.compile(r"(?<![\w.])\.?[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*(?:\s*\{)?")
_KEYWORDS = frozenset({"in", "true", "false", "null"})
_STRING_PREFIXES = frozenset({"r", "b", "rb", "br"})


def _skip_string(expr: str, start: int, *, raw: bool) -> int:
    """The index just past the string literal whose opening quote is at `start` (the end of the text if the literal
    is unterminated, as in the parser's error tests)."""
    quote = expr[start:start + 3] if expr[start:start + 3] in ('"""', "'''") else expr[start]
    i = start + len(quote)
    while i < len(expr):
        if not raw and expr[i] == "\\":
            i += 2
        elif expr.startswith(quote, i):
            return i + len(quote)
        elif len(quote) == 1 and expr[i] == "\n":
            return i
        else:
            i += 1
    return len(expr)


def _code_only(expr: str) -> str:
    """The expression with string and bytes literals replaced by "" and comments by a space, and whitespace around
    dots removed (so that `. cel. expr .conformance` reads as one name)."""
    out: list[str] = []
    i = 0
    while i < len(expr):
        if expr.startswith("//", i):
            newline = expr.find("\n", i)
            i = len(expr) if newline < 0 else newline
            out.append(" ")
            continue
        word = _IDENT.match(expr, i)
        if word is not None:
            end = word.end()
            if word.group().lower() in _STRING_PREFIXES and end < len(expr) and expr[end] in "'\"":
                i = _skip_string(expr, end, raw="r" in word.group().lower())
                out.append('""')
            else:
                out.append(word.group())
                i = end
            continue
        if expr[i] in "'\"":
            i = _skip_string(expr, i, raw=False)
            out.append('""')
            continue
        out.append(expr[i])
        i += 1
    return re.sub(r"\s*\.\s*", ".", "".join(out))


def message_uses(expr: str, message_names: frozenset[str]) -> list[str]:
    """What in an expression needs protobuf message types: message literals (`Name{...}`), names of the conformance
    protos' messages and enums (`message_names`: TestAllTypes, GlobalEnum, NestedEnum, ...), google.protobuf types
    other than Timestamp and Duration (CEL's own types), and the protobuf extension functions."""
    found: list[str] = []
    for match in _QUALIFIED.finditer(_code_only(expr)):
        text = match.group()
        name = text.rstrip("{ \t\r\n\f\v").lstrip(".")
        parts = name.split(".")
        if text.endswith("{") and name not in _KEYWORDS:
            found.append(f"constructs a {name} message")
        elif name in {"proto.getExt", "proto.hasExt"}:
            found.append(f"calls {name} (protobuf extensions)")
        elif name.startswith("google.protobuf.") and name not in CEL_NATIVE_MESSAGES:
            found.append(f"names the protobuf type {name}")
        elif not message_names.isdisjoint(parts):
            found.append(f"names {name} (a conformance proto message or enum)")
    return sorted(set(found))


def message_names() -> frozenset[str]:
    """The short names of the messages and enums that cel-spec's conformance protos define (TestAllTypes,
    NestedTestAllTypes, TestRequired, GlobalEnum, NestedEnum, NestedMessage, ...)."""
    names: set[str] = set()

    def add(descriptor: Any) -> None:
        names.add(descriptor.name)
        for nested in descriptor.nested_types:
            add(nested)
        for enum in descriptor.enum_types:
            names.add(enum.name)

    for module in PROTO_MODULES[1:]:
        file = importlib.import_module(module).DESCRIPTOR
        for message in file.message_types_by_name.values():
            add(message)
        names.update(file.enum_types_by_name)
    return frozenset(names)


def compile_protos(spec: Path, into: Path) -> None:
    import grpc_tools  # type: ignore[import-untyped]

    include = Path(grpc_tools.__file__).parent / "_proto"
    proto_root = spec / "proto"
    protos = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_root}", f"-I{include}", f"--python_out={into}",
         *protos], check=True)


def _double(number: float) -> float | str:
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    return number


class Converter:
    def __init__(self, message_names: frozenset[str]) -> None:
        self.message_names = message_names
        self.reasons: list[str] = []  # filled while converting one case: why it needs protobuf messages

    def value(self, value: Any, where: str) -> Any:
        """A cel.expr.Value as tagged JSON; notes a reason when the value is a protobuf message."""
        kind = value.WhichOneof("kind")
        if kind == "null_value":
            return {"null": None}
        if kind == "bool_value":
            return {"bool": value.bool_value}
        if kind == "int64_value":
            return {"int": str(value.int64_value)}
        if kind == "uint64_value":
            return {"uint": str(value.uint64_value)}
        if kind == "double_value":
            return {"double": _double(value.double_value)}
        if kind == "string_value":
            return {"string": value.string_value}
        if kind == "bytes_value":
            return {"bytes": base64.b64encode(value.bytes_value).decode("ascii")}
        if kind == "type_value":
            return {"type": value.type_value}
        if kind == "list_value":
            return {"list": [self.value(item, where) for item in value.list_value.values]}
        if kind == "map_value":
            return {"map": [[self.value(entry.key, where), self.value(entry.value, where)]
                            for entry in value.map_value.entries]}
        if kind == "enum_value":
            self.reasons.append(f"{where} a {value.enum_value.type} enum value")
            return {"enum": {"type": value.enum_value.type, "value": value.enum_value.value}}
        if kind == "object_value":
            return self.message(value.object_value, where)
        raise ValueError(f"unknown cel.expr.Value kind {kind!r}")

    def message(self, packed: Any, where: str) -> Any:
        from google.protobuf import duration_pb2, timestamp_pb2

        name = packed.TypeName()
        if name == "google.protobuf.Timestamp":
            timestamp = timestamp_pb2.Timestamp()
            packed.Unpack(timestamp)
            return {"timestamp": timestamp.ToJsonString()}
        if name == "google.protobuf.Duration":
            duration = duration_pb2.Duration()
            packed.Unpack(duration)
            return {"duration": duration.ToJsonString()}
        self.reasons.append(f"{where} a {name} message")
        return {"message": name}

    def type(self, cel_type: Any, where: str) -> Any:
        """A cel.expr.Type as JSON; notes a reason when it is a protobuf message, wrapper or Any."""
        kind = cel_type.WhichOneof("type_kind")
        if kind == "dyn":
            return {"dyn": True}
        if kind == "null":
            return {"null": True}
        if kind == "error":
            return {"error": True}
        if kind == "primitive":
            return {"primitive": type(cel_type).PrimitiveType.Name(cel_type.primitive)}
        if kind == "wrapper":
            name = type(cel_type).PrimitiveType.Name(cel_type.wrapper)
            self.reasons.append(f"{where} the wrapper type {name}")
            return {"wrapper": name}
        if kind == "well_known":
            name = type(cel_type).WellKnownType.Name(cel_type.well_known)
            if name == "ANY":
                self.reasons.append(f"{where} google.protobuf.Any")
            return {"wellknown": name}
        if kind == "list_type":
            return {"list": self.type(cel_type.list_type.elem_type, where)}
        if kind == "map_type":
            return {"map": [self.type(cel_type.map_type.key_type, where),
                            self.type(cel_type.map_type.value_type, where)]}
        if kind == "message_type":
            if cel_type.message_type not in CEL_NATIVE_MESSAGES:
                self.reasons.append(f"{where} the message type {cel_type.message_type}")
            return {"message": cel_type.message_type}
        if kind == "type_param":
            return {"type_param": cel_type.type_param}
        if kind == "type":
            inner = cel_type.type
            return {"type": self.type(inner, where) if inner.WhichOneof("type_kind") else None}
        if kind == "abstract_type":
            return {"abstract": {"name": cel_type.abstract_type.name,
                                 "params": [self.type(p, where) for p in cel_type.abstract_type.parameter_types]}}
        if kind == "function":
            return {"function": {"params": [self.type(p, where) for p in cel_type.function.arg_types],
                                 "result": self.type(cel_type.function.result_type, where)}}
        raise ValueError(f"unknown cel.expr.Type kind {kind!r}")

    def decl(self, decl: Any) -> dict[str, Any]:
        kind = decl.WhichOneof("decl_kind")
        if kind == "ident":
            if decl.ident.HasField("value"):
                raise ValueError(f"constant declarations are not supported ({decl.name})")
            return {"name": decl.name, "type": self.type(decl.ident.type, f"declares {decl.name} as")}
        overloads = []
        for overload in decl.function.overloads:
            where = f"declares the function {decl.name} with"
            overloads.append({
                "id": overload.overload_id,
                "member": overload.is_instance_function,
                "params": [self.type(p, where) for p in overload.params],
                "result": self.type(overload.result_type, where),
                "type_params": list(overload.type_params),
            })
        return {"name": decl.name, "function": overloads}

    def case(self, file: str, section: Any, test: Any) -> dict[str, Any]:
        self.reasons = []
        if test.disable_macros or test.locale:
            raise ValueError(f"{file}/{section.name}/{test.name}: disable_macros and locale are not supported")
        case: dict[str, Any] = {
            "file": file,
            "section": section.name,
            "name": test.name,
            "expr": test.expr,
            "disable_check": test.disable_check,
            "check_only": test.check_only,
            "container": test.container,
            "type_env": [self.decl(d) for d in test.type_env],
        }
        bindings = {}
        for name in sorted(test.bindings):
            bound = test.bindings[name]
            if bound.WhichOneof("kind") != "value":
                raise ValueError(f"{file}/{section.name}/{test.name}: binding {name} is not a value")
            bindings[name] = self.value(bound.value, f"binds {name} to")
        case["bindings"] = bindings
        matcher = test.WhichOneof("result_matcher")
        if test.check_only:
            case["expect"] = {"any": "check_only: the expression must compile; it is not evaluated"}
        elif matcher is None:
            case["expect"] = {"value": {"bool": True}}
        elif matcher == "value":
            case["expect"] = {"value": self.value(test.value, "expects")}
        elif matcher == "typed_result":
            case["expect"] = {"value": self.value(test.typed_result.result, "expects")}
        elif matcher == "eval_error":
            case["expect"] = {"error": [e.message for e in test.eval_error.errors]}
        elif matcher == "any_eval_errors":
            case["expect"] = {"error": [e.message for s in test.any_eval_errors.errors for e in s.errors]}
        elif matcher in ("unknown", "any_unknowns"):
            case["expect"] = {"any": f"{matcher}: the spec expects an unknown result, which the runtime lacks"}
        else:
            raise ValueError(f"unknown result matcher {matcher!r}")
        if test.HasField("typed_result") and test.typed_result.HasField("deduced_type"):
            case["deduced_type"] = self.type(test.typed_result.deduced_type, "deduces")
        self.reasons.extend(message_uses(test.expr, self.message_names))
        if file in FILE_SKIPS:
            case["skip"] = f"needs protobuf message types: {FILE_SKIPS[file]}"
        elif self.reasons:
            case["skip"] = "needs protobuf message types: " + "; ".join(sorted(set(self.reasons)))
        return case


_C_QUESTION_MARK = re.compile(r"(?<!\\)((?:\\\\)*)\\\?")


def _c_question_marks(text: str) -> str:
    """The text format file with each `\\?` escape written as `?`: protobuf's C++ and Go parsers read `\\?` as `?`
    (a C escape), Python's (text_encoding.CUnescape) keeps the backslash, which changes the raw-string and bytes
    tests of parse.textproto."""
    return _C_QUESTION_MARK.sub(r"\1?", text)


def convert(spec: Path) -> list[dict[str, Any]]:
    from google.protobuf import text_format

    simple_pb2 = importlib.import_module(PROTO_MODULES[0])
    converter = Converter(message_names())
    cases: list[dict[str, Any]] = []
    for path in sorted((spec / TESTDATA).glob("*.textproto")):
        parsed = simple_pb2.SimpleTestFile()
        text_format.Parse(_c_question_marks(path.read_text(encoding="utf-8")), parsed)
        for section in parsed.section:
            cases.extend(converter.case(path.stem, section, test) for test in section.test)
    return cases


NOTICE_TEXT = f"""\
cel_conformance.json is derived from the CEL specification's conformance tests
(tests/simple/testdata/*.textproto) in the repository google/cel-spec:

    {ORIGIN_REPOSITORY}
    commit {ORIGIN_COMMIT}

Copyright Google LLC. Licensed under the Apache License, Version 2.0 (the "License"); you may not use these files
except in compliance with the License. A copy of the License is in cel_conformance.LICENSE, and at
http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software distributed under the License is distributed on
an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the License for the
specific language governing permissions and limitations under the License.

Changes: the test cases were converted from protobuf text format to JSON by tests/cel_conformance/convert.py (values
in a tagged JSON form, the text format's `\\?` escape read as `?` as protobuf's C++ and Go parsers read it); cases
that need protobuf message types are marked "skip" with the reason. No expression or expected result was changed.
"""


def write(cases: list[dict[str, Any]], spec: Path) -> None:
    header = {
        "origin": {"repository": ORIGIN_REPOSITORY, "commit": ORIGIN_COMMIT, "path": str(TESTDATA)},
        "license": "Apache-2.0; see cel_conformance.NOTICE and cel_conformance.LICENSE",
        "generated_by": "tests/cel_conformance/convert.py",
    }
    lines = ["{"]
    for key, item in header.items():
        lines.append(f"{json.dumps(key)}: {json.dumps(item, sort_keys=True, ensure_ascii=False)},")
    lines.append('"cases": [')
    rows = [json.dumps(case, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            for case in cases]
    lines.append(",\n".join(rows))
    lines.append("]}")
    OUTPUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    NOTICE.write_text(NOTICE_TEXT, encoding="utf-8")
    shutil.copyfile(spec / "LICENSE", LICENSE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("spec", type=Path, help="a copy of the google/cel-spec repository at the commit above")
    args = parser.parse_args(argv)
    spec: Path = args.spec
    readme = spec / "README.md"
    if (spec / ".git").exists():
        head = subprocess.run(["git", "-C", str(spec), "rev-parse", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        if head != ORIGIN_COMMIT:
            parser.error(f"{spec} is at {head}, not {ORIGIN_COMMIT}: update ORIGIN_COMMIT if that is intended")
    elif readme.exists() and ORIGIN_COMMIT not in readme.read_text(encoding="utf-8"):
        parser.error(f"{readme} does not name commit {ORIGIN_COMMIT}")
    with tempfile.TemporaryDirectory(prefix="cel-conformance-") as generated:
        compile_protos(spec, Path(generated))
        sys.path.insert(0, generated)
        try:
            for module in WELL_KNOWN_MODULES:
                importlib.import_module(f"google.protobuf.{module}")
            for module in PROTO_MODULES:
                importlib.import_module(module)
            cases = convert(spec)
        finally:
            sys.path.remove(generated)
    write(cases, spec)
    skipped = sum(1 for case in cases if "skip" in case)
    print(f"wrote {OUTPUT.relative_to(REPO_ROOT)}: {len(cases)} cases, {len(cases) - skipped} to run, "
          f"{skipped} skipped (protobuf messages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
