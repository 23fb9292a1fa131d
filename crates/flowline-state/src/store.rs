//! Where checkpoint files live: a local directory (default) or any `object_store` URL.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// A flat namespace of small files, `dir/name`. `put` is atomic: a reader sees the whole file
/// or none of it.
pub trait CheckpointStore: Send + Sync {
    fn put(&self, path: &str, data: &[u8]) -> io::Result<()>;
    /// Writes a file of `len` bytes that `read(offset, buf)` fills, a part at a time, so a large
    /// file is never held whole in memory (object stores: a multipart upload).
    fn put_from(&self, path: &str, len: u64, read: &ReadAt<'_>) -> io::Result<()> {
        let mut buf = vec![0; len as usize];
        read(0, &mut buf)?;
        self.put(path, &buf)
    }
    fn get(&self, path: &str) -> io::Result<Option<Vec<u8>>>;
    /// Names of the entries directly under the root (checkpoint directories and files).
    fn list_root(&self) -> io::Result<Vec<String>>;
    /// Removes `dir` and everything under it; a missing directory is not an error.
    fn delete_dir(&self, dir: &str) -> io::Result<()>;
    /// Removes one file; a missing file is not an error.
    fn delete(&self, path: &str) -> io::Result<()>;
    /// For messages: the directory or URL.
    fn describe(&self) -> String;
}

/// Fills a buffer from a file at an offset (a state run being uploaded).
pub type ReadAt<'a> = dyn Fn(u64, &mut [u8]) -> io::Result<()> + Sync + 'a;

/// The size of an upload's parts: files larger than this go up as a multipart upload (S3's
/// parts are 5 MiB at least).
pub const PART_BYTES: u64 = 8 << 20;

/// Opens `location`: a plain path or `file://` URL is a local directory; `s3://bucket/prefix`
/// and `gs://bucket/prefix` go to `object_store`, configured from the environment (`AWS_*`,
/// `GOOGLE_*`, as object_store's builders read them).
pub fn open_store(location: &str) -> io::Result<Arc<dyn CheckpointStore>> {
    match location.split_once("://") {
        None => Ok(Arc::new(LocalDir::new(PathBuf::from(location))?)),
        Some(("file", path)) => Ok(Arc::new(ObjectStoreDir::local(path)?)),
        Some(("s3" | "s3a" | "gs", _)) => Ok(Arc::new(ObjectStoreDir::cloud(location)?)),
        Some((scheme, _)) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("checkpoint storage '{location}': the '{scheme}' scheme is not supported; use a local path, file://, s3:// or gs://"),
        )),
    }
}

/// Checkpoints in a local directory. Every file is written to a temporary name, fsynced, renamed
/// into place and its directory fsynced, so a crash or power loss leaves the old or the new file.
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    pub fn new(root: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(&root).map_err(|e| with_path(e, &root))?;
        Ok(Self { root })
    }
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

pub use flowline_common::fs::sync_dir;

