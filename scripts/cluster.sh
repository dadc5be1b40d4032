#!/usr/bin/env bash
# A Redis Cluster on loopback for the tests: 3 masters with one replica each.
#
#   scripts/cluster.sh start [-q]  start it (or reuse the one that answers); prints the seeds URL
#   scripts/cluster.sh stop      stop the nodes this script started and forget their state
#   scripts/cluster.sh status    cluster_state and the nodes; exit 1 if it is not up
#   scripts/cluster.sh url       the seeds URL, redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...
#
# Settings (environment):
#   COUPONCORE_CLUSTER_PORT   first of the 6 consecutive ports on 127.0.0.1  (default 7100)
#   COUPONCORE_CLUSTER_DIR    the nodes' files (configs, logs, pids)       (default build/redis-cluster)
#   COUPONCORE_CLUSTER_NODE_TIMEOUT_MS  cluster-node-timeout: how soon a dead master's replica
#                             takes over                                 (default 2000)
#
# Idempotent: `start` reuses a cluster that already answers with cluster_state:ok on those
# ports, and refuses to start when a port is taken by anything else. The nodes keep nothing on
# disk but their cluster config (no RDB, no AOF): `stop` then `start` builds a fresh cluster.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
PORT="${COUPONCORE_CLUSTER_PORT:-7100}"
DIR="${COUPONCORE_CLUSTER_DIR:-$root/build/redis-cluster}"
NODE_TIMEOUT="${COUPONCORE_CLUSTER_NODE_TIMEOUT_MS:-2000}"
NODES=6

die() { echo "cluster: error: $*" >&2; exit 1; }
quiet=0
[[ "${2:-}" == -q ]] && quiet=1
say() { ((quiet)) || echo "cluster: $*" >&2; }

[[ "$PORT" =~ ^[0-9]+$ ]] && ((PORT >= 1024 && PORT + NODES - 1 <= 65535)) ||
  die "COUPONCORE_CLUSTER_PORT must be 1024..$((65535 - NODES + 1))"
[[ "$NODE_TIMEOUT" =~ ^[0-9]+$ ]] && ((NODE_TIMEOUT >= 100)) || die "COUPONCORE_CLUSTER_NODE_TIMEOUT_MS must be >= 100"
ports=()
for ((i = 0; i < NODES; i++)); do ports+=($((PORT + i))); done

cli() { redis-cli -h 127.0.0.1 -p "$1" "${@:2}"; }
answers() { [[ "$(cli "$1" ping 2>/dev/null)" == PONG ]]; }
cluster_ok() { cli "${ports[0]}" cluster info 2>/dev/null | tr -d '\r' | grep -qx 'cluster_state:ok'; }
known_nodes() { cli "${ports[0]}" cluster info 2>/dev/null | tr -d '\r' | sed -n 's/^cluster_known_nodes://p'; }

url() {
  local seeds=()
  for p in "${ports[@]:0:3}"; do seeds+=("127.0.0.1:$p"); done
  (IFS=,; echo "redis+cluster://${seeds[*]}")
}

wait_for() {  # wait_for SECONDS CMD...
  local tries=$(($1 * 10))
  shift
  for ((t = 0; t < tries; t++)); do
    "$@" && return 0
    sleep 0.1
  done
  return 1
}

start() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
    die "redis-server/redis-cli not found: run scripts/install-deps.sh --servers"
  if cluster_ok && [[ "$(known_nodes)" == "$NODES" ]]; then
    say "reusing the cluster on 127.0.0.1:${ports[0]}..${ports[-1]}"
    url
    return 0
  fi
  mkdir -p "$DIR"
  local started=0
  for p in "${ports[@]}"; do
    if answers "$p"; then
      # Ours from an earlier, unfinished start? Then it has cluster support on.
      cli "$p" info cluster 2>/dev/null | tr -d '\r' | grep -qx 'cluster_enabled:1' ||
        die "port $p answers but is not a cluster node: set COUPONCORE_CLUSTER_PORT to a free range"
      continue
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      die "port $p is taken by something else: set COUPONCORE_CLUSTER_PORT to a free range"
    fi
    rm -f "$DIR/nodes-$p.conf"
    redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file "nodes-$p.conf" \
      --cluster-node-timeout "$NODE_TIMEOUT" --save "" --appendonly no --dir "$DIR" --daemonize yes \
      --pidfile "$DIR/redis-$p.pid" --logfile "$DIR/redis-$p.log"
    started=1
  done
  for p in "${ports[@]}"; do
    wait_for 20 answers "$p" || die "node $p did not answer within 20 s (see $DIR/redis-$p.log)"
  done
  if ! cluster_ok; then
    # Fresh nodes (or a half-made cluster): reset and create.
    for p in "${ports[@]}"; do
      cli "$p" flushall >/dev/null 2>&1 || true
      cli "$p" cluster reset hard >/dev/null
    done
    local addrs=()
    for p in "${ports[@]}"; do addrs+=("127.0.0.1:$p"); done
    say "creating the cluster on ${addrs[*]}"
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$DIR/create.log" 2>&1 ||
      die "redis-cli --cluster create failed (see $DIR/create.log)"
  fi
  full() { cluster_ok && [[ "$(known_nodes)" == "$NODES" ]]; }
  wait_for 30 full || die "the cluster did not reach cluster_state:ok within 30 s"
  # Every node agrees (a client may ask any of them for the slot map).
  all_ok() {
    for p in "${ports[@]}"; do
      cli "$p" cluster info 2>/dev/null | tr -d '\r' | grep -qx 'cluster_state:ok' || return 1
    done
  }
  wait_for 30 all_ok || die "not every node reports cluster_state:ok within 30 s"
  ((started)) && say "up on 127.0.0.1:${ports[0]}..${ports[-1]}"
  url
}

stop() {
  for p in "${ports[@]}"; do
    local pidfile="$DIR/redis-$p.pid"
    [[ -f "$pidfile" ]] || continue
    local pid
    pid="$(cat "$pidfile")"
    if [[ -d "/proc/$pid" ]] && grep -q redis-server "/proc/$pid/cmdline" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for ((t = 0; t < 50 && ${#pid} > 0; t++)); do
        [[ -d "/proc/$pid" ]] || break
        sleep 0.1
      done
    fi
    rm -f "$pidfile" "$DIR/nodes-$p.conf"
  done
  say "stopped"
}

status() {
  if cluster_ok; then
    cli "${ports[0]}" cluster nodes | awk '{print $2, $3, $9}'
    url
  else
    echo "cluster: not up on 127.0.0.1:${ports[0]}" >&2
    return 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  url) url ;;
  *) sed -n '2,7s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
esac
