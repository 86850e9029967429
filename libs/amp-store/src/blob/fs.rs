//! [`FsBlobs`]: objects as files of one directory, fanned out by the first two characters
//! of their name (`ab/abcdef….att_…`).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::{BlobBackend, valid_name};
use crate::{Error, Result};

/// Objects in a directory.
#[derive(Debug, Clone)]
pub struct FsBlobs {
    root: PathBuf,
}

impl FsBlobs {
    /// Objects under `root` (created if missing).
    ///
    /// Fails when the directory cannot be created.
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root.join("tmp")).map_err(io)?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        if !valid_name(name) {
            return Err(Error::Corrupt(format!("invalid blob name {name:?}")));
        }
        Ok(self.root.join(&name[..name.len().min(2)]).join(name))
    }
}

fn io(e: std::io::Error) -> Error {
    Error::Unavailable(format!("blob directory: {e}"))
}

/// Writes `data` to `path` durably: a temporary file, fsync, rename, fsync of the directory.
fn write_durably(root: &Path, path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("blob path without a directory"))?;
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(root.join("tmp"))?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[async_trait]
impl BlobBackend for FsBlobs {
    async fn put(&self, name: &str, data: Bytes) -> Result<()> {
        let path = self.path(name)?;
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || write_durably(&root, &path, &data))
            .await
            .map_err(|e| Error::Unavailable(format!("blob write task: {e}")))?
            .map_err(io)
    }

    async fn get(&self, name: &str) -> Result<Option<Bytes>> {
        let path = self.path(name)?;
        match tokio::fs::read(&path).await {
            Ok(b) => Ok(Some(Bytes::from(b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e)),
        }
    }
}
