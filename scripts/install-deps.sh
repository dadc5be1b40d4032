#!/usr/bin/env bash
# Installs the Debian 12 packages couponcore needs to build and test.
#
#   scripts/install-deps.sh            build packages (compiler, CMake, Ninja, libraries, GoogleTest, ...)
#   scripts/install-deps.sh --servers  also Redis and PostgreSQL, for `make test`
#   scripts/install-deps.sh --alerts   also Prometheus and Alertmanager with promtool and amtool,
#                                      for `make test-alerts` and `test-python`; `--servers` includes them
#   scripts/install-deps.sh --browser  also chromium, for the ops page's browser test; `--servers`
#                                      includes it
#
# Idempotent and cheap when nothing is missing: every package is checked with dpkg first, and
# apt-get (update + install) only runs for the missing ones. Uses sudo when not run as root.
set -euo pipefail

usage() { sed -n '2,12s/^# \{0,1\}//p' "$0"; }

servers=0 alerts=0 browser=0
for arg in "$@"; do
  case "$arg" in
    --servers) servers=1 alerts=1 browser=1 ;;
    --alerts) alerts=1 ;;
    --browser) browser=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "install-deps: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
  esac
done

packages=(
  make g++ cmake ninja-build pkg-config
  python3-venv python3-dev
  libhiredis-dev libpq-dev libsqlite3-dev libssl-dev
  libgtest-dev libbenchmark-dev
)
if ((servers)); then
  # redis-server brings redis-cli (redis-tools); postgresql brings pg_ctlcluster/pg_createcluster;
  # wrk is the HTTP load tool of `couponcore bench http`; redis-sentinel for redis+sentinel://
  # deployments (the tests start sentinels with `redis-server --sentinel`, the same binary).
  packages+=(redis-server redis-sentinel postgresql postgresql-client wrk)
fi
# Installed without recommends (no node exporter): their checkers, promtool (in
# prometheus) and amtool (in prometheus-alertmanager), and the servers the alerts end-to-end test
# starts on ports of its own (tests/python/test_alerts_e2e.py). Debian starts both daemons where systemd
# runs; they are not needed (`systemctl disable --now prometheus prometheus-alertmanager`).
lean=()
# Debian's chromium, driven headless by playwright (tests/python/test_ops_page.py); no recommends
# (no desktop integration; its fontconfig brings the DejaVu fonts the screenshots use).
if ((browser)); then
  lean+=(chromium)
  packages+=(chromium)
fi
if ((alerts)); then
  lean+=(prometheus prometheus-alertmanager)
  packages+=(prometheus prometheus-alertmanager)
fi

missing=() missing_lean=()
for pkg in "${packages[@]}"; do
  # Like `dpkg -s`, but a package that was removed with its config files left behind counts as missing.
  status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
  [[ "$status" == installed ]] && continue
  if [[ " ${lean[*]} " == *" $pkg "* ]]; then missing_lean+=("$pkg"); else missing+=("$pkg"); fi
done

if ((${#missing[@]} + ${#missing_lean[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} Debian packages present"
  exit 0
fi

sudo=()
if [[ "$(id -u)" != 0 ]]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "install-deps: missing packages (${missing[*]} ${missing_lean[*]}) and not root; install sudo or run as root" >&2
    exit 1
  fi
  sudo=(sudo)
fi

echo "install-deps: installing ${missing[*]} ${missing_lean[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
apt_install=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Use-Pty=0)
if ((${#missing[@]})); then "${apt_install[@]}" "${missing[@]}"; fi
if ((${#missing_lean[@]})); then "${apt_install[@]}" --no-install-recommends "${missing_lean[@]}"; fi
