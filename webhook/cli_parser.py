"""The `webhook` command line's parser: every subcommand and flag, with defaults from WEBHOOK_* variables."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from webhook.cel.environment import parse_version, version_text
from webhook.cel.kubernetes import NEWEST_VERSION
from webhook.certs import KEY_ALGORITHMS
from webhook.config import DEFAULT_MAX_BODY_BYTES
from webhook.policies.cel import DEFAULT_ENGINE, ENGINE_NAMES

Commands = argparse._SubParsersAction  # what add_subparsers returns: argparse has no public name for it


def _kubernetes_version(text: str) -> str:
    try:
        major, minor = parse_version(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return f"{major}.{minor}"


def _add_kubernetes_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubernetes-version", type=_kubernetes_version,
                        default=_environment("KUBERNETES_VERSION", version_text(NEWEST_VERSION)),
                        help="the Kubernetes whose CEL environment policies compile in (1.30 to 1.33, default the "
                        "newest): a function that version lacks is a load error at its line (builtin engine)")


def _environment(name: str, default: str) -> str:
    return os.environ.get(f"WEBHOOK_{name}", default)


def _optional_path(name: str) -> Path | None:
    value = os.environ.get(f"WEBHOOK_{name}")
    return Path(value) if value else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="webhook", description=(
        "Kubernetes validating and mutating admission webhook server with CEL and Python policies."))
    commands = parser.add_subparsers(dest="command", required=True)
    _add_serve(commands)
    commands.add_parser("deliver", help="deliver events from the outbox (started by `webhook serve`; also usable "
                        "as a sidecar with the same WEBHOOK_SETTINGS_JSON)")
    _add_events(commands)
    _add_certs(commands)
    _add_register(commands)
    _add_test_and_lint(commands)
    _add_audit(commands)
    return parser


def _add_serve(commands: Commands[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser("serve", help="serve /validate and /mutate over HTTPS")
    serve.add_argument("--host", default=_environment("HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(_environment("PORT", "8443")))
    serve.add_argument("--policies", type=Path, default=Path(_environment("POLICIES", "policies")),
                       help="policy directory, watched and reloaded on change (default: policies)")
    serve.add_argument("--cert-dir", type=Path, default=Path(_environment("CERT_DIR", ".webhook/certs")),
                       help="where a generated CA and serving certificate are kept (default: .webhook/certs)")
    serve.add_argument("--tls-cert-file", type=Path, default=None, help="serving certificate (PEM); "
                       "with --tls-key-file, used instead of generating one")
    serve.add_argument("--tls-key-file", type=Path, default=None)
    serve.add_argument("--dns-name", action="append", default=[], dest="dns_names",
                       help="extra name for the generated certificate (repeatable)")
    serve.add_argument("--workers", type=int, default=int(_environment("WORKERS", "1")))
    serve.add_argument("--cel-engine", choices=ENGINE_NAMES, default=_environment("CEL_ENGINE", DEFAULT_ENGINE))
    _add_kubernetes_version(serve)
    serve.add_argument("--max-body-bytes", type=int,
                       default=int(_environment("MAX_BODY_BYTES", str(DEFAULT_MAX_BODY_BYTES))))
    serve.add_argument("--no-watch", action="store_false", dest="watch_policies",
                       help="do not reload policies when the directory changes")
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                       default=_environment("LOG_LEVEL", "info"))
    serve.add_argument("--state-dir", type=Path, default=Path(_environment("STATE_DIR", ".webhook/state")),
                       help="where the event outbox (SQLite) lives (default: .webhook/state)")
    serve.add_argument("--subscribers", type=Path, default=_optional_path("SUBSCRIBERS"),
                       help="YAML file of event subscribers, reloaded on change (default: no events)")
    serve.add_argument("--cluster-name", default=_environment("CLUSTER_NAME", "default"),
                       help="names the cluster in the events' source attribute")
    serve.add_argument("--server-name", default=os.environ.get("WEBHOOK_SERVER_NAME"),
                       help="names this server in the events' source attribute (default: host name)")
    serve.add_argument("--outbox-max-backlog", type=int,
                       default=int(_environment("OUTBOX_MAX_BACKLOG", "100000")),
                       help="undelivered events kept at most; past it new events are dropped and counted")
    serve.add_argument("--outbox-max-mb", type=int, default=int(_environment("OUTBOX_MAX_MB", "512")),
                       help="MiB of events the outbox keeps (undelivered and dead letters); past it new events are "
                       "dropped and counted (default 512)")
    serve.add_argument("--delivery-lease-seconds", type=float, default=30.0,
                       help="how long a claimed delivery stays with one process before another may take it")
    serve.add_argument("--drain-seconds", type=float, default=5.0,
                       help="on shutdown, how long in-flight deliveries may finish")
    serve.add_argument("--event-delivery", choices=("process", "inline"), default="process",
                       help="deliver events from a process of their own (default) or inside each server process")
    serve.add_argument("--client-ca-file", type=Path, default=_optional_path("CLIENT_CA_FILE"),
                       help="require on /validate and /mutate a client certificate signed by this CA (mTLS)")
    serve.add_argument("--client-token-file", type=Path, default=_optional_path("CLIENT_TOKEN_FILE"),
                       help="require on /validate and /mutate `Authorization: Bearer` with this file's token")
    serve.add_argument("--shutdown-delay-seconds", type=float,
                       default=float(_environment("SHUTDOWN_DELAY_SECONDS", "0")),
                       help="on SIGTERM, fail readiness and close keep-alive connections this long before "
                       "shutting down (default 0; 5 in a cluster)")
    serve.add_argument("--evaluation-deadline-seconds", type=float,
                       default=float(_environment("EVALUATION_DEADLINE_SECONDS", "1")),
                       help="a request's policies must be evaluated within this; past it the policy running and "
                       "those after it are faults under their failurePolicy (default 1; 0: none)")
    serve.add_argument("--memory-limit-mb", type=int, default=None,
                       help="per serving process (RLIMIT_DATA): an allocation past it is a policy fault "
                       "(MemoryError) instead of an out-of-memory kill (default: none)")
    serve.add_argument("--restart-above-mb", type=int,
                       default=int(_environment("RESTART_ABOVE_MB", "0")) or None,
                       help="when a serving process's resident memory passes this, it drains and exits as on "
                       "SIGTERM (with --shutdown-delay-seconds), for Kubernetes to start it again: a last-resort "
                       "guard (the builtin CEL engine keeps no memory per review; cel-expr-python 0.1.3 leaks on "
                       "calls into the Kubernetes CEL library) (default: never)")
    serve.add_argument("--graceful-timeout-seconds", type=float,
                       default=float(_environment("GRACEFUL_TIMEOUT_SECONDS", "20")),
                       help="on shutdown, how long in-flight reviews may finish (default 20)")
    serve.add_argument("--memory-soft-limit-mb", type=int, default=_environment("MEMORY_SOFT_LIMIT_MB", "") or None,
                       help="per process: past this RSS, reviews over 64 KiB get 503 (default 70%% of hard; 0: never)")
    serve.add_argument("--memory-hard-limit-mb", type=int, default=_environment("MEMORY_HARD_LIMIT_MB", "") or None,
                       help="per process: past this RSS drain and exit (default from the container limit; 0: off)")
    serve.add_argument("--tls-handshake-timeout-seconds", type=float,
                       default=float(_environment("TLS_HANDSHAKE_TIMEOUT_SECONDS", "5")), help="default 5")
    serve.add_argument("--max-connections", type=int, default=int(_environment("MAX_CONNECTIONS", "1000")),
                       help="per process, handshakes included; past it new ones are closed at once (default 1000)")
    _add_cluster_state(serve)
    _add_audit_loop(serve)


def _add_audit_loop(serve: argparse.ArgumentParser) -> None:
    audit = serve.add_argument_group(
        "background audit", "One replica (the holder of a coordination.k8s.io Lease) judges the objects already in "
        "the cluster with the validating policies, writes policy reports and announces changes as "
        "dev.webhook.audit.violation / .resolved events; needs the cluster (--kubeconfig, --kube-context or "
        "--in-cluster). See `webhook audit --help` for how objects are presented.")
    audit.add_argument("--audit", action="store_true", default=_environment("AUDIT", "false").lower() in
                       ("1", "true", "yes"), help="run the audit loop (default: off; on in the Helm chart)")
    audit.add_argument("--audit-interval-seconds", type=float,
                       default=float(_environment("AUDIT_INTERVAL_SECONDS", "3600")),
                       help="audit again this often, and after every policy reload (default 3600)")
    audit.add_argument("--audit-page-size", type=int, default=int(_environment("AUDIT_PAGE_SIZE", "500")),
                       help="objects per list page (default 500): what the audit holds at most at a time")
    audit.add_argument("--audit-qps", type=float, default=float(_environment("AUDIT_QPS", "10")),
                       help="API requests per second of the audit (default 10, burst twice that)")
    audit.add_argument("--audit-objects-per-second", type=float,
                       default=float(_environment("AUDIT_OBJECTS_PER_SECOND", "1000")),
                       help="objects judged per second at most, so that a pass leaves the admission requests "
                       "their CPU (default 1000; 0: no limit)")
    audit.add_argument("--audit-report-format", choices=("openreports", "policyreport"),
                       default=_environment("AUDIT_REPORT_FORMAT", "openreports"),
                       help="openreports.io/v1alpha1 Report (default) or wgpolicyk8s.io/v1alpha2 PolicyReport")
    audit.add_argument("--no-audit-reports", action="store_false", dest="audit_reports",
                       default=_environment("AUDIT_REPORTS", "true").lower() in ("1", "true", "yes"),
                       help="do not write reports (events and metrics only)")
    audit.add_argument("--audit-lease-name", default=_environment("AUDIT_LEASE_NAME", "webhook-audit"))
    audit.add_argument("--audit-lease-namespace", default=os.environ.get("WEBHOOK_AUDIT_LEASE_NAMESPACE") or None,
                       help="default: POD_NAMESPACE, the service account's namespace, else default")
    audit.add_argument("--audit-exempt-namespace", action="append", default=None, dest="audit_exempt_namespaces",
                       help="a namespace the audit skips, besides kube-system and the server's own (repeatable)")


def _add_audit(commands: Commands[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser(
        "audit", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="judge the objects already in a cluster with a policy directory (one pass)",
        description="List the resources the validating policies name (in pages) and judge each object as the API "
        "server would present it being created (operation CREATE, no old object, no user), as Gatekeeper's audit "
        "does; print the results that are not a pass, per policy and object.",
        epilog="Python policies take part only with @validating(..., audit=True).\n"
        "exit status: 0 no violation; 1 some violation (or a policy error on some object); 2 the policies, the "
        "cluster configuration or the API failed (an incomplete pass)")
    audit.add_argument("--policies", type=Path, default=Path(_environment("POLICIES", "policies")))
    audit.add_argument("--cel-engine", choices=ENGINE_NAMES, default=_environment("CEL_ENGINE", DEFAULT_ENGINE))
    _add_kubernetes_version(audit)
    source = audit.add_mutually_exclusive_group()
    source.add_argument("--kubeconfig", type=Path, default=None, help="default: $KUBECONFIG or ~/.kube/config")
    source.add_argument("--in-cluster", action="store_true", help="the service account of the Pod this runs in")
    audit.add_argument("--kube-context", "--context", dest="context", default=None,
                       help="the kubeconfig context (default: its current one); --context is an alias")
    audit.add_argument("--output", choices=("table", "json"), default="table")
    audit.add_argument("--write-reports", action="store_true", help="write the policy reports once (a complete "
                       "pass only): one per namespace, plus one for cluster-scoped objects")
    audit.add_argument("--report-format", choices=("openreports", "policyreport"), default="openreports")
    audit.add_argument("--page-size", type=int, default=500, help="objects per list page (default 500)")
    audit.add_argument("--qps", type=float, default=20.0, help="API requests per second (default 20)")
    audit.add_argument("--exempt-namespace", action="append", default=["kube-system"], dest="exempt_namespaces",
                       help="a namespace to skip (repeatable; kube-system always is)")
    audit.add_argument("--evaluation-deadline-seconds", type=float, default=1.0,
                       help="per object, as for a review (default 1; 0: none)")


def _add_cluster_state(serve: argparse.ArgumentParser) -> None:
    cluster = serve.add_argument_group(
        "cluster state", "Namespaces and Pods (and ConfigMaps for params) watched through the API server, for "
        "namespaceSelector, namespaceObject and request.cluster; without --kubeconfig, --kube-context or "
        "--in-cluster there is no cluster. Each worker process runs watches of its own.")
    cluster.add_argument("--kubeconfig", type=Path, default=_optional_path("KUBECONFIG"),
                         help="watch the cluster of this kubeconfig file")
    cluster.add_argument("--kube-context", default=os.environ.get("WEBHOOK_KUBE_CONTEXT") or None,
                         help="the kubeconfig context (default: its current context; with no --kubeconfig: "
                         "$KUBECONFIG or ~/.kube/config)")
    cluster.add_argument("--in-cluster", action="store_true",
                         default=_environment("IN_CLUSTER", "false").lower() in ("1", "true", "yes"),
                         help="watch the cluster this Pod runs in, with its ServiceAccount")
    cluster.add_argument("--no-cluster-params", action="store_false", dest="cluster_params",
                         default=_environment("CLUSTER_PARAMS", "true").lower() in ("1", "true", "yes"),
                         help="do not watch ConfigMaps (params objects then come from the policy files only)")
    cluster.add_argument("--cluster-resync-seconds", type=float,
                         default=float(_environment("CLUSTER_RESYNC_SECONDS", "300")),
                         help="list everything again this often (default 300)")
    cluster.add_argument("--cluster-stale-after-seconds", type=float,
                         default=float(_environment("CLUSTER_STALE_AFTER_SECONDS", "60")),
                         help="after the watches failed this long, lookups fail (policy faults under their "
                         "failurePolicy) (default 60)")
    cluster.add_argument("--cluster-max-pods", type=int, default=int(_environment("CLUSTER_MAX_PODS", "200000")),
                         help="Pods kept at most (default 200000); past it lookups in the namespaces that lost "
                         "one fail")
    cluster.add_argument("--cluster-params-max-mb", type=int,
                         default=int(_environment("CLUSTER_PARAMS_MAX_MB", "64")),
                         help="MiB of ConfigMap data cached for params, all paramRefs together (default 64); an "
                         "object past it is left out, and the bindings that need it in its namespace fault "
                         "(under their failurePolicy) until a relist finds room")


def _add_events(commands: Commands[argparse.ArgumentParser]) -> None:
    events = commands.add_parser("events", help="look at and operate the event outbox")
    events.add_argument("--state-dir", type=Path, default=Path(_environment("STATE_DIR", ".webhook/state")))
    actions = events.add_subparsers(dest="action", required=True)
    actions.add_parser("status", help="queue depth, oldest pending age, per-subscriber counts, drops")
    dead = actions.add_parser("dead-letters", help="list dead letters")
    dead.add_argument("--subscriber")
    dead.add_argument("--limit", type=int, default=100)
    replay = actions.add_parser("replay", help="send dead letters again (by id, subscriber, or --all)")
    replay.add_argument("--id", dest="event_id")
    replay.add_argument("--subscriber")
    replay.add_argument("--all", action="store_true")


def _add_certs(commands: Commands[argparse.ArgumentParser]) -> None:
    certs = commands.add_parser("certs", help="generate, rotate and inspect the CA and serving certificate")
    certs_actions = certs.add_subparsers(dest="action", required=True)
    generate = certs_actions.add_parser("generate", help="a new CA and serving certificate")
    rotate = certs_actions.add_parser("rotate", help="a new serving certificate, or a CA rotation step")
    for command in (generate, rotate):
        command.add_argument("--dir", type=Path, default=Path(_environment("CERT_DIR", ".webhook/certs")),
                             help="where ca.crt, ca.key, tls.crt and tls.key are (default: .webhook/certs)")
        command.add_argument("--service", help="Service name: the certificate covers NAME.NAMESPACE.svc and "
                             "NAME.NAMESPACE.svc.cluster.local")
        command.add_argument("--namespace", default="default")
        command.add_argument("--dns-name", action="append", default=[], dest="dns_names",
                             help="a further DNS name or IP address (repeatable)")
        command.add_argument("--days", type=int, default=365, help="serving certificate lifetime (default 365)")
        command.add_argument("--ca-days", type=int, default=3650, help="CA lifetime (default 3650)")
        command.add_argument("--key-algorithm", choices=KEY_ALGORITHMS, default="ecdsa-p256")
    generate.add_argument("--secret-manifest", metavar="SECRET_NAME",
                          help="print a kubernetes.io/tls Secret of this name instead of writing files")
    generate.add_argument("--force", action="store_true", help="overwrite existing files")
    rotate.add_argument("--ca", action="store_true", help="step 1: add a new signing CA to the bundle")
    rotate.add_argument("--drop-old-cas", action="store_true", help="step 3: keep only the signing CA")
    inspect = certs_actions.add_parser("inspect", help="subjects, names, expiry, chain and key checks")
    inspect.add_argument("--dir", type=Path, default=Path(_environment("CERT_DIR", ".webhook/certs")))
    inspect.add_argument("--renew-within-days", type=int, default=30)


def _add_register(commands: Commands[argparse.ArgumentParser]) -> None:
    register = commands.add_parser("register", help="create or update the webhook configurations from the "
                                   "loaded policies' match rules (through the kubernetes client)")
    register.add_argument("--policies", type=Path, default=Path(_environment("POLICIES", "policies")))
    register.add_argument("--cel-engine", choices=ENGINE_NAMES, default=_environment("CEL_ENGINE", DEFAULT_ENGINE))
    register.add_argument("--url", help="register by URL (a server outside the cluster): https://HOST:PORT")
    register.add_argument("--service-name", default="webhook", help="register by Service (default: webhook)")
    register.add_argument("--service-namespace", default=os.environ.get("POD_NAMESPACE", "default"))
    register.add_argument("--service-port", type=int, default=443)
    register.add_argument("--ca-file", type=Path, default=Path(_environment("CERT_DIR", ".webhook/certs")) / "ca.crt",
                          help="the CA bundle for caBundle (default: .webhook/certs/ca.crt)")
    register.add_argument("--name", default="webhook.dev", help="configuration name and webhook name suffix")
    register.add_argument("--exempt-namespace", action="append", default=[], dest="exempt_namespaces",
                          help="a further namespace the API server never sends (kube-system and the "
                          "Service's namespace always are)")
    register.add_argument("--timeout-seconds", type=int, choices=range(1, 31), default=5, metavar="1..30")
    register.add_argument("--dry-run", action="store_true", help="print the YAML instead of applying it")
    register.add_argument("--blast-radius", action="store_true",
                          help="with --dry-run: print which writes would be refused (Fail) or admitted unchecked "
                          "(Ignore) while the server is down, instead of the YAML")
    register.add_argument("--delete", action="store_true",
                          help="delete the configurations named --name that `webhook register` created (labelled "
                          "app.kubernetes.io/managed-by=webhook); no policies or CA needed")
    register.add_argument("--kubeconfig", help="default: in-cluster config, then ~/.kube/config")
    register.add_argument("--kube-context", "--context", dest="context", default=None,
                          help="the kubeconfig context (default: its current one); --context is an alias")


def _add_test_and_lint(commands: Commands[argparse.ArgumentParser]) -> None:
    test = commands.add_parser("test", help="run the PolicyTest cases in a policy directory (or one test file)")
    test.add_argument("path", type=Path, help="a policy directory (its tests and its policies) or a test file")
    test.add_argument("--policies", type=Path, default=None,
                      help="the policy directory (default: PATH, or the test file's directory)")
    test.add_argument("--cel-engine", choices=ENGINE_NAMES, default=_environment("CEL_ENGINE", DEFAULT_ENGINE))
    _add_kubernetes_version(test)
    test.add_argument("--output", choices=("table", "json"), default="table")
    test.add_argument("-v", "--verbose", action="store_true",
                      help="also print the traceback of a Python policy that raised, from the policy function down")

    lint = commands.add_parser("lint", help="load a policy directory and print its problems as path:line:column")
    lint.add_argument("directory", type=Path)
    lint.add_argument("--strict", action="store_true",
                      help="exit 1 on warnings too (a binding without its policy, a paramRef.name with no object)")
    lint.add_argument("--cel-engine", choices=ENGINE_NAMES, default=_environment("CEL_ENGINE", DEFAULT_ENGINE))
    _add_kubernetes_version(lint)
