//! Flink SQL type names → Arrow data types.
//!
//! | Flink | Arrow |
//! |---|---|
//! | STRING, VARCHAR(n), CHAR(n) | Utf8 |
//! | BOOLEAN | Boolean |
//! | TINYINT, SMALLINT, INT, BIGINT | Int8, Int16, Int32, Int64 |
//! | FLOAT, DOUBLE | Float32, Float64 |
//! | DECIMAL(p, s) (default (10, 0)) | Decimal128(p, s) |
//! | DATE | Date32 |
//! | TIME(p) (default 0) | Time32(s/ms) or Time64(us/ns) by precision |
//! | TIMESTAMP(p) (default 6) | Timestamp(unit by precision, no zone) |
//! | TIMESTAMP_LTZ(p), TIMESTAMP(p) WITH LOCAL TIME ZONE | Timestamp(unit, "UTC") |
//! | BYTES, BINARY(n), VARBINARY(n) | Binary |
//! | ARRAY<T> | List<T> |
//! | MAP<K, V> | Map<K, V> |
//! | ROW<name T, ...> | Struct |

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::error::{Result, SqlError};

/// Time zone given to `TIMESTAMP_LTZ` columns.
pub const LTZ_TIME_ZONE: &str = "UTC";

/// A parsed type with its nullability (`NOT NULL`).
#[derive(Debug, Clone, PartialEq)]
pub struct SqlType {
    pub data_type: DataType,
    pub nullable: bool,
}

/// Parses a Flink type from the parser's current position. `pending_gt` handles `>>`, which the
/// tokenizer reads as a shift operator at the end of nested types.
pub struct TypeParser<'p, 'a> {
    parser: &'p mut Parser<'a>,
    pending_gt: usize,
}

pub(crate) fn err_at(tok: &TokenWithSpan, msg: impl Into<String>) -> SqlError {
    SqlError::new(msg, tok.span.start.line, tok.span.start.column)
}

impl<'p, 'a> TypeParser<'p, 'a> {
    pub fn new(parser: &'p mut Parser<'a>) -> Self {
        Self {
            parser,
            pending_gt: 0,
        }
    }

    pub fn parse(mut self) -> Result<SqlType> {
        let t = self.parse_type()?;
        if self.pending_gt > 0 {
            let tok = self.parser.peek_token();
            return Err(err_at(&tok, "unbalanced '>' in type"));
        }
        Ok(t)
    }

