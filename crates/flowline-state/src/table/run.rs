//! Sorted runs: immutable files of `(key, value)` entries in key order, the unit that a state
//! table spills to local disk and that checkpoints share (a run written once is referenced by
//! every later checkpoint that still needs it).
//!
//! ```text
//! block*   entries (varint key length, varint value length + 1 or 0 for a delete, key,
//!          value), then the block's CRC-32; a block closes past BLOCK_BYTES
//! index    per block: varint first-key length, first key, u64 offset, u32 length
//! bloom    BLOOM_BITS_PER_KEY bits per entry, BLOOM_HASHES probes
//! footer   u64 index offset, u64 bloom offset, u64 entries, u16 first and last key group,
//!          u32 format version, u32 CRC-32 of index and bloom, magic "FLR1"
//! ```
//!
//! A reader keeps the index and the bloom filter in memory (about 1.3 bytes per entry plus one
//! key per block) and reads blocks with positioned reads, verifying each block's checksum.
//! Keys start with their two-byte key group, so a run knows which key groups it holds and a
//! restore at another parallelism takes the runs that overlap its key groups.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"FLR1";
const VERSION: u32 = 1;
const FOOTER_BYTES: usize = 8 + 8 + 8 + 2 + 2 + 4 + 4 + 4;
/// Uncompressed bytes per block: one positioned read serves a point lookup.
const BLOCK_BYTES: usize = 4 << 10;
const BLOOM_BITS_PER_KEY: usize = 10;
const BLOOM_HASHES: u32 = 7;

/// Where an entry lies in a block's data: key range, value range (`None`: a delete), and
/// where the next entry starts.
pub(crate) type EntryAt = (
    std::ops::Range<usize>,
    Option<std::ops::Range<usize>>,
    usize,
);

/// A key's entry in a run: its value, or a delete that hides older runs' values.
pub type Entry = Option<Vec<u8>>;

fn corrupt(path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("state run {}: {what}", path.display()),
    )
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// A hash of key bytes that never changes between builds (run files outlive the process).
fn stable_hash(key: &[u8]) -> u64 {
    // FNV-1a, then murmur3's finaliser to spread the bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn bloom_probes(key: &[u8], bits: u64) -> impl Iterator<Item = u64> {
    let h = stable_hash(key);
    let (h1, h2) = (h, h.rotate_left(32) | 1);
    (0..u64::from(BLOOM_HASHES)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % bits)
}

/// The key group a stored key starts with.
pub fn key_group_of(key: &[u8]) -> u16 {
    u16::from_be_bytes([
        key.first().copied().unwrap_or(0),
        key.get(1).copied().unwrap_or(0),
    ])
}

/// Writes a run; entries must come in strictly ascending key order. Its memory is one block,
/// the index and the bloom filter (sized up front: a writer holds no keys).
pub struct RunWriter {
    path: PathBuf,
    out: BufWriter<File>,
    offset: u64,
    block: Vec<u8>,
    /// The first key of the open block, if it has one.
    block_first: Option<Vec<u8>>,
    index: Vec<u8>,
    bloom: Vec<u8>,
    first_key_group: Option<u16>,
    last: Vec<u8>,
    entries: u64,
    capacity: u64,
}

/// The least bloom filter for `entries` keys, in bytes (whole bytes: a reader knows the
/// filter's size in bits from its length).
fn bloom_bytes(entries: u64) -> usize {
    (entries as usize * BLOOM_BITS_PER_KEY).max(64).div_ceil(8)
}

