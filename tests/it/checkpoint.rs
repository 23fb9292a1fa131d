//! Checkpoint and restore of every stateful operator: a run stopped with a final checkpoint and
//! resumed gives the rows of a run that was never stopped.

use std::path::Path;
use std::time::Duration;

use flowline_common::MetricsRegistry;
use flowline_runtime::{CheckpointConfig, JobState, StopSignal};

const SOURCE: &str = "
SET 'execution.checkpointing.interval' = '30ms';
CREATE TABLE bids (
  event_type INT,
  bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, dateTime TIMESTAMP(3), extra STRING>,
  dateTime AS bid.dateTime,
  WATERMARK FOR dateTime AS dateTime - INTERVAL '1' SECOND
) WITH ('connector' = 'nexmark', 'events.num' = '60000', 'first-event.rate' = '60000', 'rate.limited' = 'true',
        'base-time' = '2026-01-01 00:00:00');
-- Watermarks 1 ms behind the rows (each source subtask generates in time order): OVER windows
-- fire during the run, so checkpoints hold their frames.
CREATE TABLE bids_tight (
  event_type INT,
  bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, dateTime TIMESTAMP(3), extra STRING>,
  dateTime AS bid.dateTime,
  WATERMARK FOR dateTime AS dateTime - INTERVAL '1' MILLISECOND
) WITH ('connector' = 'nexmark', 'events.num' = '60000', 'first-event.rate' = '60000', 'rate.limited' = 'true',
        'base-time' = '2026-01-01 00:00:00');
CREATE VIEW b AS SELECT bid.channel AS channel, bid.price AS price, dateTime FROM bids WHERE event_type = 2;
CREATE TABLE nexmark (
  event_type INT,
  person ROW<id BIGINT, name STRING, emailAddress STRING, creditCard STRING, city STRING, state STRING, dateTime TIMESTAMP(3), extra STRING>,
  auction ROW<id BIGINT, itemName STRING, description STRING, initialBid BIGINT, reserve BIGINT, dateTime TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra STRING>
) WITH ('connector' = 'nexmark', 'events.num' = '60000', 'first-event.rate' = '60000', 'rate.limited' = 'true',
        'base-time' = '2026-01-01 00:00:00');
CREATE VIEW person AS SELECT person.id, person.name, person.city, person.state FROM nexmark WHERE event_type = 0;
CREATE TABLE people (
  event_type INT,
  person ROW<id BIGINT, name STRING, emailAddress STRING, creditCard STRING, city STRING, state STRING, dateTime TIMESTAMP(3), extra STRING>,
  dateTime AS person.dateTime,
  WATERMARK FOR dateTime AS dateTime - INTERVAL '1' SECOND,
  PRIMARY KEY (event_type) NOT ENFORCED
) WITH ('connector' = 'nexmark', 'events.num' = '60000', 'first-event.rate' = '60000', 'rate.limited' = 'true',
        'base-time' = '2026-01-01 00:00:00');
CREATE VIEW auction AS SELECT auction.id, auction.seller, auction.category FROM nexmark WHERE event_type = 1;
";

