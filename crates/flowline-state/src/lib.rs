//! Checkpoint storage: task state files and the manifest that makes a checkpoint complete.
//!
//! ```text
//!  <state dir or URL>/
//!    job                                 the job's id (names the sink files it owns)
//!    chk-00000000000000000007/
//!      <task key>                        one file per task: operator state, source position,
//!      ...                               sink committables
//!      manifest                          written last: the checkpoint exists once this does
//!    shared/
//!      <run>                             state-table runs (table/): written once, referenced by
//!      ...                               every checkpoint whose manifest lists them
//! ```
//!
//! A checkpoint's manifest lists the shared runs each task references. A run is deleted when
//! the last retained checkpoint that listed it is pruned (incremental checkpoints: each new one
//! uploads only the runs its tables wrote since the previous one).
//!
//! Every file ends with a CRC-32 of its contents and a magic number, so a torn or damaged file
//! is detected on restore; the restore then falls back to the previous complete checkpoint.

mod store;
pub mod table;

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

pub use store::{open_store, sync_dir, CheckpointStore, LocalDir, ObjectStoreDir, ReadAt};

const MAGIC: &[u8; 4] = b"FLC1";
const MANIFEST: &str = "manifest";
const JOB_FILE: &str = "job";
const SHARED: &str = "shared";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("checkpoint storage {location}: {source}")]
    Io { location: String, source: io::Error },
    #[error("checkpoint {id} in {location}: {reason}")]
    Corrupt {
        location: String,
        id: u64,
        reason: String,
    },
}

pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// Appends the CRC-32 and the magic number.
pub fn frame(mut data: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&data);
    data.extend_from_slice(&crc.to_le_bytes());
    data.extend_from_slice(MAGIC);
    data
}

/// Checks and strips the frame; the reason when the file is damaged.
pub(crate) fn unframe(mut data: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
    if data.len() < 8 || &data[data.len() - 4..] != MAGIC {
        return Err(format!(
            "truncated or not a checkpoint file ({} bytes)",
            data.len()
        ));
    }
    let n = data.len() - 8;
    let stored = u32::from_le_bytes(data[n..n + 4].try_into().expect("4 bytes"));
    let actual = crc32fast::hash(&data[..n]);
    if stored != actual {
        return Err(format!(
            "checksum mismatch (stored {stored:08x}, computed {actual:08x})"
        ));
    }
    data.truncate(n);
    Ok(data)
}

/// One task's entry in a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskEntry {
    /// What the task is (its operator, table and connector): a restored pipeline must match.
    pub descriptor: String,
    pub bytes: u64,
    /// The shared runs (`shared/<name>`) its state references.
    pub shared: Vec<String>,
}

/// Each task's state in a checkpoint, by task name.
pub type TaskStates = BTreeMap<String, Vec<u8>>;

/// The record of a complete checkpoint.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    pub id: u64,
    pub job: String,
    /// Every task had finished (bounded inputs exhausted): nothing is left to run.
    pub finished: bool,
    pub parallelism: usize,
    pub tasks: BTreeMap<String, TaskEntry>,
}

impl Manifest {
    fn to_json(&self) -> Vec<u8> {
        let tasks: serde_json::Map<String, serde_json::Value> = self
            .tasks
            .iter()
            .map(|(k, t)| {
                (
                    k.clone(),
                    serde_json::json!({"descriptor": t.descriptor, "bytes": t.bytes, "shared": t.shared}),
                )
            })
            .collect();
        let v = serde_json::json!({
            "id": self.id, "job": self.job, "finished": self.finished, "parallelism": self.parallelism, "tasks": tasks,
        });
        serde_json::to_vec_pretty(&v).expect("JSON values serialize")
    }

    fn from_json(b: &[u8]) -> std::result::Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_slice(b).map_err(|e| format!("manifest is not JSON: {e}"))?;
        let field = |k: &str| v.get(k).ok_or_else(|| format!("manifest lacks '{k}'"));
        let mut tasks = BTreeMap::new();
        for (k, t) in field("tasks")?
            .as_object()
            .ok_or("manifest 'tasks' is not an object")?
        {
            tasks.insert(
                k.clone(),
                TaskEntry {
                    descriptor: t
                        .get("descriptor")
                        .and_then(|d| d.as_str())
                        .unwrap_or_default()
                        .to_string(),
                    bytes: t.get("bytes").and_then(|d| d.as_u64()).unwrap_or_default(),
                    shared: t
                        .get("shared")
                        .and_then(|s| s.as_array())
                        .into_iter()
                        .flatten()
                        .filter_map(|n| n.as_str().map(str::to_string))
                        .collect(),
                },
            );
        }
        Ok(Self {
            id: field("id")?
                .as_u64()
                .ok_or("manifest 'id' is not a number")?,
            job: field("job")?.as_str().unwrap_or_default().to_string(),
            finished: field("finished")?.as_bool().unwrap_or(false),
            parallelism: field("parallelism")?.as_u64().unwrap_or(0) as usize,
            tasks,
        })
    }
}

