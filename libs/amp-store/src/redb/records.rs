//! [`Records`] on the `records` table, keyed by (collection, id): a range scan lists a
//! collection in id order; create-if-absent and take run inside one write transaction, so
//! the single writer makes them atomic.

use ::redb::{ReadableTable, WriteTransaction};
use async_trait::async_trait;

use super::{RECORDS, RedbStore, st};
use crate::{PutMode, Records, Result};

#[async_trait]
impl Records for RedbStore {
    async fn record_put(
        &self,
        collection: &str,
        id: &str,
        value: Vec<u8>,
        mode: PutMode,
    ) -> Result<bool> {
        let (collection, id) = (collection.to_owned(), id.to_owned());
        self.writer
            .write(move |txn: &WriteTransaction| {
                let mut t = txn.open_table(RECORDS).map_err(st)?;
                let key = (collection.as_str(), id.as_str());
                if mode == PutMode::Create && t.get(key).map_err(st)?.is_some() {
                    return Ok(false);
                }
                t.insert(key, value.as_slice()).map_err(st)?;
                Ok(true)
            })
            .await
    }

    async fn record_get(&self, collection: &str, id: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.read()?;
        let t = txn.open_table(RECORDS).map_err(st)?;
        Ok(t.get((collection, id))
            .map_err(st)?
            .map(|v| v.value().to_vec()))
    }

    async fn record_list(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let txn = self.read()?;
        let t = txn.open_table(RECORDS).map_err(st)?;
        let mut out = Vec::new();
        for row in t.range((collection, after.unwrap_or(""))..).map_err(st)? {
            if out.len() >= limit {
                break;
            }
            let (k, v) = row.map_err(st)?;
            let (c, id) = k.value();
            if c != collection {
                break;
            }
            if after.is_some_and(|a| id <= a) {
                continue;
            }
            out.push((id.to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    async fn record_take(&self, collection: &str, id: &str) -> Result<bool> {
        let (collection, id) = (collection.to_owned(), id.to_owned());
        self.writer
            .write(move |txn: &WriteTransaction| {
                let mut t = txn.open_table(RECORDS).map_err(st)?;
                let existed = t
                    .remove((collection.as_str(), id.as_str()))
                    .map_err(st)?
                    .is_some();
                Ok(existed)
            })
            .await
    }
}