/// Each stateful operator behind one query: window aggregation (TUMBLE, HOP, CUMULATE),
/// session aggregation, session assignment (rows held per session), OVER aggregation, a window
/// TopN and a window join. The 1 s TUMBLE lives
/// through dozens of checkpoints, so each of its windows fires from many frozen parts.
const QUERIES: &[(&str, &str)] = &[
    ("a BIGINT, ws TIMESTAMP(3), n BIGINT, p BIGINT",
     "SELECT bid.auction, window_start, COUNT(*), MAX(bid.price) FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(dateTime), INTERVAL '100' MILLISECOND)) WHERE event_type = 2 GROUP BY bid.auction, window_start, window_end"),
    ("ws TIMESTAMP(3), n BIGINT, d BIGINT",
     "SELECT window_start, COUNT(*), COUNT(DISTINCT bid.bidder) FROM TABLE(HOP(TABLE bids, DESCRIPTOR(dateTime), INTERVAL '100' MILLISECOND, INTERVAL '300' MILLISECOND)) WHERE event_type = 2 GROUP BY window_start, window_end"),
    ("ws TIMESTAMP(3), we TIMESTAMP(3), n BIGINT",
     "SELECT window_start, window_end, SUM(bid.price) FROM TABLE(CUMULATE(TABLE bids, DESCRIPTOR(dateTime), INTERVAL '100' MILLISECOND, INTERVAL '400' MILLISECOND)) WHERE event_type = 2 GROUP BY window_start, window_end"),
    ("a BIGINT, ws TIMESTAMP(3), n BIGINT, d BIGINT, p BIGINT",
     "SELECT bid.auction, window_start, COUNT(*), COUNT(DISTINCT bid.bidder), MIN(bid.price) FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(dateTime), INTERVAL '1' SECOND)) WHERE event_type = 2 GROUP BY bid.auction, window_start, window_end"),
    ("c STRING, ws TIMESTAMP(3), we TIMESTAMP(3), n BIGINT",
     "SELECT channel, window_start, window_end, COUNT(*) FROM TABLE(SESSION(TABLE b PARTITION BY channel, DESCRIPTOR(dateTime), INTERVAL '5' MILLISECOND)) GROUP BY channel, window_start, window_end"),
    ("c STRING, p BIGINT, ws TIMESTAMP(3)",
     "SELECT channel, price, window_start FROM TABLE(SESSION(TABLE b PARTITION BY channel, DESCRIPTOR(dateTime), INTERVAL '5' MILLISECOND)) WHERE price < 1000"),
    // OVER aggregations: a RANGE frame (its rows kept) and an unbounded one (accumulators only).
    // ROWS frames are left out: their result depends on the arrival order of rows of one time.
    ("k BIGINT, t TIMESTAMP(3), s BIGINT, n BIGINT, m BIGINT",
     "SELECT bid.auction % 10, dateTime, SUM(bid.price) OVER w, COUNT(*) OVER w, MAX(bid.bidder) OVER w FROM bids_tight WHERE event_type = 2 \
      WINDOW w AS (PARTITION BY bid.auction % 10 ORDER BY dateTime RANGE BETWEEN INTERVAL '50' MILLISECOND PRECEDING AND CURRENT ROW)"),
    ("k BIGINT, t TIMESTAMP(3), n BIGINT",
     "SELECT bid.bidder % 7, dateTime, COUNT(DISTINCT bid.auction) OVER (PARTITION BY bid.bidder % 7 ORDER BY dateTime) FROM bids_tight WHERE event_type = 2"),
    // A window TopN: each window's top rows per partition wait in state for the watermark.
    // The ORDER BY breaks every tie, so arrival order (which differs between runs) does not matter.
    ("a BIGINT, p BIGINT, ws TIMESTAMP(3), rn BIGINT",
     "SELECT auction, price, window_start, rn FROM (SELECT bid.auction AS auction, bid.price AS price, window_start, \
      ROW_NUMBER() OVER (PARTITION BY window_start, window_end, bid.auction % 10 ORDER BY bid.price DESC, bid.bidder, bid.auction, dateTime) AS rn \
      FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(dateTime), INTERVAL '100' MILLISECOND)) WHERE event_type = 2) WHERE rn <= 3"),
    // A window join (FULL) of two window aggregations: windows wait in state for the watermark.
    ("a BIGINT, b BIGINT, ws TIMESTAMP(3), n BIGINT, m BIGINT",
     "SELECT A.a, B.a, COALESCE(A.window_start, B.window_start), A.n, B.m FROM \
      (SELECT bid.auction % 20 AS a, window_start, window_end, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE bids_tight, DESCRIPTOR(dateTime), INTERVAL '20' MILLISECOND)) \
       WHERE event_type = 2 AND bid.price % 3 = 0 GROUP BY bid.auction % 20, window_start, window_end) A \
      FULL JOIN (SELECT bid.bidder % 20 AS a, window_start, window_end, MAX(bid.price) AS m FROM TABLE(TUMBLE(TABLE bids_tight, DESCRIPTOR(dateTime), INTERVAL '20' MILLISECOND)) \
       WHERE event_type = 2 AND bid.price % 5 = 0 GROUP BY bid.bidder % 20, window_start, window_end) B \
      ON A.a = B.a AND A.window_start = B.window_start AND A.window_end = B.window_end"),
];

fn script(out: &Path, cols: &str, query: &str) -> String {
    format!(
        "{SOURCE}CREATE TABLE out ({cols}) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');\nINSERT INTO out {query};",
        out.display()
    )
}

/// Runs until the end, or until `stop_after` and then a stop with a final checkpoint.
async fn run(script: &str, state: &Path, stop_after: Option<Duration>) -> anyhow::Result<()> {
    let graph = flowline_planner::plan_script(script, Some(2)).await?;
    run_graph(&graph, state, stop_after).await?;
    Ok(())
}

/// Runs a planned job with its checkpoints in `state`, stopped (with a final checkpoint) after
/// `stop_after` if it is still running.
async fn run_graph(
    graph: &flowline_planner::JobGraph,
    state: &Path,
    stop_after: Option<Duration>,
) -> anyhow::Result<flowline_runtime::JobOutput> {
    run_graph_with_metrics(graph, state, stop_after, &MetricsRegistry::new()).await
}

