//! What an operator keeps beside its state table: the table's name in checkpoints, where and
//! with what budget it lives, and its runs at the last snapshot. One place for the
//! checkpoint/restore plumbing every operator on a state table shares.

use std::ops::{Deref, DerefMut};

use datafusion::common::{DataFusionError, Result};
use flowline_state::table::{KeyedTable, StateValue, TableRun};

use crate::{OperatorContext, StateEnv, TableRuns};

/// A state-table error as an operator error.
pub(crate) fn io_err(e: std::io::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// An operator's keyed table; derefs to the [`KeyedTable`].
pub(crate) struct OperatorTable<V> {
    table: KeyedTable<V>,
    /// Its name in checkpoints.
    name: &'static str,
    /// Its runs' file-name prefix (operator and subtask).
    file: String,
    env: StateEnv,
    budget: usize,
    ttl: Option<std::time::Duration>,
    runs: Vec<TableRun>,
}

impl<V: StateValue> OperatorTable<V> {
    /// Table `name` of subtask `ctx.subtask` of an operator whose runs are named `prefix-…`,
    /// holding at most `budget` bytes in memory.
    pub(crate) fn new(
        ctx: &OperatorContext,
        name: &'static str,
        prefix: &str,
        budget: usize,
        ttl: Option<std::time::Duration>,
    ) -> Result<Self> {
        let env = ctx.state.clone();
        let file = format!("{prefix}-{}", ctx.subtask);
        let table = KeyedTable::new(&env.dir, &file, budget, env.key_groups.clone())
            .map_err(io_err)?
            .with_ttl(ttl);
        Ok(Self {
            table,
            name,
            file,
            env,
            budget,
            ttl,
            runs: Vec::new(),
        })
    }

    /// Writes what changed since the last snapshot; [`OperatorTable::runs`] hands it on.
    pub(crate) fn checkpoint(&mut self) -> Result<()> {
        self.runs = self.table.checkpoint().map_err(io_err)?;
        Ok(())
    }

    /// Its runs at the last snapshot, for `Operator::snapshot_tables`.
    pub(crate) fn runs(&self) -> Vec<TableRuns> {
        vec![TableRuns {
            table: self.name.into(),
            runs: self.runs.clone(),
        }]
    }

    /// Takes its runs from a checkpoint's (`Operator::restore_tables`).
    pub(crate) fn restore(&mut self, tables: Vec<TableRuns>) -> Result<()> {
        let runs = tables
            .into_iter()
            .filter(|t| t.table == self.name)
            .flat_map(|t| t.runs)
            .collect();
        let env = &self.env;
        self.table = KeyedTable::restore(
            &env.dir,
            &self.file,
            self.budget,
            env.key_groups.clone(),
            runs,
        )
        .map_err(io_err)?
        .with_ttl(self.ttl);
        Ok(())
    }
}

impl<V> Deref for OperatorTable<V> {
    type Target = KeyedTable<V>;
    fn deref(&self) -> &KeyedTable<V> {
        &self.table
    }
}

impl<V> DerefMut for OperatorTable<V> {
    fn deref_mut(&mut self) -> &mut KeyedTable<V> {
        &mut self.table
    }
}
