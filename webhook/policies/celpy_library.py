"""cel-python's functions beyond its own: the CEL strings extension as cel-expr-python has it built in, and the
Kubernetes library of webhook.policies.k8s_library, converted between celpy's types and plain values.

Names that neither cel-python nor this module knows are refused at load time, so that an expression never
compiles on one engine and then fails at run time on the other. `prepare` also rewrites the parse tree where
cel-python would read a call otherwise: namespaced functions (`sets.contains(...)`) and `list.min()`, which
cel-python takes for its own macro.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable
from typing import Any

import lark
from celpy import celtypes
from celpy.evaluation import CELEvalError, base_functions, celstr

from webhook.policies import k8s_library
from webhook.policies.k8s_library import K8sError

MACROS = frozenset({"has", "all", "exists", "exists_one", "map", "filter", "dyn"})
NAMESPACES = frozenset({"sets", "jsonpatch", "ip", "strings", "optional", "math", "cel", "base64", "proto"})
OPTIONAL_NAMES = frozenset({"optional.of", "optional.none", "optional.ofNonZeroValue", "orValue", "hasValue", "value",
                            "or", "optMap", "optFlatMap"})
_LIST_MIN = "min()"  # what `list.min()` is renamed to, out of reach of cel-python's min macro
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029" \
            "\u202f\u205f\u3000"


def _error(message: str) -> CELEvalError:
    return CELEvalError(message, ValueError, None)


def plain(value: Any) -> Any:
    """A celpy value as plain Python; durations and timestamps stay datetime values."""
    if isinstance(value, celtypes.BoolType):
        return bool(value)
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bytes):
        return bytes(value)
    return value


def celpy_value(value: Any) -> Any:
    """A plain Python value as celpy's."""
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if isinstance(value, dict):
        return celtypes.MapType({celpy_value(k): celpy_value(v) for k, v in value.items()})
    if isinstance(value, list):
        return celtypes.ListType([celpy_value(item) for item in value])
    return value


def _plain_call(impl: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        try:
            return celpy_value(impl(*(plain(arg) for arg in args)))
        except K8sError as error:
            return _error(str(error))
    return call


# --- The strings extension, as cel-expr-python (cel-cpp) has it ---------------------------------------------


def _join(items: Any, separator: Any = "") -> Any:
    if not all(isinstance(item, str) for item in items):
        return _error("No matching overloads found : join")
    return celtypes.StringType(str(separator).join(str(item) for item in items))


def _split(text: Any, separator: Any, limit: Any = -1) -> Any:
    text, separator, limit = str(text), str(separator), int(limit)
    if limit == 0:
        return celtypes.ListType([])
    if separator == "":
        parts = list(text) if limit < 0 or limit > len(text) else [*text[:limit - 1], text[limit - 1:]]
    else:
        parts = text.split(separator, limit - 1) if limit > 0 else text.split(separator)
    return celtypes.ListType([celtypes.StringType(part) for part in parts])


def _replace(text: Any, old: Any, new: Any, limit: Any = -1) -> Any:
    return celtypes.StringType(str(text).replace(str(old), str(new), int(limit)))


def _index_of(text: Any, sub: Any, start: Any = 0) -> Any:
    if isinstance(text, list):
        return FUNCTIONS["list.indexOf"](text, sub)
    start = int(start)
    if start < 0 or start > len(text):
        return _error(f"index out of range: {start}")
    return celtypes.IntType(str(text).find(str(sub), start))


def _last_index_of(text: Any, sub: Any, end: Any = None) -> Any:
    if isinstance(text, list):
        return FUNCTIONS["list.lastIndexOf"](text, sub)
    if end is None:
        return celtypes.IntType(str(text).rfind(str(sub)))
    end = int(end)
    if end < 0 or end > len(text):
        return _error(f"index out of range: {end}")
    return celtypes.IntType(str(text).rfind(str(sub), 0, end + len(sub)))


def _substring(text: Any, start: Any, end: Any = None) -> Any:
    try:
        return celtypes.StringType(k8s_library.substring(str(text), int(start), None if end is None else int(end)))
    except K8sError as error:
        return _error(str(error))


def _char_at(text: Any, index: Any) -> Any:
    index = int(index)
    if not 0 <= index <= len(text):
        return _error("<string>.charAt(<pos>): <pos> is greater than <string>.size()" if index > 0
                      else "<string>.charAt(<pos>): <pos> is less than 0")
    return celtypes.StringType(str(text)[index:index + 1])


def _ascii_case(upper: bool) -> Callable[[Any], Any]:
    def convert(text: Any) -> Any:
        return celtypes.StringType("".join(
            (c.upper() if upper else c.lower()) if c.isascii() else c for c in str(text)))
    return convert


_QUOTED = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v", "\\": "\\\\",
           '"': '\\"'}


