//! Where stages read and write: a local directory or an `s3://bucket/prefix`, behind one
//! `object_store` interface so every stage has a single code path for both.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutPayload, RetryConfig};
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use {location:?} as a store: {reason}")]
    BadLocation { location: String, reason: String },
    #[error("cannot create the local directory {dir}: {source}")]
    LocalDir { dir: String, source: std::io::Error },
    #[error("{dir} does not exist or is not a directory: check the path")]
    Missing { dir: String },
    #[error(
        "cannot configure S3 for {url}: {source}; set AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION"
    )]
    S3 {
        url: String,
        source: object_store::Error,
    },
}

/// A store plus the prefix inside it that a location names.
#[derive(Debug, Clone)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    /// `file:///abs/dir/` or `s3://bucket/`: what DataFusion registers the store under.
    pub store_url: Url,
    pub prefix: Path,
    /// The location as the user gave it, for messages.
    pub display: String,
}

/// object_store's own retries of one request: quick, for a dropped connection or a 503; callers
/// that must ride out a restarting server retry around them (ingest's `put_with_retry`).
pub fn s3_retry_config() -> RetryConfig {
    RetryConfig {
        max_retries: 5,
        retry_timeout: Duration::from_secs(30),
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
    }
}

impl Location {
    /// Parses `s3://bucket/prefix`, `file:///dir` or a plain path (created if missing).
    /// S3 endpoint and credentials come from the standard `AWS_*` environment variables.
    pub fn parse(location: &str) -> Result<Self, StoreError> {
        let bad = |reason: &str| StoreError::BadLocation {
            location: location.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket name after s3://"));
            }
            let store = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(s3_retry_config())
                .build()
                .map_err(|source| StoreError::S3 {
                    url: location.to_owned(),
                    source,
                })?;
            let store_url =
                Url::parse(&format!("s3://{bucket}/")).map_err(|e| bad(&e.to_string()))?;
            return Ok(Self {
                store: Arc::new(store),
                store_url,
                prefix: Path::from(prefix.trim_matches('/')),
                display: location.to_owned(),
            });
        }
        let dir = match location.strip_prefix("file://") {
            Some(path) => path,
            None if location.contains("://") => {
                return Err(bad(
                    "only s3:// URLs, file:// URLs and local paths are supported",
                ));
            }
            None => location,
        };
        std::fs::create_dir_all(dir).map_err(|source| StoreError::LocalDir {
            dir: dir.to_owned(),
            source,
        })?;
        let abs = std::fs::canonicalize(dir).map_err(|source| StoreError::LocalDir {
            dir: dir.to_owned(),
            source,
        })?;
        let store = LocalFileSystem::new_with_prefix(&abs).map_err(|e| bad(&e.to_string()))?;
        let store_url =
            Url::from_directory_path(&abs).map_err(|_| bad("not an absolute directory"))?;
        Ok(Self {
            store: Arc::new(store),
            store_url,
            prefix: Path::default(),
            display: abs.display().to_string(),
        })
    }

    /// Like [`Location::parse`] for a location that is read, not written: a local directory
    /// must exist already, so a mistyped path is an error instead of a new, empty directory.
    /// S3 has no directories; a missing bucket fails the first listing.
    pub fn parse_existing(location: &str) -> Result<Self, StoreError> {
        if !location.contains("://") || location.starts_with("file://") {
            let dir = location.strip_prefix("file://").unwrap_or(location);
            if !std::path::Path::new(dir).is_dir() {
                return Err(StoreError::Missing {
                    dir: dir.to_owned(),
                });
            }
        }
        Self::parse(location)
    }

    /// Makes this location's files readable by DataFusion through full URLs
    /// (`s3://bucket/key`, `file:///abs/path`). DataFusion keys stores by scheme and host
    /// only, so a local directory's prefixed store must not replace its default `file://`
    /// store, which already resolves absolute paths (and the ETL's cache on the spill volume).
    pub fn register_with(&self, runtime: &datafusion::execution::runtime_env::RuntimeEnv) {
        if self.store_url.scheme() != "file" {
            runtime.register_object_store(&self.store_url, self.store.clone());
        }
    }

    /// Removes the directory `dir` of a local location if it is empty (object_store removes
    /// files, never the directories they leave); a no-op on S3, which has no directories.
    pub fn remove_empty_dir(&self, dir: &Path) {
        if let Some(path) = self.local_path(dir) {
            // Not empty or already gone: either way there is nothing to do.
            let _ = std::fs::remove_dir(path);
        }
    }

    /// Where `object` lies on disk, for a local directory; None on S3.
    fn local_path(&self, object: &Path) -> Option<std::path::PathBuf> {
        if self.store_url.scheme() != "file" {
            return None;
        }
        let root = self.store_url.to_file_path().ok()?;
        Some(
            object
                .parts()
                .fold(root, |dir, part| dir.join(part.as_ref())),
        )
    }

    /// Writes an object whole, durably: when this returns it survives a machine crash, not
    /// only a process crash, and no reader ever sees part of it.
    ///
    /// On S3 that is a PUT. In a local directory object_store would stage the bytes in a
    /// visible `<name>#<n>` file next to the object, which an interrupted write leaves for
    /// readers that list the directory (Spark, DuckDB, `cat`), and never fsyncs. Here the bytes
    /// go to `.<name>.partial` (a hidden name those readers skip; the same name for a retry of
    /// the same object, which so replaces what a crashed attempt left), which is fsync'd and
    /// renamed into place; then every directory from the object's folder up to the location's
    /// root is fsync'd, so new `<topic>/` and `date=…/` folders are durable in their parents
    /// along with the entry of the file. The file's pages then leave the page cache
    /// ([`drop_cached_pages`]): the writer (the drain) is done with them.
    pub async fn put_durable(
        &self,
        object: &Path,
        payload: PutPayload,
    ) -> Result<(), object_store::Error> {
        let (Some(file), Some(root)) = (self.local_path(object), self.local_path(&self.prefix))
        else {
            return self.store.put(object, payload).await.map(|_| ());
        };
        tokio::task::spawn_blocking(move || write_local_durably(&root, &file, &payload, true))
            .await
            .map_err(std::io::Error::other)
            .and_then(|written| written)
            .map(|_| ())
            .map_err(|source| object_store::Error::Generic {
                store: "local",
                source: Box::new(source),
            })
    }

    /// [`Location::put_durable`] that creates the object only if it does not exist yet: true
    /// when written, false when an object of that name was there already (and is left as it
    /// is). Atomic against other writers: on S3 a conditional PUT (`If-None-Match: *`, which
    /// SeaweedFS, MinIO, R2 and AWS S3 honour), locally a hard link of the written file to the
    /// name, which fails if the name exists.
    pub async fn put_durable_new(
        &self,
        object: &Path,
        payload: PutPayload,
    ) -> Result<bool, object_store::Error> {
        let (Some(file), Some(root)) = (self.local_path(object), self.local_path(&self.prefix))
        else {
            return match self
                .store
                .put_opts(object, payload, PutMode::Create.into())
                .await
            {
                Ok(_) => Ok(true),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                Err(e) => Err(e),
            };
        };
        tokio::task::spawn_blocking(move || write_local_durably(&root, &file, &payload, false))
            .await
            .map_err(std::io::Error::other)
            .and_then(|written| written)
            .map_err(|source| object_store::Error::Generic {
                store: "local",
                source: Box::new(source),
            })
    }

    /// The path of `relative` under this location's prefix.
    pub fn child(&self, relative: &str) -> Path {
        let mut parts: Vec<String> = self.prefix.parts().map(|p| p.as_ref().to_owned()).collect();
        parts.extend(
            relative
                .split('/')
                .filter(|p| !p.is_empty())
                .map(str::to_owned),
        );
        Path::from_iter(parts)
    }
}

