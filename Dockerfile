# Container image for the `webhook` admission server.
#
# Build (from the repository root; .dockerignore keeps the context to pyproject.toml, README.md, webhook/ and
# policies/):
#
#   docker build -t webhook:0.1.0 .
#
# Run locally (read-only root file system; the state volume keeps the event outbox and the generated
# certificates; /tmp is the only other writable place Python may want):
#
#   docker run --rm -p 8443:8443 --read-only --tmpfs /tmp -v webhook-state:/var/lib/webhook webhook:0.1.0
#
# Size estimate (uncompressed, linux/amd64): about 400 MB.
#   - python:3.11-slim-bookworm: about 125 MB.
#   - /opt/venv: about 250-270 MiB, measured two ways on the development machine (Python 3.11.7, x86_64):
#     1. In the development venv, the installed files (each distribution's RECORD, bytecode included) of the
#        runtime dependency closure of `webhook` ([project.dependencies] with uvicorn[standard], resolved
#        transitively through importlib.metadata: 58 distributions) add up to 245.9 MiB, out of 376 MiB for
#        the whole site-packages (`du -sh`); the rest is dev-only (mypy, ruff, pytest, httpx, jsonschema,
#        py-spy and their dependencies) plus pip and setuptools.
#     2. A fresh venv with the same 58 distributions from binary wheels only (`pip download --only-binary=:all:`,
#        then `pip install .`, then pip and setuptools removed, as below): `du -sh` 267 MiB (250 MiB apparent).
#     The big ones: kubernetes 117-126 MiB (generated API models; 52 MiB of it bytecode), cel-expr-python
#     49 MiB, cryptography 15 MiB, uvloop 13 MiB. Bytecode is 71 MiB of the venv: `pip install --no-compile`
#     would save that, but every start would then compile in memory (the root file system is read-only).
#   - policies/ and the user: under 1 MB.
#
# Every dependency ships manylinux (glibc) wheels for amd64 and arm64 (checked with `pip download
# --only-binary=:all:` for both), so no compiler is needed; the CEL engine (cel-expr-python) has no musllinux
# wheels, which is why the base is Debian slim and not Alpine. `pip install .` builds the package with a
# current setuptools from PyPI (build isolation): pyproject's PEP 639 `license = "Apache-2.0"` needs
# setuptools 77 or newer.
#
# The base image is pinned by tag only. In production pin it by digest as well, in both stages, e.g.
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> .
# (builder and runtime must use the same image: the venv's python is a symlink to /usr/local/bin/python3.11).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}"

WORKDIR /src
# The build backend (setuptools) reads pyproject.toml, the README (project.readme) and the package.
COPY pyproject.toml README.md ./
COPY webhook/ webhook/
RUN pip install --no-cache-dir . \
    && pip uninstall --yes pip setuptools \
    && webhook --help > /dev/null


FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="webhook" \
      org.opencontainers.image.description="Kubernetes validating and mutating admission webhook server" \
      org.opencontainers.image.licenses="Apache-2.0"

# A system user and group 65532 without a login shell or a home directory; the state and certificate
# directories are created for it so that a fresh named volume is writable by it.
RUN groupadd --system --gid 65532 webhook \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin webhook \
    && mkdir -p /var/lib/webhook /etc/webhook/tls \
    && chown 65532:65532 /var/lib/webhook

COPY --from=builder /opt/venv /opt/venv
# The shipped policies, read-only (owned by root); the Helm chart mounts a ConfigMap over this directory
# when it is given policies of its own.
COPY policies/ /etc/webhook/policies/

ENV PATH="/opt/venv/bin:${PATH}" \
    VIRTUAL_ENV=/opt/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Nothing is written below the working directory: every path the server writes to is given in CMD.
WORKDIR /

# The event outbox (SQLite), its spool and (without --tls-cert-file/--tls-key-file) the generated CA and
# serving certificate. Mounted serving certificates are expected in /etc/webhook/tls (tls.crt, tls.key).
VOLUME ["/var/lib/webhook"]

USER 65532:65532

EXPOSE 8443

# For `docker run` only (Kubernetes ignores HEALTHCHECK and uses the probes). No curl in slim: Python GETs
# /healthz without verifying the certificate (it may be self-signed); any error or non-200 answer exits 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import ssl, sys, urllib.request; response = urllib.request.urlopen('https://127.0.0.1:8443/healthz', context=ssl._create_unverified_context(), timeout=4); sys.exit(0 if response.status == 200 else 1)"]

ENTRYPOINT ["webhook"]
# Without mounted certificates the server generates a CA and a serving certificate into the state volume
# (it prints the caBundle). With certificates mounted, add:
#   --tls-cert-file /etc/webhook/tls/tls.crt --tls-key-file /etc/webhook/tls/tls.key
CMD ["serve", "--host", "0.0.0.0", "--port", "8443", "--policies", "/etc/webhook/policies", "--state-dir", "/var/lib/webhook", "--cert-dir", "/var/lib/webhook/certs", "--workers", "1"]
