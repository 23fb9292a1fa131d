//! The explicit list of connectors and option validation.

use flowline_common::{OptionSpec, Options};
use flowline_formats::{format_option_specs, FORMATS, RECORD_FORMATS};
use flowline_sql::TableDef;

use crate::{
    blackhole, datagen, filesystem, http, jdbc, kafka, nexmark, print, ConnectorError, Result,
    Sink, Source, TaskContext,
};

/// Builds one subtask's source. `projection` lists the physical columns (by index) the job
/// reads; the source returns exactly those, in that order.
pub type SourceFn =
    fn(&TableDef, &Options, &TaskContext, Option<&[usize]>) -> Result<Box<dyn Source>>;
pub type SinkFn = fn(&TableDef, &Options, &TaskContext) -> Result<Box<dyn Sink>>;

/// Where a connector names its formats, and which it can use.
pub struct FormatOptions {
    /// Option keys naming a format; the first (`format`) is required unless another is set.
    pub keys: &'static [&'static str],
    pub valid: &'static [&'static str],
    /// The format used when no key names one; `None` makes the first key required.
    pub default: Option<&'static str>,
}

pub struct ConnectorFactory {
    pub name: &'static str,
    pub doc: &'static str,
    pub options: &'static [OptionSpec],
    /// The options that name formats (`format`, or Kafka's `value.format` and `key.format`);
    /// each named format's `<format>.*` options are accepted too.
    pub formats: Option<FormatOptions>,
    pub source: Option<SourceFn>,
    pub sink: Option<SinkFn>,
    /// Checks beyond option keys (values, schema), run at planning time.
    pub validate: fn(&TableDef, &Options) -> Result<()>,
    /// `Some(how to bound it)` when a source with these options never ends.
    pub unbounded_hint: fn(&Options) -> Option<&'static str>,
    /// Keys of `METADATA [FROM 'key']` columns the source fills (after the physical columns).
    pub metadata_keys: &'static [&'static str],
    /// Keys of persisted METADATA columns the sink writes (the sink receives them after the
    /// physical columns); INSERT INTO a table with another persisted metadata column is refused.
    pub writable_metadata_keys: &'static [&'static str],
    /// Whether the sink, with these options, takes an updating stream (rows with a change
    /// kind, `flowline_common::changelog`); an append-only sink is refused one at planning time.
    pub accepts_updates: fn(&TableDef, &Options) -> bool,
    /// The source reads upserts keyed by the PRIMARY KEY (rows with a change kind `+U` or `-D`);
    /// the planner turns them into a changelog.
    pub upsert_source: bool,
    /// Whether the source, with these options, reads a changelog (a changelog format such as
    /// `debezium-json`): its rows carry a change kind, so the scan is an updating stream.
    pub changelog_source: fn(&TableDef, &Options) -> bool,
}

fn appends(_: &TableDef, _: &Options) -> bool {
    false
}

fn updates(_: &TableDef, _: &Options) -> bool {
    true
}

/// A table whose (value) format is a changelog format: it reads and writes updating streams.
pub fn changelog_format(_: &TableDef, o: &Options) -> bool {
    ["format", "value.format"].iter().any(|k| {
        o.get(k)
            .is_some_and(flowline_formats::ChangelogFormat::is_changelog)
    })
}

fn bounded(_: &Options) -> Option<&'static str> {
    None
}

fn no_checks(_: &TableDef, _: &Options) -> Result<()> {
    Ok(())
}

