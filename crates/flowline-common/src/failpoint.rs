//! Named failpoints for crash tests: `FLOWLINE_FAILPOINTS="name=abort"` makes the process abort
//! (no destructors, no flush: what `kill -9` does to our files) the first time it reaches
//! `hit("name")`; `name=abort@3` on the third time; `name=sleep150` sleeps 150 ms every time
//! (to widen a race window a test looks for). Several are separated by `,`.
//!
//! Always compiled in: a failpoint is one relaxed load when the variable is unset, and the
//! points sit on checkpoint paths, not on the per-row path. (The `fail` crate needs a
//! feature-gated second build of the binary for the same effect.)

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

struct Point {
    after: u64,
    hits: u64,
    /// Sleep this long at every hit instead of aborting.
    sleep: Option<std::time::Duration>,
}

fn points() -> &'static Option<Mutex<HashMap<String, Point>>> {
    static POINTS: OnceLock<Option<Mutex<HashMap<String, Point>>>> = OnceLock::new();
    POINTS.get_or_init(|| {
        let spec = std::env::var("FLOWLINE_FAILPOINTS").ok()?;
        let mut map = HashMap::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, action) = item.split_once('=').unwrap_or((item, "abort"));
            let after = action
                .strip_prefix("abort")
                .and_then(|n| n.strip_prefix('@'))
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            let sleep = action
                .strip_prefix("sleep")
                .and_then(|ms| ms.parse().ok())
                .map(std::time::Duration::from_millis);
            map.insert(
                name.to_string(),
                Point {
                    after,
                    hits: 0,
                    sleep,
                },
            );
        }
        Some(Mutex::new(map))
    })
}

/// Aborts the process here if the failpoint `name` is armed and due.
pub fn hit(name: &str) {
    let Some(points) = points() else { return };
    let mut points = points.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = points.get_mut(name) {
        if let Some(d) = p.sleep {
            drop(points);
            std::thread::sleep(d);
            return;
        }
        p.hits += 1;
        if p.hits == p.after {
            eprintln!("flowline: failpoint {name} reached: aborting");
            std::process::abort();
        }
    }
}

/// The failpoints Flowline has, for documentation and tests.
pub const FAILPOINTS: &[(&str, &str)] = &[
    ("checkpoint.alignment", "an operator has received the barrier from some inputs, not all"),
    ("checkpoint.after-state", "every task's state is written, the manifest is not"),
    ("checkpoint.after-manifest", "the manifest is written, sinks have not committed"),
    ("sink.mid-commit", "a sink has published some of a checkpoint's files, not all"),
    ("kafka.before-commit", "a Kafka exactly-once sink has written a checkpoint's records in a transaction, not committed it"),
    ("restore", "state is read back, the job has not started processing"),
    ("materialize.checkpointed.N", "subtask N of a materialized table has taken a checkpoint's snapshot, not yet registered it for queries"),
];
