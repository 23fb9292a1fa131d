//! The Nexmark event generator, column by column (no per-event objects).
//!
//! Ids, proportions, hot auctions/bidders/sellers and sizes follow the generator of the Nexmark
//! benchmark as Flink runs it; the random numbers come from SplitMix64 seeded by `seed` and the
//! event number, so an event is the same whoever generates it.

use std::fmt::Write;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringBuilder, StructArray,
    TimestampMillisecondArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use crate::rng::SplitMix64;
use crate::Result;

const FIRST_PERSON_ID: i64 = 1000;
const FIRST_AUCTION_ID: i64 = 1000;
const FIRST_CATEGORY_ID: i64 = 10;
const NUM_CATEGORIES: u64 = 5;
const NUM_ACTIVE_PEOPLE: i64 = 1000;
const NUM_IN_FLIGHT_AUCTIONS: i64 = 100;
const PERSON_ID_LEAD: u64 = 10;
const AUCTION_ID_LEAD: u64 = 10;
/// 1 in N bids/auctions go to a random (not hot) auction/bidder/seller.
const HOT_AUCTION_RATIO: u64 = 2;
const HOT_BIDDER_RATIO: u64 = 4;
const HOT_SELLER_RATIO: u64 = 4;
const HOT_CHANNEL_RATIO: u64 = 2;
/// Hot ids are the first of each batch of this many recent ids.
const HOT_GROUP: i64 = 100;
const CHANNELS_NUMBER: u64 = 10_000;
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
const HOT_URLS: [&str; 4] = [
    "https://www.nexmark.com/googl/item.htm?query=1",
    "https://www.nexmark.com/faceb/item.htm?query=1",
    "https://www.nexmark.com/baidu/item.htm?query=1",
    "https://www.nexmark.com/apple/item.htm?query=1",
];
const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];

#[derive(Debug, Clone)]
pub struct NexmarkConfig {
    pub events_num: Option<u64>,
    pub first_event_rate: u64,
    pub person_proportion: u64,
    pub auction_proportion: u64,
    pub bid_proportion: u64,
    pub avg_person_bytes: usize,
    pub avg_auction_bytes: usize,
    pub avg_bid_bytes: usize,
    pub base_time_ms: i64,
    pub seed: u64,
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        Self {
            events_num: None,
            first_event_rate: 10_000_000,
            person_proportion: 1,
            auction_proportion: 3,
            bid_proportion: 46,
            avg_person_bytes: 200,
            avg_auction_bytes: 500,
            avg_bid_bytes: 100,
            base_time_ms: 0,
            seed: 0,
        }
    }
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

fn person_fields() -> Fields {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    Fields::from(vec![
        Field::new("id", DataType::Int64, true),
        s("name"),
        s("emailAddress"),
        s("creditCard"),
        s("city"),
        s("state"),
        Field::new("dateTime", ts_type(), true),
        s("extra"),
    ])
}

fn auction_fields() -> Fields {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    let i = |n: &str| Field::new(n, DataType::Int64, true);
    Fields::from(vec![
        i("id"),
        s("itemName"),
        s("description"),
        i("initialBid"),
        i("reserve"),
        Field::new("dateTime", ts_type(), true),
        Field::new("expires", ts_type(), true),
        i("seller"),
        i("category"),
        s("extra"),
    ])
}

fn bid_fields() -> Fields {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    let i = |n: &str| Field::new(n, DataType::Int64, true);
    Fields::from(vec![
        i("auction"),
        i("bidder"),
        i("price"),
        s("channel"),
        s("url"),
        Field::new("dateTime", ts_type(), true),
        s("extra"),
    ])
}

/// The columns the generator produces, as in Flink's Nexmark DDL.
pub fn nexmark_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_type", DataType::Int32, true),
        Field::new("person", DataType::Struct(person_fields()), true),
        Field::new("auction", DataType::Struct(auction_fields()), true),
        Field::new("bid", DataType::Struct(bid_fields()), true),
    ]))
}

/// Generates the events `subtask, subtask + parallelism, ...`.
pub struct NexmarkGenerator {
    c: NexmarkConfig,
    total: u64,
    inter_event_delay_us: f64,
    subtask: u64,
    parallelism: u64,
    /// How many events this generator has produced.
    produced: u64,
    want: [bool; 4],
    scratch: Vec<u8>,
}

struct StrCol(StringBuilder);

