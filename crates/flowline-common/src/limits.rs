//! Named limits. Every buffer in Flowline is bounded; the bound lives here with its reason.

/// Batches in flight on one channel between two tasks. Small, so a slow consumer pushes back on
/// its producer within a few batches (backpressure) while still letting the two overlap.
pub const CHANNEL_CAPACITY_BATCHES: usize = 4;

/// Rows per batch produced by sources. Large enough to amortise per-batch overhead of the
/// vectorised operators, small enough to keep one batch in L2-ish memory for narrow rows.
pub const BATCH_ROWS_MAX: usize = 8192;

/// Bytes read per chunk from a file by the line-oriented decoders (JSON lines, CSV).
pub const READ_CHUNK_BYTES: usize = 1 << 20;

/// A single input line longer than this is an error rather than an unbounded allocation.
pub const LINE_BYTES_MAX: usize = 16 << 20;

/// Default target size of a file written by the filesystem sink (Flink's default: 128 MB).
pub const SINK_FILE_SIZE_DEFAULT_BYTES: u64 = 128 << 20;

/// Default time after which the filesystem sink rolls a file (Flink's default: 30 min).
pub const SINK_ROLLOVER_INTERVAL_DEFAULT_MS: u64 = 30 * 60 * 1000;

/// Rows held back during barrier alignment (exactly-once) from inputs that already delivered the
/// barrier. Past this the checkpoint is declined and the rows flow on, rather than memory growing
/// behind a slow input.
pub const ALIGNMENT_BUFFER_MAX_BYTES: usize = 256 << 20;

/// Default number of complete checkpoints kept. Flink keeps one; two let a damaged latest
/// checkpoint fall back to the one before.
pub const CHECKPOINTS_RETAINED_DEFAULT: usize = 2;

/// Default time after which an incomplete checkpoint is abandoned (Flink's default: 10 min).
pub const CHECKPOINT_TIMEOUT_DEFAULT_MS: u64 = 10 * 60 * 1000;