impl RunWriter {
    /// A writer of at most `capacity` entries (the bloom filter is sized for that many; a
    /// merge passes the entries of its inputs, some of which it may drop).
    pub fn create(path: &Path, capacity: u64) -> io::Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(256 << 10, File::create(path)?),
            offset: 0,
            block: Vec::with_capacity(BLOCK_BYTES + 1024),
            block_first: None,
            index: Vec::new(),
            // A power of two, so that it folds down to what the entries need (see `finish`).
            bloom: vec![0; bloom_bytes(capacity).next_power_of_two()],
            first_key_group: None,
            last: Vec::new(),
            entries: 0,
            capacity,
        })
    }

    pub fn add(&mut self, key: &[u8], value: Option<&[u8]>) -> io::Result<()> {
        if self.entries > 0 && *self.last >= *key {
            return Err(io::Error::other(format!(
                "state run {}: keys out of order (a bug in Flowline)",
                self.path.display()
            )));
        }
        if self.entries == self.capacity {
            return Err(io::Error::other(format!(
                "state run {}: more than the {} entries it was made for (a bug in Flowline)",
                self.path.display(),
                self.capacity
            )));
        }
        if self.block_first.is_none() {
            self.block_first = Some(key.to_vec());
        }
        put_varint(&mut self.block, key.len() as u64);
        put_varint(&mut self.block, value.map_or(0, |v| v.len() as u64 + 1));
        self.block.extend_from_slice(key);
        if let Some(v) = value {
            self.block.extend_from_slice(v);
        }
        let bits = self.bloom.len() as u64 * 8;
        for p in bloom_probes(key, bits) {
            self.bloom[(p / 8) as usize] |= 1 << (p % 8);
        }
        self.first_key_group.get_or_insert(key_group_of(key));
        self.last.clear();
        self.last.extend_from_slice(key);
        self.entries += 1;
        if self.block.len() >= BLOCK_BYTES {
            self.close_block()?;
        }
        Ok(())
    }

    fn close_block(&mut self) -> io::Result<()> {
        let Some(first) = self.block_first.take() else {
            return Ok(());
        };
        let crc = crc32fast::hash(&self.block);
        self.block.extend_from_slice(&crc.to_le_bytes());
        self.out.write_all(&self.block)?;
        put_varint(&mut self.index, first.len() as u64);
        self.index.extend_from_slice(&first);
        self.index.extend_from_slice(&self.offset.to_le_bytes());
        self.index
            .extend_from_slice(&(self.block.len() as u32).to_le_bytes());
        self.offset += self.block.len() as u64;
        self.block.clear();
        Ok(())
    }

    /// Completes the file (synced) and opens it for reading.
    pub fn finish(mut self) -> io::Result<Run> {
        self.close_block()?;
        // A merge that dropped entries made the filter bigger than needed: halving it while
        // still as big folds it (a probe's bit p of 2n is bit p mod n), keeping what it says.
        let mut bloom = std::mem::take(&mut self.bloom);
        while bloom.len().is_multiple_of(2) && bloom.len() / 2 >= bloom_bytes(self.entries) {
            let half = bloom.len() / 2;
            let (low, high) = bloom.split_at_mut(half);
            for (l, h) in low.iter_mut().zip(high.iter()) {
                *l |= *h;
            }
            bloom.truncate(half);
        }
        let first_kg = self.first_key_group.unwrap_or(0);
        let last_kg = match self.entries {
            0 => 0,
            _ => key_group_of(&self.last),
        };
        let index_offset = self.offset;
        let bloom_offset = index_offset + self.index.len() as u64;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&self.index);
        crc.update(&bloom);
        let mut footer = Vec::with_capacity(FOOTER_BYTES);
        footer.extend_from_slice(&index_offset.to_le_bytes());
        footer.extend_from_slice(&bloom_offset.to_le_bytes());
        footer.extend_from_slice(&self.entries.to_le_bytes());
        footer.extend_from_slice(&first_kg.to_le_bytes());
        footer.extend_from_slice(&last_kg.to_le_bytes());
        footer.extend_from_slice(&VERSION.to_le_bytes());
        footer.extend_from_slice(&crc.finalize().to_le_bytes());
        footer.extend_from_slice(MAGIC);
        self.out.write_all(&self.index)?;
        self.out.write_all(&bloom)?;
        self.out.write_all(&footer)?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        Run::open(&self.path)
    }
}

/// One block's place in the file.
struct BlockRef {
    first: Vec<u8>,
    offset: u64,
    len: u32,
}

/// An open run: its index and bloom filter in memory, its blocks on disk.
pub struct Run {
    path: PathBuf,
    file: File,
    blocks: Vec<BlockRef>,
    bloom: Vec<u8>,
    pub entries: u64,
    /// The first and last key group of its keys.
    pub key_groups: (u16, u16),
    pub bytes: u64,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Run({}, {} entries)", self.path.display(), self.entries)
    }
}

