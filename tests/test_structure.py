"""Layering and public API: imports point one way (edge -> pipeline -> policies -> models)."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import webhook

PACKAGE = Path(webhook.__file__).parent
# A module may import only modules of its own layer or lower ones.
LAYERS = [
    {"webhook.cli", "webhook.__main__"},
    {"webhook.cli_parser"},
    {"webhook.server"},
    # The background audit: its server loop and command, then its pieces (above admission and the events service).
    {"webhook.background_audit.service", "webhook.background_audit.command"},
    {"webhook.background_audit.ledger", "webhook.background_audit.reports"},
    {"webhook.background_audit.scan", "webhook.background_audit.leader"},
    {"webhook.background_audit.targets", "webhook.background_audit.api", "webhook.background_audit"},
    {"webhook.serving", "webhook.connections", "webhook.memory", "webhook.certtool", "webhook.registration",
     "webhook.testing", "webhook.cluster", "webhook.blast_radius", "webhook.registration_scope"},
    {"webhook.reflector"},
    {"webhook.admission"},
    {"webhook.events.service"},
    {"webhook.events.delivery"},
    {"webhook.events.outbox", "webhook.events.subscribers", "webhook.events.model", "webhook.events.spool",
     "webhook.events.telemetry",
     "webhook.events"},
    {"webhook.policies.store"},
    {"webhook.policies.loader", "webhook.policies.decision", "webhook.policies.directory_checks"},
    {"webhook.policies.evaluation", "webhook.policies.native", "webhook.policies.python_faults"},
    {"webhook.policies.compiled"},
    {"webhook.policies.matching", "webhook.policies.cel", "webhook.policies.cel_runtime", "webhook.policies.params"},
    {"webhook.policies.celpy_library", "webhook.policies.model", "webhook.reviews", "webhook.patches",
     "webhook.policies.scope",
     "webhook.policies.apply", "webhook.policies.deadline", "webhook.policies.k8s_library",
     "webhook.policies.k8s_quantity",
     "webhook.policies.k8s_text", "webhook.policies.k8s_network", "webhook.policies.k8s_values",
     "webhook.certs", "webhook.config", "webhook.metrics", "webhook", "webhook.authoring", "webhook.yamlsource"},
    # The CEL engine (webhook/cel): front end and planner, then the libraries, then values; the Kubernetes library
    # (webhook.cel.kubernetes.*) below the libraries that build on it.
    {"webhook.cel.environment"},
    {"webhook.cel.compiler", "webhook.cel.comprehensions", "webhook.cel.validators", "webhook.cel.codegen",
     "webhook.cel.codegen_operators"},
    {"webhook.cel.nodes", "webhook.cel.stdlib", "webhook.cel.ext_strings", "webhook.cel.ext_math",
     "webhook.cel.ext_encoders"},
    {"webhook.cel.kubernetes"},
    {"webhook.cel.ext_format", "webhook.cel.conversions", "webhook.cel.kubernetes.*"},
    {"webhook.cel.functions", "webhook.cel.memo", "webhook.cel.timefmt", "webhook.cel.values", "webhook.cel.proto",
     "webhook.cel.proto.*",
     "webhook.cel"},
    {"webhook.state"},
    {"webhook.errors", "webhook.policies"},
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(name: str) -> int:
    for index, layer in enumerate(LAYERS):
        if name in layer or any(entry.endswith(".*") and name.startswith(entry[:-1]) for entry in layer):
            return index
    raise AssertionError(f"module {name} is in no layer; add it to LAYERS")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("webhook"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("webhook"))
    return found


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        for imported in _imports(path):
            if _layer(imported) < _layer(name):
                wrong.append(f"{name} imports {imported}, a higher layer")
    assert wrong == []


def test_public_api_is_exported() -> None:
    assert sorted(webhook.__all__) == sorted(
        ["AdmissionRequest", "Allow", "Audit", "ClusterUnavailable", "Deny", "GroupVersionKind",
         "GroupVersionResource", "Patch", "UserInfo", "Warn", "allow", "audit", "deny", "helper_module", "mutating",
         "patch", "pod_metadata", "pod_spec", "pod_spec_path", "validating", "warn"])
    for name in webhook.__all__:
        assert getattr(webhook, name) is not None


def test_modules_stay_small() -> None:
    sizes = {_module_name(path): len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")}
    assert {name: size for name, size in sizes.items() if size > 500} == {}


def test_no_private_key_is_tracked() -> None:
    """Keys are generated at run time (0600) or come from Secrets; the repository never holds one."""
    root = PACKAGE.parent
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    tracked = [root / name for name in listed.decode().split("\0") if name]
    assert len(tracked) > 50  # the listing worked
    marker = b"PRIVATE " + b"KEY-----"  # spelt in two parts so that this file does not hold it
    holding = [str(path.relative_to(root)) for path in tracked if path.is_file() and marker in path.read_bytes()]
    assert holding == []
