#!/usr/bin/env bash
# Builds flowguard's images from scratch with static binaries: nothing is pulled.
#
#   deploy/build-images.sh            # flowguard/worker, flowguard/publisher, flowguard/nats, tag "local"
#   TAG=v1 deploy/build-images.sh     # another tag
#
# flowguard/nats is nats-server at the version in go.mod; docker-compose.yml uses it
# when NATS_IMAGE=flowguard/nats:local (the default is the official nats image).
set -euo pipefail
cd "$(dirname "$0")/.."

tag="${TAG:-local}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

# Static binaries (no cgo), with the time zone database built in for
# --trading-day-zone, since a scratch image has none.
CGO_ENABLED=0 go build -trimpath -tags timetzdata -ldflags='-s -w' -o "$out/bin/" \
  ./cmd/worker ./cmd/publisher github.com/nats-io/nats-server/v2

# One build context per image, holding its binary alone.
for image in worker publisher nats; do
  binary="$image"
  [ "$image" = nats ] && binary=nats-server
  mkdir "$out/$image"
  mv "$out/bin/$binary" "$out/$image/"
  # Quiet unless it fails (the legacy builder warns on every build where buildx is missing).
  if ! log=$(docker build -f "deploy/$image.Dockerfile" -t "flowguard/$image:$tag" "$out/$image" 2>&1); then
    echo "$log" >&2
    exit 1
  fi
  echo "built flowguard/$image:$tag"
done
