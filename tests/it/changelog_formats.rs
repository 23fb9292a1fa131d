//! Changelog formats end to end: an updating query written by the filesystem sink as
//! `debezium-json`, `canal-json` or `maxwell-json`, read back by the filesystem source as a
//! changelog, replays to DataFusion's batch result of the query; and operators over a changelog
//! source (an aggregation of the replayed table) retract correctly.

use arrow::datatypes::{DataType, Schema};

use crate::support::{apply_changelog, batch_select, rows, run_script, sorted, stream_select};

const FORMATS: &[&str] = &["debezium-json", "canal-json", "maxwell-json"];

/// Updating queries over `src` (k BIGINT, v BIGINT, s STRING, d DECIMAL(6, 2)).
const QUERIES: &[&str] = &[
    "SELECT k, COUNT(*) AS c, SUM(v) AS sv, MAX(s) AS ms, SUM(d) AS sd FROM src GROUP BY k",
    "SELECT m, COUNT(*) AS c FROM (SELECT k, MAX(v) AS m FROM src GROUP BY k) AS t GROUP BY m",
    "SELECT k, v, s FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC, d, s) AS rn FROM src) WHERE rn <= 2",
    "SELECT a.k, a.v, b.s FROM (SELECT * FROM src WHERE v > 500) AS a LEFT JOIN (SELECT * FROM src WHERE s = 'red') AS b ON a.k = b.k",
];

/// The Flink SQL column list of `schema` (the types the tests' queries produce).
fn columns(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let t = match f.data_type() {
                DataType::Int64 => "BIGINT".to_string(),
                DataType::Utf8 | DataType::Utf8View => "STRING".to_string(),
                DataType::Decimal128(p, s) => format!("DECIMAL({p}, {s})"),
                DataType::Float64 => "DOUBLE".to_string(),
                other => panic!("no SQL type for {other}"),
            };
            format!("c{i} {t}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn updating_results_written_as_changelogs_replay_to_the_batch_result() {
    let rt = crate::support::runtime();
    let input = tempfile::tempdir().unwrap();
    crate::support::write_parts(
        input.path(),
        &crate::updating_oracle::json_rows(0x9e37_79b9_7f4a_7c15, 600, 13),
        4,
    );
    let src = format!(
        "CREATE TABLE src (k BIGINT, v BIGINT, s STRING, d DECIMAL(6, 2)) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');",
        input.path().display()
    );
    for q in QUERIES {
        let expected = rt.block_on(batch_select(&src, q)).unwrap();
        let cols = columns(&expected[0].schema());
        let expected = sorted(rows(&expected));
        for format in FORMATS {
            let out = tempfile::tempdir().unwrap();
            let sink = format!(
                "CREATE TABLE out ({cols}) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = '{format}');",
                out.path().display()
            );
            rt.block_on(run_script(&format!("{src}{sink}INSERT INTO out {q};"), 2))
                .unwrap_or_else(|e| panic!("{format}: {q}: {e:#}"));
            // One reader keeps each writer's records in order (the files sort by subtask).
            let replayed = rt
                .block_on(stream_select(&sink, "SELECT * FROM out", 1))
                .unwrap_or_else(|e| panic!("{format}: {q}: {e:#}"));
            let table = apply_changelog(&replayed).unwrap_or_else(|e| panic!("{format}: {q}: {e}"));
            assert_eq!(table, expected, "{format}: {q}");
        }
    }
}

/// A changelog source feeds an aggregation: its -U/-D rows retract what their +I/+U added.
#[test]
fn an_aggregation_over_a_changelog_source_retracts() {
    let rt = crate::support::runtime();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("part-0.json"),
        r#"{"before":null,"after":{"id":1,"cat":"a","price":10},"op":"c"}
{"before":null,"after":{"id":2,"cat":"a","price":20},"op":"r"}
{"before":null,"after":{"id":3,"cat":"b","price":5},"op":"c"}
{"before":{"id":1,"cat":"a","price":10},"after":{"id":1,"cat":"b","price":12},"op":"u"}
{"before":{"id":2,"cat":"a","price":20},"after":null,"op":"d"}
{"before":null,"after":{"id":4,"cat":"c","price":7},"op":"c"}
{"before":{"id":4,"cat":"c","price":7},"after":{"id":4,"cat":"c","price":8},"op":"u"}
"#,
    )
    .unwrap();
    let ddl = format!(
        "CREATE TABLE products (id INT, cat STRING, price INT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'debezium-json');",
        dir.path().display()
    );
    let q = "SELECT cat, COUNT(*), SUM(price), MAX(price) FROM products GROUP BY cat";
    let got = apply_changelog(&rt.block_on(stream_select(&ddl, q, 1)).unwrap()).unwrap();
    let want: Vec<Vec<String>> = [["b", "2", "17", "12"], ["c", "1", "8", "8"]]
        .iter()
        .map(|r| r.iter().map(|s| s.to_string()).collect())
        .collect();
    assert_eq!(got, want);

    // An append-only sink is refused, naming the changelog source.
    let refused = rt
        .block_on(run_script(
            &format!(
                "{ddl}CREATE TABLE f (id INT, cat STRING, price INT) WITH ('connector' = 'filesystem', 'path' = '{}/x', 'format' = 'json');\
                 INSERT INTO f SELECT * FROM products;",
                dir.path().display()
            ),
            1,
        ))
        .err()
        .expect("an append-only sink is refused");
    let msg = format!("{refused:#}");
    assert!(
        msg.contains("source table 'products' reads a changelog (format 'debezium-json')"),
        "{msg}"
    );
}

/// Changelog files written by Apache Flink 2.3's filesystem sink (`tests/flink/changelog`,
/// made by its `generate.py`), read by Flowline's changelog readers, replay to the final rows
/// Flink computed in batch mode, in a streaming job and in a batch query.
#[test]
fn changelogs_written_by_flink_replay_to_flinks_final_rows() {
    let rt = crate::support::runtime();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/flink/changelog");
    let tables = [
        (
            "agg",
            "k STRING, c BIGINT, sv BIGINT, ms STRING, sd DECIMAL(38, 2), mt TIMESTAMP(3), mdt DATE, mx DOUBLE",
        ),
        ("top2", "k STRING, v BIGINT, s STRING"),
    ];
    for (name, cols) in tables {
        let table = |format: &str, file: &str| {
            format!(
                "CREATE TABLE t ({cols}) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = '{format}');",
                dir.join(format!("{name}.{file}.json")).display()
            )
        };
        let expected = sorted(rows(
            &rt.block_on(batch_select(&table("json", "final"), "SELECT * FROM t"))
                .unwrap(),
        ));
        assert!(expected.len() >= 4, "{name}: {expected:?}");
        for format in FORMATS {
            let replayed = rt
                .block_on(stream_select(&table(format, format), "SELECT * FROM t", 1))
                .unwrap_or_else(|e| panic!("{name}.{format}: {e:#}"));
            let got = apply_changelog(&replayed).unwrap_or_else(|e| panic!("{name}.{format}: {e}"));
            assert_eq!(got, expected, "{name}.{format}");
            // A batch query reads the table the changelog leaves behind.
            let batch = rt
                .block_on(batch_select(&table(format, format), "SELECT * FROM t"))
                .unwrap();
            assert_eq!(sorted(rows(&batch)), expected, "batch {name}.{format}");
        }
    }
}
