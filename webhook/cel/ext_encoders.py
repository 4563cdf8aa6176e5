"""The encoders extension (cel-expr-python's `ext_encoders.ExtEncoders()`): `base64.encode(bytes)` and
`base64.decode(string)` as cel-go's ext/encoders.go implements them with Go's encoding/base64.

Decoding takes standard base64 with padding, and, if that fails, without padding; line breaks (CR, LF) are
skipped, anything else outside the alphabet is an error (`illegal base64 data at input byte 0`), and bits past
the last full byte are ignored (Go's non-strict mode).
"""

from __future__ import annotations

import base64
import re

from webhook.cel.functions import BYTES, STRING, FunctionTable
from webhook.cel.values import CelError

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_DECODE = {byte: value for value, byte in enumerate(_ALPHABET)}
_PAD = ord("=")
_LINE_BREAKS = (ord("\n"), ord("\r"))
# Whole quanta of the alphabet, padding only at the end: Go and Python's decoder agree on these.
_PLAIN = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


class _CorruptInput(Exception):
    """Go's base64.CorruptInputError: the offset of the first byte that cannot be decoded."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


def encode(data: bytes) -> str:
    """`base64.encode(bytes)`: standard base64 with padding."""
    return base64.b64encode(data).decode("ascii")


def decode(text: str) -> bytes:
    """`base64.decode(string)`: padded standard base64, else the same without padding."""
    source = text.encode("utf-8", "surrogatepass")
    if _PLAIN.fullmatch(source):
        return base64.b64decode(source)
    try:
        return _go_decode(source, padded=True)
    except _CorruptInput:
        pass
    try:
        return _go_decode(source, padded=False)
    except _CorruptInput as error:
        raise CelError(f"illegal base64 data at input byte {error.offset}") from None


def _go_decode(source: bytes, *, padded: bool) -> bytes:
    """Go's Encoding.Decode, quantum by quantum (its fast paths decode the same way)."""
    out = bytearray()
    index = 0
    while index < len(source):
        index, chunk = _decode_quantum(source, index, padded=padded)
        out += chunk
    return bytes(out)


def _decode_quantum(source: bytes, index: int, *, padded: bool) -> tuple[int, bytes]:
    """Up to four characters from `index`: the index after them and the bytes they hold (Go's decodeQuantum)."""
    digits = [0, 0, 0, 0]
    count = 0
    while count < 4:
        if index == len(source):
            if count == 0:
                return index, b""
            if count == 1 or padded:
                raise _CorruptInput(index - count)
            break
        byte = source[index]
        index += 1
        value = _DECODE.get(byte)
        if value is not None:
            digits[count] = value
            count += 1
            continue
        if byte in _LINE_BREAKS:
            continue
        if not padded or byte != _PAD or count < 2:
            raise _CorruptInput(index - 1)
        if count == 2:  # "==" expected: the first "=" is read
            index = _skip_line_breaks(source, index)
            if index == len(source):
                raise _CorruptInput(len(source))
            if source[index] != _PAD:
                raise _CorruptInput(index - 1)
            index += 1
        index = _skip_line_breaks(source, index)
        if index < len(source):
            raise _CorruptInput(index)  # trailing garbage after the padding
        break
    number = digits[0] << 18 | digits[1] << 12 | digits[2] << 6 | digits[3]
    return index, number.to_bytes(3, "big")[: count - 1]


def _skip_line_breaks(source: bytes, index: int) -> int:
    while index < len(source) and source[index] in _LINE_BREAKS:
        index += 1
    return index


FUNCTIONS = FunctionTable()
FUNCTIONS.add("base64.encode", "base64_encode_bytes", (BYTES,), encode)
FUNCTIONS.add("base64.decode", "base64_decode_string", (STRING,), decode)