    fn parse_type(&mut self) -> Result<SqlType> {
        let tok = self.parser.next_token();
        let Token::Word(word) = &tok.token else {
            return Err(err_at(
                &tok,
                format!("expected a type name, found '{}'", tok.token),
            ));
        };
        let name = word.value.to_ascii_uppercase();
        let data_type = match name.as_str() {
            "STRING" | "TEXT" => DataType::Utf8,
            "VARCHAR" | "CHAR" | "CHARACTER" => {
                let _ = self.parser.parse_keyword(Keyword::VARYING);
                self.optional_precision()?;
                DataType::Utf8
            }
            "BOOLEAN" | "BOOL" => DataType::Boolean,
            "TINYINT" => DataType::Int8,
            "SMALLINT" => DataType::Int16,
            "INT" | "INTEGER" => DataType::Int32,
            "BIGINT" => DataType::Int64,
            "FLOAT" | "REAL" => DataType::Float32,
            "DOUBLE" => {
                let _ = self.parser.parse_keyword(Keyword::PRECISION);
                DataType::Float64
            }
            "DECIMAL" | "DEC" | "NUMERIC" => {
                let (p, s) = self.precision_scale()?;
                if !(1..=38).contains(&p) || s > p {
                    return Err(err_at(&tok, format!("DECIMAL({p}, {s}) is out of range: precision 1..38, scale 0..precision")));
                }
                DataType::Decimal128(p as u8, s as i8)
            }
            "DATE" => DataType::Date32,
            "TIME" => {
                let p = self.optional_precision()?.unwrap_or(0);
                self.without_time_zone();
                match p {
                    0 => DataType::Time32(TimeUnit::Second),
                    1..=3 => DataType::Time32(TimeUnit::Millisecond),
                    4..=6 => DataType::Time64(TimeUnit::Microsecond),
                    _ => DataType::Time64(TimeUnit::Nanosecond),
                }
            }
            "TIMESTAMP" => {
                let p = self.optional_precision()?.unwrap_or(6);
                let ltz = self.parser.parse_keywords(&[Keyword::WITH, Keyword::LOCAL, Keyword::TIME, Keyword::ZONE]);
                if !ltz {
                    self.without_time_zone();
                }
                timestamp_type(p, ltz)
            }
            "TIMESTAMP_LTZ" => {
                let p = self.optional_precision()?.unwrap_or(6);
                timestamp_type(p, true)
            }
            "BYTES" | "BINARY" | "VARBINARY" => {
                self.optional_precision()?;
                DataType::Binary
            }
            "ARRAY" => {
                self.expect_lt()?;
                let elem = self.parse_type()?;
                self.expect_gt()?;
                DataType::List(Arc::new(Field::new("item", elem.data_type, elem.nullable)))
            }
            "MAP" => {
                self.expect_lt()?;
                let key = self.parse_type()?;
                self.expect_comma()?;
                let value = self.parse_type()?;
                self.expect_gt()?;
                let entries = Fields::from(vec![
                    Field::new("key", key.data_type, false),
                    Field::new("value", value.data_type, value.nullable),
                ]);
                DataType::Map(Arc::new(Field::new("entries", DataType::Struct(entries), false)), false)
            }
            "ROW" => {
                let angle = if self.parser.consume_token(&Token::Lt) {
                    true
                } else {
                    self.parser.expect_token(&Token::LParen).map_err(|e| parser_err(&tok, e))?;
                    false
                };
                let mut fields = Vec::new();
                loop {
                    let name_tok = self.parser.peek_token();
                    let name = self.parser.parse_identifier().map_err(|e| parser_err(&name_tok, e))?;
                    let t = self.parse_type()?;
                    if self.parser.parse_keyword(Keyword::COMMENT) {
                        self.parser.parse_literal_string().map_err(|e| parser_err(&name_tok, e))?;
                    }
                    fields.push(Field::new(name.value, t.data_type, t.nullable));
                    if !self.parser.consume_token(&Token::Comma) {
                        break;
                    }
                }
                if angle {
                    self.expect_gt()?;
                } else {
                    let t = self.parser.peek_token();
                    self.parser.expect_token(&Token::RParen).map_err(|e| parser_err(&t, e))?;
                }
                DataType::Struct(Fields::from(fields))
            }
            other => {
                return Err(err_at(
                    &tok,
                    format!(
                        "unknown type '{other}'; supported: STRING, VARCHAR(n), CHAR(n), BOOLEAN, TINYINT, SMALLINT, \
                         INT, BIGINT, FLOAT, DOUBLE, DECIMAL(p, s), DATE, TIME(p), TIMESTAMP(p), TIMESTAMP_LTZ(p), \
                         BYTES, BINARY(n), VARBINARY(n), ARRAY<T>, MAP<K, V>, ROW<...>"
                    ),
                ))
            }
        };
        let nullable =
            if self.pending_gt == 0 && self.parser.parse_keywords(&[Keyword::NOT, Keyword::NULL]) {
                false
            } else {
                if self.pending_gt == 0 {
                    let _ = self.parser.parse_keyword(Keyword::NULL);
                }
                true
            };
        Ok(SqlType {
            data_type,
            nullable,
        })
    }

    fn without_time_zone(&mut self) {
        let _ = self
            .parser
            .parse_keywords(&[Keyword::WITHOUT, Keyword::TIME, Keyword::ZONE]);
    }

    fn optional_precision(&mut self) -> Result<Option<u64>> {
        if self.pending_gt > 0 || !self.parser.consume_token(&Token::LParen) {
            return Ok(None);
        }
        let tok = self.parser.peek_token();
        let p = self
            .parser
            .parse_literal_uint()
            .map_err(|e| parser_err(&tok, e))?;
        self.parser
            .expect_token(&Token::RParen)
            .map_err(|e| parser_err(&tok, e))?;
        Ok(Some(p))
    }