/// [`run_graph`], with the job's metrics in `metrics`.
async fn run_graph_with_metrics(
    graph: &flowline_planner::JobGraph,
    state: &Path,
    stop_after: Option<Duration>,
    metrics: &MetricsRegistry,
) -> anyhow::Result<flowline_runtime::JobOutput> {
    let checkpoint = CheckpointConfig::from_options(&graph.config, state, false)?;
    let stop = StopSignal::new();
    if let Some(d) = stop_after {
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            s.stop();
        });
    }
    let job = JobState {
        dir: Some(state.to_path_buf()),
        checkpoint,
        ..Default::default()
    };
    Ok(flowline_runtime::run_job_with_state(graph, metrics, &stop, job).await?)
}

fn lines(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".inprogress"),
            "in-progress file left visible: {name}"
        );
        if !name.starts_with('.') {
            out.extend(
                std::fs::read_to_string(&p)
                    .unwrap()
                    .lines()
                    .map(str::to_string),
            );
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_resume_gives_the_uninterrupted_result() {
    for (i, (cols, query)) in QUERIES.iter().enumerate() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        // The reference never checkpoints: a snapshot that lost state would show.
        let reference =
            script(&a, cols, query).replace("SET 'execution.checkpointing.interval' = '30ms';", "");
        run(&reference, &d.path().join("state_a"), None)
            .await
            .unwrap();
        let expected = lines(&a);
        assert!(!expected.is_empty(), "query {i} produced nothing");
        // Stop twice mid-run (final checkpoint each time), then run to the end.
        let s = script(&b, cols, query);
        let state = d.path().join("state_b");
        run(&s, &state, Some(Duration::from_millis(250)))
            .await
            .unwrap();
        run(&s, &state, Some(Duration::from_millis(250)))
            .await
            .unwrap();
        run(&s, &state, None).await.unwrap();
        let got = lines(&b);
        assert_eq!(
            got.len(),
            expected.len(),
            "query {i}: row count after stop and resume"
        );
        assert_eq!(got, expected, "query {i}: rows after stop and resume");
        // A finished job run again does nothing (its last checkpoint says so).
        let graph = flowline_planner::plan_script(&s, Some(2)).await.unwrap();
        let c = CheckpointConfig::from_options(&graph.config, &state, false)
            .unwrap()
            .unwrap();
        assert!(c.restored.unwrap().manifest.finished);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_pipeline_is_refused_and_fresh_starts_over() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let (cols, query) = QUERIES[0];
    run(
        &script(&d.path().join("a"), cols, query),
        &state,
        Some(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    let (cols2, query2) = QUERIES[1];
    let changed = script(&d.path().join("a"), cols2, query2);
    let err = run(&changed, &state, None).await.unwrap_err().to_string();
    assert!(
        err.contains("no longer matches its checkpoint") && err.contains("--fresh"),
        "{err}"
    );
    let graph = flowline_planner::plan_script(&changed, Some(2))
        .await
        .unwrap();
    let c = CheckpointConfig::from_options(&graph.config, &state, true)
        .unwrap()
        .unwrap();
    assert!(c.restored.is_none(), "--fresh discards the checkpoints");
}

/// Updating queries (aggregations, one over another's changelog, joins): the changelogs of a run
/// stopped twice and resumed, concatenated, apply cleanly and leave the table of a run that was
/// never stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updating_queries_resume_their_changelog() {
    const UPDATING: &[&str] = &[
        "SELECT bid.auction % 50, COUNT(*), MAX(bid.price), MIN(bid.channel), COUNT(DISTINCT bid.bidder), AVG(bid.price) FROM bids WHERE event_type = 2 GROUP BY bid.auction % 50",
        "SELECT m % 7, COUNT(*), SUM(m), MAX(m) FROM (SELECT bid.bidder, MAX(bid.price) AS m FROM bids WHERE event_type = 2 GROUP BY bid.bidder) AS t GROUP BY m % 7",
        // Joins: an outer join of append-only inputs, and a full join of two aggregations
        // (its match counts are state too).
        "SELECT P.id, P.state, A.id, A.category FROM person AS P LEFT JOIN auction AS A ON A.seller = P.id",
        "SELECT a.k, b.k, a.c, b.c FROM (SELECT bid.auction % 13 AS k, COUNT(*) AS c FROM bids WHERE event_type = 2 GROUP BY bid.auction % 13) AS a \
         FULL JOIN (SELECT bid.bidder % 17 AS k, MAX(bid.price) AS c FROM bids WHERE event_type = 2 GROUP BY bid.bidder % 17) AS b ON a.k = b.k",
        // TopN (q19 shape) and deduplication (q18 shape), with orders that leave no ties.
        "SELECT * FROM (SELECT bid.auction, bid.bidder, bid.price, ROW_NUMBER() OVER (PARTITION BY bid.auction ORDER BY bid.price DESC, bid.bidder, dateTime) AS rn FROM bids WHERE event_type = 2) WHERE rn <= 3",
        // An event-time temporal join: each bid with the person of its key valid at its time
        // (bids waiting for the watermark and the versions are state).
        "SELECT b.bid.auction, b.bid.price, b.dateTime, p.person.id, p.person.name FROM bids AS b \
         JOIN people FOR SYSTEM_TIME AS OF b.dateTime AS p ON b.bid.auction % 10 = p.person.id % 10 \
         WHERE b.event_type = 2 AND p.event_type = 0",
        // An interval join (rows kept until the watermark ends them; an outer side's match flags).
        "SELECT b.bid.auction, b.bid.price, p.person.id FROM bids AS b LEFT JOIN people AS p \
         ON b.bid.auction % 10 = p.person.id % 10 AND p.event_type = 0 \
         AND b.dateTime BETWEEN p.dateTime AND p.dateTime + INTERVAL '20' MILLISECOND WHERE b.event_type = 2",
        "SELECT b, a, p FROM (SELECT bid.bidder % 100 AS b, bid.auction AS a, bid.price AS p, ROW_NUMBER() OVER (PARTITION BY bid.bidder % 100 ORDER BY dateTime DESC, bid.auction, bid.price) AS rn FROM bids WHERE event_type = 2) WHERE rn = 1",
    ];
    async fn select(
        query: &str,
        state: &Path,
        checkpoints: bool,
        stop_after: Option<Duration>,
    ) -> Vec<datafusion::arrow::array::RecordBatch> {
        let ddl = if checkpoints {
            SOURCE.to_string()
        } else {
            SOURCE.replace("SET 'execution.checkpointing.interval' = '30ms';", "")
        };
        let mut catalog = flowline_planner::Catalog::new();
        for stmt in flowline_sql::parse_script(&ddl).unwrap() {
            catalog.apply(stmt).await.unwrap();
        }
        let Some(flowline_sql::Statement::Query(q)) =
            flowline_sql::parse_script(query).unwrap().pop()
        else {
            panic!("not a query")
        };
        let pipeline = catalog.plan_select(*q).await.unwrap();
        let graph = flowline_planner::JobGraph {
            pipelines: vec![pipeline],
            parallelism: 2,
            config: catalog.config.clone(),
        };
        let out = run_graph(&graph, state, stop_after).await.unwrap();
        out.collected.into_iter().flatten().collect()
    }
    for query in UPDATING {
        let d = tempfile::tempdir().unwrap();
        let expected =
            crate::support::apply_changelog(&select(query, &d.path().join("a"), false, None).await)
                .unwrap();
        assert!(!expected.is_empty());
        let state = d.path().join("b");
        let mut changelog = select(query, &state, true, Some(Duration::from_millis(250))).await;
        changelog.extend(select(query, &state, true, Some(Duration::from_millis(250))).await);
        changelog.extend(select(query, &state, true, None).await);
        let got =
            crate::support::apply_changelog(&changelog).unwrap_or_else(|e| panic!("{query}: {e}"));
        assert_eq!(got, expected, "{query}: table after stop and resume");
    }
}

/// Partition commit with the partition-time trigger (Nexmark q10's options, with partitions of a
/// second so that 4 s of events make several): a partition gets its `_SUCCESS` file only when
/// it is complete, also when the job is stopped mid-run, and every partition has one after the
/// end of the input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_commit_marks_only_complete_partitions() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let script = format!(
        "SET 'execution.checkpointing.interval' = '30ms';
CREATE TABLE bids (
  event_type INT,
  bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, dateTime TIMESTAMP(3), extra STRING>,
  dateTime AS bid.dateTime,
  WATERMARK FOR dateTime AS dateTime - INTERVAL '1' SECOND
) WITH ('connector' = 'nexmark', 'events.num' = '40000', 'first-event.rate' = '10000', 'rate.limited' = 'true',
        'base-time' = '2026-01-01 00:00:00');
CREATE TABLE fs_sink (auction BIGINT, price BIGINT, dt STRING, hms STRING) PARTITIONED BY (dt, hms) WITH (
  'connector' = 'filesystem', 'path' = 'file://{}', 'format' = 'csv',
  'sink.partition-commit.trigger' = 'partition-time', 'sink.partition-commit.delay' = '1 s',
  'sink.partition-commit.policy.kind' = 'success-file',
  'partition.time-extractor.timestamp-pattern' = '$dt $hms');
INSERT INTO fs_sink SELECT bid.auction, bid.price, DATE_FORMAT(dateTime, 'yyyy-MM-dd'), DATE_FORMAT(dateTime, 'HH:mm:ss')
FROM bids WHERE event_type = 2;",
        out.display()
    );
    let count = |dir: &Path| -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy().into_owned();
                !n.starts_with('.') && !n.starts_with('_')
            })
            .map(|p| std::fs::read_to_string(p).unwrap().lines().count())
            .sum()
    };
    let committed = |out: &Path| -> Vec<(String, usize)> {
        let day = out.join("dt=2026-01-01");
        let mut v: Vec<(String, usize)> = std::fs::read_dir(&day)
            .into_iter()
            .flatten()
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("_SUCCESS").exists())
            .map(|p| {
                let hm = p.file_name().unwrap().to_string_lossy();
                (hm.trim_start_matches("hms=").to_string(), count(&p))
            })
            .collect();
        v.sort();
        v
    };
    let state = d.path().join("state");
    run(&script, &state, Some(Duration::from_millis(3200)))
        .await
        .unwrap();
    let early = committed(&out);
    assert!(
        !early.is_empty(),
        "no partition committed in 3.2 s of a 4 s input"
    );
    run(&script, &state, None).await.unwrap();
    let all = committed(&out);
    // Every partition is committed at the end; the events span 4 s.
    assert_eq!(all.len(), 4, "{all:?}");
    let total: usize = all.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 36_800, "every bid written once");
    for (hm, n) in &early {
        let full = all.iter().find(|(h, _)| h == hm).unwrap().1;
        assert_eq!(
            *n, full,
            "partition {hm} was committed before it was complete"
        );
    }
    eprintln!("committed when stopped: {early:?}; at the end: {all:?}");
}

