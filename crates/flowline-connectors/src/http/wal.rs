//! The write-ahead log behind HTTP ingest: one per (table, source subtask).
//!
//! ```text
//!  requests ─append(record)─▶ queue ─▶ writer thread: write every queued record, fsync once,
//!                                      then acknowledge them all (group commit)
//!  source subtask ─read from (segment, offset)─▶ records up to the durable end
//! ```
//!
//! Files: `<dir>/<segment:020>.wal`, each a sequence of records `[len u32][crc32 u32][payload]`
//! (the payload is an Arrow IPC stream of one batch). A segment rolls at [`SEGMENT_BYTES`].
//! On open, a torn record at the end of the last segment (a crash mid-write: never
//! acknowledged) is cut off. Segments wholly before the oldest position still needed are deleted.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

/// Bytes after which the writer starts a new segment.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// A place in the log: (segment, byte offset in it).
pub type Position = (u64, u64);

struct Durable {
    end: Mutex<Position>,
    /// Total bytes appended, for the backlog (429) check.
    written: AtomicU64,
}

/// What each reader of the log (one per source subtask reading the table: a table read by two
/// INSERTs has two) has read and still needs.
#[derive(Default)]
struct Readers {
    /// Bytes read.
    read: Vec<u64>,
    /// The position before which it needs nothing.
    keep: Vec<Position>,
}

pub struct Wal {
    dir: PathBuf,
    queue: mpsc::SyncSender<(Vec<u8>, mpsc::Sender<std::io::Result<()>>)>,
    durable: Arc<Durable>,
    readers: Mutex<Readers>,
}

fn segment_path(dir: &Path, seg: u64) -> PathBuf {
    dir.join(format!("{seg:020}.wal"))
}

/// Segment numbers present, ascending.
pub fn segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut out: Vec<u64> = std::fs::read_dir(dir)?
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".wal")?
                .parse()
                .ok()
        })
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// Reads the record at the reader's position; `None` at a torn or missing record.
fn read_record(f: &mut File) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = [0u8; 8];
    match f.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    let mut payload = vec![0; len];
    match f.read_exact(&mut payload) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    Ok((crc32fast::hash(&payload) == crc).then_some(payload))
}

impl Wal {
    /// Opens (or creates) the log in `dir`, cutting a torn tail, and starts its writer thread.
    pub fn open(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let segs = segments(&dir)?;
        let last = segs.last().copied().unwrap_or(0);
        let path = segment_path(&dir, last);
        let mut f = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        f.seek(SeekFrom::Start(0))?;
        let mut valid = 0u64;
        while let Some(p) = read_record(&mut f)? {
            valid += 8 + p.len() as u64;
        }
        if f.metadata()?.len() != valid {
            f.set_len(valid)?;
            f.sync_all()?;
        }
        let durable = Arc::new(Durable {
            end: Mutex::new((last, valid)),
            written: AtomicU64::new(0),
        });
        let (queue, rx) = mpsc::sync_channel(1024);
        let d = durable.clone();
        let wdir = dir.clone();
        std::thread::Builder::new()
            .name("flowline-wal".into())
            .spawn(move || writer(wdir, f, (last, valid), rx, d))?;
        Ok(Self {
            dir,
            queue,
            durable,
            readers: Mutex::default(),
        })
    }

    /// A new reader of the log: its number, for [`Wal::note_read`] and [`Wal::truncate_before`].
    pub fn add_reader(&self) -> usize {
        let mut r = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        r.read.push(0);
        r.keep.push((0, 0));
        r.read.len() - 1
    }

