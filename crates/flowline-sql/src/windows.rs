//! Window table-valued functions: `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), size))` and HOP,
//! CUMULATE and SESSION, with positional or named (`DATA =>`, `TIMECOL =>`, ...) arguments.
//!
//! sqlparser cannot parse `TABLE t` or `DESCRIPTOR(ts)` as function arguments, so the rewrite
//! works on the tokens of a statement, before parsing:
//!
//! ```text
//! TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '10' SECOND))
//!   ──▶ (SELECT *, __flowline_window_bound(window_start, 10000) AS window_end, ... AS window_time
//!        FROM (SELECT *, __flowline_tumble(ts, 10000, 0) AS window_start FROM t) AS __flowline_w)
//! TABLE(HOP(...))       same, with `unnest(__flowline_hop(ts, slide, size, offset)) AS window_start`
//! TABLE(CUMULATE(...))  window_start by TUMBLE of `size`, `unnest(__flowline_cumulate(..)) AS window_end`
//! TABLE(SESSION(...))   ──▶ __flowline_session_N, a table the catalog defines from a [`SessionSpec`]
//! ```
//!
//! TUMBLE, HOP and CUMULATE assign windows row by row, so plain SQL functions express them and
//! batch and streaming plans share them. A session depends on its neighbours: the catalog plans
//! it as window functions in batch and as a session operator in streaming.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr,
    Ident, Query, Select, SelectItem, SetExpr, TableFactor,
};
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::error::Result;
use crate::functions::window as f;
use crate::script::DIALECT;
use crate::types::err_at;

/// A SESSION window TVF, named so that the query can refer to it as a table.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSpec {
    /// The table name the rewritten query uses.
    pub name: String,
    /// The input relation as SQL: a table name or a parenthesised query.
    pub input: String,
    /// The time attribute column.
    pub time_col: String,
    /// `PARTITION BY` columns; empty means one session sequence for the whole stream.
    pub keys: Vec<String>,
    pub gap_ms: i64,
}

/// Prefix of the tables that stand for SESSION TVFs.
pub const SESSION_PREFIX: &str = "__flowline_session_";

/// Rewrites every window TVF in a statement's tokens; SESSION TVFs are appended to `sessions`
/// (which holds the script's SESSION tables so far: a new one is named by its number).
pub fn rewrite_tvfs(
    tokens: Vec<TokenWithSpan>,
    sessions: &mut Vec<SessionSpec>,
) -> Result<Vec<TokenWithSpan>> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        if let Some(kind) = tvf_at(&tokens, i) {
            let open = i + 3;
            let close = matching(&tokens, open)
                .ok_or_else(|| err_at(&tokens[open], format!("{kind}(...) is not closed")))?;
            if !matches!(tokens.get(close + 1).map(|t| &t.token), Some(Token::RParen)) {
                return Err(err_at(
                    &tokens[close],
                    format!("expected ')' to close TABLE({kind}(...))"),
                ));
            }
            let args = rewrite_tvfs(tokens[open + 1..close].to_vec(), sessions)?;
            let sql = expand(kind, &tokens[i], &args, sessions)?;
            out.extend(tokenize_at(&sql, &tokens[i])?);
            i = close + 2;
        } else {
            out.push(tokens[i].clone());
            i += 1;
        }
    }
    Ok(out)
}

/// `TABLE ( KIND (` at position i.
fn tvf_at(t: &[TokenWithSpan], i: usize) -> Option<&'static str> {
    if i + 3 >= t.len()
        || !is_word(&t[i], "TABLE")
        || t[i + 1].token != Token::LParen
        || t[i + 3].token != Token::LParen
    {
        return None;
    }
    ["TUMBLE", "HOP", "CUMULATE", "SESSION"]
        .into_iter()
        .find(|k| is_word(&t[i + 2], k))
}

fn is_word(t: &TokenWithSpan, w: &str) -> bool {
    matches!(&t.token, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w))
}

/// Index of the `)` matching the `(` at `open`.
fn matching(t: &[TokenWithSpan], open: usize) -> Option<usize> {
    let mut depth = 0;
    for (j, tok) in t.iter().enumerate().skip(open) {
        match tok.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
    }
    None
}

