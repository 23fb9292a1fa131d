//! `flowline`: the command line. It only wires the library crates together.

mod memory;
mod query;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use flowline_common::MetricsRegistry;
use flowline_runtime::StopSignal;

#[derive(Parser)]
#[command(
    name = "flowline",
    version,
    about = "A real-time data warehouse in one binary: Flink SQL over streams and files"
)]
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
        /// Serve /metrics, /healthz and HTTP ingest (POST /v1/ingest/{table}) on this address
        /// while running, e.g. 127.0.0.1:9249
        #[arg(long)]
        http: Option<String>,
        /// Where the job keeps checkpoints and write-ahead logs
        /// (default: .flowline/<pipeline name>/ next to the pipeline)
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Discard existing checkpoints and start from the beginning
        #[arg(long)]
        fresh: bool,
        /// Memory for operator state, e.g. 256MB (overrides SET
        /// 'taskmanager.memory.managed.size'; default: 40% of the container's or machine's
        /// memory); state beyond it moves to local disk
        #[arg(long)]
        memory: Option<String>,
        #[command(flatten)]
        listen: ListenerArgs,
        #[command(flatten)]
        limits: QueryLimitArgs,
    },
    /// Stop a running pipeline cleanly: it takes a final checkpoint and exits
    Stop {
        pipeline: PathBuf,
        /// The state directory the pipeline runs with (default as for `run`)
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Run a batch SQL query over tables declared in a script or over files, and print the result
    Query {
        /// The SELECT statement; files can be named as tables: SELECT * FROM "out/part-0.parquet"
        sql: String,
        /// A script whose CREATE TABLE / CREATE VIEW statements declare the tables the query reads
        #[arg(long, conflicts_with = "connect")]
        init: Option<PathBuf>,
        /// Ask a running server (`flowline run --http` or `flowline serve`) instead, e.g.
        /// http://127.0.0.1:9249; its token from the environment variable FLOWLINE_TOKEN
        #[arg(long)]
        connect: Option<String>,
        /// Output format
        #[arg(long, default_value = "table", value_parser = ["table", "csv", "json"])]
        format: String,
    },
    /// Serve SQL over lake tables and files without a streaming job: POST /v1/query on
    /// --http, Arrow Flight SQL on --flight
    Serve {
        /// The HTTP address to listen on, e.g. 127.0.0.1:9249
        #[arg(long)]
        http: Option<String>,
        /// A script whose CREATE TABLE / CREATE VIEW statements declare the tables served
        #[arg(long)]
        init: Option<PathBuf>,
        #[command(flatten)]
        listen: ListenerArgs,
        #[command(flatten)]
        limits: QueryLimitArgs,
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
    Bench(flowline_bench::BenchArgs),
}

/// How the listeners are secured. Tokens come from a file or the environment, never from the
/// command line (where `ps` shows them).
#[derive(clap::Args, Clone, Debug, Default)]
struct ListenerArgs {
    /// A file of bearer tokens, one per line, that every listener then requires (also:
    /// the environment variables FLOWLINE_AUTH_FILE, FLOWLINE_AUTH_TOKENS)
    #[arg(long)]
    auth_file: Option<PathBuf>,
    /// Serve over TLS with this PEM certificate chain (needs --tls-key)
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve a non-loopback address without authentication (refused otherwise)
    #[arg(long)]
    insecure: bool,
    /// Serve Arrow Flight SQL on this address too, e.g. 127.0.0.1:50051
    #[arg(long)]
    flight: Option<String>,
}

/// Limits of the query endpoint.
#[derive(clap::Args, Clone, Debug)]
struct QueryLimitArgs {
    /// Longest a query may run, e.g. 30s (default: no limit)
    #[arg(long)]
    query_timeout: Option<String>,
    /// Most rows a query may return (default: no limit)
    #[arg(long)]
    query_max_rows: Option<u64>,
    /// Most queries running at once; more are answered 429
    #[arg(long, default_value_t = 16)]
    max_concurrent_queries: usize,
    /// Memory each query may use, e.g. 512MB; sorts, aggregations and joins spill what they
    /// can past it, and a query that still needs more fails (default: a quarter of the
    /// container's or machine's memory)
    #[arg(long)]
    query_memory: Option<String>,
}

impl QueryLimitArgs {
    fn limits(&self) -> Result<flowline_server::query::QueryLimits> {
        let timeout = match &self.query_timeout {
            Some(t) => Some(flowline_common::options::parse_duration(t).map_err(|e| {
                anyhow::anyhow!("invalid --query-timeout '{t}': {e} (e.g. 30s, 500ms)")
            })?),
            None => None,
        };
        anyhow::ensure!(
            self.max_concurrent_queries > 0,
            "--max-concurrent-queries must be at least 1"
        );
        let memory = match &self.query_memory {
            Some(m) => flowline_common::options::parse_memory_size(m)
                .map_err(|e| anyhow::anyhow!("invalid --query-memory '{m}': {e} (e.g. 512MB)"))?,
            None => flowline_runtime::memory_limit() / 4,
        };
        Ok(flowline_server::query::QueryLimits {
            max_concurrent: self.max_concurrent_queries,
            memory: Some(memory),
            timeout,
            max_rows: self.query_max_rows,
        })
    }
}

impl ListenerArgs {
    /// Starts Flight SQL on `--flight`, if given.
    async fn serve_flight(
        &self,
        service: &flowline_server::query::QueryService,
        security: &flowline_server::security::Security,
        metrics: &MetricsRegistry,
    ) -> Result<()> {
        let Some(addr) = &self.flight else {
            return Ok(());
        };
        #[cfg(feature = "flight")]
        {
            let bound =
                flowline_server::flight::serve_flight(addr, service.clone(), security, metrics)
                    .await?;
            let scheme = if security.tls.is_some() {
                "grpc+tls"
            } else {
                "grpc"
            };
            eprintln!("flowline: serving Flight SQL at {scheme}://{bound}");
            Ok(())
        }
        #[cfg(not(feature = "flight"))]
        {
            let _ = (service, security, metrics);
            anyhow::bail!("--flight {addr}: this flowline was built without Flight SQL (the 'flight' feature)")
        }
    }

    fn security(&self) -> Result<flowline_server::security::Security> {
        use flowline_server::security::{tls_config, Auth, Security};
        let auth = Auth::from_env(self.auth_file.as_deref())?.map(std::sync::Arc::new);
        let (tls, tls_pem) = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let read = |p: &PathBuf| {
                    std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
                };
                (
                    Some(tls_config(cert, key)?),
                    Some((read(cert)?, read(key)?)),
                )
            }
            _ => (None, None),
        };
        Ok(Security {
            auth,
            tls,
            tls_pem,
            insecure: self.insecure,
        })
    }
}