impl Run {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let bytes = file.metadata()?.len();
        if bytes < FOOTER_BYTES as u64 {
            return Err(corrupt(path, format!("{bytes} bytes is too short")));
        }
        let mut footer = [0u8; FOOTER_BYTES];
        file.read_exact_at(&mut footer, bytes - FOOTER_BYTES as u64)?;
        if &footer[FOOTER_BYTES - 4..] != MAGIC {
            return Err(corrupt(path, "not a state run (bad magic)"));
        }
        let u64_at = |i: usize| u64::from_le_bytes(footer[i..i + 8].try_into().expect("8"));
        let u16_at = |i: usize| u16::from_le_bytes(footer[i..i + 2].try_into().expect("2"));
        let u32_at = |i: usize| u32::from_le_bytes(footer[i..i + 4].try_into().expect("4"));
        let (index_offset, bloom_offset, entries) = (u64_at(0), u64_at(8), u64_at(16));
        let version = u32_at(28);
        if version != VERSION {
            return Err(corrupt(
                path,
                format!("format version {version}, this build reads {VERSION}"),
            ));
        }
        let end = bytes - FOOTER_BYTES as u64;
        if index_offset > bloom_offset || bloom_offset > end {
            return Err(corrupt(path, "footer offsets out of range"));
        }
        let mut meta = vec![0u8; (end - index_offset) as usize];
        file.read_exact_at(&mut meta, index_offset)?;
        if crc32fast::hash(&meta) != u32_at(32) {
            return Err(corrupt(path, "index checksum mismatch"));
        }
        let bloom = meta.split_off((bloom_offset - index_offset) as usize);
        let mut blocks = Vec::new();
        let mut at = 0;
        while at < meta.len() {
            let n = get_varint(&meta, &mut at).ok_or_else(|| corrupt(path, "bad index"))? as usize;
            let first = meta
                .get(at..at + n)
                .ok_or_else(|| corrupt(path, "bad index"))?;
            let rest = meta
                .get(at + n..at + n + 12)
                .ok_or_else(|| corrupt(path, "bad index"))?;
            blocks.push(BlockRef {
                first: first.to_vec(),
                offset: u64::from_le_bytes(rest[..8].try_into().expect("8")),
                len: u32::from_le_bytes(rest[8..].try_into().expect("4")),
            });
            at += n + 12;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            blocks,
            bloom,
            entries,
            key_groups: (u16_at(24), u16_at(26)),
            bytes,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's name: its identity in checkpoints, which share runs by name.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    }

    /// The whole file (read through the open handle: the directory entry may be gone).
    /// Fills `buf` with the run's bytes from `offset` (for an upload a part at a time).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; self.bytes as usize];
        self.file.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }

    /// Block `i`'s entries (checksum verified) into `buf`, replacing what it held; false
    /// past the last block. For scans that reuse one buffer per run.
    pub(crate) fn read_block_into(&self, i: usize, buf: &mut Vec<u8>) -> io::Result<bool> {
        let Some(b) = self.blocks.get(i) else {
            return Ok(false);
        };
        self.fill_block(b, buf)?;
        Ok(true)
    }

    /// Block `b`'s entries into `buf`, its checksum verified.
    fn fill_block(&self, b: &BlockRef, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        buf.resize(b.len as usize, 0);
        self.file.read_exact_at(buf, b.offset)?;
        let n = buf
            .len()
            .checked_sub(4)
            .ok_or_else(|| corrupt(&self.path, "short block"))?;
        let stored = u32::from_le_bytes(buf[n..].try_into().expect("4"));
        if crc32fast::hash(&buf[..n]) != stored {
            return Err(corrupt(
                &self.path,
                format!("block at byte {}: checksum mismatch", b.offset),
            ));
        }
        buf.truncate(n);
        Ok(())
    }

