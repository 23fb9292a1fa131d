//! The key groups of rows: the exchange routes a row to the owner of its key group, and state
//! tables file the row's state under the same key group, so a checkpoint restores at another
//! parallelism by handing out key groups (flowline_common::keygroups).

use datafusion::arrow::array::ArrayRef;
use datafusion::common::hash_utils::{create_hashes, RandomState};
use datafusion::common::Result;

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
