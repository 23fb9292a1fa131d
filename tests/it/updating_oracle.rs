//! Oracle for updating results: the changelog a streaming query emits (`+I`, `-U`, `+U`, `-D`),
//! applied to an empty table, equals DataFusion's batch result of the same query, for random
//! keys, values, NULLs, file (batch) boundaries and parallelism. Applying checks the changelog
//! too: every `-U`/`-D` must withdraw a row that is there. Aggregations, joins, TopN, and one
//! over another.

use proptest::prelude::*;

use crate::support::{apply_changelog, batch_select, rows, sorted, stream_select};

/// `n` JSON rows of (k BIGINT, v BIGINT with NULLs, s STRING, d DECIMAL(6, 2)), `keys` distinct k.
pub(crate) fn json_rows(seed: u64, n: usize, keys: u64) -> String {
    let mut x = seed | 1;
    let mut out = String::new();
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let v = if (x >> 24).is_multiple_of(10) {
            "null".to_string()
        } else {
            ((x >> 28) % 1000).to_string()
        };
        let s = ["red", "green", "blue"][((x >> 50) % 3) as usize];
        out.push_str(&format!(
            "{{\"k\": {}, \"v\": {v}, \"s\": \"{s}\", \"d\": {}.{:02}}}\n",
            (x >> 40) % keys,
            (x >> 8) % 100,
            x % 100
        ));
    }
    out
}

const CASES: &[&str] = &[
    "SELECT k, COUNT(*), COUNT(v), SUM(v), MIN(v), MAX(v), COUNT(DISTINCT v), AVG(v), MAX(s), SUM(d) FROM src GROUP BY k",
    "SELECT s, COUNT(*) FILTER (WHERE v > 500), SUM(v) FILTER (WHERE v < 300), COUNT(DISTINCT k) FILTER (WHERE v > 100) FROM src GROUP BY s",
    "SELECT k, s, COUNT(*) FROM src GROUP BY k, s HAVING COUNT(*) > 1",
    // Two levels: the outer aggregation retracts what the inner one updates.
    "SELECT m, COUNT(*), SUM(k), MIN(k), MAX(k) FROM (SELECT k, MAX(v) AS m FROM src GROUP BY k) AS t GROUP BY m",
    "SELECT k % 2, MIN(c), MAX(c), COUNT(DISTINCT c), AVG(c), SUM(c) FROM (SELECT k, COUNT(*) AS c FROM src GROUP BY k) AS t GROUP BY k % 2",
    "SELECT s, COUNT(*) FROM (SELECT k, MAX(s) AS s FROM src GROUP BY k) AS t WHERE s <> 'green' GROUP BY s",
    "SELECT k, c FROM (SELECT k, COUNT(*) AS c FROM src GROUP BY k) AS a UNION ALL SELECT k, v FROM src WHERE v > 900",
    // Joins: inner over append-only inputs (append-only), outer ones with and without a
    // non-equi condition, over updating inputs, NULL keys (v), and aggregation over a join.
    "SELECT a.k, a.v, b.v FROM src AS a JOIN src AS b ON a.k = b.k WHERE a.s = 'red' AND b.s = 'blue'",
    "SELECT a.k, a.v, b.s FROM (SELECT * FROM src WHERE v > 500) AS a LEFT JOIN (SELECT * FROM src WHERE s = 'red') AS b ON a.k = b.k",
    "SELECT a.k, a.v, b.v FROM (SELECT * FROM src WHERE s = 'green') AS a RIGHT JOIN (SELECT * FROM src WHERE s <> 'green') AS b ON a.k = b.k AND a.v < b.v",
    "SELECT a.k, b.k, a.c, b.c FROM (SELECT k, COUNT(*) AS c FROM src WHERE s = 'red' GROUP BY k) AS a FULL JOIN (SELECT k, MAX(v) AS c FROM src WHERE s = 'blue' GROUP BY k) AS b ON a.k = b.k",
    "SELECT a.s, COUNT(*), COUNT(b.v), MAX(b.v) FROM src AS a LEFT JOIN (SELECT k, v FROM src WHERE v > 800) AS b ON a.k = b.k AND a.v < b.v GROUP BY a.s",
    "SELECT t.k, t.m, src.s, src.d FROM (SELECT k, MAX(v) AS m FROM src GROUP BY k) AS t JOIN src ON t.k = src.k AND src.v = t.m",
    "SELECT a.k, b.k, a.v FROM src AS a FULL JOIN (SELECT * FROM src WHERE s = 'red') AS b ON a.v = b.v AND a.k < b.k",
    // Semi and anti joins (IN / EXISTS / NOT EXISTS), also over an updating input.
    "SELECT k, v FROM src WHERE k IN (SELECT k FROM src WHERE s = 'red' AND v > 700)",
    "SELECT k, v, s FROM src AS a WHERE NOT EXISTS (SELECT 1 FROM src AS b WHERE b.k = a.k AND b.v > a.v)",
    "SELECT k, c FROM (SELECT k, COUNT(*) AS c FROM src GROUP BY k) AS t WHERE EXISTS (SELECT 1 FROM src WHERE src.k = t.k AND src.v > 900)",
    // TopN and deduplication (ORDER BY lists that leave no ties between distinct outputs), with
    // and without the row number in the output, without PARTITION BY, over an updating input.
    "SELECT * FROM (SELECT k, v, s, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC, d, s) AS rn FROM src) WHERE rn <= 3",
    "SELECT k, v FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY s ORDER BY v, k, d) AS rn FROM src) WHERE rn < 3 AND k > 2",
    "SELECT k, v, d FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY d, v, s) AS rn FROM src) WHERE rn = 1",
    "SELECT * FROM (SELECT k, v, ROW_NUMBER() OVER (ORDER BY v DESC, k, d, s) AS rn FROM src) WHERE rn <= 5",
    "SELECT * FROM (SELECT k, c, ROW_NUMBER() OVER (PARTITION BY k % 3 ORDER BY c DESC, k) AS rn FROM (SELECT k, COUNT(*) AS c FROM src GROUP BY k) AS t) WHERE rn <= 2",
];

