# crossgrad server image: `docker build -t crossgrad:0.1.0 .` (docker-compose.yml builds it too).
#
# Two stages: the builder makes the wheel and a virtualenv with crossgrad[server] at the versions
# in deploy/requirements.lock (those the tests ran with); the runtime stage is python slim plus
# that virtualenv, run as a non-root user. Graphviz is not installed: the server sends the DAG as
# DOT text (DescribeGraph) and never renders SVG; `crossgrad graph` renders on the client side.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first, in their own layer: they change far less often than the code.
COPY deploy/requirements.lock deploy/requirements.lock
RUN python -m venv /opt/crossgrad \
 && /opt/crossgrad/bin/pip install -r deploy/requirements.lock
COPY pyproject.toml README.md ./
COPY engine engine
COPY server server
COPY clients clients
COPY proto proto
RUN /opt/crossgrad/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/crossgrad/bin/pip install --constraint deploy/requirements.lock \
      "$(ls /wheels/crossgrad-*.whl)[server]" \
 && /opt/crossgrad/bin/crossgrad serve --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin crossgrad
COPY --from=builder /opt/crossgrad /opt/crossgrad
ENV PATH=/opt/crossgrad/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CROSSGRAD_HOST=0.0.0.0 \
    CROSSGRAD_PORT=50051 \
    CROSSGRAD_METRICS_PORT=9100
USER crossgrad
WORKDIR /home/crossgrad
# 50051: gRPC (Verify, VerifyStream, health, reflection); 9100: Prometheus /metrics over HTTP.
EXPOSE 50051 9100
# Shell form so that a changed CROSSGRAD_PORT is followed; the server is slow to start (JAX).
HEALTHCHECK --interval=10s --timeout=10s --start-period=60s --retries=3 \
    CMD crossgrad health --server "127.0.0.1:${CROSSGRAD_PORT}" || exit 1
# SIGTERM (docker stop) drains: in-flight calls finish, new ones get UNAVAILABLE.
STOPSIGNAL SIGTERM
CMD ["crossgrad", "serve"]
