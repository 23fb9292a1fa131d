//! `jdbc` sink: rows written to a PostgreSQL or MySQL/MariaDB table, with Flink's options.
//!
//! ```text
//! batch ─▶ text values per row ─▶ buffer ─(max rows | interval | checkpoint | end)─▶ one transaction:
//!            with a PRIMARY KEY: the last change per key wins;        DELETE ... WHERE key = ?
//!            +I/+U upsert, -D delete, -U ignored                       INSERT ... ON CONFLICT / ON DUPLICATE KEY UPDATE
//!            without: every row appended                               INSERT ... VALUES (?, ...), (?, ...)
//! ```
//!
//! Values are bound as parameters in their text form (the server parses them as the column's
//! type, as it would a literal), never spliced into the SQL; identifiers are quoted. With a
//! PRIMARY KEY the sink upserts, so rows replayed after a restart from a checkpoint rewrite the
//! same values: the table ends as if nothing had failed. Without one it appends (at least once:
//! a restart may write rows again), and an updating query is refused at planning time.
//!
//! The clients are async (tokio-postgres, mysql_async); the runtime calls sinks inside
//! `block_in_place`, so each call runs its future on the current runtime.

mod mysql;
mod postgres;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use flowline_common::changelog::{row_kinds, RowKind};
use flowline_common::{OptionSpec, Options};
use flowline_sql::TableDef;

use crate::{ConnectorError, Result, Sink, TaskContext};

pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec::required("connector", "jdbc"),
    OptionSpec::required(
        "url",
        "jdbc:postgresql://host[:port]/database or jdbc:mysql://host[:port]/database (also jdbc:mariadb://)",
    ),
    OptionSpec::required("table-name", "the table to write (schema.table allowed); it must exist"),
    OptionSpec::optional("username", "user name (or user= in the URL)"),
    OptionSpec::optional("password", "password (or password= in the URL)"),
    OptionSpec::optional("driver", "accepted; the driver follows from the URL"),
    OptionSpec::optional("sink.buffer-flush.max-rows", "rows buffered before a write (default 100; 0: no limit)"),
    OptionSpec::optional("sink.buffer-flush.interval", "longest time rows stay buffered (default 1 s; 0: only by rows and checkpoints)"),
    OptionSpec::optional("sink.max-retries", "times a failed write is retried, reconnecting (default 3)"),
    OptionSpec::optional("sink.parallelism", "accepted; the job's parallelism is used"),
    OptionSpec::optional("connection.max-retry-timeout", "how long to keep trying to connect (default 60 s)"),
];

/// Which database a URL names, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub kind: Kind,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: Option<String>,
    pub password: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Postgres,
    MySql,
}

/// Parses `jdbc:postgresql://host[:port]/db[?user=..&password=..]` (and mysql, mariadb).
pub(crate) fn parse_url(url: &str) -> std::result::Result<Target, String> {
    let bad = |why: &str| {
        format!("'url' = '{url}': {why}; expected jdbc:postgresql://host[:port]/database or jdbc:mysql://host[:port]/database")
    };
    let rest = url
        .strip_prefix("jdbc:")
        .ok_or_else(|| bad("not a JDBC URL"))?;
    let (kind, rest, default_port) = if let Some(r) = rest.strip_prefix("postgresql://") {
        (Kind::Postgres, r, 5432)
    } else if let Some(r) = rest
        .strip_prefix("mysql://")
        .or_else(|| rest.strip_prefix("mariadb://"))
    {
        (Kind::MySql, r, 3306)
    } else {
        return Err(bad(
            "unsupported database (PostgreSQL, MySQL and MariaDB are)",
        ));
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, database) = path.split_once('/').ok_or_else(|| bad("no database"))?;
    if database.is_empty() || database.contains('/') {
        return Err(bad("no database"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| bad(&format!("port '{p}' is not a number")))?,
        ),
        None => (authority, default_port),
    };
    if host.is_empty() || host.contains(',') {
        return Err(bad("one host is needed"));
    }
    let mut target = Target {
        kind,
        host: host.to_string(),
        port,
        database: database.to_string(),
        user: None,
        password: None,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "user" => target.user = Some(v.to_string()),
            "password" => target.password = Some(v.to_string()),
            _ => {} // driver properties we have no use for (ssl modes are refused below)
        }
        if (k == "sslmode" && v != "disable") || (k == "useSSL" && v == "true") {
            return Err(bad("TLS connections are not supported yet"));
        }
    }
    Ok(target)
}

