//! Where attachment bytes live, behind one small trait: [`BlobBackend`] (put, get, delete of
//! whole objects by name), held as [`Blobs`], a cheap clone.
//!
//! - [`fs`]: [`FsBlobs`], a directory (`ampd`'s data directory): each object written to a
//!   temporary file, fsynced, renamed into place and its directory fsynced, so a `put` that
//!   returned survives a crash.
//! - `JetStreamBlobs` (feature `jetstream`, in [`crate::jetstream`]): the NATS JetStream
//!   object store, the cluster's default.
//! - `S3Blobs` (feature `s3`, in `crate::s3`): S3-compatible object storage.
//! - [`testing`] (feature `testing`): the conformance checks every backend's test runs.
//!
//! Objects are named by the caller; attachment objects are content-addressed
//! (`<sha256 hex>.<attachment id>`): the name says what the bytes must hash to, and one object
//! per attachment means deleting one never needs a reference count.

pub mod fs;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

pub use fs::FsBlobs;

use crate::Result;

/// A blob store.
#[async_trait]
pub trait BlobBackend: Send + Sync + 'static {
    /// Stores `data` under `name`, replacing any object of that name; returns once the bytes
    /// are durable.
    ///
    /// Fails with [`crate::Error::Unavailable`] when the medium cannot be written.
    async fn put(&self, name: &str, data: Bytes) -> Result<()>;
    /// The object, if it exists.
    async fn get(&self, name: &str) -> Result<Option<Bytes>>;
    /// Deletes the object (nothing when it does not exist).
    async fn delete(&self, name: &str) -> Result<()>;
}

/// The blob store services hold.
#[derive(Clone)]
pub struct Blobs(Arc<dyn BlobBackend>);

impl Blobs {
    /// Wraps a backend.
    pub fn new(backend: impl BlobBackend) -> Self {
        Self(Arc::new(backend))
    }
}

impl std::ops::Deref for Blobs {
    type Target = dyn BlobBackend;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Blobs")
    }
}

/// Whether `name` is safe as an object name and a file name: 1 to 200 of `[a-zA-Z0-9._-]`,
/// not starting with a dot.
pub fn valid_name(name: &str) -> bool {
    (1..=200).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