    /// The entry of block data `data` at byte `at`: (key range, value range or `None` for a
    /// delete), and where the next one starts; `None` at the end of the block.
    pub(crate) fn entry_at(&self, data: &[u8], at: usize) -> io::Result<Option<EntryAt>> {
        let mut entries = BlockEntries { data, at };
        let Some(e) = entries.next_entry() else {
            return Ok(None);
        };
        let (k, v) = e.map_err(|w| corrupt(&self.path, w))?;
        let offset = |s: &[u8]| s.as_ptr() as usize - data.as_ptr() as usize;
        let key = offset(k)..offset(k) + k.len();
        let value = v.map(|v| offset(v)..offset(v) + v.len());
        Ok(Some((key, value, entries.at)))
    }

    fn read_block(&self, b: &BlockRef) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.fill_block(b, &mut buf)?;
        Ok(buf)
    }

    /// The entry for `key`: `None` when the run does not hold it.
    pub fn get(&self, key: &[u8]) -> io::Result<Option<Entry>> {
        let bits = self.bloom.len() as u64 * 8;
        if !bloom_probes(key, bits).all(|p| self.bloom[(p / 8) as usize] & (1 << (p % 8)) != 0) {
            return Ok(None);
        }
        let i = self.blocks.partition_point(|b| b.first.as_slice() <= key);
        let Some(block) = i.checked_sub(1).map(|i| &self.blocks[i]) else {
            return Ok(None);
        };
        let data = self.read_block(block)?;
        let mut entries = BlockEntries { data: &data, at: 0 };
        while let Some(e) = entries.next_entry() {
            let (k, v) = e.map_err(|w| corrupt(&self.path, w))?;
            match k.cmp(key) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Equal => return Ok(Some(v.map(<[u8]>::to_vec))),
                std::cmp::Ordering::Greater => break,
            }
        }
        Ok(None)
    }

    /// Every entry in key order.
    pub fn iter(&self) -> RunIter<'_> {
        RunIter {
            run: self,
            block: 0,
            entries: Vec::new(),
            at: 0,
        }
    }

    /// The entries from the block that may hold `key` on, in key order (entries before `key`
    /// in that block included: the caller skips them). One index lookup, no bloom probe: for
    /// range reads.
    pub fn iter_from(&self, key: &[u8]) -> RunIter<'_> {
        let block = self
            .blocks
            .partition_point(|b| b.first.as_slice() <= key)
            .saturating_sub(1);
        RunIter {
            run: self,
            block,
            entries: Vec::new(),
            at: 0,
        }
    }
}

struct BlockEntries<'a> {
    data: &'a [u8],
    at: usize,
}

type RawEntry<'a> = (&'a [u8], Option<&'a [u8]>);

impl<'a> BlockEntries<'a> {
    fn next_entry(&mut self) -> Option<Result<RawEntry<'a>, &'static str>> {
        if self.at >= self.data.len() {
            return None;
        }
        let mut parse = || {
            let k = get_varint(self.data, &mut self.at).ok_or("bad key length")? as usize;
            let v = get_varint(self.data, &mut self.at).ok_or("bad value length")? as usize;
            let key = self.data.get(self.at..self.at + k).ok_or("truncated key")?;
            self.at += k;
            let value = match v {
                0 => None,
                n => {
                    let v = self
                        .data
                        .get(self.at..self.at + n - 1)
                        .ok_or("truncated value")?;
                    self.at += n - 1;
                    Some(v)
                }
            };
            Ok((key, value))
        };
        Some(parse())
    }
}

/// A run's entries in key order, read block by block.
pub struct RunIter<'a> {
    run: &'a Run,
    block: usize,
    /// The current block's entries, decoded.
    entries: Vec<(Vec<u8>, Entry)>,
    at: usize,
}

