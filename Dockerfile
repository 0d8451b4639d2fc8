# Bing Chat API. Build: docker build -t bing-chat-api .
# Run with an accounts file (see README, Deployment):
#   docker run -p 22222:22222 -v "$PWD/data:/data:ro" bing-chat-api
# or with one account:  docker run -p 22222:22222 -e BING_COOKIES_FILE= -e BING_COOKIES='_U=...' bing-chat-api
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY apis ./apis
COPY conversations ./conversations
COPY messagers ./messagers
COPY networks ./networks
COPY utils ./utils
COPY emulator ./emulator

# Accounts come from a file mounted read-only at /data (re-read when it changes, no restart); other
# settings from the environment (API_KEYS, ADMIN_KEY, LOG_FORMAT, ...). Nothing is written into the image.
ENV BING_COOKIES_FILE=/data/accounts.json
RUN useradd --system --uid 10001 --no-create-home bingapi && mkdir /data && chown bingapi /data
VOLUME ["/data"]
USER bingapi

EXPOSE 22222
# Liveness over loopback with the standard library (the slim image has no curl).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-m", "apis.healthcheck", "http://127.0.0.1:22222/health"]
# A stop waits SHUTDOWN_GRACE_SECONDS (10 s) for answers in flight: use `docker stop -t 15`.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "apis.chat_api", "--host", "0.0.0.0", "--port", "22222"]
