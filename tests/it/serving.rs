//! A long-lived query catalog over a Parquet lake table (what `flowline serve` and `/v1/query`
//! use): each query sees the committed files of the moment, with partition values as the sink
//! wrote them (NULL, escaped characters), never a hidden in-progress file; the rows equal the
//! connector's own reading of the same files.

use crate::support::{rows, run_script, runtime, sorted};

fn ddl(dir: &std::path::Path, table: &str) -> String {
    format!(
        "CREATE TABLE src (id BIGINT, name STRING, amount DOUBLE, region STRING, day INT) WITH (
           'connector' = 'filesystem', 'path' = '{d}/src', 'format' = 'json');
         CREATE TABLE {table} (id BIGINT, region STRING, name STRING, amount DOUBLE, day INT)
           PARTITIONED BY (region, day)
           WITH ('connector' = 'filesystem', 'path' = '{d}/lake', 'format' = 'parquet');",
        d = dir.display()
    )
}

fn write_source(dir: &std::path::Path, first: i64, n: i64) {
    let mut text = String::new();
    for id in first..first + n {
        // Regions with a NULL, a '/', a '=' and a '%': the sink escapes them in directory names.
        let region = match id % 5 {
            0 => "null".to_string(),
            1 => "\"eu/west\"".to_string(),
            2 => "\"k=v\"".to_string(),
            3 => "\"100%\"".to_string(),
            _ => "\"us\"".to_string(),
        };
        let amount = if id % 7 == 0 {
            "null".to_string()
        } else {
            format!("{}.5", id)
        };
        text.push_str(&format!(
            "{{\"id\": {id}, \"name\": \"n{id}\", \"amount\": {amount}, \"region\": {region}, \"day\": {}}}\n",
            id % 3
        ));
    }
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src").join(format!("part-{first}.json")), text).unwrap();
}

#[test]
fn a_long_lived_catalog_reads_the_lake_as_committed_at_each_query() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_source(d, 0, 500);
    let insert = "INSERT INTO lake SELECT id, region, name, amount, day FROM src;";
    rt.block_on(run_script(&format!("{}{insert}", ddl(d, "lake")), 2))
        .unwrap();
    let mut catalog = rt
        .block_on(flowline_planner::batch_catalog(&ddl(d, "lake")))
        .unwrap();
    let select = "SELECT id, region, name, amount, day FROM lake";
    let query = |catalog: &mut flowline_planner::Catalog, sql: &str| {
        sorted(rows(
            &rt.block_on(flowline_planner::batch_query(catalog, sql))
                .unwrap(),
        ))
    };
    // The oracle: the same files read by the filesystem connector as a streaming source.
    let oracle = |d: &std::path::Path| {
        let batches = rt
            .block_on(crate::support::stream_select(&ddl(d, "lake"), select, 1))
            .unwrap();
        sorted(rows(&batches))
    };
    let first = query(&mut catalog, select);
    assert_eq!(first.len(), 500);
    assert_eq!(first, oracle(d));
    assert!(first.iter().any(|r| r[1] == "NULL"), "a NULL region");
    assert!(first.iter().any(|r| r[1] == "eu/west" && r[4] == "1"));
    assert!(first.iter().any(|r| r[1] == "100%"));
    // Partition and file-column filters, projections in another order, aggregates.
    assert_eq!(
        query(
            &mut catalog,
            "SELECT COUNT(*), SUM(day) FROM lake WHERE region = 'k=v' AND day = 2"
        ),
        vec![vec!["34".to_string(), "68".to_string()]]
    );
    assert_eq!(
        query(
            &mut catalog,
            "SELECT day, name FROM lake WHERE region IS NULL AND id < 20"
        ),
        vec![
            vec!["0".to_string(), "n0".to_string()],
            vec!["0".to_string(), "n15".to_string()],
            vec!["1".to_string(), "n10".to_string()],
            vec!["2".to_string(), "n5".to_string()],
        ]
    );
    // A hidden in-progress file (a job writing now) is not the table's.
    std::fs::write(
        d.join("lake/region=us/day=1/.part-x.inprogress"),
        b"not parquet",
    )
    .unwrap();
    assert_eq!(
        query(&mut catalog, "SELECT COUNT(*) FROM lake"),
        vec![vec!["500".to_string()]]
    );
    // Rows committed after the catalog was made are seen by the next query.
    std::fs::remove_dir_all(d.join("src")).unwrap();
    write_source(d, 500, 100);
    rt.block_on(run_script(&format!("{}{insert}", ddl(d, "lake")), 1))
        .unwrap();
    let second = query(&mut catalog, select);
    assert_eq!(second.len(), 600);
    assert_eq!(second, oracle(d));
}

/// Flink's decimal division (a wider scale than DataFusion's) inside expressions DataFusion had
/// already typed: a comparison with it (TPC-DS q53) and an aggregate over it that a parent
/// refers to by name (q4, q66).
#[test]
fn decimal_division_inside_comparisons_and_aggregates() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("d")).unwrap();
    std::fs::write(
        dir.path().join("d/part-0.json"),
        "{\"g\": 1, \"a\": 1.00, \"b\": 3.00}\n{\"g\": 1, \"a\": 2.00, \"b\": 4.00}\n{\"g\": 2, \"a\": 5.00, \"b\": 5.00}\n",
    )
    .unwrap();
    let ddl = format!(
        "CREATE TABLE d (g INT, a DECIMAL(7, 2), b DECIMAL(7, 2)) WITH (
           'connector' = 'filesystem', 'path' = '{}/d', 'format' = 'json');",
        dir.path().display()
    );
    let sql = "SELECT * FROM (
                 SELECT g, SUM(a / b),
                        CASE WHEN SUM(b) > 0 THEN ABS(SUM(a) - SUM(b)) / SUM(b) ELSE NULL END > 0.1 AS far
                 FROM d GROUP BY g) t ORDER BY g";
    let got = rows(
        &rt.block_on(crate::support::batch_select(&ddl, sql))
            .unwrap(),
    );
    assert_eq!(
        got,
        vec![
            vec!["1".to_string(), "0.8333333333".into(), "true".into()],
            vec!["2".to_string(), "1.0000000000".into(), "false".into()],
        ]
    );
}