    /// Appends one record; returns once it is on disk (fsync).
    pub fn append(&self, payload: Vec<u8>) -> std::io::Result<()> {
        let (tx, rx) = mpsc::channel();
        let n = payload.len() as u64 + 8;
        self.queue
            .send((payload, tx))
            .map_err(|_| std::io::Error::other("the write-ahead log writer stopped"))?;
        rx.recv()
            .map_err(|_| std::io::Error::other("the write-ahead log writer stopped"))??;
        self.durable.written.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Bytes acknowledged but not yet read by the slowest reader.
    pub fn backlog(&self) -> u64 {
        let read = self
            .readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read
            .iter()
            .min()
            .copied();
        self.durable
            .written
            .load(Ordering::Relaxed)
            .saturating_sub(read.unwrap_or(0))
    }

    pub fn durable_end(&self) -> Position {
        *self.durable.end.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn note_read(&self, reader: usize, bytes: u64) {
        self.readers.lock().unwrap_or_else(|e| e.into_inner()).read[reader] += bytes;
    }

    /// Reader `reader` needs nothing before `keep`: deletes the segments no reader needs.
    pub fn truncate_before(&self, reader: usize, keep: Position) -> std::io::Result<()> {
        let keep = {
            let mut r = self.readers.lock().unwrap_or_else(|e| e.into_inner());
            r.keep[reader] = keep;
            r.keep.iter().min().copied().unwrap_or(keep)
        };
        for seg in segments(&self.dir)?.into_iter().filter(|s| *s < keep.0) {
            std::fs::remove_file(segment_path(&self.dir, seg))?;
        }
        Ok(())
    }
}

fn writer(
    dir: PathBuf,
    mut f: File,
    mut end: Position,
    rx: mpsc::Receiver<(Vec<u8>, mpsc::Sender<std::io::Result<()>>)>,
    durable: Arc<Durable>,
) {
    let mut buf = Vec::new();
    while let Ok(first) = rx.recv() {
        // Group commit: everything queued now goes out with one fsync.
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        buf.clear();
        for (p, _) in &batch {
            buf.extend_from_slice(&(p.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(p).to_le_bytes());
            buf.extend_from_slice(p);
        }
        let res = (|| -> std::io::Result<()> {
            if end.1 > 0 && end.1 + buf.len() as u64 > SEGMENT_BYTES {
                f.sync_all()?;
                end = (end.0 + 1, 0);
                f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(segment_path(&dir, end.0))?;
                flowline_common::fs::sync_dir(&dir)?;
            }
            f.write_all(&buf)?;
            f.sync_data()?;
            end.1 += buf.len() as u64;
            Ok(())
        })();
        if res.is_ok() {
            *durable.end.lock().unwrap_or_else(|e| e.into_inner()) = end;
        }
        for (_, reply) in batch {
            let _ = reply.send(match &res {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}

/// Reads records in order from a position, never past the durable end.
pub struct WalReader {
    dir: PathBuf,
    pos: Position,
    file: Option<File>,
}

impl WalReader {
    pub fn new(dir: PathBuf, pos: Position) -> Self {
        Self {
            dir,
            pos,
            file: None,
        }
    }

    pub fn position(&self) -> Position {
        self.pos
    }

    /// The next record and its size on disk, if one is durable.
    pub fn next(&mut self, durable: Position) -> std::io::Result<Option<(Vec<u8>, u64)>> {
        loop {
            if self.pos.0 > durable.0 || (self.pos.0 == durable.0 && self.pos.1 >= durable.1) {
                return Ok(None);
            }
            if self.file.is_none() {
                let mut f = File::open(segment_path(&self.dir, self.pos.0))?;
                f.seek(SeekFrom::Start(self.pos.1))?;
                self.file = Some(f);
            }
            let f = self.file.as_mut().expect("opened above");
            match read_record(f)? {
                Some(p) => {
                    let n = 8 + p.len() as u64;
                    self.pos.1 += n;
                    return Ok(Some((p, n)));
                }
                None if self.pos.0 < durable.0 => {
                    // The end of a finished segment: on to the next.
                    self.pos = (self.pos.0 + 1, 0);
                    self.file = None;
                }
                None => {
                    return Err(std::io::Error::other(format!(
                        "write-ahead log {}: no valid record at segment {} offset {} before the durable end",
                        self.dir.display(),
                        self.pos.0,
                        self.pos.1
                    )))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        {
            let wal = Wal::open(path.clone()).unwrap();
            wal.append(b"one".to_vec()).unwrap();
            wal.append(b"two".to_vec()).unwrap();
        }
        // A crash mid-write leaves half a record.
        let seg = segment_path(&path, 0);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let wal = Wal::open(path.clone()).unwrap();
        wal.append(b"three".to_vec()).unwrap();
        let mut r = WalReader::new(path, (0, 0));
        let mut got = Vec::new();
        while let Some((p, _)) = r.next(wal.durable_end()).unwrap() {
            got.push(String::from_utf8(p).unwrap());
        }
        assert_eq!(got, ["one", "two", "three"]);
    }
}
