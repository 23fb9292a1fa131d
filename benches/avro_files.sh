#!/usr/bin/env bash
# Reads an Avro container file of 1.84M Nexmark bids (299 MB, uncompressed) with `flowline query`,
# timed by hyperfine, for each binary given (the first also writes the file).
# Usage: benches/avro_files.sh FLOWLINE [OTHER_FLOWLINE...]   (docs/BENCHMARKS.md, Avro files)
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 FLOWLINE [OTHER_FLOWLINE...]"; exit 2; }
command -v hyperfine >/dev/null || { echo "$0: needs hyperfine (apt-get install hyperfine)"; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
columns="auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, dateTime TIMESTAMP(3), extra STRING"
cat > "$dir/w.sql" <<EOF
SET 'parallelism.default' = '1';
CREATE TABLE bids (event_type INT, bid ROW<$columns>)
  WITH ('connector' = 'nexmark', 'events.num' = '2000000');
CREATE TABLE out ($columns) WITH ('connector' = 'filesystem', 'path' = '$dir/bids',
  'format' = 'avro', 'sink.rolling-policy.file-size' = '2gb');
INSERT INTO out SELECT bid.auction, bid.bidder, bid.price, bid.channel, bid.url, bid.dateTime, bid.extra
FROM bids WHERE event_type = 2;
EOF
cat > "$dir/r.sql" <<EOF
CREATE TABLE b ($columns) WITH ('connector' = 'filesystem', 'path' = '$dir/bids', 'format' = 'avro');
EOF
"$1" run "$dir/w.sql" >/dev/null
du -sh "$dir/bids"
query="SELECT count(*), sum(price), max(length(extra)) FROM b"
commands=()
for bin in "$@"; do commands+=("$bin query --init $dir/r.sql '$query'"); done
hyperfine -w 1 -r 6 -N "${commands[@]}"
