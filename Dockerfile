# Image of simacan-token-operator. Build from the repository root (BuildKit, for the pip cache mounts):
#   docker build -t simacan-token-operator:0.1.0 .
#
# The manifests run it as uid/gid 10001 with a read-only root filesystem; nothing here writes at run time.
# checkov:skip=CKV_DOCKER_2: Kubernetes probes (/healthz, /readyz) replace HEALTHCHECK

# Pinned to a patch tag, not yet to a digest: this recipe was written where no registry could be reached
# to resolve one. At release, append the digest (`docker buildx imagetools inspect <tag>`): @sha256:...
FROM python:3.11.17-slim-bookworm AS base

# Everything that installs lives here. tests/static/test_dockerfile.py runs this stage's ENV, WORKDIR,
# COPY and RUN steps outside Docker, so write paths through the variables below, never literally.
FROM base AS builder
ENV VIRTUAL_ENV=/opt/venv \
    BACKEND_VENV=/tmp/build-backend \
    WHEEL_DIR=/tmp/wheels \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# No pip or setuptools inside the venv: the base image's pip installs into it from outside. The build
# backend (setuptools, wheel) gets a venv of its own, which stays in this stage.
RUN python -m venv --without-pip "$VIRTUAL_ENV" \
    && python -m venv --without-pip "$BACKEND_VENV"
# Dependencies first, so a source change reuses this layer. Every one is pinned and hash-checked.
COPY requirements.lock ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m pip --python "$VIRTUAL_ENV/bin/python" install --no-deps --require-hashes -r requirements.lock
# The build backend, pinned and hash-checked too (wheels only), instead of what build isolation would
# fetch for pyproject's unpinned [build-system] requires.
COPY build-requirements.lock ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m pip --python "$BACKEND_VENV/bin/python" install --require-hashes --only-binary=:all: \
       -r build-requirements.lock
COPY pyproject.toml README.md ./
COPY operator/ operator/
# --no-build-isolation builds with the backend above (--check-build-dependencies: it satisfies
# [build-system] requires); --no-index: neither step can download anything.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m pip --python "$BACKEND_VENV/bin/python" wheel --no-build-isolation --check-build-dependencies \
       --no-deps --no-index --wheel-dir "$WHEEL_DIR" . \
    && python -m pip --python "$VIRTUAL_ENV/bin/python" install --no-deps --no-index \
       "$WHEEL_DIR"/simacan_token_operator-*.whl \
    && python -m pip --python "$VIRTUAL_ENV/bin/python" check

FROM base AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="simacan-token-operator" \
      org.opencontainers.image.description="Kubernetes operator that keeps a valid Simacan bearer token in a Secret" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="Simacan"
# The operator needs no installer at run time; a named account makes `ps` and audit logs readable.
RUN python -m pip uninstall --yes --no-input pip setuptools wheel \
    && groupadd --system --gid 10001 simacan \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin simacan
COPY --from=builder /opt/venv /opt/venv
ENV VIRTUAL_ENV=/opt/venv \
    PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# 8080: /metrics; 8081: /healthz and /readyz.
EXPOSE 8080 8081
ENTRYPOINT ["simacan-token-operator"]
CMD ["run", "--all-namespaces"]
