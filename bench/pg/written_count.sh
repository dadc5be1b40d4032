#!/bin/bash
# Side by side, alternating: pgbench with 2 clients (the worker's 2 writer threads) on one
# campaign, 1,000-row transactions without and with the count's upsert. Usage (a throwaway
# database): bash scripts/with-test-env.sh bash bench/pg/written_count.sh [seconds] [rounds]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
url=${COUPONCORE_TEST_POSTGRES_URL:?run under scripts/with-test-env.sh}
secs=${1:-10}
rounds=${2:-3}
psql -q -v ON_ERROR_STOP=1 "$url" -f "$here/written_count_setup.sql"
for r in $(seq "$rounds"); do
  for mode in off on; do
    tps=$(pgbench -n -c 2 -j 2 -T "$secs" -f "$here/written_count_$mode.sql" "$url" 2>/dev/null |
      sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    echo "round $r $mode: $tps transactions/s ($(printf '%.0f' "$(echo "$tps * 1000" | bc)") rows/s)"
  done
done
psql -q "$url" -c "DROP TABLE bw_rows, bw_written"
