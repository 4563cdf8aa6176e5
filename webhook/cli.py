"""`webhook serve | lint`: the command line."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from webhook.certs import KEY_ALGORITHMS
from webhook.config import DEFAULT_MAX_BODY_BYTES, Settings
from webhook.errors import ConfigError, PolicyLoadError
from webhook.events.service import EventDeliverer
from webhook.events.subscribers import ConfigFileError, load_subscribers
from webhook.policies.cel import DEFAULT_ENGINE, ENGINE_NAMES, make_engine
from webhook.policies.loader import load_policy_set

PARENT_PID_VARIABLE = "WEBHOOK_PARENT_PID"


def _environment(name: str, default: str) -> str:
    return os.environ.get(f"WEBHOOK_{name}", default)


def _optional_path(name: str) -> Path | None:
    value = os.environ.get(f"WEBHOOK_{name}")
    return Path(value) if value else None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="webhook", description=(
        "Kubernetes validating and mutating admission webhook server with CEL and Python policies."))
    commands = parser.add_subparsers(dest="command", required=True)

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

    commands.add_parser("deliver", help="deliver events from the outbox (started by `webhook serve`; also usable "
                        "as a sidecar with the same WEBHOOK_SETTINGS_JSON)")

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
    register.add_argument("--kubeconfig", help="default: in-cluster config, then ~/.kube/config")
    register.add_argument("--context")

    test = commands.add_parser("test", help="run the PolicyTest cases in a policy directory (or one test file)")
    test.add_argument("path", type=Path, help="a policy directory (its tests and its policies) or a test file")
    test.add_argument("--policies", type=Path, default=None,
                      help="the policy directory (default: PATH, or the test file's directory)")
    test.add_argument("--cel-engine", choices=ENGINE_NAMES, default=_environment("CEL_ENGINE", DEFAULT_ENGINE))
    test.add_argument("--output", choices=("table", "json"), default="table")

    lint = commands.add_parser("lint", help="load a policy directory and print its problems as path:line:column")
    lint.add_argument("directory", type=Path)
    lint.add_argument("--cel-engine", choices=ENGINE_NAMES, default=_environment("CEL_ENGINE", DEFAULT_ENGINE))
    return parser


def _serve(arguments: argparse.Namespace) -> int:
    from webhook.certs import ensure_self_signed, server_tls_context
    from webhook.serving import ClientAuthentication

    try:
        settings = Settings.model_validate({
            key: value for key, value in vars(arguments).items() if key != "command" and value is not None
        })
        if settings.subscribers is not None:
            load_subscribers(settings.subscribers)  # refuse to start on a broken file, with its problems
    except ConfigFileError as error:
        print(f"webhook serve: subscribers file rejected:\n{error}", file=sys.stderr)
        return 2
    except ValidationError as error:
        print(f"webhook serve: invalid settings: {error}", file=sys.stderr)
        return 2
    try:
        if settings.tls_cert_file is not None and settings.tls_key_file is not None:
            cert_file, key_file = settings.tls_cert_file, settings.tls_key_file
        else:
            files = ensure_self_signed(settings.cert_dir, dns_names=list(settings.dns_names))
            cert_file, key_file = files.cert, files.key
            print(f"CA certificate: {files.ca_cert.resolve()}")
            print(f"caBundle: {files.ca_bundle()}", flush=True)
        # Refuse to start on unusable TLS or client-authentication files, with a clear message.
        server_tls_context(cert_file=cert_file, key_file=key_file, client_ca_file=settings.client_ca_file)
        ClientAuthentication(require_client_certificate=False, token_file=settings.client_token_file)
    except ConfigError as error:
        print(f"webhook serve: {error}", file=sys.stderr)
        return 2
    os.environ.update(settings.to_environment())
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    deliverer = None
    if settings.event_delivery == "process" and settings.subscribers is not None:
        deliverer = subprocess.Popen([sys.executable, "-m", "webhook", "deliver"],
                                     env={**os.environ, PARENT_PID_VARIABLE: str(os.getpid())})
    # uvicorn re-raises the SIGTERM it caught once it has shut down; turning that into SystemExit lets the
    # finally below stop the deliverer (which then drains) instead of the default action killing this process.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        _run_uvicorn(settings, cert_file=cert_file, key_file=key_file)
    finally:
        if deliverer is not None:
            deliverer.send_signal(signal.SIGTERM)
            try:
                deliverer.wait(timeout=settings.drain_seconds + 10)
            except subprocess.TimeoutExpired:
                deliverer.kill()
    return 0


def _exit_on_signal(number: int, frame: object) -> None:
    raise SystemExit(0)


def _run_uvicorn(settings: Settings, *, cert_file: Path, key_file: Path) -> None:
    import uvicorn

    from webhook.certs import uvicorn_tls_context
    from webhook.serving import TLSHttpToolsProtocol, run

    config = uvicorn.Config(
        "webhook.server:create_app_from_environment", factory=True, host=settings.host, port=settings.port,
        workers=settings.workers, ssl_certfile=str(cert_file), ssl_keyfile=str(key_file),
        ssl_ca_certs=str(settings.client_ca_file) if settings.client_ca_file else None,
        ssl_context_factory=uvicorn_tls_context, http=TLSHttpToolsProtocol, log_level=settings.log_level,
        server_header=False, proxy_headers=False, access_log=settings.log_level == "debug",
        timeout_graceful_shutdown=int(settings.graceful_timeout_seconds),
    )
    run(config, shutdown_delay=settings.shutdown_delay_seconds)


def _deliver() -> int:
    """Run the event deliverer until SIGTERM (or until the `webhook serve` that started it is gone)."""
    import asyncio

    from webhook.config import settings_from_environment
    from webhook.server import event_settings_from

    settings = settings_from_environment()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The parent's pid comes from the parent itself: os.getppid() here could already be 1 when the server was
    # killed while this process was still starting, and such a deliverer would never notice it is orphaned.
    parent = os.environ.get(PARENT_PID_VARIABLE)
    parent_pid = int(parent) if parent else None
    _terminate_with_parent()
    if parent_pid is not None and os.getppid() != parent_pid:
        return 0
    deliverer = EventDeliverer(event_settings_from(settings), parent_pid=parent_pid)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, deliverer.stop)
        await deliverer.run()

    try:  # the event loop uvicorn serves with (uvicorn[standard]); the selector loop took 14% of delivery's CPU
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop wheels
        asyncio.run(run())
    else:
        uvloop.run(run())
    return 0


def _terminate_with_parent() -> None:
    """Ask Linux to send SIGTERM to this process when its parent dies (prctl PR_SET_PDEATHSIG); elsewhere the
    deliverer's own polling of its parent pid does the same job, only later."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1


