//! The key groups of rows: the exchange routes a row to the owner of its key group, and state
//! tables file the row's state under the same key group, so a checkpoint restores at another
//! parallelism by handing out key groups (flowline_common::keygroups).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BinaryArray, UInt8Array};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::hash_utils::{create_hashes, RandomState};
use datafusion::common::Result;
use datafusion::physical_expr::PhysicalExpr;

/// The seed every exchange and every state table hashes keys with: all must agree.
pub const HASH_SEED: RandomState = RandomState::with_seed(0x5EED_F10E);

/// Fills `out` with the key group of each row of `columns` (the key columns, as the exchange
/// evaluates them); `hashes` is scratch.
pub fn row_key_groups(
    columns: &[ArrayRef],
    rows: usize,
    max_parallelism: usize,
    hashes: &mut Vec<u64>,
    out: &mut Vec<u16>,
) -> Result<()> {
    hashes.clear();
    hashes.resize(rows, 0);
    if !columns.is_empty() {
        create_hashes(columns, &HASH_SEED, hashes)?;
    }
    out.clear();
    out.extend(
        hashes
            .iter()
            .map(|h| flowline_common::keygroups::key_group(*h, max_parallelism)),
    );
    Ok(())
}

/// Which stored keys belong to some key groups: an operator that keeps its keyed state in its
/// own bytes restores, after a rescale, only its key groups' part of the old subtasks' states.
/// Keys are rows of a [`RowConverter`] over the columns the exchange routes by; they are decoded
/// and hashed as the exchange hashed them.
pub(crate) struct KeyGroupFilter {
    /// `None` when rows have no key: the exchange sends them all to the first subtask, the owner
    /// of key group 0.
    conv: Option<RowConverter>,
    max_parallelism: usize,
    key_groups: std::ops::Range<u16>,
    hashes: Vec<u64>,
    groups: Vec<u16>,
}

impl KeyGroupFilter {
    pub(crate) fn new(fields: Vec<SortField>, state: &crate::StateEnv) -> Result<Self> {
        Ok(Self {
            conv: (!fields.is_empty())
                .then(|| RowConverter::new(fields))
                .transpose()?,
            max_parallelism: state.max_parallelism,
            key_groups: state.key_groups.clone(),
            hashes: Vec::new(),
            groups: Vec::new(),
        })
    }

    /// Per row of `columns` (the exchange's key columns, evaluated): whether its key group is
    /// one of ours.
    pub(crate) fn owns_columns(&mut self, columns: &[ArrayRef], rows: usize) -> Result<Vec<bool>> {
        if self.conv.is_none() {
            return Ok(vec![self.key_groups.contains(&0); rows]);
        }
        row_key_groups(
            columns,
            rows,
            self.max_parallelism,
            &mut self.hashes,
            &mut self.groups,
        )?;
        Ok(self
            .groups
            .iter()
            .map(|g| self.key_groups.contains(g))
            .collect())
    }

    /// Per stored key: whether its key group is one of ours. An empty key (a row whose key has
    /// a NULL, stored without one: it never matches) goes with the keyless rows, to the owner of
    /// key group 0; a key of one or more columns is never empty in Arrow's row format.
    pub(crate) fn owns<'a>(
        &mut self,
        keys: impl ExactSizeIterator<Item = &'a [u8]>,
    ) -> Result<Vec<bool>> {
        let keys: Vec<&[u8]> = keys.collect();
        let zero = self.key_groups.contains(&0);
        let Some(conv) = &self.conv else {
            return Ok(vec![zero; keys.len()]);
        };
        let keyed: Vec<usize> = (0..keys.len()).filter(|i| !keys[*i].is_empty()).collect();
        let parser = conv.parser();
        let columns = conv.convert_rows(keyed.iter().map(|i| parser.parse(keys[*i])))?;
        let own = self.owns_columns(&columns, keyed.len())?;
        let mut out = vec![zero; keys.len()];
        for (i, o) in keyed.into_iter().zip(own) {
            out[i] = o;
        }
        Ok(out)
    }
}

/// [`KeyGroupFilter`]s of a two-input operator whose state rows carry their input (0 or 1) and
/// their stored key: each input's keys go through their own converter.
pub(crate) struct InputFilters([KeyGroupFilter; 2]);

impl InputFilters {
    /// For inputs keyed by `keys[i]` over `inputs[i]` (as the exchange routes them).
    pub(crate) fn new(
        keys: &[Vec<Arc<dyn PhysicalExpr>>; 2],
        inputs: &[SchemaRef; 2],
        state: &crate::StateEnv,
    ) -> Result<Self> {
        let filter = |side: usize| -> Result<KeyGroupFilter> {
            let fields = keys[side]
                .iter()
                .map(|k| k.data_type(&inputs[side]).map(SortField::new))
                .collect::<Result<Vec<_>>>()?;
            KeyGroupFilter::new(fields, state)
        };
        Ok(Self([filter(0)?, filter(1)?]))
    }

    /// Per state row (its input, its stored key): whether its key group is one of ours.
    pub(crate) fn owns(&mut self, inputs: &UInt8Array, keys: &BinaryArray) -> Result<Vec<bool>> {
        let mut owned = vec![false; keys.len()];
        for (side, filter) in self.0.iter_mut().enumerate() {
            let rows: Vec<usize> = (0..keys.len())
                .filter(|i| usize::from(inputs.value(*i) == 1) == side)
                .collect();
            let own = filter.owns(rows.iter().map(|i| keys.value(*i)))?;
            for (i, o) in rows.into_iter().zip(own) {
                owned[i] = o;
            }
        }
        Ok(owned)
    }
}
