"""no-image-downgrade: in production, an UPDATE may not lower a container's image version, unless asked to.

Why: a stale CI pipeline, a re-run of an old deploy job or a merge of an old branch quietly rolls production
back; schema migrations and data written by the newer version may not survive that. A deliberate rollback
stays one annotation away, and is recorded.
Applies to: UPDATE of Pods and of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs in
namespaces labelled `environment: production` (downgrades are routine elsewhere).
What counts as a downgrade: for each container and init container present (by name) in both the old and the
new object, with the same repository (`nginx` and `docker.io/library/nginx` are the same), when both tags
are versions and the new one is lower. A version is `[v]MAJOR.MINOR[.PATCH]` with an optional `-suffix` and
`+build` (`1.4.0`, `v2.3`, `1.25-alpine`, `16.4.0-bookworm`): they are compared on the parts both have
(`1.25` against `1.25.3` compares 1.25 with 1.25, since a minor-version tag follows its newest patch);
suffixes are not compared (`-alpine` is a variant, not a pre-release), nor are single numbers (`20`, which
may as well be a build number or a commit hash), `latest`, commit hashes, dates without dots or digests
alone. A digest next to a tag (`:1.4.0@sha256:...`) does not hide the tag.
Override: the annotation `rollout.webhook.dev/allow-downgrade: "<reason>"` (any non-blank value except
"false", e.g. "true" or "INC-4711 roll back 1.5.0") on the object being updated (the Deployment, not its
pod template) allows it, with a warning and the audit annotation `no-image-downgrade.downgrade` (JSON:
who, why, what). For `kubectl rollout undo`, annotate first:
`kubectl annotate deployment web rollout.webhook.dev/allow-downgrade="INC-4711"`, then undo; remove the
annotation afterwards, since every later downgrade is let through while it is there.
Parameters: none (the versions rule is fixed; the scope is the namespace selector below).
"""

from __future__ import annotations

import json
import re
from typing import Any

from webhook import AdmissionRequest, audit, deny, pod_spec, validating, warn

ALLOW_ANNOTATION = "rollout.webhook.dev/allow-downgrade"
_TAG = re.compile(r":([^:/]*)$")
_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")


def split_image(image: str) -> tuple[str, str]:
    """(repository in its full form, tag or ''): `nginx:1.27@sha256:...` -> ('docker.io/library/nginx', '1.27')."""
    reference = image.split("@", 1)[0]
    match = _TAG.search(reference)
    repository, tag = (reference[:match.start()], match.group(1)) if match else (reference, "")
    first, slash, rest = repository.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        if first in ("index.docker.io", "registry-1.docker.io"):
            repository = f"docker.io/{rest}"
    else:
        repository = f"docker.io/{repository}" if slash else f"docker.io/library/{repository}"
    return repository.lower(), tag


def version(tag: str) -> tuple[int, ...] | None:
    """(major, minor[, patch]) of a version tag, None for anything else."""
    match = _VERSION.match(tag)
    if match is None:
        return None
    return tuple(int(part) for part in match.groups() if part is not None)


def is_downgrade(old_tag: str, new_tag: str) -> bool:
    old, new = version(old_tag), version(new_tag)
    if old is None or new is None:
        return False
    common = min(len(old), len(new))
    return new[:common] < old[:common]


def _images(spec: Any) -> dict[str, str]:
    found: dict[str, str] = {}
    for field in ("initContainers", "containers"):
        for container in (spec or {}).get(field) or []:
            if isinstance(container, dict) and isinstance(container.get("image"), str):
                found[f"{field}/{container.get('name')}"] = container["image"]
    return found


@validating("no-image-downgrade", resources=["pods"], api_groups=[""], api_versions=["v1"], operations=["UPDATE"],
            namespace_selector={"matchLabels": {"environment": "production"}}, pod_templates=True)
def no_image_downgrade(request: AdmissionRequest):
    old_images = _images(pod_spec(request.old_object))
    downgrades = []
    for key, image in _images(pod_spec(request.object)).items():
        before = old_images.get(key)
        if before is None or before == image:
            continue
        (old_repository, old_tag), (new_repository, new_tag) = split_image(before), split_image(image)
        if old_repository == new_repository and is_downgrade(old_tag, new_tag):
            downgrades.append((key.partition("/")[2], before, old_tag, new_tag))
    if not downgrades:
        return None
    changes = [f"{name} {old_tag} -> {new_tag}" for name, _, old_tag, new_tag in downgrades]
    annotations = (request.object.get("metadata") or {}).get("annotations") or {}
    reason = str(annotations.get(ALLOW_ANNOTATION) or "").strip()
    kind = request.object.get("kind") or request.kind.kind
    if reason and reason.lower() != "false":
        record = {"user": request.user_info.username, "reason": reason[:512], "changes": changes,
                  "object": f"{kind} {request.namespace}/{request.name}"}
        return [audit("downgrade", json.dumps(record, sort_keys=True)),
                warn(f"image downgrade allowed by {ALLOW_ANNOTATION} ({', '.join(changes)}); recorded for audit; "
                     "remove the annotation when the rollback is done")]
    details = "; ".join(f"container {name}: {new_tag} is lower than the running {old_tag} ({before})"
                        for name, before, old_tag, new_tag in downgrades)
    return deny(f"image version downgrade in {kind} {request.namespace}/{request.name}: {details}. Deploy "
                f"{downgrades[0][2]} or newer; for a deliberate rollback set the annotation "
                f"{ALLOW_ANNOTATION}: \"<reason>\" on the {kind} (recorded for audit)")
