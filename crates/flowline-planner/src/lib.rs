//! SQL → logical plan → streaming dataflow graph.
//!
//! ```text
//! script ─parse─▶ statements ─register─▶ DataFusion session (tables as schemas, views as plans)
//! INSERT/SELECT ─DataFusion plan + optimize─▶ LogicalPlan ─lower─▶ Pipeline { branches, sink }
//!                                                                 branch = source + StatelessChain
//! ```
//!
//! DataFusion does parsing, name resolution, type coercion and optimisation; lowering turns the
//! optimised plan into Flowline's own operators (today: stateless chains; anything else is
//! refused with a message that names the plan node).

mod catalog;
mod interval;
mod live;
mod lower;
mod materialized;
mod query;
mod session;
mod sink_types;
mod temporal;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::PhysicalExpr;
use flowline_common::Options;
use flowline_connectors::ConnectorFactory;
use flowline_operators::{OperatorFactory, StatelessChain};
use flowline_sql::{SqlError, TableDef};

pub use catalog::{df_error, new_session, Catalog};
pub use live::LiveTable;
pub use materialized::MaterializedTable;
pub use query::{batch_catalog, batch_query, plan_select};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Sql(#[from] SqlError),
    #[error("{0}")]
    Connector(#[from] flowline_connectors::ConnectorError),
    #[error("planning error: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Invalid(String),
    #[error("internal error (a bug in Flowline): {0}")]
    Internal(String),
}

pub type Result<T, E = PlanError> = std::result::Result<T, E>;

impl PlanError {
    /// Whose fault the error is: planning fails on the script (or a connector it names), unless
    /// the planner itself is wrong.
    pub fn fault(&self) -> flowline_common::fault::Fault {
        use flowline_common::fault::Fault;
        match self {
            PlanError::Connector(e) => e.fault(),
            PlanError::Internal(_) => Fault::Internal,
            PlanError::DataFusion(datafusion::error::DataFusionError::Internal(_)) => {
                Fault::Internal
            }
            _ => Fault::User,
        }
    }
}

/// A table's connector, resolved and with validated options.
#[derive(Clone)]
pub struct TableBinding {
    pub table: TableDef,
    pub factory: &'static ConnectorFactory,
    pub options: Options,
}

impl fmt::Debug for TableBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.table.name, self.factory.name)
    }
}

/// A source subtask group and the stateless chain fused after it.
#[derive(Clone, Debug)]
pub struct Branch {
    pub source: TableBinding,
    /// Physical columns read from the source (indices into its physical schema).
    pub projection: Option<Vec<usize>>,
    pub chain: StatelessChain,
    /// The table's `WATERMARK FOR`, when it has one.
    pub watermark: Option<WatermarkSpec>,
}

impl Branch {
    /// Whether the source reads a changelog: its rows end with the change kind.
    pub fn reads_changelog(&self) -> bool {
        (self.source.factory.changelog_source)(&self.source.table, &self.source.options)
    }
}

/// Watermark generation fused into a source.
#[derive(Clone, Debug)]
pub enum WatermarkSpec {
    /// `WATERMARK FOR`: `chain` computes the watermark expression (one TIMESTAMP column) from
    /// the same raw batch as [`Branch::chain`], before any filter; `text` is the clause.
    EventTime { chain: StatelessChain, text: String },
    /// A `PROCTIME()` column: the watermark is the wall clock.
    ProcessingTime,
}

/// A node of a pipeline's dataflow tree; its rows flow to its parent.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // a few per plan, built once
pub enum Node {
    Source(Branch),
    Operator(Box<OperatorNode>),
}

/// A stateful operator and its inputs (one; two for a join).
#[derive(Clone, Debug)]
pub struct OperatorNode {
    pub operator: Arc<dyn OperatorFactory>,
    pub inputs: Vec<OperatorInput>,
    /// Applied to the operator's output.
    pub chain: StatelessChain,
    /// Whether the operator keeps late rows (for `table.exec.late-data.sink`).
    pub keep_late: bool,
}

