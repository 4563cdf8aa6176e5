"""Random CEL expressions from a typed grammar, and random JSON objects for them to select from.

`cases(area)` draws an expression (its source text), the bindings `object` and `oldObject`, and whether lists in
its result may come in any order (a `map` or `filter` macro over a map: CEL leaves the order of a map's keys open).

The grammar draws an expression of a kind (int, string, list, optional...): the kind the checker will infer, or
dyn. Operands are of the kinds their operator takes, mostly, so that most expressions type-check; leaves are
literals (edge values included: int64 and uint64 limits, -0.0, NaN, infinities, the first and last timestamps),
names bound by the enclosing macros and cel.bind, or paths into the objects (typed ones that usually hold a value
of the kind, and random ones that may miss or hold anything, for errors). Functions of the strings and math
extensions are drawn only where our runtime has them (webhook.cel.ext_strings and ext_math are being written).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from webhook.cel.environment import standard_functions

# --- the data -----------------------------------------------------------------------------------------------------

KEYS = ("a", "b", "c", "name", "items", "x-y")  # the keys objects have and expressions select
IDENTIFIER_KEYS = KEYS[:-1]
STRINGS = ("", "a", "b", "abc", "name", "héllo", "123", "-5", "1.5", "true", "1e3", "a.b", "ABC", "x-y", " a b ")
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 10), st.sampled_from([2**63 - 1, -(2**63), 2**53 + 1, 1000]),
    st.sampled_from([0.0, -0.0, 0.5, 1.0, 2.5, -1.5, 1e300, 3.0]),
    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(STRINGS))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(KEYS), inner, max_size=4), max_leaves=10)
_ints = st.integers(-3, 10) | st.sampled_from([2**63 - 1, -(2**63), 1000])
# Mostly of the kinds TYPED_PATHS expect (so that typed expressions over the objects mostly evaluate), else any
# JSON; `items` is never a map (the map and filter macros iterate it, and a map's order is open).
_typed_fields = {"name": st.sampled_from(STRINGS) | _json, "c": _ints | _json,
                 "items": st.lists(_ints, max_size=4) | st.lists(_json, max_size=4) | _scalars}
_inner_fields = {**{key: field | field for key, field in _typed_fields.items()}, "b": _json, "x-y": _json}
_inner = st.fixed_dictionaries({}, optional=_inner_fields)
_fields = {**_inner_fields, "a": _inner | _inner | _json}
_usual = ("name", "c", "items", "a")  # present in most objects, so that most selections hit
OBJECTS = st.fixed_dictionaries({key: _fields[key] for key in _usual},
                                optional={key: field for key, field in _fields.items() if key not in _usual}) | \
    st.fixed_dictionaries({}, optional=_fields)

# --- kinds and leaves -----------------------------------------------------------------------------------------------

INT, UINT, DOUBLE, BOOL, STRING, BYTES, NULL = "int", "uint", "double", "bool", "string", "bytes", "null"
LIST, MAP, TIMESTAMP, DURATION, TYPE, OPTIONAL, DYN = "list", "map", "timestamp", "duration", "type", "optional", "dyn"
VALUE_KINDS = (INT, UINT, DOUBLE, BOOL, STRING, BYTES, NULL, LIST, MAP, TIMESTAMP, DURATION, TYPE, DYN)
NUMBERS = (INT, UINT, DOUBLE)
ORDERED = (INT, UINT, DOUBLE, STRING, BYTES, BOOL, TIMESTAMP, DURATION)

LITERALS: dict[str, tuple[str, ...]] = {
    INT: ("0", "1", "-1", "2", "3", "7", "-7", "10", "9223372036854775807", "-9223372036854775808",
          "4611686018427387904", "-4611686018427387905", "0x10"),
    UINT: ("0u", "1u", "2u", "3u", "7u", "10u", "18446744073709551615u", "9223372036854775808u", "0x10u"),
    DOUBLE: ("0.0", "-0.0", "1.0", "-1.0", "0.5", "2.5", "-2.5", "3.0", "1e308", "-1e308", "1e-300", "1.5e10",
             "9223372036854775807.0", "9223372036854775808.0", "-9223372036854775809.0", "18446744073709551616.0",
             "1234567.0", "0.0001", "1e-05", "100000.0", "1e21", 'double("NaN")', 'double("inf")',
             'double("-inf")'),
    STRING: (*(f'"{text}"' for text in STRINGS), r'"\u00e9"', r'"\\"', "'q\"q'", '"ß"', '"İ"'),
    BYTES: ('b""', 'b"abc"', r'b"\xff"', r'b"\x00a"', "b'héllo'"),
    BOOL: ("true", "false"),
    NULL: ("null",),
    TIMESTAMP: (*(f'timestamp("{text}")' for text in (
        "1970-01-01T00:00:00Z", "2009-02-13T23:31:30Z", "2024-02-29T23:59:59.999Z", "2020-03-08T10:30:00.5+05:30",
        "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z", "1969-12-31T23:59:59.000000001Z",
        "2021-12-31T16:00:00-08:00")), "timestamp(0)", "timestamp(-1)", "timestamp(1700000000)"),
    DURATION: tuple(f'duration("{text}")' for text in (
        "0s", "1s", "-1s", "1h", "1h30m", "1.5s", "-1.5s", "300ms", "1ns", "-1ns", "2us", "1µs", "100h",
        "87600h", "-2562047h", "2562047h", "1m1.000000001s")),
    TYPE: ("int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type",
           "google.protobuf.Timestamp", "google.protobuf.Duration"),
    LIST: ("[]", "[1, 2, 3]", '["a", "b"]', "[1, 1u, 1.0]", "[null, true]", "[[1], [2]]"),
    MAP: ("{}", '{"a": 1}', '{"a": {"b": "c"}, "name": "n"}', "{1: 2, 2u: 3}"),
    OPTIONAL: ("optional.none()", "optional.of(1)", "object.?a", "object.?a.?b",
               '(object.?name.orValue("n").size() > 0 ? object.?b : optional.none())'),
}
STRINGS_FOR = {  # texts for conversions from string: good, bad, and the edges of Go's strconv and time packages
    "int": ('"42"', '"-42"', '"+7"', '"0x10"', '"9223372036854775808"', '"-9223372036854775808"', '" 1"', '"1.0"'),
    "uint": ('"42"', '"-1"', '"18446744073709551615"', '"18446744073709551616"', '"+1"', '"1u"'),
    "double": ('"1.5"', '"-0"', '"1e400"', '"NaN"', '"nan"', '"Infinity"', '"-inf"', '"inf"', '"1_0"', '"0x1p3"',
               '".5"', '"5."', '" 1"', '"1e"', '"+nan"', '"-Infinity"', '"1e-400"'),
    "timestamp": ('"2020-01-01T00:00:00Z"', '"1970-01-01T00:00:00+01:00"', '"2020-13-01T00:00:00Z"', '"bad"',
                  '"2020-01-01t00:00:00z"', '"10000-01-01T00:00:00Z"', '"2020-01-01T00:00:00,5Z"',
                  '"2020-01-01T00:00:00+24:00"', '"2020-01-01T00:00:00.1234567891Z"', '"0000-01-01T00:00:00Z"',
                  '"9999-12-31T23:00:00-05:00"', '"2020-02-30T00:00:00Z"', '"2020-01-01T00:00:60Z"'),
    "duration": ('"1h"', '"-30m"', '"1.5h"', '"bad"', '"1d"', '"0"', '"+5s"', '"1h-1m"', '".5s"', '"9999999999h"'),
    "bool": ('"t"', '"T"', '"TRUE"', '"True"', '"tRUE"', '"0"', '"F"', '"yes"', '""'),
}
PATTERNS = ('"a"', '"^a"', '"b+"', '"[0-9]+"', '"(a|b)c"', '"."', '""', '"^$"', '"^[a-z]+$"', '"é"', '"("',
            r'"\\d"', '"(?i)ABC"')
ZONES = ('"UTC"', '"America/New_York"', '"Asia/Kolkata"', '"+05:30"', '"-08:00"', '"Europe/Berlin"',
         '"Australia/Lord_Howe"', '"Mars/Olympus"', '"02:00"', '"-00:30"')
TIME_GETTERS = ("getFullYear", "getMonth", "getDayOfYear", "getDayOfMonth", "getDate", "getDayOfWeek", "getHours",
                "getMinutes", "getSeconds", "getMilliseconds")
DURATION_GETTERS = ("getHours", "getMinutes", "getSeconds", "getMilliseconds")
NAMES = ("x", "y", "z", "w", "v")
TYPED_PATHS = {
    INT: ("object.c", "object.a.c", "object.items[0]", "object.a.items[1]", "oldObject.c"),
    STRING: ("object.name", "object.a.name", "oldObject.name"),
    LIST: ("object.items", "object.a.items", "oldObject.items"),
    MAP: ("object", "object.a", "oldObject"),
}
SMALL_INTS = ("0", "1", "2", "3", "-1", "10")

Production = Callable[["Grammar", int], str]


class Grammar:
    """Draws the source of an expression of a given kind."""

    def __init__(self, draw: Callable[[Any], Any]) -> None:
        self.draw = draw
        self.scope: list[tuple[str, str]] = []  # bound names and their kinds, innermost last
        self.unordered = False  # a map or filter macro may iterate a map of more keys (whose order is open)

    def pick(self, options: Any) -> Any:
        return self.draw(st.sampled_from(options))

    def chance(self, one_in: int) -> bool:
        return bool(self.draw(st.integers(0, one_in - 1)) == 0)

    def expr(self, kind: str, depth: int) -> str:
        if depth <= 0 or self.chance(4):
            return self.leaf(kind)
        production: Production = self.pick(PRODUCTIONS[kind])
        return production(self, depth - 1)

    def any(self, depth: int) -> str:
        return self.expr(self.pick(VALUE_KINDS), depth)

    def small_int(self, depth: int) -> str:
        return str(self.pick(SMALL_INTS)) if self.chance(2) else self.expr(INT, depth)

    def leaf(self, kind: str) -> str:
        names = [name for name, bound in self.scope if bound in (kind, DYN) or (kind == DYN and bound != OPTIONAL)]
        choice = self.draw(st.integers(0, 9))
        if names and choice >= 7:
            return str(self.pick(names))
        if choice == 6 and kind in TYPED_PATHS:
            return str(self.pick(TYPED_PATHS[kind]))
        if choice == 6 or (kind in (DYN, MAP) and choice >= 5):
            return self.path()
        if kind == DYN:
            return self.leaf(self.pick((INT, STRING, DOUBLE, BOOL, NULL, LIST)))
        return str(self.pick(LITERALS[kind]))

    def path(self) -> str:
        """A path into the objects that may miss (`object.a.b`, `oldObject["x-y"][0]`)."""
        text = str(self.pick(("object", "object", "object", "oldObject")))
        for _ in range(self.draw(st.integers(0, 3))):
            step = self.draw(st.integers(0, 4))
            if step <= 2:
                text += "." + self.pick(IDENTIFIER_KEYS)
            elif step == 3:
                text += f'["{self.pick(KEYS)}"]'
            else:
                text += f"[{self.pick(('0', '1', '2', '-1', '0u', '1.0'))}]"
        return text

    def conditional(self, kind: str, depth: int) -> str:
        return f"({self.expr(BOOL, depth)} ? {self.expr(kind, depth)} : {self.expr(kind, depth)})"

    def bind(self, kind: str, depth: int) -> str:
        bound_kind = self.pick((*VALUE_KINDS, OPTIONAL))
        init = self.expr(bound_kind, depth)
        name = self.fresh()
        self.scope.append((name, bound_kind))
        try:
            return f"cel.bind({name}, {init}, {self.expr(kind, depth)})"
        finally:
            self.scope.pop()

    def fresh(self) -> str:
        """A name for a comprehension or binding: usually unused, sometimes one that shadows an outer one."""
        used = {name for name, _ in self.scope}
        if used and self.chance(6):
            return str(self.pick(sorted(used)))
        free = [name for name in NAMES if name not in used]
        return str(self.pick(free)) if free else "x"

    def comprehension_range(self, depth: int, *, ordered: bool) -> tuple[str, str]:
        """A list or map to iterate, and the kind of its elements (or keys); for `ordered` (a macro that makes a
        list), maps of one key or none, else the order of the result is open (see `unordered`)."""
        choice = self.draw(st.integers(0, 5))
        if choice <= 2:
            element = self.pick((INT, STRING, DOUBLE, BOOL, UINT))
            return self.list_of(element, depth), element
        if choice == 3:
            second = "" if ordered else f', "b": {self.any(depth)}'
            return f'{{"a": {self.expr(INT, depth)}{second}}}', STRING
        if choice == 4:
            return (str(self.pick(("object.items", "oldObject.items"))) if ordered else self.path()), DYN
        self.unordered |= ordered  # a name bound to a map, say
        return self.expr(LIST, depth), DYN

    def list_of(self, kind: str, depth: int) -> str:
        if depth > 0 and self.chance(4):
            return f"({self.list_of(kind, depth - 1)} + {self.list_of(kind, depth - 1)})"
        if depth > 0 and self.chance(4):
            return self.macro(kind, depth - 1, form="map")
        elements = [self.expr(kind, depth) for _ in range(self.draw(st.integers(0, 3)))]
        return f"[{', '.join(elements)}]"

    def macro(self, kind: str, depth: int, *, form: str) -> str:
        """`range.form(name, ...)` whose result (for map, each element) is of `kind`."""
        iterated, element = self.comprehension_range(depth, ordered=form in ("map", "filter"))
        name = self.fresh()
        self.scope.append((name, element))
        try:
            if form in ("all", "exists", "exists_one", "filter"):
                return f"{iterated}.{form}({name}, {self.expr(BOOL, depth)})"
            if self.chance(2):
                return f"{iterated}.map({name}, {self.expr(kind, depth)})"
            return f"{iterated}.map({name}, {self.expr(BOOL, depth)}, {self.expr(kind, depth)})"
        finally:
            self.scope.pop()


# --- productions -------------------------------------------------------------------------------------------------


def _binary(kinds: tuple[str, ...], operators: str) -> Production:
    """`a op b`, both of one of `kinds`."""

    def production(g: Grammar, depth: int) -> str:
        kind = g.pick(kinds)
        return f"({g.expr(kind, depth)} {g.pick(operators.split())} {g.expr(kind, depth)})"

    return production


def _mixed(kinds: tuple[str, ...], operators: str) -> Production:
    """`dyn(a) op b` with a and b of (usually) different kinds: heterogeneous comparison and equality."""

    def production(g: Grammar, depth: int) -> str:
        return f"(dyn({g.expr(g.pick(kinds), depth)}) {g.pick(operators.split())} {g.expr(g.pick(kinds), depth)})"

    return production


def _conversion(function: str, *kinds: str) -> Production:
    def production(g: Grammar, depth: int) -> str:
        kind = g.pick(kinds)
        if kind == STRING and function in STRINGS_FOR and g.chance(2):
            return f"{function}({g.pick(STRINGS_FOR[function])})"
        return f"{function}({g.expr(kind, depth)})"

    return production


def _same(kind: str, template: str) -> Production:
    """A template whose `{}` are filled with expressions of `kind` (`-({})`, `{}.hasValue()`)."""

    def production(g: Grammar, depth: int) -> str:
        return template.format(*(g.expr(kind, depth) for _ in range(template.count("{}"))))

    return production


def _conditional(kind: str) -> Production:
    return lambda g, depth: g.conditional(kind, depth)


def _bind(kind: str) -> Production:
    return lambda g, depth: g.bind(kind, depth)


def _or_value(kind: str) -> Production:
    return lambda g, depth: f"{g.expr(OPTIONAL, depth)}.orValue(dyn({g.expr(kind, depth)}))"


def _error_bool(g: Grammar, depth: int) -> str:
    """A bool that is likely an error (for absorption by `&&`, `||`, `?:` and the macros)."""
    return str(g.pick((
        lambda: f"({g.expr(INT, depth)} / 0 == 1)", lambda: f"{g.path()} == {g.expr(DYN, depth)}",
        lambda: f"{g.path()}", lambda: f"[1, 2][{g.expr(INT, depth)}] > 1", lambda: "object.missing",
        lambda: f"dyn({g.expr(DYN, depth)})", lambda: '{"a": true}[' + g.expr(STRING, depth) + "]"))())


def _string_function(g: Grammar, depth: int) -> str:
    function = g.pick(("contains", "startsWith", "endsWith", "matches"))
    argument = g.pick(PATTERNS) if function == "matches" and g.chance(2) else g.expr(STRING, depth)
    return f"{g.expr(STRING, depth)}.{function}({argument})"


def _in(g: Grammar, depth: int) -> str:
    if g.chance(2):
        kind = g.pick((INT, STRING, DOUBLE, UINT, BOOL))
        return f"({g.expr(kind, depth)} in {g.list_of(kind, depth)})"
    if g.chance(2):
        return f"(dyn({g.any(depth)}) in {g.expr(LIST, depth)})"
    return f"({g.pick((g.expr(STRING, depth), 'dyn(' + g.any(depth) + ')'))} in {g.expr(MAP, depth)})"


def _has(g: Grammar, depth: int) -> str:
    choice = g.draw(st.integers(0, 5))
    if choice == 0:
        return f"has({g.expr(MAP, depth)}.{g.pick(IDENTIFIER_KEYS)})"
    if choice == 1:
        return f"has({g.expr(OPTIONAL, depth)}.{g.pick(IDENTIFIER_KEYS)})"
    path = g.path()
    if path.endswith("]") or path in ("object", "oldObject"):
        path += "." + g.pick(IDENTIFIER_KEYS)
    return f"has({path})"


def _getter(g: Grammar, depth: int) -> str:
    if g.chance(3):
        return f"{g.expr(DURATION, depth)}.{g.pick(DURATION_GETTERS)}()"
    zone = f"{g.pick(ZONES)}" if g.chance(2) else ""
    return f"{g.expr(TIMESTAMP, depth)}.{g.pick(TIME_GETTERS)}({zone})"


def _size(g: Grammar, depth: int) -> str:
    value = g.expr(g.pick((STRING, BYTES, LIST, MAP, DYN)), depth)
    return f"size({value})" if g.chance(2) else f"{value}.size()"


def _index(kind: str) -> Production:
    def production(g: Grammar, depth: int) -> str:
        if g.chance(2):
            return f"{g.list_of(kind, depth)}[{g.expr(g.pick((INT, INT, UINT, DYN)), depth)}]"
        return f'{{"a": {g.expr(kind, depth)}, "b": {g.expr(kind, depth)}}}[{g.expr(STRING, depth)}]'

    return production


def _map_literal(g: Grammar, depth: int) -> str:
    """Keys of one kind, sometimes computed (so that a repeat is found at run time, not by the checker)."""
    entries = []
    key_kind = g.pick((STRING, STRING, INT, UINT, BOOL, DYN))
    for _ in range(g.draw(st.integers(0, 3))):
        key = g.pick(("object.name", "oldObject.name", '"a" + ""')) if g.chance(6) else g.expr(key_kind, 0)
        entries.append(f"?{key}: {g.expr(OPTIONAL, depth)}" if g.chance(5) else f"{key}: {g.any(depth)}")
    return "{" + ", ".join(entries) + "}"


def _list_literal(g: Grammar, depth: int) -> str:
    elements = [f"?{g.expr(OPTIONAL, depth)}" if g.chance(5) else g.any(depth)
                for _ in range(g.draw(st.integers(0, 3)))]
    return f"[{', '.join(elements)}]"


def _optional_index(g: Grammar, depth: int) -> str:
    if g.chance(2):
        return f"{g.expr(LIST, depth)}[?{g.expr(g.pick((INT, UINT, DYN)), depth)}]"
    return f"{g.expr(MAP, depth)}[?{g.expr(g.pick((STRING, INT, DYN)), depth)}]"


def _optional_chain(g: Grammar, depth: int) -> str:
    """`m.?f`, `opt.?f`, and the plain selection or index of an optional (`opt.f`, `opt[0]`), which stays optional.
    An optional is indexed only where the index fits the container: cel-cpp keeps a failed index inside the
    optional (`optional.of(error)`, which hasValue()), where cel-go fails or, out of range, answers
    optional.none()."""
    choice = g.draw(st.integers(0, 4))
    if choice == 0:
        return f"{g.pick((g.expr(MAP, depth), g.path()))}.?{g.pick(IDENTIFIER_KEYS)}"
    if choice == 1:
        return f"{g.expr(OPTIONAL, depth)}.?{g.pick(IDENTIFIER_KEYS)}"
    if choice == 2:
        return f"{g.expr(OPTIONAL, depth)}.{g.pick(IDENTIFIER_KEYS)}"
    if choice == 3:
        return f"optional.of([{g.any(depth)}, {g.any(depth)}])[{g.pick(('0', '1'))}]"
    key = g.pick(('"a"', '"b"', '"c"'))
    return f'optional.of({{"a": {g.any(depth)}, "b": {g.any(depth)}}})[{key}]'


def _consumed(production: Production) -> Production:
    """An optional made a value (`.hasValue()`, `.value()`, `.orValue(...)`): results are compared as values."""

    def consume(g: Grammar, depth: int) -> str:
        optional = production(g, depth)
        return g.pick((f"{optional}.hasValue()", f"{optional}.value()", f"{optional}.orValue(dyn({g.any(depth)}))"))

    return consume


def _timestamp_comparison(g: Grammar, depth: int) -> str:
    kind = g.pick((TIMESTAMP, DURATION))
    return f"({g.expr(kind, depth)} {g.pick(('<', '<=', '==', '!=', '>', '>='))} {g.expr(kind, depth)})"


INT_ARITHMETIC, UINT_ARITHMETIC = _binary((INT,), "+ - * / %"), _binary((UINT,), "+ - * / %")
DOUBLE_ARITHMETIC = _binary((DOUBLE,), "+ - * /")
NEGATE_INT, NEGATE_DOUBLE = _same(INT, "-({})"), _same(DOUBLE, "-({})")
ORDERING, AND_OR, NOT = _binary(ORDERED, "== != < <= > >="), _binary((BOOL,), "&& ||"), _same(BOOL, "!{}")
TO_INT = _conversion("int", UINT, DOUBLE, STRING, TIMESTAMP, DURATION, INT, DYN)
TO_UINT = _conversion("uint", INT, DOUBLE, STRING, UINT, DYN)
TO_DOUBLE = _conversion("double", INT, UINT, STRING, DOUBLE, DYN)
TO_STRING = _conversion("string", INT, UINT, DOUBLE, BOOL, BYTES, TIMESTAMP, DURATION, STRING)
TO_BYTES, TO_BOOL = _conversion("bytes", STRING, BYTES), _conversion("bool", STRING, BOOL)
TO_TIMESTAMP, TO_DURATION = _conversion("timestamp", STRING, INT, TIMESTAMP), _conversion("duration", STRING, DURATION)
TYPE_OF: Production = lambda g, d: f"type({g.any(d)})"  # noqa: E731
HAS_VALUE, VALUE, OR = _same(OPTIONAL, "{}.hasValue()"), _same(OPTIONAL, "{}.value()"), _same(OPTIONAL, "{}.or({})")

ARITHMETIC = [INT_ARITHMETIC, UINT_ARITHMETIC, DOUBLE_ARITHMETIC, NEGATE_INT, NEGATE_DOUBLE]
COMPARISONS = [ORDERING, _mixed(NUMBERS, "== != < <= > >="), _mixed(VALUE_KINDS, "== !="),
               _binary((LIST, MAP), "== !=")]
LOGIC = [AND_OR, NOT, _error_bool]
CONVERSIONS = [TO_INT, TO_UINT, TO_DOUBLE, TO_STRING, TO_BYTES, TO_BOOL, TO_TIMESTAMP, TO_DURATION, TYPE_OF]
OPTIONALS = [HAS_VALUE, VALUE, _or_value(DYN), OR, _optional_chain, _optional_index]

PRODUCTIONS: dict[str, list[Production]] = {
    INT: [INT_ARITHMETIC, INT_ARITHMETIC, NEGATE_INT, _size, TO_INT, _getter, _index(INT), _conditional(INT),
          _bind(INT), _or_value(INT)],
    UINT: [UINT_ARITHMETIC, TO_UINT, _index(UINT), _conditional(UINT)],
    DOUBLE: [DOUBLE_ARITHMETIC, DOUBLE_ARITHMETIC, NEGATE_DOUBLE, TO_DOUBLE, _conditional(DOUBLE)],
    STRING: [_binary((STRING,), "+"), TO_STRING, _index(STRING), _conditional(STRING), _bind(STRING),
             _or_value(STRING)],
    BYTES: [_binary((BYTES,), "+"), TO_BYTES, _conditional(BYTES)],
    BOOL: [*COMPARISONS, ORDERING, *LOGIC, AND_OR, _in, _has, _string_function,
           lambda g, d: g.macro(BOOL, d, form=g.pick(("all", "exists", "exists_one"))), HAS_VALUE, TO_BOOL,
           lambda g, d: f"type({g.any(d)}) == {g.expr(TYPE, d)}", _conditional(BOOL), _bind(BOOL)],
    NULL: [_conditional(NULL)],
    LIST: [_list_literal, lambda g, d: g.list_of(g.pick(VALUE_KINDS), d), _binary((LIST,), "+"),
           lambda g, d: g.macro(g.pick(VALUE_KINDS), d, form="map"), lambda g, d: g.macro(DYN, d, form="filter"),
           _conditional(LIST), _bind(LIST)],
    MAP: [_map_literal, _map_literal, _conditional(MAP)],
    TIMESTAMP: [TO_TIMESTAMP, lambda g, d: f"({g.expr(TIMESTAMP, d)} {g.pick(('+', '-'))} {g.expr(DURATION, d)})",
                lambda g, d: f"({g.expr(DURATION, d)} + {g.expr(TIMESTAMP, d)})", _conditional(TIMESTAMP)],
    DURATION: [TO_DURATION, _binary((DURATION,), "+ -"),
               lambda g, d: f"({g.expr(TIMESTAMP, d)} - {g.expr(TIMESTAMP, d)})", _conditional(DURATION)],
    TYPE: [TYPE_OF, lambda g, d: f"type({g.expr(TYPE, d)})"],
    OPTIONAL: [lambda g, d: f"optional.of({g.any(d)})", lambda g, d: f"optional.ofNonZeroValue({g.any(d)})",
               lambda g, d: "optional.none()", _optional_chain, _optional_chain, _optional_index, OR,
               _conditional(OPTIONAL)],
    DYN: [lambda g, d: f"dyn({g.any(d)})", VALUE, _conditional(DYN), _bind(DYN)],
}

# --- the strings and math extensions, where our runtime has them --------------------------------------------------

EXTENSIONS: dict[str, tuple[str, Production]] = {  # function -> (result kind, production)
    "charAt": (STRING, lambda g, d: f"{g.expr(STRING, d)}.charAt({g.small_int(d)})"),
    "indexOf": (INT, lambda g, d: f"{g.expr(STRING, d)}.indexOf({g.expr(STRING, d)}"
                + (f", {g.small_int(d)})" if g.chance(2) else ")")),
    "lastIndexOf": (INT, lambda g, d: f"{g.expr(STRING, d)}.lastIndexOf({g.expr(STRING, d)}"
                    + (f", {g.small_int(d)})" if g.chance(2) else ")")),
    "lowerAscii": (STRING, _same(STRING, "{}.lowerAscii()")),
    "upperAscii": (STRING, _same(STRING, "{}.upperAscii()")),
    "replace": (STRING, lambda g, d: f"{g.expr(STRING, d)}.replace({g.expr(STRING, d)}, {g.expr(STRING, d)}"
                + (f", {g.small_int(d)})" if g.chance(2) else ")")),
    "split": (LIST, lambda g, d: f"{g.expr(STRING, d)}.split({g.expr(STRING, d)}"
              + (f", {g.small_int(d)})" if g.chance(2) else ")")),
    "substring": (STRING, lambda g, d: f"{g.expr(STRING, d)}.substring({g.small_int(d)}"
                  + (f", {g.small_int(d)})" if g.chance(2) else ")")),
    "trim": (STRING, _same(STRING, "{}.trim()")),
    "join": (STRING, lambda g, d: f"{g.list_of(STRING, d)}.join({g.expr(STRING, d) if g.chance(2) else ''})"),
    "strings.quote": (STRING, _same(STRING, "strings.quote({})")),
    "reverse": (STRING, _same(STRING, "{}.reverse()")),
    "math.greatest": (DYN, lambda g, d: f"math.greatest({g.list_of(g.pick(NUMBERS), d)})" if g.chance(2)
                      else f"math.greatest({g.expr(g.pick(NUMBERS), d)}, {g.expr(g.pick(NUMBERS), d)})"),
    "math.least": (DYN, lambda g, d: f"math.least({g.list_of(g.pick(NUMBERS), d)})" if g.chance(2)
                   else f"math.least({g.expr(g.pick(NUMBERS), d)}, {g.expr(g.pick(NUMBERS), d)})"),
    "math.abs": (DYN, lambda g, d: f"math.abs({g.expr(g.pick(NUMBERS), d)})"),
    "math.sign": (DYN, lambda g, d: f"math.sign({g.expr(g.pick(NUMBERS), d)})"),
    "math.ceil": (DOUBLE, _same(DOUBLE, "math.ceil({})")),
    "math.floor": (DOUBLE, _same(DOUBLE, "math.floor({})")),
    "math.round": (DOUBLE, _same(DOUBLE, "math.round({})")),
    "math.trunc": (DOUBLE, _same(DOUBLE, "math.trunc({})")),
    "math.sqrt": (DOUBLE, lambda g, d: f"math.sqrt({g.expr(g.pick(NUMBERS), d)})"),
    "math.isNaN": (BOOL, _same(DOUBLE, "math.isNaN({})")),
    "math.isInf": (BOOL, _same(DOUBLE, "math.isInf({})")),
    "math.isFinite": (BOOL, _same(DOUBLE, "math.isFinite({})")),
    "math.bitAnd": (DYN, lambda g, d: _same(g.pick((INT, UINT)), "math.bitAnd({}, {})")(g, d)),
    "math.bitOr": (DYN, lambda g, d: _same(g.pick((INT, UINT)), "math.bitOr({}, {})")(g, d)),
    "math.bitXor": (DYN, lambda g, d: _same(g.pick((INT, UINT)), "math.bitXor({}, {})")(g, d)),
    "math.bitNot": (DYN, lambda g, d: _same(g.pick((INT, UINT)), "math.bitNot({})")(g, d)),
    "math.bitShiftLeft": (DYN, lambda g, d: f"math.bitShiftLeft({g.expr(g.pick((INT, UINT)), d)}, "
                          f"{g.small_int(d)})"),
    "math.bitShiftRight": (DYN, lambda g, d: f"math.bitShiftRight({g.expr(g.pick((INT, UINT)), d)}, "
                           f"{g.small_int(d)})"),
}
_OURS = standard_functions()
AVAILABLE_EXTENSIONS = [production for function, (_, production) in EXTENSIONS.items()
                        if _OURS.by_function(function)]
for _function, (_kind, _production) in EXTENSIONS.items():
    if _OURS.by_function(_function):
        PRODUCTIONS[_kind].append(_production)

# Each area's expressions start with one of its productions (their operands draw on the whole grammar).
AREAS: dict[str, list[Production]] = {
    "arithmetic": ARITHMETIC,
    "comparisons": COMPARISONS,
    "logic": [*LOGIC, lambda g, d: g.conditional(g.pick(VALUE_KINDS), d)],
    "containers": [_in, _has, _size, _index(DYN), _map_literal, _list_literal, _binary((LIST,), "+"),
                   lambda g, d: g.path()],
    "strings": [_string_function, _binary((STRING,), "+"), _binary((BYTES,), "+"), _size],
    "conversions": CONVERSIONS,
    "macros": [lambda g, d: g.macro(g.pick(VALUE_KINDS), d, form=g.pick(
        ("all", "exists", "exists_one", "map", "filter")))],
    "bindings": [lambda g, d: g.bind(g.pick(VALUE_KINDS), d)],
    "optionals": [*OPTIONALS[:3], *map(_consumed, OPTIONALS[3:]), _list_literal, _map_literal],
    "time": [*PRODUCTIONS[TIMESTAMP][:3], *PRODUCTIONS[DURATION][:3], _getter, _timestamp_comparison],
    "extensions": AVAILABLE_EXTENSIONS or [lambda g, d: g.any(d)],
    "anything": [lambda g, d: g.any(d + 1)],
}


@st.composite
def cases(draw: Callable[[Any], Any], area: str) -> tuple[str, dict[str, Any], bool]:
    """An expression of `area`, its bindings, and whether lists in its result may come in any order."""
    grammar = Grammar(draw)
    production: Production = grammar.pick(AREAS[area])
    source = production(grammar, draw(st.integers(1, 3)))
    bindings = {"object": draw(OBJECTS), "oldObject": draw(st.none() | OBJECTS)}
    return source, bindings, grammar.unordered
