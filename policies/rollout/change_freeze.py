"""change-freeze: no workload changes in production during change-freeze windows, except by break-glass.

Why: the weeks around the year's end and the hours before a weekend are when the fewest people are around
to notice and repair a bad rollout. During a window, creating, changing or deleting a workload is refused;
an emergency change is still possible through break-glass, and is then recorded.
Applies to: Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs (CREATE, UPDATE, DELETE)
in namespaces labelled `environment: production`. Not affected, on purpose:
- scaling: the /scale subresource (kubectl scale, HorizontalPodAutoscaler) is not matched, and an UPDATE
  that changes nothing but `spec.replicas`, `metadata` (labels, annotations, finalizers) or `status` is
  allowed: it does not change what runs (this is also how break-glass annotations are added);
- bare Pods (kubectl delete pod, debug pods): not a rollout;
- the control plane's own controllers (exemptUsers, exemptGroups), so that a rollout under way when a
  window starts finishes, CronJobs still start their Jobs and the garbage collector still collects.
  Deployers such as Argo CD or Flux are ordinary service accounts and are frozen like people.
Break-glass, allowed with a warning and the audit annotation `change-freeze.break-glass` (JSON: who,
how, why, which windows, what): a user in one of breakGlassGroups, or the annotation
`rollout.webhook.dev/break-glass: "<reason>"` (non-blank) on the object (on DELETE: on the object being
deleted, e.g. `kubectl annotate deployment web rollout.webhook.dev/break-glass="INC-123: ..."` first).
Anyone allowed to write the workload can break glass with the annotation: the freeze guards against
accidents, and the audit log answers for the rest (set allowBreakGlassAnnotation: false to accept only the
groups). Remove the annotation after the emergency: while it is there, every later change during a
freeze is let through (each one warned about and audited).
Time: the request's time (`request.now`). Windows are local wall-clock times in an IANA time zone, so
"Fri 16:00" stays 16:00 across daylight-saving switches. A window's start is inside it, its end is not.
Parameters (PARAMS below; edit them here, a broken value is a load error that `webhook lint` reports):
- windows: a list of
  - dated windows: {name, start, end, timeZone?}; start/end are `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM[:SS]`
    (an offset such as `+01:00` fixes the instant itself); a date-only start means 00:00 and a date-only
    end includes that whole day, so start 2026-12-18T12:00, end 2027-01-04 (the default) freezes from the
    last Friday noon before the holidays until 2027-01-05 00:00 Berlin time;
  - weekly windows: {name, weekly: {start: "Fri 16:00", end: "Mon 08:00"}, timeZone?}.
  A window without timeZone uses the namespace's annotation `rollout.webhook.dev/time-zone` (teams in
  other places freeze their own Friday evening), else params timeZone.
- timeZone: the default IANA zone (Europe/Berlin).
- breakGlassGroups: groups whose members may change workloads during a window (rollout-break-glass).
- allowBreakGlassAnnotation: whether the annotation breaks glass (true).
- exemptUsers / exemptGroups: never frozen (the controller manager, kube-system service accounts, nodes).
- noticeMinutes: a write allowed within this many minutes before a window starts gets a warning (60; 0 off).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from webhook import AdmissionRequest, audit, deny, validating, warn

BREAK_GLASS_ANNOTATION = "rollout.webhook.dev/break-glass"
TIME_ZONE_ANNOTATION = "rollout.webhook.dev/time-zone"

PARAMS: dict[str, Any] = {
    "timeZone": "Europe/Berlin",
    "windows": [
        {"name": "year-end-2026", "start": "2026-12-18T12:00", "end": "2027-01-04", "timeZone": "Europe/Berlin"},
        {"name": "weekend", "weekly": {"start": "Fri 16:00", "end": "Mon 08:00"}},
    ],
    "breakGlassGroups": ["rollout-break-glass"],
    "allowBreakGlassAnnotation": True,
    "exemptUsers": ["system:kube-controller-manager"],
    "exemptGroups": ["system:serviceaccounts:kube-system", "system:nodes"],
    "noticeMinutes": 60,
}

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKLY = re.compile(r"^\s*([A-Za-z]+)\s+(\d{1,2}):(\d{2})\s*$")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_UTC = dt.UTC


@dataclass(frozen=True)
class Dated:
    name: str
    start: dt.datetime  # aware
    end: dt.datetime  # aware, exclusive
    zone: ZoneInfo


@dataclass(frozen=True)
class Weekly:
    name: str
    start_day: int
    start_time: dt.time
    end_day: int
    end_time: dt.time
    zone: ZoneInfo | None  # None: the namespace's zone, else params timeZone
    text: str  # "Fri 16:00 to Mon 08:00"


@dataclass(frozen=True)
class Occurrence:
    window: str
    start: dt.datetime
    end: dt.datetime
    zone: ZoneInfo
    text: str


def _zone(name: Any, where: str) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise ValueError(f"change-freeze: {where}: timeZone must be an IANA zone name such as Europe/Berlin")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"change-freeze: {where}: unknown time zone {name!r}") from error


def _instant(text: Any, zone: ZoneInfo, where: str, *, end: bool) -> dt.datetime:
    if not isinstance(text, str):
        raise ValueError(f"change-freeze: {where} must be a string like 2026-12-20 or 2026-12-20T16:00")
    try:
        if _DATE_ONLY.match(text):
            day = dt.date.fromisoformat(text) + dt.timedelta(days=1 if end else 0)
            return dt.datetime.combine(day, dt.time(), tzinfo=zone)
        moment = dt.datetime.fromisoformat(text)
    except ValueError as error:
        raise ValueError(f"change-freeze: {where}: {text!r} is not YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]") from error
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def _day_time(text: Any, where: str) -> tuple[int, dt.time]:
    match = _WEEKLY.match(text) if isinstance(text, str) else None
    day = match.group(1).lower() if match else ""
    days = [i for i, full in enumerate(_FULL_DAYS) if len(day) >= 3 and full.startswith(day)]
    if not match or not days or int(match.group(2)) > 23 or int(match.group(3)) > 59:
        raise ValueError(f"change-freeze: {where}: {text!r} must be a weekday and a 24-hour time, like 'Fri 16:00'")
    return days[0], dt.time(int(match.group(2)), int(match.group(3)))


def compile_windows(params: Any) -> tuple[ZoneInfo, list[Dated | Weekly]]:
    """The windows of the params, checked; raises ValueError naming what is wrong."""
    if not isinstance(params, dict):
        raise ValueError("change-freeze: params must be a map")
    default_zone = _zone(params.get("timeZone", "UTC"), "params.timeZone")
    windows: list[Dated | Weekly] = []
    names: set[str] = set()
    for index, item in enumerate(params.get("windows") or []):
        where = f"windows[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise ValueError(f"change-freeze: {where} needs a name")
        name = item["name"]
        if name in names:
            raise ValueError(f"change-freeze: {where}: the name {name!r} is used twice")
        names.add(name)
        where = f"window {name!r}"
        zone = _zone(item["timeZone"], where) if "timeZone" in item else None
        if "weekly" in item:
            if "start" in item or "end" in item or not isinstance(item["weekly"], dict):
                raise ValueError(f"change-freeze: {where}: give weekly: {{start, end}} or start and end, not both")
            start_day, start_time = _day_time(item["weekly"].get("start"), f"{where}: weekly.start")
            end_day, end_time = _day_time(item["weekly"].get("end"), f"{where}: weekly.end")
            if (start_day, start_time) == (end_day, end_time):
                raise ValueError(f"change-freeze: {where}: weekly start and end are the same moment")
            text = f"{_DAYS[start_day].title()} {start_time:%H:%M} to {_DAYS[end_day].title()} {end_time:%H:%M}"
            windows.append(Weekly(name, start_day, start_time, end_day, end_time, zone, text))
        else:
            zone = zone or default_zone
            start = _instant(item.get("start"), zone, f"{where}: start", end=False)
            end = _instant(item.get("end"), zone, f"{where}: end", end=True)
            if end <= start:
                raise ValueError(f"change-freeze: {where}: end must be after start")
            windows.append(Dated(name, start.astimezone(zone), end.astimezone(zone), zone))
    for key in ("breakGlassGroups", "exemptUsers", "exemptGroups"):
        value = params.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"change-freeze: params.{key} must be a list of strings")
    notice = params.get("noticeMinutes", 0)
    if not isinstance(notice, int) or isinstance(notice, bool) or notice < 0:
        raise ValueError("change-freeze: params.noticeMinutes must be a whole number of minutes, 0 or more")
    return default_zone, windows


compile_windows(PARAMS)  # a mistake in PARAMS is a load error (webhook lint), not a fault on every request


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(_UTC)


def _weekly_bounds(window: Weekly, zone: ZoneInfo, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The occurrence that starts on `day` (a day of the window's start weekday), as local wall-clock times."""
    length = (window.end_day - window.start_day) % 7
    if length == 0 and window.end_time <= window.start_time:
        length = 7
    start = dt.datetime.combine(day, window.start_time, tzinfo=zone)
    end = dt.datetime.combine(day + dt.timedelta(days=length), window.end_time, tzinfo=zone)
    return start, end