/// The hidden name an object is written under before it is renamed into place.
fn partial_name(file: &std::path::Path) -> Option<std::path::PathBuf> {
    let name = file.file_name()?.to_str()?;
    Some(file.with_file_name(format!(".{name}.partial")))
}

/// [`Location::put_durable`] for a local file under the directory `root`; when not `replace`,
/// an existing file is left as it is and false returned.
fn write_local_durably(
    root: &std::path::Path,
    file: &std::path::Path,
    payload: &PutPayload,
    replace: bool,
) -> std::io::Result<bool> {
    use std::io::Write as _;
    let (Some(dir), Some(partial)) = (file.parent(), partial_name(file)) else {
        return Err(std::io::Error::other(format!(
            "{} names no file in a directory",
            file.display()
        )));
    };
    std::fs::create_dir_all(dir)?;
    let mut written = lock_partial(&partial)?;
    written.set_len(0)?;
    for bytes in payload.iter() {
        written.write_all(bytes)?;
    }
    written.sync_all()?;
    drop_cached_pages(&written);
    // Still holding the lock: the next writer of this object opens the name only after it is
    // renamed or removed, and so writes a file of its own.
    let created = if replace {
        std::fs::rename(&partial, file)?;
        true
    } else {
        // link(2) refuses an existing name, atomically; the hidden name is removed either way.
        let linked = std::fs::hard_link(&partial, file);
        std::fs::remove_file(&partial)?;
        match linked {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e),
        }
    };
    for folder in dir.ancestors().take_while(|d| d.starts_with(root)) {
        std::fs::File::open(folder)?.sync_all()?;
    }
    Ok(created)
}

