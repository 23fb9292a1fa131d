//! `CREATE TABLE name (...) [PARTITIONED BY (...)] WITH (...)`, Flink style.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::sql::sqlparser::ast::Expr;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::error::{Result, SqlError};
use crate::script::{object_name, parser_error};
use crate::types::{err_at, TypeParser};

/// A table declared by `CREATE TABLE`.
#[derive(Debug, Clone)]
pub struct TableDef {
    pub name: String,
    /// All columns in declared order: physical, computed and metadata.
    pub columns: Vec<ColumnDef>,
    pub watermark: Option<WatermarkDef>,
    pub primary_key: Vec<String>,
    pub partitioned_by: Vec<String>,
    pub options: BTreeMap<String, String>,
    pub line: u64,
    pub column: u64,
}

#[derive(Debug, Clone)]
pub struct ColumnDef {
    pub name: String,
    pub kind: ColumnKind,
}

#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per column of a declared table
pub enum ColumnKind {
    /// Stored in the source's data.
    Physical { data_type: DataType, nullable: bool },
    /// `name AS expr`: computed from the physical columns of the same row.
    Computed { expr: Expr },
    /// `name TYPE METADATA [FROM 'key'] [VIRTUAL]`: provided by the connector.
    Metadata {
        data_type: DataType,
        key: Option<String>,
        is_virtual: bool,
    },
}

/// `WATERMARK FOR column AS expr`: kept for the event-time runtime.
#[derive(Debug, Clone)]
pub struct WatermarkDef {
    pub column: String,
    pub expr: Expr,
}

impl TableDef {
    /// Arrow schema of the physical columns: what a source decodes and a sink encodes.
    pub fn physical_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .filter_map(|c| match &c.kind {
                ColumnKind::Physical {
                    data_type,
                    nullable,
                } => Some(Field::new(&c.name, data_type.clone(), *nullable)),
                _ => None,
            })
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// What a source produces: the physical columns, then the metadata columns (`METADATA`
    /// columns, in declared order), each under its column name.
    pub fn source_schema(&self) -> SchemaRef {
        self.physical_then(self.metadata_columns())
    }

    /// `(column name, type, metadata key)` of each METADATA column; the key defaults to the name.
    pub fn metadata_columns(&self) -> impl Iterator<Item = (&str, &DataType, &str)> {
        self.metadata(false)
    }

    /// `(column name, type, metadata key)` of each persisted (not `VIRTUAL`) METADATA column: a
    /// sink writes them (as Flink's writable metadata).
    pub fn persisted_metadata_columns(&self) -> impl Iterator<Item = (&str, &DataType, &str)> {
        self.metadata(true)
    }

    /// What a sink receives: the physical columns, then the persisted metadata columns.
    pub fn sink_schema(&self) -> SchemaRef {
        self.physical_then(self.persisted_metadata_columns())
    }

    fn metadata(&self, persisted_only: bool) -> impl Iterator<Item = (&str, &DataType, &str)> {
        self.columns.iter().filter_map(move |c| match &c.kind {
            ColumnKind::Metadata {
                data_type,
                key,
                is_virtual,
            } if !(persisted_only && *is_virtual) => Some((
                c.name.as_str(),
                data_type,
                key.as_deref().unwrap_or(c.name.as_str()),
            )),
            _ => None,
        })
    }

    /// The physical columns, then `metadata` columns (nullable, under their column names).
    fn physical_then<'a>(
        &self,
        metadata: impl Iterator<Item = (&'a str, &'a DataType, &'a str)>,
    ) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .physical_schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields
            .extend(metadata.map(|(name, data_type, _)| Field::new(name, data_type.clone(), true)));
        Arc::new(Schema::new(fields))
    }

    /// The columns an INSERT writes, in declared order (as Flink's INSERT matches them):
    /// physical and persisted metadata columns.
    pub fn insert_columns(&self) -> Vec<&str> {
        self.columns
            .iter()
            .filter(|c| {
                matches!(
                    c.kind,
                    ColumnKind::Physical { .. }
                        | ColumnKind::Metadata {
                            is_virtual: false,
                            ..
                        }
                )
            })
            .map(|c| c.name.as_str())
            .collect()
    }

    /// True if the table declares computed or metadata columns on top of its physical ones.
    pub fn has_derived_columns(&self) -> bool {
        self.columns
            .iter()
            .any(|c| !matches!(c.kind, ColumnKind::Physical { .. }))
    }

    pub fn connector(&self) -> Option<&str> {
        self.options.get("connector").map(String::as_str)
    }
}