impl StrCol {
    fn new(rows: usize, avg: usize) -> Self {
        Self(StringBuilder::with_capacity(rows, rows * avg))
    }
    fn push(&mut self, bytes: &[u8]) {
        self.0
            .append_value(std::str::from_utf8(bytes).expect("generated text is ASCII"));
    }
    fn push_str(&mut self, s: &str) {
        self.0.append_value(s);
    }
    fn finish(mut self) -> ArrayRef {
        Arc::new(self.0.finish())
    }
}

struct Persons {
    valid: Vec<bool>,
    id: Vec<i64>,
    name: StrCol,
    email: StrCol,
    card: StrCol,
    city: StrCol,
    state: StrCol,
    time: Vec<i64>,
    extra: StrCol,
}

struct Auctions {
    valid: Vec<bool>,
    id: Vec<i64>,
    item: StrCol,
    desc: StrCol,
    initial: Vec<i64>,
    reserve: Vec<i64>,
    time: Vec<i64>,
    expires: Vec<i64>,
    seller: Vec<i64>,
    category: Vec<i64>,
    extra: StrCol,
}

struct Bids {
    valid: Vec<bool>,
    auction: Vec<i64>,
    bidder: Vec<i64>,
    price: Vec<i64>,
    channel: StrCol,
    url: StrCol,
    time: Vec<i64>,
    extra: StrCol,
}

fn struct_array(fields: Fields, children: Vec<ArrayRef>, valid: Vec<bool>) -> ArrayRef {
    Arc::new(StructArray::new(
        fields,
        children,
        Some(NullBuffer::from(valid)),
    ))
}

impl NexmarkGenerator {
    /// `columns` names the columns to build (others are skipped, saving their cost).
    pub fn new(c: NexmarkConfig, subtask: u64, parallelism: u64, columns: &[&str]) -> Self {
        let total = c.person_proportion + c.auction_proportion + c.bid_proportion;
        let want = ["event_type", "person", "auction", "bid"].map(|n| columns.contains(&n));
        let inter_event_delay_us = 1_000_000.0 / c.first_event_rate as f64;
        Self {
            c,
            total,
            inter_event_delay_us,
            subtask,
            parallelism,
            produced: 0,
            want,
            scratch: Vec::with_capacity(256),
        }
    }

    /// The number of this generator's `k`-th event.
    pub fn event_number(&self, k: u64) -> u64 {
        self.subtask + k * self.parallelism
    }

    /// Events produced so far (the checkpointed position).
    pub fn produced(&self) -> u64 {
        self.produced
    }

    pub fn base_time(&self) -> i64 {
        self.c.base_time_ms
    }

    pub fn set_base_time(&mut self, ms: i64) {
        self.c.base_time_ms = ms;
    }

    pub fn set_produced(&mut self, produced: u64) {
        self.produced = produced;
    }

    pub fn exhausted(&self) -> bool {
        self.c
            .events_num
            .is_some_and(|n| self.event_number(self.produced) >= n)
    }

    fn timestamp(&self, event: u64) -> i64 {
        self.c.base_time_ms + (event as f64 * self.inter_event_delay_us) as i64 / 1000
    }

    /// Event time of the next event relative to the base time, for wall-clock pacing.
    pub fn next_event_time_offset_ms(&self) -> i64 {
        self.timestamp(self.event_number(self.produced)) - self.c.base_time_ms
    }

    fn last_person_id(&self, e: u64) -> i64 {
        let (epoch, mut offset) = ((e / self.total) as i64, e % self.total);
        if offset >= self.c.person_proportion {
            offset = self.c.person_proportion - 1;
        }
        epoch * self.c.person_proportion as i64 + offset as i64
    }

    fn last_auction_id(&self, e: u64) -> i64 {
        let (mut epoch, mut offset) = ((e / self.total) as i64, e % self.total);
        if offset < self.c.person_proportion {
            epoch -= 1;
            offset = self.c.auction_proportion - 1;
        } else if offset >= self.c.person_proportion + self.c.auction_proportion {
            offset = self.c.auction_proportion - 1;
        } else {
            offset -= self.c.person_proportion;
        }
        epoch * self.c.auction_proportion as i64 + offset as i64
    }

    fn random_person_id(&self, e: u64, rng: &mut SplitMix64) -> i64 {
        let people = self.last_person_id(e) + 1;
        let active = people.min(NUM_ACTIVE_PEOPLE);
        people - active + rng.below(active as u64 + PERSON_ID_LEAD) as i64
    }