/// Opens the hidden file an object is written through, locked (flock) against the other writers
/// of the object in this and other processes: two drains at once create the same objects, and
/// two writers of one file would mix their bytes. A writer killed mid-write leaves the file but
/// not its lock (the kernel drops it), so its retry takes the file over and truncates it.
fn lock_partial(partial: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::MetadataExt as _;
    loop {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(partial)?;
        match file.lock() {
            Ok(()) => {}
            // A filesystem without flock: writers of one object are then as safe as their
            // timing, which is no worse than without the lock.
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => return Ok(file),
            Err(e) => return Err(e),
        }
        // The writer before us may have renamed or removed the name while we waited: write
        // only to the file the name still names.
        let ours = file.metadata()?;
        match std::fs::metadata(partial) {
            Ok(named) if named.dev() == ours.dev() && named.ino() == ours.ino() => return Ok(file),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
}

/// Gives a durable file's pages back to the kernel's free lists: the drain does not read them
/// again, and the next file's writes take pages just freed instead of pages a hypervisor has
/// taken back (the development VM reports free pages to its host: a fresh page is faulted in
/// twice, and plain local drains spent twice the system time; docs/ingest.md).
fn drop_cached_pages(file: &std::fs::File) {
    use std::os::fd::AsRawFd as _;
    // SAFETY: a valid descriptor; the call only advises the kernel. Failing costs nothing but
    // the cache's memory.
    let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_and_file_urls_are_directories() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("landing");
        let plain = Location::parse(sub.to_str().unwrap()).unwrap();
        assert!(sub.is_dir(), "created when missing");
        assert_eq!(plain.child("a/b.ndjson").as_ref(), "a/b.ndjson");
        let url = Location::parse(&format!("file://{}", sub.display())).unwrap();
        assert_eq!(url.store_url, plain.store_url);
    }

    #[tokio::test]
    async fn a_durable_local_put_writes_through_a_hidden_partial_file_and_replaces_it() {
        use object_store::ObjectStoreExt as _;
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::parse(dir.path().to_str().unwrap()).unwrap();
        let object = loc.child("topic/date=2026-11-25/a.ndjson");
        let folder = dir.path().join("topic/date=2026-11-25");
        // What a crashed attempt left: a retry writes over it and renames it into place.
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(".a.ndjson.partial"), "{\"half").unwrap();
        loc.put_durable(&object, PutPayload::from_static(b"{}\n"))
            .await
            .unwrap();
        let names: Vec<_> = std::fs::read_dir(&folder)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.ndjson"]);
        let got = loc.store.get(&object).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], b"{}\n");
    }

    #[tokio::test]
    async fn a_local_create_refuses_an_existing_object_and_leaves_it() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::parse(dir.path().to_str().unwrap()).unwrap();
        let object = loc.child("t/a.json");
        let put = |body: &'static [u8]| loc.put_durable_new(&object, PutPayload::from_static(body));
        assert!(put(b"first").await.unwrap());
        assert!(!put(b"second").await.unwrap());
        let got = loc.store.get(&object).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], b"first");
        assert_eq!(
            std::fs::read_dir(dir.path().join("t")).unwrap().count(),
            1,
            "no hidden file left"
        );
    }

    /// Two drains at once create the same objects (the landing log's entries fence them): each
    /// creation must be whole and one writer's, whatever the others do meanwhile.
    #[test]
    fn concurrent_local_creates_of_one_object_leave_one_whole_writers_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        for round in 0..40 {
            let file = root.join(format!("t/{round}.json"));
            let bodies: Vec<Vec<u8>> = (0..6)
                .map(|w| {
                    format!(
                        "{{\"writer\":{w},\"pad\":\"{}\"}}\n",
                        "x".repeat(64 * (6 - w))
                    )
                    .into_bytes()
                })
                .collect();
            let created: Vec<bool> = std::thread::scope(|scope| {
                let writers: Vec<_> = bodies
                    .iter()
                    .map(|body| {
                        let (root, file) = (&root, &file);
                        scope.spawn(move || {
                            write_local_durably(root, file, &PutPayload::from(body.clone()), false)
                        })
                    })
                    .collect();
                writers
                    .into_iter()
                    .map(|w| w.join().unwrap().unwrap())
                    .collect()
            });
            assert_eq!(
                created.iter().filter(|c| **c).count(),
                1,
                "round {round}: {created:?}"
            );
            let got = std::fs::read(&file).unwrap();
            let winner = created.iter().position(|c| *c).unwrap();
            assert_eq!(
                got, bodies[winner],
                "round {round}: not the creator's bytes"
            );
        }
        let left: Vec<_> = std::fs::read_dir(root.join("t"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "hidden files left: {left:?}");
    }

    #[test]
    fn s3_urls_split_bucket_and_prefix() {
        let loc = Location::parse("s3://landing/team/a/").unwrap();
        assert_eq!(loc.store_url.as_str(), "s3://landing/");
        assert_eq!(
            loc.child("user_events/x.ndjson").as_ref(),
            "team/a/user_events/x.ndjson"
        );
    }

    #[test]
    fn unknown_schemes_and_missing_buckets_are_refused() {
        assert!(matches!(
            Location::parse("gs://x/y"),
            Err(StoreError::BadLocation { .. })
        ));
        assert!(matches!(
            Location::parse("s3:///y"),
            Err(StoreError::BadLocation { .. })
        ));
    }
}
