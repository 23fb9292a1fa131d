#!/usr/bin/env bash
# A window far larger than the state budget: nexmark bids → TUMBLE 10 s per (bidder, auction),
# COUNT(*) and SUM(price) → CSV files. All events fall in one window (the generator's event time
# spans EVENTS / 10M seconds), so the whole state is one window that fires at the end of input.
# Runs without a budget and with MEMORY, reports wall, CPU (user + sys) and peak RSS, and checks
# that both runs wrote the same rows.
#
#   benches/window_budget.sh BINARY [EVENTS=20000000] [MEMORY=32MB]
set -euo pipefail
bin=$(realpath "$1"); events=${2:-20000000}; memory=${3:-32MB}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cd "$work"
for m in none "$memory"; do
  cat > "w-$m.sql" <<SQL
CREATE TABLE bids (
  event_type INT,
  bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, dateTime TIMESTAMP(3), extra STRING>,
  dateTime AS bid.dateTime,
  WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND
) WITH ('connector' = 'nexmark', 'events.num' = '$events', 'first-event.rate' = '10000000', 'base-time' = '2026-01-01 00:00:00');
CREATE TABLE out (bidder BIGINT, auction BIGINT, ws TIMESTAMP(3), n BIGINT, p BIGINT)
  WITH ('connector' = 'filesystem', 'path' = 'out-$m', 'format' = 'csv');
INSERT INTO out SELECT bid.bidder, bid.auction, window_start, COUNT(*), SUM(bid.price)
FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(dateTime), INTERVAL '10' SECOND)) WHERE event_type = 2
GROUP BY bid.bidder, bid.auction, window_start, window_end;
SQL
  args=(); [ "$m" != none ] && args=(--memory "$m")
  /usr/bin/time -f "budget $m: wall %e s, cpu %U + %S s, peak RSS %M KB" "$bin" run "w-$m.sql" "${args[@]}" 2>&1 | tail -1
  find "out-$m" -name '*.csv' -exec cat {} + | sort | md5sum > "sum-$m"
done
if cmp -s sum-none "sum-$memory"; then echo "same rows: yes"; else echo "same rows: NO"; exit 1; fi
