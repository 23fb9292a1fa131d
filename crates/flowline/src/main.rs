//! `flowline`: the command line. It only wires the library crates together.

mod bench;
mod query;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use flowline_common::MetricsRegistry;
use flowline_runtime::StopSignal;

#[derive(Parser)]
#[command(name = "flowline", version, about = "A real-time data warehouse in one binary: Flink SQL over streams and files")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline script (Flink SQL): all its INSERT INTO statements run together as one job
    Run {
        /// The script: CREATE TABLE / CREATE VIEW / SET / INSERT INTO statements separated by ';'
        pipeline: PathBuf,
        /// Subtasks per operator (overrides SET 'parallelism.default'; default: number of cores)
        #[arg(long, short = 'p')]
        parallelism: Option<usize>,
        /// Serve /metrics and /healthz on this address while running, e.g. 127.0.0.1:9249
        #[arg(long)]
        http: Option<String>,
    },
    /// Run a batch SQL query over tables declared in a script or over files, and print the result
    Query {
        /// The SELECT statement; files can be named as tables: SELECT * FROM "out/part-0.parquet"
        sql: String,
        /// A script whose CREATE TABLE / CREATE VIEW statements declare the tables the query reads
        #[arg(long)]
        init: Option<PathBuf>,
        /// Output format
        #[arg(long, default_value = "table", value_parser = ["table", "csv", "json"])]
        format: String,
    },
    /// Print the dataflow graph the planner builds for a pipeline script
    Explain {
        pipeline: PathBuf,
        /// Also print DataFusion's optimised logical plan of each pipeline
        #[arg(long)]
        verbose: bool,
        #[arg(long, short = 'p')]
        parallelism: Option<usize>,
    },
    /// Built-in benchmarks (events per second per core)
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error chain on one line, skipping causes whose text the message already shows
/// (our error types embed their cause's message).
fn describe(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if !text.contains(&msg) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&msg);
        }
    }
    text
}

async fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Run { pipeline, parallelism, http } => run(&pipeline, parallelism, http.as_deref()).await,
        Command::Query { sql, init, format } => query::run(&sql, init.as_deref(), &format).await,
        Command::Explain { pipeline, verbose, parallelism } => {
            let text = read_script(&pipeline)?;
            let graph = flowline_planner::plan_script(&text, parallelism).await?;
            print!("{}", graph.explain(verbose));
            Ok(())
        }
        Command::Bench(args) => bench::run(args).await,
    }
}

fn read_script(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

async fn run(pipeline: &std::path::Path, parallelism: Option<usize>, http: Option<&str>) -> Result<()> {
    let started = Instant::now();
    let text = read_script(pipeline)?;
    let graph = flowline_planner::plan_script(&text, parallelism).await.with_context(|| format!("in {}", pipeline.display()))?;
    let metrics = MetricsRegistry::new();
    if let Some(addr) = http {
        let bound = flowline_server::serve(addr, metrics.clone()).await?;
        eprintln!("flowline: serving http://{bound}/metrics");
    }
    let stop = StopSignal::new();
    spawn_signal_handler(stop.clone());
    eprintln!("flowline: running {} pipeline(s) with parallelism {}", graph.pipelines.len(), graph.parallelism);
    flowline_runtime::run_job(&graph, &metrics, &stop).await?;
    eprintln!(
        "flowline: {} in {:.2?}: read {} rows, wrote {} rows",
        if stop.is_stopped() { "stopped" } else { "finished" },
        started.elapsed(),
        metrics.total("flowline_source_rows_total"),
        metrics.total("flowline_sink_rows_total"),
    );
    Ok(())
}

/// Ctrl-C or SIGTERM: stop sources, let sinks finish their files, exit 0.
fn spawn_signal_handler(stop: StopSignal) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("flowline: stopping (finishing open files)...");
        stop.stop();
    });
}
