//! A small Prometheus-text metrics registry: counters and gauges keyed by name and labels.
//!
//! Handles are cheap `Arc<AtomicU64>` clones; the hot path does one relaxed atomic add per batch.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonically increasing count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn inc(&self) {
        self.add(1)
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

struct Family {
    help: &'static str,
    kind: Kind,
    series: BTreeMap<String, Arc<AtomicU64>>,
}

/// Registry of all metrics of a process. Registration takes a lock; updates do not.
#[derive(Clone, Default)]
pub struct MetricsRegistry {
    families: Arc<Mutex<BTreeMap<&'static str, Family>>>,
}

impl MetricsRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the counter `name{labels}`, creating it on first use. Registering the same
    /// series twice returns the same counter (subtasks of one operator share nothing, they
    /// carry a `subtask` label).
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> Counter {
        Counter(self.series(name, help, Kind::Counter, labels))
    }

    pub fn gauge(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Gauge {
        Gauge(self.series(name, help, Kind::Gauge, labels))
    }

    fn series(
        &self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &[(&str, &str)],
    ) -> Arc<AtomicU64> {
        let key = render_labels(labels);
        let mut families = self.families.lock().expect("metrics lock poisoned");
        let family = families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: BTreeMap::new(),
        });
        assert_eq!(family.kind, kind, "metric {name} registered as two kinds");
        family.series.entry(key).or_default().clone()
    }

    /// Sum of all series of `name` (all label sets). Handy in tests and summaries.
    pub fn total(&self, name: &str) -> u64 {
        let families = self.families.lock().expect("metrics lock poisoned");
        families
            .get(name)
            .map(|f| f.series.values().map(|v| v.load(Ordering::Relaxed)).sum())
            .unwrap_or(0)
    }

    /// Prometheus text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let families = self.families.lock().expect("metrics lock poisoned");
        let mut out = String::new();
        for (name, family) in families.iter() {
            let kind = match family.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {name} {}", family.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in &family.series {
                let _ = writeln!(out, "{name}{labels} {}", value.load(Ordering::Relaxed));
            }
        }
        out
    }
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut s = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(s, "{k}=\"{v}\"");
    }
    s.push('}');
    s
}

/// Resident set size of this process in bytes (Linux; 0 elsewhere).
pub fn process_rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = MetricsRegistry::new();
        m.counter(
            "flowline_rows_in_total",
            "rows in",
            &[("operator", "a\"b"), ("subtask", "0")],
        )
        .add(3);
        m.counter(
            "flowline_rows_in_total",
            "rows in",
            &[("operator", "a\"b"), ("subtask", "0")],
        )
        .add(2);
        m.gauge("flowline_rss_bytes", "rss", &[]).set(7);
        let text = m.render();
        assert!(
            text.contains("# TYPE flowline_rows_in_total counter"),
            "{text}"
        );
        assert!(
            text.contains("flowline_rows_in_total{operator=\"a\\\"b\",subtask=\"0\"} 5"),
            "{text}"
        );
        assert!(text.contains("flowline_rss_bytes 7"), "{text}");
        assert_eq!(m.total("flowline_rows_in_total"), 5);
    }
}