/// One input of an operator: the union of `nodes`, through a hash exchange on `key`.
#[derive(Clone, Debug)]
pub struct OperatorInput {
    pub nodes: Vec<Node>,
    /// Hash-partitioning key over the input rows; empty sends every row to subtask 0. The keys
    /// of a join's inputs have the same types, so equal keys meet in the same subtask.
    pub key: Vec<Arc<dyn PhysicalExpr>>,
}

impl OperatorNode {
    /// A one-input operator over the union of `nodes`, hash-partitioned on `key`.
    pub fn single(
        operator: Arc<dyn OperatorFactory>,
        nodes: Vec<Node>,
        key: Vec<Arc<dyn PhysicalExpr>>,
        keep_late: bool,
    ) -> Node {
        Node::Operator(Box::new(OperatorNode {
            operator,
            inputs: vec![OperatorInput { nodes, key }],
            chain: StatelessChain::default(),
            keep_late,
        }))
    }
}

impl OperatorNode {
    /// A two-input operator (a join): each input the union of its nodes, hash-partitioned on
    /// its key.
    pub fn pair(
        operator: Arc<dyn OperatorFactory>,
        [left, right]: [Vec<Node>; 2],
        [lkey, rkey]: [Vec<Arc<dyn PhysicalExpr>>; 2],
    ) -> Node {
        Node::Operator(Box::new(OperatorNode {
            operator,
            inputs: vec![
                OperatorInput {
                    nodes: left,
                    key: lkey,
                },
                OperatorInput {
                    nodes: right,
                    key: rkey,
                },
            ],
            chain: StatelessChain::default(),
            keep_late: false,
        }))
    }
}

impl Node {
    /// Whether this node's rows carry a change kind (an updating stream).
    pub fn updating(&self) -> bool {
        match self {
            Node::Source(b) => b.reads_changelog(),
            Node::Operator(op) => op.operator.updating(),
        }
    }

    /// What makes this node's rows updating (an operator, or a changelog source), as a clause
    /// for messages.
    pub fn updating_reason(&self) -> Option<String> {
        match self {
            Node::Source(b) if b.reads_changelog() => Some(format!(
                "source table '{}' reads a changelog (format '{}')",
                b.source.table.name,
                b.source
                    .options
                    .get("value.format")
                    .or(b.source.options.get("format"))
                    .unwrap_or_default()
            )),
            Node::Source(_) => None,
            Node::Operator(op) if op.operator.updating() => {
                Some(format!("{:?} changes rows it emitted earlier", op.operator))
            }
            Node::Operator(op) => op
                .inputs
                .iter()
                .flat_map(|i| &i.nodes)
                .find_map(Node::updating_reason),
        }
    }

    /// The stateless chain at the top of this node (where steps above it are fused).
    pub fn chain_mut(&mut self) -> &mut StatelessChain {
        match self {
            Node::Source(b) => &mut b.chain,
            Node::Operator(op) => &mut op.chain,
        }
    }

    fn explain(&self, out: &mut String, depth: usize) {
        let pad = "  ".repeat(depth);
        let chain = match self {
            Node::Source(b) => &b.chain,
            Node::Operator(op) => &op.chain,
        };
        for step in chain.steps.iter().rev() {
            out.push_str(&format!("{pad}<- {step:?}\n"));
        }
        match self {
            Node::Source(b) => {
                let cols: Vec<String> = match &b.projection {
                    Some(p) => {
                        let s = b.source.table.source_schema();
                        p.iter().map(|i| s.field(*i).name().clone()).collect()
                    }
                    None => vec!["*".into()],
                };
                let wm = match &b.watermark {
                    Some(WatermarkSpec::EventTime { text, .. }) => format!(" {text}"),
                    Some(WatermarkSpec::ProcessingTime) => " watermark=PROCTIME()".into(),
                    None => String::new(),
                };
                out.push_str(&format!(
                    "{pad}<- Source: {} [connector={}] columns=[{}]{wm}\n",
                    b.source.table.name,
                    b.source.factory.name,
                    cols.join(", ")
                ));
            }
            Node::Operator(op) => {
                out.push_str(&format!("{pad}<- {:?}\n", op.operator));
                for (n, input) in op.inputs.iter().enumerate() {
                    let key: Vec<String> = input.key.iter().map(|k| k.to_string()).collect();
                    let exchange = if key.is_empty() {
                        "single subtask".to_string()
                    } else {
                        format!("hash[{}]", key.join(", "))
                    };
                    let side = match (op.inputs.len(), n) {
                        (1, _) => "",
                        (_, 0) => " (left input)",
                        _ => " (right input)",
                    };
                    out.push_str(&format!("{pad}   <- Exchange{side}: {exchange}\n"));
                    for (i, node) in input.nodes.iter().enumerate() {
                        if input.nodes.len() > 1 {
                            out.push_str(&format!("{pad}      UNION ALL input {i}\n"));
                        }
                        node.explain(out, depth + 3);
                    }
                }
            }
        }
    }
}