/// Planning-time checks: the URL, and numeric options.
pub fn validate(table: &TableDef, o: &Options) -> Result<()> {
    let cfg = |m: String| ConnectorError::config(&table.name, m);
    parse_url(o.get("url").unwrap_or_default()).map_err(cfg)?;
    for key in ["sink.buffer-flush.max-rows", "sink.max-retries"] {
        if let Some(v) = o.get(key) {
            v.parse::<u64>()
                .map_err(|_| cfg(format!("'{key}' = '{v}' is not a non-negative number")))?;
        }
    }
    for key in ["sink.buffer-flush.interval", "connection.max-retry-timeout"] {
        if let Some(v) = o.get(key) {
            flowline_common::options::parse_duration(v)
                .map_err(|e| cfg(format!("'{key}' = '{v}': {e}")))?;
        }
    }
    if table
        .columns
        .iter()
        .any(|c| !matches!(c.kind, flowline_sql::ColumnKind::Physical { .. }))
    {
        return Err(cfg(
            "a jdbc table has only physical columns (no computed or METADATA columns)".into(),
        ));
    }
    Ok(())
}

/// A jdbc sink takes updates (upserts and deletes) when its table has a PRIMARY KEY.
pub fn accepts_updates(table: &TableDef, _: &Options) -> bool {
    !table.primary_key.is_empty()
}

pub fn create_sink(table: &TableDef, o: &Options, ctx: &TaskContext) -> Result<Box<dyn Sink>> {
    let cfg = |m: String| ConnectorError::config(&table.name, m);
    let mut target = parse_url(o.get("url").unwrap_or_default()).map_err(cfg)?;
    if let Some(u) = o.get("username") {
        target.user = Some(u.to_string());
    }
    if let Some(p) = o.get("password") {
        target.password = Some(p.to_string());
    }
    let number = |key: &str, default: u64| -> Result<u64> {
        o.get(key).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| cfg(format!("'{key}' = '{v}' is not a non-negative number")))
        })
    };
    let duration = |key: &str, default: Duration| -> Result<Duration> {
        o.get(key).map_or(Ok(default), |v| {
            flowline_common::options::parse_duration(v).map_err(|e| cfg(format!("'{key}': {e}")))
        })
    };
    let columns: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
    let key: Vec<usize> = table
        .primary_key
        .iter()
        .map(|k| {
            columns
                .iter()
                .position(|c| c.eq_ignore_ascii_case(k))
                .ok_or_else(|| cfg(format!("PRIMARY KEY column '{k}' is not a column")))
        })
        .collect::<Result<_>>()?;
    let statements = Statements {
        kind: target.kind,
        table: table_name(target.kind, o.get("table-name").unwrap_or_default()),
        columns: columns.iter().map(|c| quote(target.kind, c)).collect(),
        key,
    };
    Ok(Box::new(JdbcSink {
        name: table.name.clone(),
        target,
        statements,
        conn: None,
        buffer: Buffer::default(),
        max_rows: number("sink.buffer-flush.max-rows", 100)? as usize,
        interval: duration("sink.buffer-flush.interval", Duration::from_secs(1))?,
        retries: number("sink.max-retries", 3)? as u32,
        connect_timeout: duration("connection.max-retry-timeout", Duration::from_secs(60))?,
        last_flush: Instant::now(),
        written: ctx.counter(
            "flowline_jdbc_rows_written_total",
            "Rows (upserts, inserts and deletes) a jdbc sink applied",
        ),
    }))
}

/// An identifier quoted for `kind` (a quote inside it doubled).
pub(crate) fn quote(kind: Kind, ident: &str) -> String {
    match kind {
        Kind::Postgres => format!("\"{}\"", ident.replace('"', "\"\"")),
        Kind::MySql => format!("`{}`", ident.replace('`', "``")),
    }
}

/// `schema.table` quoted part by part.
fn table_name(kind: Kind, name: &str) -> String {
    name.split('.')
        .map(|p| quote(kind, p))
        .collect::<Vec<_>>()
        .join(".")
}

