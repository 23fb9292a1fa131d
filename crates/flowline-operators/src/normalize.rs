//! Changelog normalization: an upsert stream (each row the latest version of its key, or a
//! delete of the key) becomes a changelog (`+I`, `-U`/`+U`, `-D`), as Flink's ChangelogNormalize
//! after an `upsert-kafka` source.
//!
//! ```text
//! row (key k, +U v):  k unknown: +I v;  k held as u != v: -U u, +U v;  same version: nothing
//! row (key k, -D):    k held as u: -D u (the held row, not the tombstone);  k unknown: nothing
//! ```
//!
//! Within one batch only each key's last row counts (a mini-batch). State: the latest row of
//! every live key, in Arrow's row format, in a keyed state table (spills past the memory
//! budget, checkpoints what changed, expires keys with `table.exec.state.ttl`).

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int8Array, RecordBatch, RecordBatchOptions, UInt32Array};
use datafusion::arrow::compute::{concat, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{exec_err, Result};
use flowline_common::changelog::{row_kinds, RowKind};

use flowline_state::table::TableStats;

use crate::keygroups::row_key_groups;
use crate::state::{io_err, OperatorTable};
use crate::{Operator, OperatorContext, OperatorFactory, TableRuns};

#[derive(Clone)]
pub struct ChangelogNormalizeSpec {
    /// Positions of the key columns.
    pub key: Vec<usize>,
    /// The rows' columns, then the change kind.
    pub schema: SchemaRef,
    /// `table.exec.state.ttl`: keys not updated for this long are forgotten.
    pub state_ttl: Option<std::time::Duration>,
}

impl fmt::Debug for ChangelogNormalizeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key: Vec<&str> = self
            .key
            .iter()
            .map(|i| self.schema.field(*i).name().as_str())
            .collect();
        write!(
            f,
            "ChangelogNormalize(key=[{}]) -> updating",
            key.join(", ")
        )
    }
}

impl OperatorFactory for ChangelogNormalizeSpec {
    fn create(&self, ctx: &OperatorContext) -> Result<Box<dyn Operator>> {
        let width = self.schema.fields().len() - 1;
        let sort = |i: usize| SortField::new(self.schema.field(i).data_type().clone());
        let table = OperatorTable::new(ctx, TABLE, "normalize", ctx.state.budget, self.state_ttl)?;
        Ok(Box::new(ChangelogNormalize {
            spec: self.clone(),
            keys: RowConverter::new(self.key.iter().map(|i| sort(*i)).collect())?,
            rows: RowConverter::new((0..width).map(sort).collect())?,
            table,
            max_parallelism: ctx.state.max_parallelism,
            hashes: Vec::new(),
            key_groups: Vec::new(),
        }))
    }

    fn updating(&self) -> bool {
        true
    }
}

/// The state table: each live key's latest row (Arrow row format), by key.
const TABLE: &str = "latest";

pub struct ChangelogNormalize {
    spec: ChangelogNormalizeSpec,
    keys: RowConverter,
    rows: RowConverter,
    table: OperatorTable<Vec<u8>>,
    max_parallelism: usize,
    hashes: Vec<u64>,
    key_groups: Vec<u16>,
}

/// What one key's rows in a batch do to the changelog.
#[derive(Default)]
struct Changes {
    old_rows: Vec<Vec<u8>>,
    old_kinds: Vec<i8>,
    new_idx: Vec<u32>,
    new_kinds: Vec<i8>,
}

impl Changes {
    /// Key's held row `held` meets the batch's last row `i` for it (`new`: its row, if an
    /// addition); `held` becomes what the key holds after.
    fn apply(&mut self, held: &mut Option<Vec<u8>>, i: u32, new: Option<&[u8]>) {
        match (held.take(), new) {
            (Some(old), Some(new)) if old == new => *held = Some(old),
            (Some(old), Some(new)) => {
                *held = Some(new.to_vec());
                self.old_rows.push(old);
                self.old_kinds.push(RowKind::UpdateBefore as i8);
                self.new_idx.push(i);
                self.new_kinds.push(RowKind::UpdateAfter as i8);
            }
            (Some(old), None) => {
                self.old_rows.push(old);
                self.old_kinds.push(RowKind::Delete as i8);
            }
            (None, Some(new)) => {
                *held = Some(new.to_vec());
                self.new_idx.push(i);
                self.new_kinds.push(RowKind::Insert as i8);
            }
            (None, None) => {}
        }
    }
}

impl ChangelogNormalize {
    fn emit(&self, changes: Changes, data: &[ArrayRef]) -> Result<Vec<RecordBatch>> {
        let total = changes.old_rows.len() + changes.new_idx.len();
        if total == 0 {
            return Ok(Vec::new());
        }
        let parser = self.rows.parser();
        let olds = self
            .rows
            .convert_rows(changes.old_rows.iter().map(|r| parser.parse(r)))?;
        let new_idx = UInt32Array::from(changes.new_idx);
        let mut columns = Vec::with_capacity(data.len() + 1);
        for (old, col) in olds.iter().zip(data) {
            columns.push(concat(&[
                old.as_ref(),
                take(col, &new_idx, None)?.as_ref(),
            ])?);
        }
        let mut kinds = changes.old_kinds;
        kinds.extend(changes.new_kinds);
        columns.push(Arc::new(Int8Array::from(kinds)));
        let options = RecordBatchOptions::new().with_row_count(Some(total));
        Ok(vec![RecordBatch::try_new_with_options(
            self.spec.schema.clone(),
            columns,
            &options,
        )?])
    }
}

