# syntax=docker/dockerfile:1
# Build stage: wheels for the project and its pinned dependencies.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md supervisor.py runtime.py ./
COPY actors ./actors
COPY demo ./demo
COPY grants ./grants
COPY http_api ./http_api
COPY observability ./observability
COPY planner ./planner
COPY upstream ./upstream
COPY settings ./settings
COPY store ./store
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[tracing]"

# Runtime stage: only the installed wheels, run as an unprivileged user.
FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/mana-ai --create-home mana-ai \
 && mkdir -p /var/lib/mana-ai/state && chown -R mana-ai:mana-ai /var/lib/mana-ai
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER mana-ai
WORKDIR /var/lib/mana-ai
# Without SYNC_DATABASE_URL the daemon starts an embedded PostgreSQL under this directory.
# The container serves every interface, so it needs MANA_SERVICE_KEY (a secret of at least 16
# characters, e.g. `openssl rand -hex 32`): without one it refuses to start (exit code 2),
# as the postgres image does without POSTGRES_PASSWORD.
ENV MANA_AI_STATE_DIR=/var/lib/mana-ai/state \
    MANA_AI_HOST=0.0.0.0 \
    PORT=3067 \
    PYTHONUNBUFFERED=1
VOLUME ["/var/lib/mana-ai/state"]
EXPOSE 3067
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '3067'), timeout=5).status == 200 else 1)"]
STOPSIGNAL SIGTERM
CMD ["mana-ai", "serve"]
