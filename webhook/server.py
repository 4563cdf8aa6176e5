"""The HTTP edge: routes, body limits, content checks, error mapping, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from webhook.admission import admission_facts, admit
from webhook.background_audit import service as audit_service
from webhook.cel.kubernetes.access import AccessReviewer, review_timeout
from webhook.certs import CertificateWatcher, certificate_expiry
from webhook.cluster import LiveClusterState, review_access
from webhook.config import Settings, settings_from_environment
from webhook.errors import BadRequest
from webhook.events.model import event_source
from webhook.events.service import EventDeliverer, EventRecorder, EventSettings
from webhook.events.telemetry import OutboxCollector
from webhook.memory import MemoryGuard
from webhook.metrics import Metrics
from webhook.policies import deadline
from webhook.policies.cel import make_engine
from webhook.policies.compiled import Phase, PolicySet
from webhook.policies.store import LoadStatus, PolicyStore
from webhook.reviews import build_response, parse_review
from webhook.serving import (
    DRAIN_SIGNAL,
    DRAINING,
    AdmissionApp,
    ClientAuthentication,
    CloseWhileDraining,
    ServingCollector,
)
from webhook.state import EMPTY, ClusterState

log = logging.getLogger("webhook.server")
JSON = "application/json"


def _status_body(code: int, reason: str, message: str) -> bytes:
    """Errors in the shape of a Kubernetes Status, so that tools that read those can read ours."""
    return orjson.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                         "reason": reason, "message": message})


_KIND = re.compile(r"[A-Z][A-Za-z0-9]{0,62}")


def _kind_label(kind: str) -> str:
    """A metric label from a request's kind: anyone who reaches the port chooses it, so only names shaped
    like Kubernetes kinds get a series of their own."""
    return kind if _KIND.fullmatch(kind) else "other"


def _escaped(text: str) -> str:
    """Control characters (newlines that would forge log lines) written as escapes."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def error_response(code: int, reason: str, message: str) -> Response:
    return Response(_status_body(code, reason, message), status_code=code, media_type=JSON)


class MemoryPressure(Exception):
    """Resident memory is past the memory guard's soft limit: the request is answered 503."""


def memory_refusal(guard: MemoryGuard) -> Response:
    """503 with Retry-After, closing the connection (an unread body is dropped with it)."""
    guard.refused += 1
    response = error_response(503, "ServiceUnavailable", "the server's resident memory is past its soft limit: "
                              "admission requests with large bodies are refused until it is back under; retry "
                              "shortly")
    response.headers["Retry-After"] = "1"
    response.headers["Connection"] = "close"
    return response


