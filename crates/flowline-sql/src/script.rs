//! Splits a pipeline script into statements and parses each one.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, CastKind, DataType as SqlDataType, Expr, Ident, ObjectNamePart, Query,
    SelectItem, SetExpr, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::ddl::{self, TableDef};
use crate::error::{Result, SqlError};
use crate::types::err_at;

/// The dialect used for all of Flowline's SQL (see [`crate::dialect`]).
pub static DIALECT: crate::dialect::FlinkDialect = crate::dialect::FlinkDialect;

/// One statement of a pipeline script.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per statement of a script
pub enum Statement {
    CreateTable(TableDef),
    CreateView(ViewDef),
    Insert(InsertDef),
    /// `EXECUTE STATEMENT SET BEGIN ... END` (a script's plain INSERTs form one set anyway).
    StatementSet(Vec<InsertDef>),
    Set {
        key: String,
        value: String,
    },
    Query(Box<Query>),
    /// A SESSION window TVF used by the statements after it (see [`crate::windows`]).
    DefineSession(crate::windows::SessionSpec),
}

#[derive(Debug, Clone)]
pub struct ViewDef {
    pub name: String,
    pub query: Box<Query>,
    pub temporary: bool,
}

#[derive(Debug, Clone)]
pub struct InsertDef {
    pub table: String,
    /// Target column list (`INSERT INTO t (a, b) SELECT ...`); empty means all, by position.
    pub columns: Vec<String>,
    pub query: Box<Query>,
    pub line: u64,
    pub column: u64,
}

/// Parses a script of `;`-separated statements.
pub fn parse_script(text: &str) -> Result<Vec<Statement>> {
    let tokens = Tokenizer::new(&DIALECT, text)
        .tokenize_with_location()
        .map_err(|e| SqlError::new(e.message, e.location.line, e.location.column))?;
    let units = split_statements(tokens);
    let mut out = Vec::new();
    let mut set: Option<Vec<InsertDef>> = None;
    for mut unit in units {
        let mut sessions = Vec::new();
        unit = crate::windows::rewrite_tvfs(unit, &mut sessions)?;
        refuse_unsupported_syntax(&unit)?;
        unit = map_constructors(unit);
        out.extend(sessions.into_iter().map(Statement::DefineSession));
        if starts_with(&unit, &["EXECUTE", "STATEMENT", "SET", "BEGIN"]) {
            open_set(&mut set, &unit[0])?;
            unit = drop_words(unit, 4);
            if unit.is_empty() {
                continue;
            }
        } else if starts_with(&unit, &["BEGIN", "STATEMENT", "SET"]) {
            open_set(&mut set, &unit[0])?;
            if unit.len() > 3 {
                return Err(err_at(&unit[3], "expected ';' after BEGIN STATEMENT SET"));
            }
            continue;
        }
        if let Some(inserts) = set.as_mut() {
            if starts_with(&unit, &["END"]) {
                if unit.len() > 1 {
                    return Err(err_at(&unit[1], "expected ';' after END"));
                }
                out.push(Statement::StatementSet(set.take().unwrap_or_default()));
                continue;
            }
            match legacy_windows(parse_statement(unit)?, &mut out)? {
                Statement::Insert(insert) => inserts.push(insert),
                _ => {
                    return Err(SqlError::new(
                        "a statement set may contain only INSERT INTO statements",
                        0,
                        0,
                    ))
                }
            }
            continue;
        }
        let stmt = legacy_windows(parse_statement(unit)?, &mut out)?;
        out.push(stmt);
    }
    if set.is_some() {
        return Err(SqlError::new(
            "statement set is not closed: expected END",
            0,
            0,
        ));
    }
    Ok(out)
}

/// Rewrites legacy group windows of a statement's query; their SESSION tables go to `out` first.
fn legacy_windows(mut stmt: Statement, out: &mut Vec<Statement>) -> Result<Statement> {
    let mut sessions = Vec::new();
    match &mut stmt {
        Statement::Insert(i) => crate::windows::rewrite_group_windows(&mut i.query, &mut sessions)?,
        Statement::CreateView(v) => {
            crate::windows::rewrite_group_windows(&mut v.query, &mut sessions)?
        }
        Statement::Query(q) => crate::windows::rewrite_group_windows(q, &mut sessions)?,
        _ => {}
    }
    out.extend(sessions.into_iter().map(Statement::DefineSession));
    Ok(stmt)
}

fn open_set(set: &mut Option<Vec<InsertDef>>, at: &TokenWithSpan) -> Result<()> {
    if set.is_some() {
        return Err(err_at(at, "statement sets cannot be nested"));
    }
    *set = Some(Vec::new());
    Ok(())
}

/// Splits tokens at top-level semicolons, dropping whitespace and empty statements.
fn split_statements(tokens: Vec<TokenWithSpan>) -> Vec<Vec<TokenWithSpan>> {
    let mut units = Vec::new();
    let mut current = Vec::new();
    let mut depth = 0i32;
    for tok in tokens {
        match &tok.token {
            Token::Whitespace(_) => continue,
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::SemiColon if depth <= 0 => {
                if !current.is_empty() {
                    units.push(std::mem::take(&mut current));
                }
                depth = 0;
                continue;
            }
            _ => {}
        }
        current.push(tok);
    }
    if !current.is_empty() {
        units.push(current);
    }
    units
}