/// Runs `query` over [`SOURCE`] at `parallelism` with checkpoints in `state` (stopped after
/// `stop_after`), its state tables held to `budget`: the rows and the job's metrics.
async fn select(
    query: &str,
    state: &Path,
    budget: Option<&str>,
    stop_after: Option<Duration>,
    parallelism: usize,
) -> (Vec<datafusion::arrow::array::RecordBatch>, MetricsRegistry) {
    let (out, metrics) = try_select(query, state, budget, stop_after, parallelism).await;
    (out.unwrap(), metrics)
}

async fn try_select(
    query: &str,
    state: &Path,
    budget: Option<&str>,
    stop_after: Option<Duration>,
    parallelism: usize,
) -> (
    anyhow::Result<Vec<datafusion::arrow::array::RecordBatch>>,
    MetricsRegistry,
) {
    let mut catalog = flowline_planner::Catalog::new();
    for stmt in flowline_sql::parse_script(SOURCE).unwrap() {
        catalog.apply(stmt).await.unwrap();
    }
    // A query may parse into several statements (a SESSION TVF declares its helper first).
    let mut statements = flowline_sql::parse_script(query).unwrap();
    let Some(flowline_sql::Statement::Query(q)) = statements.pop() else {
        panic!("not a query")
    };
    for stmt in statements {
        catalog.apply(stmt).await.unwrap();
    }
    let pipeline = catalog.plan_select(*q).await.unwrap();
    let mut config = catalog.config.clone();
    if let Some(b) = budget {
        config.insert("taskmanager.memory.managed.size".into(), b.into());
    }
    let graph = flowline_planner::JobGraph {
        pipelines: vec![pipeline],
        parallelism,
        config,
    };
    let metrics = MetricsRegistry::new();
    let out = run_graph_with_metrics(&graph, state, stop_after, &metrics)
        .await
        .map(|out| out.collected.into_iter().flatten().collect());
    (out, metrics)
}

