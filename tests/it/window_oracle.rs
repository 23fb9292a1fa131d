//! Oracle for event time: the streaming result of a window aggregation (or window TopN) over out-of-order input
//! equals DataFusion's batch result of the same aggregation with the windows computed explicitly
//! (epoch arithmetic and a join with the window offsets), for random keys, values, disorder
//! within the watermark delay, file (batch) boundaries and parallelism.
//!
//! Disorder never exceeds the delay, so no row is late and every row must be counted.

use proptest::prelude::*;

use crate::support::{batch_select, rows, sorted, stream_select};

/// Rows ascending in a hidden time `t` by 0..3 s steps; each row's `ts` is `t` minus up to 4 s.
fn json_rows(seed: u64, n: usize, keys: u64) -> String {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut t: i64 = 1_767_225_600_000; // 2026-01-01 00:00:00 UTC
    let mut out = String::new();
    for _ in 0..n {
        let r = next();
        t += (r % 3000) as i64;
        let ts = t - ((r >> 12) % 4001) as i64;
        let v = if (r >> 24) % 10 == 0 {
            "null".to_string()
        } else {
            ((r >> 28) % 1000).to_string()
        };
        let secs = ts.div_euclid(1000);
        let dt = chrono_like(secs);
        out.push_str(&format!(
            "{{\"k\": {}, \"v\": {v}, \"ts\": \"{dt}.{:03}\"}}\n",
            (r >> 40) % keys,
            ts.rem_euclid(1000)
        ));
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS` of Unix seconds (UTC), without a date library.
pub(crate) fn chrono_like(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// (streaming query, batch query with explicit windows); both yield k, window start (ms), aggregates.
const CASES: &[(&str, &str)] = &[
    (
        "SELECT k, CAST(window_start AS BIGINT), CAST(window_end AS BIGINT), COUNT(*), SUM(v), MIN(v), MAX(v), COUNT(DISTINCT v) \
         FROM TABLE(TUMBLE(TABLE src, DESCRIPTOR(ts), INTERVAL '5' SECOND)) GROUP BY k, window_start, window_end",
        "SELECT k, ws, ws + 5000, COUNT(*), SUM(v), MIN(v), MAX(v), COUNT(DISTINCT v) \
         FROM (SELECT k, v, CAST(ts AS BIGINT) / 5000 * 5000 AS ws FROM src) AS w GROUP BY k, ws",
    ),
    (
        "SELECT k, CAST(window_start AS BIGINT), COUNT(*), SUM(v), AVG(v) \
         FROM TABLE(HOP(TABLE src, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '6' SECOND)) GROUP BY k, window_start, window_end",
        "SELECT k, ws, COUNT(*), SUM(v), AVG(v) FROM ( \
           SELECT k, v, (CAST(ts AS BIGINT) / 2000 - i) * 2000 AS ws, CAST(ts AS BIGINT) AS t \
           FROM src CROSS JOIN (VALUES (0), (1), (2)) AS o(i)) AS w \
         WHERE ws + 6000 > t GROUP BY k, ws",
    ),
    (
        "SELECT k, CAST(window_start AS BIGINT), CAST(window_end AS BIGINT), COUNT(*), MAX(v) \
         FROM TABLE(CUMULATE(TABLE src, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '6' SECOND)) GROUP BY k, window_start, window_end",
        "SELECT k, ws, ws + j * 2000, COUNT(*), MAX(v) FROM ( \
           SELECT k, v, j, CAST(ts AS BIGINT) / 6000 * 6000 AS ws, CAST(ts AS BIGINT) AS t \
           FROM src CROSS JOIN (VALUES (1), (2), (3)) AS o(j)) AS w \
         WHERE ws + j * 2000 > t GROUP BY k, ws, j",
    ),
    (
        "SELECT COUNT(*), SUM(v), CAST(window_start AS BIGINT) FROM TABLE(TUMBLE(TABLE src, DESCRIPTOR(ts), INTERVAL '3' SECOND)) \
         GROUP BY window_start, window_end HAVING COUNT(*) > 1",
        "SELECT COUNT(*), SUM(v), ws FROM (SELECT v, CAST(ts AS BIGINT) / 3000 * 3000 AS ws FROM src) AS w GROUP BY ws HAVING COUNT(*) > 1",
    ),
    // Sessions need their neighbours; the batch side is DataFusion's window functions.
    (
        "SELECT k, CAST(window_start AS BIGINT), CAST(window_end AS BIGINT), COUNT(*), SUM(v) \
         FROM TABLE(SESSION(TABLE src PARTITION BY k, DESCRIPTOR(ts), INTERVAL '2' SECOND)) GROUP BY k, window_start, window_end",
        "SELECT k, CAST(window_start AS BIGINT), CAST(window_end AS BIGINT), COUNT(*), SUM(v) \
         FROM TABLE(SESSION(TABLE src PARTITION BY k, DESCRIPTOR(ts), INTERVAL '2' SECOND)) GROUP BY k, window_start, window_end",
    ),
    // Window TopN and deduplication: the batch side is DataFusion's ROW_NUMBER over the same
    // windows. The ORDER BY leaves ties only between rows that print alike.
    (
        "SELECT k, v, CAST(ts AS BIGINT), CAST(window_start AS BIGINT), rn FROM (SELECT *, ROW_NUMBER() OVER \
         (PARTITION BY window_start, window_end, k ORDER BY v DESC, ts) AS rn FROM TABLE(TUMBLE(TABLE src, DESCRIPTOR(ts), INTERVAL '5' SECOND))) WHERE rn <= 2",
        "SELECT k, v, CAST(ts AS BIGINT), CAST(window_start AS BIGINT), rn FROM (SELECT *, ROW_NUMBER() OVER \
         (PARTITION BY window_start, window_end, k ORDER BY v DESC, ts) AS rn FROM TABLE(TUMBLE(TABLE src, DESCRIPTOR(ts), INTERVAL '5' SECOND))) WHERE rn <= 2",
    ),
    (
        "SELECT k, v, CAST(ts AS BIGINT), CAST(window_end AS BIGINT) FROM (SELECT *, ROW_NUMBER() OVER \
         (PARTITION BY window_start, window_end ORDER BY ts DESC, k, v) AS rn FROM TABLE(HOP(TABLE src, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '6' SECOND))) WHERE rn = 1",
        "SELECT k, v, CAST(ts AS BIGINT), CAST(window_end AS BIGINT) FROM (SELECT *, ROW_NUMBER() OVER \
         (PARTITION BY window_start, window_end ORDER BY ts DESC, k, v) AS rn FROM TABLE(HOP(TABLE src, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '6' SECOND))) WHERE rn = 1",
    ),
    (
        "SELECT CAST(window_start AS BIGINT), k, c, rn FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY c DESC, k) AS rn \
         FROM (SELECT window_start, window_end, k, COUNT(*) AS c FROM TABLE(TUMBLE(TABLE src, DESCRIPTOR(ts), INTERVAL '3' SECOND)) GROUP BY k, window_start, window_end)) WHERE rn <= 2",
        "SELECT ws, k, c, rn FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY ws ORDER BY c DESC, k) AS rn \
         FROM (SELECT CAST(ts AS BIGINT) / 3000 * 3000 AS ws, k, COUNT(*) AS c FROM src GROUP BY k, CAST(ts AS BIGINT) / 3000 * 3000)) WHERE rn <= 2",
    ),
];

fn check(seed: u64, n: usize, keys: u64, parallelism: usize, files: usize) {
    let rt = crate::support::runtime();
    let dir = tempfile::tempdir().unwrap();
    let data = json_rows(seed, n, keys);
    crate::support::write_parts(dir.path(), &data, files);
    let ddl = format!(
        "CREATE TABLE src (k BIGINT, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) \
         WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');",
        dir.path().display()
    );
    for (streaming, batch) in CASES {
        let streamed = sorted(rows(
            &rt.block_on(stream_select(&ddl, streaming, parallelism))
                .unwrap(),
        ));
        let expected = sorted(rows(&rt.block_on(batch_select(&ddl, batch)).unwrap()));
        assert_eq!(streamed, expected, "{streaming}\n(seed {seed}, rows {n}, keys {keys}, parallelism {parallelism}, files {files})");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("regressions"))), ..ProptestConfig::default() })]

    #[test]
    fn window_aggregation_equals_batch(seed in any::<u64>(), n in 0usize..300, keys in 1u64..6, parallelism in 1usize..5, files in 1usize..6) {
        check(seed, n, keys, parallelism, files);
    }
}

#[test]
fn civil_dates_are_right() {
    assert_eq!(chrono_like(1_767_225_600), "2026-01-01 00:00:00");
    assert_eq!(chrono_like(951_782_400 + 86_399), "2000-02-29 23:59:59");
}