/// Flink syntax the SQL parser does not know, refused with an error that names it (the
/// parser's own would say only which token it expected).
fn refuse_unsupported_syntax(unit: &[TokenWithSpan]) -> Result<()> {
    for (i, pair) in unit.windows(2).enumerate() {
        let refused = match () {
            _ if word_is(&pair[0], "BETWEEN") && word_is(&pair[1], "SYMMETRIC") => Some(
                "BETWEEN SYMMETRIC is not supported yet; write x BETWEEN LEAST(a, b) AND GREATEST(a, b)",
            ),
            _ if word_is(&pair[0], "IS") && word_is(&pair[1], "JSON") => {
                Some("IS JSON is not supported yet")
            }
            _ if word_is(&pair[0], "NOT")
                && word_is(&pair[1], "JSON")
                && i > 0
                && word_is(&unit[i - 1], "IS") =>
            {
                Some("IS NOT JSON is not supported yet")
            }
            _ if word_is(&pair[0], "OVERLAPS") => Some("OVERLAPS is not supported yet"),
            // `NULL ON EMPTY`, `DEFAULT 'd' ON ERROR` (not `JOIN t ON error = 1`).
            _ if word_is(&pair[0], "ON")
                && (word_is(&pair[1], "EMPTY") || word_is(&pair[1], "ERROR"))
                && i > 0
                && (["NULL", "ERROR", "TRUE", "FALSE", "UNKNOWN"]
                    .iter()
                    .any(|w| word_is(&unit[i - 1], w))
                    || (i > 1 && word_is(&unit[i - 2], "DEFAULT"))) =>
            {
                Some("the JSON functions' ON EMPTY / ON ERROR clauses are not supported yet (the default applies: NULL, or FALSE for JSON_EXISTS)")
            }
            _ => None,
        };
        if let Some(message) = refused {
            return Err(err_at(&pair[0], message));
        }
    }
    Ok(())
}

/// Flink's map constructor `MAP[k1, v1, k2, v2]` becomes DataFusion's
/// `map(make_array(k1, k2), make_array(v1, v2))`.
fn map_constructors(unit: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let Some(start) = unit
        .windows(2)
        .position(|w| word_is(&w[0], "MAP") && w[1].token == Token::LBracket)
    else {
        return unit;
    };
    // The elements: token runs split at the bracket's own commas.
    let mut depth = 0;
    let mut elements: Vec<Vec<TokenWithSpan>> = vec![Vec::new()];
    let mut end = None;
    for (i, tok) in unit.iter().enumerate().skip(start + 2) {
        match tok.token {
            Token::LBracket | Token::LParen => depth += 1,
            Token::RBracket if depth == 0 => {
                end = Some(i);
                break;
            }
            Token::RBracket | Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => {
                elements.push(Vec::new());
                continue;
            }
            _ => {}
        }
        elements
            .last_mut()
            .expect("one element at least")
            .push(tok.clone());
    }
    let Some(end) = end else { return unit };
    if !elements.len().is_multiple_of(2) || elements.iter().any(Vec::is_empty) {
        return unit; // the parser reports it
    }
    let at = |token: Token| TokenWithSpan::new(token, unit[start].span);
    let word = |w: &str| at(Token::make_word(w, None));
    let array = |items: Vec<&Vec<TokenWithSpan>>| {
        let mut out = vec![word("make_array"), at(Token::LParen)];
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                out.push(at(Token::Comma));
            }
            out.extend(item.iter().cloned());
        }
        out.push(at(Token::RParen));
        out
    };
    let mut out = unit[..start].to_vec();
    out.extend([word("map"), at(Token::LParen)]);
    out.extend(array(elements.iter().step_by(2).collect()));
    out.push(at(Token::Comma));
    out.extend(array(elements.iter().skip(1).step_by(2).collect()));
    out.push(at(Token::RParen));
    out.extend(unit[end + 1..].iter().cloned());
    // Further constructors, nested or later in the statement.
    map_constructors(out)
}

