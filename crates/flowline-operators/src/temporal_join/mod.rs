//! Temporal joins (`JOIN t FOR SYSTEM_TIME AS OF probe.time`), as Flink's:
//!
//! - [`LookupJoinSpec`]: a lookup join. Each probe row is joined with the rows of a bounded
//!   table as the table is when the row is processed. The table is read whole (through the
//!   planner's loader) at the first row and again when `lookup.join.cache.ttl` has passed, and
//!   indexed by its join key. The probe rows pass through with their change kind; nothing is
//!   buffered and there is no state to checkpoint.
//! - [`VersionedJoinSpec`]: an event-time temporal join against a versioned table (one with a
//!   PRIMARY KEY and a WATERMARK). Probe rows wait until the watermark passes their time, then
//!   join the version of their key valid at that time: the latest version whose time is not
//!   after it, unless that version is a delete. Versions older than the one valid at the
//!   watermark are dropped, as are the probe rows once emitted, so the state is bounded by the
//!   table's keys and the rows within the watermark delay.
//!
//! ```text
//! probe rows ─▶ buffer by time ──watermark W──▶ rows with time <= W ─▶ version at their time
//! version rows ─▶ per key: versions by time ──watermark W──▶ drop what no row after W can see
//! ```
//!
//! Both are inner or LEFT joins; the rest of the ON condition is evaluated on the candidate
//! pairs, and a LEFT join pads a probe row without a passing version with NULLs. A NULL key
//! never matches. The output is append-only for an append-only probe input and keeps the probe
//! side's time attribute, as Flink does.

use flowline_common::{END_OF_TIME, NO_WATERMARK};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanArray, Int64Builder, Int8Array, RecordBatch,
    UInt32Array, UInt8Builder,
};
use datafusion::arrow::compute::{concat_batches, take};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{exec_err, Result};
use datafusion::physical_expr::PhysicalExpr;
use flowline_common::changelog::{row_kinds, RowKind};

use crate::keygroups::InputFilters;
use crate::pairs::{eval_keys, filter_mask, pairs_schema};
use crate::{Operator, OperatorContext, OperatorFactory};

/// Reads a lookup table whole: its rows with the join's view of its columns.
pub type TableLoader = Arc<dyn Fn() -> Result<Vec<RecordBatch>> + Send + Sync>;

/// A lookup join (see the module docs).
#[derive(Clone)]
pub struct LookupJoinSpec {
    /// LEFT JOIN: a probe row without a match is emitted with NULLs.
    pub left_join: bool,
    /// The probe input's key (over its columns) and the table's (over the loaded columns); both
    /// lists have the same types.
    pub keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    /// The probe input's columns, without the change kind.
    pub input: SchemaRef,
    /// Whether the probe input carries a change kind (passed through to the output).
    pub updating: bool,
    /// The table's columns as loaded.
    pub table: SchemaRef,
    pub table_name: String,
    pub load: TableLoader,
    /// Read the table again when it is older than this (`lookup.join.cache.ttl`).
    pub reload: Option<Duration>,
    /// The rest of the ON condition, over the probe columns followed by the table's.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// The probe columns, the table columns, then the change kind when updating.
    pub schema: SchemaRef,
}

impl fmt::Debug for LookupJoinSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LookupJoin({}{}, on=[{}]",
            if self.left_join { "Left, " } else { "" },
            self.table_name,
            on(&self.keys)
        )?;
        if let Some(filter) = &self.filter {
            write!(f, ", filter={filter}")?;
        }
        write!(f, ")")?;
        if self.updating {
            write!(f, " -> updating")?;
        }
        Ok(())
    }
}

