//! [`Records`] in the registry bucket, under `rec.<collection>.<id>`: create-if-absent is a
//! compare-and-set on the key's revision, a take a delete conditioned on the revision read,
//! so of concurrent processes one alone wins. A listing scans the collection's keys (one
//! round trip per batch) and pages in memory: collections here are small (tenants, tokens,
//! keys), apart from the audit log, whose listing costs grow with it (see the README).

use async_trait::async_trait;
use bytes::Bytes;

use super::JetStreamStore;
use super::conn::{Expect, tok, untok};
use crate::{Error, PutMode, Records, Result};

fn record_key(collection: &str, id: &str) -> String {
    format!("rec.{}.{}", tok(collection), tok(id))
}

#[async_trait]
impl Records for JetStreamStore {
    async fn record_put(
        &self,
        collection: &str,
        id: &str,
        value: Vec<u8>,
        mode: PutMode,
    ) -> Result<bool> {
        let key = record_key(collection, id);
        let expect = match mode {
            PutMode::Replace => Expect::Any,
            PutMode::Create => {
                let current = self.conn.kv_get(&self.registry, &key).await?;
                if current.value.is_some() {
                    return Ok(false);
                }
                Expect::Revision(current.revision)
            }
        };
        let written = self
            .conn
            .kv_put(&self.registry, &key, Bytes::from(value), expect, None)
            .await?;
        match (written, mode) {
            (Ok(_), _) => Ok(true),
            // Another process created it between our read and our write.
            (Err(_), PutMode::Create) => Ok(false),
            (Err(_), PutMode::Replace) => Err(Error::Corrupt("unconditional put refused".into())),
        }
    }

    async fn record_get(&self, collection: &str, id: &str) -> Result<Option<Vec<u8>>> {
        let current = self
            .conn
            .kv_get(&self.registry, &record_key(collection, id))
            .await?;
        Ok(current.value.map(|b| b.to_vec()))
    }

    async fn record_list(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let prefix = format!("rec.{}", tok(collection));
        let strip = format!("{prefix}.");
        let mut rows = Vec::new();
        for (key, value) in self.conn.kv_scan(&self.registry, &prefix).await? {
            let Some(id) = key.strip_prefix(&strip).and_then(|t| untok(t).ok()) else {
                return Err(Error::Corrupt(format!("record key {key}")));
            };
            if after.is_none_or(|a| id.as_str() > a) {
                rows.push((id, value.to_vec()));
            }
        }
        // A scan yields keys in write order, and a replaced key once (its last value).
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows.dedup_by(|a, b| a.0 == b.0);
        rows.truncate(limit);
        Ok(rows)
    }

    async fn record_take(&self, collection: &str, id: &str) -> Result<bool> {
        let key = record_key(collection, id);
        let current = self.conn.kv_get(&self.registry, &key).await?;
        if current.value.is_none() {
            return Ok(false);
        }
        Ok(self
            .conn
            .kv_delete_if(&self.registry, &key, current.revision)
            .await?
            .is_ok())
    }
}