def _occurrences(windows: list[Dated | Weekly], zone_for_weekly: ZoneInfo, now: dt.datetime,
                 ahead: dt.timedelta) -> tuple[list[Occurrence], list[Occurrence]]:
    """(windows in effect at `now`, windows starting within `ahead` of it)."""
    active: list[Occurrence] = []
    upcoming: list[Occurrence] = []
    for window in windows:
        if isinstance(window, Dated):
            occurrence = Occurrence(window.name, window.start, window.end, window.zone,
                                    f"{window.start:%Y-%m-%d %H:%M} to {window.end:%Y-%m-%d %H:%M}")
            if _utc(window.start) <= now < _utc(window.end):
                active.append(occurrence)
            elif now < _utc(window.start) <= now + ahead:
                upcoming.append(occurrence)
            continue
        zone = window.zone or zone_for_weekly
        today = now.astimezone(zone).date()
        # an occurrence lasts at most a week, so those starting in the neighbouring weeks are all there is
        days = (today + dt.timedelta(days=offset) for offset in range(-8, 9))
        spans = [_weekly_bounds(window, zone, day) for day in days if day.weekday() == window.start_day]
        current = next(((s, e) for s, e in spans if _utc(s) <= now < _utc(e)), None)
        if current is not None:
            active.append(Occurrence(window.name, current[0], current[1], zone, window.text))
            continue
        following = next(((s, e) for s, e in spans if now < _utc(s)), None)
        if following is not None and _utc(following[0]) <= now + ahead:
            upcoming.append(Occurrence(window.name, following[0], following[1], zone, window.text))
    return active, upcoming