/// A checkpoint taken at parallelism 2 restores at 1, at 4, and at 3 and then 1: the state
/// tables hand their key groups to the new subtasks, the nexmark source's position is shared
/// out, and the rows are the fault-free run's. Every stateful operator family: GROUP BY, TopN,
/// deduplication, a join into a GROUP BY, window aggregations with keys and without, a window
/// join and a window TopN (a window's state parts are filed by key group too), spilling; and
/// session windows, an interval join, OVER aggregations and a temporal join, whose rescaled
/// restore keeps the sessions, rows and partitions of its key groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rescaled_state_gives_the_fault_free_rows() {
    const QUERIES: &[&str] = &[
        "SELECT bid.bidder, COUNT(*), MAX(bid.price), SUM(bid.price) FROM bids WHERE event_type = 2 GROUP BY bid.bidder",
        "SELECT * FROM (SELECT bid.auction, bid.bidder, bid.price, ROW_NUMBER() OVER (PARTITION BY bid.auction ORDER BY bid.price DESC, bid.bidder, dateTime) AS rn FROM bids WHERE event_type = 2) WHERE rn <= 3",
        "SELECT b, a, p FROM (SELECT bid.bidder AS b, bid.auction AS a, bid.price AS p, ROW_NUMBER() OVER (PARTITION BY bid.bidder ORDER BY dateTime DESC, bid.auction, bid.price) AS rn FROM bids WHERE event_type = 2) WHERE rn = 1",
        "SELECT P.id, P.name, COUNT(*), MAX(A.auction.category) FROM nexmark A JOIN person P ON A.auction.seller = P.id WHERE A.event_type = 1 GROUP BY P.id, P.name",
        "SELECT bid.auction, window_start, COUNT(*), COUNT(DISTINCT bid.bidder), MIN(bid.price) FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(dateTime), INTERVAL '1' SECOND)) WHERE event_type = 2 GROUP BY bid.auction, window_start, window_end",
        "SELECT window_start, COUNT(*), COUNT(DISTINCT bid.bidder) FROM TABLE(HOP(TABLE bids, DESCRIPTOR(dateTime), INTERVAL '100' MILLISECOND, INTERVAL '300' MILLISECOND)) WHERE event_type = 2 GROUP BY window_start, window_end",
        "SELECT L.a, L.p, R.p, L.window_start FROM \
         (SELECT bid.auction AS a, bid.price AS p, window_start, window_end FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(dateTime), INTERVAL '1' SECOND)) WHERE event_type = 2 AND bid.price % 7 = 0) L \
         LEFT JOIN (SELECT bid.auction AS a, bid.price AS p, window_start, window_end FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(dateTime), INTERVAL '1' SECOND)) WHERE event_type = 2 AND bid.price % 11 = 0) R \
         ON L.a = R.a AND L.window_start = R.window_start AND L.window_end = R.window_end",
        "SELECT auction, price, window_start, rn FROM (SELECT bid.auction AS auction, bid.price AS price, window_start, \
         ROW_NUMBER() OVER (PARTITION BY window_start, window_end, bid.auction % 10 ORDER BY bid.price DESC, bid.bidder, bid.auction, dateTime) AS rn \
         FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(dateTime), INTERVAL '1' SECOND)) WHERE event_type = 2) WHERE rn <= 3",
        // Operators that keep keyed state in their own bytes: a rescaled restore keeps the
        // sessions and rows of its key groups.
        "SELECT channel, window_start, window_end, COUNT(*) FROM TABLE(SESSION(TABLE b PARTITION BY channel, DESCRIPTOR(dateTime), INTERVAL '5' MILLISECOND)) GROUP BY channel, window_start, window_end",
        "SELECT channel, price, window_start FROM TABLE(SESSION(TABLE b PARTITION BY channel, DESCRIPTOR(dateTime), INTERVAL '5' MILLISECOND)) WHERE price < 1000",
        "SELECT b.bid.auction, b.bid.price, p.person.id FROM bids AS b LEFT JOIN people AS p \
         ON b.bid.auction % 10 = p.person.id % 10 AND p.event_type = 0 \
         AND b.dateTime BETWEEN p.dateTime AND p.dateTime + INTERVAL '20' MILLISECOND WHERE b.event_type = 2",
        "SELECT bid.auction % 10, dateTime, SUM(bid.price) OVER w, COUNT(*) OVER w FROM bids_tight WHERE event_type = 2 \
         WINDOW w AS (PARTITION BY bid.auction % 10 ORDER BY dateTime RANGE BETWEEN INTERVAL '50' MILLISECOND PRECEDING AND CURRENT ROW)",
        "SELECT bid.bidder % 7, dateTime, COUNT(DISTINCT bid.auction) OVER (PARTITION BY bid.bidder % 7 ORDER BY dateTime) FROM bids_tight WHERE event_type = 2",
        "SELECT b.bid.auction, b.bid.price, b.dateTime, p.person.id, p.person.name FROM bids AS b \
         LEFT JOIN people FOR SYSTEM_TIME AS OF b.dateTime AS p ON b.bid.auction % 10 = p.person.id % 10 \
         WHERE b.event_type = 2",
    ];
    for query in QUERIES {
        let d = tempfile::tempdir().unwrap();
        let (rows, _) = select(query, &d.path().join("ref"), None, None, 2).await;
        let expected = crate::support::apply_changelog(&rows).unwrap();
        // Stopped at each parallelism but the last, which runs to the end. 2 -> 3 -> 1: the
        // last restore reads runs that two rescales have listed (each speaks only for the key
        // groups its lister owned).
        for plan in [&[2, 1][..], &[2, 4], &[2, 3, 1]] {
            let state = d.path().join(format!("{plan:?}"));
            let mut changelog = Vec::new();
            for (i, p) in plan.iter().enumerate() {
                let stop = (i + 1 < plan.len()).then(|| Duration::from_millis(250));
                let (rows, _) = select(query, &state, Some("128kb"), stop, *p).await;
                changelog.extend(rows);
            }
            let got = crate::support::apply_changelog(&changelog)
                .unwrap_or_else(|e| panic!("{query}, {plan:?}: {e}"));
            assert_eq!(got, expected, "{query}: rows after restores at {plan:?}");
        }
    }
}

