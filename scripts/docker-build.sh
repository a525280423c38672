#!/usr/bin/env bash
# `make docker-build`: the manager and worker images, with no registry.
#
# The static binary (bin/devops, CGO_ENABLED=0) is built on the host by make
# and copied into a small staged build context with the host's CA bundle,
# so the legacy builder sends a few MB instead of the whole tree. The worker's
# base is BASE_IMAGE; when it is the local busybox base and missing, it is
# built first by scripts/docker-base.sh.
#
# Environment: BIN (bin/devops), IMAGE_PREFIX (devops), TAG (latest),
# VERSION, REVISION, BASE_IMAGE (devops-base:busybox).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-bin/devops}
IMAGE_PREFIX=${IMAGE_PREFIX:-devops}
TAG=${TAG:-latest}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
REVISION=${REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
BASE_IMAGE=${BASE_IMAGE:-devops-base:busybox}
CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
CA=/etc/ssl/certs/ca-certificates.crt

[ -x "$BIN" ] || { echo "$BIN is missing: run make build" >&2; exit 1; }
[ -f "$CA" ] || { echo "$CA is missing: apt-get install ca-certificates" >&2; exit 1; }

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  if [ "$BASE_IMAGE" = devops-base:busybox ]; then
    scripts/docker-base.sh "$BASE_IMAGE"
  else
    echo "base image $BASE_IMAGE is not present; docker build will try to pull it"
  fi
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
# manager/ and worker/ are copied to / as they are; data/ becomes the
# manager's /data, owned by its uid.
mkdir -p "$ctx/data" "$ctx/manager/usr/local/bin" "$ctx/manager/etc/ssl/certs" "$ctx/manager/tmp" \
  "$ctx/worker/usr/local/bin" "$ctx/worker/data"
cp "$BIN" "$ctx/manager/usr/local/bin/devops"
ln "$ctx/manager/usr/local/bin/devops" "$ctx/worker/usr/local/bin/devops"
chmod 1777 "$ctx/manager/tmp"
chmod 0755 "$ctx/data" "$ctx/worker/data"
cp "$CA" "$ctx/manager/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/:/sbin/nologin\ndevops:x:10001:10001:devops:/data:/sbin/nologin\n' >"$ctx/manager/etc/passwd"
printf 'root:x:0:\ndevops:x:10001:\n' >"$ctx/manager/etc/group"

args=(--build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" --build-arg "CREATED=$CREATED")
for role in manager worker; do
  extra=()
  [ "$role" = worker ] && extra=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
  echo "building $IMAGE_PREFIX-$role:$TAG ($VERSION)"
  # The legacy builder (no buildx here) warns it is deprecated on every run.
  docker build -q "${args[@]}" "${extra[@]}" \
    -f "build/docker/$role.Dockerfile" -t "$IMAGE_PREFIX-$role:$TAG" "$ctx" 2> >(grep -v -e DEPRECATED -e buildx -e docs.docker.com -e '^ *$' >&2) >/dev/null
done
docker image ls --format 'table {{.Repository}}:{{.Tag}}\t{{.Size}}' | grep -E "^($IMAGE_PREFIX-(manager|worker):$TAG|$BASE_IMAGE)\b" || true