    fn random_auction_id(&self, e: u64, rng: &mut SplitMix64) -> i64 {
        let max = self.last_auction_id(e);
        let min = (max - NUM_IN_FLIGHT_AUCTIONS).max(0);
        min + rng.below((max - min) as u64 + 1 + AUCTION_ID_LEAD) as i64
    }

    /// Generates up to `max_rows` events.
    pub fn next_batch(&mut self, max_rows: usize) -> Result<RecordBatch> {
        let mut rows = max_rows;
        if let Some(n) = self.c.events_num {
            let left = n
                .saturating_sub(self.event_number(self.produced))
                .div_ceil(self.parallelism);
            rows = rows.min(left as usize);
        }
        let mut kinds = Vec::with_capacity(rows);
        let mut persons = self.want[1].then(|| Persons {
            valid: Vec::with_capacity(rows),
            id: Vec::with_capacity(rows),
            name: StrCol::new(rows, 1),
            email: StrCol::new(rows, 1),
            card: StrCol::new(rows, 1),
            city: StrCol::new(rows, 1),
            state: StrCol::new(rows, 1),
            time: Vec::with_capacity(rows),
            extra: StrCol::new(rows, 1),
        });
        let mut auctions = self.want[2].then(|| Auctions {
            valid: Vec::with_capacity(rows),
            id: Vec::with_capacity(rows),
            item: StrCol::new(rows, 1),
            desc: StrCol::new(rows, 4),
            initial: Vec::with_capacity(rows),
            reserve: Vec::with_capacity(rows),
            time: Vec::with_capacity(rows),
            expires: Vec::with_capacity(rows),
            seller: Vec::with_capacity(rows),
            category: Vec::with_capacity(rows),
            extra: StrCol::new(rows, 4),
        });
        let mut bids = self.want[3].then(|| Bids {
            valid: Vec::with_capacity(rows),
            auction: Vec::with_capacity(rows),
            bidder: Vec::with_capacity(rows),
            price: Vec::with_capacity(rows),
            channel: StrCol::new(rows, 8),
            url: StrCol::new(rows, 48),
            time: Vec::with_capacity(rows),
            extra: StrCol::new(rows, 72),
        });
        for _ in 0..rows {
            let e = self.event_number(self.produced);
            self.produced += 1;
            let mut rng = SplitMix64::new(self.c.seed ^ e.wrapping_mul(0xD605_BBB5_8C8A_BBB5));
            let ts = self.timestamp(e);
            let rem = e % self.total;
            let kind = if rem < self.c.person_proportion {
                0
            } else if rem < self.c.person_proportion + self.c.auction_proportion {
                1
            } else {
                2
            };
            kinds.push(kind);
            if let Some(p) = persons.as_mut() {
                if kind == 0 {
                    self.person(p, e, ts, &mut rng);
                } else {
                    p.valid.push(false);
                    p.id.push(0);
                    for col in [
                        &mut p.name,
                        &mut p.email,
                        &mut p.card,
                        &mut p.city,
                        &mut p.state,
                        &mut p.extra,
                    ] {
                        col.push(b"");
                    }
                    p.time.push(0);
                }
            }
            if let Some(a) = auctions.as_mut() {
                if kind == 1 {
                    self.auction(a, e, ts, &mut rng);
                } else {
                    a.valid.push(false);
                    for col in [
                        &mut a.id,
                        &mut a.initial,
                        &mut a.reserve,
                        &mut a.time,
                        &mut a.expires,
                        &mut a.seller,
                        &mut a.category,
                    ] {
                        col.push(0);
                    }
                    for col in [&mut a.item, &mut a.desc, &mut a.extra] {
                        col.push(b"");
                    }
                }
            }
            if let Some(b) = bids.as_mut() {
                if kind == 2 {
                    self.bid(b, e, ts, &mut rng);
                } else {
                    b.valid.push(false);
                    for col in [&mut b.auction, &mut b.bidder, &mut b.price, &mut b.time] {
                        col.push(0);
                    }
                    for col in [&mut b.channel, &mut b.url, &mut b.extra] {
                        col.push(b"");
                    }
                }
            }
        }
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        let schema = nexmark_schema();
        if self.want[0] {
            fields.push(schema.field(0).clone());
            columns.push(Arc::new(Int32Array::from(kinds)));
        }
        let ts = |v: Vec<i64>| Arc::new(TimestampMillisecondArray::from(v)) as ArrayRef;
        let i64s = |v: Vec<i64>| Arc::new(Int64Array::from(v)) as ArrayRef;
        if let Some(p) = persons {
            fields.push(schema.field(1).clone());
            let children = vec![
                i64s(p.id),
                p.name.finish(),
                p.email.finish(),
                p.card.finish(),
                p.city.finish(),
                p.state.finish(),
                ts(p.time),
                p.extra.finish(),
            ];
            columns.push(struct_array(person_fields(), children, p.valid));
        }
        if let Some(a) = auctions {
            fields.push(schema.field(2).clone());
            let children = vec![
                i64s(a.id),
                a.item.finish(),
                a.desc.finish(),
                i64s(a.initial),
                i64s(a.reserve),
                ts(a.time),
                ts(a.expires),
                i64s(a.seller),
                i64s(a.category),
                a.extra.finish(),
            ];
            columns.push(struct_array(auction_fields(), children, a.valid));
        }
        if let Some(b) = bids {
            fields.push(schema.field(3).clone());
            let children = vec![
                i64s(b.auction),
                i64s(b.bidder),
                i64s(b.price),
                b.channel.finish(),
                b.url.finish(),
                ts(b.time),
                b.extra.finish(),
            ];
            columns.push(struct_array(bid_fields(), children, b.valid));
        }
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            columns,
            &options,
        )?)
    }

    fn random_string(&mut self, rng: &mut SplitMix64, max_len: usize) -> usize {
        let len = 3 + rng.below(max_len as u64 - 3) as usize;
        rng.fill_letters(&mut self.scratch, len);
        len
    }

    /// Pads an event towards its average size, as Nexmark's `nextExtra`.
    fn extra(
        &mut self,
        rng: &mut SplitMix64,
        current: usize,
        desired_avg: usize,
        out: &mut StrCol,
    ) {
        self.scratch.clear();
        if current < desired_avg {
            let desired = desired_avg - current;
            let delta = (desired as f64 * 0.2).round() as usize;
            let len = desired - delta
                + if delta > 0 {
                    rng.below(2 * delta as u64) as usize
                } else {
                    0
                };
            rng.fill_letters(&mut self.scratch, len);
        }
        out.push(&self.scratch);
    }

    fn price(rng: &mut SplitMix64) -> i64 {
        (10f64.powf(rng.next_f64() * 6.0) * 100.0).round() as i64
    }

    fn person(&mut self, p: &mut Persons, e: u64, ts: i64, rng: &mut SplitMix64) {
        p.valid.push(true);
        p.id.push(self.last_person_id(e) + FIRST_PERSON_ID);
        let first = FIRST_NAMES[rng.below(FIRST_NAMES.len() as u64) as usize];
        let last = LAST_NAMES[rng.below(LAST_NAMES.len() as u64) as usize];
        self.scratch.clear();
        let _ = write!(ByteWriter(&mut self.scratch), "{first} {last}");
        let mut size = 8 + self.scratch.len();
        p.name.push(&self.scratch);
        self.scratch.clear();
        rng.fill_letters(&mut self.scratch, 7);
        self.scratch.push(b'@');
        rng.fill_letters(&mut self.scratch, 5);
        self.scratch.extend_from_slice(b".com");
        size += self.scratch.len();
        p.email.push(&self.scratch);
        self.scratch.clear();
        let _ = write!(
            ByteWriter(&mut self.scratch),
            "{:04} {:04} {:04} {:04}",
            rng.below(10_000),
            rng.below(10_000),
            rng.below(10_000),
            rng.below(10_000)
        );
        size += self.scratch.len();
        p.card.push(&self.scratch);
        let city = US_CITIES[rng.below(US_CITIES.len() as u64) as usize];
        let state = US_STATES[rng.below(US_STATES.len() as u64) as usize];
        size += city.len() + state.len();
        p.city.push_str(city);
        p.state.push_str(state);
        p.time.push(ts);
        let avg = self.c.avg_person_bytes;
        self.extra(rng, size, avg, &mut p.extra);
    }

    fn auction(&mut self, a: &mut Auctions, e: u64, ts: i64, rng: &mut SplitMix64) {
        a.valid.push(true);
        a.id.push(self.last_auction_id(e) + FIRST_AUCTION_ID);
        let seller = if rng.below(HOT_SELLER_RATIO) > 0 {
            (self.last_person_id(e) / HOT_GROUP) * HOT_GROUP
        } else {
            self.random_person_id(e, rng)
        };
        a.seller.push(seller + FIRST_PERSON_ID);
        a.category
            .push(FIRST_CATEGORY_ID + rng.below(NUM_CATEGORIES) as i64);
        let initial = Self::price(rng);
        a.initial.push(initial);
        // Auctions last about as long as it takes to generate NUM_IN_FLIGHT_AUCTIONS more.
        let events_ahead = (NUM_IN_FLIGHT_AUCTIONS as u64 * self.total) / self.c.auction_proportion;
        let horizon_ms = self.timestamp(e + events_ahead) - ts;
        a.expires
            .push(ts + 1 + rng.below((horizon_ms * 2).max(1) as u64) as i64);
        self.scratch.clear();
        let name_len = self.random_string(rng, 20);
        a.item.push(&self.scratch);
        self.scratch.clear();
        let desc_len = self.random_string(rng, 100);
        a.desc.push(&self.scratch);
        a.reserve.push(initial + Self::price(rng));
        a.time.push(ts);
        let avg = self.c.avg_auction_bytes;
        self.extra(rng, 8 + name_len + desc_len + 40, avg, &mut a.extra);
    }

    fn bid(&mut self, b: &mut Bids, e: u64, ts: i64, rng: &mut SplitMix64) {
        b.valid.push(true);
        let auction = if rng.below(HOT_AUCTION_RATIO) > 0 {
            (self.last_auction_id(e) / HOT_GROUP) * HOT_GROUP
        } else {
            self.random_auction_id(e, rng)
        };
        b.auction.push(auction + FIRST_AUCTION_ID);
        let bidder = if rng.below(HOT_BIDDER_RATIO) > 0 {
            (self.last_person_id(e) / HOT_GROUP) * HOT_GROUP + 1
        } else {
            self.random_person_id(e, rng)
        };
        b.bidder.push(bidder + FIRST_PERSON_ID);
        b.price.push(Self::price(rng));
        if rng.below(HOT_CHANNEL_RATIO) > 0 {
            let i = rng.below(HOT_CHANNELS.len() as u64) as usize;
            b.channel.push_str(HOT_CHANNELS[i]);
            b.url.push_str(HOT_URLS[i]);
        } else {
            let n = rng.below(CHANNELS_NUMBER);
            self.scratch.clear();
            let _ = write!(ByteWriter(&mut self.scratch), "channel-{n}");
            b.channel.push(&self.scratch);
            self.scratch.clear();
            self.scratch.extend_from_slice(b"https://www.nexmark.com/");
            for _ in 0..3 {
                rng.fill_letters(&mut self.scratch, 5);
                self.scratch.push(b'/');
            }
            let _ = write!(
                ByteWriter(&mut self.scratch),
                "item.htm?query=1&channel_id={n}"
            );
            b.url.push(&self.scratch);
        }
        b.time.push(ts);
        let avg = self.c.avg_bid_bytes;
        self.extra(rng, 32, avg, &mut b.extra);
    }
}

