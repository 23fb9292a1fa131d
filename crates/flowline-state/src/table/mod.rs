//! State tables: what stateful operators keep, bounded by a memory budget (cold entries move to
//! sorted runs on local disk) and checkpointed incrementally (a checkpoint is the table's list
//! of immutable runs; each checkpoint adds one run of what changed since the previous one).
//! Keys carry their key group, so a checkpoint restores at another parallelism.

mod keyed;
mod run;

pub use keyed::{
    KeyedTable, RunMerge, SnapshotScan, StateValue, TableRun, TableSnapshot, TableStats, Taken,
};
pub use run::{key_group_of, Entry, Run, RunIter, RunWriter};
