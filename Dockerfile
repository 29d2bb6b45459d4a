# customer-sync: one container, SQLite store in a volume by default.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md config.example.toml ./
COPY src ./src
COPY connectors ./connectors
RUN pip install ".[postgres]" && useradd --create-home --uid 10001 sync \
    && mkdir -p /data && chown sync /data
USER sync
WORKDIR /data
VOLUME ["/data"]
# Inside a container: listen on every interface, keep the store in the volume.
ENV CUSTOMER_SYNC_CONFIG=/data/config.toml \
    CUSTOMER_SYNC_DAEMON__LISTEN=0.0.0.0:8080 \
    CUSTOMER_SYNC_DAEMON__STORE_URL=sqlite:////data/customer-sync.db
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=10s --retries=3 CMD ["customer-sync", "check"]
ENTRYPOINT ["customer-sync"]
CMD ["run"]