/// The SQL of one table, with quoted identifiers.
pub(crate) struct Statements {
    pub kind: Kind,
    pub table: String,
    pub columns: Vec<String>,
    /// PRIMARY KEY columns (indices into `columns`); empty: append only.
    pub key: Vec<usize>,
}

impl Statements {
    /// The i-th placeholder (1-based for PostgreSQL's `$n`).
    fn placeholder(&self, i: usize) -> String {
        match self.kind {
            Kind::Postgres => format!("${}", i + 1),
            Kind::MySql => "?".to_string(),
        }
    }

    /// `INSERT` of `rows` rows, an upsert on the key when there is one.
    pub fn insert(&self, rows: usize) -> String {
        let n = self.columns.len();
        let values: Vec<String> = (0..rows)
            .map(|r| {
                let ps: Vec<String> = (0..n).map(|c| self.placeholder(r * n + c)).collect();
                format!("({})", ps.join(", "))
            })
            .collect();
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES {}",
            self.table,
            self.columns.join(", "),
            values.join(", ")
        );
        if self.key.is_empty() {
            return sql;
        }
        let rest: Vec<&String> = (0..n)
            .filter(|c| !self.key.contains(c))
            .map(|c| &self.columns[c])
            .collect();
        match self.kind {
            Kind::Postgres => {
                let key: Vec<&str> = self.key.iter().map(|k| self.columns[*k].as_str()).collect();
                if rest.is_empty() {
                    sql += &format!(" ON CONFLICT ({}) DO NOTHING", key.join(", "));
                } else {
                    let set: Vec<String> =
                        rest.iter().map(|c| format!("{c} = EXCLUDED.{c}")).collect();
                    sql += &format!(
                        " ON CONFLICT ({}) DO UPDATE SET {}",
                        key.join(", "),
                        set.join(", ")
                    );
                }
            }
            Kind::MySql => {
                // With only key columns, "update" the key to itself: a duplicate is a no-op.
                let set: Vec<String> = if rest.is_empty() {
                    let k = &self.columns[self.key[0]];
                    vec![format!("{k} = {k}")]
                } else {
                    rest.iter().map(|c| format!("{c} = VALUES({c})")).collect()
                };
                sql += &format!(" ON DUPLICATE KEY UPDATE {}", set.join(", "));
            }
        }
        sql
    }

    /// `DELETE` of one row by its key.
    pub fn delete(&self) -> String {
        let cond: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{} = {}", self.columns[*k], self.placeholder(i)))
            .collect();
        format!("DELETE FROM {} WHERE {}", self.table, cond.join(" AND "))
    }

    /// Rows per INSERT: both protocols allow at most 65535 parameters in a statement.
    pub fn rows_per_insert(&self) -> usize {
        (65_535 / self.columns.len().max(1)).clamp(1, 1000)
    }
}

/// A row's values in their text form (`None`: NULL); bytes as they are.
pub(crate) type Row = Vec<Option<Value>>;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Value {
    Text(String),
    Bytes(Vec<u8>),
}

/// What waits to be written.
#[derive(Default)]
struct Buffer {
    /// Upsert mode: the last change per key (`None`: delete).
    by_key: HashMap<Row, Option<Row>>,
    /// Append mode: rows in order.
    rows: Vec<Row>,
}

impl Buffer {
    fn len(&self) -> usize {
        self.by_key.len() + self.rows.len()
    }
}

/// An open connection.
enum Connection {
    Postgres(postgres::Pg),
    MySql(mysql::My),
}

struct JdbcSink {
    name: String,
    target: Target,
    statements: Statements,
    conn: Option<Connection>,
    buffer: Buffer,
    max_rows: usize,
    interval: Duration,
    retries: u32,
    connect_timeout: Duration,
    last_flush: Instant,
    written: flowline_common::metrics::Counter,
}

impl JdbcSink {
    /// The database failed us (after the retries): outside Flowline; worth a retry when it
    /// could not even be reached.
    fn error(&self, what: String, unreachable: bool) -> ConnectorError {
        let t = &self.target;
        ConnectorError::external(
            &self.name,
            format!(
                "jdbc {}:{}/{} table {}: {what}",
                t.host, t.port, t.database, self.statements.table
            ),
            unreachable,
        )
    }

