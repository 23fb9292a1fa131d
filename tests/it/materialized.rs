//! Materialized tables: what a job keeps (`CREATE MATERIALIZED TABLE ... AS SELECT`) is what
//! batch SQL computes from the same input (the oracle), read by scans and by primary-key point
//! reads, with and without a primary key (a keyless table keeps duplicate rows), spilled or not.

use crate::support::{batch_select, rows, runtime, sorted};

fn source(dir: &std::path::Path, n: i64) -> String {
    let mut text = String::new();
    for i in 0..n {
        let v = if i % 11 == 0 {
            "null".to_string()
        } else {
            (i % 37).to_string()
        };
        text.push_str(&format!(
            "{{\"k\": {}, \"v\": {v}, \"name\": \"n{:05}\"}}\n",
            i % 5000,
            (i * 7919) % 10007
        ));
    }
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/part-0.json"), text).unwrap();
    format!(
        "CREATE TABLE src (k BIGINT, v BIGINT, name STRING) WITH (
           'connector' = 'filesystem', 'path' = '{}/src', 'format' = 'json');",
        dir.display()
    )
}

const BY_KEY: &str =
    "SELECT k, COUNT(*) AS n, SUM(v) AS total, MAX(name) AS hi FROM src GROUP BY k";
const SMALL: &str = "SELECT k % 3 AS m, v FROM src WHERE v < 5";

async fn job_then_catalog(
    ddl: &str,
    memory: Option<&str>,
) -> anyhow::Result<(flowline_planner::Catalog, u64)> {
    let set = memory.map_or(String::new(), |m| {
        format!("SET 'taskmanager.memory.managed.size' = '{m}';")
    });
    let script = format!(
        "{set}{ddl}
         CREATE MATERIALIZED TABLE by_key (PRIMARY KEY (k) NOT ENFORCED) AS {BY_KEY};
         CREATE MATERIALIZED TABLE small AS {SMALL};"
    );
    let graph = flowline_planner::plan_script(&script, Some(2)).await?;
    assert_eq!(graph.materialized().len(), 2);
    let metrics = flowline_common::MetricsRegistry::new();
    flowline_runtime::run_job(&graph, &metrics, &flowline_runtime::StopSignal::new()).await?;
    let mut catalog = flowline_planner::batch_catalog(&script).await?;
    catalog.attach_materialized(&graph.materialized())?;
    Ok((catalog, metrics.total("flowline_operator_state_spills")))
}

async fn physical_plan(catalog: &flowline_planner::Catalog, sql: &str) -> String {
    let plan = flowline_planner::plan_select(catalog, sql).await.unwrap();
    let df = datafusion::dataframe::DataFrame::new(catalog.ctx.state(), plan);
    let physical = df.create_physical_plan().await.unwrap();
    let text = datafusion::physical_plan::displayable(physical.as_ref())
        .indent(true)
        .to_string();
    text
}

#[test]
fn a_materialized_table_holds_what_batch_sql_computes_and_answers_point_reads() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let ddl = source(dir.path(), 20_000);
    for memory in [None, Some("64KB")] {
        let (mut catalog, spills) = rt.block_on(job_then_catalog(&ddl, memory)).unwrap();
        assert_eq!(spills > 0, memory.is_some(), "spills: {spills}");
        let mut query = |sql: &str| {
            sorted(rows(
                &rt.block_on(flowline_planner::batch_query(&mut catalog, sql))
                    .unwrap(),
            ))
        };
        let oracle = |sql: &str| sorted(rows(&rt.block_on(batch_select(&ddl, sql)).unwrap()));
        let all = query("SELECT k, n, total, hi FROM by_key");
        assert_eq!(all.len(), 5000, "{memory:?}");
        assert_eq!(all, oracle(BY_KEY), "{memory:?}");
        // A keyless table keeps every row, duplicates included.
        let small = query("SELECT m, v FROM small");
        assert_eq!(small, oracle(SMALL), "{memory:?}");
        assert!(small.windows(2).any(|w| w[0] == w[1]), "duplicates");
        // Point reads: a hit, a miss, a key given as another type; a filter that is not on
        // the key scans.
        for (sql, oracle_sql) in [
            (
                "SELECT * FROM by_key WHERE k = 7",
                format!("SELECT * FROM ({BY_KEY}) WHERE k = 7"),
            ),
            (
                "SELECT * FROM by_key WHERE k = 100000",
                format!("SELECT * FROM ({BY_KEY}) WHERE k = 100000"),
            ),
            (
                "SELECT hi, n FROM by_key WHERE 42.0 = k",
                format!("SELECT hi, n FROM ({BY_KEY}) WHERE k = 42"),
            ),
            (
                "SELECT k FROM by_key WHERE n > 40 AND k < 100",
                format!("SELECT k FROM ({BY_KEY}) WHERE n > 40 AND k < 100"),
            ),
        ] {
            assert_eq!(query(sql), oracle(&oracle_sql), "{sql} {memory:?}");
        }
    }
    let (catalog, _) = rt.block_on(job_then_catalog(&ddl, None)).unwrap();
    let point = rt.block_on(physical_plan(&catalog, "SELECT * FROM by_key WHERE k = 7"));
    assert!(
        !point.contains("StreamingTableExec"),
        "a point read, not a scan:\n{point}"
    );
    let scan = rt.block_on(physical_plan(&catalog, "SELECT * FROM by_key WHERE n = 7"));
    assert!(scan.contains("StreamingTableExec"), "a scan:\n{scan}");
}

