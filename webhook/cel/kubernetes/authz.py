"""Kubernetes' authorizer library (k8s.io/apiserver/pkg/cel/library/authz.go; 1.27, field and label selectors
1.31): `authorizer.group('apps').resource('deployments').namespace('prod').check('update').allowed()`.

The values are opaque, as in Kubernetes: an `Authorizer` (who asks), the builders `PathCheck`, `GroupCheck` and
`ResourceCheck`, and the `Decision` of a check. A check hands its `Attributes` (authorizer.AttributesRecord) to the
authorizer's `authorize` function, which the server gives each request (webhook.cel.kubernetes.access: a
SubjectAccessReview through the server's cluster connection, cached). A check that could not be decided is not a
CEL error: its Decision has `errored()` true and the reason in `error()`, as in Kubernetes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from webhook.cel.kubernetes.formats import dns1123_label, dns1123_subdomain
from webhook.cel.values import CelError, CelType

AUTHORIZER = "kubernetes.authorization.Authorizer"
PATH_CHECK = "kubernetes.authorization.PathCheck"
GROUP_CHECK = "kubernetes.authorization.GroupCheck"
RESOURCE_CHECK = "kubernetes.authorization.ResourceCheck"
DECISION = "kubernetes.authorization.Decision"
# The variables of admission policies: `authorizer` and `authorizer.requestResource` (the request's own resource).
VARIABLES = {"authorizer": AUTHORIZER, "authorizer.requestResource": RESOURCE_CHECK}


@dataclass(frozen=True, slots=True)
class Subject:
    """user.Info: whom a check is for (the request's user, or a service account)."""

    user: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()  # sorted by key

    @classmethod
    def of(cls, user: str, *, uid: str = "", groups: Iterable[str] = (),
           extra: Mapping[str, Iterable[str]] | None = None) -> Subject:
        pairs = sorted((key, tuple(values)) for key, values in (extra or {}).items())
        return cls(user, uid, tuple(groups), tuple(pairs))

    @classmethod
    def service_account(cls, namespace: str, name: str) -> Subject:
        """serviceaccount.ServiceAccountInfo.UserInfo()."""
        return cls(f"system:serviceaccount:{namespace}:{name}",
                   groups=("system:serviceaccounts", f"system:serviceaccounts:{namespace}"))


@dataclass(frozen=True, slots=True)
class Attributes:
    """What one check asks (authorizer.AttributesRecord); hashable, so it is also the cache key."""

    subject: Subject
    verb: str
    resource_request: bool
    path: str = ""  # a non-resource request's path
    group: str = ""
    version: str = ""  # "*" for a resource request, as Kubernetes asks
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    field_selector: str = ""  # as written; the API server parses it
    label_selector: str = ""

    def size(self) -> int:
        """Characters the requester controls, groups and extra included (the cache leaves large ones out)."""
        subject = self.subject
        return (len(subject.user) + len(subject.uid) + sum(map(len, subject.groups))
                + sum(len(key) + sum(map(len, values)) for key, values in subject.extra)
                + sum(len(text) for text in (self.verb, self.path, self.group, self.resource, self.subresource,
                                             self.namespace, self.name, self.field_selector, self.label_selector)))


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to a check: allowed or not, the authorizer's reason, and an error ("" when there was none)."""

    cel_type: ClassVar[CelType] = CelType(DECISION)
    allowed: bool
    reason: str = ""
    error: str = ""


Authorize = Callable[[Attributes], Decision]


@dataclass(frozen=True, slots=True)
class Authorizer:
    """The `authorizer` variable: checks for `subject`, decided by `authorize`."""

    cel_type: ClassVar[CelType] = CelType(AUTHORIZER)
    subject: Subject
    authorize: Authorize = dataclasses.field(compare=False, repr=False)

    def request_resource(self, *, group: str, resource: str, subresource: str, namespace: str,
                         name: str) -> ResourceCheck:
        """`authorizer.requestResource`: a check of the request's own resource (NewResourceAuthorizerVal)."""
        return ResourceCheck(self, group, resource, subresource, namespace, name)


@dataclass(frozen=True, slots=True)
class PathCheck:
    cel_type: ClassVar[CelType] = CelType(PATH_CHECK)
    authorizer: Authorizer
    path: str


@dataclass(frozen=True, slots=True)
class GroupCheck:
    cel_type: ClassVar[CelType] = CelType(GROUP_CHECK)
    authorizer: Authorizer
    group: str


@dataclass(frozen=True, slots=True)
class ResourceCheck:
    cel_type: ClassVar[CelType] = CelType(RESOURCE_CHECK)
    authorizer: Authorizer
    group: str
    resource: str
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    field_selector: str = ""
    label_selector: str = ""


# --- the library's functions, with Kubernetes' error texts -----------------------------------------------------


def path(authorizer: Authorizer, text: str) -> PathCheck:
    if not text.strip():
        raise CelError("path must not be empty")
    return PathCheck(authorizer, text)


def group(authorizer: Authorizer, name: str) -> GroupCheck:
    return GroupCheck(authorizer, name)


def service_account(authorizer: Authorizer, namespace: str, name: str) -> Authorizer:
    """The same authorizer, asking for a service account (ValidateServiceAccountName, ValidateNamespaceName)."""
    if dns1123_subdomain(name):
        raise CelError("Invalid service account name")
    if dns1123_label(namespace):
        raise CelError("Invalid service account namespace")
    return Authorizer(Subject.service_account(namespace, name), authorizer.authorize)


def resource(check: GroupCheck, name: str) -> ResourceCheck:
    if not name.strip():
        raise CelError("resource must not be empty")
    return ResourceCheck(check.authorizer, check.group, name)


def subresource(check: ResourceCheck, name: str) -> ResourceCheck:
    return dataclasses.replace(check, subresource=name)


def namespace(check: ResourceCheck, name: str) -> ResourceCheck:
    return dataclasses.replace(check, namespace=name)


def name(check: ResourceCheck, value: str) -> ResourceCheck:
    return dataclasses.replace(check, name=value)


def field_selector(check: ResourceCheck, selector: str) -> ResourceCheck:
    return dataclasses.replace(check, field_selector=selector)


def label_selector(check: ResourceCheck, selector: str) -> ResourceCheck:
    return dataclasses.replace(check, label_selector=selector)


def check_path(check: PathCheck, verb: str) -> Decision:
    """Whether the subject may send HTTP `verb` to the path."""
    authorizer = check.authorizer
    return authorizer.authorize(Attributes(authorizer.subject, verb, False, path=check.path))


def check_resource(check: ResourceCheck, verb: str) -> Decision:
    """Whether the subject may `verb` the resource, in any API version (`*`), as Kubernetes asks."""
    authorizer = check.authorizer
    return authorizer.authorize(Attributes(
        authorizer.subject, verb, True, group=check.group, version="*", resource=check.resource,
        subresource=check.subresource, namespace=check.namespace, name=check.name,
        field_selector=check.field_selector, label_selector=check.label_selector))


OPAQUE_TYPES = (Authorizer, PathCheck, GroupCheck, ResourceCheck, Decision)