def _quote(text: Any) -> Any:
    return celtypes.StringType('"' + "".join(_QUOTED.get(c, c) for c in str(text)) + '"')


_TYPE_NAMES = {bool: "bool", int: "int", float: "double", str: "string", bytes: "bytes", list: "list", dict: "map",
               type(None): "null_type"}


def _type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _double_text(value: float, spec: str) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return spec % value


def _as_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _double_text(value, "%g")
    if value is None:
        return "null"
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return "[" + ", ".join(_as_string(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(sorted(f"{_as_string(k)}: {_as_string(v)}" for k, v in value.items())) + "}"
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, datetime.timedelta):
        return f"{value.total_seconds():g}s"
    if isinstance(value, type):  # a celpy type, as from type(x)
        return value.__name__.removesuffix("Type").lower()
    return str(value)


def _as_double(value: Any, verb: str, precision: int | None) -> str:
    if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
        return value
    if isinstance(value, str):
        raise K8sError(f'only "NaN", "Infinity", and "-Infinity" are supported for conversion to double: {value}')
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise K8sError(f"expected a double but got a {_type_name(value)}")
    return _double_text(float(value), f"%.{6 if precision is None else precision}{verb}")


def _clause(verb: str, precision: int | None, value: Any) -> str:
    integer = isinstance(value, int) and not isinstance(value, bool)
    if verb == "s":
        return _as_string(value)
    if verb in "fe" or (verb == "d" and isinstance(value, float)):
        return _as_double(value, "f" if verb == "d" else verb, precision)
    if verb == "d" and integer:
        return str(value)
    if verb == "d":
        raise K8sError(f"decimal clause can only be used on numbers, was given {_type_name(value)}")
    if verb in "xX":
        if integer or isinstance(value, str | bytes):
            text = format(value, "x") if integer else (value.encode() if isinstance(value, str) else value).hex()
            return text.upper() if verb == "X" else text
        raise K8sError(f"hex clause can only be used on integers, byte buffers, and strings, was given "
                       f"{_type_name(value)}")
    if verb == "o" and integer:
        return format(value, "o")
    if verb == "o":
        raise K8sError(f"octal clause can only be used on integers, was given {_type_name(value)}")
    if integer or isinstance(value, bool):
        return format(int(value), "b")
    raise K8sError(f"binary clause can only be used on integers and bools, was given {_type_name(value)}")


def string_format(template: str, args: list[Any]) -> str:
    """`template.format(args)` with the clauses and messages of cel-expr-python's strings extension."""
    out: list[str] = []
    i, used = 0, 0
    while i < len(template):
        c = template[i]
        i += 1
        if c != "%":
            out.append(c)
            continue
        if i >= len(template):
            raise K8sError("unexpected end of format string")
        precision = None
        if template[i] == ".":
            end = i + 1
            while end < len(template) and template[end].isdigit():
                end += 1
            if end == i + 1:
                raise K8sError("unable to convert precision specifier to integer")
            precision, i = int(template[i + 1:end]), end
            if i >= len(template):
                raise K8sError("unexpected end of format string")
        verb = template[i]
        i += 1
        if verb == "%":
            out.append("%")
            continue
        if verb not in "sdfexXob":
            raise K8sError(f'unrecognized formatting clause "{verb}"')
        if used >= len(args):
            raise K8sError(f"index {used} out of range")
        out.append(_clause(verb, precision, args[used]))
        used += 1
    return "".join(out)


def _format(template: Any, args: Any) -> Any:
    if not isinstance(template, str) or not isinstance(args, list):
        return _error("no such overload")
    return _plain_call(string_format)(template, args)


def _string(value: Any) -> Any:
    if isinstance(value, dict) and k8s_library.TAG in value:
        return _plain_call(k8s_library.to_string)(value)
    return celtypes.StringType(value)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    **{name: _plain_call(impl) for name, (impl, _) in k8s_library.LIBRARY.items()},
    "join": _join,
    "split": _split,
    "replace": _replace,
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "substring": _substring,
    "charAt": _char_at,
    "lowerAscii": _ascii_case(upper=False),
    "upperAscii": _ascii_case(upper=True),
    "trim": lambda text: celtypes.StringType(str(text).strip(_GO_SPACE)),
    "reverse": lambda text: celtypes.StringType(str(text)[::-1]),
    "strings.quote": _quote,
    "format": _format,
    "matches": _plain_call(k8s_library.matches),
    "string": _string,
    _LIST_MIN: _plain_call(k8s_library.LIBRARY["min"][0]),
    "list.indexOf": _plain_call(k8s_library.LIBRARY["indexOf"][0]),
    "list.lastIndexOf": _plain_call(k8s_library.LIBRARY["lastIndexOf"][0]),
}

