# syntax=docker/dockerfile:1
# Build stage: wheels for the project and every dependency at the version requirements.lock pins
# (transitive ones included; deploy/lock.sh regenerates it).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md requirements.lock supervisor.py runtime.py ./
COPY actors ./actors
COPY demo ./demo
COPY grants ./grants
COPY http_api ./http_api
COPY observability ./observability
COPY planner ./planner
COPY upstream ./upstream
COPY settings ./settings
COPY store ./store
RUN pip wheel --no-cache-dir --wheel-dir /wheels --constraint requirements.lock ".[tracing]"

# Runtime stage: only the installed wheels, run as an unprivileged user.
FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/mana-ai --create-home mana-ai \
 && mkdir -p /var/lib/mana-ai/state && chown -R mana-ai:mana-ai /var/lib/mana-ai
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
USER mana-ai
WORKDIR /var/lib/mana-ai
# Without SYNC_DATABASE_URL the daemon starts an embedded PostgreSQL under MANA_AI_STATE_DIR:
# mount a volume there (`-v mana-ai-state:/var/lib/mana-ai/state`) or its data goes with the
# container. No VOLUME here: with an external database (SYNC_DATABASE_URL) nothing is kept, and
# a VOLUME would give every container an anonymous volume all the same.
# The container serves every interface, so it needs MANA_SERVICE_KEY (a secret of at least 16
# characters, e.g. `openssl rand -hex 32`): without one it refuses to start (exit code 2),
# as the postgres image does without POSTGRES_PASSWORD.
ENV MANA_AI_STATE_DIR=/var/lib/mana-ai/state \
    MANA_AI_HOST=0.0.0.0 \
    PORT=3067 \
    PYTHONUNBUFFERED=1
EXPOSE 3067
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '3067'), timeout=5).status == 200 else 1)"]
# On SIGTERM the daemon takes up to MANA_AI_GRACE_S + 15 s (see deploy/compose.yaml), then an
# embedded PostgreSQL checkpoints: run with `docker run --stop-timeout 60` (Docker's default 10 s
# would SIGKILL a graceful stop).
STOPSIGNAL SIGTERM
CMD ["mana-ai", "serve"]
