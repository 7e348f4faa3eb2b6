#!/usr/bin/env bash
# Build the agent image for the Docker backend from docker/agent.Dockerfile.
#   ./scripts/build-agent-image.sh [TAG] [docker build args...]
# TAG defaults to nanoclaw-agent:latest, the image `[sandbox] docker_image` names by default.
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-nanoclaw-agent:latest}"
shift || true
DOCKER_BUILDKIT=0 docker build -q -t "$tag" -f docker/agent.Dockerfile "$@" docker/
