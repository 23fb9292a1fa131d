//! The retracting accumulators of updating aggregations (group and OVER aggregations): COUNT,
//! SUM, AVG, MIN and MAX over dense group ids, each with DISTINCT and FILTER; they add and
//! retract rows and give a group's current value without consuming it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Float64Array, Int64Array, UInt32Array,
};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Float64Type};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{exec_err, Result};

use crate::group_agg::{AggFunction, GroupAggregateCall};

/// A retracting accumulator over dense group ids.
pub(crate) trait Acc: Send {
    fn resize(&mut self, groups: usize);
    /// Adds (`adds[i]`) or retracts row `i`'s value in group `gids[i]`, for the rows `counted`
    /// keeps ([`counted_rows`]).
    fn update(
        &mut self,
        values: &ArrayRef,
        gids: &[u32],
        adds: &[bool],
        counted: Option<&BooleanBuffer>,
    ) -> Result<()>;
    /// The current value of each of `groups` (NULL where it has none).
    fn evaluate(&mut self, groups: &[u32]) -> Result<ArrayRef>;
    /// Forgets a deleted group.
    fn reset(&mut self, g: u32);
    fn save(&self, g: u32, out: &mut Vec<u8>);
    fn load(&mut self, g: u32, bytes: &mut &[u8]) -> Result<()>;
    fn size(&self) -> usize;
}

pub(crate) fn new_acc(call: &GroupAggregateCall, retracting: bool) -> Result<Box<dyn Acc>> {
    let values = || RowConverter::new(vec![SortField::new(call.arg_type.clone())]);
    let inner: Box<dyn Acc> = match call.function {
        AggFunction::Count => Box::new(CountAcc { counts: Vec::new() }),
        AggFunction::Sum | AggFunction::Avg => Box::new(SumAcc::new(
            call.function == AggFunction::Avg,
            &call.arg_type,
            &call.output,
        )?),
        // MIN(DISTINCT x) is MIN(x).
        AggFunction::Min | AggFunction::Max => {
            return Ok(Box::new(MinMaxAcc {
                max: call.function == AggFunction::Max,
                retracting,
                conv: values()?,
                best: Vec::new(),
                bags: Vec::new(),
            }))
        }
    };
    if call.distinct {
        return Ok(Box::new(DistinctAcc {
            conv: values()?,
            seen: Vec::new(),
            inner,
        }));
    }
    Ok(inner)
}

/// The rows an aggregate counts: kept by its FILTER, and its value not NULL (`None`: all).
pub(crate) fn counted_rows(
    values: &ArrayRef,
    filter: Option<&BooleanArray>,
) -> Option<BooleanBuffer> {
    let valid = values.logical_nulls().map(|n| n.into_inner());
    let kept = filter.map(|f| match f.nulls() {
        Some(n) => f.values() & n.inner(),
        None => f.values().clone(),
    });
    match (valid, kept) {
        (Some(a), Some(b)) => Some(&a & &b),
        (a, b) => a.or(b),
    }
}

/// Calls `f(row, group, add)` for each row an aggregate counts.
fn each_counted(
    gids: &[u32],
    adds: &[bool],
    counted: Option<&BooleanBuffer>,
    mut f: impl FnMut(usize, usize, bool),
) {
    for (i, (g, add)) in gids.iter().zip(adds).enumerate() {
        if counted.is_none_or(|c| c.value(i)) {
            f(i, *g as usize, *add);
        }
    }
}

fn sign(add: bool) -> i64 {
    if add {
        1
    } else {
        -1
    }
}

struct CountAcc {
    counts: Vec<i64>,
}

impl Acc for CountAcc {
    fn resize(&mut self, groups: usize) {
        self.counts.resize(groups, 0);
    }
    fn update(
        &mut self,
        _values: &ArrayRef,
        gids: &[u32],
        adds: &[bool],
        counted: Option<&BooleanBuffer>,
    ) -> Result<()> {
        each_counted(gids, adds, counted, |_, g, add| self.counts[g] += sign(add));
        Ok(())
    }
    fn evaluate(&mut self, groups: &[u32]) -> Result<ArrayRef> {
        Ok(Arc::new(Int64Array::from_iter_values(
            groups.iter().map(|g| self.counts[*g as usize]),
        )))
    }
    fn reset(&mut self, g: u32) {
        self.counts[g as usize] = 0;
    }
    fn save(&self, g: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.counts[g as usize].to_le_bytes());
    }
    fn load(&mut self, g: u32, bytes: &mut &[u8]) -> Result<()> {
        self.counts[g as usize] = i64::from_le_bytes(take_bytes(bytes)?);
        Ok(())
    }
    fn size(&self) -> usize {
        self.counts.capacity() * 8
    }
}

