"""AdmissionReview bodies and policy sets for the benchmarks (bench/throughput.py).

- `review_mix(count, seed)`: a realistic, reproducible mix of reviews: Pods, Deployments (1 to 5 containers),
  StatefulSets, DaemonSets, Jobs and CronJobs; CREATE and UPDATE (UPDATE carries `oldObject`); objects from
  about 2 KB to 200 KB (padded with container env vars, a `last-applied-configuration` annotation and
  ConfigMap-like data in an annotation, as real objects grow). Each review is built to hit one case of the
  shipped policies (`policies/`):

  - `clean`: pinned images, requests and limits set, no nodeName. Nothing denies it; a Deployment CREATE
    without `minReadySeconds` (half of them) is patched by `default-min-ready-seconds` on /mutate.
  - `latest-tag`: one container uses `:latest` or no tag: `disallow-latest-tag` denies on /validate.
  - `no-resources` (Pod CREATE): one container without resources: `require-requests-and-limits` denies on
    /validate, `default-resources` (Python) patches on /mutate.
  - `node-name` (Pod CREATE): `spec.nodeName` set by a user: `no-node-name` denies on /validate.
  - `node-name-system`: the same by a kube-system service account: skipped by `no-node-name`'s matchCondition.

  What the server actually answers is measured, not assumed: throughput.py sends each body once to
  /validate and /mutate and prints the share of each outcome.
- `sized_pod_review(size)`: one allowed Pod CREATE whose object is about `size` bytes.
- `scaling_policies(total, matching)`: `total` generated CEL policies of which `matching` match the Pod of
  `scaling_review()` and the rest match other resources (ConfigMaps, Secrets, Services, Deployments, Jobs,
  Ingresses...), for the cost of non-matching policies.

Every body is ASCII JSON on one line whose first `"uid":"` is `request.uid` (36 characters), so that load
generators can splice a fresh uid into each request (bench/wrk_reviews.lua, bench/openloop.mjs).
"""

from __future__ import annotations

import copy
import json
import random
import uuid
from dataclasses import dataclass
from typing import Any

KINDS: dict[str, tuple[str, str, str]] = {  # kind -> (group, version, resource)
    "Pod": ("", "v1", "pods"),
    "Deployment": ("apps", "v1", "deployments"),
    "StatefulSet": ("apps", "v1", "statefulsets"),
    "DaemonSet": ("apps", "v1", "daemonsets"),
    "Job": ("batch", "v1", "jobs"),
    "CronJob": ("batch", "v1", "cronjobs"),
}
KIND_WEIGHTS = {"Pod": 40, "Deployment": 30, "StatefulSet": 10, "DaemonSet": 5, "Job": 8, "CronJob": 7}
# object size buckets (bytes, lower and upper bound) and their weights: most objects are a few KB
SIZE_BUCKETS = [((2_000, 6_000), 55), ((6_000, 25_000), 30), ((25_000, 80_000), 12), ((80_000, 200_000), 3)]
NAMESPACES = ["default", "prod", "team-a", "team-b", "payments", "kube-system"]
USERS = [
    ("alice@example.com", ["system:authenticated", "devs"]),
    ("system:serviceaccount:argocd:argocd-application-controller",
     ["system:serviceaccounts", "system:serviceaccounts:argocd", "system:authenticated"]),
    ("system:serviceaccount:kube-system:replicaset-controller",
     ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]),
    ("bob@example.com", ["system:authenticated", "ops"]),
]
REGISTRY = "registry.example.com"


@dataclass(frozen=True, slots=True)
class Review:
    """One prepared review: what it is meant to exercise, and its body."""

    kind: str
    operation: str
    case: str
    containers: int
    object_bytes: int
    body: bytes


