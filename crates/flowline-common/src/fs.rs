//! File-system durability helpers shared by the checkpoint store and the write-ahead logs.

use std::io;
use std::path::Path;

/// fsync of a directory, so a rename or a new file in it is durable. The error names the
/// directory.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))
}
