//! Oracle tests: a streaming run of a stateless query equals DataFusion's batch run of the same
//! query over the same bounded input; and any parallelism gives the same multiset of rows.

use proptest::prelude::*;

use crate::support::{batch_select, rows, run_script, sorted, stream_select};

fn json_rows(seed: u64, n: usize) -> String {
    // A small deterministic generator: keys, prices, names with NULLs and odd characters.
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = String::new();
    for i in 0..n {
        let r = next();
        let name = match r % 5 {
            0 => "null".to_string(),
            1 => "\"Ünïcode ✓\"".to_string(),
            _ => format!("\"n{}\"", r % 97),
        };
        out.push_str(&format!(
            "{{\"id\": {i}, \"k\": {}, \"price\": {}, \"name\": {name}, \"ts\": \"2026-01-0{} {:02}:{:02}:{:02}.{:03}\"}}\n",
            r % 7,
            (r >> 8) % 100_000,
            1 + (r >> 20) % 9,
            (r >> 24) % 24,
            (r >> 30) % 60,
            (r >> 36) % 60,
            (r >> 42) % 1000
        ));
    }
    out
}

const QUERIES: &[&str] = &[
    "SELECT id, k, price * 2 AS p2, UPPER(name) AS u FROM src WHERE price > 50000",
    "SELECT id, CASE WHEN k < 3 THEN 'low' WHEN k < 5 THEN 'mid' ELSE 'high' END AS band, CAST(price AS DOUBLE) / 3 AS third FROM src",
    "SELECT id, DATE_FORMAT(ts, 'yyyy-MM-dd HH:mm') AS minute, HOUR(ts) AS h, MOD(price, 7) AS m, IF(name IS NULL, 'none', name) AS n FROM src",
    "SELECT id, CHAR_LENGTH(name) AS len, CONCAT_WS('-', name, CAST(k AS STRING)) AS c, SPLIT_INDEX('a,b,c', ',', CAST(k AS INT) % 4) AS s FROM src WHERE name IS NOT NULL OR k = 1",
    "SELECT id, k FROM src WHERE k = 1 UNION ALL SELECT id, k * 10 FROM src WHERE k = 2",
];

fn ddl(path: &std::path::Path) -> String {
    format!(
        "CREATE TABLE src (id BIGINT, k BIGINT, price BIGINT, name STRING, ts TIMESTAMP(3)) \
         WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');",
        path.display()
    )
}

fn check(seed: u64, n: usize, parallelism: usize, files: usize) {
    let rt = crate::support::runtime();
    let dir = tempfile::tempdir().unwrap();
    let data = json_rows(seed, n);
    crate::support::write_parts(dir.path(), &data, files);
    let ddl = ddl(dir.path());
    for q in QUERIES {
        let streamed = sorted(rows(
            &rt.block_on(stream_select(&ddl, q, parallelism)).unwrap(),
        ));
        let batch = sorted(rows(&rt.block_on(batch_select(&ddl, q)).unwrap()));
        assert_eq!(
            streamed, batch,
            "query {q} (seed {seed}, parallelism {parallelism}, files {files})"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("regressions"))), ..ProptestConfig::default() })]

    #[test]
    fn stateless_streaming_equals_batch(seed in any::<u64>(), n in 0usize..400, parallelism in 1usize..5, files in 1usize..5) {
        check(seed, n, parallelism, files);
    }
}

#[test]
fn parallel_run_gives_the_same_rows_as_serial() {
    let rt = crate::support::runtime();
    let dir = tempfile::tempdir().unwrap();
    let nexmark = "CREATE TABLE nexmark (event_type INT, \
        bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR>) \
        WITH ('connector' = 'nexmark', 'events.num' = '5000', 'base-time' = '2026-01-01 00:00:00', 'seed' = '7');";
    let mut results = Vec::new();
    for p in [1, 4] {
        let out = dir.path().join(format!("p{p}"));
        let script = format!(
            "{nexmark}\nCREATE TABLE out (auction BIGINT, price DECIMAL(23, 3), channel STRING, t TIMESTAMP(3)) \
             WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet');\n\
             INSERT INTO out SELECT bid.auction, 0.908 * bid.price, UPPER(bid.channel), bid.dateTime FROM nexmark WHERE event_type = 2;",
            out.display()
        );
        rt.block_on(run_script(&script, p)).unwrap();
        let read = format!(
            "CREATE TABLE r (auction BIGINT, price DECIMAL(23, 3), channel STRING, t TIMESTAMP(3)) \
             WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet');",
            out.display()
        );
        results.push(sorted(rows(
            &rt.block_on(batch_select(&read, "SELECT * FROM r")).unwrap(),
        )));
    }
    assert_eq!(results[0].len(), 4600);
    assert_eq!(results[0], results[1]);
}
