//! [`S3Blobs`]: attachment bytes in S3-compatible object storage (AWS S3, MinIO, Ceph RGW,
//! Garage, s3s, …) through the `object_store` crate (Apache Arrow's, the one DataFusion and
//! delta-rs use), for a cluster that keeps large objects out of NATS.
//!
//! Objects are `<prefix>/<name>` in one bucket. A `put` is one `PutObject` and returns once
//! the server acknowledged it (S3's read-after-write consistency then serves it to every
//! replica). Credentials come from the configuration (`access_key_id` and
//! `secret_access_key_file`, a mounted secret) or else from the environment the AWS SDKs read
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, web identity, instance
//! metadata). No secret is kept in the configuration value or logged. A request is retried
//! (3 times within 15 s, 5 s to connect, 60 s per request), then the caller gets
//! [`Error::Unavailable`] (a 503).

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStoreExt as _, PutPayload, RetryConfig};
use serde::Deserialize;

use crate::blob::{BlobBackend, valid_name};
use crate::{Error, Result};

/// Where the S3 blobs live (`[store.blobs.s3]` of the cluster configuration).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3BlobsConfig {
    /// The bucket (it must exist; the provider does not create buckets).
    pub bucket: String,
    /// Prefix of every object name inside the bucket (no leading or trailing `/`); empty:
    /// none.
    pub prefix: String,
    /// The endpoint URL (`https://s3.eu-west-1.amazonaws.com`, `http://minio:9000`); unset:
    /// AWS's endpoint for `region`.
    pub endpoint: Option<String>,
    /// The region (`us-east-1` unless set; most S3-compatible servers accept any).
    pub region: String,
    /// Path-style requests (`<endpoint>/<bucket>/<key>`), which most self-hosted servers
    /// need; virtual-hosted style (`<bucket>.<endpoint>`) when false.
    pub path_style: bool,
    /// Allow a plain `http://` endpoint (a server inside the cluster network).
    pub allow_http: bool,
    /// The access key id; unset: from the environment (`AWS_ACCESS_KEY_ID`, …).
    pub access_key_id: Option<String>,
    /// A file holding the secret access key (a mounted secret); unset: from the
    /// environment (`AWS_SECRET_ACCESS_KEY`, …).
    pub secret_access_key_file: Option<PathBuf>,
}

impl Default for S3BlobsConfig {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            prefix: "amp-attachments".to_owned(),
            endpoint: None,
            region: "us-east-1".to_owned(),
            path_style: true,
            allow_http: false,
            access_key_id: None,
            secret_access_key_file: None,
        }
    }
}

impl S3BlobsConfig {
    /// Checks the settings that can be checked without a server.
    ///
    /// Fails with a sentence naming the setting.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let bad = |m: &str| Err(format!("store.blobs.s3: {m}"));
        if self.bucket.is_empty() {
            return bad("bucket is required");
        }
        if self.prefix.starts_with('/') || self.prefix.ends_with('/') {
            return bad("prefix must not start or end with '/'");
        }
        if let Some(e) = &self.endpoint
            && e.starts_with("http://")
            && !self.allow_http
        {
            return bad("an http:// endpoint needs allow_http = true");
        }
        if self.secret_access_key_file.is_some() != self.access_key_id.is_some() {
            return bad("access_key_id and secret_access_key_file go together");
        }
        Ok(())
    }
}

/// Objects in an S3-compatible bucket.
pub struct S3Blobs {
    store: AmazonS3,
    prefix: String,
}

impl std::fmt::Debug for S3Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Blobs")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl S3Blobs {
    /// The client for `config`. Nothing is sent yet: an unreachable server or a missing
    /// bucket shows on the first call (as [`Error::Unavailable`]).
    ///
    /// Fails with a sentence naming the setting, for invalid settings or an unreadable
    /// secret file.
    pub fn open(config: &S3BlobsConfig) -> std::result::Result<Self, String> {
        config.validate()?;
        // Bounded: a store that does not answer is a 503 within seconds, not a request held
        // for the client's default three minutes of retries.
        let mut builder = AmazonS3Builder::from_env()
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(60)),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 3,
                retry_timeout: Duration::from_secs(15),
            })
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_virtual_hosted_style_request(!config.path_style)
            .with_allow_http(config.allow_http);
        if let Some(e) = &config.endpoint {
            builder = builder.with_endpoint(e);
        }
        if let (Some(id), Some(path)) = (&config.access_key_id, &config.secret_access_key_file) {
            let secret = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "store.blobs.s3.secret_access_key_file {}: {e}",
                    path.display()
                )
            })?;
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret.trim_end_matches(['\r', '\n']));
        }
        let store = builder
            .build()
            .map_err(|e| format!("store.blobs.s3: {e}"))?;
        Ok(Self {
            store,
            prefix: config.prefix.clone(),
        })
    }

    fn path(&self, name: &str) -> Result<Path> {
        if !valid_name(name) {
            return Err(Error::Corrupt(format!("invalid blob name {name:?}")));
        }
        Ok(if self.prefix.is_empty() {
            Path::from(name)
        } else {
            Path::from(format!("{}/{name}", self.prefix))
        })
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("S3 {what}: {e}"))
}

#[async_trait]
impl BlobBackend for S3Blobs {
    async fn put(&self, name: &str, data: Bytes) -> Result<()> {
        let path = self.path(name)?;
        self.store
            .put(&path, PutPayload::from(data))
            .await
            .map_err(|e| unavailable("put", e))?;
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<Option<Bytes>> {
        let path = self.path(name)?;
        let got = match self.store.get(&path).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(unavailable("get", e)),
        };
        let bytes = got.bytes().await.map_err(|e| unavailable("read", e))?;
        Ok(Some(bytes))
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(unavailable("delete", e)),
        }
    }
}