/// Splits at top-level commas.
fn split_args(t: &[TokenWithSpan]) -> Vec<&[TokenWithSpan]> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (j, tok) in t.iter().enumerate() {
        match tok.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => {
                out.push(&t[start..j]);
                start = j + 1;
            }
            _ => {}
        }
    }
    if start < t.len() {
        out.push(&t[start..]);
    }
    out
}

fn text(t: &[TokenWithSpan]) -> String {
    t.iter()
        .map(|x| x.token.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// An identifier's name (unquoted); anything else as text.
fn ident(t: &[TokenWithSpan]) -> String {
    match t {
        [TokenWithSpan {
            token: Token::Word(w),
            ..
        }] => w.value.clone(),
        _ => text(t),
    }
}

/// Quotes a name for the generated SQL.
pub fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn tokenize_at(sql: &str, at: &TokenWithSpan) -> Result<Vec<TokenWithSpan>> {
    let toks = Tokenizer::new(&DIALECT, sql)
        .tokenize()
        .map_err(|e| err_at(at, format!("internal error rewriting a window TVF: {e}")))?;
    Ok(toks
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .map(|token| TokenWithSpan {
            token,
            span: at.span,
        })
        .collect())
}

/// The parsed arguments of a window TVF.
#[derive(Default)]
struct Args {
    input: Option<String>,
    keys: Vec<String>,
    time_col: Option<String>,
    /// Interval arguments by parameter name (SIZE, SLIDE, STEP, OFFSET, GAP), in ms.
    intervals: Vec<(&'static str, i64)>,
}

fn params(kind: &str) -> &'static [&'static str] {
    match kind {
        "TUMBLE" => &["DATA", "TIMECOL", "SIZE", "OFFSET"],
        "HOP" => &["DATA", "TIMECOL", "SLIDE", "SIZE", "OFFSET"],
        "CUMULATE" => &["DATA", "TIMECOL", "STEP", "SIZE", "OFFSET"],
        _ => &["DATA", "TIMECOL", "GAP"],
    }
}

fn parse_args(kind: &'static str, at: &TokenWithSpan, tokens: &[TokenWithSpan]) -> Result<Args> {
    let names = params(kind);
    let mut args = Args::default();
    for (pos, arg) in split_args(tokens).into_iter().enumerate() {
        let first = arg.first().unwrap_or(at);
        let (name, value) = match (arg.first(), arg.get(1)) {
            (
                Some(TokenWithSpan {
                    token: Token::Word(w),
                    ..
                }),
                Some(TokenWithSpan {
                    token: Token::RArrow,
                    ..
                }),
            ) => {
                let Some(n) = names.iter().find(|n| n.eq_ignore_ascii_case(&w.value)) else {
                    return Err(err_at(
                        first,
                        format!(
                            "{kind} has no parameter '{}'; its parameters are {}",
                            w.value,
                            names.join(", ")
                        ),
                    ));
                };
                (*n, &arg[2..])
            }
            _ => match names.get(pos) {
                Some(n) => (*n, arg),
                None => {
                    return Err(err_at(
                        first,
                        format!(
                            "{kind} takes at most {} arguments: {}",
                            names.len(),
                            names.join(", ")
                        ),
                    ))
                }
            },
        };
        let vfirst = value.first().unwrap_or(first);
        match name {
            "DATA" => {
                let value = if is_word(vfirst, "TABLE") {
                    &value[1..]
                } else {
                    value
                };
                let cut = value
                    .iter()
                    .position(|t| is_word(t, "PARTITION"))
                    .unwrap_or(value.len());
                if cut == 0 {
                    return Err(err_at(
                        vfirst,
                        format!("{kind}: expected `TABLE <name>` as the first argument"),
                    ));
                }
                args.input = Some(text(&value[..cut]));
                if cut < value.len() {
                    if kind != "SESSION" {
                        return Err(err_at(
                            &value[cut],
                            format!("{kind} does not take PARTITION BY; only SESSION does"),
                        ));
                    }
                    let keys = &value[cut + 1..];
                    if keys.is_empty() || !is_word(&keys[0], "BY") {
                        return Err(err_at(
                            &value[cut],
                            "expected PARTITION BY <column> or PARTITION BY (<column>, ...)",
                        ));
                    }
                    let keys = &keys[1..];
                    let inner = match keys.first().map(|t| &t.token) {
                        Some(Token::LParen)
                            if matches!(keys.last().map(|t| &t.token), Some(Token::RParen)) =>
                        {
                            &keys[1..keys.len() - 1]
                        }
                        _ => keys,
                    };
                    args.keys = split_args(inner).into_iter().map(ident).collect();
                }
            }
            "TIMECOL" => {
                let ok = value.len() == 4
                    && is_word(&value[0], "DESCRIPTOR")
                    && value[1].token == Token::LParen
                    && matches!(value[2].token, Token::Word(_))
                    && value[3].token == Token::RParen;
                if !ok {
                    return Err(err_at(vfirst, format!("{kind}: expected DESCRIPTOR(<time column>) as the time argument, found `{}`", text(value))));
                }
                args.time_col = Some(ident(&value[2..3]));
            }
            _ => {
                let ms = interval_ms(value)
                    .map_err(|m| err_at(vfirst, format!("{kind} {name}: {m}")))?;
                args.intervals.push((name, ms));
            }
        }
    }
    Ok(args)
}

/// `INTERVAL '10' SECOND`, `INTERVAL '5' MINUTES`, `INTERVAL '1 hour'` → milliseconds.
pub(crate) fn interval_ms(t: &[TokenWithSpan]) -> std::result::Result<i64, String> {
    let shown = text(t);
    let bad = || format!("expected an interval such as INTERVAL '10' SECOND, found `{shown}`");
    if t.is_empty() || !is_word(&t[0], "INTERVAL") {
        return Err(bad());
    }
    let Some(Token::SingleQuotedString(value)) = t.get(1).map(|x| &x.token) else {
        return Err(bad());
    };
    let (number, unit) = match t.get(2).map(|x| &x.token) {
        Some(Token::Word(w)) if t.len() == 3 => (value.trim().to_string(), w.value.clone()),
        None => match value.trim().split_once(char::is_whitespace) {
            Some((n, u)) => (n.to_string(), u.trim().to_string()),
            None => return Err(bad()),
        },
        _ => return Err(bad()),
    };
    let n: i64 = number.parse().map_err(|_| bad())?;
    let unit_ms = match unit.to_ascii_uppercase().trim_end_matches('S') {
        "MILLISECOND" => 1,
        "SECOND" => 1_000,
        "MINUTE" => 60_000,
        "HOUR" => 3_600_000,
        "DAY" => 86_400_000,
        _ => {
            return Err(format!(
                "unsupported interval unit '{unit}'; use MILLISECOND, SECOND, MINUTE, HOUR or DAY"
            ))
        }
    };
    Ok(n * unit_ms)
}

fn expand(
    kind: &'static str,
    at: &TokenWithSpan,
    tokens: &[TokenWithSpan],
    sessions: &mut Vec<SessionSpec>,
) -> Result<String> {
    let args = parse_args(kind, at, tokens)?;
    let input = args
        .input
        .clone()
        .ok_or_else(|| err_at(at, format!("{kind} needs a DATA argument: TABLE <name>")))?;
    let ts = args.time_col.clone().ok_or_else(|| {
        err_at(
            at,
            format!("{kind} needs a TIMECOL argument: DESCRIPTOR(<time column>)"),
        )
    })?;
    window_sql(kind, input, ts, args.keys, &args.intervals, sessions).map_err(|m| err_at(at, m))
}

/// The relation a window TVF stands for: a parenthesised query, or a SESSION table's name.
fn window_sql(
    kind: &str,
    input: String,
    ts_name: String,
    keys: Vec<String>,
    intervals: &[(&'static str, i64)],
    sessions: &mut Vec<SessionSpec>,
) -> std::result::Result<String, String> {
    let need = |name: &str| -> std::result::Result<i64, String> {
        match intervals.iter().find(|(n, _)| *n == name) {
            Some((_, v)) if *v > 0 || name == "OFFSET" => Ok(*v),
            Some(_) => Err(format!("{kind} {name} must be a positive interval")),
            None if name == "OFFSET" => Ok(0),
            None => Err(format!(
                "{kind} needs a {name} argument: {kind}({})",
                params(kind).join(", ")
            )),
        }
    };
    let ts = quote(&ts_name);
    // Rows without a time belong to no window (Flink refuses NULL row times).
    // Named after the input table, so unaliased expressions read `sum(bids.price)`.
    let alias = match input.rsplit('.').next().map(|n| n.trim_matches('`')) {
        Some(n) if !n.is_empty() && n.chars().all(|c| c.is_alphanumeric() || c == '_') => quote(n),
        _ => "__flowline_w".to_string(),
    };
    let from = format!("FROM {input} WHERE {ts} IS NOT NULL) AS {alias})");
    Ok(match kind {
        "TUMBLE" => {
            let (size, offset) = (need("SIZE")?, need("OFFSET")?);
            format!(
                "(SELECT *, {b}(window_start, {size}) AS window_end, {t}(window_start, {size}, {ts}) AS window_time \
                 FROM (SELECT *, {tu}({ts}, {size}, {offset}) AS window_start {from}",
                b = f::BOUND,
                t = f::TIME,
                tu = f::TUMBLE
            )
        }
        "HOP" => {
            let (slide, size, offset) = (need("SLIDE")?, need("SIZE")?, need("OFFSET")?);
            if size % slide != 0 {
                return Err(format!(
                    "HOP size ({size} ms) must be an integral multiple of the slide ({slide} ms)"
                ));
            }
            format!(
                "(SELECT *, {b}(window_start, {size}) AS window_end, {t}(window_start, {size}, {ts}) AS window_time \
                 FROM (SELECT *, unnest({h}({ts}, {slide}, {size}, {offset})) AS window_start {from}",
                b = f::BOUND,
                t = f::TIME,
                h = f::HOP
            )
        }
        "CUMULATE" => {
            let (step, size, offset) = (need("STEP")?, need("SIZE")?, need("OFFSET")?);
            if size % step != 0 {
                return Err(format!("CUMULATE size ({size} ms) must be an integral multiple of the step ({step} ms)"));
            }
            format!(
                "(SELECT *, {t}(window_end, 0, {ts}) AS window_time \
                 FROM (SELECT *, {tu}({ts}, {size}, {offset}) AS window_start, unnest({c}({ts}, {step}, {size}, {offset})) AS window_end {from}",
                t = f::TIME,
                tu = f::TUMBLE,
                c = f::CUMULATE
            )
        }
        _ => {
            let gap = need("GAP")?;
            let name = format!("{SESSION_PREFIX}{}", sessions.len());
            sessions.push(SessionSpec {
                name: name.clone(),
                input,
                time_col: ts_name,
                keys,
                gap_ms: gap,
            });
            name
        }
    })
}

/// Legacy group windows: `GROUP BY TUMBLE(ts, INTERVAL ...)` (and HOP, SESSION) with
/// `TUMBLE_START/_END/_ROWTIME/_PROCTIME(...)` in the select list become the window TVF form:
/// the FROM relation is wrapped in the TVF and the group window becomes `window_start, window_end`.
/// For SESSION the other GROUP BY columns partition the sessions, as in Flink.
pub fn rewrite_group_windows(query: &mut Query, sessions: &mut Vec<SessionSpec>) -> Result<()> {
    if let Some(with) = query.with.as_mut() {
        for cte in with.cte_tables.iter_mut() {
            rewrite_group_windows(&mut cte.query, sessions)?;
        }
    }
    rewrite_set_expr(&mut query.body, sessions)
}

fn rewrite_set_expr(body: &mut SetExpr, sessions: &mut Vec<SessionSpec>) -> Result<()> {
    match body {
        SetExpr::Select(select) => {
            for twj in select.from.iter_mut() {
                for factor in std::iter::once(&mut twj.relation)
                    .chain(twj.joins.iter_mut().map(|j| &mut j.relation))
                {
                    if let TableFactor::Derived { subquery, .. } = factor {
                        rewrite_group_windows(subquery, sessions)?;
                    }
                }
            }
            rewrite_select(select, sessions)
        }
        SetExpr::Query(q) => rewrite_group_windows(q, sessions),
        SetExpr::SetOperation { left, right, .. } => {
            rewrite_set_expr(left, sessions)?;
            rewrite_set_expr(right, sessions)
        }
        _ => Ok(()),
    }
}

fn legacy_error(msg: impl Into<String>) -> crate::error::SqlError {
    crate::error::SqlError::new(msg.into(), 0, 0)
}

fn rewrite_select(select: &mut Select, sessions: &mut Vec<SessionSpec>) -> Result<()> {
    let GroupByExpr::Expressions(exprs, _) = &mut select.group_by else {
        return Ok(());
    };
    let kinds = ["tumble", "hop", "session"];
    let Some(pos) = exprs.iter().position(|e| matches!(e, Expr::Function(f) if kinds.contains(&f.name.to_string().to_ascii_lowercase().as_str())))
    else {
        return Ok(());
    };
    let Expr::Function(func) = exprs[pos].clone() else {
        return Ok(());
    };
    let kind = func.name.to_string().to_ascii_uppercase();
    let args: Vec<String> = match &func.args {
        FunctionArguments::List(list) => list.args.iter().map(|a| a.to_string()).collect(),
        _ => Vec::new(),
    };
    let names: &[&'static str] = match kind.as_str() {
        "TUMBLE" => &["SIZE", "OFFSET"],
        "HOP" => &["SLIDE", "SIZE"],
        _ => &["GAP"],
    };
    if args.len() < 2 || args.len() > names.len() + 1 {
        return Err(legacy_error(format!(
            "group window {kind}(<time column>, {}) has the wrong number of arguments",
            names.join(", ")
        )));
    }
    // The time column, unqualified (`B.dateTime` names column dateTime of the FROM relation B).
    let ts = match &func.args {
        FunctionArguments::List(list) => match list.args.first() {
            Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::CompoundIdentifier(parts)))) => {
                parts.last().map(|i| i.value.clone())
            }
            Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Identifier(i)))) => {
                Some(i.value.clone())
            }
            _ => None,
        },
        _ => None,
    }
    .unwrap_or_else(|| args[0].trim_matches('`').to_string());
    let mut intervals = Vec::new();
    for (name, text) in names.iter().zip(&args[1..]) {
        let toks: Vec<TokenWithSpan> = Tokenizer::new(&DIALECT, text)
            .tokenize_with_location()
            .map_err(|e| legacy_error(e.to_string()))?
            .into_iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .collect();
        intervals.push((
            *name,
            interval_ms(&toks)
                .map_err(|m| legacy_error(format!("group window {kind} {name}: {m}")))?,
        ));
    }
    if select.from.len() != 1 || !select.from[0].joins.is_empty() {
        return Err(legacy_error(format!(
            "group window {kind}(...) needs exactly one table in FROM"
        )));
    }
    let (input, alias) = match &select.from[0].relation {
        TableFactor::Table { name, alias, .. } => (name.to_string(), alias.clone()),
        TableFactor::Derived {
            subquery, alias, ..
        } => (format!("({subquery})"), alias.clone()),
        other => {
            return Err(legacy_error(format!(
                "group window {kind}(...) over `{other}` is not supported"
            )))
        }
    };
    let keys: Vec<String> = exprs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != pos)
        .map(|(_, e)| match e {
            Expr::Identifier(i) => Ok(i.value.clone()),
            Expr::CompoundIdentifier(parts) => {
                Ok(parts.last().map(|i| i.value.clone()).unwrap_or_default())
            }
            other => Err(legacy_error(format!(
                "SESSION group window: GROUP BY {other} must be a column"
            ))),
        })
        .collect::<Result<Vec<_>>>()
        .or_else(|e| {
            if kind == "SESSION" {
                Err(e)
            } else {
                Ok(Vec::new())
            }
        })?;
    let relation_sql = window_sql(
        &kind,
        input,
        ts,
        if kind == "SESSION" { keys } else { Vec::new() },
        &intervals,
        sessions,
    )
    .map_err(legacy_error)?;
    let parsed = Parser::new(&DIALECT)
        .try_with_sql(&format!("SELECT 1 FROM {relation_sql}"))
        .and_then(|mut p| p.parse_query())
        .map_err(|e| legacy_error(format!("internal error rewriting a group window: {e}")))?;
    let SetExpr::Select(inner) = *parsed.body else {
        return Err(legacy_error("internal error rewriting a group window"));
    };
    let mut relation = inner
        .from
        .into_iter()
        .next()
        .map(|t| t.relation)
        .ok_or_else(|| legacy_error("internal error rewriting a group window"))?;
    match &mut relation {
        TableFactor::Derived { alias: a, .. } | TableFactor::Table { alias: a, .. } => *a = alias,
        _ => {}
    }
    select.from[0].relation = relation;
    exprs.splice(
        pos..=pos,
        [
            Expr::Identifier(Ident::new("window_start")),
            Expr::Identifier(Ident::new("window_end")),
        ],
    );

    // TUMBLE_START(...) → window_start, and so on, wherever they appear.
    let prefix = kind.to_ascii_lowercase();
    let mut uses_time = false;
    let mut replace = |expr: &mut Expr| {
        if let Expr::Function(f) = expr {
            let name = f.name.to_string().to_ascii_lowercase();
            let column = match name.strip_prefix(&prefix).and_then(|r| r.strip_prefix('_')) {
                Some("start") => "window_start",
                Some("end") => "window_end",
                Some("rowtime") | Some("proctime") => {
                    uses_time = true;
                    "window_time"
                }
                _ => return ControlFlow::<()>::Continue(()),
            };
            *expr = Expr::Identifier(Ident::new(column));
        }
        ControlFlow::Continue(())
    };
    for item in select.projection.iter_mut() {
        if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
            let _ = visit_expressions_mut(e, &mut replace);
        }
    }
    if let Some(h) = select.having.as_mut() {
        let _ = visit_expressions_mut(h, &mut replace);
    }
    if uses_time {
        if let GroupByExpr::Expressions(exprs, _) = &mut select.group_by {
            exprs.push(Expr::Identifier(Ident::new("window_time")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(sql: &str) -> (String, Vec<SessionSpec>) {
        let toks: Vec<TokenWithSpan> = Tokenizer::new(&DIALECT, sql)
            .tokenize_with_location()
            .unwrap()
            .into_iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .collect();
        let mut s = Vec::new();
        let out = rewrite_tvfs(toks, &mut s).map_err(|e| e.to_string());
        (out.map(|t| text(&t)).unwrap_or_else(|e| e), s)
    }

    #[test]
    fn positional_and_named_arguments_give_the_same_query() {
        let (a, _) = rewrite(
            "SELECT * FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts), INTERVAL '10' SECONDS))",
        );
        let (b, _) = rewrite("SELECT * FROM TABLE(TUMBLE(DATA => TABLE bid, SIZE => INTERVAL '10' SECOND, TIMECOL => DESCRIPTOR(ts)))");
        assert_eq!(a, b);
        assert!(
            a.contains("__flowline_tumble ( `ts` , 10000 , 0 ) AS window_start"),
            "{a}"
        );
    }

    #[test]
    fn hop_checks_its_sizes() {
        let (ok, _) = rewrite("SELECT * FROM TABLE(HOP(TABLE bid, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND)) AS w");
        assert!(
            ok.contains("unnest ( __flowline_hop ( `ts` , 2000 , 10000 , 0 ) )"),
            "{ok}"
        );
        assert!(ok.ends_with("AS w"), "{ok}");
        let (bad, _) = rewrite("SELECT * FROM TABLE(HOP(TABLE bid, DESCRIPTOR(ts), INTERVAL '3' SECOND, INTERVAL '10' SECOND))");
        assert!(bad.contains("integral multiple"), "{bad}");
    }

    #[test]
    fn session_becomes_a_named_table() {
        let (q, s) = rewrite("SELECT * FROM TABLE(SESSION(TABLE bid PARTITION BY (bidder, auction), DESCRIPTOR(ts), INTERVAL '5' MINUTES))");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].keys, vec!["bidder", "auction"]);
        assert_eq!(s[0].gap_ms, 300_000);
        assert_eq!(q, format!("SELECT * FROM {}", s[0].name));
    }

    #[test]
    fn errors_name_the_problem() {
        let (e, _) = rewrite("SELECT * FROM TABLE(TUMBLE(TABLE bid, ts, INTERVAL '10' SECOND))");
        assert!(e.contains("DESCRIPTOR"), "{e}");
        let (e, _) =
            rewrite("SELECT * FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts), INTERVAL '10' WEEKS))");
        assert!(e.contains("unsupported interval unit"), "{e}");
        let (e, _) = rewrite("SELECT * FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts)))");
        assert!(e.contains("needs a SIZE"), "{e}");
    }
}