fn on(keys: &[Vec<Arc<dyn PhysicalExpr>>; 2]) -> String {
    keys[0]
        .iter()
        .zip(&keys[1])
        .map(|(l, r)| format!("{l} = {r}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn key_converter(keys: &[Arc<dyn PhysicalExpr>], schema: &Schema) -> Result<RowConverter> {
    let fields = keys
        .iter()
        .map(|k| k.data_type(schema).map(SortField::new))
        .collect::<Result<Vec<_>>>()?;
    Ok(RowConverter::new(fields)?)
}

/// The output rows of probe rows `0..n` from candidate pairs `(probe row, table row)` in probe
/// order: the pairs that pass, and for a LEFT join a NULL-padded row for each probe row left
/// without one.
fn emitted(
    n: usize,
    probe: &[u32],
    other: &[u32],
    pass: Option<&BooleanArray>,
    left_join: bool,
) -> (Vec<u32>, Vec<Option<u32>>) {
    let mut li = Vec::with_capacity(probe.len());
    let mut rj = Vec::with_capacity(probe.len());
    let mut c = 0;
    for i in 0..n as u32 {
        let mut matched = false;
        while c < probe.len() && probe[c] == i {
            if pass.is_none_or(|p| p.value(c)) {
                li.push(i);
                rj.push(Some(other[c]));
                matched = true;
            }
            c += 1;
        }
        if !matched && left_join {
            li.push(i);
            rj.push(None);
        }
    }
    (li, rj)
}

fn take_all(cols: &[ArrayRef], idx: &UInt32Array) -> Result<Vec<ArrayRef>> {
    Ok(cols
        .iter()
        .map(|c| take(c, idx, None))
        .collect::<std::result::Result<Vec<_>, _>>()?)
}

impl OperatorFactory for LookupJoinSpec {
    fn create(&self, _ctx: &OperatorContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(LookupJoin {
            keys: key_converter(&self.keys[0], &self.input)?,
            table_keys: key_converter(&self.keys[1], &self.table)?,
            pairs: pairs_schema(&self.input, &self.table),
            spec: Arc::new(self.clone()),
            loaded: None,
        }))
    }

    fn updating(&self) -> bool {
        self.updating
    }
}

struct LookupJoin {
    spec: Arc<LookupJoinSpec>,
    keys: RowConverter,
    table_keys: RowConverter,
    pairs: SchemaRef,
    loaded: Option<Loaded>,
}

/// The table as last read, and its rows by key.
struct Loaded {
    at: Instant,
    rows: RecordBatch,
    index: HashMap<Box<[u8]>, Vec<u32>>,
}

impl LookupJoin {
    fn table(&mut self) -> Result<&Loaded> {
        let stale = match (&self.loaded, self.spec.reload) {
            (None, _) => true,
            (Some(l), Some(ttl)) => l.at.elapsed() >= ttl,
            (Some(_), None) => false,
        };
        if stale {
            let batches = (self.spec.load)()?
                .into_iter()
                .map(|b| crate::batch_of(&self.spec.table, b.columns().to_vec(), b.num_rows()))
                .collect::<Result<Vec<_>>>()?;
            let rows = concat_batches(&self.spec.table, &batches)?;
            let (keys, nulls) = eval_keys(&self.spec.keys[1], &self.table_keys, &rows)?;
            let mut index: HashMap<Box<[u8]>, Vec<u32>> = HashMap::new();
            for j in 0..rows.num_rows() {
                if nulls.as_ref().is_none_or(|nb| nb.is_valid(j)) {
                    index
                        .entry(keys.row(j).as_ref().into())
                        .or_default()
                        .push(j as u32);
                }
            }
            self.loaded = Some(Loaded {
                at: Instant::now(),
                rows,
                index,
            });
        }
        Ok(self.loaded.as_ref().expect("loaded above"))
    }
}

impl Operator for LookupJoin {
    fn on_batch(&mut self, _input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let spec = self.spec.clone();
        let n = batch.num_rows();
        let width = spec.input.fields().len();
        let data = crate::batch_of(&spec.input, batch.columns()[..width].to_vec(), n)?;
        let (key_rows, nulls) = eval_keys(&spec.keys[0], &self.keys, &data)?;
        let pairs = self.pairs.clone();
        let table = self.table()?;
        let (mut probe, mut other) = (Vec::new(), Vec::new());
        for i in 0..n {
            if nulls.as_ref().is_some_and(|nb| nb.is_null(i)) {
                continue;
            }
            if let Some(rows) = table.index.get(key_rows.row(i).as_ref()) {
                for j in rows {
                    probe.push(i as u32);
                    other.push(*j);
                }
            }
        }
        let pass = if spec.filter.is_some() && !probe.is_empty() {
            let (pi, oi) = (
                UInt32Array::from(probe.clone()),
                UInt32Array::from(other.clone()),
            );
            let cols = [
                take_all(data.columns(), &pi)?,
                take_all(table.rows.columns(), &oi)?,
            ]
            .concat();
            filter_mask(spec.filter.as_ref(), &pairs, cols, probe.len())?
        } else {
            None
        };
        let (li, rj) = emitted(n, &probe, &other, pass.as_ref(), spec.left_join);
        if li.is_empty() {
            return Ok(Vec::new());
        }
        let (li, rj) = (UInt32Array::from(li), UInt32Array::from(rj));
        let mut cols = [
            take_all(data.columns(), &li)?,
            take_all(table.rows.columns(), &rj)?,
        ]
        .concat();
        if spec.updating {
            let Some(kinds) = row_kinds(&batch) else {
                return exec_err!("lookup join: an updating input's batch has no change kind");
            };
            cols.push(take(kinds, &li, None)?);
        }
        let mut out = Vec::new();
        crate::push_sliced(&mut out, crate::batch_of(&spec.schema, cols, li.len())?);
        Ok(out)
    }

    // The table is read again after a restore: nothing to keep.
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }

    fn restore(&mut self, _state: &[u8]) -> Result<()> {
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.loaded
            .as_ref()
            .map_or(0, |l| l.rows.get_array_memory_size() + l.index.len() * 48)
    }
}

