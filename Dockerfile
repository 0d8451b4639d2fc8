# Bing Chat API: docker build -t bing-chat-api . && docker run -p 22222:22222 -e BING_COOKIES=... bing-chat-api
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

# Settings come from the environment (BING_COOKIES, API_KEYS, ...); nothing is written into the image.
RUN useradd --system --uid 10001 --no-create-home bingapi
USER bingapi

EXPOSE 22222
CMD ["python", "-m", "apis.chat_api", "--host", "0.0.0.0", "--port", "22222"]