/// `[IF NOT EXISTS] name`: a table of that name, nothing declared yet.
fn parse_table_name(parser: &mut Parser, first: &TokenWithSpan) -> Result<TableDef> {
    let _ = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name_tok = parser.peek_token();
    let name = object_name(
        &parser
            .parse_object_name(false)
            .map_err(|e| parser_error(e, &name_tok))?,
    );
    let def = TableDef {
        name,
        columns: Vec::new(),
        watermark: None,
        primary_key: Vec::new(),
        partitioned_by: Vec::new(),
        options: BTreeMap::new(),
        line: first.span.start.line,
        column: first.span.start.column,
    };
    Ok(def)
}

/// `[COMMENT '...'] [PARTITIONED BY (...)]` (the comment is not kept).
fn parse_comment_and_partitions(parser: &mut Parser, def: &mut TableDef) -> Result<()> {
    if parser.parse_keyword(Keyword::COMMENT) {
        let t = parser.peek_token();
        parser
            .parse_literal_string()
            .map_err(|e| parser_error(e, &t))?;
    }
    if parser.parse_keywords(&[Keyword::PARTITIONED, Keyword::BY]) {
        def.partitioned_by = parse_ident_list(parser)?;
    }
    Ok(())
}

/// Parses what follows `CREATE [TEMPORARY] TABLE`.
pub(crate) fn parse_create_table(parser: &mut Parser, first: &TokenWithSpan) -> Result<TableDef> {
    let mut def = parse_table_name(parser, first)?;
    if parser.consume_token(&Token::LParen) {
        loop {
            parse_table_element(parser, &mut def)?;
            if parser.consume_token(&Token::Comma) {
                continue;
            }
            let t = parser.peek_token();
            parser
                .expect_token(&Token::RParen)
                .map_err(|e| parser_error(e, &t))?;
            break;
        }
    }
    parse_comment_and_partitions(parser, &mut def)?;
    let with_tok = parser.peek_token();
    if !parser.parse_keyword(Keyword::WITH) {
        if word(&with_tok, "LIKE") {
            return Err(err_at(
                &with_tok,
                "CREATE TABLE ... LIKE is not supported yet; list the columns explicitly",
            ));
        }
        return Err(err_at(
            &with_tok,
            format!(
                "expected WITH ('connector' = '...', ...), found '{}'",
                with_tok.token
            ),
        ));
    }
    parse_options(parser, &with_tok, &mut def.options)?;
    check_table(&def, first)?;
    Ok(def)
}

/// The `( 'key' = 'value', ... )` after WITH (`with_tok`).
fn parse_options(
    parser: &mut Parser,
    with_tok: &TokenWithSpan,
    options: &mut BTreeMap<String, String>,
) -> Result<()> {
    parser
        .expect_token(&Token::LParen)
        .map_err(|e| parser_error(e, with_tok))?;
    loop {
        let key_tok = parser.next_token();
        let Token::SingleQuotedString(key) = key_tok.token.clone() else {
            return Err(err_at(
                &key_tok,
                format!("expected a quoted option key, found '{}'", key_tok.token),
            ));
        };
        let eq = parser.next_token();
        if eq.token != Token::Eq {
            return Err(err_at(
                &eq,
                format!("expected '=' after option key '{key}'"),
            ));
        }
        let value_tok = parser.next_token();
        let Token::SingleQuotedString(value) = value_tok.token.clone() else {
            return Err(err_at(
                &value_tok,
                format!("expected a quoted value for option '{key}'"),
            ));
        };
        if options.insert(key.clone(), value).is_some() {
            return Err(err_at(&key_tok, format!("option '{key}' is given twice")));
        }
        if !parser.consume_token(&Token::Comma) {
            let t = parser.peek_token();
            parser
                .expect_token(&Token::RParen)
                .map_err(|e| parser_error(e, &t))?;
            break;
        }
    }
    Ok(())
}

