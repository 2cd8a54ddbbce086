#!/usr/bin/env bash
# Start a Qdrant server in Docker (REST on :6333, gRPC on :6334, data in the volume
# qdrant_storage), for `mlx-embeddings-ingest --qdrant-url http://localhost:6333` and
# `examples/colqwen2.5_qdrant.py --qdrant-url http://localhost:6333`.
# Without Docker, skip this: both default to an embedded Qdrant (local mode) on disk.
#
#   scripts/qdrant-docker.sh            # start (or restart the stopped container)
#   scripts/qdrant-docker.sh stop       # stop it (data stays in the volume)
#   QDRANT_IMAGE=qdrant/qdrant:v1.15.0 scripts/qdrant-docker.sh
set -euo pipefail

NAME="${QDRANT_CONTAINER:-qdrant}"
IMAGE="${QDRANT_IMAGE:-qdrant/qdrant}"
VOLUME="${QDRANT_VOLUME:-qdrant_storage}"

if ! command -v docker >/dev/null 2>&1; then
    echo "docker is not installed; use the embedded Qdrant instead (no --qdrant-url)" >&2
    exit 1
fi

if ! docker info >/dev/null 2>&1; then
    echo "the Docker daemon is not running (docker info failed); start it, or use the embedded" \
        "Qdrant instead (no --qdrant-url)" >&2
    exit 1
fi

case "${1:-start}" in
stop)
    docker stop "$NAME"
    exit 0
    ;;
start) ;;
*)
    echo "usage: $0 [start|stop]" >&2
    exit 2
    ;;
esac

if docker container inspect "$NAME" >/dev/null 2>&1; then
    docker start "$NAME" >/dev/null
    echo "started the existing container $NAME"
else
    docker run -d --name "$NAME" -p 6333:6333 -p 6334:6334 \
        -v "$VOLUME":/qdrant/storage "$IMAGE" >/dev/null
    echo "started $IMAGE as container $NAME"
fi

for _ in $(seq 1 30); do
    if curl -fsS http://localhost:6333/readyz >/dev/null 2>&1; then
        echo "Qdrant is ready: http://localhost:6333 (dashboard: http://localhost:6333/dashboard)"
        exit 0
    fi
    sleep 1
done
echo "Qdrant did not answer on http://localhost:6333/readyz yet; see: docker logs $NAME" >&2
exit 1
