//! [`Records`] on the `records` table (migration 4): one partition per collection, clustered
//! by id. Create-if-absent is `INSERT … IF NOT EXISTS` and take `DELETE … IF EXISTS`, both
//! lightweight transactions, so of concurrent creators or takers one alone wins.

use async_trait::async_trait;

use super::CqlStore;
use super::conn::corrupt;
use crate::{PutMode, Records, Result};

#[async_trait]
impl Records for CqlStore {
    async fn record_put(
        &self,
        collection: &str,
        id: &str,
        value: Vec<u8>,
        mode: PutMode,
    ) -> Result<bool> {
        let st = &self.conn.st;
        match mode {
            PutMode::Create => Ok(self
                .conn
                .lwt(
                    "create a record",
                    &st.record_create,
                    (collection, id, value),
                )
                .await?
                .applied),
            PutMode::Replace => {
                self.conn
                    .exec(
                        "write a record",
                        &st.record_replace,
                        (collection, id, value),
                    )
                    .await?;
                Ok(true)
            }
        }
    }

    async fn record_get(&self, collection: &str, id: &str) -> Result<Option<Vec<u8>>> {
        let rows = self
            .conn
            .query("read a record", &self.conn.st.record_get, (collection, id))
            .await?;
        Ok(rows
            .maybe_first_row::<(Option<Vec<u8>>,)>()
            .map_err(corrupt)?
            .and_then(|(v,)| v))
    }

    async fn record_list(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows = self
            .conn
            .query(
                "list records",
                &self.conn.st.record_list,
                (collection, after.unwrap_or(""), limit),
            )
            .await?;
        let mut out = Vec::new();
        for row in rows.rows::<(String, Option<Vec<u8>>)>().map_err(corrupt)? {
            let (id, value) = row.map_err(corrupt)?;
            out.push((id, value.unwrap_or_default()));
        }
        Ok(out)
    }

    async fn record_take(&self, collection: &str, id: &str) -> Result<bool> {
        Ok(self
            .conn
            .lwt("take a record", &self.conn.st.record_take, (collection, id))
            .await?
            .applied)
    }
}
