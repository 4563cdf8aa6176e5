"""The strings extension (cel-expr-python's `ext_strings.ExtStrings()`, version 4) as cel-go's ext/strings.go
implements it: indices count code points, errors carry cel-go's wording.

Where cel-go changed over time, this follows the cel-spec conformance file `string_ext.textproto`: an offset past the
end of the string is an error (`index out of range: 30`), and searching an empty string finds nothing (-1).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from webhook.cel.ext_format import format_string, type_name
from webhook.cel.functions import INT, LIST, STRING, FunctionTable
from webhook.cel.values import CelError

# Go's unicode.IsSpace, which strings.TrimSpace trims: not the zero-width spaces, not Python's \x1c-\x1f.
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000")
_LOWER_ASCII = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_UPPER_ASCII = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_QUOTE_ESCAPES = str.maketrans({
    "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v", "\\": "\\\\",
    '"': '\\"',
})
_SURROGATE = re.compile("[\ud800-\udfff]")


def _out_of_range(index: int) -> CelError:
    return CelError(f"index out of range: {index}")


def char_at(text: str, index: int) -> str:
    """`text.charAt(index)`: the code point at `index`; empty at the end of the string."""
    if index < 0 or index > len(text):
        raise _out_of_range(index)
    return text[index : index + 1]


def index_of(text: str, search: str) -> int:
    """`text.indexOf(search)`: where `search` first starts, or -1."""
    if search and not text:
        return -1
    return index_of_from(text, search, 0)


def index_of_from(text: str, search: str, offset: int) -> int:
    """`text.indexOf(search, offset)`: where `search` first starts at or after `offset`, or -1."""
    if not search:
        return offset
    if offset < 0 or offset >= len(text):
        raise _out_of_range(offset)
    return text.find(search, offset)


def last_index_of(text: str, search: str) -> int:
    """`text.lastIndexOf(search)`: where `search` last starts, or -1."""
    if not search:
        return len(text)
    if len(text) < len(search):
        return -1
    return last_index_of_from(text, search, len(text) - 1)


def last_index_of_from(text: str, search: str, offset: int) -> int:
    """`text.lastIndexOf(search, offset)`: where `search` last starts at or before `offset`, or -1."""
    if not search:
        return offset
    if offset < 0 or offset >= len(text):
        raise _out_of_range(offset)
    start = min(offset, len(text) - len(search))
    if start < 0:
        return -1
    return text.rfind(search, 0, start + len(search))


def lower_ascii(text: str) -> str:
    """`text.lowerAscii()`: A-Z lowered, every other code point as it is."""
    return text.translate(_LOWER_ASCII)


def upper_ascii(text: str) -> str:
    """`text.upperAscii()`: a-z raised, every other code point as it is."""
    return text.translate(_UPPER_ASCII)


def replace(text: str, old: str, new: str) -> str:
    """`text.replace(old, new)`: every occurrence (an empty `old` matches around each code point, as in Go)."""
    return text.replace(old, new)


def replace_n(text: str, old: str, new: str, count: int) -> str:
    """`text.replace(old, new, count)`: the first `count` occurrences; all of them when `count` is negative."""
    return text.replace(old, new, -1 if count < 0 else count)


def split(text: str, separator: str) -> list[str]:
    """`text.split(separator)`: Go's strings.Split (an empty separator splits into code points)."""
    if not separator:
        return list(text)
    return text.split(separator)


def split_n(text: str, separator: str, limit: int) -> list[str]:
    """`text.split(separator, limit)`: at most `limit` parts, the last holding the rest; none for 0, all if < 0."""
    if limit == 0:
        return []
    if limit < 0:
        return split(text, separator)
    if separator:
        return text.split(separator, limit - 1)
    parts = min(limit, len(text))
    return [*text[: parts - 1], text[parts - 1 :]] if parts else []


def substring(text: str, start: int) -> str:
    """`text.substring(start)`: from code point `start` to the end."""
    if start < 0 or start > len(text):
        raise _out_of_range(start)
    return text[start:]


def substring_range(text: str, start: int, end: int) -> str:
    """`text.substring(start, end)`: code points `start` (inclusive) to `end` (exclusive)."""
    if start > end:
        raise CelError(f"invalid substring range. start: {start}, end: {end}")
    if start < 0 or start > len(text):
        raise _out_of_range(start)
    if end < 0 or end > len(text):
        raise _out_of_range(end)
    return text[start:end]


def trim(text: str) -> str:
    """`text.trim()`: without leading and trailing Unicode white space (Go's strings.TrimSpace)."""
    return text.strip(_GO_SPACE)


def join(items: Sequence[Any]) -> str:
    """`list.join()`: the strings of the list, concatenated."""
    return join_with(items, "")


def join_with(items: Sequence[Any], separator: str) -> str:
    """`list.join(separator)`: the strings of the list with `separator` between them."""
    for item in items:
        if type(item) is not str:
            raise CelError(f"join: invalid input: {_value_text(item)}")
    return separator.join(items)


def _value_text(item: Any) -> str:
    """An element as an error message shows it (cel-go prints the value with Go's %v)."""
    try:
        return format_string("%s", [item])
    except CelError:
        return type_name(item)


def quote(text: str) -> str:
    """`strings.quote(text)`: `text` in double quotes with CEL's escapes; lone surrogates become U+FFFD."""
    return '"' + _SURROGATE.sub("\ufffd", text).translate(_QUOTE_ESCAPES) + '"'


def reverse(text: str) -> str:
    """`text.reverse()`: the code points in reverse order."""
    return text[::-1]


FUNCTIONS = FunctionTable()
for _function, _overload_id, _kinds, _impl in (
    ("charAt", "string_char_at_int", (STRING, INT), char_at),
    ("indexOf", "string_index_of_string", (STRING, STRING), index_of),
    ("indexOf", "string_index_of_string_int", (STRING, STRING, INT), index_of_from),
    ("lastIndexOf", "string_last_index_of_string", (STRING, STRING), last_index_of),
    ("lastIndexOf", "string_last_index_of_string_int", (STRING, STRING, INT), last_index_of_from),
    ("lowerAscii", "string_lower_ascii", (STRING,), lower_ascii),
    ("upperAscii", "string_upper_ascii", (STRING,), upper_ascii),
    ("replace", "string_replace_string_string", (STRING, STRING, STRING), replace),
    ("replace", "string_replace_string_string_int", (STRING, STRING, STRING, INT), replace_n),
    ("split", "string_split_string", (STRING, STRING), split),
    ("split", "string_split_string_int", (STRING, STRING, INT), split_n),
    ("substring", "string_substring_int", (STRING, INT), substring),
    ("substring", "string_substring_int_int", (STRING, INT, INT), substring_range),
    ("trim", "string_trim", (STRING,), trim),
    ("join", "list_join", (LIST,), join),
    ("join", "list_join_string", (LIST, STRING), join_with),
    ("strings.quote", "strings_quote", (STRING,), quote),
    ("reverse", "string_reverse", (STRING,), reverse),
    ("format", "string_format", (STRING, LIST), format_string),
):
    FUNCTIONS.add(_function, _overload_id, _kinds, _impl)
