"""What params cost per request: a ValidatingAdmissionPolicy evaluated with 1 or 3 params objects, on every engine.

    .venv/bin/python bench/params_cost.py [--requests 3000]

In-process (the admission pipeline without HTTP): the policy directory is written to a temporary directory and
loaded as the server loads it; each request is a Pod review parsed from JSON, as on the wire. Prints the median
and p90 per request for: the policy with no params, with a paramRef by name (1 object), and with a selector
matching 3 objects (the policy is evaluated once per object, as the API server does).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from webhook.admission import admit
from webhook.policies.cel import ENGINE_NAMES, make_engine
from webhook.policies.loader import load_policy_set
from webhook.reviews import parse_review

POLICY = """\
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: registries}}
spec:
  {param_kind}
  matchConstraints:
    resourceRules: [{{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [pods]}}]
  validations:
    - expression: "object.spec.containers.all(c, !c.image.startsWith({prefix}))"
      messageExpression: "'image registry not allowed'"
    - expression: "object.spec.containers.all(c, has(c.resources) && has(c.resources.limits))"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: registries}}
spec:
  policyName: registries
  validationActions: [Deny]
  {param_ref}
"""
RULE = """\
---
apiVersion: policy.example.com/v1
kind: RegistryRule
metadata: {{name: rule-{index}, labels: {{set: registries}}}}
forbidden: "bad{index}.example.com/"
"""
VARIANTS = {
    "no params": ("", "", "'bad.example.com/'", 0),
    "paramRef by name (1 object)": ("paramKind: {apiVersion: policy.example.com/v1, kind: RegistryRule}",
                                    "paramRef: {name: rule-0, parameterNotFoundAction: Deny}", "params.forbidden", 1),
    "paramRef selector (3 objects)": ("paramKind: {apiVersion: policy.example.com/v1, kind: RegistryRule}",
                                      "paramRef: {selector: {matchLabels: {set: registries}}, "
                                      "parameterNotFoundAction: Deny}", "params.forbidden", 3),
}


def review_body() -> bytes:
    containers = [{"name": f"c{i}", "image": f"registry.example.com/app{i}:1.{i}",
                   "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}} for i in range(3)]
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": str(uuid.uuid4()), "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "default", "name": "web",
        "operation": "CREATE", "userInfo": {"username": "alice"},
        "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"},
                   "spec": {"containers": containers}}}}).encode()


def measure(engine_name: str, variant: str, requests: int) -> tuple[float, float]:
    param_kind, param_ref, prefix, objects = VARIANTS[variant]
    with tempfile.TemporaryDirectory() as directory:
        text = POLICY.format(param_kind=param_kind, param_ref=param_ref, prefix=prefix)
        text += "".join(RULE.format(index=index) for index in range(max(objects, 1) if param_kind else 0))
        (Path(directory) / "policy.yaml").write_text(text)
        policy_set = load_policy_set(Path(directory), engine=make_engine(engine_name))
    body = review_body()
    timings = []
    for index in range(requests + 200):
        started = time.perf_counter()
        parsed, raw = parse_review(body)
        decision = admit(policy_set, parsed.request, raw, phase="validate")
        elapsed = time.perf_counter() - started
        assert decision.allowed, decision.message
        if index >= 200:
            timings.append(elapsed * 1e6)
    timings.sort()
    return statistics.median(timings), timings[int(len(timings) * 0.9)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    arguments = parser.parse_args()
    print(f"{'engine':16} {'variant':32} {'median µs':>10} {'p90 µs':>8}")
    for engine_name in ENGINE_NAMES:
        for variant in VARIANTS:
            median, p90 = measure(engine_name, variant, arguments.requests if engine_name == "cel-expr-python"
                                  else max(arguments.requests // 10, 100))
            print(f"{engine_name:16} {variant:32} {median:10.1f} {p90:8.1f}")
            print(json.dumps({"engine": engine_name, "variant": variant, "median_us": round(median, 1),
                              "p90_us": round(p90, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
