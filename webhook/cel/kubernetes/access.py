"""The authorizer's checks as SubjectAccessReviews (authorization.k8s.io/v1), asked through the server's cluster
connection (`review`: webhook.cluster.review_access), as the API server's webhook authorizer asks them.

Each answer is cached per `Attributes` (user, uid, groups, extra, verb, group, resource, subresource, name,
namespace, path and selectors): an allowed one for ALLOWED_TTL seconds, any other for DENIED_TTL, at most
MAX_ENTRIES (least recently used out first); checks whose attributes are larger than MAX_CACHED_SIZE characters
are not cached (a requester must not be able to fill the cache). Within one request, every answer is reused, a
failure too (Kubernetes' per-request caching authorizer). A review that fails (unreachable API server, no answer
within the timeout, refused) is not cached: it is a Decision with `errored()` true and `error()` saying why, and
for RETRY_AFTER seconds after it, checks that are not cached fail the same way without a request, so that an API
server that has gone away costs each admission review one timeout at most.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from webhook.cel.kubernetes.authz import Attributes, Authorizer, Decision, Subject

ALLOWED_TTL = 10.0
DENIED_TTL = 5.0
MAX_ENTRIES = 10_000
MAX_CACHED_SIZE = 10_000  # characters, as the webhook authorizer's maxControlledAttrCacheSize
RETRY_AFTER = 1.0
MAX_TIMEOUT = 2.0  # seconds a review may take; under an evaluation deadline, half of it (see review_timeout)
# What the API server adds to evaluationError when it could not parse a selector: in Kubernetes' own check the
# selector is then ignored without an error, so this is left out of `error()`.
_SELECTOR_NOTES = frozenset(f"spec.resourceAttributes.{kind}Selector {how} due to parse error"
                            for kind in ("field", "label") for how in ("ignored", "partially ignored"))


class ReviewFailed(Exception):
    """A SubjectAccessReview got no answer (unreachable, timed out, refused); the message says why."""


Review = Callable[[dict[str, Any]], Mapping[str, Any]]  # a SubjectAccessReview's spec -> its status


def review_timeout(deadline_seconds: float) -> float:
    """How long one review may take: MAX_TIMEOUT, or half the evaluation deadline when that is shorter, so that
    a check that gets no answer is an `errored()` decision rather than the whole request's deadline."""
    return min(MAX_TIMEOUT, deadline_seconds / 2) if deadline_seconds > 0 else MAX_TIMEOUT


def review_spec(attributes: Attributes) -> dict[str, Any]:
    """The SubjectAccessReview spec that asks for `attributes` (empty fields left out, as Go's omitempty)."""
    subject = attributes.subject
    spec: dict[str, Any] = {"user": subject.user, "groups": list(subject.groups)}
    if subject.uid:
        spec["uid"] = subject.uid
    if subject.extra:
        spec["extra"] = {key: list(values) for key, values in subject.extra}
    if not attributes.resource_request:
        spec["nonResourceAttributes"] = {"path": attributes.path, "verb": attributes.verb}
        return spec
    resource = {"verb": attributes.verb, "group": attributes.group, "version": attributes.version,
                "resource": attributes.resource, "subresource": attributes.subresource,
                "namespace": attributes.namespace, "name": attributes.name}
    spec["resourceAttributes"] = {key: value for key, value in resource.items() if value}
    if attributes.field_selector:
        spec["resourceAttributes"]["fieldSelector"] = {"rawSelector": attributes.field_selector}
    if attributes.label_selector:
        spec["resourceAttributes"]["labelSelector"] = {"rawSelector": attributes.label_selector}
    return spec


def decision_of(status: Mapping[str, Any]) -> Decision:
    """A SubjectAccessReview's status as a Decision; its evaluationError is the decision's error."""
    allowed, denied = status.get("allowed") is True, status.get("denied") is True
    reason = str(status.get("reason") or "")
    notes = [note.strip() for note in str(status.get("evaluationError") or "").split(";")]
    error = "; ".join(note for note in notes if note and note not in _SELECTOR_NOTES)
    if allowed and denied:  # as the webhook authorizer answers such a status
        return Decision(False, reason, "webhook subject access review returned both allow and deny response")
    return Decision(allowed, reason, error)


class AccessReviewer:
    """The server's authorizer: SubjectAccessReviews through `review`, cached (see the module documentation).
    Safe to use from several threads."""

    def __init__(self, review: Review, *, allowed_ttl: float = ALLOWED_TTL, denied_ttl: float = DENIED_TTL,
                 max_entries: int = MAX_ENTRIES, retry_after: float = RETRY_AFTER,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._review, self._clock = review, clock
        self.allowed_ttl, self.denied_ttl, self.max_entries, self.retry_after = \
            allowed_ttl, denied_ttl, max_entries, retry_after
        self._cache: OrderedDict[Attributes, tuple[float, Decision]] = OrderedDict()
        self._lock = threading.Lock()
        self._failed: tuple[float, str] | None = None  # (until when, the error) after a failed review
        self.reviews = self.hits = self.failures = 0

    def authorizer(self, subject: Subject) -> Authorizer:
        """The `authorizer` of one request by `subject`: each distinct check is decided once in it."""
        answers: dict[Attributes, Decision] = {}

        def authorize(attributes: Attributes) -> Decision:
            found = answers.get(attributes)
            if found is None:
                found = answers[attributes] = self.decide(attributes)
            return found

        return Authorizer(subject, authorize)

    def decide(self, attributes: Attributes) -> Decision:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(attributes)
            if cached is not None:
                if cached[0] > now:
                    self._cache.move_to_end(attributes)
                    self.hits += 1
                    return cached[1]
                del self._cache[attributes]
            failed = self._failed
        if failed is not None and now < failed[0]:
            return Decision(False, error=failed[1])
        try:
            self.reviews += 1
            decision = decision_of(self._review(review_spec(attributes)))
        except Exception as error:  # a policy's value, never an exception out of evaluation
            self.failures += 1
            detail = str(error) if isinstance(error, ReviewFailed) else f"{type(error).__name__}: {error}"
            message = f"SubjectAccessReview failed: {detail}"
            self._failed = (self._clock() + self.retry_after,
                            f"{message} (not retried for {self.retry_after:g}s after a failure)")
            return Decision(False, error=message)
        self._failed = None
        if attributes.size() <= MAX_CACHED_SIZE and self.max_entries > 0:
            ttl = self.allowed_ttl if decision.allowed else self.denied_ttl
            with self._lock:
                self._cache[attributes] = (self._clock() + ttl, decision)
                self._cache.move_to_end(attributes)
                while len(self._cache) > self.max_entries:
                    self._cache.popitem(last=False)
        return decision

    def __len__(self) -> int:
        """Answers cached (expired ones included until they are asked for again or pushed out)."""
        return len(self._cache)
