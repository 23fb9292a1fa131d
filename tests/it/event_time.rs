//! Event-time behaviour that golden files cannot show: late-row counting and idle sources.

use crate::support::run_script;

fn late_rows(metrics: &flowline_common::MetricsRegistry) -> u64 {
    metrics.total("flowline_late_rows_total")
}

/// A bounded file and a slow generator whose watermark stays at the start of the day feed one
/// window aggregation. Without an idle timeout the generator holds time back until it ends, so
/// every row lands in an open window. With one, the generator goes idle between its rows, the
/// finished file no longer holds time back, all windows fire, and the generator's later rows
/// are late: dropped and counted.
#[test]
fn idle_sources_do_not_stall_time() {
    let rt = crate::support::runtime();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.json"),
        "{\"ts\": \"2024-01-01 00:00:01\"}\n{\"ts\": \"2024-01-01 00:00:15\"}\n{\"ts\": \"2024-01-01 00:00:31\"}\n",
    )
    .unwrap();
    let script = |idle: &str| {
        format!(
            "{idle}
            CREATE TABLE f (ts TIMESTAMP(3), WATERMARK FOR ts AS ts) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
            CREATE TABLE g (id BIGINT, ts AS TO_TIMESTAMP('2024-01-01 00:00:02'), WATERMARK FOR ts AS ts)
              WITH ('connector' = 'datagen', 'rows-per-second' = '2', 'number-of-rows' = '4');
            CREATE TABLE out (ws TIMESTAMP(3), n BIGINT) WITH ('connector' = 'blackhole');
            INSERT INTO out SELECT window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE
              (SELECT ts FROM f UNION ALL SELECT ts FROM g), DESCRIPTOR(ts), INTERVAL '10' SECOND))
            GROUP BY window_start, window_end;",
            dir.path().display()
        )
    };
    let held = rt.block_on(run_script(&script(""), 1)).unwrap();
    assert_eq!(
        late_rows(&held),
        0,
        "without an idle timeout nothing fires before the generator ends"
    );
    assert_eq!(held.total("flowline_sink_rows_total"), 3);

    let idle = rt
        .block_on(run_script(
            &script("SET 'table.exec.source.idle-timeout' = '100 ms';"),
            1,
        ))
        .unwrap();
    assert!(
        late_rows(&idle) >= 2,
        "the generator's later rows arrive after their window fired: {}",
        late_rows(&idle)
    );
    assert_eq!(idle.total("flowline_sink_rows_total"), 3);
}

#[test]
fn window_state_is_released_when_windows_fire() {
    let rt = crate::support::runtime();
    let script = "CREATE TABLE nexmark (event_type INT, \
        bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR>, \
        ts AS bid.dateTime, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
        WITH ('connector' = 'nexmark', 'events.num' = '50000', 'first-event.rate' = '1000', 'base-time' = '2026-01-01 00:00:00');
        CREATE TABLE out (a BIGINT, ws TIMESTAMP(3), n BIGINT) WITH ('connector' = 'blackhole');
        INSERT INTO out SELECT bid.auction, window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE nexmark, DESCRIPTOR(ts), INTERVAL '1' SECOND))
        WHERE event_type = 2 GROUP BY bid.auction, window_start, window_end;";
    let m = rt.block_on(run_script(script, 2)).unwrap();
    // 50 s of events in 1 s windows: many windows opened and fired; none is open at the end.
    assert!(m.total("flowline_sink_rows_total") > 50);
    assert_eq!(m.total("flowline_operator_open_windows"), 0);
    assert_eq!(m.total("flowline_operator_state_bytes"), 0);
    assert_eq!(late_rows(&m), 0);
}

