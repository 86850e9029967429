//! [`JetStreamBlobs`]: attachment bytes in a NATS JetStream object store (bucket
//! `amp_attachments` under the prefix, file storage, the store's replica count). A `put`
//! returns once every chunk and the object's metadata were acknowledged by JetStream.

use async_nats::jetstream::object_store::{self, DeleteErrorKind, GetErrorKind, ObjectStore};
use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncReadExt as _;

use super::JetStreamStoreConfig;
use super::conn::Conn;
use crate::blob::{BlobBackend, valid_name};
use crate::{Error, Result};

/// The bucket's name before the prefix.
const BUCKET: &str = "amp_attachments";

/// Objects in a JetStream object store.
pub struct JetStreamBlobs {
    store: ObjectStore,
    // Keeps the connection (and so the store) alive.
    _conn: Conn,
}

impl JetStreamBlobs {
    /// Connects and creates the bucket if it does not exist (idempotent).
    ///
    /// Fails with [`Error::Unavailable`] when no server answers or the bucket cannot be
    /// created or opened.
    pub async fn connect(config: &JetStreamStoreConfig) -> Result<Self> {
        config.validate()?;
        let conn = Conn::connect(config).await?;
        let bucket = conn.name(BUCKET);
        let js = conn.context();
        let store = match js.get_object_store(&bucket).await {
            Ok(s) => s,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: bucket.clone(),
                    description: Some("AMP attachment bytes".to_owned()),
                    num_replicas: config.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| Error::Unavailable(format!("object store {bucket}: {e}")))?,
        };
        Ok(Self { store, _conn: conn })
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("{what}: {e}"))
}

fn checked(name: &str) -> Result<&str> {
    if valid_name(name) {
        Ok(name)
    } else {
        Err(Error::Corrupt(format!("invalid blob name {name:?}")))
    }
}

#[async_trait]
impl BlobBackend for JetStreamBlobs {
    async fn put(&self, name: &str, data: Bytes) -> Result<()> {
        let name = checked(name)?;
        let mut reader: &[u8] = &data;
        self.store
            .put(name, &mut reader)
            .await
            .map_err(|e| unavailable("object store put", e))?;
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<Option<Bytes>> {
        let name = checked(name)?;
        let mut object = match self.store.get(name).await {
            Ok(o) => o,
            Err(e) if e.kind() == GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unavailable("object store get", e)),
        };
        let mut out = Vec::with_capacity(object.info().size);
        object
            .read_to_end(&mut out)
            .await
            .map_err(|e| unavailable("object store read", e))?;
        Ok(Some(Bytes::from(out)))
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let name = checked(name)?;
        match self.store.delete(name).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == DeleteErrorKind::NotFound => Ok(()),
            Err(e) => Err(unavailable("object store delete", e)),
        }
    }
}
