# Cortex Core server image. Data (the SQLite file and its generated signing key) lives in /data.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CORTEX_DATABASE_URL=sqlite+aiosqlite:////data/cortex.db

WORKDIR /app
COPY pyproject.toml README.md ./
COPY persistence ./persistence
COPY realtime ./realtime
RUN pip install . \
    && useradd --system --create-home --uid 10001 cortex \
    && mkdir /data \
    && chown cortex /data

USER cortex
VOLUME ["/data"]
EXPOSE 8000

# The slim image has no curl; the standard library makes the request.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]

CMD ["cortex-core", "serve", "--host", "0.0.0.0", "--port", "8000"]
