#!/usr/bin/env bash
# `make run`: a manager and two workers on loopback, a demo command on both,
# then the cluster stays up until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./bin/devops
DATA=./data
mkdir -p "$DATA/logs"
export MANAGER_HOST=127.0.0.1 MANAGER_PORT=50051

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "stopping the cluster..."
  # Commands outlive their workers by design (a worker restart must not kill
  # them), so end them first: the demo leaves nothing behind. Only the live
  # ones: the data dir keeps every process ever run, and a kill for each
  # made a stop take 25 s after a day of use.
  for state in PENDING RUNNING DISCONNECTED; do
    for id in $($BIN ps --state "$state" -o json 2>/dev/null | sed -n 's/^    "id": "\(.*\)",$/\1/p'); do
      $BIN kill --grace 2s "$id" >/dev/null 2>&1 || true
    done
  done
  # SIGTERM drains a worker: it leaves once its processes have ended.
  kill -TERM "${pids[@]:1}" 2>/dev/null || true
  wait "${pids[@]:1}" 2>/dev/null || true
  kill -TERM "${pids[0]}" 2>/dev/null || true
  wait "${pids[0]}" 2>/dev/null || true
}
trap cleanup INT TERM EXIT

# Each node in its own session: Ctrl-C reaches only this script, which then
# stops them in order (ends the commands, drains the workers, stops the manager).
setsid $BIN manager --listen 127.0.0.1:50051 --http 127.0.0.1:8080 --data-dir "$DATA/manager" >"$DATA/logs/manager.log" 2>&1 &
manager_pid=$!
pids+=($manager_pid)
# The manager must be ours: another one already on the port would take our workers.
for _ in $(seq 1 100); do
  if ! kill -0 "$manager_pid" 2>/dev/null; then
    echo "the manager did not start:" >&2
    cat "$DATA/logs/manager.log" >&2
    exit 1
  fi
  $BIN healthcheck >/dev/null 2>&1 && break
  sleep 0.1
done
# The manager made its CA, admin.token and join.token in its data dir at
# first start: the workers join with join.token, and the CLI below finds
# ./data/manager/ca.crt and ./data/manager/admin.token by itself.
setsid $BIN worker --name worker-1 --labels zone=a --listen 127.0.0.1:50061 --http 127.0.0.1:8081 --data-dir "$DATA/worker-1" --join-token-file "$DATA/manager/join.token" >"$DATA/logs/worker-1.log" 2>&1 &
pids+=($!)
setsid $BIN worker --name worker-2 --labels zone=b --listen 127.0.0.1:50062 --http 127.0.0.1:8082 --data-dir "$DATA/worker-2" --join-token-file "$DATA/manager/join.token" >"$DATA/logs/worker-2.log" 2>&1 &
pids+=($!)

echo "waiting for both workers to join..."
up=0
for _ in $(seq 1 100); do
  for i in 1 2; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      echo "worker-$i did not start:" >&2
      cat "$DATA/logs/worker-$i.log" >&2
      exit 1
    fi
  done
  up=$($BIN workers -o json 2>/dev/null | grep -c '"state": "WORKER_STATE_UP"' || true)
  [ "$up" -ge 2 ] && break
  sleep 0.1
done
if [ "$up" -lt 2 ]; then
  echo "the workers did not join within 10 s; see $DATA/logs" >&2
  exit 1
fi

echo
echo '$ devops run --all -- sh -c '"'"'for i in 1 2 3; do echo "step $i on $(hostname)"; sleep 0.3; done'"'"
$BIN run --all -- sh -c 'for i in 1 2 3; do echo "step $i on $(hostname)"; sleep 0.3; done'
echo
echo '$ devops workers'
$BIN workers
echo
echo '$ devops ps'
$BIN ps
cat <<TXT

The cluster is up (logs in $DATA/logs). In another terminal, try:
  export MANAGER_HOST=127.0.0.1 MANAGER_PORT=50051
  ./bin/devops run -- uname -a
  printf 'uname -r\\nid -un\\n' | ./bin/devops run --all -i -- sh
  ./bin/devops run --selector zone=a -- sh -c 'echo to stdout; echo to stderr >&2; exit 3'; echo "exit code \$?"
  ./bin/devops run --detach -- sh -c 'for i in \$(seq 100); do echo \$i; sleep 1; done'
  ./bin/devops logs -f --from 0 ID
  ./bin/devops kill ID
  ./bin/devops status ID

Press Ctrl-C to stop the cluster.
TXT
wait