/// SUM and AVG: exact sums in `i128` for integers and decimals (integers as DECIMAL(38, 0)),
/// `f64` for floating point.
struct SumAcc {
    avg: bool,
    output: DataType,
    /// Input values are cast to this before summing: `Float64` or `Decimal128(38, scale)`.
    input: DataType,
    /// The sums: `floats` for a `Float64` input, else `ints`.
    ints: Vec<i128>,
    floats: Vec<f64>,
    /// Non-NULL values summed.
    n: Vec<i64>,
}

impl SumAcc {
    fn new(avg: bool, arg: &DataType, output: &DataType) -> Result<Self> {
        let input = match (arg, output) {
            (DataType::Decimal128(_, s) | DataType::Decimal256(_, s), _) => {
                DataType::Decimal128(38, *s)
            }
            (_, DataType::Float16 | DataType::Float32 | DataType::Float64) => DataType::Float64,
            (a, _) if a.is_integer() => DataType::Decimal128(38, 0),
            (a, _) if a.is_floating() => DataType::Float64,
            (a, o) => {
                return exec_err!(
                    "SUM/AVG over {a} (giving {o}) is not supported in an updating aggregation"
                )
            }
        };
        Ok(Self {
            avg,
            output: output.clone(),
            input,
            ints: Vec::new(),
            floats: Vec::new(),
            n: Vec::new(),
        })
    }

    fn floating(&self) -> bool {
        self.input == DataType::Float64
    }
}

impl Acc for SumAcc {
    fn resize(&mut self, groups: usize) {
        if self.floating() {
            self.floats.resize(groups, 0.0);
        } else {
            self.ints.resize(groups, 0);
        }
        self.n.resize(groups, 0);
    }
    fn update(
        &mut self,
        values: &ArrayRef,
        gids: &[u32],
        adds: &[bool],
        counted: Option<&BooleanBuffer>,
    ) -> Result<()> {
        let v = cast(values, &self.input)?;
        let (ints, floats, n) = (&mut self.ints, &mut self.floats, &mut self.n);
        if let Some(v) = v.as_primitive_opt::<Float64Type>() {
            each_counted(gids, adds, counted, |i, g, add| {
                floats[g] += if add { v.value(i) } else { -v.value(i) };
                n[g] += sign(add);
            });
        } else {
            // Decimals (and integers) are summed exactly at the input's scale; the result's
            // scale is applied when it is evaluated.
            let v = v.as_primitive::<Decimal128Type>();
            each_counted(gids, adds, counted, |i, g, add| {
                ints[g] += if add { v.value(i) } else { -v.value(i) };
                n[g] += sign(add);
            });
        }
        Ok(())
    }
    fn evaluate(&mut self, groups: &[u32]) -> Result<ArrayRef> {
        let valid = |g: &u32| self.n[*g as usize] > 0;
        Ok(match (&self.input, &self.output) {
            (DataType::Float64, _) => Arc::new(Float64Array::from_iter(groups.iter().map(|g| {
                let (s, n) = (self.floats[*g as usize], self.n[*g as usize]);
                valid(g).then(|| if self.avg { s / n as f64 } else { s })
            }))),
            (_, out) if out.is_integer() => {
                let wide = Int64Array::from_iter(groups.iter().map(|g| {
                    let (s, n) = (self.ints[*g as usize], self.n[*g as usize] as i128);
                    // Integer AVG truncates toward zero, as Flink (Java) does.
                    valid(g).then(|| if self.avg { (s / n) as i64 } else { s as i64 })
                }));
                // SUM(INT) is an INT in Flink, wrapping as Java's arithmetic.
                flowline_common::integers::wrap_to(&wide, out).unwrap_or_else(|| Arc::new(wide))
            }
            (DataType::Decimal128(_, in_scale), out) => {
                let (p, s) = match out {
                    DataType::Decimal128(p, s) => (*p, *s),
                    _ => (38, *in_scale),
                };
                let up = 10i128
                    .checked_pow((s - in_scale).max(0) as u32)
                    .unwrap_or(1);
                let a = Decimal128Array::from_iter(groups.iter().map(|g| {
                    let (sum, n) = (self.ints[*g as usize], self.n[*g as usize] as i128);
                    valid(g).then(|| {
                        if self.avg {
                            sum.saturating_mul(up) / n
                        } else {
                            sum.saturating_mul(up)
                        }
                    })
                }));
                Arc::new(a.with_precision_and_scale(p, s)?)
            }
            (other, _) => {
                return exec_err!(
                    "SUM/AVG over {other} is not supported in an updating aggregation"
                )
            }
        })
    }
    fn reset(&mut self, g: u32) {
        let g = g as usize;
        if self.floating() {
            self.floats[g] = 0.0;
        } else {
            self.ints[g] = 0;
        }
        self.n[g] = 0;
    }
    fn save(&self, g: u32, out: &mut Vec<u8>) {
        let g = g as usize;
        if self.floating() {
            out.extend_from_slice(&self.floats[g].to_le_bytes());
        } else {
            out.extend_from_slice(&self.ints[g].to_le_bytes());
        }
        out.extend_from_slice(&self.n[g].to_le_bytes());
    }
    fn load(&mut self, g: u32, bytes: &mut &[u8]) -> Result<()> {
        let g = g as usize;
        if self.floating() {
            self.floats[g] = f64::from_le_bytes(take_bytes(bytes)?);
        } else {
            self.ints[g] = i128::from_le_bytes(take_bytes(bytes)?);
        }
        self.n[g] = i64::from_le_bytes(take_bytes(bytes)?);
        Ok(())
    }
    fn size(&self) -> usize {
        self.ints.capacity() * 16 + self.floats.capacity() * 8 + self.n.capacity() * 8
    }
}