/// An event-time temporal join (see the module docs).
#[derive(Clone)]
pub struct VersionedJoinSpec {
    pub left_join: bool,
    /// The probe input's key and the versioned table's (its PRIMARY KEY), same types.
    pub keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    /// Per input (probe, versioned): its columns, without the change kind.
    pub inputs: [SchemaRef; 2],
    /// Whether the versioned input carries a change kind (an upsert source): `+I`/`+U` add a
    /// version, `-D` ends the key's versions, `-U` is ignored.
    pub versions_updating: bool,
    /// Per input: the column with its time attribute (the probe row's time, the version's).
    pub times: [usize; 2],
    pub table_name: String,
    /// The rest of the ON condition, over the probe columns followed by the table's.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// The probe columns then the table's.
    pub schema: SchemaRef,
}

impl fmt::Debug for VersionedJoinSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TemporalJoin({}{} AS OF {}, on=[{}]",
            if self.left_join { "Left, " } else { "" },
            self.table_name,
            self.inputs[0].field(self.times[0]).name(),
            on(&self.keys)
        )?;
        if let Some(filter) = &self.filter {
            write!(f, ", filter={filter}")?;
        }
        write!(f, ")")
    }
}

impl OperatorFactory for VersionedJoinSpec {
    fn create(&self, ctx: &OperatorContext) -> Result<Box<dyn Operator>> {
        let rows = |s: &Schema| -> Result<RowConverter> {
            Ok(RowConverter::new(
                s.fields()
                    .iter()
                    .map(|f| SortField::new(f.data_type().clone()))
                    .collect(),
            )?)
        };
        Ok(Box::new(VersionedJoin {
            keys: [
                key_converter(&self.keys[0], &self.inputs[0])?,
                key_converter(&self.keys[1], &self.inputs[1])?,
            ],
            rows: [rows(&self.inputs[0])?, rows(&self.inputs[1])?],
            pairs: pairs_schema(&self.inputs[0], &self.inputs[1]),
            spec: Arc::new(self.clone()),
            probes: BTreeMap::new(),
            versions: HashMap::new(),
            dirty: HashSet::new(),
            watermark: NO_WATERMARK,
            bytes: 0,
            env: ctx.state.clone(),
        }))
    }
}