/// `CREATE MATERIALIZED TABLE` (Flink 1.20+), continuous refresh mode.
#[derive(Debug, Clone)]
pub struct MaterializedTableDef {
    /// Its name, `PRIMARY KEY`, `PARTITIONED BY` and `WITH` options; the columns are the
    /// query's.
    pub table: TableDef,
    /// `FRESHNESS = INTERVAL ...`: how stale a job without checkpoints may serve it.
    pub freshness: Option<std::time::Duration>,
    pub query: Box<datafusion::sql::sqlparser::ast::Query>,
}

/// `CREATE MATERIALIZED TABLE name [(PRIMARY KEY (...) NOT ENFORCED)] [COMMENT '...']
/// [PARTITIONED BY (...)] [WITH (...)] [FRESHNESS = INTERVAL ...] [REFRESH_MODE = CONTINUOUS]
/// AS query`, after `CREATE MATERIALIZED TABLE`.
pub(crate) fn parse_create_materialized_table(
    parser: &mut Parser,
    first: &TokenWithSpan,
) -> Result<MaterializedTableDef> {
    let mut table = parse_table_name(parser, first)?;
    if parser.consume_token(&Token::LParen) {
        let t = parser.peek_token();
        parse_table_element(parser, &mut table)?;
        if !table.columns.is_empty() || table.watermark.is_some() {
            return Err(err_at(
                &t,
                "a materialized table's columns are its query's: only a PRIMARY KEY (...) NOT ENFORCED constraint goes in the parentheses",
            ));
        }
        let t = parser.peek_token();
        parser
            .expect_token(&Token::RParen)
            .map_err(|e| parser_error(e, &t))?;
    }
    parse_comment_and_partitions(parser, &mut table)?;
    let with_tok = parser.peek_token();
    if parser.parse_keyword(Keyword::WITH) {
        parse_options(parser, &with_tok, &mut table.options)?;
    }
    let mut freshness = None;
    loop {
        let t = parser.peek_token();
        if word(&t, "FRESHNESS") {
            parser.next_token();
            expect_eq(parser)?;
            let at = parser.peek_token();
            let expr = parser.parse_expr().map_err(|e| parser_error(e, &at))?;
            freshness = Some(interval(&expr).ok_or_else(|| {
                err_at(
                    &at,
                    format!("FRESHNESS must be a positive INTERVAL such as INTERVAL '3' SECOND, got {expr}"),
                )
            })?);
        } else if word(&t, "REFRESH_MODE") {
            parser.next_token();
            expect_eq(parser)?;
            let mode = parser.next_token();
            if !word(&mode, "CONTINUOUS") {
                return Err(err_at(
                    &mode,
                    format!(
                        "REFRESH_MODE = {}: Flowline keeps materialized tables up to date continuously (REFRESH_MODE = CONTINUOUS);                          for a periodic full refresh run the query in batch mode (flowline run with 'execution.runtime-mode' = 'batch') on a schedule",
                        mode.token
                    ),
                ));
            }
        } else {
            break;
        }
    }
    let as_tok = parser.peek_token();
    parser
        .expect_keyword(Keyword::AS)
        .map_err(|e| parser_error(e, &as_tok))?;
    let query = parser.parse_query().map_err(|e| parser_error(e, &as_tok))?;
    Ok(MaterializedTableDef {
        table,
        freshness,
        query,
    })
}

fn expect_eq(parser: &mut Parser) -> Result<()> {
    let eq = parser.next_token();
    if eq.token != Token::Eq {
        return Err(err_at(&eq, format!("expected '=', found '{}'", eq.token)));
    }
    Ok(())
}

