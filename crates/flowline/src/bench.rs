//! `flowline bench`: the benchmarks of docs/BENCHMARKS.md, built in so anyone can rerun them.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use flowline_common::MetricsRegistry;
use flowline_runtime::StopSignal;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Workload {
    /// nexmark → SELECT auction, bidder, 0.908 * price, date_time FROM bid → blackhole (Nexmark q1 shape)
    Nexmark,
    /// JSON-lines file → filter → Parquet files
    JsonParquet,
    /// nexmark bids → TUMBLE 10 s, COUNT(*) and MAX(price) per auction → blackhole
    Tumble,
    /// nexmark bids → HOP 2 s / 10 s (five windows per bid), COUNT(*) per auction → blackhole
    Hop,
    /// nexmark bids → SESSION with a 10 s gap per bidder, COUNT(*) and MAX(price) → blackhole
    Session,
}

/// The sink and INSERT of a nexmark-fed workload.
fn nexmark_query(w: Workload) -> (&'static str, &'static str) {
    match w {
        Workload::Tumble => (
            "nexmark TUMBLE 10 s per auction",
            "CREATE TABLE sink (auction BIGINT, ws TIMESTAMP(3), we TIMESTAMP(3), bids BIGINT, top BIGINT) WITH ('connector' = 'blackhole');\n\
             INSERT INTO sink SELECT auction, window_start, window_end, COUNT(*), MAX(price) \
             FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) GROUP BY auction, window_start, window_end;",
        ),
        Workload::Hop => (
            "nexmark HOP 2 s / 10 s per auction",
            "CREATE TABLE sink (auction BIGINT, ws TIMESTAMP(3), we TIMESTAMP(3), bids BIGINT) WITH ('connector' = 'blackhole');\n\
             INSERT INTO sink SELECT auction, window_start, window_end, COUNT(*) \
             FROM TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND)) GROUP BY auction, window_start, window_end;",
        ),
        Workload::Session => (
            "nexmark SESSION 10 s gap per bidder",
            "CREATE TABLE sink (bidder BIGINT, ws TIMESTAMP(3), we TIMESTAMP(3), bids BIGINT, top BIGINT) WITH ('connector' = 'blackhole');\n\
             INSERT INTO sink SELECT bidder, window_start, window_end, COUNT(*), MAX(price) \
             FROM TABLE(SESSION(TABLE bid PARTITION BY bidder, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) GROUP BY bidder, window_start, window_end;",
        ),
        _ => (
            "nexmark q1-shape",
            "CREATE TABLE sink (auction BIGINT, bidder BIGINT, price DECIMAL(23, 3), date_time TIMESTAMP(3)) WITH ('connector' = 'blackhole');\n\
             INSERT INTO sink SELECT auction, bidder, 0.908 * price AS price, date_time FROM bid;",
        ),
    }
}

#[derive(Args)]
pub struct BenchArgs {
    workload: Workload,
    /// Events (nexmark) or rows (json-parquet) to process
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Subtasks per operator
    #[arg(long, short = 'p', default_value_t = 1)]
    parallelism: usize,
    /// Scratch directory for json-parquet (default: a new temporary directory)
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Checkpoint at this interval (e.g. 1s) into a temporary state directory
    #[arg(long)]
    checkpoint_interval: Option<String>,
}

const NEXMARK_DDL: &str = "
CREATE TABLE nexmark (
  event_type INT,
  person ROW<id BIGINT, name VARCHAR, emailAddress VARCHAR, creditCard VARCHAR, city VARCHAR, state VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR>,
  auction ROW<id BIGINT, itemName VARCHAR, description VARCHAR, initialBid BIGINT, reserve BIGINT, dateTime TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra VARCHAR>,
  bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR>,
  dateTime AS CASE WHEN event_type = 0 THEN person.dateTime WHEN event_type = 1 THEN auction.dateTime ELSE bid.dateTime END,
  WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND
) WITH ('connector' = 'nexmark', 'events.num' = '{events}', 'first-event.rate' = '{rate}', 'base-time' = '2026-01-01 00:00:00');
CREATE VIEW bid AS SELECT bid.auction AS auction, bid.bidder AS bidder, bid.price AS price, bid.channel AS channel,
  bid.url AS url, dateTime AS date_time, bid.extra AS extra FROM nexmark WHERE event_type = 2;
";