def _container(rng: random.Random, index: int, *, image: str, resources: bool) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": f"app-{index}", "image": image, "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": 8080 + index, "protocol": "TCP"}],
        "env": [{"name": "LOG_LEVEL", "value": rng.choice(["info", "debug", "warn"])},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080 + index}, "periodSeconds": 10},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/app", "readOnly": True}],
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                            "capabilities": {"drop": ["ALL"]}},
    }
    if resources:
        container["resources"] = {"requests": {"cpu": f"{rng.choice([50, 100, 250, 500])}m",
                                               "memory": f"{rng.choice([64, 128, 256, 512])}Mi"},
                                  "limits": {"memory": f"{rng.choice([256, 512, 1024])}Mi"}}
    return container


def _pod_spec(rng: random.Random, *, containers: int, case: str, kind: str) -> dict[str, Any]:
    images = [f"{REGISTRY}/team/app{i}:1.{rng.randint(0, 40)}.{rng.randint(0, 9)}" for i in range(containers)]
    if case == "latest-tag":
        bad = rng.randrange(containers)
        images[bad] = rng.choice([f"{REGISTRY}/team/app{bad}:latest", "nginx:latest", "busybox", "redis"])
    spec: dict[str, Any] = {
        "containers": [_container(rng, i, image=image, resources=not (case == "no-resources" and i == 0))
                       for i, image in enumerate(images)],
        "volumes": [{"name": "config", "configMap": {"name": "app-config"}}],
        "serviceAccountName": "app",
        "terminationGracePeriodSeconds": 30,
        "securityContext": {"runAsUser": 1000, "fsGroup": 2000},
    }
    if rng.random() < 0.3:
        spec["initContainers"] = [_container(rng, 9, image=f"{REGISTRY}/tools/migrate:2.{rng.randint(0, 9)}",
                                             resources=True)]
    if kind in ("Job", "CronJob"):
        spec["restartPolicy"] = "OnFailure"
    if case in ("node-name", "node-name-system"):
        spec["nodeName"] = f"node-{rng.randint(1, 40)}"
    return spec


def _object(rng: random.Random, kind: str, *, name: str, namespace: str, containers: int, case: str,
            operation: str) -> dict[str, Any]:
    group, version, _ = KINDS[kind]
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "shop", "team": rng.choice("abc")}
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels,
                                "annotations": {"example.com/owner": "platform"}}
    if operation == "UPDATE":
        metadata.update(uid=str(uuid.UUID(int=rng.getrandbits(128))), resourceVersion=str(rng.randint(1, 10**7)),
                        generation=rng.randint(1, 50), creationTimestamp="2026-11-01T10:00:00Z")
    pod_spec = _pod_spec(rng, containers=containers, case=case, kind=kind)
    template = {"metadata": {"labels": labels}, "spec": pod_spec}
    spec: dict[str, Any]
    if kind == "Pod":
        spec = pod_spec
    elif kind == "CronJob":
        spec = {"schedule": "*/15 * * * *", "concurrencyPolicy": "Forbid",
                "jobTemplate": {"spec": {"backoffLimit": 3, "template": template}}}
    elif kind == "Job":
        spec = {"backoffLimit": 3, "completions": 1, "template": template}
    else:
        spec = {"selector": {"matchLabels": {"app.kubernetes.io/name": name}}, "template": template}
        if kind != "DaemonSet":
            spec["replicas"] = rng.choice([1, 2, 3, 5])
        if kind == "StatefulSet":
            spec["serviceName"] = name
            spec["volumeClaimTemplates"] = [{"metadata": {"name": "data"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}}]
        if kind == "Deployment" and rng.random() < 0.5:
            spec["minReadySeconds"] = 15  # the other half is mutated on CREATE by default-min-ready-seconds
    return {"apiVersion": f"{group}/{version}" if group else version, "kind": kind, "metadata": metadata,
            "spec": spec}


def _size(obj: Any) -> int:
    return len(json.dumps(obj, separators=(",", ":")))


