FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# The dependencies first, at the locked versions, every file hash-checked: this
# layer is rebuilt only when requirements.lock changes (bin/lock writes it).
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock

COPY . .
# Conduit itself (its dependencies are installed above), the static files
# collected at build time, and a user without privileges to run it all.
RUN pip install --no-deps . \
    && SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput -v 0 \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin conduit \
    && rm -rf /app/var && mkdir /app/var && chown conduit /app/var
USER conduit

EXPOSE 8000 2525
# The web process is alive: /healthz answers 200 before any host check or
# dependency. The other processes from this image (worker, beat, ingress) set
# their own check in docker-compose.yml.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8000')}/healthz\", timeout=4)"]
CMD ["sh", "-c", "exec gunicorn conduit.wsgi --bind 0.0.0.0:${PORT:-8000} --workers ${WEB_CONCURRENCY:-3} --access-logfile -"]
