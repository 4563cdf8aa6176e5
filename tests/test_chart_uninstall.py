"""The chart's uninstall hook (templates/unregister-job.yaml): with registration.mode job, `helm uninstall` runs
`webhook register --delete` for the configurations the registration Job created, with a service account that may
delete only those. Checked without helm, as tests/test_chart.py does."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.test_chart import command_flags, container_args, enclosing_blocks, schema_errors, template, values

HOOK = "unregister-job.yaml"
_CONTROL_LINE = re.compile(r"^\s*\{\{-?.*?-?\}\}\s*$", re.MULTILINE)
_EXPRESSION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")


def _documents() -> list[dict[str, Any]]:
    """The hook's objects with every template action replaced by its text (control lines dropped): enough to
    read their structure."""
    text = re.sub(r"\{\{-?\s*/\*.*?\*/\s*-?\}\}", "", template(HOOK), flags=re.DOTALL)
    text = _CONTROL_LINE.sub("", text)
    text = _EXPRESSION.sub(lambda match: "TEMPLATE:" + re.sub(r"[\"\s]+", "_", match.group(1)), text)
    return [document for document in yaml.safe_load_all(text) if document]


def test_the_hook_exists_only_when_the_registration_job_created_the_configurations() -> None:
    assert enclosing_blocks(template(HOOK), "apiVersion:")[0] == \
        'if and (eq .Values.registration.mode "job") .Values.registration.job.deleteOnUninstall'
    assert values()["registration"]["job"]["deleteOnUninstall"] is True
    assert schema_errors({**values(), "registration": {"mode": "job", "job": {"deleteOnUninstall": "yes"}}})


def test_every_hook_object_runs_before_delete_and_the_rbac_comes_first() -> None:
    documents = _documents()
    assert [document["kind"] for document in documents] == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                                            "Job"]
    weights = []
    for document in documents:
        annotations = document["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-delete"
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        weights.append(int(annotations["helm.sh/hook-weight"]))
    assert max(weights[:3]) < weights[3]


def test_the_job_deletes_what_the_registration_job_registered() -> None:
    args = container_args(template(HOOK))
    assert args == ["- register", "- --delete", "- --name={{ .Values.webhooks.domain }}"]
    assert {"--delete", "--name"} <= command_flags("register")
    assert "- --name={{ .Values.webhooks.domain }}" in container_args(template("registration-job.yaml"))
    job = _documents()[3]
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "TEMPLATE:$name-unregister"
    assert pod["restartPolicy"] == "OnFailure"
    assert job["spec"]["activeDeadlineSeconds"] > 0  # an uninstall never waits for ever
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_hook_may_delete_only_the_two_named_configurations() -> None:
    role = _documents()[1]
    assert role["rules"] == [{"apiGroups": ["admissionregistration.k8s.io"],
                              "resources": ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"],
                              "resourceNames": ["TEMPLATE:.Values.webhooks.domain_|_quote"],
                              "verbs": ["get", "delete"]}]
    binding = _documents()[2]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == _documents()[0]["metadata"]["name"]