/// `INTERVAL 'n' UNIT` as a duration (SECOND, MINUTE, HOUR, DAY; fractional seconds allowed).
fn interval(expr: &datafusion::sql::sqlparser::ast::Expr) -> Option<std::time::Duration> {
    use datafusion::sql::sqlparser::ast::{DateTimeField, Expr, Value};
    let Expr::Interval(i) = expr else { return None };
    let text = match i.value.as_ref() {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::Number(s, _) => s.clone(),
            _ => return None,
        },
        _ => return None,
    };
    let n: f64 = text.trim().parse().ok()?;
    let unit = match i.leading_field.as_ref()? {
        DateTimeField::Second | DateTimeField::Seconds => 1.0,
        DateTimeField::Minute | DateTimeField::Minutes => 60.0,
        DateTimeField::Hour | DateTimeField::Hours => 3600.0,
        DateTimeField::Day | DateTimeField::Days => 86400.0,
        _ => return None,
    };
    (n > 0.0).then(|| std::time::Duration::from_secs_f64(n * unit))
}

fn check_table(def: &TableDef, at: &TokenWithSpan) -> Result<()> {
    let has = |n: &str| def.columns.iter().any(|c| c.name == n);
    for (i, c) in def.columns.iter().enumerate() {
        if def.columns[..i].iter().any(|o| o.name == c.name) {
            return Err(err_at(
                at,
                format!(
                    "column '{}' is declared twice in table '{}'",
                    c.name, def.name
                ),
            ));
        }
    }
    if let Some(wm) = &def.watermark {
        if !has(&wm.column) {
            return Err(err_at(
                at,
                format!(
                    "WATERMARK FOR '{}': no such column in table '{}'",
                    wm.column, def.name
                ),
            ));
        }
    }
    for k in def.primary_key.iter().chain(&def.partitioned_by) {
        if !has(k) {
            return Err(err_at(
                at,
                format!(
                    "column '{k}' of PRIMARY KEY / PARTITIONED BY is not a column of '{}'",
                    def.name
                ),
            ));
        }
    }
    Ok(())
}

fn word(tok: &TokenWithSpan, w: &str) -> bool {
    matches!(&tok.token, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w))
}

fn parse_ident_list(parser: &mut Parser) -> Result<Vec<String>> {
    let t = parser.peek_token();
    parser
        .expect_token(&Token::LParen)
        .map_err(|e| parser_error(e, &t))?;
    let idents = parser
        .parse_comma_separated(|p| p.parse_identifier())
        .map_err(|e| parser_error(e, &t))?;
    parser
        .expect_token(&Token::RParen)
        .map_err(|e| parser_error(e, &t))?;
    Ok(idents.into_iter().map(|i| i.value).collect())
}

fn parse_table_element(parser: &mut Parser, def: &mut TableDef) -> Result<()> {
    let tok = parser.peek_token();
    let next_is = |p: &Parser, i: usize, w: &str| word(&p.peek_nth_token(i), w);
    if word(&tok, "WATERMARK") && next_is(parser, 1, "FOR") {
        parser.next_token();
        parser.next_token();
        let col_tok = parser.peek_token();
        let column = parser
            .parse_identifier()
            .map_err(|e| parser_error(e, &col_tok))?
            .value;
        let as_tok = parser.peek_token();
        parser
            .expect_keyword(Keyword::AS)
            .map_err(|e| parser_error(e, &as_tok))?;
        let expr = parser.parse_expr().map_err(|e| parser_error(e, &as_tok))?;
        if def.watermark.is_some() {
            return Err(err_at(&tok, "a table may declare only one WATERMARK"));
        }
        def.watermark = Some(WatermarkDef { column, expr });
        return Ok(());
    }
    if (word(&tok, "PRIMARY") && next_is(parser, 1, "KEY")) || word(&tok, "CONSTRAINT") {
        if parser.parse_keyword(Keyword::CONSTRAINT) {
            parser
                .parse_identifier()
                .map_err(|e| parser_error(e, &tok))?;
        }
        let t = parser.peek_token();
        parser
            .expect_keyword(Keyword::PRIMARY)
            .map_err(|e| parser_error(e, &t))?;
        parser
            .expect_keyword(Keyword::KEY)
            .map_err(|e| parser_error(e, &t))?;
        def.primary_key = parse_ident_list(parser)?;
        expect_not_enforced(parser)?;
        return Ok(());
    }
    let name = parser
        .parse_identifier()
        .map_err(|e| parser_error(e, &tok))?
        .value;
    let kind = if parser.parse_keyword(Keyword::AS) {
        let expr = parser.parse_expr().map_err(|e| parser_error(e, &tok))?;
        ColumnKind::Computed { expr }
    } else {
        let t = TypeParser::new(parser).parse()?;
        if parser.parse_keyword(Keyword::METADATA) {
            let key = if parser.parse_keyword(Keyword::FROM) {
                let kt = parser.peek_token();
                Some(
                    parser
                        .parse_literal_string()
                        .map_err(|e| parser_error(e, &kt))?,
                )
            } else {
                None
            };
            let is_virtual = parser.parse_keyword(Keyword::VIRTUAL);
            ColumnKind::Metadata {
                data_type: t.data_type,
                key,
                is_virtual,
            }
        } else {
            ColumnKind::Physical {
                data_type: t.data_type,
                nullable: t.nullable,
            }
        }
    };
    if parser.parse_keywords(&[Keyword::PRIMARY, Keyword::KEY]) {
        def.primary_key = vec![name.clone()];
        expect_not_enforced(parser)?;
    }
    if parser.parse_keyword(Keyword::COMMENT) {
        let t = parser.peek_token();
        parser
            .parse_literal_string()
            .map_err(|e| parser_error(e, &t))?;
    }
    def.columns.push(ColumnDef { name, kind });
    Ok(())
}

