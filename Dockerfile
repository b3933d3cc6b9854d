# syntax=docker/dockerfile:1
# zonechat: the whole cluster (managed Redis, gates, login, center, zones, dc, log) in one
# container, run by its own supervisor (`zonechat up` in the foreground).
#
#   docker build -t zonechat .
#   docker run --init --ulimit nofile=20000:20000 --stop-timeout 120 \
#       -p 7700:7700 -p 7701:7701 -p 7710:7710 -p 7711:7711 -p 127.0.0.1:7790:7790 \
#       -v zonechat-data:/var/lib/zonechat \
#       -v "$PWD/config.yaml:/etc/zonechat/config.yaml:ro" zonechat
#
# The built-in config is docs/deploy/config.docker.yaml (no secret in it: the first start
# generates one in the volume); mount your own over /etc/zonechat/config.yaml. See "Containers and systemd" in
# docs/operations.md. Checked with hadolint 2.15; not built in this repository's CI (no
# Docker daemon there).

# -- build: the zonechat wheel and the wheels of every dependency ----------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# the whole context, less what .dockerignore leaves out (this stage is thrown away)
COPY . .
RUN pip wheel --wheel-dir /wheels .

# -- run: the installed wheels, a non-root user, the data volume ------------------------
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ZONECHAT_CONFIG=/etc/zonechat/config.yaml

RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/zonechat-*.whl \
    && groupadd --system --gid 10001 zonechat \
    && useradd --system --uid 10001 --gid zonechat --home-dir /var/lib/zonechat \
       --no-create-home --shell /usr/sbin/nologin zonechat \
    && install -d -o zonechat -g zonechat -m 0750 /var/lib/zonechat

COPY docs/deploy/config.docker.yaml /etc/zonechat/config.yaml

USER 10001:10001
WORKDIR /var/lib/zonechat
VOLUME ["/var/lib/zonechat"]

# gate1 TCP, gate1 WebSocket + chat page, gate2 TCP, gate2 WebSocket, center's admin API
EXPOSE 7700 7701 7710 7711 7790

# `zonechat status` exits 0 when every process runs, 3 when degraded, 1 when none does;
# Docker defines only 0 (healthy) and 1 (unhealthy).
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["sh", "-c", "zonechat status || exit 1"]

# SIGTERM (docker stop) makes the supervisor stop the tiers in reverse order.
STOPSIGNAL SIGTERM
CMD ["zonechat", "up"]