/// A source whose position cannot be shared out (datagen's random state) refuses a checkpoint
/// taken at another parallelism, and says what to do. (Every operator rescales.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_datagen_source_refuses_to_rescale_and_says_why() {
    let query = "CREATE TABLE g (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '2000', 'number-of-rows' = '100000'); \
                 SELECT id % 10, COUNT(*) FROM g GROUP BY id % 10";
    let d = tempfile::tempdir().unwrap();
    select(query, d.path(), None, Some(Duration::from_millis(300)), 2).await;
    let (out, _) = try_select(query, d.path(), None, None, 1).await;
    let err = format!("{:#}", out.unwrap_err());
    assert!(
        err.contains("'g'") && err.contains("cannot be redistributed") && err.contains("--fresh"),
        "{err}"
    );
}

/// A group aggregation, TopN and deduplication with a state budget far below their state
/// (groups and partitions spill to local disk; checkpoints upload only new runs): stopped twice and resumed, the concatenated
/// changelog leaves the table of an unbudgeted run that was never stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spilled_state_resumes_its_changelog() {
    const SPILLING: &[&str] = &[
        "SELECT bid.bidder, COUNT(*), MAX(bid.price), SUM(bid.price) FROM bids WHERE event_type = 2 GROUP BY bid.bidder",
        "SELECT * FROM (SELECT bid.auction, bid.bidder, bid.price, ROW_NUMBER() OVER (PARTITION BY bid.auction ORDER BY bid.price DESC, bid.bidder, dateTime) AS rn FROM bids WHERE event_type = 2) WHERE rn <= 3",
        "SELECT b, a, p FROM (SELECT bid.bidder AS b, bid.auction AS a, bid.price AS p, ROW_NUMBER() OVER (PARTITION BY bid.bidder ORDER BY dateTime DESC, bid.auction, bid.price) AS rn FROM bids WHERE event_type = 2) WHERE rn = 1",
    ];
    for query in SPILLING {
        let d = tempfile::tempdir().unwrap();
        let (rows, _) = select(query, &d.path().join("a"), None, None, 2).await;
        let expected = crate::support::apply_changelog(&rows).unwrap();
        let state = d.path().join("b");
        let mut changelog = Vec::new();
        let mut spills = 0;
        for stop_after in [
            Some(Duration::from_millis(300)),
            Some(Duration::from_millis(300)),
            None,
        ] {
            let (rows, metrics) = select(query, &state, Some("128kb"), stop_after, 2).await;
            changelog.extend(rows);
            spills += metrics.total("flowline_operator_state_spills");
            if stop_after.is_some() {
                // Stopped mid-run: the last checkpoint references the tables' runs (after the
                // end of input the final checkpoint holds no state, and they go).
                let shared = std::fs::read_dir(state.join("checkpoints/shared"))
                    .unwrap()
                    .count();
                assert!(shared > 0, "{query}: no shared runs in the checkpoints");
            }
        }
        assert!(spills > 0, "{query}: nothing spilled");
        let got =
            crate::support::apply_changelog(&changelog).unwrap_or_else(|e| panic!("{query}: {e}"));
        assert_eq!(
            got, expected,
            "{query}: table after stop and resume, spilling"
        );
    }
}