def _when(moment: dt.datetime) -> str:
    return f"{moment:%a %Y-%m-%d %H:%M} {moment.tzname()}"


def _describe(occurrence: Occurrence) -> str:
    return f"{occurrence.window!r} ({occurrence.text} {occurrence.zone.key})"


def _changes_what_runs(old: Any, new: Any) -> bool:
    """False when an UPDATE touches only spec.replicas, metadata or status."""
    old_spec = dict((old or {}).get("spec") or {})
    new_spec = dict((new or {}).get("spec") or {})
    old_spec.pop("replicas", None)
    new_spec.pop("replicas", None)
    return old_spec != new_spec


def _namespace_zone(request: AdmissionRequest, default: ZoneInfo) -> tuple[ZoneInfo, str | None]:
    annotations = ((request.namespace_object or {}).get("metadata") or {}).get("annotations") or {}
    name = annotations.get(TIME_ZONE_ANNOTATION)
    if not name:
        return default, None
    try:
        return ZoneInfo(str(name).strip()), None
    except (ZoneInfoNotFoundError, ValueError):
        return default, (f"namespace {request.namespace} has {TIME_ZONE_ANNOTATION}: {name!r}, which is not an IANA "
                         f"time zone; using {default.key}")


@validating("change-freeze", resources=["deployments", "statefulsets", "daemonsets", "replicasets", "jobs",
                                        "cronjobs"],
            api_groups=["apps", "batch"], api_versions=["v1"], operations=["CREATE", "UPDATE", "DELETE"],
            namespace_selector={"matchLabels": {"environment": "production"}}, params=PARAMS)
