"""The admission pipeline for one parsed review: context, matching, evaluation, decision. No HTTP here."""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any

from webhook import authoring
from webhook.cel.kubernetes.access import AccessReviewer
from webhook.cel.kubernetes.authz import Subject
from webhook.events.service import AdmissionFacts
from webhook.policies.compiled import Phase, PolicySet
from webhook.policies.deadline import DeadlineExceeded, deadline
from webhook.policies.decision import Decision, decide
from webhook.policies.evaluation import (
    Evaluator,
    PolicyResult,
    RequestContext,
    matching_policies,
    namespace_context,
)
from webhook.policies.matching import ResourceKey
from webhook.reviews import AdmissionRequest
from webhook.state import EMPTY, ClusterState

log = logging.getLogger("webhook.admission")


def request_context(policy_set: PolicySet, request: AdmissionRequest, raw: dict[str, Any], *,
                    cluster: ClusterState = EMPTY, now: datetime.datetime | None = None,
                    authorizer: AccessReviewer | None = None) -> RequestContext:
    """Everything evaluation needs, built once per request; `authorizer`: the server's SubjectAccessReviews, for
    the `authorizer` variable (when the policy set's engine offers it)."""
    request_resource = request.requestResource or request.resource
    key = ResourceKey(
        operation=request.operation,
        group=request.resource.group, version=request.resource.version, resource=request.resource.resource,
        sub_resource=request.subResource,
        request_group=request_resource.group, request_version=request_resource.version,
        request_resource=request_resource.resource,
        request_sub_resource=request.requestSubResource if request.requestResource else request.subResource,
        namespaced=bool(request.namespace),
    )
    namespace_object, _, namespace_problem = namespace_context(policy_set, request.namespace, cluster)
    cel_request = _cel_request(raw)
    user = request.userInfo
    return RequestContext(
        key=key, uid=request.uid, name=request.name or _name_of(request.object) or _name_of(request.oldObject),
        namespace=request.namespace, object=request.object, old_object=request.oldObject, request=cel_request,
        namespace_object=namespace_object, dry_run=request.dryRun,
        user_info=authoring.UserInfo(user.username, user.uid, tuple(user.groups), dict(user.extra)),
        cluster=cluster, now=now, namespace_problem=namespace_problem,
        authorizer_bindings=_authorizer_bindings(policy_set, request, authorizer),
    )


def _authorizer_bindings(policy_set: PolicySet, request: AdmissionRequest,
                         reviewer: AccessReviewer | None) -> dict[str, Any]:
    """`authorizer` for the requesting user and `authorizer.requestResource` for the request's own resource
    (NewAuthorizerVal, NewResourceAuthorizerVal); none when the engine does not offer them."""
    if reviewer is None or policy_set.engine.authorizer_problem is not None:
        return {}
    user = request.userInfo
    authorizer = reviewer.authorizer(Subject.of(user.username, uid=user.uid, groups=user.groups, extra=user.extra))
    name = request.name or _name_of(request.object) or _name_of(request.oldObject)
    return {"authorizer": authorizer, "authorizer.requestResource": authorizer.request_resource(
        group=request.resource.group, resource=request.resource.resource, subresource=request.subResource,
        namespace=request.namespace, name=name)}


_REQUEST_DEFAULTS = {"subResource": "", "requestSubResource": "", "name": "", "namespace": "", "dryRun": False}
_USER_DEFAULTS = {"username": "", "uid": "", "groups": [], "extra": {}}


def _cel_request(raw: dict[str, Any]) -> dict[str, Any]:
    """The CEL `request`: the review's request without the objects, with the fields the API server's typed
    request always has (an absent string is "", as in Kubernetes, so `request.subResource == ''` works)."""
    request = {**_REQUEST_DEFAULTS, **{k: v for k, v in raw.items() if k not in ("object", "oldObject")}}
    request.setdefault("requestKind", request.get("kind"))
    request.setdefault("requestResource", request.get("resource"))
    user = request.get("userInfo")
    request["userInfo"] = {**_USER_DEFAULTS, **user} if isinstance(user, dict) else dict(_USER_DEFAULTS)
    return request


def _name_of(obj: Any) -> str:
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else ""


def admit(policy_set: PolicySet, request: AdmissionRequest, raw: dict[str, Any], *, phase: Phase,
          failure_policy: str | None = None, deadline_seconds: float = 0.0, cluster: ClusterState = EMPTY,
          now: datetime.datetime | None = None, authorizer: AccessReviewer | None = None) -> Decision:
    """The verdict of the policies of `phase` on one request (only those with `failure_policy`, when given:
    `webhook register` routes Fail and Ignore policies through two webhooks, each evaluating its own).
    Evaluation stops at `deadline_seconds` (see webhook.policies.deadline): the policy running then and those
    not yet run are faults under their own failurePolicy."""
    context = request_context(policy_set, request, raw, cluster=cluster, now=now, authorizer=authorizer)
    policies = matching_policies(policy_set, phase, context)
    if failure_policy is not None:
        policies = [policy for policy in policies if policy.failure_policy == failure_policy]
    if not policies:
        return Decision(allowed=True)
    evaluator = Evaluator(policy_set, context, policies)
    try:
        with deadline(deadline_seconds):
            if phase == "mutate":
                results, _ = evaluator.mutate(policies)
            else:
                results = evaluator.validate(policies)
    except DeadlineExceeded:
        results = list(evaluator.completed)
        done = {id(result.policy) for result in results}
        late = [policy for policy in policies if id(policy) not in done]
        log.warning("request %s: evaluation deadline of %ss passed in policy %s", request.uid, deadline_seconds,
                    late[0].name if late else "?")
        for index, policy in enumerate(late):
            fault = (f"did not finish within the evaluation deadline of {deadline_seconds:g}s" if index == 0 else
                     f"not evaluated: the evaluation deadline of {deadline_seconds:g}s passed in policy "
                     f"{late[0].name!r}")
            results.append(PolicyResult(policy, faults=[fault]))
    except Exception as error:  # a bug or an exhausted resource: still a verdict, never an HTTP 500
        # One line, not a traceback: a crafted object (deep nesting) must not be able to flood the log.
        log.error("evaluation of request %s failed: %s: %.500s", request.uid, type(error).__name__, error)
        log.debug("evaluation of request %s failed", request.uid, exc_info=True)
        fault = f"internal error while evaluating: {type(error).__name__}: {error}"
        results = [PolicyResult(policy, faults=[fault]) for policy in policies]
    return decide(results, phase=phase)


def admission_facts(request: AdmissionRequest, decision: Decision, *, phase: Phase,
                    duration_ms: float) -> AdmissionFacts:
    """What the decision's CloudEvent says (the events layer knows no policy or review types)."""
    status = None if decision.allowed else {"code": decision.code, "reason": decision.reason,
                                            "message": decision.message}
    return AdmissionFacts(
        uid=request.uid, phase=phase, operation=request.operation,
        kind=request.kind.model_dump(), resource=request.resource.model_dump(), sub_resource=request.subResource,
        namespace=request.namespace, name=request.name or _name_of(request.object) or _name_of(request.oldObject),
        username=request.userInfo.username, groups=tuple(request.userInfo.groups),
        allowed=decision.allowed, status=status, warnings=tuple(decision.warnings),
        audit_annotations=decision.audit_annotations, policies=tuple(decision.outcomes),
        patch=tuple(decision.patch if phase == "mutate" and decision.allowed else ()), duration_ms=duration_ms,
        time=time.time(),
    )