/// MIN and MAX over values in Arrow's row format (whose byte order is the value order). An
/// append-only input keeps the best value per group; an updating input keeps a count per value.
struct MinMaxAcc {
    max: bool,
    retracting: bool,
    conv: RowConverter,
    best: Vec<Option<Box<[u8]>>>,
    bags: Vec<BTreeMap<Box<[u8]>, u32>>,
}

impl MinMaxAcc {
    fn current(&self, g: usize) -> Option<&[u8]> {
        if self.retracting {
            let bag = self.bags.get(g)?;
            if self.max {
                bag.keys().next_back()
            } else {
                bag.keys().next()
            }
            .map(|k| &**k)
        } else {
            self.best.get(g)?.as_deref()
        }
    }
}

impl Acc for MinMaxAcc {
    fn resize(&mut self, groups: usize) {
        if self.retracting {
            self.bags.resize_with(groups, BTreeMap::new);
        } else {
            self.best.resize(groups, None);
        }
    }
    fn update(
        &mut self,
        values: &ArrayRef,
        gids: &[u32],
        adds: &[bool],
        counted: Option<&BooleanBuffer>,
    ) -> Result<()> {
        let rows = self.conv.convert_columns(std::slice::from_ref(values))?;
        for (i, (g, add)) in gids.iter().zip(adds).enumerate() {
            if counted.is_some_and(|c| !c.value(i)) {
                continue;
            }
            let (v, g) = (rows.row(i), *g as usize);
            if self.retracting {
                let bag = &mut self.bags[g];
                if *add {
                    *bag.entry(v.as_ref().into()).or_insert(0) += 1;
                } else if let Some(c) = bag.get_mut(v.as_ref()) {
                    *c -= 1;
                    if *c == 0 {
                        bag.remove(v.as_ref());
                    }
                }
            } else if *add {
                let better = self.best[g].as_deref().is_none_or(|b| {
                    if self.max {
                        v.as_ref() > b
                    } else {
                        v.as_ref() < b
                    }
                });
                if better {
                    self.best[g] = Some(v.as_ref().into());
                }
            } else {
                return exec_err!("MIN/MAX received a retraction on an append-only input");
            }
        }
        Ok(())
    }
    fn evaluate(&mut self, groups: &[u32]) -> Result<ArrayRef> {
        let conv = &self.conv;
        let parser = conv.parser();
        let picked: Vec<Option<&[u8]>> = groups.iter().map(|g| self.current(*g as usize)).collect();
        let present: Vec<u32> = picked
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_some())
            .map(|(i, _)| i as u32)
            .collect();
        let values = conv
            .convert_rows(picked.iter().flatten().map(|b| parser.parse(b)))?
            .remove(0);
        if present.len() == groups.len() {
            return Ok(values);
        }
        // Spread the present values over their positions; the others are NULL.
        let mut idx: Vec<Option<u32>> = vec![None; groups.len()];
        for (k, pos) in present.iter().enumerate() {
            idx[*pos as usize] = Some(k as u32);
        }
        Ok(take(&values, &UInt32Array::from(idx), None)?)
    }
    fn reset(&mut self, g: u32) {
        if self.retracting {
            self.bags[g as usize].clear();
        } else {
            self.best[g as usize] = None;
        }
    }
    fn save(&self, g: u32, out: &mut Vec<u8>) {
        if self.retracting {
            for (v, c) in &self.bags[g as usize] {
                put_bytes(out, v);
                out.extend_from_slice(&c.to_le_bytes());
            }
        } else if let Some(b) = &self.best[g as usize] {
            put_bytes(out, b);
        }
    }
    fn load(&mut self, g: u32, bytes: &mut &[u8]) -> Result<()> {
        let g = g as usize;
        while !bytes.is_empty() {
            let v: Box<[u8]> = get_bytes(bytes)?.into();
            if self.retracting {
                let c = u32::from_le_bytes(take_bytes(bytes)?);
                self.bags[g].insert(v, c);
            } else {
                self.best[g] = Some(v);
            }
        }
        Ok(())
    }
    fn size(&self) -> usize {
        let bags: usize = self
            .bags
            .iter()
            .map(|b| b.keys().map(|k| k.len() + 40).sum::<usize>())
            .sum();
        let best: usize = self
            .best
            .iter()
            .map(|b| b.as_ref().map_or(0, |b| b.len()) + 16)
            .sum();
        bags + best
    }
}

