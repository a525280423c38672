#!/usr/bin/env bash
# `make ci-test`: starts the docker-compose cluster under its own project name
# (so it never touches a cluster started with a plain `docker-compose up`),
# with short failure timings, runs the e2e suite (go test -tags e2e ./e2e/...)
# from the host against it, and always tears it down with its volumes: on
# success, on failure and on Ctrl-C. On failure it prints the containers' logs
# first. The images must exist (make ci-test runs make docker-build first).
#
# Environment: CI_PROJECT (devops-ci), CI_PORT (50051, the manager's port on
# the host), IMAGE_PREFIX, TAG, BIN (bin/devops), E2E_RUN (a go test -run
# pattern).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

export COMPOSE_PROJECT_NAME=${CI_PROJECT:-devops-ci}
export DEVOPS_PORT=${CI_PORT:-50051}
export DEVOPS_IMAGE_PREFIX=${IMAGE_PREFIX:-devops} DEVOPS_TAG=${TAG:-latest}
# Short timings so that the failure tests notice within seconds; the
# partition test cuts a worker off for less than the process's own
# --disconnect-grace.
export DEVOPS_WORKER_TIMEOUT=3s DEVOPS_HEALTH_INTERVAL=1s DEVOPS_DISCONNECT_GRACE=1m
BIN=${BIN:-bin/devops}

compose() { docker-compose --no-ansi -f docker-compose.yml "$@"; }

status=0
gotest= # the pid (and process group) of go test while it runs
teardown() {
  trap - EXIT INT TERM
  if [ -n "$gotest" ] && kill -0 "$gotest" 2>/dev/null; then
    echo "--- stopping the e2e suite"
    kill -TERM -- "-$gotest" 2>/dev/null || true
    wait "$gotest" 2>/dev/null || true
  fi
  if [ "$status" != 0 ]; then
    echo "--- ci-test failed ($status): the containers' last logs"
    docker-compose --no-ansi -f docker-compose.yml logs --no-color --tail=60 2>/dev/null || true
  fi
  echo "--- tearing down $COMPOSE_PROJECT_NAME"
  compose down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true
  echo "ci-test: exit $status after $(( $(date +%s) - start ))s"
  exit "$status"
}
trap 'status=$?; teardown' EXIT
trap 'status=130; teardown' INT
trap 'status=143; teardown' TERM

if (exec 3<>"/dev/tcp/127.0.0.1/$DEVOPS_PORT") 2>/dev/null; then
  echo "port $DEVOPS_PORT is in use (a local 'make run'?): stop it or set CI_PORT" >&2
  status=1
  exit 1
fi

echo "--- starting $COMPOSE_PROJECT_NAME (manager on localhost:$DEVOPS_PORT)"
compose down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 # leftovers of an aborted run
compose up -d

# The manager is secure by default: the CLI on the host needs its CA and
# admin token, which it writes in its volume on first start.
creds=$(mktemp -d)
for _ in $(seq 1 300); do
  cid=$(compose ps -q manager)
  if [ -n "$cid" ] && docker cp "$cid:/data/ca.crt" "$creds/ca.crt" 2>/dev/null &&
     docker cp "$cid:/data/admin.token" "$creds/admin.token" 2>/dev/null; then
    break
  fi
  sleep 0.1
done
export DEVOPS_CA=$creds/ca.crt DEVOPS_TOKEN=$(cat "$creds/admin.token")

echo "--- e2e suite"
# go test runs as a background job in its own process group (set -m) and is
# waited for: a signal to this script then runs the trap at once, which ends
# the whole group (go and the test binary) before tearing down.
set -m
DEVOPS_E2E_MANAGER=localhost:$DEVOPS_PORT DEVOPS_E2E_BIN=$PWD/$BIN DEVOPS_E2E_REQUIRE=1 \
  go test -tags e2e -count=1 -v -timeout 10m ${E2E_RUN:+-run "$E2E_RUN"} ./e2e/... &
gotest=$!
set +m
wait "$gotest" || status=$?
gotest=
exit "$status"
