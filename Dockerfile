FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY sms_gateway ./sms_gateway
# A non-root user owning /data, the volume the SQLite store lives in.
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --create-home gateway \
    && mkdir /data && chown gateway:gateway /data
USER gateway
WORKDIR /data
VOLUME /data
ENV HTTP_HOST=0.0.0.0 HTTP_PORT=9080 STORE_URL=sqlite:////data/sms-gateway.db SHUTDOWN_DRAIN_SECONDS=2
EXPOSE 9080
# `serve` drains on SIGTERM (SHUTDOWN_DRAIN_SECONDS), then gives turns and sends in flight 10 s each: stop the
# container with more time than Docker's default 10 s, e.g. `docker stop -t 45` or compose's stop_grace_period.
STOPSIGNAL SIGTERM
# Liveness on whatever HTTP_PORT the container is run with (read when the check runs).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('HTTP_PORT', '9080') + '/health', timeout=4)"
CMD ["sms-gateway", "serve"]