fn expect_not_enforced(parser: &mut Parser) -> Result<()> {
    let t = parser.peek_token();
    if parser.parse_keywords(&[Keyword::NOT, Keyword::ENFORCED]) {
        Ok(())
    } else {
        Err(SqlError::new(
            "Flink requires PRIMARY KEY (...) NOT ENFORCED: Flowline does not check key uniqueness",
            t.span.start.line,
            t.span.start.column,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::{parse_script, Statement};
    use datafusion::arrow::datatypes::TimeUnit;

    fn table(sql: &str) -> TableDef {
        match parse_script(sql).unwrap().remove(0) {
            Statement::CreateTable(t) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nexmark_ddl() {
        let t = table(
            "CREATE TABLE nexmark (
                event_type INT,
                bid ROW<auction BIGINT, price BIGINT, dateTime TIMESTAMP(3), extra VARCHAR>,
                tags ARRAY<ARRAY<STRING>>,
                m MAP<STRING, DECIMAL(10, 2)> NOT NULL,
                dateTime AS CASE WHEN event_type = 2 THEN bid.dateTime END,
                WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND,
                PRIMARY KEY (event_type) NOT ENFORCED
            ) PARTITIONED BY (event_type) WITH ('connector' = 'nexmark', 'events.num' = '10')",
        );
        assert_eq!(t.name, "nexmark");
        assert_eq!(t.columns.len(), 5);
        let schema = t.physical_schema();
        assert_eq!(schema.fields().len(), 4);
        let DataType::Struct(f) = schema.field(1).data_type() else {
            panic!()
        };
        assert_eq!(
            f[2].data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, None)
        );
        assert!(
            matches!(schema.field(2).data_type(), DataType::List(inner) if matches!(inner.data_type(), DataType::List(_)))
        );
        assert!(!schema.field(3).is_nullable());
        assert_eq!(t.watermark.as_ref().unwrap().column, "dateTime");
        assert_eq!(t.primary_key, vec!["event_type"]);
        assert_eq!(t.partitioned_by, vec!["event_type"]);
        assert_eq!(t.options["events.num"], "10");
    }

    #[test]
    fn bad_type_and_options_point_at_token() {
        let err =
            parse_script("CREATE TABLE t (\n  a INTEGR\n) WITH ('connector' = 'x')").unwrap_err();
        assert_eq!((err.line, err.column), (2, 5), "{err}");
        assert!(err.message.contains("unknown type 'INTEGR'"), "{err}");
        let err =
            parse_script("CREATE TABLE t (a INT) WITH ('connector' = 'x', 'connector' = 'y')")
                .unwrap_err();
        assert!(err.message.contains("given twice"), "{err}");
        let ts = table("CREATE TABLE t (a TIMESTAMP_LTZ(3), b TIMESTAMP WITH LOCAL TIME ZONE, c TIMESTAMP) WITH ('connector'='x')");
        let s = ts.physical_schema();
        assert_eq!(
            s.field(0).data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
        );
        assert_eq!(
            s.field(2).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, None)
        );
    }
}