KNOWN_NAMES = frozenset(base_functions) | MACROS | frozenset(FUNCTIONS)


def _single(tree: Any) -> Any:
    """The one meaningful node under a chain of single-child nodes (expr -> ... -> literal)."""
    while isinstance(tree, lark.Tree):
        children = [child for child in tree.children if child is not None]
        if tree.data in ("literal", "ident") or len(children) != 1:
            return tree
        tree = children[0]
    return tree


def _call_name(subtree: Any) -> tuple[str, Any] | None:
    if subtree.data == "member_dot_arg":
        return str(subtree.children[1]), subtree
    if subtree.data == "ident_arg":
        return str(subtree.children[0]), subtree
    return None


def prepare(tree: Any) -> str | None:
    """Rewrite the parse tree for cel-python (see the module's docstring); a refusal message, or None."""
    for subtree in list(tree.iter_subtrees()):
        if subtree.data != "member_dot_arg":
            continue
        receiver, name = _single(subtree.children[0]), str(subtree.children[1])
        if isinstance(receiver, lark.Tree) and receiver.data == "ident" and str(receiver.children[0]) in NAMESPACES:
            arguments = [child for child in subtree.children[2:] if child is not None]
            token = lark.Token("IDENT", f"{receiver.children[0]}.{name}")
            subtree.data, subtree.children = "primary", [lark.Tree("ident_arg", [token, *arguments])]
        elif name == "min" and len([c for c in subtree.children if c is not None]) == 2:
            subtree.children[1] = lark.Token("IDENT", _LIST_MIN)
    unknown: list[str] = []
    for subtree in tree.iter_subtrees():
        found = _call_name(subtree)
        if found is not None and found[0] not in KNOWN_NAMES and found[0] not in unknown:
            unknown.append(found[0])
        three_argument_map = found is not None and found[0] == "map" and _argument_count(subtree) == 3
        if three_argument_map and subtree.data == "member_dot_arg":
            return ("the cel-python engine has no three-argument map(x, condition, transform); write "
                    ".filter(x, condition).map(x, transform)")
    if any(name in OPTIONAL_NAMES for name in unknown):
        return "the cel-python engine has no optional types (optional.of, orValue, hasValue, value, ?. and [?])"
    if unknown:
        return f"the cel-python engine has no function {', '.join(unknown)}"
    return None


def _argument_count(call: Any) -> int:
    arguments = call.children[2] if len(call.children) > 2 else None
    return len(arguments.children) if isinstance(arguments, lark.Tree) else 0


def regex_literal_error(tree: Any, names: frozenset[str]) -> str | None:
    """The error of the first literal pattern given to one of `names` (find, findAll, matches) that fails."""
    for subtree in tree.iter_subtrees():
        found = _call_name(subtree)
        if found is None or found[0] not in names or subtree.data != "member_dot_arg" or len(subtree.children) < 3:
            continue
        arguments = subtree.children[2]
        literal = _single(arguments.children[0]) if isinstance(arguments, lark.Tree) and arguments.children else None
        if isinstance(literal, lark.Tree) and literal.data == "literal":
            token = literal.children[0]
            if isinstance(token, lark.Token) and token.type in ("STRING_LIT", "MLSTRING_LIT"):
                try:
                    k8s_library.compile_regex(str(celstr(token)))
                except K8sError as error:
                    return f"{found[0]}: {error}"
    return None


def unknown_functions(tree: Any) -> list[str]:
    """Names called in a parsed (and prepared) expression that cel-python cannot resolve."""
    names: list[str] = []
    for subtree in tree.iter_subtrees():
        found = _call_name(subtree)
        if found is not None and found[0] not in KNOWN_NAMES and found[0] not in names:
            names.append(found[0])
    return names


_COMPREHENSIONS = frozenset({"all", "exists", "exists_one", "map", "filter"})


def comprehension_depth(tree: Any) -> int:
    """How deeply comprehension macros (all, exists, exists_one, map, filter) nest in a parsed expression:
    a macro inside another's body multiplies the work; a chain (`l.filter(...).map(...)`) only adds."""
    if not isinstance(tree, lark.Tree):
        return 0
    found = _call_name(tree)
    if found is not None and found[0] in _COMPREHENSIONS and tree.data == "member_dot_arg":
        receiver, body = tree.children[0], tree.children[2:]
        return max(comprehension_depth(receiver), 1 + max((comprehension_depth(c) for c in body), default=0))
    return max((comprehension_depth(child) for child in tree.children), default=0)
