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
    /// NDJSON bids POSTed to /v1/ingest (durable before the 2xx) → http source → blackhole
    HttpIngest,
    /// Nexmark q3: auctions of category 10 ⋈ persons from OR/ID/CA on seller (regular join)
    Q3,
    /// Nexmark q15: bid statistics per day with COUNT(DISTINCT) and FILTER (updating aggregation)
    Q15,
    /// Nexmark q18: the last bid per bidder and auction (deduplication, ROW_NUMBER = 1)
    Q18,
    /// Nexmark q19: the 10 highest bids per auction (TopN, ROW_NUMBER <= 10)
    Q19,
    /// Decode and encode of Nexmark bid records in every text format, one core, beside
    /// arrow-json's own decoder (no pipeline: the format layer alone)
    Formats,
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
        Workload::Q3 => (
            "nexmark q3 (join)",
            "CREATE TABLE sink (name VARCHAR, city VARCHAR, state VARCHAR, id BIGINT) WITH ('connector' = 'blackhole');\n\
             INSERT INTO sink SELECT P.name, P.city, P.state, A.id FROM auction AS A INNER JOIN person AS P on A.seller = P.id \
             WHERE A.category = 10 and (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA');",
        ),
        Workload::Q15 => (
            "nexmark q15 (COUNT DISTINCT per day)",
            "CREATE TABLE sink (`day` VARCHAR, total_bids BIGINT, rank1_bids BIGINT, rank2_bids BIGINT, rank3_bids BIGINT, \
             total_bidders BIGINT, rank1_bidders BIGINT, rank2_bidders BIGINT, rank3_bidders BIGINT, \
             total_auctions BIGINT, rank1_auctions BIGINT, rank2_auctions BIGINT, rank3_auctions BIGINT) WITH ('connector' = 'blackhole');\n\
             INSERT INTO sink SELECT DATE_FORMAT(date_time, 'yyyy-MM-dd') as `day`, count(*) AS total_bids, \
             count(*) filter (where price < 10000) AS rank1_bids, \
             count(*) filter (where price >= 10000 and price < 1000000) AS rank2_bids, \
             count(*) filter (where price >= 1000000) AS rank3_bids, \
             count(distinct bidder) AS total_bidders, \
             count(distinct bidder) filter (where price < 10000) AS rank1_bidders, \
             count(distinct bidder) filter (where price >= 10000 and price < 1000000) AS rank2_bidders, \
             count(distinct bidder) filter (where price >= 1000000) AS rank3_bidders, \
             count(distinct auction) AS total_auctions, \
             count(distinct auction) filter (where price < 10000) AS rank1_auctions, \
             count(distinct auction) filter (where price >= 10000 and price < 1000000) AS rank2_auctions, \
             count(distinct auction) filter (where price >= 1000000) AS rank3_auctions \
             FROM bid GROUP BY DATE_FORMAT(date_time, 'yyyy-MM-dd');",
        ),
        Workload::Q18 => (
            "nexmark q18 (dedup)",
            "CREATE TABLE sink (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, date_time TIMESTAMP(3), extra VARCHAR) \
             WITH ('connector' = 'blackhole');\n\
             INSERT INTO sink SELECT auction, bidder, price, channel, url, date_time, extra \
             FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC) AS rank_number FROM bid) \
             WHERE rank_number <= 1;",
        ),
        Workload::Q19 => (
            "nexmark q19 (TopN)",
            "CREATE TABLE sink (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, date_time TIMESTAMP(3), extra VARCHAR, \
             rank_number BIGINT) WITH ('connector' = 'blackhole');\n\
             INSERT INTO sink SELECT * FROM \
             (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number FROM bid) \
             WHERE rank_number <= 10;",
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
    /// http-ingest: rows per request
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// http-ingest: concurrent client connections
    #[arg(long, default_value_t = 8)]
    connections: usize,
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
CREATE VIEW person AS SELECT person.id, person.name, person.emailAddress, person.creditCard, person.city, person.state,
  dateTime, person.extra FROM nexmark WHERE event_type = 0;
CREATE VIEW auction AS SELECT auction.id, auction.itemName, auction.description, auction.initialBid, auction.reserve,
  dateTime, auction.expires, auction.seller, auction.category, auction.extra FROM nexmark WHERE event_type = 1;
";

async fn run_script(
    script: &str,
    parallelism: usize,
    checkpoint_interval: Option<&str>,
) -> Result<(Duration, MetricsRegistry)> {
    let script = match checkpoint_interval {
        Some(i) => format!("SET 'execution.checkpointing.interval' = '{i}';\n{script}"),
        None => script.to_string(),
    };
    let graph = flowline_planner::plan_script(&script, Some(parallelism)).await?;
    let metrics = MetricsRegistry::new();
    // Not the json-parquet data directory (flowline-bench-PID): this one is removed after each run.
    let state = std::env::temp_dir().join(format!("flowline-bench-state-{}", std::process::id()));
    let checkpoint = flowline_runtime::CheckpointConfig::from_options(&graph.config, &state, true)?;
    let started = Instant::now();
    let job = flowline_runtime::JobState {
        dir: Some(state.clone()),
        checkpoint,
        ..Default::default()
    };
    let res = flowline_runtime::run_job_with_state(&graph, &metrics, &StopSignal::new(), job).await;
    let elapsed = started.elapsed();
    let _ = std::fs::remove_dir_all(&state);
    res?;
    if checkpoint_interval.is_some() {
        println!(
            "checkpoints: {} completed, last {:.1} MB, longest task pause {} us (last checkpoint), {} us (any)",
            metrics.total("flowline_checkpoints_completed_total"),
            metrics.total("flowline_checkpoint_bytes") as f64 / 1e6,
            metrics.total("flowline_checkpoint_pause_us"),
            metrics.total("flowline_checkpoint_pause_max_us")
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
    let cores = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(args.parallelism);
    match args.workload {
        Workload::Nexmark
        | Workload::Tumble
        | Workload::Hop
        | Workload::Session
        | Workload::Q3
        | Workload::Q15
        | Workload::Q18
        | Workload::Q19 => {
            let (name, query) = nexmark_query(args.workload);
            // Window workloads: 100k events per second of event time, so 10 s windows hold 1M
            // events and keep firing (the generator's default, 10M/s, puts 20M events in 2 s).
            let rate = if matches!(
                args.workload,
                Workload::Tumble | Workload::Hop | Workload::Session
            ) {
                "100000"
            } else {
                "10000000"
            };
            let script = format!(
                "{}\n{query}",
                NEXMARK_DDL
                    .replace("{events}", &args.events.to_string())
                    .replace("{rate}", rate)
            );
            let (elapsed, metrics) = run_script(
                &script,
                args.parallelism,
                args.checkpoint_interval.as_deref(),
            )
            .await?;
            // The generator's events (a join reads the Nexmark table twice, as two scans).
            let events = args.events as f64;
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
        Workload::HttpIngest => http_ingest(&args).await?,
        Workload::Formats => formats(args.events as usize)?,
        Workload::JsonParquet => {
            let tmp;
            let dir = match &args.dir {
                Some(d) => d.clone(),
                None => {
                    tmp =
                        std::env::temp_dir().join(format!("flowline-bench-{}", std::process::id()));
                    tmp
                }
            };
            let input = dir.join("bids.json");
            let output = dir.join("out");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
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
            let (elapsed, metrics) = run_script(
                &script,
                args.parallelism,
                args.checkpoint_interval.as_deref(),
            )
            .await?;
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

/// A client on the same machine posts batched NDJSON bids over `connections` keep-alive
/// connections; every request is acknowledged only once its rows are fsynced in the WAL.
/// Reports acknowledged events/s, request latency percentiles, and the end-to-end rate (until
/// the pipeline has read every acknowledged row).
async fn http_ingest(args: &BenchArgs) -> Result<()> {
    // Client and server share the machine: the rate per core is over all of its cores.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let interval = args.checkpoint_interval.as_deref().unwrap_or("1s");
    let script = format!(
        "SET 'execution.checkpointing.interval' = '{interval}';\n\
         CREATE TABLE bids (auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, date_time TIMESTAMP(3), extra STRING) WITH ('connector' = 'http');\n\
         CREATE TABLE sink (auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, date_time TIMESTAMP(3), extra STRING) WITH ('connector' = 'blackhole');\n\
         INSERT INTO sink SELECT * FROM bids;"
    );
    let graph = flowline_planner::plan_script(&script, Some(args.parallelism)).await?;
    let metrics = MetricsRegistry::new();
    let state = std::env::temp_dir().join(format!("flowline-bench-{}", std::process::id()));
    let checkpoint = flowline_runtime::CheckpointConfig::from_options(&graph.config, &state, true)?;
    let stop = StopSignal::new();
    let shared = flowline_runtime::JobShared::new();
    let job = {
        let (graph, metrics, stop) = (graph.clone(), metrics.clone(), stop.clone());
        let job = flowline_runtime::JobState {
            dir: Some(state.clone()),
            checkpoint,
            shared: shared.clone(),
        };
        tokio::spawn(async move {
            flowline_runtime::run_job_with_state(&graph, &metrics, &stop, job).await
        })
    };
    let addr = flowline_server::serve(
        "127.0.0.1:0",
        metrics.clone(),
        flowline_server::JobInfo {
            ingest_tables: vec!["bids".into()],
            shared,
            query: None,
        },
        &Default::default(),
    )
    .await?;

    // Distinct bodies so the WAL sees varied data; cycled over the requests.
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..16u64).map(|b| bid_body(b, args.batch)).collect());
    let body_bytes = bodies.iter().map(|b| b.len() as u64).sum::<u64>() / bodies.len() as u64;
    let requests = args.events.div_ceil(args.batch as u64);
    let next = Arc::new(AtomicU64::new(0));
    let throttled = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..args.connections {
        let (bodies, next, throttled) = (bodies.clone(), next.clone(), throttled.clone());
        clients.spawn(async move {
            let mut conn = HttpClient::connect(addr).await?;
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let body = &bodies[(i % bodies.len() as u64) as usize];
                loop {
                    let t = Instant::now();
                    let (status, text) = conn.post("/v1/ingest/bids", body).await?;
                    match status {
                        200 => {
                            latencies.push(t.elapsed());
                            break;
                        }
                        // Starting (503) or behind (429): back off as the server asks.
                        429 | 503 => {
                            throttled.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        _ => anyhow::bail!("ingest answered {status}: {text}"),
                    }
                }
            }
        });
    }
    let mut latencies = Vec::new();
    while let Some(r) = clients.join_next().await {
        latencies.extend(r??);
    }
    let acked = started.elapsed();
    let events = requests * args.batch as u64;
    while metrics.total("flowline_source_rows_total") < events
        && started.elapsed() < Duration::from_secs(600)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drained = started.elapsed();
    stop.stop();
    job.await??;
    let _ = std::fs::remove_dir_all(&state);
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let rate = events as f64 / acked.as_secs_f64();
    println!(
        "http ingest: {events} events in {} requests of {} rows ({:.0} KB) over {} connections, parallelism {}: \
         acknowledged in {acked:.2?} -> {rate:.0} events/s ({:.0} MB/s), {:.0} events/s per machine core; read by the pipeline in {drained:.2?} -> {:.0} events/s; \
         request latency p50 {:.1?} p99 {:.1?} max {:.1?}; {} requests throttled (429/503); {} checkpoints; peak RSS {:.0} MB",
        requests,
        args.batch,
        body_bytes as f64 / 1e3,
        args.connections,
        args.parallelism,
        (body_bytes * requests) as f64 / 1e6 / acked.as_secs_f64(),
        rate / cores as f64,
        events as f64 / drained.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        latencies.last().copied().unwrap_or_default(),
        throttled.load(Ordering::Relaxed),
        metrics.total("flowline_checkpoints_completed_total"),
        peak_rss_mb()
    );
    Ok(())
}

/// Decode and encode throughput of each format on the same bid rows, on this thread.
fn formats(rows: usize) -> Result<()> {
    use std::sync::Arc;

    use arrow::array::{Int8Array, RecordBatch};
    use flowline_common::changelog;
    use flowline_common::Options;
    use flowline_formats::csv::CsvOptions;
    use flowline_formats::json::{JsonLines, JsonOptions};
    use flowline_formats::{
        ChangelogFormat, LineFormat, RecordBuffer, RecordEncoder, RecordFormat,
    };

    let schema: arrow::datatypes::SchemaRef = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("auction", arrow::datatypes::DataType::Int64, true),
        arrow::datatypes::Field::new("bidder", arrow::datatypes::DataType::Int64, true),
        arrow::datatypes::Field::new("price", arrow::datatypes::DataType::Int64, true),
        arrow::datatypes::Field::new("channel", arrow::datatypes::DataType::Utf8, true),
        arrow::datatypes::Field::new("url", arrow::datatypes::DataType::Utf8, true),
        arrow::datatypes::Field::new(
            "date_time",
            arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None),
            true,
        ),
        arrow::datatypes::Field::new("extra", arrow::datatypes::DataType::Utf8, true),
    ]));
    let options = Options::default();
    let json = JsonOptions::from_options(&options)?;
    const CHUNK: usize = 4 << 20;
    /// Splits `bytes` into chunks of whole lines of about CHUNK bytes.
    fn chunks(bytes: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let end = if rest.len() <= CHUNK {
                rest.len()
            } else {
                CHUNK
                    + rest[CHUNK..]
                        .iter()
                        .position(|b| *b == b'\n')
                        .map_or(rest.len() - CHUNK, |p| p + 1)
            };
            out.push(&rest[..end]);
            rest = &rest[end..];
        }
        out
    }
    let report = |what: &str, bytes: usize, rows: usize, t: Duration, reference: Option<f64>| {
        let mbs = bytes as f64 / 1e6 / t.as_secs_f64();
        let ratio = reference.map_or(String::new(), |r| {
            format!(
                " ({:.2}x arrow-json's rows/s)",
                rows as f64 / t.as_secs_f64() / r
            )
        });
        println!(
            "{what:<28} {mbs:>8.1} MB/s {:>12.0} rows/s{ratio}",
            rows as f64 / t.as_secs_f64()
        );
        rows as f64 / t.as_secs_f64()
    };
    // The rows, decoded once from NDJSON.
    let ndjson = bid_body(7, rows);
    let mut reference = JsonLines::new(schema.clone(), &json)?;
    let t = Instant::now();
    let mut batches = Vec::new();
    for c in chunks(&ndjson) {
        reference.decode(c).map_err(anyhow::Error::msg)?;
        batches.extend(reference.flush().map_err(anyhow::Error::msg)?);
    }
    println!(
        "{rows} Nexmark bids; one core; decode from {} MB chunks of whole lines",
        CHUNK >> 20
    );
    let arrow_rate = report(
        "arrow-json decode (reference)",
        ndjson.len(),
        rows,
        t.elapsed(),
        None,
    );
    // Changelog rows: +I, -U, +U, -D in turn.
    let with_kinds: Vec<RecordBatch> = batches
        .iter()
        .map(|b| {
            let kinds = Int8Array::from_iter_values((0..b.num_rows()).map(|i| (i % 4) as i8));
            let mut cols = b.columns().to_vec();
            cols.push(Arc::new(kinds));
            RecordBatch::try_new(Arc::new(changelog::with_row_kind(&schema)), cols)
        })
        .collect::<std::result::Result<_, _>>()?;
    let mut formats: Vec<(&str, RecordFormat)> = vec![
        ("json", RecordFormat::Json(json.clone())),
        (
            "csv",
            RecordFormat::Csv(CsvOptions::from_options(&options)?),
        ),
    ];
    for name in flowline_formats::CHANGELOG_FORMATS {
        formats.push((
            name,
            RecordFormat::Changelog(ChangelogFormat::from_options(&options, name)?),
        ));
    }
    formats.push((
        "avro",
        RecordFormat::Avro(flowline_formats::avro::AvroOptions::from_options(
            &options, "avro",
        )?),
    ));
    let proto_dir = tempfile_dir()?;
    let proto = proto_dir.join("bid.proto");
    std::fs::write(
        &proto,
        "syntax = \"proto3\";\nmessage Bid { optional int64 auction = 1; optional int64 bidder = 2; \
         optional int64 price = 3; optional string channel = 4; optional string url = 5; \
         optional int64 date_time = 6; optional string extra = 7; }\n",
    )?;
    let proto_options = Options::new(
        "bench",
        [
            ("protobuf.message-class-name".to_string(), "Bid".to_string()),
            (
                "protobuf.proto-file".to_string(),
                proto.display().to_string(),
            ),
        ]
        .into_iter()
        .collect(),
    );
    formats.push((
        "protobuf",
        RecordFormat::Protobuf(flowline_formats::protobuf::ProtobufFormat::from_options(
            &proto_options,
        )?),
    ));
    // The descriptor is compiled: the file is no longer needed.
    let _ = std::fs::remove_dir_all(&proto_dir);
    for (name, format) in &formats {
        let input = if format.is_changelog() {
            &with_kinds
        } else {
            &batches
        };
        let mut encoder = RecordEncoder::new(format, &schema)?;
        let mut text = Vec::with_capacity(ndjson.len() * 2);
        let mut buf = RecordBuffer::default();
        let t = Instant::now();
        for b in input {
            buf.clear();
            encoder.encode(b, &mut buf)?;
            text.extend_from_slice(buf.bytes());
        }
        let encode_time = t.elapsed();
        let (decoded, decode_time, text) = match format.line_decoder(&schema)? {
            Some(mut decoder) => {
                let t = Instant::now();
                let mut decoded = 0;
                for c in chunks(&text) {
                    decoded += decoder.decode_chunk(c)?.map_or(0, |b| b.num_rows());
                }
                (decoded, t.elapsed(), text)
            }
            None => {
                // Binary records: buffers of records as a Kafka poll hands them over.
                let mut decoder = flowline_formats::RecordDecoder::new(format, schema.clone())?;
                let mut buffers = vec![RecordBuffer::default()];
                let mut all = RecordBuffer::default();
                for b in input {
                    encoder.encode(b, &mut all)?;
                }
                let mut bytes = 0;
                for r in all.ranges().flatten() {
                    if buffers.last().is_some_and(|b| b.len() == 4096) {
                        buffers.push(RecordBuffer::default());
                    }
                    let record = &all.bytes()[r.0..r.1];
                    bytes += record.len();
                    buffers.last_mut().expect("one").push(Some(record), false);
                }
                drop(all);
                let t = Instant::now();
                let mut decoded = 0;
                for b in &buffers {
                    decoded += decoder
                        .decode(b)
                        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?
                        .map_or(0, |b| b.num_rows());
                }
                (decoded, t.elapsed(), vec![0; bytes])
            }
        };
        anyhow::ensure!(decoded == rows, "{name}: decoded {decoded} rows of {rows}");
        report(
            &format!("{name} decode"),
            text.len(),
            rows,
            decode_time,
            Some(arrow_rate),
        );
        report(
            &format!("{name} encode"),
            text.len(),
            rows,
            encode_time,
            None,
        );
    }
    Ok(())
}