fn check(seed: u64, n: usize, keys: u64, parallelism: usize, files: usize) {
    let rt = crate::support::runtime();
    let dir = tempfile::tempdir().unwrap();
    let data = json_rows(seed, n, keys);
    crate::support::write_parts(dir.path(), &data, files);
    let ddl = format!(
        "CREATE TABLE src (k BIGINT, v BIGINT, s STRING, d DECIMAL(6, 2)) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');",
        dir.path().display()
    );
    let mut cases: Vec<&str> = CASES.to_vec();
    // A global aggregation over no rows emits nothing in a stream; in batch it is one row.
    if n > 0 {
        cases.push("SELECT COUNT(*), SUM(v), MAX(v), COUNT(DISTINCT s) FROM src");
    }
    for q in cases {
        let streamed = rt.block_on(stream_select(&ddl, q, parallelism)).unwrap();
        let table = apply_changelog(&streamed).unwrap_or_else(|e| {
            panic!("{q}: {e} (seed {seed}, rows {n}, parallelism {parallelism})")
        });
        let expected = sorted(rows(&rt.block_on(batch_select(&ddl, q)).unwrap()));
        assert_eq!(
            table, expected,
            "{q}\n(seed {seed}, rows {n}, keys {keys}, parallelism {parallelism}, files {files})"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("regressions"))), ..ProptestConfig::default() })]

    #[test]
    fn updating_query_equals_batch(seed in any::<u64>(), n in 0usize..400, keys in 1u64..20, parallelism in 1usize..4, files in 1usize..8) {
        check(seed, n, keys, parallelism, files);
    }
}

#[test]
fn changelog_of_a_two_level_aggregation() {
    check(7, 300, 5, 2, 6);
}

/// `table.exec.state.ttl`: a group not updated for the TTL is dropped without a retraction, so
/// its next row starts it again (`+I` with a count of 1), as in Flink. Rows come every 100 ms;
/// with a 30 ms TTL each row finds its group expired, without TTL each row updates it.
#[test]
fn state_ttl_forgets_idle_groups() {
    let rt = crate::support::runtime();
    let ddl = |ttl: &str| {
        format!(
            "{ttl}CREATE TABLE src (k INT) WITH ('connector' = 'datagen', 'rows-per-second' = '10', \
             'number-of-rows' = '5', 'fields.k.kind' = 'sequence', 'fields.k.start' = '1', 'fields.k.end' = '5');"
        )
    };
    let q = "SELECT 'all', COUNT(*) FROM src GROUP BY 'all'";
    let counts = |batches: &[datafusion::arrow::array::RecordBatch]| -> Vec<(String, String)> {
        rows(batches)
            .into_iter()
            .map(|r| (r[r.len() - 1].clone(), r[1].clone()))
            .collect()
    };
    let kept = counts(&rt.block_on(stream_select(&ddl(""), q, 1)).unwrap());
    assert_eq!(kept.last().map(|(_, c)| c.as_str()), Some("5"), "{kept:?}");
    let expiring = counts(
        &rt.block_on(stream_select(
            &ddl("SET 'table.exec.state.ttl' = '30ms';"),
            q,
            1,
        ))
        .unwrap(),
    );
    // Rows that a slow machine delays into one batch share it; the group is still never
    // updated, only started again.
    assert!(expiring.len() >= 2, "{expiring:?}");
    assert!(
        expiring.iter().all(|(k, _)| k == "0"),
        "every batch starts the group again (+I, no -U/+U): {expiring:?}"
    );
    assert_eq!(
        expiring
            .iter()
            .map(|(_, c)| c.parse::<u64>().unwrap())
            .sum::<u64>(),
        5,
        "{expiring:?}"
    );
}
