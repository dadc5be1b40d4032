#!/usr/bin/env bash
# Makes sure the Redis and PostgreSQL servers that the tests use are running on loopback, and
# that PostgreSQL has the test role. Reuses servers that already answer; starts them otherwise.
#
#   scripts/services.sh [-q]
#
# Settings (environment):
#   COUPONCORE_REDIS_PORT    Redis port on 127.0.0.1              (default 6379)
#   COUPONCORE_PG_PORT       PostgreSQL port on 127.0.0.1         (default 5432)
#   COUPONCORE_PG_CLUSTER    Debian cluster name to start/create  (default main)
#   COUPONCORE_PG_USER       test role                            (default couponcore_test)
#   COUPONCORE_PG_PASSWORD   its password                         (default couponcore_test)
#
# PostgreSQL authentication. Machines differ: here loopback and the socket use `trust`; a fresh
# Debian install uses `peer` on the socket and scram-sha-256 on 127.0.0.1. Rather than edit
# pg_hba.conf (a system file, possibly shared with other work), the tests log in over TCP as a
# dedicated role with a password, which works under trust, md5 and scram alike. The role is
# created (or its password reset) once, as the `postgres` OS user over the Unix socket, where
# Debian's default `peer` rule lets that user in; this needs root (runuser) or sudo. The role has
# LOGIN and CREATEDB only, not SUPERUSER: it creates and drops the throwaway test databases, which
# it then owns. The fixed password is acceptable because Debian's PostgreSQL listens on localhost
# only and the role can touch nothing but databases it created.
set -euo pipefail

quiet=0
[[ "${1:-}" == -q ]] && quiet=1
say() { ((quiet)) || echo "services: $*"; }
die() { echo "services: error: $*" >&2; exit 1; }

REDIS_PORT="${COUPONCORE_REDIS_PORT:-6379}"
PG_PORT="${COUPONCORE_PG_PORT:-5432}"
PG_CLUSTER="${COUPONCORE_PG_CLUSTER:-main}"
PG_USER="${COUPONCORE_PG_USER:-couponcore_test}"
PG_PASSWORD="${COUPONCORE_PG_PASSWORD:-couponcore_test}"

as_root=()
[[ "$(id -u)" == 0 ]] || as_root=(sudo)

# wait_for SECONDS DESCRIPTION CMD...: polls CMD every 0.25 s until it succeeds or time runs out.
wait_for() {
  local seconds="$1" what="$2"
  shift 2
  local tries=$((seconds * 4))
  for ((i = 0; i < tries; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  return 1
}

# ---------------------------------------------------------------------------------------------
# Redis
redis_up() { [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }

command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
  die "redis-server/redis-cli not found: run scripts/install-deps.sh --servers"

if redis_up; then
  say "redis: reusing the server on 127.0.0.1:$REDIS_PORT"
else
  say "redis: starting on 127.0.0.1:$REDIS_PORT"
  "${as_root[@]}" mkdir -p /var/lib/redis /var/log/redis
  # No persistence: the test data is throwaway, and nothing is written to disk.
  "${as_root[@]}" redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
    --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for 30 redis redis_up ||
    die "redis did not answer PING on 127.0.0.1:$REDIS_PORT within 30 s (see /var/log/redis/ci.log)"
  say "redis: up"
fi

# ---------------------------------------------------------------------------------------------
# PostgreSQL
pg_up() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; }

command -v pg_isready >/dev/null && command -v pg_ctlcluster >/dev/null ||
  die "PostgreSQL tools not found: run scripts/install-deps.sh --servers"

if pg_up; then
  say "postgres: reusing the server on 127.0.0.1:$PG_PORT"
else
  version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)"
  if [[ -z "$version" || ! -d "/etc/postgresql/$version/$PG_CLUSTER" ]]; then
    # No cluster yet (e.g. the package was installed with create_main_cluster = false): create
    # one for the newest installed server version, on our port.
    [[ -n "$version" ]] || version="$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -1)"
    [[ -n "$version" ]] || die "no PostgreSQL server installed: run scripts/install-deps.sh --servers"
    say "postgres: creating cluster $version/$PG_CLUSTER on port $PG_PORT"
    "${as_root[@]}" pg_createcluster "$version" "$PG_CLUSTER" --port "$PG_PORT" >/dev/null
  fi
  cluster_port="$(pg_conftool -s "$version" "$PG_CLUSTER" show port 2>/dev/null || echo "$PG_PORT")"
  [[ "$cluster_port" == "$PG_PORT" ]] ||
    die "cluster $version/$PG_CLUSTER is configured for port $cluster_port, not $PG_PORT: set COUPONCORE_PG_PORT=$cluster_port"
  if pg_lsclusters -h "$version" "$PG_CLUSTER" 2>/dev/null | awk '{print $4}' | grep -qx online; then
    die "cluster $version/$PG_CLUSTER is running but 127.0.0.1:$PG_PORT does not answer (listen_addresses?)"
  fi
  say "postgres: starting cluster $version/$PG_CLUSTER"
  # --skip-systemctl-redirect: start it directly, also where systemd is not running (containers).
  "${as_root[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" "$PG_CLUSTER" start
  wait_for 60 postgres pg_up ||
    die "postgres did not accept connections on 127.0.0.1:$PG_PORT within 60 s (see /var/log/postgresql/)"
  say "postgres: up"
fi

# The test role: try to log in with it first; only if that fails, (re)create it as `postgres`.
role_ok() {
  PGPASSWORD="$PG_PASSWORD" PGCONNECT_TIMEOUT=10 psql -X -q -At -h 127.0.0.1 -p "$PG_PORT" \
    -U "$PG_USER" -d postgres -c 'SELECT rolcreatedb FROM pg_roles WHERE rolname = current_user' \
    2>/dev/null | grep -qx t
}

# Runs psql as the PostgreSQL superuser: as the `postgres` OS user over the socket (peer or trust
# auth), falling back to TCP as user postgres (works where loopback is trust or PGPASSWORD is set).
# The SQL comes on stdin; it is read once so that each attempt gets all of it.
pg_superuser_psql() {
  local args=(-X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres "$@") sql
  sql="$(cat)"
  if [[ "$(id -u)" == 0 ]]; then
    (cd / && runuser -u postgres -- psql "${args[@]}" <<<"$sql") 2>/dev/null && return 0
  elif command -v sudo >/dev/null; then
    (cd / && sudo -n -u postgres psql "${args[@]}" <<<"$sql") 2>/dev/null && return 0
  fi
  PGCONNECT_TIMEOUT=10 psql -h 127.0.0.1 -U postgres "${args[@]}" <<<"$sql"
}

if role_ok; then
  say "postgres: role $PG_USER can log in"
else
  [[ "$PG_USER" =~ ^[a-z_][a-z0-9_]*$ ]] || die "COUPONCORE_PG_USER must match [a-z_][a-z0-9_]*"
  say "postgres: creating role $PG_USER (LOGIN CREATEDB, password auth)"
  pg_superuser_psql -v role="$PG_USER" -v password="$PG_PASSWORD" <<'SQL' ||
SELECT format('CREATE ROLE %I', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN CREATEDB PASSWORD %L', :'role', :'password') \gexec
SQL
    die "could not connect as the PostgreSQL superuser to create role $PG_USER"
  role_ok || die "role $PG_USER still cannot log in over 127.0.0.1:$PG_PORT; check pg_hba.conf"
fi