/// Every connector, by name. Add new connectors here.
pub static CONNECTORS: &[ConnectorFactory] = &[
    ConnectorFactory {
        name: "blackhole",
        doc: "discards all rows",
        options: blackhole::OPTIONS,
        formats: None,
        source: None,
        sink: Some(|_, _, _| Ok(Box::new(blackhole::BlackholeSink))),
        validate: no_checks,
        unbounded_hint: bounded,
        metadata_keys: &[],
        writable_metadata_keys: &[],
        accepts_updates: updates,
        upsert_source: false,
        changelog_source: appends,
    },
    ConnectorFactory {
        name: "datagen",
        doc: "generates random or sequential rows",
        options: datagen::OPTIONS,
        formats: None,
        source: Some(datagen::create_source),
        sink: None,
        validate: datagen::validate,
        unbounded_hint: |o| {
            let seq = o.map().iter().any(|(k, v)| k.ends_with(".kind") && v == "sequence");
            (o.get("number-of-rows").is_none() && !seq).then_some("set 'number-of-rows' or a sequence field")
        },
        metadata_keys: &[],
        writable_metadata_keys: &[],
        accepts_updates: appends,
        upsert_source: false,
        changelog_source: appends,
    },
    ConnectorFactory {
        name: "filesystem",
        doc: "reads and writes files (json, csv, parquet, debezium-json, canal-json, maxwell-json) in a directory",
        options: filesystem::OPTIONS,
        formats: Some(FormatOptions { keys: &["format"], valid: FORMATS, default: None }),
        source: Some(filesystem::create_source),
        sink: Some(filesystem::create_sink),
        validate: filesystem::validate,
        unbounded_hint: bounded,
        metadata_keys: &[],
        writable_metadata_keys: &[],
        accepts_updates: changelog_format,
        upsert_source: false,
        changelog_source: changelog_format,
    },
    ConnectorFactory {
        name: "http",
        doc: "rows posted to POST /v1/ingest/{table} (flowline run --http ADDR), durable in a write-ahead log before acknowledged",
        options: http::OPTIONS,
        formats: Some(FormatOptions { keys: &["format"], valid: FORMATS, default: Some("json") }),
        source: Some(http::create_source),
        sink: None,
        validate: http::validate,
        unbounded_hint: |_| Some("HTTP ingest never ends; read the table in a streaming job"),
        metadata_keys: &[],
        writable_metadata_keys: &[],
        accepts_updates: appends,
        upsert_source: false,
        changelog_source: changelog_format,
    },
    ConnectorFactory {
        name: "jdbc",
        doc: "a PostgreSQL or MySQL/MariaDB table: upserts on its PRIMARY KEY (appends without one)",
        options: jdbc::OPTIONS,
        formats: None,
        source: None,
        sink: Some(jdbc::create_sink),
        validate: jdbc::validate,
        unbounded_hint: bounded,
        metadata_keys: &[],
        writable_metadata_keys: &[],
        accepts_updates: jdbc::accepts_updates,
        upsert_source: false,
        changelog_source: appends,
    },
    ConnectorFactory {
        name: "kafka",
        doc: "reads and writes Kafka topics (json, csv, raw, debezium-json, canal-json, maxwell-json); offsets are part of checkpoints",
        options: kafka::OPTIONS,
        formats: Some(FormatOptions { keys: &["format", "value.format", "key.format"], valid: RECORD_FORMATS, default: None }),
        source: Some(kafka::create_source),
        sink: Some(kafka::create_sink),
        validate: kafka::validate,
        unbounded_hint: |o| {
            (o.get("scan.bounded.mode").unwrap_or("unbounded") == "unbounded").then_some("set 'scan.bounded.mode' (e.g. 'latest-offset')")
        },
        metadata_keys: kafka::METADATA_KEYS,
        writable_metadata_keys: kafka::WRITABLE_METADATA_KEYS,
        accepts_updates: changelog_format,
        upsert_source: false,
        changelog_source: changelog_format,
    },
    ConnectorFactory {
        name: "nexmark",
        doc: "the Nexmark benchmark's event generator (persons, auctions, bids)",
        options: nexmark::OPTIONS,
        formats: None,
        source: Some(nexmark::create_source),
        sink: None,
        validate: nexmark::validate,
        unbounded_hint: |o| o.get("events.num").filter(|n| n.trim() != "0").is_none().then_some("set 'events.num'"),
        metadata_keys: &[],
        writable_metadata_keys: &[],
        accepts_updates: appends,
        upsert_source: false,
        changelog_source: appends,
    },
    ConnectorFactory {
        name: "print",
        doc: "prints rows to stdout as +I[...] (-U, +U, -D for updates)",
        options: print::OPTIONS,
        formats: None,
        source: None,
        sink: Some(|_, o, ctx| Ok(Box::new(print::PrintSink::new(o, ctx)?))),
        validate: no_checks,
        unbounded_hint: bounded,
        metadata_keys: &[],
        writable_metadata_keys: &[],
        accepts_updates: updates,
        upsert_source: false,
        changelog_source: appends,
    },
    ConnectorFactory {
        name: "upsert-kafka",
        doc: "a Kafka topic as a table keyed by its PRIMARY KEY: upserts, and tombstones for deletes",
        options: kafka::UPSERT_OPTIONS,
        formats: Some(FormatOptions { keys: &["value.format", "key.format"], valid: RECORD_FORMATS, default: None }),
        source: Some(kafka::create_upsert_source),
        sink: Some(kafka::create_upsert_sink),
        validate: kafka::validate_upsert,
        unbounded_hint: |o| {
            (o.get("scan.bounded.mode").unwrap_or("unbounded") == "unbounded").then_some("set 'scan.bounded.mode' (e.g. 'latest-offset')")
        },
        metadata_keys: &[],
        writable_metadata_keys: &[],
        accepts_updates: updates,
        upsert_source: true,
        changelog_source: appends,
    },
];