fn main() -> ExitCode {
    memory::tune_allocator();
    flowline_server::security::install_crypto_provider();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match fault(&e) {
            Some(fault) => {
                eprintln!("error ({fault}): {}", describe(&e));
                ExitCode::from(fault.exit_code())
            }
            None => {
                eprintln!("error: {}", describe(&e));
                ExitCode::FAILURE
            }
        },
    }
}

/// Whose fault the error is, when one of our error types in its chain says so.
fn fault(e: &anyhow::Error) -> Option<flowline_common::fault::Fault> {
    e.chain().find_map(|cause| {
        if let Some(e) = cause.downcast_ref::<flowline_runtime::RuntimeError>() {
            Some(e.fault())
        } else if let Some(e) = cause.downcast_ref::<flowline_planner::PlanError>() {
            Some(e.fault())
        } else {
            cause
                .downcast_ref::<flowline_connectors::ConnectorError>()
                .map(|e| e.fault())
        }
    })
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
        Command::Run {
            pipeline,
            parallelism,
            http,
            state_dir,
            fresh,
            memory,
            listen,
            limits,
        } => {
            let state_dir = state_dir.unwrap_or_else(|| default_state_dir(&pipeline));
            let opts = RunOptions {
                parallelism,
                http,
                memory,
                fresh,
                listen,
                limits,
            };
            run(&pipeline, &opts, &state_dir).await
        }
        Command::Stop {
            pipeline,
            state_dir,
        } => stop(&state_dir.unwrap_or_else(|| default_state_dir(&pipeline))),
        Command::Query {
            sql,
            init,
            connect,
            format,
        } => match connect {
            Some(url) => serve::query_remote(&url, &sql, &format).await,
            None => query::run(&sql, init.as_deref(), &format).await,
        },
        Command::Serve {
            http,
            init,
            listen,
            limits,
        } => serve(http.as_deref(), init.as_deref(), &listen, &limits).await,
        Command::Explain {
            pipeline,
            verbose,
            parallelism,
        } => {
            let text = read_script(&pipeline)?;
            let graph = flowline_planner::plan_script(&text, parallelism).await?;
            print!("{}", graph.explain(verbose));
            Ok(())
        }
        Command::Bench(args) => flowline_bench::run(args).await,
    }
}

