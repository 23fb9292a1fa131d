//! Flink's built-in functions as Flink evaluates them (issue 19): every expression of
//! `tests/flink/functions/expected.tsv` (Flink 2.3's type and text for it, made by
//! `tests/flink/functions/generate.py`) is evaluated by Flowline as `CAST((e) AS STRING)` and
//! `TYPEOF(e)`, and the outcome of each is compared with the committed `outcomes.tsv`: any
//! change (a regression, or a fix) fails until the file is regenerated with
//! `FLOWLINE_BLESS=1 cargo test functions::`, which also rewrites `docs/functions.md`. So the
//! list of what matches, what differs and what is refused cannot drift from the code.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;

const EXPECTED: &str = include_str!("../flink/functions/expected.tsv");
const OUTCOMES: &str = "tests/flink/functions/outcomes.tsv";
const DOCS: &str = "docs/functions.md";
const VALUES: &str = "(VALUES (1, 'a', 1.5, TRUE, 'x'), (2, 'b', 2.5, FALSE, 'x'), \
    (2, CAST(NULL AS STRING), CAST(NULL AS DOUBLE), TRUE, 'y'), (4, 'c', 3.0, CAST(NULL AS BOOLEAN), 'y')) \
    AS t(i, s, d, b, g)";

#[derive(Debug, PartialEq)]
enum Outcome {
    /// Flink's text and type.
    Same,
    /// Flink's text, another type (Flowline's type given).
    OtherType(String),
    /// Another text (Flowline's given): the worst outcome.
    Differs(String),
    /// Flowline refuses it (its error given).
    Refused(String),
}

impl Outcome {
    fn label(&self) -> (&'static str, &str) {
        match self {
            Outcome::Same => ("same", ""),
            Outcome::OtherType(t) => ("other-type", t),
            Outcome::Differs(t) => ("differs", t),
            Outcome::Refused(e) => ("refused", e),
        }
    }
}

