# The strangler image: one image runs the monolith, the proxy and the services
# (the command picks which). Used by docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    STRANGLER_DATA_DIR=/data

WORKDIR /app
COPY . .
# Editable install: the alembic environments under migrations/ stay beside the code.
RUN pip install -e . \
    && useradd --create-home --uid 10001 strangler \
    && mkdir -p /data && chown strangler /data
USER strangler
VOLUME ["/data"]
EXPOSE 8080 8001 8101 8102 8103

CMD ["strangler", "up", "--host", "0.0.0.0"]
