"""Kubernetes 1.31's format library: named string formats (`format.dns1123Label()`, `format.named("uuid")`) and
`<Format>.validate(string)`, which is optional.none() for a valid string and optional.of(the messages) otherwise, with
apimachinery's and kube-openapi's messages."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import ClassVar

from webhook.cel.kubernetes.urls import request_uri_error
from webhook.cel.values import CelType, Optional

_DNS1123_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = _DNS1123_LABEL + "(\\." + _DNS1123_LABEL + ")*"
_DNS1035_LABEL = "[a-z]([-a-z0-9]*[a-z0-9])?"
_QUALIFIED_NAME = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE = "(" + _QUALIFIED_NAME + ")?"
_UUID = re.compile(r"(?i)[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}")
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})")
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_TIME = re.compile(r"([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))")


def _regex_error(message: str, pattern: str, *examples: str) -> str:
    """apimachinery's RegexError."""
    if not examples:
        return f"{message} (regex used for validation is '{pattern}')"
    shown = " or ".join(f"'{example}', " for example in examples)
    return f"{message} (e.g. {shown}regex used for validation is '{pattern}')"


def _too_long(length: int) -> str:
    return f"must be no more than {length} characters"


def _longer(value: str, length: int) -> bool:
    """Longer than `length` bytes, as Go's len counts."""
    return len(value.encode()) > length


def dns1123_label(value: str) -> list[str]:
    """validation.IsDNS1123Label."""
    errors = [_too_long(63)] if _longer(value, 63) else []
    if not re.fullmatch(_DNS1123_LABEL, value):
        errors.append("must not contain dots" if re.fullmatch(_DNS1123_SUBDOMAIN, value) else _regex_error(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and "
            "end with an alphanumeric character", _DNS1123_LABEL, "my-name", "123-abc"))
    return errors


def dns1123_subdomain(value: str) -> list[str]:
    """validation.IsDNS1123Subdomain."""
    errors = [_too_long(253)] if _longer(value, 253) else []
    if not re.fullmatch(_DNS1123_SUBDOMAIN, value):
        errors.append(_regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
            "start and end with an alphanumeric character", _DNS1123_SUBDOMAIN, "example.com"))
    return errors


def dns1035_label(value: str) -> list[str]:
    """validation.IsDNS1035Label."""
    errors = [_too_long(63)] if _longer(value, 63) else []
    if not re.fullmatch(_DNS1035_LABEL, value):
        errors.append(_regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
            "character, and end with an alphanumeric character", _DNS1035_LABEL, "my-name", "abc-123"))
    return errors


_QUALIFIED_NAME_MESSAGE = ("must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                           "alphanumeric character")


def qualified_name(value: str) -> list[str]:
    """validation.IsQualifiedName: an optional DNS subdomain prefix and `/`, then a name."""
    parts = value.split("/")
    errors: list[str] = []
    if len(parts) > 2:
        return ["a qualified name " + _regex_error(_QUALIFIED_NAME_MESSAGE, _QUALIFIED_NAME, "MyName", "my.name",
                                                   "123-abc")
                + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        errors += ["prefix part must be non-empty"] if not prefix else [
            "prefix part " + message for message in dns1123_subdomain(prefix)]
    if not name:
        errors.append("name part must be non-empty")
    elif _longer(name, 63):
        errors.append("name part " + _too_long(63))
    if not re.fullmatch(_QUALIFIED_NAME, name):
        errors.append("name part " + _regex_error(_QUALIFIED_NAME_MESSAGE, _QUALIFIED_NAME, "MyName", "my.name",
                                                  "123-abc"))
    return errors


def label_value(value: str) -> list[str]:
    """validation.IsValidLabelValue."""
    errors = [_too_long(63)] if _longer(value, 63) else []
    if not re.fullmatch(_LABEL_VALUE, value):
        errors.append(_regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character", _LABEL_VALUE, "MyValue", "my_value", "12345"))
    return errors


def _prefix(validate: Callable[[str], list[str]]) -> Callable[[str], list[str]]:
    """A name that will have a suffix generated onto it: a trailing dash is allowed (apimachinery's
    maskTrailingDash, which drops the last two characters and appends `a`)."""
    return lambda value: validate(value[:-2] + "a" if len(value) > 1 and value.endswith("-") else value)


def uri(value: str) -> list[str]:
    """url.ParseRequestURI's error, if any."""
    error = request_uri_error(value)
    return [error] if error is not None else []


def _is_date(value: str) -> bool:
    """time.Parse("2006-01-02", value) succeeds."""
    match = _DATE.fullmatch(value)
    if match is None:
        return False
    year, month, day = (int(part) for part in match.groups())
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    return 1 <= month <= 12 and 1 <= day <= days[month - 1]


def _is_datetime(value: str) -> bool:
    """strfmt.IsDateTime, as kube-openapi has it (it looks at the date and the first time part only)."""
    parts = value.lower().split("t")
    if len(value.encode()) < 4 or len(parts) < 2 or not _is_date(parts[0]):
        return False
    match = _TIME.fullmatch(parts[1])
    return match is not None and match[1] <= "23" and match[2] <= "59" and match[3] <= "59"


def _check(valid: Callable[[str], bool], message: str) -> Callable[[str], list[str]]:
    return lambda value: [] if valid(value) else [message]


class Format:
    """A named string format (CEL type `kubernetes.NamedFormat`); equal by name."""

    __slots__ = ("name", "validate")
    cel_type: ClassVar[CelType] = CelType("kubernetes.NamedFormat")

    def __init__(self, name: str, validate: Callable[[str], list[str]]) -> None:
        self.name, self.validate = name, validate

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Format) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("format", self.name))

    def __repr__(self) -> str:
        return f"format({self.name!r})"


FORMATS: dict[str, Format] = {
    "dns1123Label": Format("DNS1123Label", dns1123_label),
    "dns1123Subdomain": Format("DNS1123Subdomain", dns1123_subdomain),
    "dns1035Label": Format("DNS1035Label", dns1035_label),
    "qualifiedName": Format("QualifiedName", qualified_name),
    "dns1123LabelPrefix": Format("DNS1123LabelPrefix", _prefix(dns1123_label)),
    "dns1123SubdomainPrefix": Format("DNS1123SubdomainPrefix", _prefix(dns1123_subdomain)),
    "dns1035LabelPrefix": Format("DNS1035LabelPrefix", _prefix(dns1035_label)),
    "labelValue": Format("LabelValue", label_value),
    "uri": Format("URI", uri),
    "uuid": Format("uuid", _check(lambda value: _UUID.fullmatch(value) is not None, "does not match the UUID format")),
    "byte": Format("byte", _check(lambda value: _BASE64.fullmatch(value) is not None, "invalid base64")),
    "date": Format("date", _check(_is_date, "invalid date")),
    "datetime": Format("datetime", _check(_is_datetime, "invalid datetime")),
}


def validate(named: Format, value: str) -> Optional:
    """<Format>.validate(<string>): optional.none() when valid, else optional.of(the messages)."""
    errors = named.validate(value)
    return Optional(errors) if errors else Optional.NONE


def named_format(name: str) -> Optional:
    """format.named(<string>): the format of that name, or optional.none()."""
    found = FORMATS.get(name)
    return Optional(found) if found is not None else Optional.NONE
