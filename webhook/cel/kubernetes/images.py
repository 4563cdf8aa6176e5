"""Kubernetes 1.33's image library: container image references as go-containerregistry's name.ParseReference reads
them (Docker Hub as the default registry, `library/` for its single-name repositories, `latest` as the default tag)."""

from __future__ import annotations

from typing import ClassVar

from webhook.cel.kubernetes.urls import parse_reference
from webhook.cel.memo import short_text_cache
from webhook.cel.values import CelError, CelType

DEFAULT_REGISTRY = "index.docker.io"
_TAG_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789_-.ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_DIGEST_CHARACTERS = "sh:0123456789abcdef"  # sha256:<64 hex digits>, checked by characters and length only
_REPOSITORY_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789_-./"


class _BadName(ValueError):
    """name.ErrBadName."""


def _check(name: str, element: str, allowed: str, *, shortest: int, longest: int) -> None:
    """checkElement: the length in characters, then the characters."""
    if not shortest <= len(element) <= longest:
        raise _BadName(f"{name} must be between {shortest} and {longest} characters in length: {element}")
    if any(char not in allowed for char in element):
        raise _BadName(f"{name} can only contain the characters `{allowed}`: {element}")


def _registry(name: str) -> str:
    """NewRegistry: a valid RFC 3986 authority (url.Parse("//" + name) gives it back as the host), or Docker Hub."""
    try:
        host = parse_reference("//" + name).host
    except ValueError:
        host = None
    if host != name:
        raise _BadName(f"registries must be valid RFC 3986 URI authorities: {name}")
    if not name:
        return DEFAULT_REGISTRY
    return DEFAULT_REGISTRY if name == "docker.io" else name


def _repository(name: str) -> tuple[str, str]:
    """NewRepository: (registry, repository); the first path part is the registry when it has a `.` or `:`."""
    if not name:
        raise _BadName("a repository name must be specified")
    registry, repository = "", name
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first):
        registry, repository = first, rest
    _check("repository", repository, _REPOSITORY_CHARACTERS, shortest=2, longest=255)
    return _registry(registry), repository


def _tagged(name: str) -> tuple[str, str, str]:
    """NewTag: (registry, repository, tag); the part after the last `:` is the tag unless it has a `/`."""
    base, tag = name, ""
    parts = name.split(":")
    if len(parts) > 1 and "/" not in parts[-1]:
        base, tag = ":".join(parts[:-1]), parts[-1]
    if tag:
        _check("tag", tag, _TAG_CHARACTERS, shortest=1, longest=127)
    return (*_repository(base), tag)


def _digested(name: str) -> tuple[str, str, str]:
    """NewDigest: (registry, repository, digest); a tag before the `@` is dropped."""
    parts = name.split("@")
    if len(parts) != 2:
        raise _BadName("a digest must contain exactly one '@' separator (e.g. registry/repository@digest) saw: "
                       + name)
    base, digest = parts
    _check("digest", digest, _DIGEST_CHARACTERS, shortest=71, longest=71)
    try:
        registry, repository, _ = _tagged(base)
        base = f"{registry}/{_full_repository(registry, repository)}"
    except _BadName:
        pass
    return (*_repository(base), digest)


def _full_repository(registry: str, repository: str) -> str:
    """Repository.RepositoryStr: Docker Hub's single-name repositories are in `library/`."""
    return f"library/{repository}" if registry == DEFAULT_REGISTRY and "/" not in repository else repository


class Image:
    """A container image reference (CEL type `kubernetes.Image`); equal when every part is."""

    __slots__ = ("digest", "identifier", "image", "registry", "repository", "tag")
    cel_type: ClassVar[CelType] = CelType("kubernetes.Image")

    def __init__(self, image: str, *, registry: str, repository: str, tag: str = "", digest: str = "") -> None:
        self.image, self.registry, self.repository = image, registry, repository
        self.tag, self.digest = tag, digest
        self.identifier = digest or tag

    def _parts(self) -> tuple[str, ...]:
        return self.image, self.registry, self.repository, self.identifier, self.tag, self.digest

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Image) and other._parts() == self._parts()

    def __hash__(self) -> int:
        return hash(("image", *self._parts()))

    def __repr__(self) -> str:
        return f"image({self.image!r})"


@short_text_cache(1024)
def parse_image(text: str) -> Image:
    """image(<string>): name.ParseReference, as a tag reference if it is one, else as a digest reference."""
    try:
        registry, repository, tag = _tagged(text)
        return Image(text, registry=registry, repository=_full_repository(registry, repository), tag=tag or "latest")
    except _BadName:
        pass
    try:
        registry, repository, digest = _digested(text)
    except _BadName:
        raise CelError(f"could not parse reference: {text}") from None
    return Image(text, registry=registry, repository=_full_repository(registry, repository), digest=digest)


def is_image(text: str) -> bool:
    """isImage(<string>): image(<string>) would not fail."""
    try:
        parse_image(text)
    except CelError:
        return False
    return True