/// A checkpoint read back, every file verified.
#[derive(Debug)]
pub struct Restored {
    pub manifest: Manifest,
    pub states: BTreeMap<String, Vec<u8>>,
    /// Newer checkpoints that were skipped, with the reason (damaged files).
    pub skipped: Vec<String>,
}

/// The checkpoints of one job.
#[derive(Clone)]
pub struct Checkpoints {
    store: Arc<dyn CheckpointStore>,
}

fn dir_name(id: u64) -> String {
    format!("chk-{id:020}")
}

/// A task key as a file name.
fn file_name(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '#') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Checkpoints {
    pub fn open(location: &str) -> Result<Self> {
        let store = open_store(location).map_err(|source| StateError::Io {
            location: location.to_string(),
            source,
        })?;
        Ok(Self { store })
    }

    pub fn with_store(store: Arc<dyn CheckpointStore>) -> Self {
        Self { store }
    }

    pub fn location(&self) -> String {
        self.store.describe()
    }

    fn io(&self, source: io::Error) -> StateError {
        StateError::Io {
            location: self.location(),
            source,
        }
    }

    /// The job's id, created on first use. Sinks name their files with it.
    pub fn job_id(&self) -> Result<String> {
        if let Some(b) = self.store.get(JOB_FILE).map_err(|e| self.io(e))? {
            if let Ok(b) = unframe(b) {
                return Ok(String::from_utf8_lossy(&b).into_owned());
            }
        }
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        self.store
            .put(JOB_FILE, &frame(id.clone().into_bytes()))
            .map_err(|e| self.io(e))?;
        Ok(id)
    }

    /// Writes one task's state for checkpoint `id`; returns its size.
    pub fn put_task(&self, id: u64, key: &str, state: Vec<u8>) -> Result<u64> {
        let n = state.len() as u64;
        self.store
            .put(
                &format!("{}/{}", dir_name(id), file_name(key)),
                &frame(state),
            )
            .map_err(|e| self.io(e))?;
        Ok(n)
    }

    /// Writes a shared run (unless a checkpoint already holds it); returns its size.
    pub fn put_shared(&self, name: &str, data: &[u8]) -> Result<u64> {
        self.store
            .put(&format!("{SHARED}/{}", file_name(name)), data)
            .map_err(|e| self.io(e))?;
        Ok(data.len() as u64)
    }

    /// Writes a shared run of `len` bytes a part at a time (see [`CheckpointStore::put_from`]);
    /// the bytes written.
    pub fn put_shared_from(&self, name: &str, len: u64, read: &store::ReadAt<'_>) -> Result<u64> {
        self.store
            .put_from(&format!("{SHARED}/{}", file_name(name)), len, read)
            .map_err(|e| self.io(e))?;
        Ok(len)
    }

    /// Reads a shared run.
    pub fn get_shared(&self, name: &str) -> Result<Vec<u8>> {
        self.store
            .get(&format!("{SHARED}/{}", file_name(name)))
            .map_err(|e| self.io(e))?
            .ok_or_else(|| {
                self.io(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("shared state run {name} is missing"),
                ))
            })
    }

    /// Writes the manifest: from here on the checkpoint is complete.
    pub fn put_manifest(&self, m: &Manifest) -> Result<()> {
        self.store
            .put(
                &format!("{}/{MANIFEST}", dir_name(m.id)),
                &frame(m.to_json()),
            )
            .map_err(|e| self.io(e))
    }

    /// Ids of checkpoint directories (complete or not), ascending.
    pub fn ids(&self) -> Result<Vec<u64>> {
        let mut ids: Vec<u64> = self
            .store
            .list_root()
            .map_err(|e| self.io(e))?
            .iter()
            .filter_map(|n| n.strip_prefix("chk-")?.parse().ok())
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// The manifest of checkpoint `id`, if it is complete.
    fn read_manifest(&self, id: u64) -> Result<Option<Manifest>> {
        let Some(raw) = self
            .store
            .get(&format!("{}/{MANIFEST}", dir_name(id)))
            .map_err(|e| self.io(e))?
        else {
            return Ok(None);
        };
        let corrupt = |reason: String| StateError::Corrupt {
            location: self.location(),
            id,
            reason,
        };
        let m = unframe(raw).map_err(|r| corrupt(format!("manifest: {r}")))?;
        Ok(Some(Manifest::from_json(&m).map_err(corrupt)?))
    }

    /// Reads checkpoint `id` and verifies every file.
    pub fn read(&self, id: u64) -> Result<Option<(Manifest, TaskStates)>> {
        let corrupt = |reason: String| StateError::Corrupt {
            location: self.location(),
            id,
            reason,
        };
        let Some(raw) = self
            .store
            .get(&format!("{}/{MANIFEST}", dir_name(id)))
            .map_err(|e| self.io(e))?
        else {
            return Ok(None); // incomplete: never finished
        };
        let manifest =
            Manifest::from_json(&unframe(raw).map_err(|r| corrupt(format!("manifest: {r}")))?)
                .map_err(corrupt)?;
        let mut states = BTreeMap::new();
        for (key, entry) in &manifest.tasks {
            let raw = self
                .store
                .get(&format!("{}/{}", dir_name(id), file_name(key)))
                .map_err(|e| self.io(e))?
                .ok_or_else(|| corrupt(format!("state of task {key} is missing")))?;
            let data = unframe(raw).map_err(|r| corrupt(format!("state of task {key}: {r}")))?;
            if data.len() as u64 != entry.bytes {
                return Err(corrupt(format!(
                    "state of task {key} has {} bytes, the manifest says {}",
                    data.len(),
                    entry.bytes
                )));
            }
            states.insert(key.clone(), data);
        }
        Ok(Some((manifest, states)))
    }

    /// The newest complete checkpoint whose files all verify. Damaged ones are skipped (and
    /// reported); incomplete ones (no manifest) are ignored.
    pub fn latest(&self) -> Result<Option<Restored>> {
        let mut skipped = Vec::new();
        for id in self.ids()?.into_iter().rev() {
            match self.read(id) {
                Ok(Some((manifest, states))) => {
                    return Ok(Some(Restored {
                        manifest,
                        states,
                        skipped,
                    }))
                }
                Ok(None) => {}
                Err(e @ StateError::Corrupt { .. }) => skipped.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        if let Some(first) = skipped.first() {
            // Starting over would run the input again into sinks that already hold its output:
            // say so, and leave the choice to the user.
            return Err(StateError::Corrupt {
                location: self.location(),
                id: self.ids()?.last().copied().unwrap_or_default(),
                reason: format!(
                    "every checkpoint is damaged ({} of them; newest: {first}); run with --fresh to start over",
                    skipped.len()
                ),
            });
        }
        Ok(None)
    }

    /// Deletes incomplete checkpoints older than `completed` and complete ones beyond the newest
    /// `retained`.
    pub fn prune(&self, completed: u64, retained: usize) -> Result<()> {
        let ids = self.ids()?;
        let complete: Vec<u64> = ids.iter().copied().filter(|id| *id <= completed).collect();
        let keep_from = complete.len().saturating_sub(retained.max(1));
        let keep: Vec<u64> = complete[keep_from..].to_vec();
        let shared_of = |id: u64| -> Vec<String> {
            match self.read_manifest(id) {
                Ok(Some(m)) => m.tasks.into_values().flat_map(|t| t.shared).collect(),
                _ => Vec::new(),
            }
        };
        let mut kept = std::collections::HashSet::new();
        for id in keep
            .iter()
            .copied()
            .chain(ids.iter().copied().filter(|id| *id > completed))
        {
            kept.extend(shared_of(id));
        }
        for id in ids
            .into_iter()
            .filter(|id| *id < completed && !keep.contains(id))
        {
            // Runs only this checkpoint still referenced go with it.
            for name in shared_of(id) {
                if !kept.contains(&name) {
                    self.store
                        .delete(&format!("{SHARED}/{}", file_name(&name)))
                        .map_err(|e| self.io(e))?;
                }
            }
            self.store
                .delete_dir(&dir_name(id))
                .map_err(|e| self.io(e))?;
        }
        Ok(())
    }

    /// Removes every checkpoint and the job id (start fresh).
    pub fn clear(&self) -> Result<()> {
        for id in self.ids()? {
            self.store
                .delete_dir(&dir_name(id))
                .map_err(|e| self.io(e))?;
        }
        self.store.delete_dir(SHARED).map_err(|e| self.io(e))?;
        self.store
            .put(
                JOB_FILE,
                &frame(uuid::Uuid::new_v4().simple().to_string().as_bytes()[..12].to_vec()),
            )
            .map_err(|e| self.io(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(id: u64) -> Manifest {
        let mut m = Manifest {
            id,
            job: "j".into(),
            parallelism: 1,
            ..Default::default()
        };
        m.tasks.insert(
            "a#0".into(),
            TaskEntry {
                descriptor: "source t".into(),
                bytes: 3,
                shared: Vec::new(),
            },
        );
        m
    }

    #[test]
    fn frames_detect_damage() {
        let f = frame(b"hello".to_vec());
        assert_eq!(unframe(f.clone()).unwrap(), b"hello");
        let mut bad = f.clone();
        bad[1] ^= 1;
        assert!(unframe(bad).unwrap_err().contains("checksum"));
        assert!(unframe(f[..f.len() - 2].to_vec())
            .unwrap_err()
            .contains("truncated"));
    }

    #[test]
    fn latest_skips_damaged_and_incomplete_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(dir.path().to_str().unwrap()).unwrap();
        for id in 1..=3 {
            c.put_task(id, "a#0", vec![id as u8; 3]).unwrap();
            c.put_manifest(&manifest(id)).unwrap();
        }
        c.put_task(4, "a#0", vec![4; 3]).unwrap(); // no manifest: incomplete
        assert_eq!(c.latest().unwrap().unwrap().manifest.id, 3);
        // Damage checkpoint 3's state: 2 is used, and the reason reported.
        let p = dir.path().join("chk-00000000000000000003/a#0");
        let mut b = std::fs::read(&p).unwrap();
        b[0] ^= 0xff;
        std::fs::write(&p, b).unwrap();
        let r = c.latest().unwrap().unwrap();
        assert_eq!(r.manifest.id, 2);
        assert_eq!(r.states["a#0"], vec![2; 3]);
        assert!(r.skipped[0].contains("checksum"), "{:?}", r.skipped);
        // Truncate checkpoint 2's manifest: 1 is used.
        let p = dir.path().join("chk-00000000000000000002/manifest");
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() / 2]).unwrap();
        assert_eq!(c.latest().unwrap().unwrap().manifest.id, 1);
        // All damaged: an error, not a silent fresh start.
        let p1 = dir.path().join("chk-00000000000000000001/manifest");
        std::fs::write(&p1, b"garbage").unwrap();
        let err = c.latest().unwrap_err().to_string();
        assert!(
            err.contains("every checkpoint is damaged") && err.contains("--fresh"),
            "{err}"
        );
        std::fs::write(&p1, frame(manifest(1).to_json())).unwrap();
        c.prune(3, 1).unwrap();
        assert_eq!(c.ids().unwrap(), vec![3, 4]);
    }

    #[test]
    fn file_urls_use_object_store() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(&format!("file://{}", dir.path().display())).unwrap();
        c.put_task(7, "op/1#0", b"abc".to_vec()).unwrap();
        let mut m = manifest(7);
        m.tasks = [(
            "op/1#0".to_string(),
            TaskEntry {
                descriptor: "d".into(),
                bytes: 3,
                shared: Vec::new(),
            },
        )]
        .into();
        c.put_manifest(&m).unwrap();
        let r = c.latest().unwrap().unwrap();
        assert_eq!(r.states["op/1#0"], b"abc");
        assert_eq!(c.ids().unwrap(), vec![7]);
        c.clear().unwrap();
        assert!(c.latest().unwrap().is_none());
    }

    #[test]
    fn a_shared_run_lives_while_a_retained_checkpoint_lists_it() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(dir.path().to_str().unwrap()).unwrap();
        // Checkpoint 1 holds run a; 2 holds a and b (incremental); 3 holds c (merged).
        for (id, runs) in [(1, vec!["a"]), (2, vec!["a", "b"]), (3, vec!["c"])] {
            for r in &runs {
                c.put_shared(r, r.as_bytes()).unwrap();
            }
            c.put_task(id, "a#0", vec![]).unwrap();
            let mut m = manifest(id);
            m.tasks.get_mut("a#0").unwrap().bytes = 0;
            m.tasks.get_mut("a#0").unwrap().shared = runs.iter().map(|r| r.to_string()).collect();
            c.put_manifest(&m).unwrap();
        }
        let present = |n: &str| dir.path().join("shared").join(n).exists();
        c.prune(2, 1).unwrap();
        assert!(present("a") && present("b"), "checkpoint 2 still lists a");
        c.prune(3, 1).unwrap();
        assert!(!present("a") && !present("b") && present("c"));
        assert_eq!(c.get_shared("c").unwrap(), b"c");
        assert!(c
            .get_shared("a")
            .unwrap_err()
            .to_string()
            .contains("missing"));
    }
}
