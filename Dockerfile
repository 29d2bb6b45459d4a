# customer-sync: one container, config and SQLite store in the /data volume. See docs/container.md.
# tests/integration/test_container.py runs this file's install steps, entrypoint and HEALTHCHECK
# as written (parsed from here) and lints it with hadolint: keep the instructions in the forms
# that test reads (exec-form JSON for ENTRYPOINT, CMD and HEALTHCHECK).
FROM python:3.11-slim-bookworm

# tini is PID 1: it forwards SIGTERM to the daemon and reaps the worker processes the daemon
# starts, which a plain PID 1 leaves as zombies.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

WORKDIR /app

# Dependencies first, exactly as locked (with hashes): this layer is rebuilt only when the lock
# changes, not on every source edit. Regenerate the lock as docs/container.md says.
COPY docker/requirements.lock ./docker/
RUN python -m venv /opt/venv \
    && pip install --require-hashes -r docker/requirements.lock

# Then the project itself: no dependency resolution (the lock has them all, `pip check` proves it)
# and no build isolation (setuptools and wheel come from the lock too, not from the index).
COPY pyproject.toml README.md ./
COPY src ./src
COPY connectors ./connectors
RUN pip install --no-deps --no-build-isolation . \
    && pip check

COPY docker/config.toml /etc/customer-sync/config.toml

# A fixed uid/gid (10001) that owns /data: chown a bind-mounted directory to it.
RUN useradd --no-log-init --system --user-group --uid 10001 --home-dir /data --no-create-home sync \
    && mkdir /data \
    && chown 10001:10001 /data

USER 10001:10001
WORKDIR /data
VOLUME ["/data"]

ENV CUSTOMER_SYNC_CONFIG=/etc/customer-sync/config.toml \
    CUSTOMER_SYNC_DAEMON__LISTEN=0.0.0.0:8080
EXPOSE 8080

# /healthz answers while the process serves (it touches nothing else). The start period covers
# the first start (migrations, apps opened); the port follows CUSTOMER_SYNC_DAEMON__LISTEN.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('CUSTOMER_SYNC_DAEMON__LISTEN', ':8080').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]

ENTRYPOINT ["tini", "--", "customer-sync"]
CMD ["run"]