/// Subtask `subtask` of `parallelism` of the source a `CREATE TABLE` declares.
fn source_of(
    ddl: &str,
    subtask: usize,
    parallelism: usize,
) -> Box<dyn flowline_connectors::Source> {
    let Some(flowline_sql::Statement::CreateTable(table)) =
        flowline_sql::parse_script(ddl).unwrap().pop()
    else {
        panic!("not a table")
    };
    let (factory, options) = flowline_connectors::registry::connector(&table).unwrap();
    let ctx = flowline_connectors::TaskContext {
        table: table.name.clone(),
        subtask,
        parallelism,
        metrics: MetricsRegistry::new(),
        job: None,
        state_dir: None,
        shared: flowline_connectors::job::JobShared::new(),
    };
    (factory.source.unwrap())(&table, &options, &ctx, None).unwrap()
}

/// The filesystem source restored at another parallelism: files are dealt out by their index,
/// so files another subtask was in the middle of may be this one's now. Two subtasks each read
/// part of their first file; restored at 1 and at 3 the rows read afterwards are the rest, each
/// once.
#[test]
fn a_file_source_restored_at_another_parallelism_reads_every_row_once() {
    use flowline_connectors::Poll;
    let d = tempfile::tempdir().unwrap();
    let lines = 150_000;
    for f in 0..5 {
        let text: String = (0..lines)
            .map(|i| format!("{{\"id\": {}}}\n", f * lines + i))
            .collect();
        std::fs::write(d.path().join(format!("f{f}.json")), text).unwrap();
    }
    let ddl = format!(
        "CREATE TABLE t (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json')",
        d.path().display()
    );
    let source = |subtask: usize, parallelism: usize| source_of(&ddl, subtask, parallelism);
    let ids = |b: &datafusion::arrow::array::RecordBatch| -> Vec<i64> {
        use datafusion::arrow::array::AsArray;
        let c = b
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        c.values().to_vec()
    };
    for to in [1, 3] {
        let mut seen: Vec<i64> = Vec::new();
        let mut positions = Vec::new();
        for subtask in 0..2 {
            let mut s = source(subtask, 2);
            // One batch: part of the first file.
            match s.poll().unwrap() {
                Poll::Batch(b) => seen.extend(ids(&b)),
                _ => panic!("no rows"),
            }
            positions.push(s.snapshot().unwrap());
        }
        assert!(seen.len() < 2 * lines as usize, "a batch is part of a file");
        let parts: Vec<&[u8]> = positions.iter().map(Vec::as_slice).collect();
        for subtask in 0..to {
            let mut s = source(subtask, to);
            s.restore_rescaled(&parts).unwrap();
            loop {
                match s.poll().unwrap() {
                    Poll::Batch(b) => seen.extend(ids(&b)),
                    Poll::End => break,
                    _ => {}
                }
            }
        }
        seen.sort_unstable();
        let all: Vec<i64> = (0..5 * lines).collect();
        assert_eq!(seen.len(), all.len(), "2 -> {to}: every row once");
        assert_eq!(seen, all, "2 -> {to}");
    }
}

