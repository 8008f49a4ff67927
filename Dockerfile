# The raftmq broker image. Build from the repository root:  docker build -t raftmq:latest .
# The first stage builds wheels of raftmq and its dependencies; the runtime stage installs them
# from a bind mount (RUN --mount: BuildKit, the default builder since Docker 23), so neither the
# sources nor the wheels stay in the image. Run it with the settings `raftmq server --help` lists
# as RAFTMQ_* variables, or through deploy/k8s/ (docs/operations.md).

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cluster/ cluster/
COPY broker/ broker/
COPY client/ client/
COPY chaos/ chaos/
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# A numeric user (uid 10001), so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
RUN groupadd --system --gid 10001 raftmq \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/raftmq --shell /usr/sbin/nologin raftmq \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/raftmq
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/*.whl
USER 10001:10001
WORKDIR /var/lib/raftmq
# 7000: the Raft port (authenticated with the cluster secret); 8080: the HTTP API and /metrics.
EXPOSE 7000 8080
# Docker's own liveness check (Kubernetes uses the manifest's probes instead). The slim image has
# no curl; urlopen raises (exit 1) on a refused connection or a non-2xx answer.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('RAFTMQ_HTTP_PORT', '8080') + '/healthz', timeout=4)"]
# The same command as the StatefulSet's (deploy/k8s/statefulset.yaml); flags may follow it.
ENTRYPOINT ["raftmq", "server"]
