//! Splits a pipeline script into statements and parses each one.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, DataType as SqlDataType, Expr, Ident, ObjectNamePart, Query, SelectItem,
    SetExpr, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::ddl::{self, TableDef};
use crate::error::{Result, SqlError};
use crate::semantics::{
    cast_to, flink_semantics, map_constructors, refuse_unsupported_syntax, PositionalNumbers,
    ValuesTypes,
};
use crate::types::err_at;

/// The dialect used for all of Flowline's SQL (see [`crate::dialect`]).
pub static DIALECT: crate::dialect::FlinkDialect = crate::dialect::FlinkDialect;

/// One statement of a pipeline script.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per statement of a script
pub enum Statement {
    CreateTable(TableDef),
    CreateView(ViewDef),
    /// `CREATE MATERIALIZED TABLE ... AS SELECT`.
    CreateMaterializedTable(ddl::MaterializedTableDef),
    /// `DROP MATERIALIZED TABLE [IF EXISTS] name`.
    DropMaterializedTable {
        name: String,
        if_exists: bool,
    },
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
    // Every SESSION table of the script, numbered in order (their names are the numbers).
    let mut sessions = Vec::new();
    for mut unit in units {
        let before = sessions.len();
        unit = crate::windows::rewrite_tvfs(unit, &mut sessions)?;
        refuse_unsupported_syntax(&unit)?;
        unit = map_constructors(unit);
        out.extend(
            sessions[before..]
                .iter()
                .cloned()
                .map(Statement::DefineSession),
        );
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
            match legacy_windows(parse_statement(unit)?, &mut out, &mut sessions)? {
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
        let stmt = legacy_windows(parse_statement(unit)?, &mut out, &mut sessions)?;
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
fn legacy_windows(
    mut stmt: Statement,
    out: &mut Vec<Statement>,
    sessions: &mut Vec<crate::windows::SessionSpec>,
) -> Result<Statement> {
    let before = sessions.len();
    match &mut stmt {
        Statement::Insert(i) => crate::windows::rewrite_group_windows(&mut i.query, sessions)?,
        Statement::CreateView(v) => crate::windows::rewrite_group_windows(&mut v.query, sessions)?,
        Statement::CreateMaterializedTable(m) => {
            crate::windows::rewrite_group_windows(&mut m.query, sessions)?
        }
        Statement::Query(q) => crate::windows::rewrite_group_windows(q, sessions)?,
        _ => {}
    }
    out.extend(
        sessions[before..]
            .iter()
            .cloned()
            .map(Statement::DefineSession),
    );
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

pub(crate) fn word_is(tok: &TokenWithSpan, word: &str) -> bool {
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
        } else if word_is(&kind, "MATERIALIZED") && word_is(&parser.peek_token(), "TABLE") {
            parser.next_token();
            let mut def = ddl::parse_create_materialized_table(&mut parser, &first)?;
            normalize_query(&mut def.query);
            Statement::CreateMaterializedTable(def)
        } else if word_is(&kind, "VIEW") {
            parse_view(&mut parser, temporary)?
        } else {
            return Err(err_at(
                &kind,
                format!(
                    "unsupported statement 'CREATE {}'; supported: CREATE TABLE, CREATE VIEW, CREATE MATERIALIZED TABLE",
                    kind.token
                ),
            ));
        }
    } else if word_is(&first, "DROP") && word_is(&parser.peek_nth_token(1), "MATERIALIZED") {
        parser.next_token();
        parser.next_token();
        let t = parser.next_token();
        if !word_is(&t, "TABLE") {
            return Err(err_at(&t, "expected DROP MATERIALIZED TABLE"));
        }
        let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let at = parser.peek_token();
        let name = parser
            .parse_object_name(false)
            .map_err(|e| parser_error(e, &at))?;
        Statement::DropMaterializedTable {
            name: object_name(&name),
            if_exists,
        }
    } else if word_is(&first, "ALTER") && word_is(&parser.peek_nth_token(1), "MATERIALIZED") {
        return Err(err_at(
            &first,
            "ALTER MATERIALIZED TABLE ... SUSPEND/RESUME: a materialized table is maintained by the job that \
             declares it; to suspend it, stop the job (its last checkpoint keeps the table) and run the script \
             again to resume from there; to change its query, DROP it and create it anew",
        ));
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
                "unsupported statement starting with '{}'; a script has CREATE TABLE, CREATE VIEW, CREATE MATERIALIZED TABLE, INSERT INTO, \
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