def _lint(arguments: argparse.Namespace) -> int:
    try:
        policy_set = load_policy_set(arguments.directory, engine=make_engine(arguments.cel_engine))
    except PolicyLoadError as error:
        for problem in error.problems:
            print(problem)
        count = len(error.problems)
        sys.stdout.flush()
        print(f"{count} problem{'s' if count != 1 else ''} in {arguments.directory}", file=sys.stderr)
        return 1
    for note in policy_set.notes:
        print(f"{note.path}:{note.line}:{note.column}: note: {note.message}")
    notes = f", {len(policy_set.notes)} note{'s' if len(policy_set.notes) != 1 else ''}" if policy_set.notes else ""
    print(f"{arguments.directory}: {len(policy_set.policies)} policies, no problems{notes}")
    return 0


def _events(arguments: argparse.Namespace) -> int:
    from webhook.events.outbox import Outbox

    path = arguments.state_dir / "outbox.db"
    if not path.exists():
        print(f"webhook events: no outbox at {path} (see --state-dir)", file=sys.stderr)
        return 2
    outbox = Outbox(path)
    try:
        if arguments.action == "status":
            rows = outbox.status()
            counters = outbox.counters()
            disabled = outbox.disabled()
            backlog = sum(row.pending for row in rows)
            oldest = max((row.oldest_pending_age or 0.0 for row in rows), default=0.0)
            print(f"backlog: {backlog} undelivered, oldest {oldest:.1f}s")
            print(f"dropped: {counters.get('dropped_full', 0)} (outbox full), "
                  f"{counters.get('dropped_error', 0)} (write errors)")
            # Totals come from the counters (they outlive compaction); pending and age from the rows.
            print(f"{'SUBSCRIBER':24} {'PENDING':>8} {'OLDEST':>8} {'DELIVERED':>10} {'RETRIED':>8} {'DEAD':>6}  "
                  "STATE")
            for row in rows:
                age = f"{row.oldest_pending_age:.1f}s" if row.oldest_pending_age is not None else "-"
                state = f"disabled: {disabled[row.name]}" if row.name in disabled else "active"
                delivered, retried, dead = (counters.get(f"{prefix}/{row.name}", 0)
                                            for prefix in ("delivered", "retried", "dead"))
                print(f"{row.name:24} {row.pending:>8} {age:>8} {delivered:>10} {retried:>8} {dead:>6}  {state}")
        elif arguments.action == "dead-letters":
            for letter in outbox.dead_letters(subscriber=arguments.subscriber, limit=arguments.limit):
                print(f"{letter['event_id']}  {letter['subscriber']}  attempts={letter['attempts']}  "
                      f"{letter['last_error']}")
        else:
            if not (arguments.event_id or arguments.subscriber or arguments.all):
                print("webhook events replay: give --id, --subscriber or --all", file=sys.stderr)
                return 2
            count = outbox.replay(event_id=arguments.event_id, subscriber=arguments.subscriber)
            print(f"{count} dead letters queued again")
    finally:
        outbox.close()
    return 0


