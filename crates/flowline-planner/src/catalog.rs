//! Tables and views of a script, registered in a DataFusion session for planning.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::ViewTable;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use flowline_operators::materialize::{MaterializeSpec, Materialized};
use flowline_sql::ddl::{ColumnDef, MaterializedTableDef};
use flowline_sql::script::ViewDef;
use flowline_sql::sqlparser::ast::{Query, Statement as SqlStatement};
use flowline_sql::{ColumnKind, InsertDef, SessionSpec, SqlError, Statement, TableDef};

use crate::lower::lower;
use crate::session::SessionWindowNode;
use crate::sink_types::sink_cast_step;
use crate::{Node, Pipeline, PlanError, Result, SinkTarget, TableBinding, JOB_OPTIONS};

/// Prefix of the hidden table holding only the physical columns of a table with computed columns.
pub const RAW_PREFIX: &str = "__flowline_raw_";

/// Flink options accepted in `SET` that do not change anything yet (they belong to later work).
const ACCEPTED_NOOP_OPTIONS: &[&str] = &["table.local-time-zone"];

/// A DataFusion session configured for Flink SQL: case-sensitive identifiers, Flink functions.
pub fn new_session() -> SessionContext {
    with_flink_functions(base_session())
}

fn base_session() -> SessionContext {
    let mut config = SessionConfig::new()
        .with_target_partitions(1)
        .with_information_schema(false);
    config.options_mut().sql_parser.enable_ident_normalization = false;
    config.options_mut().sql_parser.collect_spans = true;
    // Flink types `0.908` as DECIMAL(3, 3), not DOUBLE.
    config.options_mut().sql_parser.parse_float_as_decimal = true;
    // Flink orders NULL as the smallest value: first in ASC, last in DESC.
    config.options_mut().sql_parser.default_null_ordering = "nulls_min".into();
    SessionContext::new_with_config(config)
}

/// Registers the Flink functions last, so they win over DataFusion's functions of the same
/// name (DataFusion's `date_format` is an alias of `to_char`, with strftime patterns).
fn with_flink_functions(ctx: SessionContext) -> SessionContext {
    for f in flowline_sql::functions::flink_functions() {
        ctx.register_udf(f.as_ref().clone());
    }
    ctx.register_udaf(flowline_sql::functions::aggregate::flink_avg());
    ctx.register_udaf(flowline_sql::functions::aggregate::flink_sum());
    for f in flowline_sql::functions::aggregate::flink_deviations() {
        ctx.register_udaf(f);
    }
    ctx.add_analyzer_rule(Arc::new(flowline_sql::functions::decimal::FlinkDecimals));
    ctx
}

pub struct Catalog {
    pub ctx: SessionContext,
    /// Batch mode (`flowline query`): tables are read to the end and held in memory.
    batch: bool,
    pub tables: BTreeMap<String, TableBinding>,
    pub(crate) views: Vec<String>,
    pub config: BTreeMap<String, String>,
    /// Per table with `WATERMARK FOR`: the optimised plan of `SELECT <watermark expr> FROM t`
    /// and the clause as written.
    watermarks: BTreeMap<String, (LogicalPlan, String)>,
    /// The materialized tables the script declares: each kept by the job, and the INSERT that
    /// maintains it.
    pub materialized: BTreeMap<String, (Arc<Materialized>, InsertDef)>,
    /// The least `FRESHNESS` a materialized table declares: the job's checkpoint interval
    /// unless the script sets one (Flink's continuous refresh mode).
    pub freshness: Option<std::time::Duration>,
}

impl Default for Catalog {
    fn default() -> Self {
        Self::new()
    }
}

/// Turns a DataFusion error into one that points at the script when DataFusion knows where.
pub fn df_error(e: DataFusionError) -> PlanError {
    if let Some(diag) = e.diagnostic() {
        if let Some(span) = diag.span {
            return PlanError::Sql(SqlError::new(
                diag.message.clone(),
                span.start.line,
                span.start.column,
            ));
        }
    }
    let root = e.find_root();
    PlanError::DataFusion(DataFusionError::Plan(strip_prefixes(&root.to_string())))
}