async def read_body(request: Request, *, limit: int, guard: MemoryGuard | None = None) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` (declared or streamed), and given up (MemoryPressure)
    as soon as the memory guard refuses a body of its size (declared, or received so far)."""
    declared = request.headers.get("content-length")
    size: int | None = None
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest("Content-Length is not a number", reason="BadContentLength") from None
        if size > limit:
            raise BadRequest(f"request body of {size} bytes is over the limit of {limit} bytes",
                             status_code=413, reason="RequestEntityTooLarge")
    if guard is not None and guard.refuses(size):
        raise MemoryPressure
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if guard is not None and guard.refuses(received):
            raise MemoryPressure
        if received > limit:
            raise BadRequest(f"request body is over the limit of {limit} bytes", status_code=413,
                             reason="RequestEntityTooLarge")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_content_type(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != JSON:
        raise BadRequest(f"Content-Type must be application/json, got {content_type or 'none'!r}",
                         status_code=415, reason="UnsupportedMediaType")


def create_app(settings: Settings) -> FastAPI:
    metrics = Metrics()
    authentication = ClientAuthentication(require_client_certificate=settings.client_ca_file is not None,
                                          token_file=settings.client_token_file)
    certificates = CertificateWatcher(*settings.serving_files)
    event_settings = event_settings_from(settings)
    events = EventRecorder(event_settings, metrics=metrics)
    metrics.add_collector(OutboxCollector(event_settings.outbox_path))

    # The live cluster state, when configured: watches of this process's own (each worker has its own).
    live = LiveClusterState.from_settings(settings) if settings.cluster_configured else None
    # The `authorizer` of policies: SubjectAccessReviews through the same connection, cached briefly.
    reviewer = None if live is None else AccessReviewer(functools.partial(
        review_access, live.api_client, timeout=review_timeout(settings.evaluation_deadline_seconds)))

    def policy_set_event(status: LoadStatus, policy_set: PolicySet | None) -> None:
        if policy_set is not None:
            settle_heap()
        events.record_policy_set(directory=str(settings.policies), ok=status.ok,
                                 policies=len(policy_set.policies) if policy_set else 0,
                                 digest=policy_set.digest if policy_set else "",
                                 problems=[str(problem) for problem in status.problems])
        if live is not None and policy_set is not None:  # params watches start at load, not at the first review
            live.follow(policy_set)
        if audit is not None and policy_set is not None:
            audit.policies_changed()

    store = PolicyStore(settings.policies, engine=make_engine(settings.cel_engine, cluster=live is not None,
                                                              kubernetes_version=settings.kubernetes_minor()),
                        metrics=metrics, on_load=policy_set_event)
    # `webhook serve` fills in the guard's limits (webhook.memory.with_memory_limits); an app made from Settings()
    # alone (tests) has none.
    guard = (MemoryGuard(soft_mb=settings.memory_soft_limit_mb or 0, hard_mb=settings.memory_hard_limit_mb or 0,
                         restart_above_mb=settings.restart_above_mb)
             if settings.memory_hard_limit_mb or settings.memory_soft_limit_mb or settings.restart_above_mb else None)
    metrics.add_collector(ServingCollector(guard))
    cluster: ClusterState = live if live is not None else EMPTY
    if live is not None:
        metrics.add_collector(live)
    # --audit: one replica judges the objects already in the cluster (webhook.background_audit.service); never /readyz.
    audit = (audit_service.for_server(settings, live=live, store=store, events=events, metrics=metrics)
             if live is not None and settings.audit else None)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if live is not None:  # syncs in the background; /readyz says 503 until it has
            live.start()
        await asyncio.to_thread(store.load)
        stop = asyncio.Event()
        watcher = asyncio.create_task(store.watch(stop)) if settings.watch_policies else None
        spooling = asyncio.create_task(_maintain_events(events, stop))
        watching_certificates = asyncio.create_task(_watch_certificates(certificates, metrics, settings, stop))
        watching_memory = asyncio.create_task(guard.watch(stop)) if guard is not None else None
        auditing = asyncio.create_task(audit.run(stop)) if audit is not None else None
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # main thread only
            asyncio.get_running_loop().add_signal_handler(DRAIN_SIGNAL, DRAINING.set)
        if not deadline.install() and settings.evaluation_deadline_seconds > 0:
            log.warning("not in the main thread: policy evaluation has no deadline")
        limit_memory(settings.memory_limit_mb)
        raise_open_files_limit()
        deliverer = None
        if settings.event_delivery == "inline":
            deliverer = EventDeliverer(event_settings)
            delivery = asyncio.create_task(deliverer.run())
        try:
            yield
        finally:
            stop.set()
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await spooling
            await watching_certificates
            if watching_memory is not None:
                await watching_memory
            if auditing is not None:  # releases the audit Lease
                await auditing
            events.close()
            if deliverer is not None:
                deliverer.stop()
                await delivery
            if live is not None:
                await asyncio.to_thread(live.stop)

    app = AdmissionApp(title="webhook", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(CloseWhileDraining)
    app.state.store = store
    app.state.events = events
    app.state.metrics = metrics
    app.state.settings = settings
    app.state.cluster = live

    @app.exception_handler(BadRequest)
    async def _bad_request(request: Request, error: BadRequest) -> Response:
        metrics.bad_requests.labels(error.reason).inc()
        return error_response(error.status_code, error.reason, error.message)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, error: HTTPException) -> Response:
        reason = {404: "NotFound", 405: "MethodNotAllowed"}.get(error.status_code, "BadRequest")
        return error_response(error.status_code, reason, f"{request.method} {request.url.path}: {error.detail}")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> Response:
        return error_response(400, "BadRequest", str(error))

    async def review(request: Request, phase: Phase, failure_policy: str | None = None) -> Response:
        started = time.perf_counter()
        endpoint = "/validate" if phase == "validate" else "/mutate"
        if authentication.enabled and (problem := authentication.problem(request.scope)) is not None:
            metrics.bad_requests.labels("Unauthorized").inc()
            return error_response(401, "Unauthorized", problem)
        _check_content_type(request)
        try:
            body = await read_body(request, limit=settings.max_body_bytes, guard=guard)
        except MemoryPressure:
            assert guard is not None  # raised only with one
            return memory_refusal(guard)
        parsed, raw = parse_review(body)
        policy_set = store.current
        if policy_set is None:
            return error_response(503, "ServiceUnavailable",
                                  "no policy set is loaded yet; see /readyz for the problems")
        if live is not None:
            policy_set = live.with_params(policy_set)  # the live ConfigMaps as params objects too
        decision = admit(policy_set, parsed.request, raw, phase=phase, failure_policy=failure_policy,
                         deadline_seconds=settings.evaluation_deadline_seconds, cluster=cluster,
                         authorizer=reviewer)
        for result in decision.results:
            if result.faults:
                metrics.policy_errors.labels(result.policy.name).inc()
        payload = build_response(
            api_version=parsed.apiVersion, uid=parsed.request.uid, allowed=decision.allowed, code=decision.code,
            reason=decision.reason, message=decision.message, warnings=decision.warnings,
            audit_annotations=decision.audit_annotations, patch=decision.patch if phase == "mutate" else None,
        )
        verdict = "denied" if not decision.allowed else ("patched" if decision.patch else "allowed")
        elapsed = time.perf_counter() - started
        if not parsed.request.dryRun and events.wants_admissions:  # sideEffects: NoneOnDryRun
            asked = parsed.request
            events.record_admission(admission_facts(asked, decision, phase=phase, duration_ms=elapsed * 1000),
                                    asked.object if asked.object is not None else asked.oldObject)
        metrics.requests.labels(endpoint, parsed.request.operation, _kind_label(parsed.request.kind.kind),
                                verdict).inc()
        metrics.latency.labels(endpoint).observe(elapsed)
        if not decision.allowed and log.isEnabledFor(logging.INFO):
            asked = parsed.request  # escaped: request fields may hold newlines meant to forge log lines
            message = "(not logged for Secrets)" if asked.kind.kind == "Secret" else decision.message
            log.info("denied %s %s %s/%s uid=%s: %s", asked.operation, *map(_escaped, (
                asked.kind.kind, asked.namespace, asked.name, asked.uid, message)))
        return Response(payload, media_type=JSON)

    def endpoint(phase: Phase, failure_policy: str | None) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            return await review(request, phase, failure_policy)
        return handle

    # Plain Starlette routes: FastAPI's layer (dependency solving, parameter and response models) has nothing
    # to do for a handler that takes the request itself, and cost ~10% of a review's time. /validate/fail and
    # the like are what `webhook register` points its two webhooks per phase at: each evaluates the policies
    # of one failurePolicy, so a request matched by both webhooks never has a policy evaluated twice.
    # POSTs go straight to them (AdmissionApp.direct, before FastAPI's middleware); the routes answer the rest
    # (405 for other methods) as before.
    for phase in ("validate", "mutate"):
        for suffix, failure_policy in (("", None), ("/fail", "Fail"), ("/ignore", "Ignore")):
            app.direct[f"/{phase}{suffix}"] = endpoint(phase, failure_policy)
            app.add_route(f"/{phase}{suffix}", app.direct[f"/{phase}{suffix}"], methods=["POST"])

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(orjson.dumps({"status": "ok"}), media_type=JSON)

    @app.get("/readyz")
    async def readyz() -> Response:
        status = store.last_status
        current = store.current
        # Not ready until the cluster state has synced; once synced, a lost API server is reported but
        # keeps readiness (lookups then fail after --cluster-stale-after-seconds, under failurePolicy).
        short_of_memory = guard is not None and guard.refusing()
        ready = current is not None and not DRAINING.is_set() and (live is None or live.synced) and not short_of_memory
        detail: dict[str, Any] = {"ready": ready}
        if short_of_memory:
            detail["memory"] = "past the soft limit: admission requests are refused"
        if live is not None:
            detail["cluster"] = live.problem or "synced"
        if DRAINING.is_set():
            detail["draining"] = True
        if certificates.problem is not None:
            detail["tlsProblem"] = certificates.problem
        if current is not None:
            detail["policies"] = len(current.policies)
            detail["digest"] = current.digest
            detail["engine"] = store.engine.name
        if status is not None and not status.ok:
            detail["lastLoadFailed"] = True
            detail["problems"] = [str(problem) for problem in status.problems[:50]]
        return Response(orjson.dumps(detail), status_code=200 if ready else 503, media_type=JSON)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


YOUNG_COLLECTION_THRESHOLD = 10_000


def settle_heap() -> None:
    """Collect what the previous policy set left (cycles: modules, compiled programs), then move every object
    alive now into the collector's permanent generation (`gc.freeze`), done after each policy (re)load.

    A full collection over the ~100,000 objects the libraries, the CEL engines and the policies make at start
    takes ~60 ms on the benchmark machine, during which no request is answered; with those objects frozen,
    the periodic full collections only walk what requests made since. The cost moves to the reload (one
    such pause, in the loading thread). A policy set still held by a request in flight at that moment is
    frozen with the rest; its cycles are collected at the next reload, which unfreezes everything first.

    The youngest generation is collected after 10,000 net allocations instead of 700: a review keeps
    thousands of containers alive while it is evaluated (its parsed object, the values CEL computes), which each
    young collection walks in vain. With the policy runs' cycles gone (see evaluation._PolicyRun), the
    collector's share of the server's CPU at saturation fell from ~9% (py-spy) to ~1.5%."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])


def event_settings_from(settings: Settings) -> EventSettings:
    return EventSettings(
        state_dir=settings.state_dir, subscribers_file=settings.subscribers,
        source=event_source(cluster=settings.cluster_name, server=settings.server_name),
        max_backlog=settings.outbox_max_backlog, max_outbox_bytes=settings.outbox_max_mb * 1024 * 1024,
        lease_seconds=settings.delivery_lease_seconds, drain_seconds=settings.drain_seconds)


def limit_memory(megabytes: int | None) -> None:
    """RLIMIT_DATA for this process: past it allocations fail with MemoryError (a policy fault)."""
    if megabytes is None:
        return
    import resource

    limit = megabytes * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    log.info("memory limit (RLIMIT_DATA) %d MiB", limit // (1024 * 1024))


def raise_open_files_limit() -> None:
    """The soft limit of open files up to the hard one: at a soft limit of 1,024, 1,100 idle connections made
    /healthz fail and the event spool log `Too many open files`."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        log.info("open files limit raised from %d to %d", soft, wanted)


async def _watch_certificates(watcher: CertificateWatcher, metrics: Metrics, settings: Settings,
                              stop: asyncio.Event) -> None:
    """Reload the serving certificate when its files change (cert-manager renewal, Secret update)."""
    last_problem = None
    metrics.certificate_expiry.set(certificate_expiry(watcher.cert_file))
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.certificate_check_seconds)
        if watcher.check():
            metrics.certificate_reloads.labels("loaded").inc()
            metrics.certificate_expiry.set(certificate_expiry(watcher.cert_file))
            log.info("serving certificate reloaded from %s", watcher.cert_file)
        elif watcher.problem is not None and watcher.problem != last_problem:
            metrics.certificate_reloads.labels("rejected").inc()
            log.error("%s", watcher.problem)
        last_problem = watcher.problem


async def _maintain_events(recorder: EventRecorder, stop: asyncio.Event) -> None:
    """Hand spooled events to the deliverer every 50 ms (and refresh subscribers and the backlog). A failure
    is logged at most every 10 s, with its traceback once."""
    last_log, logged_traceback = 0.0, False
    while not stop.is_set():
        try:
            recorder.maintain()
        except Exception as error:
            now = time.monotonic()
            if now - last_log >= 10.0:
                last_log = now
                log.error("event spool maintenance failed (repeats are not logged for 10 s): %s", error,
                          exc_info=not logged_traceback)
                logged_traceback = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.05)


def create_app_from_environment() -> FastAPI:
    """The uvicorn factory used by every worker process."""
    return create_app(settings_from_environment())
