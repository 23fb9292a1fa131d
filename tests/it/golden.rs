//! SQL golden tests: `tests/slt/*.slt`, run by the sqllogictest crate against a streaming engine.
//!
//! The test database keeps a script: `CREATE TABLE/VIEW` and `SET` statements are checked and
//! appended; `INSERT INTO` runs the script's job to completion; a `SELECT` runs as a streaming
//! job whose rows are collected (an updating result as the table its changelog leaves behind). `WRITE FILE path` followed by lines creates an input file.
//! `$DIR` in any statement is the test's scratch directory.

use std::path::{Path, PathBuf};

use sqllogictest::{DBOutput, DefaultColumnType};

use crate::support::{apply_changelog, rows, run_script, stream_select};

struct FlowlineDb {
    dir: tempfile::TempDir,
    script: String,
    runtime: tokio::runtime::Runtime,
}

#[derive(Debug)]
struct DbError(String);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for DbError {}

fn err(e: impl std::fmt::Display) -> DbError {
    DbError(e.to_string())
}

fn starts(sql: &str, word: &str) -> bool {
    sql.trim_start()
        .get(..word.len())
        .is_some_and(|w| w.eq_ignore_ascii_case(word))
}

fn parallelism(script: &str) -> usize {
    // Golden files pin parallelism with SET; default to 2 so the parallel path is exercised.
    // The last SET wins, as it does in a script.
    script
        .lines()
        .filter_map(|l| l.trim().strip_prefix("SET 'parallelism.default' = '"))
        .next_back()
        .and_then(|v| v.trim_end_matches("';").parse().ok())
        .unwrap_or(2)
}

impl sqllogictest::DB for FlowlineDb {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let sql = sql.replace("$DIR", &self.dir.path().display().to_string());
        if starts(&sql, "WRITE FILE") {
            let (head, body) = sql.split_once('\n').unwrap_or((&sql, ""));
            let path: PathBuf = head.trim()["WRITE FILE".len()..].trim().into();
            std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).map_err(err)?;
            std::fs::write(&path, format!("{body}\n")).map_err(err)?;
            return Ok(DBOutput::StatementComplete(0));
        }
        let p = parallelism(&self.script);
        if starts(&sql, "SELECT") || starts(&sql, "WITH") {
            let batches = self
                .runtime
                .block_on(stream_select(&self.script, &sql, p))
                .map_err(|e| DbError(format!("{e:#}")))?;
            // An updating result is shown as the table its changelog leaves behind.
            let rows = if batches
                .iter()
                .any(|b| flowline_common::changelog::row_kinds(b).is_some())
            {
                apply_changelog(&batches).map_err(DbError)?
            } else {
                rows(&batches)
            };
            let types = vec![DefaultColumnType::Any; rows.first().map_or(0, Vec::len)];
            return Ok(DBOutput::Rows { types, rows });
        }
        if starts(&sql, "INSERT") || starts(&sql, "EXECUTE") {
            let script = format!("{}\n{sql};", self.script);
            let metrics = self
                .runtime
                .block_on(run_script(&script, p))
                .map_err(|e| DbError(format!("{e:#}")))?;
            return Ok(DBOutput::StatementComplete(
                metrics.total("flowline_sink_rows_total"),
            ));
        }
        // DDL or SET: check it by planning the script so far, then keep it.
        let candidate = format!("{}\n{sql};", self.script);
        self.runtime
            .block_on(async {
                let mut catalog = flowline_planner::Catalog::new();
                for stmt in flowline_sql::parse_script(&candidate)? {
                    catalog.apply(stmt).await?;
                }
                Ok::<_, anyhow::Error>(())
            })
            .map_err(|e| DbError(format!("{e:#}")))?;
        self.script = candidate;
        Ok(DBOutput::StatementComplete(0))
    }
}

#[test]
fn slt_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", root.display());
    let mut failures = Vec::new();
    for file in &files {
        let mut runner = sqllogictest::Runner::new(|| async {
            Ok(FlowlineDb {
                dir: tempfile::tempdir().map_err(err)?,
                script: String::new(),
                runtime: tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(err)?,
            })
        });
        if let Err(e) = runner.run_file(file) {
            failures.push(format!("{}: {e}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "golden failures:\n{}",
        failures.join("\n\n")
    );
}
