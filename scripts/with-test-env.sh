#!/usr/bin/env bash
# Runs a command with the environment the server tests need, and cleans up after it:
#
#   scripts/with-test-env.sh CMD [ARGS...]      e.g. scripts/with-test-env.sh .venv/bin/python -m pytest -k redis
#   scripts/with-test-env.sh bash               an interactive shell with the variables set
#
# It makes sure Redis and PostgreSQL run (scripts/services.sh), creates a throwaway database for
# this run, exports
#
#   COUPONCORE_TEST_REDIS_URL            redis://127.0.0.1:6379/9      (db 9: the suite may flush it)
#   COUPONCORE_TEST_KEY_PREFIX           cctest:<epoch>_<pid>:         (unique per run)
#   COUPONCORE_TEST_POSTGRES_URL         postgresql://couponcore_test:couponcore_test@127.0.0.1:5432/couponcore_test_<epoch>_<pid>
#   COUPONCORE_TEST_POSTGRES_ADMIN_URL   postgresql://couponcore_test:couponcore_test@127.0.0.1:5432/postgres
#   COUPONCORE_TEST_POSTGRES_DB          couponcore_test_<epoch>_<pid> (the database's name alone)
#   COUPONCORE_TEST_REDIS_CLUSTER        redis+cluster://127.0.0.1:7100,...  (scripts/cluster.sh:
#                                        3 masters + 3 replicas on loopback, started or reused)
#
# runs CMD, and afterwards (also on failure or Ctrl-C) drops the run's database -- and any other
# database whose name starts with it, so tests that make extra databases through the admin URL
# should name them "$COUPONCORE_TEST_POSTGRES_DB"_something -- and deletes the run's Redis keys.
# Databases left by runs that were killed outright are dropped by the next run. Exits with CMD's
# exit status.
#
# Presets: a COUPONCORE_TEST_REDIS_URL or COUPONCORE_TEST_KEY_PREFIX already in the environment
# is kept. A preset COUPONCORE_TEST_POSTGRES_ADMIN_URL points the run at another server (the
# database is created there); a preset COUPONCORE_TEST_POSTGRES_URL is used as it is, with no
# database created or dropped. With COUPONCORE_TEST_REDIS_URL and COUPONCORE_TEST_POSTGRES_ADMIN_URL
# both preset, scripts/services.sh is not run. A preset COUPONCORE_TEST_REDIS_CLUSTER is kept;
# COUPONCORE_TEST_NO_CLUSTER=1 skips the cluster (its tests then skip).
set -euo pipefail

