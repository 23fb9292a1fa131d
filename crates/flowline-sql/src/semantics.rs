//! Flink's semantics where DataFusion's differ, as rewrites of the parsed SQL (run by
//! [`crate::script::normalize_query`] on every query, after the children of an expression):
//!
//! - literals: an integer literal that fits 32 bits is an INT; `1.0E20` a DOUBLE; `TIMESTAMP '...'`
//!   has the precision of its fraction; `TIME '...'` is TIME(0); interval ranges
//!   (`INTERVAL '2-3' YEAR TO MONTH`) are spans DataFusion reads;
//! - functions whose DataFusion namesake differs (`LOG(x)`, `REGEXP_REPLACE`, `SUBSTR`, ...),
//!   Flink's names for DataFusion's functions (`CEILING`, `SPLIT`, ...) and Flink's syntax
//!   (`MAP[...]`, `JSON_OBJECT(k VALUE v)`, `TIMESTAMPADD(DAY, ...)`, `FLOOR(t TO HOUR)`);
//! - syntax not supported yet, refused with an error that names it (`BETWEEN SYMMETRIC`, `IS JSON`).
//!
//! What needs the types of the operands (decimal division, STDDEV of integers) is done after
//! type coercion instead: `crate::functions::decimal`, `crate::functions::aggregate`.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    CastKind, DataType as SqlDataType, Expr, Ident, ObjectNamePart, Query, SetExpr, VisitorMut,
};
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::error::Result;
use crate::script::word_is;
use crate::types::err_at;

/// Flink syntax the SQL parser does not know, refused with an error that names it (the
/// parser's own would say only which token it expected).
pub(crate) fn refuse_unsupported_syntax(unit: &[TokenWithSpan]) -> Result<()> {
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
pub(crate) fn map_constructors(unit: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
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

/// A VALUES column mixing DECIMAL literals with DOUBLE values is a DOUBLE in Flink
/// (DataFusion's: a DECIMAL(38, 15)): `VALUES (1.5), (CAST(NULL AS DOUBLE))`.
pub(crate) struct ValuesTypes;

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
pub(crate) fn int_literal(expr: &mut Expr) {
    use datafusion::sql::sqlparser::ast::Value;
    // A script's query is normalised once per use; the second pass finds `1::INT` already.
    if let Some(inner) = typed_int(expr) {
        if typed_int(inner).is_some() {
            *expr = inner.clone();
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

/// The literal under an `x::INT` cast that [`int_literal`] added.
fn typed_int(expr: &Expr) -> Option<&Expr> {
    match expr {
        Expr::Cast {
            kind: CastKind::DoubleColon,
            expr: inner,
            data_type: SqlDataType::Int(None),
            ..
        } => Some(inner),
        _ => None,
    }
}

/// Where a number is a position or a count, not a value: `GROUP BY 1`, `ORDER BY 2`, `LIMIT 10`,
/// `OFFSET 5`, `ROWS 3 PRECEDING`. These keep the bare literal DataFusion's planner expects.
pub(crate) struct PositionalNumbers;

pub(crate) fn bare_number(expr: &mut Expr) {
    if let Some(inner @ Expr::Value(_)) = typed_int(expr) {
        *expr = inner.clone();
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

pub(crate) fn bare_frame(spec: &mut datafusion::sql::sqlparser::ast::WindowSpec) {
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
pub(crate) fn flink_semantics(expr: &mut Expr) {
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
    // An interval's amount (`INTERVAL 5 SECOND`) stays the literal DataFusion's planner reads.
    if let Expr::Interval(iv) = expr {
        bare_number(&mut iv.value);
    }
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
        // `INTERVAL '1' DAY * n` (either way round), which DataFusion does not multiply: a
        // literal n scales the interval; any other n makes a duration of n times its length.
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Multiply,
            right,
        } if matches!(**left, Expr::Interval(_)) || matches!(**right, Expr::Interval(_)) => {
            let ((Expr::Interval(iv), n) | (n, Expr::Interval(iv))) = (&**left, &**right) else {
                return;
            };
            if let Some(scaled) = scale_interval(iv, n) {
                *expr = scaled;
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
pub(crate) fn json_object(expr: &mut Expr) {
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
pub(crate) fn json_returning(expr: &mut Expr) {
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
pub(crate) fn interval_span(
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

/// `iv * n` for a single-unit day-time interval literal (`INTERVAL '5' MINUTE`): the interval
/// scaled when `n` is an integer literal, else `n` times the interval's length as a duration.
fn scale_interval(iv: &datafusion::sql::sqlparser::ast::Interval, n: &Expr) -> Option<Expr> {
    use datafusion::sql::sqlparser::ast::{DateTimeField as F, Value};
    if iv.last_field.is_some() {
        return None;
    }
    let nanos_per = match iv.leading_field.as_ref()? {
        F::Second => 1_000_000_000_i64,
        F::Minute => 60_000_000_000,
        F::Hour => 3_600_000_000_000,
        F::Day => 86_400_000_000_000,
        F::Week(_) => 7 * 86_400_000_000_000,
        _ => return None,
    };
    let Expr::Value(v) = iv.value.as_ref() else {
        return None;
    };
    let (Value::SingleQuotedString(text) | Value::Number(text, _)) = &v.value else {
        return None;
    };
    let count: i64 = text.trim().parse().ok()?;
    // An integer literal (typed INT: `3::INT`) scales the literal.
    let literal = match typed_int(n) {
        Some(Expr::Value(v)) => match &v.value {
            Value::Number(k, _) => k.parse::<i64>().ok(),
            _ => None,
        },
        _ => None,
    };
    if let Some(k) = literal {
        let mut scaled = iv.clone();
        scaled.value = Box::new(Expr::value(Value::SingleQuotedString(
            count.checked_mul(k)?.to_string(),
        )));
        return Some(Expr::Interval(scaled));
    }
    let length = count.checked_mul(nanos_per)?;
    let nanos = Expr::BinaryOp {
        left: Box::new(cast_to(n.clone(), SqlDataType::BigInt(None))),
        op: datafusion::sql::sqlparser::ast::BinaryOperator::Multiply,
        right: Box::new(Expr::value(Value::Number(length.to_string(), false))),
    };
    Some(call(
        "arrow_cast",
        vec![
            nanos,
            Expr::value(Value::SingleQuotedString("Duration(Nanosecond)".into())),
        ],
    ))
}

/// `CAST(e AS t)`.
pub(crate) fn cast_to(e: Expr, t: SqlDataType) -> Expr {
    Expr::Cast {
        kind: CastKind::Cast,
        expr: Box::new(e),
        data_type: t,
        array: false,
        format: None,
    }
}

/// A call `name(args)`.
pub(crate) fn call(name: &str, args: Vec<Expr>) -> Expr {
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