async fn run_script(script: &str, parallelism: usize, checkpoint_interval: Option<&str>) -> Result<(Duration, MetricsRegistry)> {
    let script = match checkpoint_interval {
        Some(i) => format!("SET 'execution.checkpointing.interval' = '{i}';\n{script}"),
        None => script.to_string(),
    };
    let graph = flowline_planner::plan_script(&script, Some(parallelism)).await?;
    let metrics = MetricsRegistry::new();
    let state = std::env::temp_dir().join(format!("flowline-bench-{}", std::process::id()));
    let checkpoint = flowline_runtime::CheckpointConfig::from_options(&graph.config, &state, true)?;
    let started = Instant::now();
    let job = flowline_runtime::JobState { dir: Some(state.clone()), checkpoint };
    let res = flowline_runtime::run_job_with_state(&graph, &metrics, &StopSignal::new(), job).await;
    let elapsed = started.elapsed();
    let _ = std::fs::remove_dir_all(&state);
    res?;
    if checkpoint_interval.is_some() {
        println!(
            "checkpoints: {} completed, last {} bytes, longest task pause in the last one {} us",
            metrics.total("flowline_checkpoints_completed_total"),
            metrics.total("flowline_checkpoint_bytes"),
            metrics.total("flowline_checkpoint_pause_us")
        );
    }
    Ok((elapsed, metrics))
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

pub async fn run(args: BenchArgs) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).min(args.parallelism);
    match args.workload {
        Workload::Nexmark | Workload::Tumble | Workload::Hop | Workload::Session => {
            let (name, query) = nexmark_query(args.workload);
            // Window workloads: 100k events per second of event time, so 10 s windows hold 1M
            // events and keep firing (the generator's default, 10M/s, puts 20M events in 2 s).
            let rate = if matches!(args.workload, Workload::Nexmark) { "10000000" } else { "100000" };
            let script = format!("{}\n{query}", NEXMARK_DDL.replace("{events}", &args.events.to_string()).replace("{rate}", rate));
            let (elapsed, metrics) = run_script(&script, args.parallelism, args.checkpoint_interval.as_deref()).await?;
            let events = metrics.total("flowline_source_rows_total") as f64;
            let rate = events / elapsed.as_secs_f64();
            println!(
                "{name}: {events:.0} events in {:.2?} with parallelism {} -> {:.0} events/s, {:.0} events/s/core; {} rows out; peak RSS {:.0} MB",
                elapsed,
                args.parallelism,
                rate,
                rate / cores as f64,
                metrics.total("flowline_sink_rows_total"),
                peak_rss_mb()
            );
        }
        Workload::JsonParquet => {
            let tmp;
            let dir = match &args.dir {
                Some(d) => d.clone(),
                None => {
                    tmp = std::env::temp_dir().join(format!("flowline-bench-{}", std::process::id()));
                    tmp
                }
            };
            let input = dir.join("bids.json");
            let output = dir.join("out");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let prepare = format!(
                "{}\nCREATE TABLE bids_json (auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, date_time TIMESTAMP(3), extra STRING)\n\
                 WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');\nINSERT INTO bids_json SELECT * FROM bid;",
                NEXMARK_DDL.replace("{events}", &(args.events * 50 / 46).to_string()).replace("{rate}", "10000000"),
                input.display()
            );
            run_script(&prepare, 1, None).await?;
            let bytes = dir_size(&input)?;
            let script = format!(
                "CREATE TABLE bids (auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, date_time TIMESTAMP(3), extra STRING)\n\
                 WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');\n\
                 CREATE TABLE out (auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, date_time TIMESTAMP(3))\n\
                 WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet');\n\
                 INSERT INTO out SELECT auction, bidder, price, channel, date_time FROM bids WHERE price > 10000;",
                input.display(),
                output.display()
            );
            let (elapsed, metrics) = run_script(&script, args.parallelism, args.checkpoint_interval.as_deref()).await?;
            let rows = metrics.total("flowline_source_rows_total") as f64;
            let mb = bytes as f64 / 1e6;
            println!(
                "json -> filter -> parquet: {rows:.0} rows, {mb:.1} MB in {:.2?} with parallelism {} -> {:.1} MB/s/core, {:.0} rows/s/core; peak RSS {:.0} MB",
                elapsed,
                args.parallelism,
                mb / elapsed.as_secs_f64() / cores as f64,
                rows / elapsed.as_secs_f64() / cores as f64,
                peak_rss_mb()
            );
            if args.dir.is_none() {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    Ok(())
}

fn dir_size(path: &Path) -> Result<u64> {
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for e in std::fs::read_dir(path)? {
        total += dir_size(&e?.path())?;
    }
    Ok(total)
}
