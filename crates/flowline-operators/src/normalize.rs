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
//! every live key, in Arrow's row format, written whole at each checkpoint.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, BinaryBuilder, Int8Array, RecordBatch, RecordBatchOptions, UInt32Array,
};
use datafusion::arrow::compute::{concat, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{exec_err, Result};
use flowline_common::changelog::{row_kinds, RowKind};

use crate::groups::{Groups, Ttl};
use crate::{Operator, OperatorContext, OperatorFactory};

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
    fn create(&self, _ctx: &OperatorContext) -> Result<Box<dyn Operator>> {
        let width = self.schema.fields().len() - 1;
        let sort = |i: usize| SortField::new(self.schema.field(i).data_type().clone());
        Ok(Box::new(ChangelogNormalize {
            spec: self.clone(),
            keys: RowConverter::new(self.key.iter().map(|i| sort(*i)).collect())?,
            rows: RowConverter::new((0..width).map(sort).collect())?,
            groups: Groups::new(),
            held: Vec::new(),
            slot: Vec::new(),
            ttl: Ttl::new(self.state_ttl),
        }))
    }

    fn updating(&self) -> bool {
        true
    }
}

pub struct ChangelogNormalize {
    spec: ChangelogNormalizeSpec,
    keys: RowConverter,
    rows: RowConverter,
    groups: Groups,
    /// Per key: its latest row.
    held: Vec<Option<Box<[u8]>>>,
    /// Per key: its position among the keys the current batch touches, plus one (0 = untouched).
    slot: Vec<u32>,
    ttl: Option<Ttl>,
}

impl ChangelogNormalize {
    fn key_of(&mut self, key: &[u8]) -> u32 {
        let (g, created) = self.groups.intern(key);
        if created {
            self.held.resize(self.groups.len(), None);
            self.slot.resize(self.groups.len(), 0);
        }
        g
    }

    fn drop_key(&mut self, g: u32) {
        self.groups.remove(g);
        self.held[g as usize] = None;
    }
}

impl Operator for ChangelogNormalize {
    fn on_batch(&mut self, _input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let n = batch.num_rows();
        if let Some(ttl) = &mut self.ttl {
            for g in ttl.due(&mut self.groups) {
                self.drop_key(g);
            }
        }
        let Some(kinds) = row_kinds(&batch).cloned() else {
            return exec_err!("changelog normalize: the input batch has no change-kind column");
        };
        let width = batch.num_columns() - 1;
        let data: Vec<ArrayRef> = batch.columns()[..width].to_vec();
        let key_cols: Vec<ArrayRef> = self.spec.key.iter().map(|i| data[*i].clone()).collect();
        let key_rows = self.keys.convert_columns(&key_cols)?;
        let rows = self.rows.convert_columns(&data)?;
        // Each touched key and the last row of the batch for it.
        let mut touched: Vec<(u32, u32)> = Vec::new();
        for i in 0..n {
            let g = self.key_of(key_rows.row(i).as_ref());
            match self.slot[g as usize] {
                0 => {
                    touched.push((g, i as u32));
                    self.slot[g as usize] = touched.len() as u32;
                }
                s => touched[s as usize - 1].1 = i as u32,
            }
        }
        let mut old_rows: Vec<Box<[u8]>> = Vec::new();
        let mut old_kinds: Vec<i8> = Vec::new();
        let mut new_idx: Vec<u32> = Vec::new();
        let mut new_kinds: Vec<i8> = Vec::new();
        for (g, i) in touched {
            self.slot[g as usize] = 0;
            let add = RowKind::from_i8(kinds.value(i as usize)).is_some_and(RowKind::is_addition);
            let new = add.then(|| rows.row(i as usize));
            match (self.held[g as usize].take(), new) {
                (Some(old), Some(new)) if *old == *new.as_ref() => {
                    self.held[g as usize] = Some(old)
                }
                (Some(old), Some(new)) => {
                    self.held[g as usize] = Some(new.as_ref().into());
                    old_rows.push(old);
                    old_kinds.push(RowKind::UpdateBefore as i8);
                    new_idx.push(i);
                    new_kinds.push(RowKind::UpdateAfter as i8);
                }
                (Some(old), None) => {
                    old_rows.push(old);
                    old_kinds.push(RowKind::Delete as i8);
                    self.drop_key(g);
                }
                (None, Some(new)) => {
                    self.held[g as usize] = Some(new.as_ref().into());
                    new_idx.push(i);
                    new_kinds.push(RowKind::Insert as i8);
                }
                (None, None) => self.drop_key(g),
            }
        }
        let total = old_rows.len() + new_idx.len();
        if total == 0 {
            return Ok(Vec::new());
        }
        let parser = self.rows.parser();
        let olds = self
            .rows
            .convert_rows(old_rows.iter().map(|r| parser.parse(r)))?;
        let new_idx = UInt32Array::from(new_idx);
        let mut columns = Vec::with_capacity(width + 1);
        for (old, col) in olds.iter().zip(&data) {
            columns.push(concat(&[
                old.as_ref(),
                take(col, &new_idx, None)?.as_ref(),
            ])?);
        }
        old_kinds.extend(new_kinds);
        columns.push(Arc::new(Int8Array::from(old_kinds)));
        let options = RecordBatchOptions::new().with_row_count(Some(total));
        Ok(vec![RecordBatch::try_new_with_options(
            self.spec.schema.clone(),
            columns,
            &options,
        )?])
    }

    /// State batches of `[key bytes, latest row bytes]`.
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        let mut batches = Vec::new();
        let live: Vec<usize> = (0..self.held.len())
            .filter(|g| self.held[*g].is_some())
            .collect();
        for chunk in live.chunks(65536) {
            let (mut keys, mut rows) = (BinaryBuilder::new(), BinaryBuilder::new());
            for g in chunk {
                keys.append_value(&self.groups.keys[*g]);
                rows.append_value(self.held[*g].as_deref().unwrap_or_default());
            }
            batches.push(crate::state_batch(
                vec![Arc::new(keys.finish()), Arc::new(rows.finish())],
                chunk.len(),
            )?);
        }
        crate::encode_batches(&batches)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        for batch in crate::decode_batches(state)? {
            if batch.num_columns() != 2 {
                return exec_err!(
                    "changelog normalize: the checkpoint's state has {} columns, expected 2",
                    batch.num_columns()
                );
            }
            let (keys, rows) = (
                batch.column(0).as_binary::<i32>(),
                batch.column(1).as_binary::<i32>(),
            );
            for i in 0..batch.num_rows() {
                let g = self.key_of(keys.value(i));
                self.held[g as usize] = Some(rows.value(i).into());
            }
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.groups.size()
            + self
                .held
                .iter()
                .map(|r| r.as_ref().map_or(0, |r| r.len()) + 16)
                .sum::<usize>()
    }

    fn open_windows(&self) -> usize {
        self.groups.len() - self.groups.free.len()
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
}
