# syntax=docker/dockerfile:1
# Build stage: a virtualenv with orgkeeper and its pinned dependencies.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/orgkeeper
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY crds ./crds
RUN /opt/orgkeeper/bin/pip install .

# Runtime stage: the virtualenv only; no compilers, no build tools, a non-root numeric user.
FROM python:3.11-slim
ENV PATH=/opt/orgkeeper/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
COPY --from=build /opt/orgkeeper /opt/orgkeeper
USER 65532:65532
EXPOSE 8080 9090 9443
ENTRYPOINT ["orgkeeper", "run"]
