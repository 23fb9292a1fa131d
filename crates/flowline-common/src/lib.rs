//! Flowline's shared vocabulary: the [`Message`] that flows between operators, named limits,
//! table options with validation, and the metrics registry.
//!
//! This crate imports nothing else of Flowline's; every other crate may import it.
//!
//! ```text
//!  source ──Message::Batch/Watermark/Barrier/End──▶ operator ──▶ ... ──▶ sink
//! ```

pub mod changelog;
pub mod clock;
pub mod failpoint;
pub mod fault;
pub mod fs;
pub mod integers;
pub mod keygroups;
pub mod limits;
pub mod message;
pub mod metrics;
pub mod options;

pub use changelog::{RowKind, ROW_KIND};
pub use message::{Barrier, EventTimeMs, Message, END_OF_TIME, NO_WATERMARK};
pub use metrics::{Counter, Gauge, MetricsRegistry};
pub use options::{OptionError, OptionSpec, Options};