/// DISTINCT: counts each group's values and passes a value to the inner accumulator only when it
/// first appears (and retracts it when its last row is retracted).
struct DistinctAcc {
    conv: RowConverter,
    seen: Vec<HashMap<Box<[u8]>, u32>>,
    inner: Box<dyn Acc>,
}

impl Acc for DistinctAcc {
    fn resize(&mut self, groups: usize) {
        self.seen.resize_with(groups, HashMap::new);
        self.inner.resize(groups);
    }
    fn update(
        &mut self,
        values: &ArrayRef,
        gids: &[u32],
        adds: &[bool],
        counted: Option<&BooleanBuffer>,
    ) -> Result<()> {
        let rows = self.conv.convert_columns(std::slice::from_ref(values))?;
        let (mut pick, mut pick_gids, mut pick_adds) = (Vec::new(), Vec::new(), Vec::new());
        for (i, (g, add)) in gids.iter().zip(adds).enumerate() {
            if counted.is_some_and(|c| !c.value(i)) {
                continue;
            }
            let (v, seen) = (rows.row(i), &mut self.seen[*g as usize]);
            let changed = if *add {
                let c = seen.entry(v.as_ref().into()).or_insert(0);
                *c += 1;
                *c == 1
            } else {
                match seen.get_mut(v.as_ref()) {
                    Some(c) if *c > 1 => {
                        *c -= 1;
                        false
                    }
                    Some(_) => {
                        seen.remove(v.as_ref());
                        true
                    }
                    None => false,
                }
            };
            if changed {
                pick.push(i as u32);
                pick_gids.push(*g);
                pick_adds.push(*add);
            }
        }
        if pick.is_empty() {
            return Ok(());
        }
        let picked = take(values, &UInt32Array::from(pick), None)?;
        self.inner.update(&picked, &pick_gids, &pick_adds, None)
    }
    fn evaluate(&mut self, groups: &[u32]) -> Result<ArrayRef> {
        self.inner.evaluate(groups)
    }
    fn reset(&mut self, g: u32) {
        self.seen[g as usize].clear();
        self.inner.reset(g);
    }
    fn save(&self, g: u32, out: &mut Vec<u8>) {
        let seen = &self.seen[g as usize];
        out.extend_from_slice(&(seen.len() as u64).to_le_bytes());
        for (v, c) in seen {
            put_bytes(out, v);
            out.extend_from_slice(&c.to_le_bytes());
        }
        self.inner.save(g, out);
    }
    fn load(&mut self, g: u32, bytes: &mut &[u8]) -> Result<()> {
        let n = u64::from_le_bytes(take_bytes(bytes)?);
        let seen = &mut self.seen[g as usize];
        for _ in 0..n {
            let v: Box<[u8]> = get_bytes(bytes)?.into();
            seen.insert(v, u32::from_le_bytes(take_bytes(bytes)?));
        }
        self.inner.load(g, bytes)
    }
    fn size(&self) -> usize {
        self.seen
            .iter()
            .map(|s| s.keys().map(|k| k.len() + 32).sum::<usize>())
            .sum::<usize>()
            + self.inner.size()
    }
}

fn take_bytes<const N: usize>(bytes: &mut &[u8]) -> Result<[u8; N]> {
    let Some((head, rest)) = bytes.split_first_chunk::<N>() else {
        return exec_err!("group aggregate: the checkpoint's state is truncated");
    };
    *bytes = rest;
    Ok(*head)
}

fn put_bytes(out: &mut Vec<u8>, v: &[u8]) {
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    out.extend_from_slice(v);
}

fn get_bytes<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8]> {
    let n = u32::from_le_bytes(take_bytes(bytes)?) as usize;
    if bytes.len() < n {
        return exec_err!("group aggregate: the checkpoint's state is truncated");
    }
    let (v, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(v)
}