/// Where a pipeline's rows go.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // one per pipeline
pub enum SinkTarget {
    Table(TableBinding),
    /// Collected in memory: the result of a SELECT.
    Collect,
}

/// One INSERT (or SELECT): nodes unioned into a sink.
#[derive(Clone, Debug)]
pub struct Pipeline {
    pub name: String,
    pub inputs: Vec<Node>,
    pub sink: SinkTarget,
    /// Schema of the rows that reach the sink.
    pub schema: SchemaRef,
    /// The optimised DataFusion plan, for `explain`.
    pub logical_plan: LogicalPlan,
    /// Where rows that arrive after their window fired go (`table.exec.late-data.sink`).
    pub late_sink: Option<TableBinding>,
    /// The materialized table this pipeline keeps (`CREATE MATERIALIZED TABLE ... AS`).
    pub materialized: Option<Arc<flowline_operators::materialize::Materialized>>,
}

/// Everything `flowline run` executes: all INSERTs of a script, as one job.
#[derive(Clone, Debug)]
pub struct JobGraph {
    pub pipelines: Vec<Pipeline>,
    pub parallelism: usize,
    /// `SET` options of the script.
    pub config: BTreeMap<String, String>,
}

/// Job options a script may `SET`.
pub const JOB_OPTIONS: &[&str] = &[
    "parallelism.default",
    "pipeline.name",
    "table.exec.source.idle-timeout",
    "table.exec.source.null-rowtime",
    "execution.runtime-mode",
    "table.exec.late-data.sink",
    "table.exec.state.ttl",
    "execution.checkpointing.interval",
    "execution.checkpointing.mode",
    "execution.checkpointing.timeout",
    "execution.checkpointing.num-retained",
    "execution.checkpointing.dir",
    "state.checkpoints.num-retained",
    "state.checkpoints.dir",
    "taskmanager.memory.managed.size",
];

impl JobGraph {
    /// The tables the job reads, each once, in the order the pipelines name them.
    pub fn source_tables(&self) -> Vec<&TableBinding> {
        fn walk<'a>(node: &'a Node, out: &mut Vec<&'a TableBinding>) {
            match node {
                Node::Source(b) => {
                    if !out.iter().any(|t| t.table.name == b.source.table.name) {
                        out.push(&b.source);
                    }
                }
                Node::Operator(op) => {
                    for input in &op.inputs {
                        input.nodes.iter().for_each(|n| walk(n, out));
                    }
                }
            }
        }
        let mut out = Vec::new();
        for p in &self.pipelines {
            p.inputs.iter().for_each(|n| walk(n, &mut out));
        }
        out
    }

    /// The materialized tables the job keeps.
    pub fn materialized(&self) -> Vec<Arc<flowline_operators::materialize::Materialized>> {
        self.pipelines
            .iter()
            .filter_map(|p| p.materialized.clone())
            .collect()
    }

    /// The dataflow as text: one block per pipeline.
    pub fn explain(&self, verbose: bool) -> String {
        let mut out = format!(
            "Job: {} pipeline(s), parallelism {}\n",
            self.pipelines.len(),
            self.parallelism
        );
        for p in &self.pipelines {
            let sink = match &p.sink {
                SinkTarget::Table(t)
                    if p.materialized.is_some() && t.factory.name == "blackhole" =>
                {
                    format!(
                        "Sink: none (materialized table {}, served to queries)",
                        t.table.name
                    )
                }
                SinkTarget::Table(t) if p.materialized.is_some() => format!(
                    "Sink: {} [connector={}] (materialized table, served to queries)",
                    t.table.name, t.factory.name
                ),
                SinkTarget::Table(t) => {
                    format!("Sink: {} [connector={}]", t.table.name, t.factory.name)
                }
                SinkTarget::Collect => "Sink: collect (query result)".to_string(),
            };
            out.push_str(&format!("\n{}\n", p.name));
            out.push_str(&format!("  {sink}\n"));
            for (i, node) in p.inputs.iter().enumerate() {
                if p.inputs.len() > 1 {
                    out.push_str(&format!("    UNION ALL input {i}\n"));
                }
                node.explain(&mut out, 2);
            }
            if let Some(late) = &p.late_sink {
                out.push_str(&format!(
                    "  Late rows: {} [connector={}]\n",
                    late.table.name, late.factory.name
                ));
            }
            if verbose {
                out.push_str("  DataFusion logical plan:\n");
                for line in p.logical_plan.display_indent_schema().to_string().lines() {
                    out.push_str(&format!("    {line}\n"));
                }
            }
        }
        out
    }
}