fn read_script(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// `.flowline/<pipeline file stem>/` next to the pipeline.
fn default_state_dir(pipeline: &std::path::Path) -> PathBuf {
    let stem = pipeline
        .file_stem()
        .map_or_else(|| "pipeline".into(), |s| s.to_string_lossy().into_owned());
    pipeline
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join(".flowline")
        .join(stem)
}

const PID_FILE: &str = "pid";

/// Sends SIGTERM to the pipeline running with `state_dir`.
fn stop(state_dir: &std::path::Path) -> Result<()> {
    let pid_file = state_dir.join(PID_FILE);
    let pid = std::fs::read_to_string(&pid_file)
        .with_context(|| format!("no running pipeline recorded in {}", pid_file.display()))?;
    let pid = pid.trim();
    let status = std::process::Command::new("kill")
        .args(["-TERM", pid])
        .status()
        .context("cannot run kill")?;
    anyhow::ensure!(
        status.success(),
        "process {pid} (from {}) is not running",
        pid_file.display()
    );
    eprintln!("flowline: asked process {pid} to stop (it takes a final checkpoint first)");
    Ok(())
}

/// `flowline run`'s options beside the script and the state directory.
struct RunOptions {
    parallelism: Option<usize>,
    http: Option<String>,
    memory: Option<String>,
    fresh: bool,
    listen: ListenerArgs,
    limits: QueryLimitArgs,
}

async fn run(
    pipeline: &std::path::Path,
    opts: &RunOptions,
    state_dir: &std::path::Path,
) -> Result<()> {
    let (parallelism, http, fresh) = (opts.parallelism, opts.http.as_deref(), opts.fresh);
    let started = Instant::now();
    let text = read_script(pipeline)?;
    let mut graph = flowline_planner::plan_script(&text, parallelism)
        .await
        .with_context(|| format!("in {}", pipeline.display()))?;
    if let Some(m) = &opts.memory {
        flowline_common::options::parse_memory_size(m).map_err(|e| {
            flowline_runtime::RuntimeError::Config(format!(
                "invalid --memory '{m}': {e} (e.g. 256MB, 2GB)"
            ))
        })?;
        graph
            .config
            .insert("taskmanager.memory.managed.size".into(), m.clone());
    }
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
    let checkpoint =
        flowline_runtime::CheckpointConfig::from_options(&graph.config, state_dir, fresh)?;
    if let Some(r) = checkpoint.as_ref().and_then(|c| c.restored.as_ref()) {
        if r.manifest.finished {
            // Running it again only publishes what the last checkpoint left uncommitted.
            eprintln!("flowline: the pipeline already finished (checkpoint {}); run with --fresh to run it again", r.manifest.id);
        }
        eprintln!("flowline: resuming from checkpoint {}", r.manifest.id);
    }
    let _ = std::fs::write(state_dir.join(PID_FILE), std::process::id().to_string());
    let metrics = MetricsRegistry::new();
    // What the job's tasks share with the server: its HTTP tables (and file committers).
    let shared = flowline_runtime::JobShared::new();
    if http.is_some() || opts.listen.flight.is_some() {
        let security = opts.listen.security()?;
        // Queries over the script's own tables (its lake tables, say) and files.
        let limits = opts.limits.limits()?;
        // The job runs whatever: if the script's tables cannot be declared for batch queries,
        // queries see files only.
        let engine =
            match serve::Engine::new(Some(pipeline), limits.memory, &graph.materialized()).await {
                Ok(engine) => engine,
                Err(e) => {
                    eprintln!(
                        "flowline: warning: queries see files only; the script's tables cannot be \
                     queried: {e:#}"
                    );
                    serve::Engine::new(None, limits.memory, &graph.materialized()).await?
                }
            };
        let service =
            flowline_server::query::QueryService::new(std::sync::Arc::new(engine), limits);
        if let Some(addr) = http {
            let mut info = server_job_info(&graph, shared.clone());
            info.query = Some(service.clone());
            let bound = flowline_server::serve(addr, metrics.clone(), info, &security).await?;
            let auth = match &security.auth {
                Some(a) => format!(" (tokens from {})", a.source),
                None => String::new(),
            };
            eprintln!(
                "flowline: serving {}://{bound}/metrics{auth}",
                security.scheme()
            );
        }
        opts.listen
            .serve_flight(&service, &security, &metrics)
            .await?;
    }
    let stop = StopSignal::new();
    spawn_signal_handler(stop.clone());
    eprintln!(
        "flowline: running {} pipeline(s) with parallelism {}",
        graph.pipelines.len(),
        graph.parallelism
    );
    let state = flowline_runtime::JobState {
        dir: Some(state_dir.to_path_buf()),
        checkpoint,
        shared,
    };
    // The code planning touched is not needed again: give it back once the job runs.
    std::thread::spawn(|| {
        std::thread::sleep(memory::AFTER);
        memory::page_out_code();
    });
    let res = flowline_runtime::run_job_with_state(&graph, &metrics, &stop, state).await;
    let _ = std::fs::remove_file(state_dir.join(PID_FILE));
    res?;
    eprintln!(
        "flowline: {} in {:.2?}: read {} rows, wrote {} rows",
        if stop.is_stopped() {
            "stopped"
        } else {
            "finished"
        },
        started.elapsed(),
        metrics.total("flowline_source_rows_total"),
        metrics.total("flowline_sink_rows_total"),
    );
    // A finished job's materialized tables hold its final result: serve them on.
    let serving = http.is_some() || opts.listen.flight.is_some();
    if serving && !graph.materialized().is_empty() && !stop.is_stopped() {
        eprintln!(
            "flowline: serving the finished job's materialized tables until Ctrl-C or SIGTERM"
        );
        while !stop.is_stopped() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// `flowline serve`: the query endpoints (HTTP, and Flight SQL with `--flight`) without a job,
/// until Ctrl-C or SIGTERM.
async fn serve(
    http: Option<&str>,
    init: Option<&std::path::Path>,
    listen: &ListenerArgs,
    limits: &QueryLimitArgs,
) -> Result<()> {
    anyhow::ensure!(
        http.is_some() || listen.flight.is_some(),
        "flowline serve needs --http ADDR, --flight ADDR or both"
    );
    let security = listen.security()?;
    let limits = limits.limits()?;
    let engine = serve::Engine::new(init, limits.memory, &[]).await?;
    let service = flowline_server::query::QueryService::new(std::sync::Arc::new(engine), limits);
    let metrics = MetricsRegistry::new();
    if let Some(http) = http {
        let info = flowline_server::JobInfo {
            query: Some(service.clone()),
            ..Default::default()
        };
        let bound = flowline_server::serve(http, metrics.clone(), info, &security).await?;
        eprintln!(
            "flowline: serving queries at {}://{bound}/v1/query",
            security.scheme()
        );
    }
    listen.serve_flight(&service, &security, &metrics).await?;
    // Until Ctrl-C or SIGTERM.
    let stop = StopSignal::new();
    spawn_signal_handler(stop.clone());
    while !stop.is_stopped() {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}

/// What the HTTP server must know of the job before it runs.
fn server_job_info(
    graph: &flowline_planner::JobGraph,
    shared: std::sync::Arc<flowline_runtime::JobShared>,
) -> flowline_server::JobInfo {
    flowline_server::JobInfo {
        shared,
        ingest_tables: graph
            .source_tables()
            .iter()
            .filter(|t| t.factory.name == "http")
            .map(|t| t.table.name.clone())
            .collect(),
        query: None,
    }
}

/// Ctrl-C or SIGTERM: stop sources, let sinks finish their files, exit 0.
fn spawn_signal_handler(stop: StopSignal) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
        eprintln!("flowline: stopping...");
        stop.stop();
    });
}
