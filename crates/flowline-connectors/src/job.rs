//! What one running job's connectors share with each other and with the outside: its HTTP
//! ingest tables (reached by the HTTP server) and its file committers (one per sink directory,
//! shared by the sink's subtasks). One per job, handed to every task in its [`TaskContext`], so
//! two jobs in one process share nothing.
//!
//! [`TaskContext`]: crate::TaskContext

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::filesystem::commit::Committer;
use crate::http::IngestTable;

#[derive(Default)]
pub struct JobShared {
    /// The job's HTTP tables, registered by their sources as they start.
    pub(crate) ingest: Mutex<Vec<Arc<IngestTable>>>,
    /// The partition committers of the job's filesystem sinks, by sink directory.
    pub(crate) committers: Mutex<HashMap<PathBuf, Arc<Mutex<Committer>>>>,
}

impl std::fmt::Debug for JobShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JobShared({:?})", self.ingest_tables())
    }
}

impl JobShared {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The HTTP table `name` of the job, once its sources have registered it.
    pub fn ingest_table(&self, name: &str) -> Option<Arc<IngestTable>> {
        self.ingest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|t| t.name() == name)
            .cloned()
    }

    /// Names of the job's registered HTTP tables.
    pub fn ingest_tables(&self) -> Vec<String> {
        self.ingest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|t| t.name().to_string())
            .collect()
    }
}