impl CheckpointStore for LocalDir {
    fn put(&self, path: &str, data: &[u8]) -> io::Result<()> {
        let target = self.root.join(path);
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| with_path(e, &dir))?;
        let tmp = dir.join(format!(
            ".{}.tmp",
            target
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("file")
        ));
        let mut f = std::fs::File::create(&tmp).map_err(|e| with_path(e, &tmp))?;
        f.write_all(data)
            .and_then(|_| f.sync_all())
            .map_err(|e| with_path(e, &tmp))?;
        std::fs::rename(&tmp, &target).map_err(|e| with_path(e, &target))?;
        sync_dir(&dir)
    }

    fn put_from(&self, path: &str, len: u64, read: &ReadAt<'_>) -> io::Result<()> {
        let target = self.root.join(path);
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| with_path(e, &dir))?;
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("file");
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::File::create(&tmp).map_err(|e| with_path(e, &tmp))?;
        let mut buf = vec![0; PART_BYTES.min(len) as usize];
        let mut offset = 0;
        while offset < len {
            let n = PART_BYTES.min(len - offset) as usize;
            read(offset, &mut buf[..n])?;
            f.write_all(&buf[..n]).map_err(|e| with_path(e, &tmp))?;
            offset += n as u64;
        }
        f.sync_all().map_err(|e| with_path(e, &tmp))?;
        std::fs::rename(&tmp, &target).map_err(|e| with_path(e, &target))?;
        sync_dir(&dir)
    }

    fn get(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        let p = self.root.join(path);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(with_path(e, &p)),
        }
    }

    fn list_root(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.root).map_err(|e| with_path(e, &self.root))? {
            out.push(e?.file_name().to_string_lossy().into_owned());
        }
        Ok(out)
    }

    fn delete(&self, path: &str) -> io::Result<()> {
        let p = self.root.join(path);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(with_path(e, &p)),
            _ => Ok(()),
        }
    }

    fn delete_dir(&self, dir: &str) -> io::Result<()> {
        let p = self.root.join(dir);
        match std::fs::remove_dir_all(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(with_path(e, &p)),
            _ => Ok(()),
        }
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

/// Checkpoints in an `object_store`. Object stores publish a `put` atomically.
pub struct ObjectStoreDir {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    url: String,
    /// Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for ObjectStoreDir {
    fn drop(&mut self) {
        // May be dropped inside the job's runtime, where a blocking shutdown is refused.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl ObjectStoreDir {
    fn local(path: &str) -> io::Result<Self> {
        std::fs::create_dir_all(path).map_err(|e| with_path(e, Path::new(path)))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(path)
            .map_err(io::Error::other)?;
        Self::new(
            Arc::new(store),
            ObjectPath::default(),
            format!("file://{path}"),
        )
    }

    /// `s3://bucket/prefix` or `gs://bucket/prefix`, credentials and endpoint from the environment.
    fn cloud(location: &str) -> io::Result<Self> {
        let bad = |e: String| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("checkpoint storage '{location}': {e}"),
            )
        };
        let url = url::Url::parse(location).map_err(|e| bad(e.to_string()))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad(
                "the URL names no bucket (expected scheme://bucket/prefix)".into(),
            ));
        }
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(location)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            _ => Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(location.replacen("s3a://", "s3://", 1))
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
        };
        let prefix = ObjectPath::from_url_path(url.path()).map_err(|e| bad(e.to_string()))?;
        Self::new(store, prefix, location.to_string())
    }

    pub fn new(store: Arc<dyn ObjectStore>, prefix: ObjectPath, url: String) -> io::Result<Self> {
        // Its own small runtime: callers are blocking threads and may sit inside the job's runtime.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Self {
            store,
            prefix,
            url,
            runtime: Some(runtime),
        })
    }

    /// Runs `f` on the store's own runtime, from a thread of its own when the caller is already
    /// inside a runtime (tokio refuses to block a thread that drives async tasks).
    fn block<F: std::future::Future + Send>(&self, f: F) -> F::Output
    where
        F::Output: Send,
    {
        let rt = self.runtime.as_ref().expect("runtime present until drop");
        if tokio::runtime::Handle::try_current().is_err() {
            return rt.block_on(f);
        }
        std::thread::scope(|s| {
            s.spawn(|| rt.block_on(f))
                .join()
                .expect("object store call panicked")
        })
    }

    fn path(&self, p: &str) -> ObjectPath {
        p.split('/')
            .fold(self.prefix.clone(), |acc, part| acc.clone().join(part))
    }
}

impl CheckpointStore for ObjectStoreDir {
    fn put(&self, path: &str, data: &[u8]) -> io::Result<()> {
        let payload = PutPayload::from(data.to_vec());
        self.block(self.store.put(&self.path(path), payload))
            .map(|_| ())
            .map_err(io::Error::other)
    }

