//! Every kind of bad input gets a clear error that says what and where, or (with
//! ignore-parse-errors) is skipped and counted.

use crate::support::{run_script, runtime as rt};

fn run_err(script: &str) -> String {
    match rt().block_on(run_script(script, 1)) {
        Ok(_) => panic!("expected an error for:\n{script}"),
        Err(e) => format!("{e:#}"),
    }
}

fn file_job(dir: &std::path::Path, format: &str, content: &str, extra: &str) -> String {
    let input = dir.join(format!("in.{format}"));
    std::fs::write(&input, content).unwrap();
    format!(
        "CREATE TABLE src (a BIGINT, b STRING) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = '{format}'{extra});\n\
         CREATE TABLE out (a BIGINT, b STRING) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');\n\
         INSERT INTO out SELECT a, b FROM src;",
        input.display(),
        dir.join("out").display()
    )
}

#[test]
fn malformed_json_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let script = file_job(
        dir.path(),
        "json",
        "{\"a\": 1, \"b\": \"x\"}\n{\"a\": 2, \"b\": \"y\"}\n{\"a\": oops}\n",
        "",
    );
    let e = run_err(&script);
    assert!(e.contains("in.json, line 3"), "{e}");
    assert!(e.contains("json.ignore-parse-errors"), "{e}");
    // Nothing half-written is published.
    let published = std::fs::read_dir(dir.path().join("out"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|f| !f.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(published, 0);
}

#[test]
fn ignore_parse_errors_skips_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    for (format, content) in [
        ("json", "{\"a\": 1}\nnot json\n{\"a\": \"x\"}\n{\"a\": 4}\n"),
        ("csv", "1,x\nbad,y\n3,z\n"),
    ] {
        let script = file_job(
            dir.path(),
            format,
            content,
            &format!(", '{format}.ignore-parse-errors' = 'true'"),
        );
        let metrics = rt().block_on(run_script(&script, 1)).unwrap();
        assert_eq!(
            metrics.total("flowline_source_parse_errors_total"),
            if format == "json" { 2 } else { 1 },
            "{format}"
        );
        assert_eq!(metrics.total("flowline_sink_rows_total"), 2, "{format}");
        assert!(metrics
            .render()
            .contains("flowline_source_parse_errors_total{table=\"src\",subtask=\"0\"}"));
        std::fs::remove_dir_all(dir.path().join("out")).unwrap();
    }
}

#[test]
fn malformed_csv_names_line() {
    let dir = tempfile::tempdir().unwrap();
    let e = run_err(&file_job(dir.path(), "csv", "1,x\n2,y\nthree,z\n", ""));
    assert!(e.contains("in.csv, line 3"), "{e}");
}

#[test]
fn unknown_connector_format_and_option_list_valid_ones() {
    let e =
        run_err("CREATE TABLE t (a INT) WITH ('connector' = 'kafak');\nINSERT INTO t SELECT 1;");
    assert!(e.contains("unknown connector 'kafak'; valid connectors: blackhole, datagen, filesystem, http, jdbc, kafka, nexmark, print"), "{e}");
    let e = run_err("CREATE TABLE t (a INT) WITH ('connector' = 'filesystem', 'path' = '/tmp/x', 'format' = 'jsn');\nINSERT INTO t SELECT 1;");
    assert!(
        e.contains("unknown format 'jsn'; valid formats: json, csv, parquet"),
        "{e}"
    );
    let e = run_err("CREATE TABLE t (a INT) WITH ('connector' = 'datagen', 'rows-per-secnd' = '1');\nCREATE TABLE o (a INT) WITH ('connector' = 'blackhole');\nINSERT INTO o SELECT a FROM t;");
    assert!(
        e.contains("unknown option 'rows-per-secnd'")
            && e.contains("valid options:")
            && e.contains("rows-per-second"),
        "{e}"
    );
    let e = run_err("CREATE TABLE t (a INT) WITH ('connector' = 'filesystem', 'format' = 'json');\nINSERT INTO t SELECT 1;");
    assert!(e.contains("requires option 'path'"), "{e}");
}

#[test]
fn type_mismatch_names_column_and_both_types() {
    let e = run_err(
        "CREATE TABLE s (a BIGINT, b STRING) WITH ('connector' = 'datagen', 'number-of-rows' = '1');\n\
         CREATE TABLE o (a BIGINT, b INT) WITH ('connector' = 'blackhole');\nINSERT INTO o SELECT a, b FROM s;",
    );
    assert!(
        e.contains(
            "column 'b' (position 2) has type INT but the query's column 'b' has type STRING"
        ),
        "{e}"
    );
    assert!(e.contains("line 3, column 1"), "{e}");
}

#[test]
fn sql_errors_point_at_line_and_column() {
    let e = run_err(
        "CREATE TABLE s (a BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '1');\n\
         CREATE TABLE o (a BIGINT) WITH ('connector' = 'blackhole');\nINSERT INTO o\nSELECT nosuch FROM s;",
    );
    assert!(e.contains("line 4, column 8"), "{e}");
    let e = run_err(
        "CREATE TABLE s (a BIGINT) WITH ('connector' = 'datagen');\nINSERT INTO o SELEC a FROM s;",
    );
    assert!(e.contains("line 2"), "{e}");
}