fn word_is(tok: &TokenWithSpan, word: &str) -> bool {
    matches!(&tok.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

fn starts_with(unit: &[TokenWithSpan], words: &[&str]) -> bool {
    unit.len() >= words.len() && unit.iter().zip(words).all(|(t, w)| word_is(t, w))
}

fn drop_words(mut unit: Vec<TokenWithSpan>, n: usize) -> Vec<TokenWithSpan> {
    unit.drain(..n);
    unit
}

/// Parses one statement (without its `;`).
fn parse_statement(unit: Vec<TokenWithSpan>) -> Result<Statement> {
    let end = unit
        .last()
        .map_or((0, 0), |t| (t.span.end.line, t.span.end.column));
    parse_statement_tokens(unit).map_err(|mut e| {
        // The parser's EOF token has no position: point just past the statement instead.
        if e.message.ends_with("found: EOF") {
            (e.line, e.column) = end;
        }
        e
    })
}

fn parse_statement_tokens(unit: Vec<TokenWithSpan>) -> Result<Statement> {
    let first = unit[0].clone();
    let mut parser = Parser::new(&DIALECT).with_tokens_with_locations(unit);
    let stmt = if word_is(&first, "CREATE") {
        parser.next_token();
        let temporary = parser.parse_keyword(Keyword::TEMPORARY);
        let kind = parser.next_token();
        if word_is(&kind, "TABLE") {
            Statement::CreateTable(ddl::parse_create_table(&mut parser, &first)?)
        } else if word_is(&kind, "VIEW") {
            parse_view(&mut parser, temporary)?
        } else {
            return Err(err_at(
                &kind,
                format!(
                    "unsupported statement 'CREATE {}'; supported: CREATE TABLE, CREATE VIEW",
                    kind.token
                ),
            ));
        }
    } else if word_is(&first, "INSERT") {
        Statement::Insert(parse_insert(&mut parser, &first)?)
    } else if word_is(&first, "SET") {
        parse_set(&mut parser)?
    } else if word_is(&first, "SELECT")
        || word_is(&first, "WITH")
        || word_is(&first, "VALUES")
        || first.token == Token::LParen
    {
        let mut query = parser.parse_query().map_err(|e| parser_error(e, &first))?;
        normalize_query(&mut query);
        Statement::Query(query)
    } else {
        return Err(err_at(
            &first,
            format!(
                "unsupported statement starting with '{}'; a script has CREATE TABLE, CREATE VIEW, INSERT INTO, \
                 EXECUTE STATEMENT SET, SET and SELECT statements",
                first.token
            ),
        ));
    };
    let rest = parser.peek_token();
    if rest.token != Token::EOF {
        return Err(err_at(
            &rest,
            format!(
                "unexpected '{}' after the end of the statement (missing ';'?)",
                rest.token
            ),
        ));
    }
    Ok(stmt)
}

fn parse_view(parser: &mut Parser, temporary: bool) -> Result<Statement> {
    let at = parser.peek_token();
    let _ = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = parser
        .parse_object_name(false)
        .map_err(|e| parser_error(e, &at))?;
    let as_tok = parser.peek_token();
    parser
        .expect_keyword(Keyword::AS)
        .map_err(|e| parser_error(e, &as_tok))?;
    let mut query = parser.parse_query().map_err(|e| parser_error(e, &as_tok))?;
    normalize_query(&mut query);
    Ok(Statement::CreateView(ViewDef {
        name: object_name(&name),
        query,
        temporary,
    }))
}

fn parse_insert(parser: &mut Parser, first: &TokenWithSpan) -> Result<InsertDef> {
    parser.next_token();
    if parser.parse_keyword(Keyword::OVERWRITE) {
        return Err(err_at(
            first,
            "INSERT OVERWRITE is not supported for streaming jobs; use INSERT INTO",
        ));
    }
    let at = parser.peek_token();
    parser
        .expect_keyword(Keyword::INTO)
        .map_err(|e| parser_error(e, &at))?;
    let name_tok = parser.peek_token();
    let name = parser
        .parse_object_name(false)
        .map_err(|e| parser_error(e, &name_tok))?;
    let mut columns = Vec::new();
    if parser.peek_token().token == Token::LParen {
        // `INSERT INTO t (a, b) SELECT` vs `INSERT INTO t (SELECT ...)`.
        let after = parser.peek_nth_token(1);
        if !word_is(&after, "SELECT") && !word_is(&after, "WITH") {
            parser.next_token();
            let idents = parser
                .parse_comma_separated(|p| p.parse_identifier())
                .map_err(|e| parser_error(e, &name_tok))?;
            parser
                .expect_token(&Token::RParen)
                .map_err(|e| parser_error(e, &name_tok))?;
            columns = idents.into_iter().map(|i| i.value).collect();
        }
    }
    let q_tok = parser.peek_token();
    let mut query = parser.parse_query().map_err(|e| parser_error(e, &q_tok))?;
    normalize_query(&mut query);
    Ok(InsertDef {
        table: object_name(&name),
        columns,
        query,
        line: first.span.start.line,
        column: first.span.start.column,
    })
}

fn parse_set(parser: &mut Parser) -> Result<Statement> {
    parser.next_token();
    let key_tok = parser.next_token();
    let key = match &key_tok.token {
        Token::SingleQuotedString(s) => s.clone(),
        Token::Word(_) => {
            // Unquoted `SET a.b.c = v`, as older Flink SQL clients accept.
            let mut key = key_tok.token.to_string();
            while parser.consume_token(&Token::Period) {
                key.push('.');
                key.push_str(&parser.next_token().token.to_string());
            }
            key
        }
        _ => return Err(err_at(&key_tok, "expected SET 'key' = 'value'")),
    };
    let eq = parser.next_token();
    if eq.token != Token::Eq {
        return Err(err_at(&eq, "expected '=' in SET 'key' = 'value'"));
    }
    let value_tok = parser.next_token();
    let value = match &value_tok.token {
        Token::SingleQuotedString(s) => s.clone(),
        Token::Number(n, _) => n.clone(),
        Token::Word(w) => w.value.clone(),
        _ => {
            return Err(err_at(
                &value_tok,
                "expected a quoted value in SET 'key' = 'value'",
            ))
        }
    };
    Ok(Statement::Set { key, value })
}

/// A table or view name as written (parts joined with `.`).
pub fn object_name(name: &datafusion::sql::sqlparser::ast::ObjectName) -> String {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Flink identifiers are case-sensitive but function names are not: lower-case function names
/// so DataFusion (run without identifier normalisation) finds them.
pub fn normalize_query(query: &mut Query) {
    let _ = visit_expressions_mut(query, |expr| {
        if let Expr::Function(f) = expr {
            for part in f.name.0.iter_mut() {
                if let ObjectNamePart::Identifier(ident) = part {
                    if ident.quote_style.is_none() {
                        ident.value = ident.value.to_ascii_lowercase();
                    }
                }
            }
            // Flink's ROW_NUMBER() is a BIGINT (DataFusion's is unsigned).
            if f.over.is_some() && f.name.to_string() == "row_number" {
                *expr = cast_to(expr.clone(), SqlDataType::BigInt(None));
            }
        }
        // Flink's binary types, which DataFusion's SQL planner knows as BYTEA.
        if let Expr::Cast { data_type, .. } = expr {
            if matches!(
                data_type,
                SqlDataType::Bytes(_) | SqlDataType::Varbinary(_) | SqlDataType::Binary(_)
            ) {
                *data_type = SqlDataType::Bytea;
            }
        }
        // Flink's CAST(x AS TIMESTAMP_LTZ(p)), which DataFusion's SQL planner does not know:
        // arrow_cast to the type the DDL gives TIMESTAMP_LTZ(p).
        if let Expr::Cast {
            data_type: SqlDataType::Custom(name, args),
            expr: inner,
            ..
        } = expr
        {
            let precision = match args.as_slice() {
                [] => Some(6),
                [p] => p.parse::<u64>().ok(),
                _ => None,
            };
            if let (true, Some(p)) = (
                name.to_string().eq_ignore_ascii_case("timestamp_ltz"),
                precision,
            ) {
                let arrow_type = crate::types::timestamp_type(p, true).to_string();
                let call = format!("arrow_cast(x, '{}')", arrow_type.replace('\'', "''"));
                if let Ok(Expr::Function(mut f)) = datafusion::sql::sqlparser::parser::Parser::new(
                    &datafusion::sql::sqlparser::dialect::GenericDialect {},
                )
                .try_with_sql(&call)
                .and_then(|mut p| p.parse_expr())
                {
                    if let datafusion::sql::sqlparser::ast::FunctionArguments::List(list) =
                        &mut f.args
                    {
                        list.args[0] = datafusion::sql::sqlparser::ast::FunctionArg::Unnamed(
                            datafusion::sql::sqlparser::ast::FunctionArgExpr::Expr(
                                (**inner).clone(),
                            ),
                        );
                    }
                    *expr = Expr::Function(f);
                }
            }
        }
        flink_semantics(expr);
        ControlFlow::<()>::Continue(())
    });
    let _ = query.visit(&mut PositionalNumbers);
    let _ = query.visit(&mut ValuesTypes);
    let _ = query.visit(&mut FieldNames);
}

/// A VALUES column mixing DECIMAL literals with DOUBLE values is a DOUBLE in Flink
/// (DataFusion's: a DECIMAL(38, 15)): `VALUES (1.5), (CAST(NULL AS DOUBLE))`.
struct ValuesTypes;

impl VisitorMut for ValuesTypes {
    type Break = ();

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        use datafusion::sql::sqlparser::ast::Value;
        let SetExpr::Values(values) = query.body.as_mut() else {
            return ControlFlow::Continue(());
        };
        let is_double = |e: &Expr| {
            matches!(
                e,
                Expr::Cast {
                    data_type: SqlDataType::Double(_)
                        | SqlDataType::DoublePrecision
                        | SqlDataType::Float(_)
                        | SqlDataType::Real,
                    ..
                }
            )
        };
        let columns = values.rows.first().map_or(0, |r| r.len());
        for col in 0..columns {
            if !values
                .rows
                .iter()
                .any(|r| r.get(col).is_some_and(is_double))
            {
                continue;
            }
            for row in &mut values.rows {
                let Some(e) = row.get_mut(col) else { continue };
                if matches!(e, Expr::Value(v) if matches!(&v.value, Value::Number(n, _) if n.contains('.')))
                {
                    *e = cast_to(
                        e.clone(),
                        SqlDataType::Double(datafusion::sql::sqlparser::ast::ExactNumberInfo::None),
                    );
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// Flink types an integer literal that fits 32 bits as an INT (DataFusion's: BIGINT), so
/// `2147483647 + 1` wraps and `TYPEOF(1)` is INT. The literal is cast with `::`, a syntax Flink
/// SQL does not have, so [`PositionalNumbers`] can tell these casts from a user's.
fn int_literal(expr: &mut Expr) {
    use datafusion::sql::sqlparser::ast::Value;
    // A script's query is normalised once per use; the second pass finds `1::INT` already.
    if let Expr::Cast {
        kind: CastKind::DoubleColon,
        expr: inner,
        data_type: SqlDataType::Int(None),
        ..
    } = expr
    {
        if let Expr::Cast {
            kind: CastKind::DoubleColon,
            ..
        } = **inner
        {
            *expr = (**inner).clone();
        }
        return;
    }
    if let Expr::Value(v) = expr {
        if matches!(&v.value, Value::Number(n, false) if n.parse::<i32>().is_ok()) {
            *expr = Expr::Cast {
                kind: CastKind::DoubleColon,
                expr: Box::new(expr.clone()),
                data_type: SqlDataType::Int(None),
                array: false,
                format: None,
            };
        }
    }
}

/// Where a number is a position or a count, not a value: `GROUP BY 1`, `ORDER BY 2`, `LIMIT 10`,
/// `OFFSET 5`, `ROWS 3 PRECEDING`. These keep the bare literal DataFusion's planner expects.
struct PositionalNumbers;

fn bare_number(expr: &mut Expr) {
    if let Expr::Cast {
        kind: CastKind::DoubleColon,
        expr: inner,
        data_type: SqlDataType::Int(None),
        ..
    } = expr
    {
        if matches!(**inner, Expr::Value(_)) {
            *expr = (**inner).clone();
        }
    }
}

impl VisitorMut for PositionalNumbers {
    type Break = ();

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        use datafusion::sql::sqlparser::ast::{
            GroupByExpr, LimitClause, NamedWindowExpr, OrderByKind, SetExpr,
        };
        if let Some(order_by) = &mut query.order_by {
            if let OrderByKind::Expressions(exprs) = &mut order_by.kind {
                exprs.iter_mut().for_each(|o| bare_number(&mut o.expr));
            }
        }
        match &mut query.limit_clause {
            Some(LimitClause::LimitOffset {
                limit,
                offset,
                limit_by,
            }) => {
                limit.iter_mut().for_each(bare_number);
                offset.iter_mut().for_each(|o| bare_number(&mut o.value));
                limit_by.iter_mut().for_each(bare_number);
            }
            Some(LimitClause::OffsetCommaLimit { offset, limit }) => {
                bare_number(offset);
                bare_number(limit);
            }
            None => {}
        }
        if let Some(fetch) = &mut query.fetch {
            fetch.quantity.iter_mut().for_each(bare_number);
        }
        if let SetExpr::Select(select) = query.body.as_mut() {
            if let GroupByExpr::Expressions(exprs, _) = &mut select.group_by {
                exprs.iter_mut().for_each(bare_number);
            }
            for window in &mut select.named_window {
                if let NamedWindowExpr::WindowSpec(spec) = &mut window.1 {
                    bare_frame(spec);
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        use datafusion::sql::sqlparser::ast::WindowType;
        if let Expr::Function(f) = expr {
            if let Some(WindowType::WindowSpec(spec)) = &mut f.over {
                bare_frame(spec);
            }
        }
        ControlFlow::Continue(())
    }
}

fn bare_frame(spec: &mut datafusion::sql::sqlparser::ast::WindowSpec) {
    use datafusion::sql::sqlparser::ast::WindowFrameBound;
    if let Some(frame) = &mut spec.window_frame {
        for bound in std::iter::once(&mut frame.start_bound).chain(frame.end_bound.as_mut()) {
            if let WindowFrameBound::Preceding(Some(e)) | WindowFrameBound::Following(Some(e)) =
                bound
            {
                bare_number(e);
            }
        }
    }
}

/// Rewrites where DataFusion's function of the same name or syntax gives another value than
/// Flink's (visited after the children, so nested calls are rewritten too).
fn flink_semantics(expr: &mut Expr) {
    use datafusion::sql::sqlparser::ast::{
        BinaryOperator, CeilFloorKind, DateTimeField, FunctionArg, FunctionArgExpr,
        FunctionArguments, Value,
    };
    let unnamed = |f: &datafusion::sql::sqlparser::ast::Function| -> Option<Vec<Expr>> {
        let FunctionArguments::List(list) = &f.args else {
            return None;
        };
        list.args
            .iter()
            .map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                _ => None,
            })
            .collect()
    };
    int_literal(expr);
    match expr {
        // CAST(x AS TIMESTAMP) is a TIMESTAMP(6) in Flink (DataFusion's: nanoseconds).
        Expr::Cast {
            data_type:
                data_type @ SqlDataType::Timestamp(
                    None,
                    datafusion::sql::sqlparser::ast::TimezoneInfo::None,
                ),
            ..
        } => {
            *data_type = SqlDataType::Timestamp(
                Some(6),
                datafusion::sql::sqlparser::ast::TimezoneInfo::None,
            );
        }
        // Flink's text of a value (TRUE, `2024-01-01 00:00:01`, 1.0E20), not Arrow's.
        Expr::Cast {
            expr: inner,
            data_type:
                SqlDataType::String(None)
                | SqlDataType::Varchar(None)
                | SqlDataType::Text
                | SqlDataType::CharacterVarying(None),
            format: None,
            ..
        } => {
            *expr = call(crate::functions::text::TO_STRING, vec![(**inner).clone()]);
        }
        Expr::Function(f) if f.name.to_string() == "json_object" => json_object(expr),
        Expr::Function(f) => {
            let name = f.name.to_string();
            if name == "json_value" {
                json_returning(expr);
                return;
            }
            let Some(args) = unnamed(f) else { return };
            match (name.as_str(), args.len()) {
                // LOG(x) is the natural logarithm in Flink (DataFusion's: base 10).
                ("log", 1) => *expr = call("ln", args),
                // REGEXP_REPLACE replaces every match in Flink (DataFusion's: the first).
                ("regexp_replace", 3) => {
                    let mut args = args;
                    args.push(Expr::value(Value::SingleQuotedString("g".into())));
                    *expr = call("regexp_replace", args);
                }
                // LISTAGG(s[, sep]): DataFusion's STRING_AGG, with Flink's default separator.
                ("listagg", 1) if f.over.is_none() && f.filter.is_none() => {
                    let mut args = args;
                    args.push(Expr::value(Value::SingleQuotedString(",".into())));
                    *expr = call("string_agg", args);
                }
                ("listagg", 2) if f.over.is_none() && f.filter.is_none() => {
                    *expr = call("string_agg", args)
                }
                // ARRAY_REMOVE removes every equal element in Flink (DataFusion's: the first).
                ("array_remove", 2) => *expr = call("array_remove_all", args),
                // Flink's names for DataFusion's functions.
                ("ceiling", 1) => *expr = call("ceil", args),
                ("startswith", 2) => *expr = call("starts_with", args),
                ("endswith", 2) => *expr = call("ends_with", args),
                ("split", 2) => *expr = call("string_to_array", args),
                ("regexp", 2) => *expr = call("regexp_like", args),
                ("e", 0) => {
                    *expr = call("exp", vec![Expr::value(Value::Number("1".into(), false))])
                }
                // TIMESTAMPADD(DAY, n, t), TIMESTAMPDIFF(DAY, t1, t2): the unit as a string.
                ("timestampadd" | "timestampdiff", 3) => {
                    use crate::functions::calendar::{TIMESTAMPADD, TIMESTAMPDIFF};
                    let mut args = args;
                    if let Expr::Identifier(unit) = &args[0] {
                        args[0] = Expr::value(Value::SingleQuotedString(unit.value.clone()));
                    }
                    let f = if name == "timestampadd" {
                        TIMESTAMPADD
                    } else {
                        TIMESTAMPDIFF
                    };
                    *expr = call(f, args);
                }
                // INT in Flink (DataFusion's: BIGINT, or unsigned).
                ("cardinality", 1)
                | ("array_position", 2)
                | ("regexp_count", 2)
                | ("regexp_instr", 2) => *expr = cast_to(expr.clone(), SqlDataType::Int(None)),
                // A character literal is a CHAR(n) in Flink (Flowline's strings are STRING).
                ("typeof", 1) => {
                    if let Expr::Value(v) = &args[0] {
                        if let Value::SingleQuotedString(text) = &v.value {
                            let name = format!("CHAR({}) NOT NULL", text.chars().count());
                            *expr = Expr::value(Value::SingleQuotedString(name));
                        }
                    }
                }
                // Flink's ARRAY_PREPEND(array, element); DataFusion's takes them the other way.
                ("array_prepend", 2) => {
                    *expr = call("array_prepend", args.into_iter().rev().collect())
                }
                _ => {}
            }
        }
        // TIMESTAMP '2024-01-01 00:00:01' is a TIMESTAMP(0) in Flink, with the precision of its
        // fraction (DataFusion's: nanoseconds, which print nine fraction digits).
        Expr::TypedString(ts)
            if matches!(
                ts.data_type,
                SqlDataType::Timestamp(None, datafusion::sql::sqlparser::ast::TimezoneInfo::None)
            ) =>
        {
            let Some(text) = ts.value.clone().into_string() else {
                return;
            };
            let digits = text.split_once('.').map_or(0, |(_, f)| {
                f.chars().take_while(char::is_ascii_digit).count()
            });
            let precision = match digits {
                0 => 0,
                1..=3 => 3,
                4..=6 => 6,
                _ => 9,
            };
            let arrow_type = crate::types::timestamp_type(precision, false).to_string();
            *expr = call(
                "arrow_cast",
                vec![
                    Expr::value(Value::SingleQuotedString(text)),
                    Expr::value(Value::SingleQuotedString(arrow_type)),
                ],
            );
        }
        // SUBSTR / SUBSTRING: Flink's (a negative start counts from the end).
        Expr::Substring {
            expr: inner,
            substring_from: Some(from),
            substring_for,
            ..
        } => {
            let mut args = vec![(**inner).clone(), (**from).clone()];
            args.extend(substring_for.as_deref().cloned());
            *expr = call("substr", args);
        }
        // 1.0E20 is a DOUBLE in Flink (DataFusion's: a DECIMAL).
        Expr::Value(v) if matches!(&v.value, Value::Number(n, _) if n.contains(['e', 'E'])) => {
            *expr = cast_to(
                expr.clone(),
                SqlDataType::Double(datafusion::sql::sqlparser::ast::ExactNumberInfo::None),
            );
        }
        // FLOOR(t TO HOUR), CEIL(t TO MONTH).
        Expr::Floor {
            expr: inner,
            field: CeilFloorKind::DateTimeField(unit),
        }
        | Expr::Ceil {
            expr: inner,
            field: CeilFloorKind::DateTimeField(unit),
        } if !matches!(unit, DateTimeField::NoDateTime) => {
            let args = vec![
                Expr::value(Value::SingleQuotedString(unit.to_string())),
                (**inner).clone(),
            ];
            let f = if matches!(expr, Expr::Floor { .. }) {
                crate::functions::calendar::FLOOR_TO
            } else {
                crate::functions::calendar::CEIL_TO
            };
            *expr = call(f, args);
        }
        // INTERVAL '2-3' YEAR TO MONTH, INTERVAL '1 02:03:04' DAY TO SECOND (and the other
        // ranges), which DataFusion's SQL planner does not take: the same span in units.
        Expr::Interval(iv) if iv.last_field.is_some() => {
            let Expr::Value(v) = iv.value.as_ref() else {
                return;
            };
            let Value::SingleQuotedString(text) = &v.value else {
                return;
            };
            let (Some(from), Some(to)) = (&iv.leading_field, &iv.last_field) else {
                return;
            };
            if let Some(span) = interval_span(text, from, to) {
                *expr = Expr::Interval(datafusion::sql::sqlparser::ast::Interval {
                    value: Box::new(Expr::value(Value::SingleQuotedString(span))),
                    leading_field: None,
                    leading_precision: None,
                    last_field: None,
                    fractional_seconds_precision: None,
                });
            }
        }
        // TIME '12:34:56' and CAST(x AS TIME) are TIME(0) in Flink (DataFusion's: TIME(9)).
        Expr::Cast {
            expr: inner,
            data_type: SqlDataType::Time(None, datafusion::sql::sqlparser::ast::TimezoneInfo::None),
            ..
        } => {
            let time = Expr::value(Value::SingleQuotedString("Time32(Second)".into()));
            *expr = call("arrow_cast", vec![(**inner).clone(), time]);
        }
        Expr::TypedString(ts)
            if matches!(
                ts.data_type,
                SqlDataType::Time(None, datafusion::sql::sqlparser::ast::TimezoneInfo::None)
            ) =>
        {
            let Some(text) = ts.value.clone().into_string() else {
                return;
            };
            if !text.contains('.') {
                let time = Expr::value(Value::SingleQuotedString("Time32(Second)".into()));
                let text = Expr::value(Value::SingleQuotedString(text));
                *expr = call("arrow_cast", vec![text, time]);
            }
        }
        // DataFusion's tuples take bare literals only.
        Expr::Tuple(items) => items.iter_mut().for_each(bare_number),
        // EXTRACT is a BIGINT in Flink (DataFusion's: an INT) and counts Sunday as day 1 of the
        // week (DataFusion's: 0).
        Expr::Extract { field, .. } => {
            let day_one = matches!(field, DateTimeField::Dow);
            let mut e = cast_to(expr.clone(), SqlDataType::BigInt(None));
            if day_one {
                e = Expr::Nested(Box::new(Expr::BinaryOp {
                    left: Box::new(e),
                    op: BinaryOperator::Plus,
                    right: Box::new(Expr::value(Value::Number("1".into(), false))),
                }));
            }
            *expr = e;
        }
        _ => {}
    }
}

/// `JSON_OBJECT(k VALUE v, ... [ABSENT ON NULL])` becomes a call with the keys and values in
/// turn (DataFusion's SQL planner takes no `VALUE` arguments).
fn json_object(expr: &mut Expr) {
    use datafusion::sql::sqlparser::ast::{
        FunctionArg, FunctionArgExpr, FunctionArgOperator, FunctionArgumentClause,
        FunctionArguments, JsonNullClause, Value,
    };
    let Expr::Function(f) = expr else { return };
    let FunctionArguments::List(list) = &f.args else {
        return;
    };
    let mut args = Vec::new();
    for a in &list.args {
        match a {
            FunctionArg::ExprNamed {
                name,
                arg: FunctionArgExpr::Expr(v),
                operator: FunctionArgOperator::Value,
            } => args.extend([name.clone(), v.clone()]),
            // The parser reads a quoted key `'k' VALUE v` as a name.
            FunctionArg::Named {
                name,
                arg: FunctionArgExpr::Expr(v),
                operator: FunctionArgOperator::Value,
            } => {
                let key = match name.quote_style {
                    Some('\'') => Expr::value(Value::SingleQuotedString(name.value.clone())),
                    _ => Expr::Identifier(name.clone()),
                };
                args.extend([key, v.clone()]);
            }
            _ => return, // DataFusion's error names the function
        }
    }
    let absent = list.clauses.iter().any(|c| {
        matches!(
            c,
            FunctionArgumentClause::JsonNullClause(JsonNullClause::AbsentOnNull)
        )
    });
    let name = if absent {
        crate::functions::json::JSON_OBJECT_ABSENT
    } else {
        "json_object"
    };
    *expr = call(name, args);
}

/// `JSON_VALUE(doc, path RETURNING t)` becomes `CAST(JSON_VALUE(doc, path) AS t)`.
fn json_returning(expr: &mut Expr) {
    use datafusion::sql::sqlparser::ast::{FunctionArgumentClause, FunctionArguments};
    let Expr::Function(f) = expr else { return };
    let FunctionArguments::List(list) = &mut f.args else {
        return;
    };
    let Some(i) = list
        .clauses
        .iter()
        .position(|c| matches!(c, FunctionArgumentClause::JsonReturningClause(_)))
    else {
        return;
    };
    let FunctionArgumentClause::JsonReturningClause(returning) = list.clauses.remove(i) else {
        unreachable!("found above")
    };
    *expr = cast_to(expr.clone(), returning.data_type);
}

/// The span of an interval range literal (`'2-3'` YEAR TO MONTH, `'1 02:03:04'` DAY TO SECOND)
/// in the words DataFusion's interval parser reads (`27 months`, `1 days 2 hours ...`).
fn interval_span(
    text: &str,
    from: &datafusion::sql::sqlparser::ast::DateTimeField,
    to: &datafusion::sql::sqlparser::ast::DateTimeField,
) -> Option<String> {
    use datafusion::sql::sqlparser::ast::DateTimeField as F;
    let (negative, text) = match text.trim().strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.trim().strip_prefix('+').unwrap_or(text.trim())),
    };
    let sign = if negative { "-" } else { "" };
    if matches!((from, to), (F::Year, F::Month)) {
        let (years, months) = text.split_once('-')?;
        let months = years.trim().parse::<i64>().ok()? * 12 + months.trim().parse::<i64>().ok()?;
        return Some(format!("{sign}{months} months"));
    }
    const UNITS: [&str; 4] = ["days", "hours", "minutes", "seconds"];
    let index = |f: &F| match f {
        F::Day => Some(0),
        F::Hour => Some(1),
        F::Minute => Some(2),
        F::Second => Some(3),
        _ => None,
    };
    let (first, last) = (index(from)?, index(to)?);
    let parts: Vec<&str> = text.split([' ', ':']).filter(|p| !p.is_empty()).collect();
    if last < first || parts.len() != last - first + 1 {
        return None;
    }
    let words: Vec<String> = parts
        .iter()
        .zip(&UNITS[first..=last])
        .map(|(n, unit)| format!("{sign}{n} {unit}"))
        .collect();
    Some(words.join(" "))
}

/// `CAST(e AS t)`.
fn cast_to(e: Expr, t: SqlDataType) -> Expr {
    Expr::Cast {
        kind: CastKind::Cast,
        expr: Box::new(e),
        data_type: t,
        array: false,
        format: None,
    }
}

/// A call `name(args)`.
fn call(name: &str, args: Vec<Expr>) -> Expr {
    use datafusion::sql::sqlparser::ast::{FunctionArg, FunctionArgExpr, FunctionArguments};
    let placeholders = vec!["NULL"; args.len()].join(", ");
    let parsed = Parser::new(&datafusion::sql::sqlparser::dialect::GenericDialect {})
        .try_with_sql(&format!("placeholder({placeholders})"))
        .and_then(|mut p| p.parse_expr());
    let Ok(Expr::Function(mut f)) = parsed else {
        unreachable!("a call with NULL arguments parses")
    };
    // Named afterwards: some names (SUBSTR) parse as syntax of their own.
    f.name = datafusion::sql::sqlparser::ast::ObjectName(vec![ObjectNamePart::Identifier(
        Ident::new(name),
    )]);
    if let FunctionArguments::List(list) = &mut f.args {
        for (slot, arg) in list.args.iter_mut().zip(args) {
            *slot = FunctionArg::Unnamed(FunctionArgExpr::Expr(arg));
        }
    }
    Expr::Function(f)
}

/// Names an unaliased `r.f` in a SELECT list `f`, as Flink does (DataFusion would call a field
/// access `t.r[f]`): `CREATE VIEW auction AS SELECT auction.id, ... FROM nexmark` has a column
/// `id`. A name already taken in the list gets Flink's suffix: `id`, `id0`, `id1`, ...
struct FieldNames;

impl VisitorMut for FieldNames {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        name_fields(&mut query.body);
        ControlFlow::Continue(())
    }
}

fn name_fields(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => {
            let taken = |items: &[SelectItem], name: &str| {
                items.iter().any(|item| match item {
                    SelectItem::ExprWithAlias { alias, .. } => alias.value == name,
                    SelectItem::UnnamedExpr(Expr::Identifier(i)) => i.value == name,
                    SelectItem::UnnamedExpr(Expr::CompoundIdentifier(p)) => {
                        p.last().is_some_and(|i| i.value == name)
                    }
                    _ => false,
                })
            };
            for at in 0..select.projection.len() {
                let SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) =
                    &select.projection[at]
                else {
                    continue;
                };
                let Some(last) = parts.last().filter(|_| parts.len() > 1) else {
                    continue;
                };
                let (expr, base) = (Expr::CompoundIdentifier(parts.clone()), last.value.clone());
                let earlier = &select.projection[..at];
                let mut name = base.clone();
                let mut n = 0;
                while taken(earlier, &name) {
                    name = format!("{base}{n}");
                    n += 1;
                }
                select.projection[at] = SelectItem::ExprWithAlias {
                    expr,
                    alias: Ident::with_quote('`', name),
                };
            }
        }
        SetExpr::SetOperation { left, right, .. } => {
            name_fields(left);
            name_fields(right);
        }
        _ => {}
    }
}

/// Turns a sqlparser error into one that points at the script. sqlparser embeds
/// "at Line: L, Column: C" in its messages; we lift that out, else use `at`.
pub(crate) fn parser_error(e: ParserError, at: &TokenWithSpan) -> SqlError {
    let msg = match e {
        ParserError::ParserError(m) | ParserError::TokenizerError(m) => m,
        ParserError::RecursionLimitExceeded => "statement nests too deeply".into(),
    };
    if let Some(idx) = msg.find(" at Line: ") {
        let (text, pos) = msg.split_at(idx);
        let nums: Vec<u64> = pos
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .filter_map(|s| s.parse().ok())
            .collect();
        if nums.len() >= 2 {
            return SqlError::new(text.to_string(), nums[0], nums[1]);
        }
    }
    SqlError::new(msg, at.span.start.line, at.span.start.column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_pipeline_script() {
        let script = "SET 'parallelism.default' = '2';\n\
            CREATE TABLE src (a BIGINT, b STRING) WITH ('connector' = 'datagen');\n\
            CREATE TEMPORARY VIEW v AS SELECT a, UPPER(b) AS b FROM src;\n\
            EXECUTE STATEMENT SET BEGIN\n\
              INSERT INTO out1 SELECT * FROM v;\n\
              INSERT INTO out2 (a) SELECT a FROM v;\n\
            END;";
        let stmts = parse_script(script).unwrap();
        assert_eq!(stmts.len(), 4);
        assert!(
            matches!(&stmts[0], Statement::Set { key, value } if key == "parallelism.default" && value == "2")
        );
        let Statement::StatementSet(set) = &stmts[3] else {
            panic!("{:?}", stmts[3])
        };
        assert_eq!(set.len(), 2);
        assert_eq!(set[1].columns, vec!["a".to_string()]);
        let Statement::CreateView(v) = &stmts[2] else {
            panic!()
        };
        assert!(v.query.to_string().contains("upper(b)"), "{}", v.query);
    }

    #[test]
    fn errors_point_at_line_and_column() {
        let err = parse_script("CREATE TABLE t (a INT) WITH ('connector' = 'x');\nSELEC a FROM t")
            .unwrap_err();
        assert_eq!((err.line, err.column), (2, 1), "{err}");
        let err = parse_script("SELECT a FROM t WHERE").unwrap_err();
        assert_eq!(err.line, 1, "{err}");
        assert!(err.column > 1, "{err}");
    }
}