#[test]
fn materialized_table_statements_are_checked() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let ddl = source(dir.path(), 10);
    let err = |sql: &str| {
        rt.block_on(flowline_planner::plan_script(
            &format!("{ddl}{sql}"),
            Some(1),
        ))
        .unwrap_err()
        .to_string()
    };
    let e =
        err("CREATE MATERIALIZED TABLE t (PRIMARY KEY (x) NOT ENFORCED) AS SELECT k, v FROM src;");
    assert!(
        e.contains("PRIMARY KEY column 'x' is not a column of its query (columns: k, v)"),
        "{e}"
    );
    let e = err("CREATE MATERIALIZED TABLE t WITH ('path' = 'out/t') AS SELECT k, COUNT(*) AS n FROM src GROUP BY k;");
    assert!(
        e.contains("only take appended rows") && e.contains("GroupAggregate"),
        "{e}"
    );
    let e = err("CREATE MATERIALIZED TABLE t AS SELECT k FROM src; CREATE TABLE t (a INT) WITH ('connector' = 'blackhole');");
    assert!(e.contains("'t' already exists"), "{e}");
    let e = err("CREATE MATERIALIZED TABLE t REFRESH_MODE = FULL AS SELECT k FROM src;");
    assert!(e.contains("REFRESH_MODE = FULL"), "{e}");
    let e = err("CREATE MATERIALIZED TABLE t FRESHNESS = 3 AS SELECT k FROM src;");
    assert!(e.contains("FRESHNESS must be a positive INTERVAL"), "{e}");
    let e = err("CREATE MATERIALIZED TABLE t AS SELECT k FROM src;
                 CREATE TABLE o (k BIGINT) WITH ('connector' = 'blackhole');
                 INSERT INTO o SELECT k FROM t;");
    assert!(
        e.contains("materialized table 't' is served to queries"),
        "{e}"
    );
    let e = err("ALTER MATERIALIZED TABLE t SUSPEND;");
    assert!(e.contains("stop the job"), "{e}");
    let e = err("CREATE MATERIALIZED TABLE t AS SELECT k FROM src; DROP MATERIALIZED TABLE t;");
    assert!(e.contains("nothing to run"), "{e}");
    // Dropped, then made anew; IF EXISTS.
    let script = format!(
        "{ddl} CREATE MATERIALIZED TABLE t AS SELECT k FROM src; DROP MATERIALIZED TABLE t;
         DROP MATERIALIZED TABLE IF EXISTS t;
         CREATE MATERIALIZED TABLE t (PRIMARY KEY (k) NOT ENFORCED) FRESHNESS = INTERVAL '3' SECOND
           AS SELECT k, MAX(v) AS v FROM src GROUP BY k;"
    );
    let graph = rt
        .block_on(flowline_planner::plan_script(&script, Some(1)))
        .unwrap();
    assert_eq!(graph.materialized().len(), 1);
    assert_eq!(graph.materialized()[0].key, vec![0]);
    assert_eq!(
        graph.materialized()[0].freshness,
        std::time::Duration::from_secs(3)
    );
    // Flink's continuous mode: the FRESHNESS is the checkpoint interval, unless one is SET.
    assert_eq!(graph.config["execution.checkpointing.interval"], "3000ms");
    let set = format!("SET 'execution.checkpointing.interval' = '10s';{script}");
    let graph = rt
        .block_on(flowline_planner::plan_script(&set, Some(1)))
        .unwrap();
    assert_eq!(graph.config["execution.checkpointing.interval"], "10s");
    assert!(
        graph.explain(false).contains("Materialize(t, key=[k])"),
        "{}",
        graph.explain(false)
    );
}

#[test]
fn the_example_plans() {
    let rt = runtime();
    let graph = rt
        .block_on(flowline_planner::plan_script(
            include_str!("../../examples/materialized.sql"),
            Some(2),
        ))
        .unwrap();
    assert_eq!(graph.materialized()[0].name, "counts");
    assert!(graph
        .explain(false)
        .contains("Materialize(counts, key=[k])"));
}