def _containers_of(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj["spec"]
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]["template"]["spec"]
    elif obj["kind"] != "Pod":
        spec = spec["template"]["spec"]
    containers: list[dict[str, Any]] = spec["containers"]
    return containers


def pad(obj: dict[str, Any], target: int, rng: random.Random) -> dict[str, Any]:
    """Grow `obj` to about `target` bytes of JSON, as real objects grow: env vars in the containers, a
    `kubectl.kubernetes.io/last-applied-configuration` annotation, then ConfigMap-like data in an annotation."""
    containers = _containers_of(obj)
    index = 0
    while _size(obj) < min(target, 2_500 + 1_500 * len(containers)) and index < 400:  # up to ~15 env vars each
        for container in containers:
            container["env"].append({"name": f"FEATURE_FLAG_{index:03d}",
                                     "value": rng.choice(["true", "false", "enabled", f"v{index}"])})
        index += 1
    annotations = obj["metadata"]["annotations"]
    if 2 * _size(obj) + 100 < target:
        annotations["kubectl.kubernetes.io/last-applied-configuration"] = json.dumps(obj, separators=(",", ":"))
    missing = target - _size(obj)
    if missing > 0:
        lines: list[str] = []
        length = 0
        while length < missing - 60:
            lines.append(f"app.setting.{len(lines):05d}=value-{rng.getrandbits(40):010x}")
            length += len(lines[-1]) + 1
        annotations["config.example.com/application.properties"] = "\n".join(lines)
    return obj


def review_body(*, kind: str, operation: str, obj: dict[str, Any] | None, old: dict[str, Any] | None,
                namespace: str, name: str, user: tuple[str, list[str]], uid: str) -> bytes:
    group, version, resource = KINDS[kind]
    gvk = {"group": group, "version": version, "kind": kind}
    gvr = {"group": group, "version": version, "resource": resource}
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
        "name": name, "namespace": namespace, "operation": operation,
        "userInfo": {"username": user[0], "groups": user[1]},
        "object": obj, "oldObject": old, "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": f"{operation.title()}Options",
                    "fieldManager": "kubectl-client-side-apply"}}}
    body = json.dumps(review, separators=(",", ":")).encode("ascii")
    assert len(uid) == 36
    assert body.index(b'"uid":"') == body.index(b'"uid":"' + uid.encode())  # the first uid is request.uid
    return body


