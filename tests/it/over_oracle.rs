//! Oracle for OVER aggregations: the streaming result (rows emitted as the watermark passes
//! them) equals DataFusion's batch window functions over the same rows, for random partitions,
//! values, NULLs, disorder within the watermark delay, file (batch) boundaries and parallelism.
//!
//! `ts` is distinct per row, so a ROWS frame has one order; `tc` (`ts` cut to 2 s) gives RANGE
//! frames peers (rows of the same time, which share their aggregates).

use proptest::prelude::*;

use crate::support::{batch_select, rows, sorted, stream_select};
use crate::window_oracle::chrono_like;

/// Row i has time i s + 0..999 ms; neighbouring rows are swapped at random (disorder ≤ 2 s).
fn json_rows(seed: u64, n: usize, keys: u64) -> String {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let base: i64 = 1_767_225_600_000; // 2026-01-01 00:00:00 UTC
    let stamp = |ms: i64| {
        format!(
            "{}.{:03}",
            chrono_like(ms.div_euclid(1000)),
            ms.rem_euclid(1000)
        )
    };
    let mut lines: Vec<String> = (0..n as i64)
        .map(|i| {
            let r = next();
            let ts = base + i * 1000 + (r % 1000) as i64;
            let v = if (r >> 24) % 8 == 0 {
                "null".to_string()
            } else {
                ((r >> 28) % 100).to_string()
            };
            let s = ["red", "green", "blue", "teal"][((r >> 50) % 4) as usize];
            format!(
                "{{\"k\": {}, \"v\": {v}, \"s\": \"{s}\", \"ts\": \"{}\", \"tc\": \"{}\"}}",
                (r >> 40) % keys,
                stamp(ts),
                stamp(ts - ts.rem_euclid(2000)),
            )
        })
        .collect();
    let mut i = 0;
    while i + 1 < lines.len() {
        if next() % 2 == 0 {
            lines.swap(i, i + 1);
        }
        i += 2;
    }
    lines.join("\n") + "\n"
}

const CASES: &[&str] = &[
    "SELECT k, v, ts, SUM(v) OVER w, COUNT(v) OVER w, COUNT(*) OVER w, MIN(v) OVER w, MAX(v) OVER w, AVG(v) OVER w \
     FROM src WINDOW w AS (PARTITION BY k ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW)",
    "SELECT k, ts, SUM(v) OVER w, MAX(s) OVER w, MIN(s) OVER w, COUNT(DISTINCT s) OVER w \
     FROM src WINDOW w AS (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW)",
    // The default frame: RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW.
    "SELECT k, ts, COUNT(*) OVER (PARTITION BY k ORDER BY ts), SUM(v + 1) OVER (PARTITION BY k ORDER BY ts) FROM src",
    "SELECT ts, v, SUM(v) OVER (ORDER BY ts ROWS BETWEEN 3 PRECEDING AND CURRENT ROW), \
     MAX(v) OVER (ORDER BY ts ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) FROM src WHERE s <> 'teal'",
    "SELECT k, s, ts, COUNT(DISTINCT v) OVER (PARTITION BY k, s ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) FROM src",
    // Peers: rows of one `tc` share their RANGE frame.
    "SELECT k, ts, tc, SUM(v) OVER w, COUNT(*) OVER w, MIN(v) OVER w \
     FROM srcc WINDOW w AS (PARTITION BY k ORDER BY tc RANGE BETWEEN INTERVAL '4' SECOND PRECEDING AND CURRENT ROW)",
    "SELECT ts, tc, COUNT(*) OVER (ORDER BY tc), MAX(v) OVER (ORDER BY tc) FROM srcc",
];

fn check(seed: u64, n: usize, keys: u64, parallelism: usize, files: usize) {
    let rt = crate::support::runtime();
    let dir = tempfile::tempdir().unwrap();
    crate::support::write_parts(dir.path(), &json_rows(seed, n, keys), files);
    let table = |name: &str, time: &str| {
        format!(
            "CREATE TABLE {name} (k BIGINT, v BIGINT, s STRING, ts TIMESTAMP(3), tc TIMESTAMP(3), \
             WATERMARK FOR {time} AS {time} - INTERVAL '5' SECOND) \
             WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');",
            dir.path().display()
        )
    };
    let ddl = table("src", "ts") + &table("srcc", "tc");
    for q in CASES {
        let streamed = sorted(rows(
            &rt.block_on(stream_select(&ddl, q, parallelism)).unwrap(),
        ));
        let expected = sorted(rows(&rt.block_on(batch_select(&ddl, q)).unwrap()));
        assert_eq!(
            streamed, expected,
            "{q}\n(seed {seed}, rows {n}, keys {keys}, parallelism {parallelism}, files {files})"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("regressions"))), ..ProptestConfig::default() })]

    #[test]
    fn over_aggregation_equals_batch(seed in any::<u64>(), n in 0usize..300, keys in 1u64..6, parallelism in 1usize..4, files in 1usize..6) {
        check(seed, n, keys, parallelism, files);
    }
}

#[test]
fn over_aggregation_of_many_rows_equals_batch() {
    check(11, 2000, 3, 2, 7);
}
