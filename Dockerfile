# syntax=docker/dockerfile:1
# Both stages share one base image, so the virtualenv's links to its interpreter stay valid.
ARG PYTHON_IMAGE=python:3.11-slim

# Build stage: a virtualenv with orgkeeper and its pinned dependencies. Wheels only, so no
# compiler is ever needed (a dependency without a wheel fails the build instead).
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ONLY_BINARY=:all:
RUN python -m venv /opt/orgkeeper
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/orgkeeper/bin/pip install .

# Runtime stage: the virtualenv on the slim base, nothing installed on top; a non-root numeric
# user, so Kubernetes can check runAsNonRoot. Bytecode was compiled at install: the root
# filesystem can be read-only.
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="orgkeeper" \
      org.opencontainers.image.description="Kubernetes operator that runs an API platform's account policy as custom resources" \
      org.opencontainers.image.licenses="Apache-2.0"
# Two malloc arenas, not eight per core: the API calls run on a pool of threads, and an arena
# each keeps what a burst of answers once needed (see the README's Performance section).
ENV PATH=/opt/orgkeeper/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_ARENA_MAX=2
COPY --from=build /opt/orgkeeper /opt/orgkeeper
USER 65532:65532
# health (/healthz), metrics (/metrics), admission webhooks (HTTPS)
EXPOSE 8080 9090 9443
ENTRYPOINT ["orgkeeper", "run"]
