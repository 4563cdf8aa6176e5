"""Semantic versions as the Kubernetes CEL library reads them (github.com/blang/semver/v4 Parse, and the library's
own normalization)."""

from __future__ import annotations

import re
from typing import ClassVar

from webhook.cel.kubernetes.gotext import go_quote
from webhook.cel.memo import short_text_cache
from webhook.cel.values import CelError, CelType

_ALPHANUMERIC = re.compile(r"[0-9A-Za-z-]*")
_NUMBERS = re.compile(r"[0-9]*")
Identifier = int | str


class Semver:
    """A semantic version (CEL type `kubernetes.Semver`); build metadata is kept but, as in semver, not compared."""

    __slots__ = ("build", "major", "minor", "patch", "prerelease")
    cel_type: ClassVar[CelType] = CelType("kubernetes.Semver")

    def __init__(self, major: int, minor: int, patch: int, *, prerelease: tuple[Identifier, ...] = (),
                 build: tuple[str, ...] = ()) -> None:
        self.major, self.minor, self.patch = major, minor, patch
        self.prerelease, self.build = prerelease, build

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Semver) and self.compare(other) == 0

    def __hash__(self) -> int:
        return hash(("semver", self.major, self.minor, self.patch, self.prerelease))

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(str(part) for part in self.prerelease)
        return text + ("+" + ".".join(self.build) if self.build else "")

    def __repr__(self) -> str:
        return f"semver({str(self)!r})"

    def compare(self, other: Semver) -> int:
        """Version.Compare: numbers, then a release above its prereleases, then identifier by identifier."""
        core, other_core = (self.major, self.minor, self.patch), (other.major, other.minor, other.patch)
        if core != other_core:
            return 1 if core > other_core else -1
        if not self.prerelease or not other.prerelease:
            return (not self.prerelease) - (not other.prerelease)
        for mine, theirs in zip(self.prerelease, other.prerelease, strict=False):
            if mine != theirs:
                if isinstance(mine, int) != isinstance(theirs, int):
                    return -1 if isinstance(mine, int) else 1
                return 1 if mine > theirs else -1  # type: ignore[operator]
        return (len(self.prerelease) > len(other.prerelease)) - (len(self.prerelease) < len(other.prerelease))


def _number(text: str, what: str) -> int:
    """A major, minor or patch number as Parse checks it (characters, leading zeroes, then strconv.ParseUint)."""
    if not _NUMBERS.fullmatch(text):
        raise CelError(f"Invalid character(s) found in {what} number {go_quote(text)}")
    if len(text) > 1 and text[0] == "0":
        raise CelError(f"{what.capitalize()} number must not contain leading zeroes {go_quote(text)}")
    return _parse_uint(text)


def _parse_uint(text: str) -> int:
    if not text:
        raise CelError(f'strconv.ParseUint: parsing {go_quote(text)}: invalid syntax')
    if len(text) > 20 or int(text) >= 2**64:
        raise CelError(f'strconv.ParseUint: parsing {go_quote(text)}: value out of range')
    return int(text)


def _prerelease(text: str) -> Identifier:
    if not text:
        raise CelError("Prerelease is empty")
    if _NUMBERS.fullmatch(text):
        if len(text) > 1 and text[0] == "0":
            raise CelError(f"Numeric PreRelease version must not contain leading zeroes {go_quote(text)}")
        return _parse_uint(text)
    if _ALPHANUMERIC.fullmatch(text):
        return text
    raise CelError(f"Invalid character(s) found in prerelease {go_quote(text)}")


@short_text_cache(1024)
def parse_semver(text: str) -> Semver:
    """semver.Parse: strict `MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`; raises CelError with semver's message."""
    if not text:
        raise CelError("Version string empty")
    parts = text.split(".", 2)
    if len(parts) != 3:
        raise CelError("No Major.Minor.Patch elements found")
    major, minor = _number(parts[0], "major"), _number(parts[1], "minor")
    patch_text, plus, build_text = parts[2].partition("+")
    patch_text, dash, prerelease_text = patch_text.partition("-")
    patch = _number(patch_text, "patch")
    prerelease = tuple(_prerelease(part) for part in prerelease_text.split(".")) if dash else ()
    build = tuple(build_text.split(".")) if plus else ()
    for part in build:
        if not part:
            raise CelError("Buildversion is empty")
        if not _ALPHANUMERIC.fullmatch(part):
            raise CelError(f"Invalid character(s) found in build meta data {go_quote(part)}")
    return Semver(major, minor, patch, prerelease=prerelease, build=build)


def normalize_semver(text: str) -> str:
    """The library's normalizeAndParse, before the parse: no `v` prefix, no leading zeroes, missing parts as 0."""
    parts = text.removeprefix("v").split(".", 2)
    for index, part in enumerate(parts):
        if len(part) > 1:
            part = part.lstrip("0")
            parts[index] = part if part and "0" <= part[0] <= "9" else "0" + part
    if len(parts) < 3:
        if any(char in parts[-1] for char in "+-"):
            raise CelError("short version cannot contain PreRelease/Build meta data")
        parts += ["0"] * (3 - len(parts))
    return ".".join(parts)


def semver(text: str, normalize: bool = False) -> Semver:
    """semver(<string>) and semver(<string>, <bool>); raises CelError."""
    return parse_semver(normalize_semver(text) if normalize else text)