    /// One PUT up to [`PART_BYTES`], a multipart upload of such parts beyond (aborted if a part
    /// fails, so no partial object appears).
    fn put_from(&self, path: &str, len: u64, read: &ReadAt<'_>) -> io::Result<()> {
        if len <= PART_BYTES {
            let mut buf = vec![0; len as usize];
            read(0, &mut buf)?;
            return self.put(path, &buf);
        }
        let target = self.path(path);
        self.block(async {
            let mut upload = self
                .store
                .put_multipart(&target)
                .await
                .map_err(io::Error::other)?;
            let mut parts = async {
                let mut offset = 0;
                while offset < len {
                    let mut buf = vec![0; PART_BYTES.min(len - offset) as usize];
                    read(offset, &mut buf)?;
                    offset += buf.len() as u64;
                    upload
                        .put_part(PutPayload::from(buf))
                        .await
                        .map_err(io::Error::other)?;
                }
                Ok::<_, io::Error>(())
            }
            .await;
            if parts.is_ok() {
                parts = upload
                    .complete()
                    .await
                    .map(|_| ())
                    .map_err(io::Error::other);
            }
            if parts.is_err() {
                let _ = upload.abort().await;
            }
            parts
        })
    }

    fn get(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        self.block(async {
            match self.store.get(&self.path(path)).await {
                Ok(r) => Ok(Some(r.bytes().await.map_err(io::Error::other)?.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(io::Error::other(e)),
            }
        })
    }

    fn list_root(&self) -> io::Result<Vec<String>> {
        self.block(async {
            let listing = self
                .store
                .list_with_delimiter(Some(&self.prefix))
                .await
                .map_err(io::Error::other)?;
            let dirs = listing
                .common_prefixes
                .iter()
                .filter_map(|p| p.filename().map(str::to_string));
            let files = listing
                .objects
                .iter()
                .filter_map(|o| o.location.filename().map(str::to_string));
            Ok(dirs.chain(files).collect())
        })
    }

    fn delete(&self, path: &str) -> io::Result<()> {
        self.block(async {
            match self.store.delete(&self.path(path)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(io::Error::other(e)),
            }
        })
    }

    fn delete_dir(&self, dir: &str) -> io::Result<()> {
        self.block(async {
            let prefix = self.path(dir);
            let objects: Vec<_> = self
                .store
                .list(Some(&prefix))
                .try_collect()
                .await
                .map_err(io::Error::other)?;
            for o in objects {
                match self.store.delete(&o.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(io::Error::other(e)),
                }
            }
            Ok(())
        })
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2.5 parts of bytes that tell their offset.
    fn data() -> Vec<u8> {
        (0..PART_BYTES * 5 / 2).map(|i| (i % 251) as u8).collect()
    }

    fn put_and_read(store: &dyn CheckpointStore) {
        let data = data();
        let read = |offset: u64, buf: &mut [u8]| {
            let at = offset as usize;
            buf.copy_from_slice(&data[at..at + buf.len()]);
            Ok(())
        };
        store
            .put_from("shared/big.run", data.len() as u64, &read)
            .unwrap();
        store.put_from("shared/small.run", 10, &read).unwrap();
        assert!(store.get("shared/big.run").unwrap() == Some(data.clone()));
        assert_eq!(
            store.get("shared/small.run").unwrap(),
            Some(data[..10].to_vec())
        );
    }

    #[test]
    fn a_large_file_goes_up_in_parts_to_an_object_store() {
        let store = ObjectStoreDir::new(
            Arc::new(object_store::memory::InMemory::new()),
            ObjectPath::from("cp"),
            "memory://cp".into(),
        )
        .unwrap();
        put_and_read(&store);
    }

    #[test]
    fn a_large_file_is_copied_a_part_at_a_time_to_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        put_and_read(&LocalDir::new(dir.path().to_path_buf()).unwrap());
    }

    /// A part that cannot be read aborts the upload: no object appears.
    #[test]
    fn a_failed_part_leaves_no_object() {
        let store = ObjectStoreDir::new(
            Arc::new(object_store::memory::InMemory::new()),
            ObjectPath::from("cp"),
            "memory://cp".into(),
        )
        .unwrap();
        let read = |offset: u64, _: &mut [u8]| match offset {
            0 => Ok(()),
            _ => Err(io::Error::other("disk gone")),
        };
        assert!(store
            .put_from("shared/x.run", PART_BYTES * 2, &read)
            .is_err());
        assert_eq!(store.get("shared/x.run").unwrap(), None);
    }
}
