//! `print`: writes rows to stdout (or stderr) as Flink does: `[identifier:][subtask>] +I[...]`.

use std::io::Write;

use arrow::record_batch::RecordBatch;
use flowline_common::{OptionSpec, Options};
use flowline_formats::text::flink_rows;

use crate::{ConnectorError, Result, Sink, TaskContext};

pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec::required("connector", "print"),
    OptionSpec::optional("print-identifier", "prefix of every printed row"),
    OptionSpec::optional(
        "standard-error",
        "print to stderr instead of stdout (default false)",
    ),
    OptionSpec::optional(
        "sink.parallelism",
        "accepted for Flink compatibility; the job parallelism applies",
    ),
];

pub struct PrintSink {
    prefix: String,
    stderr: bool,
}

impl PrintSink {
    pub fn new(options: &Options, ctx: &TaskContext) -> Result<Self> {
        let stderr =
            options
                .bool("standard-error", false)
                .map_err(|source| ConnectorError::Option {
                    table: ctx.table.clone(),
                    source,
                })?;
        let id = options.get("print-identifier");
        let prefix = match (id, ctx.parallelism > 1) {
            (Some(id), true) => format!("{id}:{}> ", ctx.subtask + 1),
            (Some(id), false) => format!("{id}> "),
            (None, true) => format!("{}> ", ctx.subtask + 1),
            (None, false) => String::new(),
        };
        Ok(Self { prefix, stderr })
    }
}

impl Sink for PrintSink {
    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let mut text = String::new();
        for row in flink_rows(&batch)? {
            text.push_str(&self.prefix);
            text.push_str(&row);
            text.push('\n');
        }
        // One write per batch keeps rows of concurrent subtasks from interleaving mid-line.
        let res = if self.stderr {
            std::io::stderr().lock().write_all(text.as_bytes())
        } else {
            std::io::stdout().lock().write_all(text.as_bytes())
        };
        match res {
            // A closed pipe (`| head`) is the reader's choice, not our failure.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other.map_err(|e| ConnectorError::config("print", e.to_string())),
        }
    }
    fn finish(&mut self) -> Result<()> {
        let _ = std::io::stdout().flush();
        Ok(())
    }
}