/// `fmt::Write` into a byte buffer (the text is ASCII).
struct ByteWriter<'a>(&'a mut Vec<u8>);

impl Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int32Type;

    fn all(config: NexmarkConfig, parallelism: u64) -> Vec<RecordBatch> {
        let cols = ["event_type", "person", "auction", "bid"];
        (0..parallelism)
            .flat_map(|s| {
                let mut g = NexmarkGenerator::new(config.clone(), s, parallelism, &cols);
                let mut out = Vec::new();
                while !g.exhausted() {
                    out.push(g.next_batch(7).unwrap());
                }
                out
            })
            .collect()
    }

    #[test]
    fn proportions_and_determinism() {
        let config = NexmarkConfig {
            events_num: Some(500),
            base_time_ms: 1_000,
            ..Default::default()
        };
        let one = all(config.clone(), 1);
        let rows: usize = one.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 500);
        let mut counts = [0; 3];
        for b in &one {
            for k in b.column(0).as_primitive::<Int32Type>().values() {
                counts[*k as usize] += 1;
            }
            assert_eq!(
                b.column(3).as_struct().null_count(),
                b.num_rows()
                    - b.column(0)
                        .as_primitive::<Int32Type>()
                        .values()
                        .iter()
                        .filter(|k| **k == 2)
                        .count()
            );
        }
        assert_eq!(counts, [10, 30, 460]);
        // Same events whatever the parallelism (as a multiset of rows).
        let render = |bs: &[RecordBatch]| {
            let mut rows: Vec<String> = bs
                .iter()
                .flat_map(|b| flowline_formats::text::flink_rows(b).unwrap())
                .collect();
            rows.sort();
            rows
        };
        assert_eq!(render(&one), render(&all(config, 3)));
    }
}