/// The nexmark source restored at other parallelisms in a row, before the subtasks catch up
/// with each other (as restarts after kills do): 2 subtasks, then 3, then 1, each reading a
/// different number of batches, produce every event exactly once.
#[test]
fn a_nexmark_source_rescaled_twice_produces_every_event_once() {
    use flowline_connectors::{Poll, Source};
    let ddl = "CREATE TABLE t (event_type INT, bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, dateTime TIMESTAMP(3), extra STRING>) WITH ('connector' = 'nexmark', 'events.num' = '40000', 'base-time' = '2026-01-01 00:00:00')";
    let source = |subtask: usize, parallelism: usize| source_of(ddl, subtask, parallelism);
    let rows = |b: &datafusion::arrow::array::RecordBatch| -> Vec<String> {
        let t = datafusion::arrow::util::pretty::pretty_format_batches(std::slice::from_ref(b))
            .unwrap();
        t.to_string()
            .lines()
            .skip(3)
            .filter(|l| l.starts_with('|'))
            .map(|l| l.split('|').map(str::trim).collect::<Vec<_>>().join("|"))
            .collect()
    };
    let read = |s: &mut Box<dyn Source>, batches: Option<usize>, out: &mut Vec<String>| {
        let mut n = 0;
        while batches.is_none_or(|b| n < b) {
            match s.poll().unwrap() {
                Poll::Batch(b) => out.extend(rows(&b)),
                Poll::End => break,
                _ => {}
            }
            n += 1;
        }
    };
    let mut expected = Vec::new();
    read(&mut source(0, 1), None, &mut expected);
    expected.sort();
    for seed in 0..4usize {
        let mut got = Vec::new();
        let mut positions: Vec<Vec<u8>> = Vec::new();
        for (stage, p) in [2usize, 3, 1].into_iter().enumerate() {
            let mut next = Vec::new();
            let parts: Vec<&[u8]> = positions.iter().map(Vec::as_slice).collect();
            for subtask in 0..p {
                let mut s = source(subtask, p);
                if !parts.is_empty() {
                    s.restore_rescaled(&parts).unwrap();
                }
                // Uneven progress: 0 to 3 batches, all of them at the last stage.
                let batches = (stage < 2).then_some((seed * 7 + subtask * 3 + stage) % 4);
                read(&mut s, batches, &mut got);
                next.push(s.snapshot().unwrap());
            }
            positions = next;
        }
        got.sort();
        assert_eq!(got.len(), expected.len(), "seed {seed}: every event once");
        let diff: Vec<_> = got
            .iter()
            .zip(&expected)
            .filter(|(a, b)| a != b)
            .take(3)
            .collect();
        assert!(diff.is_empty(), "seed {seed}: the same events: {diff:#?}");
    }
}