/// A probe row waiting for the watermark.
struct Probe {
    /// Empty when the key has a NULL (it never matches).
    key: Box<[u8]>,
    row: Box<[u8]>,
}

/// One version of a key: its row from `time` on, or `None` (deleted from `time` on).
struct Version {
    time: i64,
    row: Option<Box<[u8]>>,
}

struct VersionedJoin {
    spec: Arc<VersionedJoinSpec>,
    keys: [RowConverter; 2],
    rows: [RowConverter; 2],
    pairs: SchemaRef,
    /// Probe rows by time, in arrival order within a time.
    probes: BTreeMap<i64, Vec<Probe>>,
    /// Per key: its versions, ordered by time (arrival order within a time).
    versions: HashMap<Box<[u8]>, Vec<Version>>,
    /// Keys with versions that a later watermark may let go.
    dirty: HashSet<Box<[u8]>>,
    watermark: i64,
    bytes: usize,
    /// Its key groups (a rescaled restore keeps only their probes and versions).
    env: crate::StateEnv,
}

impl VersionedJoin {
    fn add_probes(&mut self, data: &RecordBatch) -> Result<()> {
        let (keys, nulls) = eval_keys(&self.spec.keys[0], &self.keys[0], data)?;
        let rows = self.rows[0].convert_columns(data.columns())?;
        let times = crate::millis(data.column(self.spec.times[0]), "the probe row's time")?;
        for i in 0..data.num_rows() {
            let key: Box<[u8]> = if nulls.as_ref().is_some_and(|nb| nb.is_null(i)) {
                Box::default()
            } else {
                keys.row(i).as_ref().into()
            };
            // A row without a time is joined at the next watermark, with no version.
            let time = if times.is_valid(i) {
                times.value(i)
            } else {
                i64::MIN
            };
            let row: Box<[u8]> = rows.row(i).as_ref().into();
            self.bytes += key.len() + row.len() + 32;
            self.probes
                .entry(time)
                .or_default()
                .push(Probe { key, row });
        }
        Ok(())
    }

    fn add_versions(&mut self, data: &RecordBatch, kinds: Option<&Int8Array>) -> Result<()> {
        let (keys, nulls) = eval_keys(&self.spec.keys[1], &self.keys[1], data)?;
        let rows = self.rows[1].convert_columns(data.columns())?;
        let times = crate::millis(data.column(self.spec.times[1]), "the version's time")?;
        for i in 0..data.num_rows() {
            if nulls.as_ref().is_some_and(|nb| nb.is_null(i)) || times.is_null(i) {
                continue;
            }
            let row = match kinds.map(|k| RowKind::from_i8(k.value(i))) {
                None | Some(Some(RowKind::Insert | RowKind::UpdateAfter)) => {
                    Some(rows.row(i).as_ref().into())
                }
                Some(Some(RowKind::Delete)) => None,
                Some(Some(RowKind::UpdateBefore)) => continue,
                Some(None) => {
                    return exec_err!(
                        "temporal join: unknown change kind {}",
                        kinds.map_or(0, |k| k.value(i))
                    )
                }
            };
            let key: Box<[u8]> = keys.row(i).as_ref().into();
            let time = times.value(i);
            self.bytes += row.as_deref().map_or(0, <[u8]>::len) + 32;
            let list = self.versions.entry(key.clone()).or_default();
            let at = list.partition_point(|v| v.time <= time);
            list.insert(at, Version { time, row });
            if list.len() > 1 || list[0].row.is_none() {
                self.dirty.insert(key);
            }
        }
        Ok(())
    }