impl Iterator for RunIter<'_> {
    type Item = io::Result<(Vec<u8>, Entry)>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.at >= self.entries.len() {
            let b = self.run.blocks.get(self.block)?;
            self.block += 1;
            let data = match self.run.read_block(b) {
                Ok(d) => d,
                Err(e) => return Some(Err(e)),
            };
            self.entries.clear();
            self.at = 0;
            let mut it = BlockEntries { data: &data, at: 0 };
            while let Some(e) = it.next_entry() {
                match e {
                    Ok((k, v)) => self.entries.push((k.to_vec(), v.map(<[u8]>::to_vec))),
                    Err(w) => return Some(Err(corrupt(&self.run.path, w))),
                }
            }
        }
        let e = std::mem::take(&mut self.entries[self.at]);
        self.at += 1;
        Some(Ok(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kg: u16, n: u32) -> Vec<u8> {
        let mut k = kg.to_be_bytes().to_vec();
        k.extend_from_slice(&n.to_be_bytes());
        k
    }

    #[test]
    fn a_run_answers_point_lookups_and_iterates_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = RunWriter::create(&dir.path().join("r"), 20_000).unwrap();
        let mut keys: Vec<Vec<u8>> = (0..20_000u32)
            .map(|n| key((n / 4000) as u16 + 3, n))
            .collect();
        keys.sort();
        for (i, k) in keys.iter().enumerate() {
            let value = (i % 10 != 0).then(|| format!("value {i}").into_bytes());
            w.add(k, value.as_deref()).unwrap();
        }
        let run = w.finish().unwrap();
        assert_eq!(run.entries, 20_000);
        assert_eq!(run.key_groups, (3, 7));
        assert!(run.blocks.len() > 10, "{} blocks", run.blocks.len());
        assert_eq!(
            run.get(&keys[11]).unwrap(),
            Some(Some(b"value 11".to_vec()))
        );
        assert_eq!(run.get(&keys[10]).unwrap(), Some(None), "a delete");
        assert_eq!(run.get(&key(3, 99_999)).unwrap(), None);
        assert_eq!(run.get(&key(0, 0)).unwrap(), None, "before the first key");
        let all: Vec<Vec<u8>> = run.iter().map(|e| e.unwrap().0).collect();
        assert_eq!(all, keys);
        assert!(w_out_of_order(&dir.path().join("bad")).is_err());
    }

    #[test]
    fn a_filter_sized_for_more_entries_is_folded_and_still_finds_every_key() {
        let dir = tempfile::tempdir().unwrap();
        // A merge sizes the filter for all its inputs' entries and may keep far fewer.
        let mut w = RunWriter::create(&dir.path().join("r"), 1_000_000).unwrap();
        let keys: Vec<Vec<u8>> = (0..5_000u32).map(|n| key(1, n * 2)).collect();
        for k in &keys {
            w.add(k, Some(b"v")).unwrap();
        }
        let run = w.finish().unwrap();
        let wanted = bloom_bytes(5_000);
        assert!(
            (wanted..2 * wanted).contains(&run.bloom.len()),
            "{} bytes of filter for 5000 keys",
            run.bloom.len()
        );
        for k in &keys {
            assert_eq!(run.get(k).unwrap(), Some(Some(b"v".to_vec())));
        }
        // Keys never written pass the folded filter about as rarely as an unfolded one's.
        let bits = run.bloom.len() as u64 * 8;
        let passed = (0..5_000u32)
            .filter(|n| {
                bloom_probes(&key(1, n * 2 + 1), bits)
                    .all(|p| run.bloom[(p / 8) as usize] & (1 << (p % 8)) != 0)
            })
            .count();
        assert!(passed < 150, "{passed} of 5000 absent keys pass the filter");
        let mut full = RunWriter::create(&dir.path().join("f"), 1).unwrap();
        full.add(b"a", None).unwrap();
        assert!(full.add(b"b", None).is_err(), "past its capacity");
    }

    fn w_out_of_order(path: &Path) -> io::Result<()> {
        let mut w = RunWriter::create(path, 10)?;
        w.add(b"b", Some(b"1"))?;
        w.add(b"a", Some(b"2"))
    }

    #[test]
    fn damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        let mut w = RunWriter::create(&path, 100).unwrap();
        for n in 0..100u32 {
            w.add(&key(0, n), Some(b"some value")).unwrap();
        }
        drop(w.finish().unwrap());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let run = Run::open(&path).unwrap();
        let err = run.get(&key(0, 1)).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&path, &bytes).unwrap();
        assert!(Run::open(&path)
            .unwrap_err()
            .to_string()
            .contains("bad magic"));
    }
}