/// A fresh scratch directory for the bench's small input files.
fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("flowline-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `rows` NDJSON bids, deterministic for `seed`.
fn bid_body(seed: u64, rows: usize) -> Vec<u8> {
    use std::fmt::Write;
    let mut s = String::with_capacity(rows * 160);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in 0..rows as u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = seed * rows as u64 + i;
        let _ = writeln!(
            s,
            r#"{{"auction": {}, "bidder": {}, "price": {}, "channel": "channel-{}", "url": "https://www.nexmark.com/item.htm?query=1&channel_id={}", "date_time": "2026-01-01 00:{:02}:{:02}.{:03}", "extra": ""}}"#,
            1000 + x % 10_000,
            2000 + (x >> 16) % 100_000,
            (x >> 32) % 10_000_000,
            x % 4,
            x % 1000,
            (n / 60_000) % 60,
            (n / 1000) % 60,
            n % 1000
        );
    }
    s.into_bytes()
}

/// A minimal HTTP/1.1 keep-alive client: the bench measures the server, not a client library.
struct HttpClient {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
    host: String,
}

impl HttpClient {
    async fn connect(addr: std::net::SocketAddr) -> Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: tokio::io::BufReader::new(stream),
            host: addr.to_string(),
        })
    }

    async fn post(&mut self, path: &str, body: &[u8]) -> Result<(u16, String)> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let s = self.stream.get_mut();
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut length = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().context("bad Content-Length")?;
                }
            }
        }
        let mut buf = vec![0; length];
        self.stream.read_exact(&mut buf).await?;
        Ok((status, String::from_utf8_lossy(&buf).into_owned()))
    }
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
