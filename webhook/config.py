"""Settings for `webhook serve`, validated once at start; passed to worker processes as JSON."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from webhook.certs import TLS_CERT, TLS_KEY
from webhook.errors import ConfigError

SETTINGS_ENVIRONMENT_VARIABLE = "WEBHOOK_SETTINGS_JSON"
# The API server takes request bodies up to 3 MiB; an UPDATE review carries the object and the old object
# (stored objects are at most 1.5 MiB in etcd) plus the request envelope, so 6 MiB leaves a margin.
DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=0, le=65535)
    policies: Path = Path("policies")
    cert_dir: Path = Path(".webhook/certs")
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    dns_names: tuple[str, ...] = ()
    workers: int = Field(default=1, ge=1, le=64)
    cel_engine: Literal["builtin", "cel-expr-python", "cel-python"] = "builtin"
    kubernetes_version: str = "1.33"  # whose CEL environment policies compile in (webhook.cel.environment)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024)
    watch_policies: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    state_dir: Path = Path(".webhook/state")
    subscribers: Path | None = None
    cluster_name: str = Field(default="default", pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$")
    server_name: str = Field(default_factory=socket.gethostname)
    outbox_max_backlog: int = Field(default=100_000, ge=1)
    outbox_max_mb: int = Field(default=512, ge=1)  # undelivered events and dead letters together
    delivery_lease_seconds: float = Field(default=30.0, gt=0)
    drain_seconds: float = Field(default=5.0, ge=0)
    # inline: each serving process also delivers; process: `webhook serve` runs one `webhook deliver` process
    event_delivery: Literal["inline", "process"] = "inline"
    # Client authentication on /validate and /mutate (health and metrics stay open for probes).
    client_ca_file: Path | None = None
    client_token_file: Path | None = None
    # SIGTERM: readiness fails and keep-alive connections are closed for this long, then in-flight reviews
    # get graceful_timeout_seconds to finish.
    shutdown_delay_seconds: float = Field(default=0.0, ge=0, le=300)
    graceful_timeout_seconds: float = Field(default=20.0, ge=0, le=600)
    certificate_check_seconds: float = Field(default=2.0, gt=0, le=3600)
    # Evaluating one request's policies stops here (0: no deadline); see webhook.policies.deadline.
    evaluation_deadline_seconds: float = Field(default=1.0, ge=0, le=30)
    # RLIMIT_DATA per serving process: a policy that allocates past it gets MemoryError (a fault) instead
    # of the process being killed; None: no limit.
    memory_limit_mb: int | None = Field(default=None, ge=128)
    # A serving process whose resident memory passes this drains and exits as on SIGTERM, for its supervisor
    # (Kubernetes) to start it again: cel-expr-python 0.1.3 leaks the arguments of every call into the
    # Kubernetes CEL library (README, Performance). None: never.
    restart_above_mb: int | None = Field(default=None, ge=64)
    # The memory guard of each serving process (webhook.memory.MemoryGuard): past the soft limit admission
    # requests are answered 503 before their body is read; past the hard limit the process drains and exits.
    # `webhook serve` fills in None from the container's memory limit (webhook.memory.memory_limits); 0: off.
    memory_soft_limit_mb: int | None = Field(default=None, ge=0)
    memory_hard_limit_mb: int | None = Field(default=None, ge=0)
    # Connections (webhook.connections.TLSConnectionGate): the TLS handshake must end within this, and past
    # max_connections open ones per serving process a new connection is closed at once.
    tls_handshake_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    max_connections: int = Field(default=1000, ge=1)
    # The live cluster state (webhook.cluster): Namespaces and Pods watched through the API server, for
    # namespaceSelector, namespaceObject and `request.cluster`. None of the three: no cluster (file state only).
    kubeconfig: Path | None = None
    kube_context: str | None = None
    in_cluster: bool = False
    cluster_params: bool = True  # with a cluster: watch ConfigMaps too, params objects for paramKind v1/ConfigMap
    cluster_resync_seconds: float = Field(default=300.0, gt=0)
    cluster_stale_after_seconds: float = Field(default=60.0, gt=0)
    cluster_max_pods: int = Field(default=200_000, ge=1)
    # Bytes of ConfigMap data cached for params, all paramRefs together (webhook.cluster): past it, left out.
    cluster_params_max_mb: int = Field(default=64, ge=1, le=4096)
    # The background audit (webhook.background_audit.service): needs the cluster; off by default, on in the Helm chart.
    audit: bool = False
    audit_interval_seconds: float = Field(default=3600.0, gt=0)
    audit_page_size: int = Field(default=500, ge=1, le=10_000)
    audit_qps: float = Field(default=10.0, ge=0)
    audit_objects_per_second: float = Field(default=1000.0, ge=0)
    audit_report_format: Literal["openreports", "policyreport"] = "openreports"
    audit_reports: bool = True
    audit_lease_name: str = Field(default="webhook-audit", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    audit_lease_namespace: str | None = None
    audit_exempt_namespaces: tuple[str, ...] = ("kube-system",)

    def kubernetes_minor(self) -> tuple[int, int]:
        from webhook.cel.environment import parse_version

        return parse_version(self.kubernetes_version)

    @model_validator(mode="after")
    def _check_kubernetes_version(self) -> Settings:
        try:
            self.kubernetes_minor()
        except ValueError as error:
            raise ValueError(f"kubernetes_version: {error}") from None
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give both --tls-cert-file and --tls-key-file, or neither (to generate them)")
        return self

    @model_validator(mode="after")
    def _cluster_source(self) -> Settings:
        if self.in_cluster and (self.kubeconfig is not None or self.kube_context is not None):
            raise ValueError("give --in-cluster, or --kubeconfig and/or --kube-context, not both")
        if self.kubeconfig is not None and not self.kubeconfig.is_file():
            raise ValueError(f"--kubeconfig {self.kubeconfig} is not a file")
        if self.audit and not self.cluster_configured:
            raise ValueError("--audit needs the cluster: give --kubeconfig, --kube-context or --in-cluster")
        return self

    @property
    def cluster_configured(self) -> bool:
        """Whether the server watches a cluster (--kubeconfig, --kube-context or --in-cluster)."""
        return self.in_cluster or self.kubeconfig is not None or self.kube_context is not None

    @property
    def serving_files(self) -> tuple[Path, Path]:
        """(certificate, key) the server presents: given files, or the generated ones in cert_dir."""
        if self.tls_cert_file is not None and self.tls_key_file is not None:
            return self.tls_cert_file, self.tls_key_file
        return self.cert_dir / TLS_CERT, self.cert_dir / TLS_KEY

    def to_environment(self) -> dict[str, str]:
        return {SETTINGS_ENVIRONMENT_VARIABLE: self.model_dump_json()}


def settings_from_environment() -> Settings:
    """The settings a worker process was started with (see Settings.to_environment)."""
    raw = os.environ.get(SETTINGS_ENVIRONMENT_VARIABLE)
    if raw is None:
        return Settings()
    try:
        return Settings.model_validate_json(raw)
    except ValidationError as error:
        raise ConfigError(f"{SETTINGS_ENVIRONMENT_VARIABLE} is not valid: {error}") from error