    fn precision_scale(&mut self) -> Result<(u64, u64)> {
        if self.pending_gt > 0 || !self.parser.consume_token(&Token::LParen) {
            return Ok((10, 0));
        }
        let tok = self.parser.peek_token();
        let p = self
            .parser
            .parse_literal_uint()
            .map_err(|e| parser_err(&tok, e))?;
        let s = if self.parser.consume_token(&Token::Comma) {
            self.parser
                .parse_literal_uint()
                .map_err(|e| parser_err(&tok, e))?
        } else {
            0
        };
        self.parser
            .expect_token(&Token::RParen)
            .map_err(|e| parser_err(&tok, e))?;
        Ok((p, s))
    }

    fn expect_lt(&mut self) -> Result<()> {
        let tok = self.parser.next_token();
        match tok.token {
            Token::Lt => Ok(()),
            _ => Err(err_at(&tok, format!("expected '<', found '{}'", tok.token))),
        }
    }

    fn expect_comma(&mut self) -> Result<()> {
        let tok = self.parser.next_token();
        match tok.token {
            Token::Comma => Ok(()),
            _ => Err(err_at(&tok, format!("expected ',', found '{}'", tok.token))),
        }
    }

    fn expect_gt(&mut self) -> Result<()> {
        if self.pending_gt > 0 {
            self.pending_gt -= 1;
            return Ok(());
        }
        let tok = self.parser.next_token();
        match tok.token {
            Token::Gt => Ok(()),
            Token::ShiftRight => {
                self.pending_gt += 1;
                Ok(())
            }
            _ => Err(err_at(&tok, format!("expected '>', found '{}'", tok.token))),
        }
    }
}

pub(crate) fn timestamp_type(precision: u64, ltz: bool) -> DataType {
    let unit = match precision {
        0 => TimeUnit::Second,
        1..=3 => TimeUnit::Millisecond,
        4..=6 => TimeUnit::Microsecond,
        _ => TimeUnit::Nanosecond,
    };
    DataType::Timestamp(unit, ltz.then(|| LTZ_TIME_ZONE.into()))
}

pub(crate) fn parser_err(
    at: &TokenWithSpan,
    e: datafusion::sql::sqlparser::parser::ParserError,
) -> SqlError {
    crate::script::parser_error(e, at)
}

/// Flink's name for an Arrow type, for error messages that speak the user's language.
pub fn flink_type_name(dt: &DataType) -> String {
    match dt {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "STRING".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p}, {s})"),
        DataType::Date32 => "DATE".into(),
        DataType::Time32(u) | DataType::Time64(u) => format!("TIME({})", unit_precision(u)),
        DataType::Timestamp(u, None) => format!("TIMESTAMP({})", unit_precision(u)),
        DataType::Timestamp(u, Some(_)) => format!("TIMESTAMP_LTZ({})", unit_precision(u)),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BYTES".into(),
        DataType::List(f) | DataType::LargeList(f) => {
            format!("ARRAY<{}>", flink_type_name(f.data_type()))
        }
        DataType::Map(f, _) => match f.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => {
                format!(
                    "MAP<{}, {}>",
                    flink_type_name(kv[0].data_type()),
                    flink_type_name(kv[1].data_type())
                )
            }
            other => format!("MAP<{other}>"),
        },
        DataType::Struct(fields) => {
            let inner: Vec<String> = fields
                .iter()
                .map(|f| format!("{} {}", f.name(), flink_type_name(f.data_type())))
                .collect();
            format!("ROW<{}>", inner.join(", "))
        }
        DataType::Null => "NULL".into(),
        other => other.to_string(),
    }
}

fn unit_precision(u: &TimeUnit) -> u8 {
    match u {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        TimeUnit::Microsecond => 6,
        TimeUnit::Nanosecond => 9,
    }
}