/// Processing-time windows fire as the wall clock passes their end: 20 rows over about a
/// second, in 200 ms windows, land in several windows and none is lost.
#[test]
fn processing_time_windows_fire_on_the_clock() {
    let rt = crate::support::runtime();
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "CREATE TABLE g (id BIGINT, pt AS PROCTIME()) WITH ('connector' = 'datagen', 'rows-per-second' = '20', 'number-of-rows' = '20');
        CREATE TABLE out (ws TIMESTAMP(3), n BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
        INSERT INTO out SELECT window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE g, DESCRIPTOR(pt), INTERVAL '200' MILLISECOND))
        GROUP BY window_start, window_end;",
        dir.path().display()
    );
    let m = rt.block_on(run_script(&script, 1)).unwrap();
    let windows = m.total("flowline_sink_rows_total");
    assert!(
        windows >= 3,
        "20 rows over about a second should span several 200 ms windows, got {windows}"
    );
    let read = format!("CREATE TABLE r (ws TIMESTAMP(3), n BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');", dir.path().display());
    let total = crate::support::rows(
        &rt.block_on(crate::support::batch_select(&read, "SELECT SUM(n) FROM r"))
            .unwrap(),
    );
    assert_eq!(total, vec![vec!["20".to_string()]]);
    assert_eq!(late_rows(&m), 0);
}

/// Issue 19: rows whose time attribute is NULL vanished before windows without a word. As in
/// Flink, a job that uses the table's event time fails ("RowTime field should not be null");
/// with 'table.exec.source.null-rowtime' = 'drop' they are dropped and counted. A query that
/// does not use event time passes them through (Flink fails it too: see docs/event-time.md).
#[test]
fn null_rowtimes_fail_the_job_or_are_dropped_and_counted() {
    let rt = crate::support::runtime();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.json"),
        "{\"ts\": \"2024-01-01 00:00:01\", \"v\": 1}\n{\"ts\": null, \"v\": 2}\n{\"ts\": \"2024-01-01 00:00:21\", \"v\": 3}\n",
    )
    .unwrap();
    let script = |set: &str, query: &str| {
        format!(
            "{set}
            CREATE TABLE f (ts TIMESTAMP(3), v INT, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
              WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
            CREATE TABLE out (a TIMESTAMP(3), n BIGINT) WITH ('connector' = 'blackhole');
            INSERT INTO out {query};",
            dir.path().display()
        )
    };
    let window = "SELECT window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE f, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY window_start, window_end";
    let plain = "SELECT ts, CAST(v AS BIGINT) FROM f";
    let rowtime_order = "SELECT ts, COUNT(*) OVER (ORDER BY ts RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) FROM f";
    for query in [window, rowtime_order] {
        let Err(err) = rt.block_on(run_script(&script("", query), 1)) else {
            panic!("a NULL time attribute must fail the job: {query}");
        };
        let msg = format!("{err:#}");
        assert!(
            msg.contains("RowTime field should not be null") && msg.contains("table f"),
            "{msg}"
        );
    }
    let passed = rt.block_on(run_script(&script("", plain), 1)).unwrap();
    assert_eq!(passed.total("flowline_sink_rows_total"), 3);
    let dropped = rt
        .block_on(run_script(
            &script("SET 'table.exec.source.null-rowtime' = 'drop';", window),
            1,
        ))
        .unwrap();
    assert_eq!(dropped.total("flowline_null_rowtime_rows_total"), 1);
    assert_eq!(
        dropped.total("flowline_sink_rows_total"),
        2,
        "two windows of one row"
    );
    // With a late-row table, the dropped rows land there (the columns the query reads, filled
    // by name).
    let late_dir = dir.path().join("late");
    let with_late = format!(
        "SET 'table.exec.source.null-rowtime' = 'drop';
        CREATE TABLE late_rows (v INT, ts TIMESTAMP(3), note STRING)
          WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
        SET 'table.exec.late-data.sink' = 'late_rows';",
        late_dir.display()
    );
    let summed = "SELECT window_start, CAST(SUM(v) AS BIGINT) FROM TABLE(TUMBLE(TABLE f, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY window_start, window_end";
    let late = rt
        .block_on(run_script(&script(&with_late, summed), 1))
        .unwrap();
    assert_eq!(late.total("flowline_null_rowtime_rows_total"), 1);
    let mut written = String::new();
    for f in std::fs::read_dir(&late_dir).unwrap() {
        let path = f.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            written.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    assert_eq!(
        written.trim(),
        r#"{"v":2,"ts":null,"note":null}"#,
        "the dropped row, in the late-row table"
    );
    let bad = rt.block_on(run_script(
        &script("SET 'table.exec.source.null-rowtime' = 'skip';", plain),
        1,
    ));
    let Err(bad) = bad else {
        panic!("an unknown value of 'table.exec.source.null-rowtime' must be refused");
    };
    assert!(format!("{bad:#}").contains("'fail'"), "{bad:#}");
}