impl Operator for ChangelogNormalize {
    fn on_batch(&mut self, _input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let n = batch.num_rows();
        if self.spec.state_ttl.is_some() {
            self.table.set_clock(flowline_common::clock::now_millis());
        }
        let Some(kinds) = row_kinds(&batch).cloned() else {
            return exec_err!("changelog normalize: the input batch has no change-kind column");
        };
        let width = batch.num_columns() - 1;
        let data: Vec<ArrayRef> = batch.columns()[..width].to_vec();
        let key_cols: Vec<ArrayRef> = self.spec.key.iter().map(|i| data[*i].clone()).collect();
        let key_rows = self.keys.convert_columns(&key_cols)?;
        let rows = self.rows.convert_columns(&data)?;
        row_key_groups(
            &key_cols,
            n,
            self.max_parallelism,
            &mut self.hashes,
            &mut self.key_groups,
        )?;
        // Within a batch only each key's last row counts (a mini-batch), in first-seen order.
        let mut last: hashbrown::HashMap<&[u8], usize> = hashbrown::HashMap::with_capacity(n);
        let mut touched: Vec<(&[u8], u32)> = Vec::with_capacity(n);
        for i in 0..n {
            let key = key_rows.row(i).data();
            match last.entry(key) {
                hashbrown::hash_map::Entry::Occupied(e) => touched[*e.get()].1 = i as u32,
                hashbrown::hash_map::Entry::Vacant(e) => {
                    e.insert(touched.len());
                    touched.push((key, i as u32));
                }
            }
        }
        let mut changes = Changes::default();
        for (key, i) in touched {
            let add = RowKind::from_i8(kinds.value(i as usize)).is_some_and(RowKind::is_addition);
            let new = add.then(|| rows.row(i as usize).data());
            let kg = self.key_groups[i as usize];
            self.table
                .update(kg, key, |held| changes.apply(held, i, new))
                .map_err(io_err)?;
        }
        self.table.spill_if_over_budget().map_err(io_err)?;
        self.emit(changes, &data)
    }

    /// The table is checkpointed as runs ([`Operator::snapshot_tables`]); no bytes of its own.
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        self.table.checkpoint()?;
        Ok(Vec::new())
    }

    fn snapshot_tables(&mut self) -> Vec<TableRuns> {
        self.table.runs()
    }

    fn restore_tables(&mut self, tables: Vec<TableRuns>) -> Result<()> {
        self.table.restore(tables)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        if state.is_empty() {
            return Ok(());
        }
        exec_err!("changelog normalize: this checkpoint holds state in an older format (before state tables); run with --fresh to start over")
    }

    fn state_bytes(&self) -> usize {
        self.table.stats().memory_bytes as usize
    }

    fn table_stats(&self) -> TableStats {
        self.table.stats()
    }

    fn open_windows(&self) -> usize {
        self.table.hot_len()
    }
}

#[cfg(test)]
mod harness_tests {
    use super::*;
    use crate::testing::{schema, Harness};

    /// ChangelogNormalize after an upsert source keyed by `k`.
    fn normalize() -> ChangelogNormalizeSpec {
        ChangelogNormalizeSpec {
            key: vec![0],
            schema: schema("k:str v:i64 _row_kind:kind"),
            state_ttl: None,
        }
    }

    #[test]
    fn upserts_become_a_changelog() {
        Harness::new(normalize())
            .rows(
                0,
                "k:str v:i64 _row_kind:kind
                 a     1     +U
                 b     1     +U
                 c     1     -D",
            )
            // An unknown key's delete is nothing.
            .expect_unordered(
                "k v _row_kind
                 a 1 +I
                 b 1 +I",
            )
            .rows(
                0,
                "k:str v:i64 _row_kind:kind
                 a     1     +U
                 b     2     +U
                 a     NULL  -D",
            )
            // The same version is nothing; a delete retracts the row held, not the tombstone.
            .expect_unordered(
                "k v _row_kind
                 b 1 -U
                 b 2 +U
                 a 1 -D",
            );
    }

    #[test]
    fn within_a_batch_only_a_keys_last_row_counts_and_state_survives_a_restart() {
        Harness::new(normalize())
            .rows(
                0,
                "k:str v:i64 _row_kind:kind
                 a     1     +U
                 a     2     +U
                 a     3     +U",
            )
            .expect(
                "k v _row_kind
                 a 3 +I",
            )
            .restart()
            .rows(
                0,
                "k:str v:i64 _row_kind:kind
                 a     4     +U
                 NULL  5     +U",
            )
            .expect_unordered(
                "k v _row_kind
                 a 3 -U
                 a 4 +U
                 NULL 5 +I",
            );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// With a budget of a few entries (everything spills) the changelog is the one of an
        /// unbounded budget, through batches of any size and restarts anywhere.
        #[test]
        fn a_spilling_table_gives_the_same_changelog(
            steps in proptest::collection::vec(
                (proptest::collection::vec((0u8..40, 0u8..4, proptest::bool::weighted(0.8)), 0..30),
                 proptest::bool::weighted(0.2)),
                1..20,
            )
        ) {
            let mut unbounded = Harness::new(normalize());
            let mut spilling = Harness::with_budget(normalize(), 600);
            let mut keys = std::collections::HashSet::new();
            for (rows, restart) in steps {
                let mut text = String::from("k:str v:i64 _row_kind:kind\n");
                for (k, v, add) in rows {
                    keys.insert(k);
                    text += &format!("k{k} {v} {}\n", if add { "+U" } else { "-D" });
                }
                unbounded.rows(0, &text);
                spilling.rows(0, &text);
                if restart {
                    unbounded.restart();
                    spilling.restart();
                }
                proptest::prop_assert_eq!(spilling.take_table(), unbounded.take_table());
            }

        }
    }
}
