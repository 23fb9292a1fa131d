//! Table scans: sources, their `WATERMARK FOR`, and upsert tables (a changelog normalised by
//! key).

use super::*;

pub(super) fn table_of(plan: &LogicalPlan) -> String {
    match plan {
        LogicalPlan::TableScan(s) => s.table_name.table().to_string(),
        _ => String::new(),
    }
}

/// A scan of an upsert source (upsert-kafka): the source reads every column with a change kind
/// (`+U`, `-D`), a ChangelogNormalize keyed by the PRIMARY KEY turns that into a changelog, and
/// the scan's projection and filters follow it. With `watermark`, the table's WATERMARK FOR is
/// generated at the source (the versioned side of a temporal join needs it).
pub(super) fn lower_upsert_scan(
    plan: &LogicalPlan,
    cat: &Catalog,
    watermark: bool,
) -> Result<Vec<Node>> {
    let scanned = lower_scan(plan, cat, false)?;
    let table = &scanned.source.table;
    let full = table.source_schema();
    let key = table
        .primary_key
        .iter()
        .map(|k| {
            full.index_of(k).map_err(|_| {
                PlanError::Invalid(format!(
                    "table '{}': PRIMARY KEY column '{k}' is not a column",
                    table.name
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let spec = ChangelogNormalizeSpec {
        key: key.clone(),
        schema: Arc::new(changelog::with_row_kind(&full)),
        state_ttl: state_ttl(cat),
    };
    let exchange = key
        .iter()
        .map(|i| Arc::new(Column::new(full.field(*i).name(), *i)) as Arc<dyn PhysicalExpr>)
        .collect();
    // The columns the query reads, and the change kind after them; then the scan's filters.
    let picked: Vec<usize> = scanned
        .projection
        .clone()
        .unwrap_or_else(|| (0..full.fields().len()).collect());
    let mut chain = StatelessChain::default();
    chain.steps.push(carry_row_kind(
        pick_step(&full, &picked, &picked),
        full.fields().len(),
    ));
    chain.steps.extend(scanned.chain.steps.iter().cloned());
    let mut source = Branch {
        source: scanned.source.clone(),
        projection: None,
        chain: StatelessChain::default(),
        watermark: None,
    };
    if watermark {
        if let Some((wm_plan, text)) = cat.watermark_plan(&table.name) {
            let wm = watermark_branch(wm_plan, cat)?;
            attach_watermark(&mut source, wm, text.clone());
        }
    }
    let mut node =
        OperatorNode::single(Arc::new(spec), vec![Node::Source(source)], exchange, false);
    *node.chain_mut() = chain;
    Ok(vec![node])
}

/// A scan becomes a source branch; with `watermark`, the table's WATERMARK FOR is fused in.
pub(super) fn lower_scan(plan: &LogicalPlan, cat: &Catalog, watermark: bool) -> Result<Branch> {
    let LogicalPlan::TableScan(scan) = plan else {
        return Err(PlanError::Internal(format!(
            "not a table scan: {}",
            plan.display()
        )));
    };
    let name = scan.table_name.table();
    let Some(binding) = cat.binding_for_scan(name) else {
        return Err(PlanError::Unsupported(format!(
            "'{name}' is not a table declared with CREATE TABLE"
        )));
    };
    if cat.materialized.contains_key(&binding.table.name) {
        return Err(PlanError::Unsupported(format!(
            "materialized table '{}' is served to queries (POST /v1/query, Flight SQL), not read \
             as a stream by the job that keeps it; read its query's input instead, or write the \
             rows it needs to a table with a connector",
            binding.table.name
        )));
    }
    if binding.factory.source.is_none() {
        return Err(PlanError::Invalid(format!(
            "table '{}' uses connector '{}', which can only be written, not read",
            binding.table.name, binding.factory.name
        )));
    }
    if scan.fetch.is_some() {
        return Err(unsupported(
            plan,
            "LIMIT",
            Some("keep the first rows with a TopN (ROW_NUMBER() OVER (ORDER BY ...) AS rn ... WHERE rn <= N)"),
        ));
    }
    let mut chain = StatelessChain::default();
    for f in &scan.filters {
        chain
            .steps
            .push(ChainStep::Filter(physical(cat, f, &scan.projected_schema)?));
    }
    let mut branch = Branch {
        source: binding.clone(),
        projection: scan.projection.clone(),
        chain,
        watermark: None,
    };
    if watermark {
        if let Some((wm_plan, text)) = cat.watermark_plan(&binding.table.name) {
            let wm = watermark_branch(wm_plan, cat)?;
            attach_watermark(&mut branch, wm, text.clone());
        } else if binding
            .table
            .columns
            .iter()
            .any(|c| matches!(&c.kind, ColumnKind::Computed { expr } if is_proctime(expr)))
        {
            branch.watermark = Some(WatermarkSpec::ProcessingTime);
        }
    }
    Ok(branch)
}

/// The branch computing `SELECT <watermark expr> FROM table`: a scan and one projection.
pub(super) fn watermark_branch(plan: &LogicalPlan, cat: &Catalog) -> Result<Branch> {
    let mut steps = Vec::new();
    let mut node = plan;
    loop {
        match node {
            LogicalPlan::Projection(p) => {
                let exprs = p
                    .expr
                    .iter()
                    .map(|e| physical(cat, e, p.input.schema()))
                    .collect::<Result<Vec<_>>>()?;
                steps.push(ChainStep::Project {
                    exprs,
                    schema: Arc::new(p.schema.as_arrow().clone()),
                });
                node = &p.input;
            }
            LogicalPlan::SubqueryAlias(a) => node = &a.input,
            LogicalPlan::TableScan(_) => break,
            other => {
                return Err(unsupported(
                    other,
                    "a watermark expression that reads more than its own table",
                    None,
                ))
            }
        }
    }
    let mut branch = lower_scan(node, cat, false)?;
    steps.reverse();
    branch.chain.steps.extend(steps);
    Ok(branch)
}

/// Reads the columns both chains need; each chain first picks its own columns.
pub(super) fn attach_watermark(branch: &mut Branch, wm: Branch, text: String) {
    let physical = branch.source.table.source_schema();
    let all: Vec<usize> = (0..physical.fields().len()).collect();
    let main = branch.projection.clone().unwrap_or_else(|| all.clone());
    let wanted = wm.projection.clone().unwrap_or_else(|| all.clone());
    let mut read = main.clone();
    read.extend(wanted.iter().filter(|c| !main.contains(c)));
    let select = |cols: &[usize]| -> ChainStep {
        let positions: Vec<usize> = cols
            .iter()
            .map(|c| read.iter().position(|r| r == c).expect("column read"))
            .collect();
        pick_step(&physical, cols, &positions)
    };
    if read.len() > main.len() {
        branch.chain.steps.insert(0, select(&main));
    }
    let mut chain = wm.chain;
    if read != wanted {
        chain.steps.insert(0, select(&wanted));
    }
    branch.projection = if branch.projection.is_none() && read == all {
        None
    } else {
        Some(read)
    };
    branch.watermark = Some(WatermarkSpec::EventTime { chain, text });
}

pub(super) fn is_proctime(expr: &flowline_sql::sqlparser::ast::Expr) -> bool {
    matches!(expr, flowline_sql::sqlparser::ast::Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("proctime"))
}