    /// Joins the probe rows whose time is at most `upto` and drops them.
    fn emit(&mut self, upto: i64) -> Result<Vec<RecordBatch>> {
        let later = if upto == END_OF_TIME {
            BTreeMap::new()
        } else {
            self.probes.split_off(&(upto + 1))
        };
        let ready = std::mem::replace(&mut self.probes, later);
        let spec = self.spec.clone();
        let mut probe_rows: Vec<&[u8]> = Vec::new();
        // Candidate pairs: (probe position, version row).
        let (mut probe, mut other): (Vec<u32>, Vec<&[u8]>) = (Vec::new(), Vec::new());
        for (time, list) in &ready {
            for p in list {
                let i = probe_rows.len() as u32;
                probe_rows.push(&p.row);
                self.bytes = self.bytes.saturating_sub(p.key.len() + p.row.len() + 32);
                if p.key.is_empty() {
                    continue;
                }
                let Some(versions) = self.versions.get(&p.key) else {
                    continue;
                };
                let at = versions.partition_point(|v| v.time <= *time);
                if let Some(Some(row)) = at.checked_sub(1).map(|v| versions[v].row.as_deref()) {
                    probe.push(i);
                    other.push(row);
                }
            }
        }
        let n = probe_rows.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let probe_cols = {
            let parser = self.rows[0].parser();
            self.rows[0].convert_rows(probe_rows.iter().map(|r| parser.parse(r)))?
        };
        let version_cols = {
            let parser = self.rows[1].parser();
            self.rows[1].convert_rows(other.iter().map(|r| parser.parse(r)))?
        };
        let pass = if spec.filter.is_some() && !probe.is_empty() {
            let pi = UInt32Array::from(probe.clone());
            let cols = [take_all(&probe_cols, &pi)?, version_cols.clone()].concat();
            filter_mask(spec.filter.as_ref(), &self.pairs, cols, probe.len())?
        } else {
            None
        };
        let positions: Vec<u32> = (0..other.len() as u32).collect();
        let (li, rj) = emitted(n, &probe, &positions, pass.as_ref(), spec.left_join);
        if li.is_empty() {
            return Ok(Vec::new());
        }
        let (li, rj) = (UInt32Array::from(li), UInt32Array::from(rj));
        let cols = [take_all(&probe_cols, &li)?, take_all(&version_cols, &rj)?].concat();
        let mut out = Vec::new();
        crate::push_sliced(&mut out, crate::batch_of(&spec.schema, cols, li.len())?);
        Ok(out)
    }

    /// Drops the versions no probe row after `watermark` can join: all before the one valid at
    /// the watermark, and that one too when it is a delete.
    fn clean(&mut self, watermark: i64) {
        let mut freed = 0;
        self.dirty.retain(|key| {
            let Some(list) = self.versions.get_mut(key) else {
                return false;
            };
            let valid = list.partition_point(|v| v.time <= watermark);
            if valid == 0 {
                return true;
            }
            let mut drop = valid - 1;
            if list[valid - 1].row.is_none() {
                drop = valid;
            }
            for v in list.drain(..drop) {
                freed += v.row.map_or(0, |r| r.len()) + 32;
            }
            if list.is_empty() {
                self.versions.remove(key);
                return false;
            }
            // Still dirty while a later version waits for the watermark.
            list.len() > 1
        });
        self.bytes = self.bytes.saturating_sub(freed);
    }
}