def change_freeze(request: AdmissionRequest):
    params = request.params
    user = request.user_info
    if user.username in params.get("exemptUsers", []) or set(user.groups) & set(params.get("exemptGroups", [])):
        return None
    if request.operation == "UPDATE" and not _changes_what_runs(request.old_object, request.object):
        return None
    default_zone, windows = compile_windows(params)
    zone, zone_problem = _namespace_zone(request, default_zone)
    now = _utc(request.now)
    ahead = dt.timedelta(minutes=params.get("noticeMinutes", 0))
    active, upcoming = _occurrences(windows, zone, now, ahead)
    results: list[Any] = [warn(zone_problem)] if zone_problem else []
    subject = request.object if request.operation != "DELETE" else request.old_object
    kind = (subject or {}).get("kind") or request.kind.kind
    name = request.name or f"{((subject or {}).get('metadata') or {}).get('generateName', '')}*"
    what = f"{request.operation} of {kind} {request.namespace}/{name}"
    if not active:
        for occurrence in upcoming:
            minutes = max(1, int((_utc(occurrence.start) - now).total_seconds() // 60))
            results.append(warn(f"change freeze {_describe(occurrence)} starts {_when(occurrence.start)}, in "
                                f"{minutes} min; workload changes will be refused then"))
        return results
    names = ", ".join(_describe(o) for o in active)
    until = _when(max(active, key=lambda o: _utc(o.end)).end)
    annotations = ((subject or {}).get("metadata") or {}).get("annotations") or {}
    reason = str(annotations.get(BREAK_GLASS_ANNOTATION) or "").strip()
    groups = [g for g in params.get("breakGlassGroups", []) if g in user.groups]
    if groups or (reason and params.get("allowBreakGlassAnnotation", True)):
        via = f"group {groups[0]}" if groups else f"annotation {BREAK_GLASS_ANNOTATION}"
        record = {"user": user.username, "via": via, "reason": reason[:512], "windows": [o.window for o in active],
                  "operation": request.operation, "object": f"{kind} {request.namespace}/{name}",
                  "at": now.isoformat()}
        results.append(audit("break-glass", json.dumps(record, sort_keys=True)))
        short = ", ".join(repr(o.window) for o in active)
        results.append(warn(f"break-glass by {user.username} ({via}): {what} allowed during change freeze {short}; "
                            "recorded for audit"
                            + ("" if reason else f"; put the reason in the annotation {BREAK_GLASS_ANNOTATION}")))
        return results
    glass = ", ".join(params.get("breakGlassGroups", []))
    how = (f"set the annotation {BREAK_GLASS_ANNOTATION}: \"<reason>\" on the object (recorded for audit)"
           if params.get("allowBreakGlassAnnotation", True) else "")
    if glass:
        how = (how + " or " if how else "") + f"have a member of {glass} make the change"
    results.append(deny(f"change freeze {names} is in effect until {until}: {what} is not allowed. Wait until then"
                        + (f"; for an emergency, {how}" if how else "")))
    return results