fn strip_prefixes(s: &str) -> String {
    let mut s = s;
    for p in [
        "Error during planning: ",
        "Schema error: ",
        "Optimizer rule",
        "SQL error: ",
    ] {
        if let Some(rest) = s.strip_prefix(p) {
            s = rest;
        }
    }
    s.to_string()
}

impl Catalog {
    pub fn new() -> Self {
        Self {
            ctx: new_session(),
            batch: false,
            tables: BTreeMap::new(),
            views: Vec::new(),
            config: BTreeMap::new(),
            watermarks: BTreeMap::new(),
            materialized: BTreeMap::new(),
            freshness: None,
        }
    }

    /// A catalog for batch queries: declared tables are read when a query scans them (they
    /// must be bounded then) and file paths can be queried directly as tables
    /// (`SELECT * FROM "data/x.parquet"`).
    pub fn new_batch() -> Self {
        Self {
            ctx: with_flink_functions(base_session().enable_url_table()),
            batch: true,
            tables: BTreeMap::new(),
            views: Vec::new(),
            config: BTreeMap::new(),
            watermarks: BTreeMap::new(),
            materialized: BTreeMap::new(),
            freshness: None,
        }
    }

    fn provider(
        &self,
        def: &TableDef,
        factory: &'static flowline_connectors::ConnectorFactory,
        options: &flowline_common::Options,
    ) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
        let physical = def.source_schema();
        // Streaming plans only need the schema; so do write-only tables in batch mode.
        if !self.batch || factory.source.is_none() {
            return Ok(Arc::new(EmptyTable::new(physical)));
        }
        // Read when a query scans it: a long-lived session sees what the table holds then,
        // and a table no query reads (a job's Kafka source in the declarations) costs nothing.
        Ok(Arc::new(crate::live::LiveTable::new(def, factory, options)))
    }

    fn check_new_name(&self, name: &str, line: u64, column: u64) -> Result<()> {
        if self.tables.contains_key(name) || self.views.iter().any(|v| v == name) {
            return Err(SqlError::new(
                format!("a table or view named '{name}' already exists"),
                line,
                column,
            )
            .into());
        }
        Ok(())
    }

    /// Applies a DDL or SET statement.
    pub async fn apply(&mut self, stmt: Statement) -> Result<()> {
        match stmt {
            Statement::CreateTable(def) => self.create_table(def).await,
            Statement::CreateView(view) => self.create_view(view).await,
            Statement::Set { key, value } => self.set(key, value),
            Statement::DefineSession(spec) => self.define_session(spec).await,
            Statement::CreateMaterializedTable(def) => self.create_materialized(def).await,
            Statement::DropMaterializedTable { name, if_exists } => {
                self.drop_materialized(&name, if_exists)
            }
            Statement::Insert(_) | Statement::StatementSet(_) | Statement::Query(_) => Err(
                PlanError::Invalid("internal error: Catalog::apply given a query statement".into()),
            ),
        }
    }

    fn set(&mut self, key: String, value: String) -> Result<()> {
        if !JOB_OPTIONS.contains(&key.as_str()) && !ACCEPTED_NOOP_OPTIONS.contains(&key.as_str()) {
            let mut valid: Vec<&str> = JOB_OPTIONS
                .iter()
                .chain(ACCEPTED_NOOP_OPTIONS)
                .copied()
                .collect();
            valid.sort_unstable();
            return Err(PlanError::Invalid(format!(
                "unknown option '{key}' in SET; valid options: {}",
                valid.join(", ")
            )));
        }
        if key == "execution.runtime-mode"
            && !value.eq_ignore_ascii_case("streaming")
            && !value.eq_ignore_ascii_case("batch")
        {
            return Err(PlanError::Invalid(format!(
                "invalid value '{value}' for 'execution.runtime-mode': expected streaming or batch"
            )));
        }
        if key == "table.exec.state.ttl" {
            flowline_common::options::parse_duration(&value).map_err(|e| {
                PlanError::Invalid(format!(
                    "invalid value '{value}' for 'table.exec.state.ttl': {e}"
                ))
            })?;
        }
        if ACCEPTED_NOOP_OPTIONS.contains(&key.as_str()) {
            eprintln!("warning: SET '{key}' has no effect in this version of Flowline");
        }
        self.config.insert(key, value);
        Ok(())
    }

    async fn create_table(&mut self, def: TableDef) -> Result<()> {
        self.check_new_name(&def.name, def.line, def.column)?;
        let (factory, options) = flowline_connectors::connector(&def)?;
        for (name, _, key) in def.metadata_columns() {
            if !factory.metadata_keys.contains(&key) {
                let valid = if factory.metadata_keys.is_empty() {
                    "none".to_string()
                } else {
                    factory.metadata_keys.join(", ")
                };
                return Err(SqlError::new(
                    format!("column '{name}' of table '{}': connector '{}' has no metadata '{key}'; its metadata keys: {valid}", def.name, factory.name),
                    def.line,
                    def.column,
                )
                .into());
            }
        }
        if def.has_derived_columns() {
            let raw = format!("{RAW_PREFIX}{}", def.name);
            self.ctx
                .register_table(raw.as_str(), self.provider(&def, factory, &options)?)?;
            let cols: Vec<String> = def
                .columns
                .iter()
                .map(|c| match &c.kind {
                    ColumnKind::Computed { expr } => format!("({expr}) AS {}", quote(&c.name)),
                    _ => quote(&c.name),
                })
                .collect();
            let sql = format!("SELECT {} FROM {}", cols.join(", "), quote(&raw));
            let query = match flowline_sql::parse_script(&sql)?.pop() {
                Some(Statement::Query(q)) => q,
                _ => {
                    return Err(PlanError::Invalid(format!(
                        "internal error: cannot plan computed columns of '{}'",
                        def.name
                    )))
                }
            };
            let plan = self.plan_query_ast(*query).await.map_err(|e| match e {
                PlanError::Sql(s) => PlanError::Sql(SqlError::new(
                    format!("computed column of table '{}': {}", def.name, s.message),
                    def.line,
                    def.column,
                )),
                other => other,
            })?;
            self.ctx
                .register_table(def.name.as_str(), Arc::new(ViewTable::new(plan, Some(sql))))?;
        } else {
            self.ctx
                .register_table(def.name.as_str(), self.provider(&def, factory, &options)?)?;
        }
        if let Some(wm) = &def.watermark {
            // The watermark expression and the time attribute: the source compares each row's time
            // with the watermark of the rows before it.
            let sql = format!(
                "SELECT ({}) AS __flowline_watermark, {} AS __flowline_rowtime FROM {}",
                wm.expr,
                quote(&wm.column),
                quote(&def.name)
            );
            let query = match flowline_sql::parse_script(&sql)?.pop() {
                Some(Statement::Query(q)) => q,
                _ => {
                    return Err(PlanError::Invalid(format!(
                        "internal error: cannot plan the watermark of '{}'",
                        def.name
                    )))
                }
            };
            let plan = self.plan_query(*query).await.map_err(|e| {
                PlanError::Sql(SqlError::new(
                    format!("WATERMARK FOR {} of table '{}': {e}", wm.column, def.name),
                    def.line,
                    def.column,
                ))
            })?;
            if !matches!(
                plan.schema().field(0).data_type(),
                DataType::Timestamp(_, _)
            ) {
                return Err(SqlError::new(
                    format!(
                        "WATERMARK FOR {} of table '{}': the watermark expression must be a TIMESTAMP(3) or TIMESTAMP_LTZ(3), got {}",
                        wm.column,
                        def.name,
                        plan.schema().field(0).data_type()
                    ),
                    def.line,
                    def.column,
                )
                .into());
            }
            self.watermarks.insert(
                def.name.clone(),
                (plan, format!("WATERMARK FOR {} AS {}", wm.column, wm.expr)),
            );
        }
        self.tables.insert(
            def.name.clone(),
            TableBinding {
                table: def,
                factory,
                options,
            },
        );
        Ok(())
    }

    /// `CREATE MATERIALIZED TABLE t AS SELECT`: a table of the query's columns that the job
    /// keeps (`INSERT INTO t SELECT` through a [`MaterializeSpec`] keyed by its primary key) and
    /// queries read; persisted as Parquet too when `WITH` names a `path`.
    async fn create_materialized(&mut self, def: MaterializedTableDef) -> Result<()> {
        let MaterializedTableDef {
            mut table,
            freshness,
            query,
        } = def;
        let name = table.name.clone();
        self.check_new_name(&name, table.line, table.column)?;
        let (line, column) = (table.line, table.column);
        let at = |m: String| PlanError::Sql(SqlError::new(m, line, column));
        let plan = match self.plan_query((*query).clone()).await {
            Ok(plan) => plan,
            // A query only the streaming planner knows (a batch catalog serving the table
            // of a running job gets the job's table attached instead).
            Err(_) if self.batch => return Ok(()),
            Err(e) => return Err(at(format!("materialized table '{name}': {e}"))),
        };
        let schema = plan.schema().as_arrow().clone();
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let position = |c: &str, what: &str| {
            columns.iter().position(|n| *n == c).ok_or_else(|| {
                at(format!(
                    "materialized table '{name}': {what} column '{c}' is not a column of its query (columns: {})",
                    columns.join(", ")
                ))
            })
        };
        let key = table
            .primary_key
            .iter()
            .map(|c| position(c, "PRIMARY KEY"))
            .collect::<Result<Vec<_>>>()?;
        for c in &table.partitioned_by {
            position(c, "PARTITIONED BY")?;
        }
        if let Some(c) = table.options.get("connector") {
            return Err(at(format!(
                "materialized table '{name}': 'connector' = '{c}': a materialized table is kept by the job and served by its query server; \
                 WITH ('path' = '...') also writes it as a Parquet lake table, and an INSERT INTO a table of another connector writes elsewhere"
            )));
        }
        let persisted = table.options.contains_key("path");
        if persisted {
            table
                .options
                .insert("connector".into(), "filesystem".into());
            table
                .options
                .entry("format".into())
                .or_insert("parquet".into());
        } else {
            if !table.partitioned_by.is_empty() {
                return Err(at(format!(
                    "materialized table '{name}': PARTITIONED BY needs WITH ('path' = '...'): partitions are folders of its Parquet copy"
                )));
            }
            if let Some(k) = table.options.keys().next() {
                return Err(at(format!(
                    "materialized table '{name}': unknown option '{k}'; without 'path' (a Parquet copy, with the filesystem connector's options) it takes none"
                )));
            }
            table.options.insert("connector".into(), "blackhole".into());
        }
        table.columns = schema
            .fields()
            .iter()
            .map(|f| ColumnDef {
                name: f.name().clone(),
                kind: ColumnKind::Physical {
                    data_type: f.data_type().clone(),
                    nullable: f.is_nullable(),
                },
            })
            .collect();
        if let Some(f) = freshness {
            self.freshness = Some(self.freshness.map_or(f, |least| least.min(f)));
        }
        let materialized = Arc::new(Materialized::new(
            &name,
            Arc::new(datafusion::arrow::datatypes::Schema::new(
                schema.fields().clone(),
            )),
            key,
            freshness.unwrap_or(std::time::Duration::from_secs(1)),
        ));
        self.create_table(table).await?;
        if self.batch {
            self.ctx.deregister_table(name.as_str())?;
            self.ctx.register_table(
                name.as_str(),
                Arc::new(crate::materialized::MaterializedTable {
                    table: materialized.clone(),
                }),
            )?;
        }
        let insert = InsertDef {
            table: name.clone(),
            columns: Vec::new(),
            query,
            line,
            column,
        };
        self.materialized.insert(name, (materialized, insert));
        Ok(())
    }

    /// `DROP MATERIALIZED TABLE`: the job no longer keeps it.
    fn drop_materialized(&mut self, name: &str, if_exists: bool) -> Result<()> {
        if self.materialized.remove(name).is_none() {
            if if_exists {
                return Ok(());
            }
            return Err(PlanError::Invalid(format!(
                "DROP MATERIALIZED TABLE {name}: no materialized table of that name (materialized tables: {})",
                self.materialized.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        self.tables.remove(name);
        self.ctx.deregister_table(name)?;
        Ok(())
    }

    /// Serves the materialized tables of a running job (their latest checkpointed contents)
    /// in place of what the script's declarations alone could give.
    pub fn attach_materialized(&mut self, tables: &[Arc<Materialized>]) -> Result<()> {
        for t in tables {
            self.ctx.deregister_table(t.name.as_str())?;
            self.ctx.register_table(
                t.name.as_str(),
                Arc::new(crate::materialized::MaterializedTable { table: t.clone() }),
            )?;
        }
        Ok(())
    }

    /// Registers the table a SESSION window TVF was rewritten to.
    async fn define_session(&mut self, spec: SessionSpec) -> Result<()> {
        let input_sql = format!("SELECT * FROM {}", spec.input);
        let input = match flowline_sql::parse_script(&input_sql)?.pop() {
            Some(Statement::Query(q)) => *q,
            _ => {
                return Err(PlanError::Invalid(format!(
                    "SESSION: cannot read the input `{}`",
                    spec.input
                )))
            }
        };
        let input = self.plan_query_ast(input).await?;
        let plan = if self.batch {
            let columns: Vec<String> = input
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            // Validate names and types the same way the streaming node does.
            SessionWindowNode::try_new(
                input,
                spec.time_col.clone(),
                spec.keys.clone(),
                spec.gap_ms,
            )
            .map_err(df_error)?;
            let sql = crate::session::batch_sql(&spec, &columns);
            let query = match flowline_sql::parse_script(&sql)?.pop() {
                Some(Statement::Query(q)) => *q,
                _ => {
                    return Err(PlanError::Invalid(
                        "internal error: cannot plan a SESSION window".into(),
                    ))
                }
            };
            self.plan_query_ast(query).await?
        } else {
            let node = SessionWindowNode::try_new(
                input,
                spec.time_col.clone(),
                spec.keys.clone(),
                spec.gap_ms,
            )
            .map_err(df_error)?;
            LogicalPlan::Extension(Extension {
                node: Arc::new(node),
            })
        };
        self.ctx
            .register_table(spec.name.as_str(), Arc::new(ViewTable::new(plan, None)))?;
        Ok(())
    }

    /// The watermark plan of a table, if it declares one.
    pub(crate) fn watermark_plan(&self, table: &str) -> Option<&(LogicalPlan, String)> {
        self.watermarks.get(table)
    }

    /// The table late rows go to (`SET 'table.exec.late-data.sink' = 'name'`).
    /// The views the script declared, in order.
    pub fn view_names(&self) -> &[String] {
        &self.views
    }

    pub fn late_sink(&self) -> Option<&String> {
        self.config.get("table.exec.late-data.sink")
    }

    fn late_sink_binding(&self) -> Result<Option<TableBinding>> {
        let Some(name) = self.late_sink() else {
            return Ok(None);
        };
        match self.tables.get(name) {
            Some(b) if b.factory.sink.is_some() => Ok(Some(b.clone())),
            Some(b) => Err(PlanError::Invalid(format!(
                "'table.exec.late-data.sink' = '{name}': connector '{}' can only be read, not written",
                b.factory.name
            ))),
            None => Err(PlanError::Invalid(format!(
                "'table.exec.late-data.sink' = '{name}': no such table; declare it with CREATE TABLE before the INSERT"
            ))),
        }
    }

    async fn create_view(&mut self, view: ViewDef) -> Result<()> {
        self.check_new_name(&view.name, 0, 0)?;
        let sql = view.query.to_string();
        let plan = self.plan_query_ast(*view.query).await?;
        self.ctx.register_table(
            view.name.as_str(),
            Arc::new(ViewTable::new(plan, Some(sql))),
        )?;
        self.views.push(view.name);
        Ok(())
    }

    /// Plans (without optimising) a query AST.
    pub async fn plan_query_ast(&self, mut query: Query) -> Result<LogicalPlan> {
        crate::temporal::rewrite(&mut query, self)?;
        let stmt = DfStatement::Statement(Box::new(SqlStatement::Query(Box::new(query))));
        self.ctx
            .state()
            .statement_to_plan(stmt)
            .await
            .map_err(df_error)
    }

    /// Plans and optimises a query.
    pub async fn plan_query(&self, query: Query) -> Result<LogicalPlan> {
        let plan = self.plan_query_ast(query).await?;
        self.ctx.state().optimize(&plan).map_err(df_error)
    }

    /// Plans `INSERT INTO sink SELECT ...` into a pipeline.
    pub async fn plan_insert(&self, insert: &InsertDef) -> Result<Pipeline> {
        let at = |msg: String| PlanError::Sql(SqlError::new(msg, insert.line, insert.column));
        let Some(sink) = self.tables.get(&insert.table) else {
            let known: Vec<&str> = self.tables.keys().map(String::as_str).collect();
            return Err(at(format!(
                "INSERT INTO '{}': no such table; declared tables: {}",
                insert.table,
                known.join(", ")
            )));
        };
        if sink.factory.sink.is_none() {
            return Err(at(format!(
                "INSERT INTO '{}': connector '{}' can only be read, not written",
                insert.table, sink.factory.name
            )));
        }
        if let Some((name, _, key)) = sink
            .table
            .persisted_metadata_columns()
            .find(|(_, _, key)| !sink.factory.writable_metadata_keys.contains(key))
        {
            let writable = match sink.factory.writable_metadata_keys {
                [] => "none".to_string(),
                keys => keys.join(", "),
            };
            return Err(at(format!(
                "INSERT INTO '{}': column '{name}' is the metadata '{key}', which connector '{}' \
                 cannot write (writable metadata: {writable}); declare it VIRTUAL to read it only",
                insert.table, sink.factory.name
            )));
        }
        let plan = match self.plan_query((*insert.query).clone()).await {
            // DataFusion names `CAST(x AS T)` as `x`, so `SELECT SUM(v), CAST(SUM(v) AS ..)` has
            // two columns of one name. An INSERT matches columns by position: name the SELECT's
            // expressions as Flink does (EXPR$0, ...) and plan again.
            Err(e) if e.to_string().contains("unique expression names") => {
                self.plan_query(name_expressions((*insert.query).clone()))
                    .await?
            }
            other => other?,
        };
        // A sink that commits partitions by the watermark needs one.
        let mut inputs =
            if sink.options.get("sink.partition-commit.trigger") == Some("partition-time") {
                crate::lower::lower_timed(&plan, self)?
            } else {
                lower(&plan, self)?
            };
        let (cast, schema) = sink_cast_step(&self.ctx, &plan, &sink.table, &insert.columns)
            .map_err(|e| match e {
                PlanError::Invalid(m) => at(m),
                other => other,
            })?;
        let updating = crate::lower::updating(&inputs);
        let materialized = self.materialized.get(&insert.table).map(|(m, _)| m.clone());
        if let (Some(m), Some(reason)) =
            (&materialized, inputs.iter().find_map(Node::updating_reason))
        {
            if sink.factory.name != "blackhole" {
                return Err(at(format!(
                    "materialized table '{}': WITH ('path' = ...) writes its rows to Parquet files, which only take appended rows, \
                     but the query's result is updating ({reason}). Drop 'path' to keep it in the job and serve it, or write an \
                     append-only result (aggregate within the windows of a window TVF)",
                    m.name
                )));
            }
        }
        if let Some(reason) = inputs
            .iter()
            .find_map(Node::updating_reason)
            .filter(|_| !(sink.factory.accepts_updates)(&sink.table, &sink.options))
            .filter(|_| materialized.is_none())
        {
            // Which connectors would take the updates into this table as declared.
            let accepting: Vec<String> = flowline_connectors::CONNECTORS
                .iter()
                .filter(|c| c.sink.is_some())
                .filter_map(|c| {
                    let empty = flowline_common::Options::new("", BTreeMap::new());
                    let changelog = flowline_common::Options::new(
                        "",
                        BTreeMap::from([("format".to_string(), "debezium-json".to_string())]),
                    );
                    if (c.accepts_updates)(&sink.table, &empty) {
                        Some(c.name.to_string())
                    } else if (c.accepts_updates)(&sink.table, &changelog) {
                        Some(format!(
                            "{} with 'format' = 'debezium-json' (or canal-json, maxwell-json)",
                            c.name
                        ))
                    } else {
                        (c.name == "jdbc").then(|| "jdbc with a PRIMARY KEY".to_string())
                    }
                })
                .collect();
            // A jdbc table takes updates once it has a key: say so.
            let (keyless, hint) = if sink.factory.name == "jdbc" {
                (
                    " into a table without a PRIMARY KEY",
                    " Declare the table's PRIMARY KEY (... NOT ENFORCED) to write upserts and deletes by key",
                )
            } else {
                ("", "")
            };
            return Err(at(format!(
                "INSERT INTO '{}': the query's result is updating ({reason}), but connector '{}' \
                 only appends rows{keyless}. Write it to a sink that accepts updates ({}), or aggregate or rank within the windows of a window TVF \
                 (TUMBLE, HOP, CUMULATE, SESSION; a TopN's PARTITION BY then starts with window_start, window_end), \
                 whose rows are final.{hint}",
                insert.table,
                sink.factory.name,
                accepting.join(", ")
            )));
        }
        let cast = if updating {
            crate::lower::carry_row_kind(cast, plan.schema().fields().len())
        } else {
            cast
        };
        for node in &mut inputs {
            node.chain_mut().steps.push(cast.clone());
        }
        if let Some(m) = &materialized {
            // Rows meet their key's subtask.
            let key = m
                .stored_key()
                .into_iter()
                .map(|c| {
                    Arc::new(datafusion::physical_expr::expressions::Column::new(
                        m.schema.field(c).name(),
                        c,
                    )) as Arc<dyn datafusion::physical_expr::PhysicalExpr>
                })
                .collect();
            let spec = MaterializeSpec {
                table: m.clone(),
                passthrough: sink.factory.name != "blackhole",
            };
            inputs = vec![crate::OperatorNode::single(
                Arc::new(spec),
                inputs,
                key,
                false,
            )];
        }
        Ok(Pipeline {
            name: match materialized {
                Some(_) => format!(
                    "CREATE MATERIALIZED TABLE {} (line {})",
                    insert.table, insert.line
                ),
                None => format!("INSERT INTO {} (line {})", insert.table, insert.line),
            },
            inputs,
            sink: SinkTarget::Table(sink.clone()),
            schema,
            logical_plan: plan,
            late_sink: self.late_sink_binding()?,
            materialized,
        })
    }

    /// Plans a SELECT whose rows are collected in memory.
    pub async fn plan_select(&self, query: Query) -> Result<Pipeline> {
        let plan = self.plan_query(query).await?;
        let inputs = lower(&plan, self)?;
        let schema = Arc::new(plan.schema().as_arrow().clone());
        let late_sink = self.late_sink_binding()?;
        Ok(Pipeline {
            name: "SELECT".into(),
            inputs,
            sink: SinkTarget::Collect,
            schema,
            logical_plan: plan,
            late_sink,
            materialized: None,
        })
    }

    /// The binding of a table scanned by a plan (its raw name when it has computed columns).
    pub fn binding_for_scan(&self, scan_name: &str) -> Option<&TableBinding> {
        let name = scan_name.strip_prefix(RAW_PREFIX).unwrap_or(scan_name);
        self.tables.get(name)
    }
}

/// Quotes an identifier for our dialect.
pub(crate) fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `query` with each unnamed, non-column expression of its top SELECT named `EXPR$<position>`.
fn name_expressions(mut query: Query) -> Query {
    use flowline_sql::sqlparser::ast::{Expr, Ident, SelectItem, SetExpr};
    if let SetExpr::Select(select) = query.body.as_mut() {
        for (i, item) in select.projection.iter_mut().enumerate() {
            if let SelectItem::UnnamedExpr(e) = item {
                if !matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
                    *item = SelectItem::ExprWithAlias {
                        expr: e.clone(),
                        alias: Ident::new(format!("EXPR${i}")),
                    };
                }
            }
        }
    }
    query
}