/// Flink's type without what Flowline does not track: nullability, and the length of
/// character strings (Flowline's strings are all STRING).
fn loose_type(t: &str) -> String {
    let t = t.replace(" NOT NULL", "");
    let mut out = String::new();
    let mut rest = t.as_str();
    while let Some(i) = rest.find("CHAR(") {
        let start = if rest[..i].ends_with("VAR") { i - 3 } else { i };
        out.push_str(&rest[..start]);
        let close = rest[i..].find(')').map_or(rest.len(), |j| i + j + 1);
        out.push_str("STRING");
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}

async fn evaluate(kind: &str, expr: &str) -> Result<(String, String), String> {
    let from = if kind == "aggregate" {
        format!(" FROM {VALUES}")
    } else {
        String::new()
    };
    let sql = format!("SELECT CAST(({expr}) AS STRING) AS v, TYPEOF({expr}) AS t{from}");
    let batches = crate::support::batch_select("", &sql)
        .await
        .map_err(|e| format!("{e:#}").lines().next().unwrap_or("").to_string())?;
    let b = batches.iter().find(|b| b.num_rows() > 0).ok_or("no row")?;
    let text = |i: usize| -> Result<String, String> {
        let c = cast(b.column(i), &DataType::Utf8).map_err(|e| e.to_string())?;
        let c = c.as_string::<i32>();
        Ok(if c.is_null(0) {
            "NULL".into()
        } else {
            c.value(0).to_string()
        })
    };
    Ok((text(0)?, text(1)?))
}

fn one_line(s: &str) -> String {
    s.replace(['\t', '\n'], " ")
}

#[test]
fn builtin_functions_match_flink() {
    let rt = crate::support::runtime();
    let mut lines = Vec::new();
    let (mut accepted, mut same, mut other_type, mut differs, mut refused) = (0, 0, 0, 0, 0);
    let mut docs_rows = Vec::new();
    for line in EXPECTED
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let mut f = line.splitn(4, '\t');
        let (kind, expr, ftype, ftext) = (
            f.next().unwrap(),
            f.next().unwrap(),
            f.next().unwrap(),
            f.next().unwrap_or(""),
        );
        if ftype == "ERROR" {
            continue; // Flink refuses it too
        }
        accepted += 1;
        let outcome = match rt.block_on(evaluate(kind, expr)) {
            Err(e) => Outcome::Refused(one_line(&e)),
            Ok((text, _)) if text != ftext => Outcome::Differs(one_line(&text)),
            Ok((_, t)) if loose_type(&t) != loose_type(ftype) => Outcome::OtherType(t),
            Ok(_) => Outcome::Same,
        };
        match outcome {
            Outcome::Same => same += 1,
            Outcome::OtherType(_) => other_type += 1,
            Outcome::Differs(_) => differs += 1,
            Outcome::Refused(_) => refused += 1,
        }
        let (label, detail) = outcome.label();
        lines.push(format!("{kind}\t{expr}\t{label}\t{detail}"));
        docs_rows.push(format!(
            "| `{}` | `{}` | {} |",
            expr.replace('|', "\\|"),
            ftext.replace('|', "\\|"),
            match &outcome {
                Outcome::Same => "same".to_string(),
                Outcome::OtherType(t) => format!("same text, type `{t}` (Flink: `{ftype}`)"),
                Outcome::Differs(t) => format!("**differs**: `{}`", t.replace('|', "\\|")),
                Outcome::Refused(_) => "refused (an error names it)".to_string(),
            }
        ));
    }
    let summary = format!(
        "{accepted} expressions Flink accepts: {same} same text and type, {other_type} same text of another type, {differs} different text, {refused} refused"
    );
    eprintln!("built-in functions: {summary}");
    let outcomes = format!(
        "# Flowline's outcome for each expression of expected.tsv that Flink accepts ({summary}).\n# Regenerate: FLOWLINE_BLESS=1 cargo test functions::\n{}\n",
        lines.join("\n")
    );
    let docs = format!(
        "# Built-in functions\n\n\
         Flowline evaluates Flink SQL's built-in functions (Flink's page \"System (Built-in) Functions\") as \
         Flink 2.3 does: the same value, of the same type, with the same text when cast to STRING. This \
         page is generated by `tests/it/functions.rs` from `tests/flink/functions/expected.tsv` (each \
         expression run on Flink 2.3 by `tests/flink/functions/generate.py`), so it cannot drift from the \
         code.\n\n**{summary}.**\n\n\
         Types are compared without nullability and with CHAR(n)/VARCHAR(n) as STRING (Flowline's \
         strings have no length). Expressions Flink refuses are not listed. An expression Flowline \
         refuses fails at planning time with an error that names the function; one marked \
         **differs** runs and gives another value: do not rely on it.\n\n\
         Known differences, none on purpose (each is a bug to fix, kept visible here): a TIMESTAMP \
         literal's precision is kept as 0, 3, 6 or 9 fraction digits (Arrow's units), so \
         `TIMESTAMP '2024-01-01 00:00:01.5'` prints `.500` (Flink: TIMESTAMP(1), `.5`); a \
         year-month interval has the type of a day-time one (its text is Flink's); a ROW's fields are named \
         `c0, c1, ...` (Flink: `EXPR$0, ...`); TYPEOF names no CHAR(n) except of a literal. JSON paths \
         (`JSON_VALUE`, `JSON_QUERY`, `JSON_EXISTS`) take `$`, `.key`, `['key']`, `[n]` and `[*]` \
         steps in lax mode, without filters, with Flink's default error behaviour (NULL, or FALSE for \
         `JSON_EXISTS`); `ON EMPTY`/`ON ERROR` clauses are refused.\n\n\
         | expression | Flink's text | Flowline |\n|---|---|---|\n{}\n",
        docs_rows.join("\n")
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if std::env::var_os("FLOWLINE_BLESS").is_some() {
        std::fs::write(root.join(OUTCOMES), &outcomes).unwrap();
        std::fs::write(root.join(DOCS), &docs).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(root.join(OUTCOMES)).unwrap_or_default();
    let committed_docs = std::fs::read_to_string(root.join(DOCS)).unwrap_or_default();
    if committed != outcomes || committed_docs != docs {
        let old: std::collections::HashSet<&str> = committed.lines().collect();
        let changed: Vec<&str> = outcomes.lines().filter(|l| !old.contains(l)).collect();
        panic!(
            "built-in function outcomes changed ({summary}); if intended, run FLOWLINE_BLESS=1 cargo test functions:: and commit {OUTCOMES} and {DOCS}. Changed lines:\n{}",
            changed.join("\n")
        );
    }
}

/// `INTERVAL ... * n`, which DataFusion does not multiply: Flink's values (checked by hand on
/// Flink 2.3 with PyFlink, 2026-12-07; the expressions are not in expected.tsv yet).
#[test]
fn intervals_multiply_as_in_flink() {
    let rt = crate::support::runtime();
    let cases = [
        (
            "TIMESTAMP '2024-01-01 00:00:00' + INTERVAL '1' DAY * 3",
            "2024-01-04 00:00:00",
        ),
        (
            "TIMESTAMP '2024-01-01 00:00:00' + 2 * INTERVAL '90' MINUTE",
            "2024-01-01 03:00:00",
        ),
        // A non-literal factor: a duration of n times the interval.
        (
            "TIMESTAMP '2024-01-01 00:00:00' + CAST(2 AS INT) * INTERVAL '30' SECOND",
            "2024-01-01 00:01:00",
        ),
        (
            "TIMESTAMP '2024-01-01 00:00:00' - INTERVAL 5 SECOND",
            "2023-12-31 23:59:55",
        ),
    ];
    for (expr, flink) in cases {
        let (text, _) = rt
            .block_on(evaluate("scalar", expr))
            .unwrap_or_else(|e| panic!("{expr}: {e}"));
        assert_eq!(text, flink, "{expr}");
    }
}