/// Plans a whole script into a job. `parallelism_override` wins over `SET 'parallelism.default'`.
pub async fn plan_script(text: &str, parallelism_override: Option<usize>) -> Result<JobGraph> {
    let mut catalog = Catalog::new();
    let mut inserts = Vec::new();
    for stmt in flowline_sql::parse_script(text)? {
        match stmt {
            flowline_sql::Statement::Insert(i) => inserts.push(i),
            flowline_sql::Statement::StatementSet(set) => inserts.extend(set),
            flowline_sql::Statement::Query(_) => {
                return Err(PlanError::Unsupported(
                    "a pipeline script cannot contain a bare SELECT; write INSERT INTO <sink> SELECT ..., or use `flowline query`".into(),
                ))
            }
            other => catalog.apply(other).await?,
        }
    }
    inserts.extend(
        catalog
            .materialized
            .values()
            .map(|(_, insert)| insert.clone()),
    );
    // Flink's continuous refresh mode: a materialized table's FRESHNESS is the job's
    // checkpoint interval, unless the script sets one.
    if let Some(f) = catalog
        .freshness
        .filter(|_| !catalog.materialized.is_empty())
    {
        catalog
            .config
            .entry("execution.checkpointing.interval".into())
            .or_insert_with(|| format!("{}ms", f.as_millis().max(1)));
    }
    if inserts.is_empty() {
        return Err(PlanError::Invalid(
            "the script has no INSERT INTO or CREATE MATERIALIZED TABLE statement: nothing to run"
                .into(),
        ));
    }
    let mut pipelines = Vec::new();
    for insert in &inserts {
        pipelines.push(catalog.plan_insert(insert).await?);
    }
    let parallelism = resolve_parallelism(&catalog.config, parallelism_override)?;
    Ok(JobGraph {
        pipelines,
        parallelism,
        config: catalog.config.clone(),
    })
}

pub(crate) fn resolve_parallelism(
    config: &BTreeMap<String, String>,
    over: Option<usize>,
) -> Result<usize> {
    let max = flowline_common::keygroups::DEFAULT_MAX_PARALLELISM;
    let p = resolve_parallelism_unchecked(config, over)?;
    if p > max {
        return Err(PlanError::Invalid(format!(
            "parallelism {p} is over the maximum parallelism {max} (the number of key groups keyed state is split into)"
        )));
    }
    Ok(p)
}

fn resolve_parallelism_unchecked(
    config: &BTreeMap<String, String>,
    over: Option<usize>,
) -> Result<usize> {
    if let Some(p) = over {
        return Ok(p.max(1));
    }
    match config.get("parallelism.default") {
        Some(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                PlanError::Invalid(format!(
                    "invalid value '{v}' for 'parallelism.default': expected a positive integer"
                ))
            }),
        None => Ok(std::thread::available_parallelism().map_or(1, |n| {
            n.get()
                .min(flowline_common::keygroups::DEFAULT_MAX_PARALLELISM)
        })),
    }
}
