//! Two jobs in one process share nothing: each has its own HTTP tables and file committers
//! (`JobShared`), even when their tables have the same names.

use flowline_common::MetricsRegistry;
use flowline_runtime::{JobShared, JobState, StopSignal};

fn script(out: &std::path::Path) -> String {
    format!(
        "CREATE TABLE events (id BIGINT, name STRING) WITH ('connector' = 'http', 'format' = 'json');
         CREATE TABLE sink (id BIGINT, name STRING)
           WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
         INSERT INTO sink SELECT id, name FROM events;",
        out.display()
    )
}

fn written(dir: &std::path::Path) -> Vec<String> {
    let mut rows = Vec::new();
    for f in std::fs::read_dir(dir).unwrap() {
        let path = f.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            rows.extend(
                std::fs::read_to_string(path)
                    .unwrap()
                    .lines()
                    .map(str::to_string),
            );
        }
    }
    rows.sort();
    rows
}

/// Polls `f` every 10 ms for up to 5 s; its first `Some`.
fn wait_for<T>(rt: &tokio::runtime::Runtime, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    rt.block_on(async {
        for _ in 0..500 {
            if let Some(v) = f() {
                return Some(v);
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        None
    })
}

#[test]
fn two_jobs_with_same_named_tables_run_side_by_side() {
    let rt = crate::support::runtime();
    let dir = tempfile::tempdir().unwrap();
    let stop = StopSignal::new();
    let jobs: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let out = dir.path().join(format!("{name}_out"));
            let graph = rt
                .block_on(flowline_planner::plan_script(&script(&out), Some(1)))
                .unwrap();
            let shared = JobShared::new();
            let state = JobState {
                dir: Some(dir.path().join(format!("{name}_state"))),
                shared: shared.clone(),
                ..Default::default()
            };
            let (stop, metrics) = (stop.clone(), MetricsRegistry::new());
            let m = metrics.clone();
            let job = rt.spawn(async move {
                flowline_runtime::run_job_with_state(&graph, &m, &stop, state).await
            });
            (name, out, shared, metrics, job)
        })
        .collect();
    for (name, _, shared, _, _) in &jobs {
        let table = wait_for(&rt, || {
            shared.ingest_table("events").filter(|t| t.is_ready())
        })
        .unwrap_or_else(|| panic!("job {name}: its table 'events' never became ready"));
        let body =
            format!("{{\"id\": 1, \"name\": \"{name}\"}}\n{{\"id\": 2, \"name\": \"{name}\"}}");
        let resp = table.ingest(body.into_bytes().into(), false);
        assert_eq!(resp.status, 200, "job {name}: {:?}", resp.body);
    }
    // Acknowledged rows are durable; once each job's source has read its two, stop both.
    for (name, _, _, metrics, _) in &jobs {
        let read = wait_for(&rt, || {
            (metrics.total("flowline_source_rows_total") >= 2).then_some(())
        });
        assert!(read.is_some(), "job {name}: its source never read the rows");
    }
    stop.stop();
    for (name, out, _, _, job) in jobs {
        rt.block_on(job).unwrap().unwrap();
        assert_eq!(
            written(&out),
            [
                format!("{{\"id\":1,\"name\":\"{name}\"}}"),
                format!("{{\"id\":2,\"name\":\"{name}\"}}")
            ],
            "job {name} wrote its own rows only"
        );
    }
}