/// Looks up a table's connector and validates its options (keys, required keys, format).
pub fn connector(table: &TableDef) -> Result<(&'static ConnectorFactory, Options)> {
    let names = || {
        CONNECTORS
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(name) = table.connector() else {
        return Err(ConnectorError::config(
            &table.name,
            format!("missing option 'connector'; valid connectors: {}", names()),
        ));
    };
    let Some(factory) = CONNECTORS.iter().find(|c| c.name == name) else {
        return Err(ConnectorError::config(
            &table.name,
            format!("unknown connector '{name}'; valid connectors: {}", names()),
        ));
    };
    let options = Options::new(format!("connector '{name}'"), table.options.clone());
    let mut specs: Vec<OptionSpec> = factory.options.to_vec();
    if let Some(f) = &factory.formats {
        let valid = f.valid.join(", ");
        if let Some(default) = f
            .default
            .filter(|_| f.keys.iter().all(|k| options.get(k).is_none()))
        {
            specs.extend_from_slice(format_option_specs(default));
        } else if !f.keys.iter().any(|k| options.get(k).is_some()) {
            return Err(ConnectorError::config(
                &table.name,
                format!(
                    "connector '{name}' requires option '{}'; valid formats: {valid}",
                    f.keys[0]
                ),
            ));
        }
        for format in f.keys.iter().filter_map(|k| options.get(k)) {
            if !f.valid.contains(&format) {
                return Err(ConnectorError::config(
                    &table.name,
                    format!("unknown format '{format}'; valid formats: {valid}"),
                ));
            }
            specs.extend_from_slice(format_option_specs(format));
        }
    }
    // Flink's `value.<format>.<option>` and `key.<format>.<option>` are checked as the
    // format's own `<format>.<option>`.
    let mut checked = options.map().clone();
    for key in ["value.format", "key.format"] {
        let Some(format) = options.get(key) else {
            continue;
        };
        let prefix = format!("{}{format}.", key.strip_suffix("format").unwrap_or(""));
        for (k, v) in options.map() {
            if let Some(rest) = k.strip_prefix(&prefix) {
                checked.remove(k);
                checked.insert(format!("{format}.{rest}"), v.clone());
            }
        }
    }
    Options::new(options.owner(), checked)
        .validate(&specs)
        .map_err(|source| ConnectorError::Option {
            table: table.name.clone(),
            source,
        })?;
    (factory.validate)(table, &options)?;
    Ok((factory, options))
}

/// Shorthand used by connectors to turn option errors into connector errors.
pub(crate) fn opt<T>(
    table: &TableDef,
    r: std::result::Result<T, flowline_common::OptionError>,
) -> Result<T> {
    r.map_err(|source| ConnectorError::Option {
        table: table.name.clone(),
        source,
    })
}