def _weighted(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def review_mix(count: int = 200, seed: int = 20261123) -> list[Review]:
    """`count` reviews, reproducible for a seed; see the module docstring for the cases."""
    rng = random.Random(seed)
    reviews = []
    for number in range(count):
        kind = _weighted(rng, KIND_WEIGHTS)
        operation = "UPDATE" if rng.random() < 0.35 else "CREATE"
        cases = {"clean": 70, "latest-tag": 15}
        if kind == "Pod" and operation == "CREATE":
            cases.update({"no-resources": 25, "node-name": 6, "node-name-system": 4})
        case = _weighted(rng, cases)
        containers = rng.randint(1, 5) if kind == "Deployment" else rng.choice([1, 1, 2, 3])
        (low, high), = rng.choices([bucket for bucket, _ in SIZE_BUCKETS], weights=[w for _, w in SIZE_BUCKETS])
        if number == 0:
            low = high = 200_000  # the largest object is always in the mix
        target = int(low * (high / low) ** rng.random())  # log-uniform inside the bucket
        name = f"{kind.lower()}-{number:04d}"
        namespace = rng.choice(NAMESPACES[:-1]) if rng.random() < 0.95 else "kube-system"
        user = USERS[2] if case == "node-name-system" else rng.choice([USERS[0], USERS[1], USERS[3]])
        obj = pad(_object(rng, kind, name=name, namespace=namespace, containers=containers, case=case,
                          operation=operation), target, rng)
        old = None
        if operation == "UPDATE":
            old = copy.deepcopy(obj)
            # the old object differed in its first image and its generation (a rollout)
            _containers_of(old)[0]["image"] = f"{REGISTRY}/team/app0:0.9.{rng.randint(0, 9)}"
            old["metadata"]["generation"] = obj["metadata"]["generation"] - 1
        body = review_body(kind=kind, operation=operation, obj=obj, old=old, namespace=namespace, name=name,
                           user=user, uid=str(uuid.UUID(int=rng.getrandbits(128), version=4)))
        reviews.append(Review(kind=kind, operation=operation, case=case, containers=containers,
                              object_bytes=_size(obj), body=body))
    return reviews


def sized_pod_review(size: int, seed: int = 7) -> bytes:
    """One allowed Pod CREATE (3 pinned containers with resources) whose object is about `size` bytes."""
    rng = random.Random(seed)
    obj = pad(_object(rng, "Pod", name="sized", namespace="default", containers=3, case="clean",
                      operation="CREATE"), size, rng)
    return review_body(kind="Pod", operation="CREATE", obj=obj, old=None, namespace="default", name="sized",
                       user=USERS[0], uid=str(uuid.UUID(int=rng.getrandbits(128), version=4)))


def scaling_review() -> bytes:
    """The Pod the generated policies of `scaling_policies` are measured with (about 2 KB, allowed)."""
    return sized_pod_review(2_000, seed=11)


_POLICY = """\
apiVersion: webhook.dev/v1alpha1
kind: Policy
metadata:
  name: {name}
spec:
  matchConstraints:
    resourceRules:
      - apiGroups: ["{group}"]
        apiVersions: ["v1"]
        operations: ["CREATE", "UPDATE"]
        resources: ["{resource}"]
  validations:
    - expression: >-
        {expression}
      message: {name} failed
---
"""
# Pod checks: all pass for scaling_review()'s Pod
MATCHING = [
    "object.spec.containers.all(c, !c.image.endsWith(':latest'))",
    "!has(object.spec.nodeName)",
    "object.spec.containers.all(c, !has(c.securityContext) || !has(c.securityContext.privileged) || "
    "!c.securityContext.privileged)",
    "object.spec.containers.all(c, has(c.resources) && has(c.resources.requests))",
    "size(object.metadata.name) <= 63",
    "!has(object.spec.hostNetwork) || !object.spec.hostNetwork",
    "object.spec.containers.all(c, c.image.startsWith('registry.example.com/'))",
    "size(object.spec.containers) <= 10",
]
# Policies for everything but Pods: (group, resource, expression)
OTHERS = [
    ("", "configmaps", "!has(object.data) || size(object.data) <= 100"),
    ("", "secrets", "!has(object.type) || object.type != 'kubernetes.io/dockercfg'"),
    ("", "services", "!has(object.spec.type) || object.spec.type != 'NodePort'"),
    ("apps", "deployments", "!has(object.spec.replicas) || object.spec.replicas <= 50"),
    ("batch", "jobs", "!has(object.spec.backoffLimit) || object.spec.backoffLimit <= 10"),
    ("networking.k8s.io", "ingresses", "!has(object.spec.rules) || size(object.spec.rules) <= 20"),
    ("", "persistentvolumeclaims", "has(object.spec.storageClassName)"),
    ("rbac.authorization.k8s.io", "rolebindings", "object.roleRef.kind != 'ClusterRole'"),
]


def scaling_policies(total: int, matching: int = 5) -> str:
    """YAML of `total` CEL policies: `matching` for Pods (see MATCHING), the rest for other resources."""
    parts = []
    for index in range(total):
        if index < matching:
            expression = MATCHING[index % len(MATCHING)]
            parts.append(_POLICY.format(name=f"pod-check-{index:03d}", group="", resource="pods",
                                        expression=expression))
        else:
            group, resource, expression = OTHERS[index % len(OTHERS)]
            parts.append(_POLICY.format(name=f"other-{resource}-{index:03d}", group=group, resource=resource,
                                        expression=expression))
    return "".join(parts)