    /// Connects, retrying until `connection.max-retry-timeout`.
    async fn connect(&self) -> std::result::Result<Connection, String> {
        let deadline = Instant::now() + self.connect_timeout;
        let mut wait = Duration::from_millis(100);
        loop {
            let attempt = match self.target.kind {
                Kind::Postgres => postgres::Pg::connect(&self.target)
                    .await
                    .map(Connection::Postgres),
                Kind::MySql => mysql::My::connect(&self.target)
                    .await
                    .map(Connection::MySql),
            };
            match attempt {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() + wait > deadline => {
                    return Err(format!("cannot connect: {e}"))
                }
                Err(_) => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Writes the buffer in one transaction, retrying (on a new connection) up to
    /// `sink.max-retries` times.
    fn flush(&mut self) -> Result<()> {
        self.last_flush = Instant::now();
        if self.buffer.len() == 0 {
            return Ok(());
        }
        let buffer = std::mem::take(&mut self.buffer);
        let mut upserts: Vec<&Row> = buffer.rows.iter().collect();
        let mut deletes: Vec<&Row> = Vec::new();
        for (key, change) in &buffer.by_key {
            match change {
                Some(row) => upserts.push(row),
                None => deletes.push(key),
            }
        }
        let handle = tokio::runtime::Handle::current();
        let mut attempt = 0;
        loop {
            let result = handle.block_on(async {
                if self.conn.is_none() {
                    self.conn = Some(self.connect().await?);
                }
                let s = &self.statements;
                match self.conn.as_mut().expect("connected") {
                    Connection::Postgres(c) => c.apply(s, &upserts, &deletes).await,
                    Connection::MySql(c) => c.apply(s, &upserts, &deletes).await,
                }
            });
            match result {
                Ok(()) => break,
                Err(e) if attempt >= self.retries => {
                    let unreachable = e.starts_with("cannot connect");
                    return Err(self.error(
                        format!(
                            "writing {} rows failed after {} attempts: {e}",
                            upserts.len() + deletes.len(),
                            attempt + 1
                        ),
                        unreachable,
                    ));
                }
                Err(_) => {
                    attempt += 1;
                    self.conn = None;
                    std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
                }
            }
        }
        self.written.add((upserts.len() + deletes.len()) as u64);
        Ok(())
    }
}

/// The text (or bytes) of each value of `array`, per row.
fn column_values(array: &dyn Array, kind: Kind, table: &str) -> Result<Vec<Option<Value>>> {
    let n = array.len();
    match array.data_type() {
        DataType::Boolean => {
            let b = array.as_boolean();
            // MySQL's BOOLEAN is TINYINT(1): it parses 1 and 0, not true and false.
            let (t, f) = match kind {
                Kind::Postgres => ("true", "false"),
                Kind::MySql => ("1", "0"),
            };
            Ok(b.iter()
                .map(|v| v.map(|v| Value::Text(if v { t } else { f }.to_string())))
                .collect())
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            let bytes = arrow::compute::cast(array, &DataType::LargeBinary)?;
            let bytes = bytes.as_binary::<i64>();
            Ok(bytes
                .iter()
                .map(|v| {
                    v.map(|v| match kind {
                        // bytea's text form.
                        Kind::Postgres => {
                            const HEX: &[u8; 16] = b"0123456789abcdef";
                            let mut s = String::with_capacity(2 + v.len() * 2);
                            s.push_str("\\x");
                            for b in v {
                                s.push(HEX[(b >> 4) as usize] as char);
                                s.push(HEX[(b & 15) as usize] as char);
                            }
                            Value::Text(s)
                        }
                        Kind::MySql => Value::Bytes(v.to_vec()),
                    })
                })
                .collect())
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::Map(_, _) | DataType::Struct(_) => {
            Err(ConnectorError::config(
                table,
                format!(
                    "a jdbc sink cannot write {} values (ARRAY, MAP and ROW columns are not supported)",
                    array.data_type()
                ),
            ))
        }
        _ => {
            let options = FormatOptions::default().with_null("");
            let f = ArrayFormatter::try_new(array, &options)?;
            Ok((0..n)
                .map(|i| (!array.is_null(i)).then(|| Value::Text(f.value(i).to_string())))
                .collect())
        }
    }
}

impl Sink for JdbcSink {
    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let kinds = row_kinds(&batch).cloned();
        let width = self.statements.columns.len();
        let columns = batch.columns()[..width]
            .iter()
            .map(|c| column_values(c.as_ref(), self.target.kind, &self.name))
            .collect::<Result<Vec<_>>>()?;
        let upsert = !self.statements.key.is_empty();
        for i in 0..batch.num_rows() {
            let kind = kinds
                .as_ref()
                .and_then(|k| RowKind::from_i8(k.value(i)))
                .unwrap_or(RowKind::Insert);
            if !upsert {
                self.buffer
                    .rows
                    .push(columns.iter().map(|c| c[i].clone()).collect());
                continue;
            }
            let key: Row = self
                .statements
                .key
                .iter()
                .map(|k| columns[*k][i].clone())
                .collect();
            match kind {
                RowKind::Insert | RowKind::UpdateAfter => {
                    let row = columns.iter().map(|c| c[i].clone()).collect();
                    self.buffer.by_key.insert(key, Some(row));
                }
                RowKind::Delete => {
                    self.buffer.by_key.insert(key, None);
                }
                // An upsert needs no retraction: the +U that follows replaces the row.
                RowKind::UpdateBefore => {}
            }
        }
        if self.max_rows > 0 && self.buffer.len() >= self.max_rows {
            self.flush()?;
        }
        Ok(())
    }

    fn timer_interval(&self) -> Option<Duration> {
        (!self.interval.is_zero()).then_some(self.interval)
    }

    fn on_timer(&mut self) -> Result<()> {
        if self.last_flush.elapsed() >= self.interval {
            self.flush()?;
        }
        Ok(())
    }

    /// Everything written before the barrier is in the table before the checkpoint completes,
    /// so a restore never skips rows.
    fn pre_commit(&mut self, _id: u64) -> Result<Vec<u8>> {
        self.flush()?;
        Ok(Vec::new())
    }

    fn finish(&mut self) -> Result<()> {
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("jdbc:postgresql://db.local:5433/shop?user=u&password=p%20").unwrap();
        assert_eq!(
            (t.kind, t.host.as_str(), t.port, t.database.as_str()),
            (Kind::Postgres, "db.local", 5433, "shop")
        );
        assert_eq!(
            (t.user.as_deref(), t.password.as_deref()),
            (Some("u"), Some("p%20"))
        );
        let t = parse_url("jdbc:mariadb://127.0.0.1/shop").unwrap();
        assert_eq!((t.kind, t.port), (Kind::MySql, 3306));
        assert!(parse_url("jdbc:oracle:thin:@x:1521:db")
            .unwrap_err()
            .contains("unsupported database"));
        assert!(parse_url("jdbc:mysql://h:port/db")
            .unwrap_err()
            .contains("not a number"));
        assert!(parse_url("jdbc:mysql://h:3306")
            .unwrap_err()
            .contains("no database"));
        assert!(parse_url("jdbc:postgresql://h/db?sslmode=require")
            .unwrap_err()
            .contains("TLS"));
    }

    #[test]
    fn statements_quote_identifiers_and_upsert_on_the_key() {
        let s = Statements {
            kind: Kind::Postgres,
            table: table_name(Kind::Postgres, "public.or\"ders"),
            columns: ["id", "total"]
                .iter()
                .map(|c| quote(Kind::Postgres, c))
                .collect(),
            key: vec![0],
        };
        assert_eq!(
            s.insert(2),
            "INSERT INTO \"public\".\"or\"\"ders\" (\"id\", \"total\") VALUES ($1, $2), ($3, $4) \
             ON CONFLICT (\"id\") DO UPDATE SET \"total\" = EXCLUDED.\"total\""
        );
        assert_eq!(
            s.delete(),
            "DELETE FROM \"public\".\"or\"\"ders\" WHERE \"id\" = $1"
        );
        let m = Statements {
            kind: Kind::MySql,
            table: table_name(Kind::MySql, "t`x"),
            columns: ["k", "v"].iter().map(|c| quote(Kind::MySql, c)).collect(),
            key: vec![0],
        };
        assert_eq!(
            m.insert(1),
            "INSERT INTO `t``x` (`k`, `v`) VALUES (?, ?) ON DUPLICATE KEY UPDATE `v` = VALUES(`v`)"
        );
        let append = Statements { key: vec![], ..m };
        assert_eq!(
            append.insert(1),
            "INSERT INTO `t``x` (`k`, `v`) VALUES (?, ?)"
        );
    }
}
