"""The `webhook` command line: what each subcommand does (its flags are in `webhook.cli_parser`)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from pydantic import ValidationError

from webhook.cel.environment import parse_version
from webhook.cli_parser import build_parser
from webhook.config import Settings
from webhook.errors import ConfigError, PolicyLoadError
from webhook.events.service import EventDeliverer
from webhook.events.subscribers import ConfigFileError, load_subscribers
from webhook.policies.cel import make_engine
from webhook.policies.loader import load_policy_set

PARENT_PID_VARIABLE = "WEBHOOK_PARENT_PID"


def _serve(arguments: argparse.Namespace) -> int:
    from webhook.certs import ensure_self_signed, server_tls_context
    from webhook.memory import with_memory_limits
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
        settings = with_memory_limits(settings)
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
    from webhook.certs import uvicorn_tls_context
    from webhook.connections import ServingConfig, TLSConnectionGate
    from webhook.serving import run

    config = ServingConfig(
        "webhook.server:create_app_from_environment", factory=True, host=settings.host, port=settings.port,
        workers=settings.workers, ssl_certfile=str(cert_file), ssl_keyfile=str(key_file),
        ssl_ca_certs=str(settings.client_ca_file) if settings.client_ca_file else None,
        ssl_context_factory=uvicorn_tls_context, http=TLSConnectionGate, log_level=settings.log_level,
        server_header=False, proxy_headers=False, access_log=settings.log_level == "debug",
        timeout_graceful_shutdown=int(settings.graceful_timeout_seconds),
        tls_handshake_timeout=settings.tls_handshake_timeout_seconds, max_connections=settings.max_connections,
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
        policy_set = load_policy_set(arguments.directory, engine=make_engine(
            arguments.cel_engine, kubernetes_version=parse_version(arguments.kubernetes_version)))
    except PolicyLoadError as error:
        for problem in error.problems:
            print(problem)
        count = len(error.problems)
        sys.stdout.flush()
        print(f"{count} problem{'s' if count != 1 else ''} in {arguments.directory}", file=sys.stderr)
        return 1
    for severity, found in (("warning", policy_set.warnings), ("note", policy_set.notes)):
        for problem in found:
            print(f"{problem.path}:{problem.line}:{problem.column}: {severity}: {problem.message}")
    if arguments.strict and policy_set.warnings:  # --strict: warnings are problems
        count = len(policy_set.warnings)
        sys.stdout.flush()
        print(f"{count} warning{'s' if count != 1 else ''} in {arguments.directory} (--strict)", file=sys.stderr)
        return 1
    counts = "".join(f", {len(found)} {severity}{'s' if len(found) != 1 else ''}" for severity, found in (
        ("warning", policy_set.warnings), ("note", policy_set.notes)) if found)
    print(f"{arguments.directory}: {len(policy_set.policies)} policies, no problems{counts}")
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


def _unregister(arguments: argparse.Namespace) -> int:

    from webhook import registration

    return _print_cluster_lines("webhook register --delete", lambda: registration.delete(
        arguments.name, kubeconfig=arguments.kubeconfig, context=arguments.context))


def _register(arguments: argparse.Namespace) -> int:
    import yaml

    from webhook import registration

    if arguments.blast_radius and not arguments.dry_run:
        print("webhook register: --blast-radius only goes with --dry-run (it applies nothing)", file=sys.stderr)
        return 2
    if arguments.delete and arguments.dry_run:
        print("webhook register: --delete does not go with --dry-run (see what is there with `kubectl get "
              "validatingwebhookconfigurations,mutatingwebhookconfigurations -l app.kubernetes.io/managed-by=webhook`)",
              file=sys.stderr)
        return 2
    if arguments.delete:
        return _unregister(arguments)
    try:
        # Only the rules are read here: policies that use `authorizer` load (the serving server checks its own).
        policy_set = load_policy_set(arguments.policies, engine=make_engine(arguments.cel_engine, cluster=True))
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
    if arguments.dry_run and arguments.blast_radius:
        from webhook.blast_radius import report

        print(report(configurations), end="")
        return 0
    if arguments.dry_run:
        print(yaml.safe_dump_all(configurations, sort_keys=False), end="")
        return 0

    return _print_cluster_lines("webhook register", lambda: registration.apply(
        configurations, kubeconfig=arguments.kubeconfig, context=arguments.context))


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
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
    if arguments.command == "audit":
        from webhook.background_audit.command import command as audit

        return audit(arguments)
    if arguments.command == "test":
        from webhook.testing import command

        engine = make_engine(arguments.cel_engine, kubernetes_version=parse_version(arguments.kubernetes_version))
        return command(arguments.path, policies=arguments.policies, output=arguments.output,
                       verbose=arguments.verbose, engine=engine)
    return _lint(arguments)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def _print_cluster_lines(command: str, lines: Callable[[], Iterable[str]]) -> int:
    """Print what a call to the API server reports; 2 without a cluster configuration, 1 when it refuses."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config import ConfigException

    try:
        for line in lines():
            print(line)
    except ConfigException as error:
        print(f"{command}: no cluster configuration: {error}", file=sys.stderr)
        return 2
    except ApiException as error:
        print(f"{command}: the API server refused: {error.status} {error.reason}: {error.body}", file=sys.stderr)
        return 1
    return 0