def _certs(arguments: argparse.Namespace) -> int:
    from webhook import certtool

    directory: Path = arguments.dir
    try:
        if arguments.action == "inspect":
            lines, problems = certtool.inspect(directory, renew_within_days=arguments.renew_within_days)
            print("\n".join(lines))
            for problem in problems:
                print(f"problem: {problem}")
            return 1 if problems else 0
        names = (certtool.service_names(arguments.service, arguments.namespace, arguments.dns_names)
                 if arguments.service else list(arguments.dns_names))
        if arguments.action == "rotate":
            print(certtool.rotate(directory, new_ca=arguments.ca, drop_old_cas=arguments.drop_old_cas,
                                  ca_days=arguments.ca_days, days=arguments.days,
                                  algorithm=arguments.key_algorithm, names=names or None))
            return 0
        if not names:
            print("webhook certs generate: give --service (and --namespace) or --dns-name", file=sys.stderr)
            return 2
        generated = certtool.generate(names=names, ca_days=arguments.ca_days, days=arguments.days,
                                      algorithm=arguments.key_algorithm)
        if arguments.secret_manifest:
            print(generated.secret_manifest(name=arguments.secret_manifest, namespace=arguments.namespace), end="")
            return 0
        existing = [name for name in ("ca.crt", "ca.key", "tls.crt", "tls.key") if (directory / name).exists()]
        if existing and not arguments.force:
            print(f"webhook certs generate: {directory} already has {', '.join(existing)} (use --force, or "
                  "`webhook certs rotate`)", file=sys.stderr)
            return 2
        generated.write(directory)
        print(f"wrote {directory}/ca.crt, ca.key, tls.crt, tls.key for {', '.join(names)}")
        return 0
    except (ConfigError, OSError, ValueError) as error:
        print(f"webhook certs {arguments.action}: {error}", file=sys.stderr)
        return 2


def _register(arguments: argparse.Namespace) -> int:
    import yaml

    from webhook import registration

    try:
        policy_set = load_policy_set(arguments.policies, engine=make_engine(arguments.cel_engine))
        ca_bundle = arguments.ca_file.read_bytes()
    except PolicyLoadError as error:
        print("\n".join(str(problem) for problem in error.problems), file=sys.stderr)
        return 1
    except OSError as error:
        print(f"webhook register: cannot read the CA bundle {arguments.ca_file}: {error.strerror}", file=sys.stderr)
        return 2
    if arguments.url is not None and not arguments.url.startswith("https://"):
        print("webhook register: --url must start with https:// (the API server only calls webhooks over TLS)",
              file=sys.stderr)
        return 2
    target = registration.Target(url=arguments.url, service_name=arguments.service_name,
                                 service_namespace=arguments.service_namespace, service_port=arguments.service_port)
    configurations = registration.webhook_configurations(
        policy_set, target=target, ca_bundle=ca_bundle, name=arguments.name,
        own_namespace=None if arguments.url else arguments.service_namespace,
        exempt_namespaces=arguments.exempt_namespaces, timeout_seconds=arguments.timeout_seconds)
    problems = [problem for manifest in configurations for problem in registration.schema_problems(manifest)]
    if problems:  # a bug of ours, never the user's: refuse rather than send the API server something odd
        print("webhook register: generated configuration does not fit the API:\n" + "\n".join(problems),
              file=sys.stderr)
        return 1
    if arguments.dry_run:
        print(yaml.safe_dump_all(configurations, sort_keys=False), end="")
        return 0
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config import ConfigException

    try:
        for line in registration.apply(configurations, kubeconfig=arguments.kubeconfig, context=arguments.context):
            print(line)
    except ConfigException as error:
        print(f"webhook register: no cluster configuration: {error}", file=sys.stderr)
        return 2
    except ApiException as error:
        print(f"webhook register: the API server refused: {error.status} {error.reason}: {error.body}",
              file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    if arguments.command == "serve":
        return _serve(arguments)
    if arguments.command == "events":
        return _events(arguments)
    if arguments.command == "deliver":
        return _deliver()
    if arguments.command == "certs":
        return _certs(arguments)
    if arguments.command == "register":
        return _register(arguments)
    if arguments.command == "test":
        from webhook.testing import command

        return command(arguments.path, policies=arguments.policies, engine=make_engine(arguments.cel_engine),
                       output=arguments.output)
    return _lint(arguments)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