if (($# == 0)); then
  sed -n '2,5s/^# \{0,1\}//p' "$0" >&2
  exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "test-env: $*" >&2; }

REDIS_PORT="${COUPONCORE_REDIS_PORT:-6379}"
REDIS_DB="${COUPONCORE_TEST_REDIS_DB:-9}"
PG_PORT="${COUPONCORE_PG_PORT:-5432}"
PG_USER="${COUPONCORE_PG_USER:-couponcore_test}"
PG_PASSWORD="${COUPONCORE_PG_PASSWORD:-couponcore_test}"

if [[ -z "${COUPONCORE_TEST_POSTGRES_ADMIN_URL:-}" || -z "${COUPONCORE_TEST_REDIS_URL:-}" ]]; then
  bash "$here/services.sh" -q
fi

if [[ -z "${COUPONCORE_TEST_REDIS_CLUSTER:-}" && "${COUPONCORE_TEST_NO_CLUSTER:-0}" != 1 ]]; then
  COUPONCORE_TEST_REDIS_CLUSTER="$(bash "$here/cluster.sh" start -q)" ||
    { log "error: the test Redis Cluster did not start (scripts/cluster.sh start; COUPONCORE_TEST_NO_CLUSTER=1 skips it)"; exit 1; }
  export COUPONCORE_TEST_REDIS_CLUSTER
fi

epoch="$(date +%s)"
run_id="${epoch}_$$"

export COUPONCORE_TEST_REDIS_URL="${COUPONCORE_TEST_REDIS_URL:-redis://127.0.0.1:${REDIS_PORT}/${REDIS_DB}}"
export COUPONCORE_TEST_KEY_PREFIX="${COUPONCORE_TEST_KEY_PREFIX:-cctest:${run_id}:}"
export COUPONCORE_TEST_POSTGRES_ADMIN_URL="${COUPONCORE_TEST_POSTGRES_ADMIN_URL:-postgresql://${PG_USER}:${PG_PASSWORD}@127.0.0.1:${PG_PORT}/postgres}"
admin_url="$COUPONCORE_TEST_POSTGRES_ADMIN_URL"

admin_psql() { PGCONNECT_TIMEOUT=10 psql -X -q -At -v ON_ERROR_STOP=1 "$admin_url" "$@"; }

# Drops every database whose name starts with $1, closing its connections first (PostgreSQL 13+).
drop_databases_with_prefix() {
  admin_psql -v prefix="$1" <<'SQL'
SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', datname)
  FROM pg_database WHERE starts_with(datname, :'prefix') \gexec
SQL
}

own_db=""
if [[ -n "${COUPONCORE_TEST_POSTGRES_URL:-}" ]]; then
  export COUPONCORE_TEST_POSTGRES_DB="${COUPONCORE_TEST_POSTGRES_DB:-}"
else
  # Databases of earlier runs that never cleaned up (killed): their process is gone, or they are
  # more than a day old. Only the test role's own databases can be dropped by it anyway.
  while IFS= read -r name; do
    [[ "$name" =~ ^couponcore_test_([0-9]+)_([0-9]+) ]] || continue
    then_epoch="${BASH_REMATCH[1]}" pid="${BASH_REMATCH[2]}"
    if [[ ! -d "/proc/$pid" ]] || ((epoch - then_epoch > 86400)); then
      log "dropping stale database $name"
      admin_psql -v name="$name" <<<"SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', :'name') \gexec" ||
        log "warning: could not drop $name"
    fi
  done < <(admin_psql -c "SELECT datname FROM pg_database
                           WHERE datname ~ '^couponcore_test_[0-9]+_[0-9]+'
                             AND pg_get_userbyid(datdba) = current_user" ||
           log "warning: could not list stale databases")

  own_db="couponcore_test_${run_id}"
  admin_psql -v name="$own_db" <<<"SELECT format('CREATE DATABASE %I', :'name') \gexec"
  export COUPONCORE_TEST_POSTGRES_DB="$own_db"
  # Same server and credentials as the admin URL, our database instead of the path's.
  base="${admin_url%%\?*}"
  query=""
  [[ "$admin_url" == *\?* ]] && query="?${admin_url#*\?}"
  authority="${base#*://}"
  authority="${authority%%/*}"
  export COUPONCORE_TEST_POSTGRES_URL="${base%%://*}://${authority}/${own_db}${query}"
fi

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [[ -n "$own_db" ]]; then
    drop_databases_with_prefix "$own_db" || log "warning: could not drop database $own_db"
  fi
  # Delete this run's Redis keys (UNLINK: non-blocking), 500 per call.
  redis-cli -u "$COUPONCORE_TEST_REDIS_URL" --scan --pattern "${COUPONCORE_TEST_KEY_PREFIX}*" 2>/dev/null |
    xargs -r -d '\n' -n 500 redis-cli -u "$COUPONCORE_TEST_REDIS_URL" unlink >/dev/null 2>&1 ||
    log "warning: could not delete Redis keys ${COUPONCORE_TEST_KEY_PREFIX}*"
  # The cluster's masters: one key per UNLINK (keys of different slots cannot share a call).
  if [[ -n "${COUPONCORE_TEST_REDIS_CLUSTER:-}" ]]; then
    local seed="${COUPONCORE_TEST_REDIS_CLUSTER#*://}" host port
    seed="${seed%%,*}" host="${seed%:*}" port="${seed##*:}"
    while read -r node; do
      [[ -n "$node" ]] || continue
      redis-cli -h "${node%:*}" -p "${node##*:}" --scan --pattern "${COUPONCORE_TEST_KEY_PREFIX}*" 2>/dev/null |
        sed 's/^/UNLINK /' | redis-cli -h "${node%:*}" -p "${node##*:}" >/dev/null 2>&1 || true
    done < <(redis-cli -h "$host" -p "$port" cluster nodes 2>/dev/null | awk '$3 ~ /master/ {sub(/@.*/, "", $2); print $2}')
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "redis $COUPONCORE_TEST_REDIS_URL prefix $COUPONCORE_TEST_KEY_PREFIX; postgres db ${COUPONCORE_TEST_POSTGRES_DB:-(preset)}"
status=0
"$@" || status=$?
exit "$status"
