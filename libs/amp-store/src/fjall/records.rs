//! [`Records`] on the `records` keyspace, keyed by (collection, id): a range lists a
//! collection in id order; create-if-absent and take run inside one write transaction, so
//! the single writer makes them atomic.

use std::ops::Bound;

use async_trait::async_trait;

use super::keys::{self, Key};
use super::{FjallStore, Reads, row};
use crate::{PutMode, Records, Result};

/// The `records` key of a (collection, id).
fn record_key(collection: &str, id: &str) -> Vec<u8> {
    Key::new().str(collection).str(id).done()
}

#[async_trait]
impl Records for FjallStore {
    async fn record_put(
        &self,
        collection: &str,
        id: &str,
        value: Vec<u8>,
        mode: PutMode,
    ) -> Result<bool> {
        let key = record_key(collection, id);
        self.writer
            .write(move |txn| {
                if mode == PutMode::Create && txn.contains(&txn.ks.records, &key)? {
                    return Ok(false);
                }
                txn.insert(&txn.ks.records, &key, &value)?;
                Ok(true)
            })
            .await
    }

    async fn record_get(&self, collection: &str, id: &str) -> Result<Option<Vec<u8>>> {
        let r = self.read()?;
        Ok(r.get(&r.ks().records, &record_key(collection, id))?
            .map(|v| v.to_vec()))
    }

    async fn record_list(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let r = self.read()?;
        let prefix = keys::one(collection);
        let start = match after {
            Some(a) => Bound::Excluded(record_key(collection, a)),
            None => Bound::Included(prefix.clone()),
        };
        let mut out = Vec::new();
        for g in r.range(&r.ks().records, (start, Bound::Unbounded)) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = row(g)?;
            if !k.starts_with(&prefix) {
                break;
            }
            let mut key = keys::Reader::new(&k);
            key.str()?;
            out.push((key.str()?, v.to_vec()));
        }
        Ok(out)
    }

    async fn record_take(&self, collection: &str, id: &str) -> Result<bool> {
        let key = record_key(collection, id);
        self.writer
            .write(move |txn| Ok(txn.take(&txn.ks.records, &key)?.is_some()))
            .await
    }
}
