# syntax=docker/dockerfile:1.7
#
# One image for all four services. They share almost all of their code and dependencies
# (secmsg.shared, pydantic, nats-py, faststream, pymongo, minio, cryptography), so one image
# means one build, one vulnerability scan and one SBOM; the services differ only by command:
#
#   docker run secmsg python -m secmsg.ingest    (API 8080; probes 9080)
#   docker run secmsg python -m secmsg.store     (probes 8081)
#   docker run secmsg python -m secmsg.notify    (probes 8082)
#   docker run secmsg python -m secmsg.retrieve  (HTTPS 8443; probes 9443)
#   docker run secmsg python -m secmsg.notify.deliverability  (bounces 2525, probes 8083)
# Probes = /healthz, /readyz, /metrics on the internal port, loopback unless
# SECMSG_<SVC>_INTERNAL_HOST says otherwise (Kubernetes: 0.0.0.0).
#   docker run secmsg python -m secmsg.toolbar --help  (the reference toolbar agent)
#
# See docs/operations.md ("Images").

# The base of both stages and its interpreter. Without a registry, `python -m devstack.image`
# builds on a debootstrap Debian base instead (PYTHON=/usr/bin/python3.11 there).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG PYTHON=/usr/local/bin/python3.11
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13
# Labels: the release and the git commit it was built from.
ARG VERSION=0.0.0
ARG REVISION=unknown

FROM ${UV_IMAGE} AS uv

# ---------------------------------------------------------------- builder
# Same base as the runtime stage: the venv's interpreter symlink points at ${PYTHON}, which
# must exist at the same path in the final image.
FROM ${PYTHON_IMAGE} AS builder
ARG PYTHON
COPY --from=uv /uv /uvx /bin/
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=${PYTHON} \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src

# Dependencies first (cached while only our source changes): the lock file and every
# workspace member's pyproject.toml, nothing else.
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/pyproject.toml
COPY services/ingest/pyproject.toml services/ingest/pyproject.toml
COPY services/store/pyproject.toml services/store/pyproject.toml
COPY services/notify/pyproject.toml services/notify/pyproject.toml
COPY services/retrieve/pyproject.toml services/retrieve/pyproject.toml
COPY toolbar/pyproject.toml toolbar/pyproject.toml
COPY ops/pyproject.toml ops/pyproject.toml
# build_ca (optional build secret): a CA bundle for a TLS-intercepting proxy between the build
# and PyPI (`--secret id=build_ca,src=/etc/ssl/certs/ca-certificates.crt`); never in a layer.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=secret,id=build_ca,required=false \
    if [ -s /run/secrets/build_ca ]; then export SSL_CERT_FILE=/run/secrets/build_ca; fi \
 && uv sync --frozen --no-dev --no-install-workspace

# Then our own packages, installed as wheels (not editable) so /src is not needed at run time.
COPY shared/ shared/
COPY services/ services/
COPY toolbar/ toolbar/
COPY ops/ ops/
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=secret,id=build_ca,required=false \
    if [ -s /run/secrets/build_ca ]; then export SSL_CERT_FILE=/run/secrets/build_ca; fi \
 && uv sync --frozen --no-dev --no-editable \
 && /app/.venv/bin/python -c "import secmsg.shared, secmsg.ingest, secmsg.store, secmsg.notify, secmsg.retrieve, secmsg.notify.deliverability, secmsg.toolbar, secmsg.ops.backup"

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION
ARG REVISION
LABEL org.opencontainers.image.title="secmsg" \
      org.opencontainers.image.description="secmsg services: python -m secmsg.<ingest|store|notify|retrieve>" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 secmsg \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin secmsg

COPY --from=builder --chown=root:root /app/.venv /app/.venv
COPY --chown=root:root deploy/docker/healthcheck.py /app/healthcheck.py

# Bytecode was compiled in the builder; the root filesystem is read-only at run time.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp
WORKDIR /app
USER 10001:10001
EXPOSE 8080 8443

# /healthz (liveness) of whichever secmsg service runs in this container; the script finds
# the service from the process list and its internal port from SECMSG_<SVC>_INTERNAL_PORT.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/app/healthcheck.py"]

# Kubernetes and compose give the service explicitly; this default only makes `docker run`
# of the bare image do something useful.
CMD ["python", "-m", "secmsg.ingest"]