impl VersionedJoin {
    /// Restores a snapshot; with `filters` (probe input, versioned input), only the probes and
    /// versions whose key's key group is this subtask's. A probe with a NULL key (stored with
    /// an empty key: it never matches, and a LEFT join pads it) goes to the owner of key group 0.
    fn restore_owned(
        &mut self,
        state: &[u8],
        mut filters: Option<&mut InputFilters>,
    ) -> Result<()> {
        for batch in crate::decode_batches(state)? {
            if batch.num_columns() != 4 {
                return exec_err!(
                    "temporal join: the checkpoint's state has {} columns, expected 4",
                    batch.num_columns()
                );
            }
            let inputs = batch
                .column(0)
                .as_primitive::<datafusion::arrow::datatypes::UInt8Type>();
            let times = batch
                .column(1)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let keys = batch.column(2).as_binary::<i32>();
            let rows = batch.column(3).as_binary::<i32>();
            let owned = match filters.as_deref_mut() {
                Some(f) => f.owns(inputs, keys)?,
                None => vec![true; batch.num_rows()],
            };
            for i in (0..batch.num_rows()).filter(|i| owned[*i]) {
                let (time, key) = (times.value(i), Box::<[u8]>::from(keys.value(i)));
                if inputs.value(i) == 0 {
                    let row: Box<[u8]> = rows.value(i).into();
                    self.bytes += key.len() + row.len() + 32;
                    self.probes
                        .entry(time)
                        .or_default()
                        .push(Probe { key, row });
                } else {
                    let row = rows.is_valid(i).then(|| Box::<[u8]>::from(rows.value(i)));
                    self.bytes += row.as_ref().map_or(0, |r| r.len()) + 32;
                    self.versions
                        .entry(key.clone())
                        .or_default()
                        .push(Version { time, row });
                    self.dirty.insert(key);
                }
            }
        }
        Ok(())
    }
}

impl Operator for VersionedJoin {
    fn on_batch(&mut self, input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let n = batch.num_rows();
        let schema = &self.spec.inputs[input];
        let width = schema.fields().len();
        let data = crate::batch_of(schema, batch.columns()[..width].to_vec(), n)?;
        if input == 0 {
            self.add_probes(&data)?;
        } else {
            let kinds = match (self.spec.versions_updating, row_kinds(&batch)) {
                (false, _) => None,
                (true, Some(k)) => Some(k.clone()),
                (true, None) => {
                    return exec_err!("temporal join: an updating input's batch has no change kind")
                }
            };
            self.add_versions(&data, kinds.as_ref())?;
        }
        Ok(Vec::new())
    }

    fn on_watermark(&mut self, ts: i64) -> Result<Vec<RecordBatch>> {
        self.watermark = self.watermark.max(ts);
        let out = self.emit(ts)?;
        self.clean(ts);
        Ok(out)
    }

    fn on_end(&mut self) -> Result<Vec<RecordBatch>> {
        self.emit(END_OF_TIME)
    }

    /// State batches of `[input (0 probe, 1 version), time, key, row (NULL: a delete)]`.
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        let mut inputs = UInt8Builder::new();
        let mut times = Int64Builder::new();
        let mut keys = BinaryBuilder::new();
        let mut rows = BinaryBuilder::new();
        for (time, list) in &self.probes {
            for p in list {
                inputs.append_value(0);
                times.append_value(*time);
                keys.append_value(&p.key);
                rows.append_value(&p.row);
            }
        }
        for (key, list) in &self.versions {
            for v in list {
                inputs.append_value(1);
                times.append_value(v.time);
                keys.append_value(key);
                rows.append_option(v.row.as_deref());
            }
        }
        let n = datafusion::arrow::array::ArrayBuilder::len(&inputs);
        let batch = crate::state_batch(
            vec![
                Arc::new(inputs.finish()),
                Arc::new(times.finish()),
                Arc::new(keys.finish()),
                Arc::new(rows.finish()),
            ],
            n,
        )?;
        crate::encode_batches(&[batch])
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.restore_owned(state, None)
    }

    /// Every old subtask's probes and versions of this subtask's key groups.
    fn restore_rescaled(&mut self, states: &[&[u8]]) -> Result<()> {
        let mut filters = InputFilters::new(&self.spec.keys, &self.spec.inputs, &self.env)?;
        for s in states {
            self.restore_owned(s, Some(&mut filters))?;
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.bytes + self.versions.len() * 48
    }
}

#[cfg(test)]
mod tests;
